//! From plain English to a number: normalise words to symbols, tokenise, and parse with
//! a recursive-descent parser whose values are linear forms `a·x + b`. Arithmetic is the
//! case `a = 0`; a linear equation is two forms set equal. Products or powers of the
//! variable are rejected as non-linear rather than answered wrongly.

use std::fmt;

/// What a math question resolves to.
#[derive(Debug, Clone, PartialEq)]
pub enum Solution {
    /// An expression and its value: "17 * 23 = 391".
    Value { expression: String, value: f64 },
    /// A linear equation's root: "x = 5".
    Root { variable: char, value: f64 },
}

impl Solution {
    pub fn value(&self) -> f64 {
        match self {
            Solution::Value { value, .. } | Solution::Root { value, .. } => *value,
        }
    }
}

impl fmt::Display for Solution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Solution::Value { expression, value } => {
                write!(f, "{expression} = {}", format_number(*value))
            }
            Solution::Root { variable, value } => {
                write!(f, "{variable} = {}", format_number(*value))
            }
        }
    }
}

/// Integers print without a decimal point; other values with up to 6 decimals.
pub fn format_number(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Solve a question, or say why it cannot be solved here.
pub fn solve(question: &str) -> Result<Solution, String> {
    let normalized = normalize(question);
    let tokens = tokenize(&normalized)?;
    let numbers = |ts: &[Tok]| ts.iter().filter(|t| matches!(t, Tok::Num(_))).count();
    let all_numbers = numbers(&tokens);
    let tokens = trim_to_math(tokens);
    if tokens.is_empty() {
        return Err("no arithmetic expression found".into());
    }
    // Numbers outside the expression mean the question is about more than it (a word
    // problem): answering the fragment would be a confident wrong answer.
    if numbers(&tokens) < all_numbers {
        return Err("the question has numbers outside the expression (a word problem?)".into());
    }
    let operators = tokens
        .iter()
        .filter(|t| matches!(t, Tok::Op(_) | Tok::Sqrt | Tok::Eq))
        .count();
    if operators == 0 {
        return Err("no operation to perform".into());
    }
    let variable = tokens.iter().find_map(|t| match t {
        Tok::Var(c) => Some(*c),
        _ => None,
    });
    let eq_count = tokens.iter().filter(|t| matches!(t, Tok::Eq)).count();
    match (eq_count, variable) {
        (0, None) => {
            let mut p = Parser::new(&tokens, None);
            let v = p.expression()?;
            p.finish()?;
            Ok(Solution::Value {
                expression: render(&tokens),
                value: v.b,
            })
        }
        (1, Some(var)) => {
            let at = tokens
                .iter()
                .position(|t| matches!(t, Tok::Eq))
                .unwrap_or(0);
            let (lhs, rhs) = (&tokens[..at], &tokens[at + 1..]);
            let l = Parser::parse_all(lhs, var)?;
            let r = Parser::parse_all(rhs, var)?;
            let a = l.a - r.a;
            if a.abs() < 1e-12 {
                return Err("the equation has no unique solution".into());
            }
            let value = (r.b - l.b) / a;
            if !value.is_finite() {
                return Err("the result is not a finite number".into());
            }
            Ok(Solution::Root {
                variable: var,
                value: clean(value),
            })
        }
        (0, Some(_)) => Err("an expression with a variable has no single value".into()),
        _ => Err("only one linear equation in one variable is supported".into()),
    }
}

/// Round away float noise such as 0.30000000000000004.
fn clean(v: f64) -> f64 {
    let r = (v * 1e9).round() / 1e9;
    if (r - v).abs() < 1e-9 * v.abs().max(1.0) {
        r
    } else {
        v
    }
}

fn normalize(q: &str) -> String {
    // Thousands separators first ("1,000"), before commas become spaces.
    let raw: Vec<char> = q.chars().collect();
    let q: String = raw
        .iter()
        .enumerate()
        .filter(|&(i, &c)| {
            !(c == ','
                && i > 0
                && raw[i - 1].is_ascii_digit()
                && raw.get(i + 1).is_some_and(char::is_ascii_digit))
        })
        .map(|(_, &c)| c)
        .collect();
    let mut s = format!(" {} ", q.to_lowercase());
    for (from, to) in [
        ("×", "*"),
        ("÷", "/"),
        ("−", "-"),
        ("√", " sqrt "),
        ("**", "^"),
        ("?", " "),
        (",", " "),
        (":", " "),
        ("multiplied by", "*"),
        ("divided by", "/"),
        ("to the power of", "^"),
        ("raised to the power of", "^"),
        ("raised to", "^"),
        ("square root of", "sqrt"),
        ("the sum of", ""),
        ("squared", "^ 2"),
        ("cubed", "^ 3"),
        ("% of", " / 100 *"),
        ("percent of", " / 100 *"),
        (" plus ", " + "),
        (" minus ", " - "),
        (" times ", " * "),
        (" over ", " / "),
        (" equals ", " = "),
        (" is equal to ", " = "),
    ] {
        s = s.replace(from, to);
    }
    // "12 x 4" means multiplication when x sits between two numbers.
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        let between_numbers = c == 'x'
            && i > 1
            && chars[i - 1] == ' '
            && chars[i - 2].is_ascii_digit()
            && chars.get(i + 1) == Some(&' ')
            && chars.get(i + 2).is_some_and(|c| c.is_ascii_digit());
        out.push(if between_numbers { '*' } else { c });
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Var(char),
    Op(char),
    LParen,
    RParen,
    Eq,
    Sqrt,
    /// Any other word: a boundary between the question's prose and its math.
    Word,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let lit: String = chars[start..i].iter().collect();
            let lit = lit.trim_end_matches('.');
            let v = lit
                .parse::<f64>()
                .map_err(|_| format!("bad number {lit:?}"))?;
            out.push(Tok::Num(v));
        } else if "+-*/^".contains(c) {
            out.push(Tok::Op(c));
            i += 1;
        } else if c == '(' {
            out.push(Tok::LParen);
            i += 1;
        } else if c == ')' {
            out.push(Tok::RParen);
            i += 1;
        } else if c == '=' {
            out.push(Tok::Eq);
            i += 1;
        } else if c.is_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_alphabetic() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(match word.as_str() {
                "sqrt" => Tok::Sqrt,
                w if w.len() == 1 && !matches!(w, "a" | "i") => Tok::Var(c),
                _ => Tok::Word,
            });
        } else {
            // Punctuation such as a full stop ends nothing and means nothing.
            i += 1;
        }
    }
    // Implicit multiplication: 3x, 2(x+1), (x+1)(2), x(3).
    let mut with_mul = Vec::with_capacity(out.len());
    for t in out {
        let needs_mul = matches!(
            (with_mul.last(), &t),
            (
                Some(Tok::Num(_) | Tok::RParen | Tok::Var(_)),
                Tok::Var(_) | Tok::LParen | Tok::Sqrt
            ) | (Some(Tok::RParen | Tok::Var(_)), Tok::Num(_))
        );
        if needs_mul {
            with_mul.push(Tok::Op('*'));
        }
        with_mul.push(t);
    }
    Ok(with_mul)
}

/// Keep the longest run of math tokens: prose words ("what is", "solve for") bound it.
fn trim_to_math(tokens: Vec<Tok>) -> Vec<Tok> {
    let mut best: &[Tok] = &[];
    for run in tokens.split(|t| *t == Tok::Word) {
        let score = |r: &[Tok]| r.iter().filter(|t| !matches!(t, Tok::Var(_))).count();
        if score(run) > score(best) {
            best = run;
        }
    }
    // "solve for x 3x + 5 = 20" leaves a stray leading variable before the equation.
    let mut run = best.to_vec();
    while run.len() > 1
        && matches!(run[0], Tok::Var(_))
        && matches!(run[1], Tok::Op('*'))
        && matches!(run.get(2), Some(Tok::Num(_)))
    {
        run.drain(..2);
    }
    run
}

fn render(tokens: &[Tok]) -> String {
    let mut s = String::new();
    for t in tokens {
        match t {
            Tok::Num(v) => s.push_str(&format_number(*v)),
            Tok::Var(c) => s.push(*c),
            Tok::Op(c) => {
                s.push(' ');
                s.push(*c);
                s.push(' ');
            }
            Tok::LParen => s.push('('),
            Tok::RParen => s.push(')'),
            Tok::Eq => s.push_str(" = "),
            Tok::Sqrt => s.push_str("sqrt "),
            Tok::Word => {}
        }
    }
    s.trim().to_string()
}

/// `a·x + b`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Linear {
    a: f64,
    b: f64,
}

impl Linear {
    fn constant(b: f64) -> Self {
        Linear { a: 0.0, b }
    }
    fn is_constant(&self) -> bool {
        self.a == 0.0
    }
}

struct Parser<'t> {
    tokens: &'t [Tok],
    pos: usize,
    var: Option<char>,
    depth: usize,
}

const MAX_DEPTH: usize = 64;

impl<'t> Parser<'t> {
    fn new(tokens: &'t [Tok], var: Option<char>) -> Self {
        Parser {
            tokens,
            pos: 0,
            var,
            depth: 0,
        }
    }

    fn parse_all(tokens: &[Tok], var: char) -> Result<Linear, String> {
        let mut p = Parser::new(tokens, Some(var));
        let v = p.expression()?;
        p.finish()?;
        Ok(v)
    }

    fn finish(&self) -> Result<(), String> {
        if self.pos == self.tokens.len() {
            Ok(())
        } else {
            Err(format!("unexpected {:?}", self.tokens[self.pos]))
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn expression(&mut self) -> Result<Linear, String> {
        let mut acc = self.term()?;
        while let Some(Tok::Op(op @ ('+' | '-'))) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.term()?;
            acc = if op == '+' {
                Linear {
                    a: acc.a + rhs.a,
                    b: acc.b + rhs.b,
                }
            } else {
                Linear {
                    a: acc.a - rhs.a,
                    b: acc.b - rhs.b,
                }
            };
        }
        Ok(acc)
    }

    fn term(&mut self) -> Result<Linear, String> {
        let mut acc = self.unary()?;
        while let Some(Tok::Op(op @ ('*' | '/'))) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.unary()?;
            acc = if op == '*' {
                if !acc.is_constant() && !rhs.is_constant() {
                    return Err("non-linear: a product of the variable with itself".into());
                }
                Linear {
                    a: acc.a * rhs.b + rhs.a * acc.b,
                    b: acc.b * rhs.b,
                }
            } else {
                if !rhs.is_constant() {
                    return Err("non-linear: division by the variable".into());
                }
                if rhs.b == 0.0 {
                    return Err("division by zero".into());
                }
                Linear {
                    a: acc.a / rhs.b,
                    b: acc.b / rhs.b,
                }
            };
        }
        Ok(acc)
    }

    fn unary(&mut self) -> Result<Linear, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("expression nested too deeply".into());
        }
        let v = self.unary_inner();
        self.depth -= 1;
        v
    }

    fn unary_inner(&mut self) -> Result<Linear, String> {
        match self.peek() {
            Some(Tok::Op('-')) => {
                self.pos += 1;
                let v = self.unary()?;
                Ok(Linear { a: -v.a, b: -v.b })
            }
            Some(Tok::Op('+')) => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Linear, String> {
        let base = self.atom()?;
        if let Some(Tok::Op('^')) = self.peek() {
            self.pos += 1;
            // Right-associative: 2^3^2 = 2^9.
            let exp = self.unary()?;
            if !exp.is_constant() {
                return Err("non-linear: the variable in an exponent".into());
            }
            if !base.is_constant() {
                return if exp.b == 1.0 {
                    Ok(base)
                } else {
                    Err("non-linear: a power of the variable".into())
                };
            }
            let v = base.b.powf(exp.b);
            if !v.is_finite() {
                return Err("the result is too large".into());
            }
            return Ok(Linear::constant(v));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Linear, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("expression nested too deeply".into());
        }
        let tok = self.peek().cloned().ok_or("expression ends too early")?;
        self.pos += 1;
        let v = match tok {
            Tok::Num(v) => Linear::constant(v),
            Tok::Var(c) if Some(c) == self.var => Linear { a: 1.0, b: 0.0 },
            Tok::Var(c) => return Err(format!("unknown variable {c}")),
            Tok::LParen => {
                let v = self.expression()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err("missing closing parenthesis".into());
                }
                self.pos += 1;
                v
            }
            Tok::Sqrt => {
                let v = self.power()?;
                if !v.is_constant() {
                    return Err("non-linear: square root of the variable".into());
                }
                if v.b < 0.0 {
                    return Err("square root of a negative number".into());
                }
                Linear::constant(v.b.sqrt())
            }
            other => return Err(format!("unexpected {other:?}")),
        };
        self.depth -= 1;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(q: &str) -> f64 {
        solve(q).unwrap_or_else(|e| panic!("{q}: {e}")).value()
    }

    #[test]
    fn plain_english_arithmetic() {
        assert_eq!(value("What is 17 * 23?"), 391.0);
        assert_eq!(value("What is 17 times 23?"), 391.0);
        assert_eq!(value("what is 12 x 4"), 48.0);
        assert_eq!(value("Calculate (3 + 4) * 5"), 35.0);
        assert_eq!(value("What is 2 to the power of 10?"), 1024.0);
        assert_eq!(value("What is 15% of 80?"), 12.0);
        assert_eq!(value("What is the square root of 144?"), 12.0);
        assert_eq!(value("What is 7 squared?"), 49.0);
        assert_eq!(value("100 divided by 8"), 12.5);
        assert_eq!(value("What is 10 - 3 - 2?"), 5.0);
        assert_eq!(value("2^3^2"), 512.0);
        assert_eq!(value("-3 + 5"), 2.0);
        assert_eq!(value("What is 1,000 plus 1"), 1001.0);
    }

    #[test]
    fn linear_equations() {
        assert_eq!(solve("Solve 3x + 5 = 20").unwrap().to_string(), "x = 5");
        assert_eq!(value("Solve for x: 2(x + 3) = 14"), 4.0);
        assert_eq!(value("Solve for y: 5y - 2 = 3y + 8"), 5.0);
        assert_eq!(value("x/4 = 2.5"), 10.0);
        assert_eq!(value("If 7n = 42, what is n?"), 6.0);
    }

    #[test]
    fn rejects_what_it_cannot_do() {
        assert!(solve("What is the capital of France?").is_err());
        assert!(solve("Solve x*x = 4").is_err());
        assert!(solve("What is 5 / 0?").is_err());
        assert!(solve("x + 1").is_err());
        assert!(solve("2x = 2x").is_err());
        assert!(solve("What is 42?").is_err());
        // A word problem's fragment is not its answer.
        assert!(
            solve("Tom has 3 apples and eats 1/4 of his 12 pears. How many are left?").is_err()
        );
        assert!(solve(&"(".repeat(1000)).is_err());
        assert!(solve(&format!("{}1", "-".repeat(100_000))).is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_number(391.0), "391");
        assert_eq!(format_number(12.5), "12.5");
        assert_eq!(format_number(1.0 / 3.0), "0.333333");
        assert_eq!(
            solve("What is 17 * 23?").unwrap().to_string(),
            "17 * 23 = 391"
        );
    }
}
