//! The fact table: parsing `facts.tsv` and finding the fact a question asks about.

use crate::padded_words;
use apiary_plugin_api::text;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Capital,
    Symbol,
    AtomicNumber,
}

impl Relation {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "capital" => Some(Relation::Capital),
            "symbol" => Some(Relation::Symbol),
            "atomic-number" => Some(Relation::AtomicNumber),
            _ => None,
        }
    }

    /// Which relation a question is about, from its keywords.
    fn of_question(words: &str) -> Option<Self> {
        if words.contains(" capital ") || words.contains(" capital's ") {
            Some(Relation::Capital)
        } else if words.contains(" atomic number ") {
            Some(Relation::AtomicNumber)
        } else if words.contains(" symbol ") {
            Some(Relation::Symbol)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fact {
    pub relation: Relation,
    pub subject: String,
    pub object: String,
    /// Padded lower-case spellings (canonical first) for word-boundary matching.
    subject_names: Vec<String>,
    object_names: Vec<String>,
}

/// The question asks for the object given the subject (forward: "capital of France?"),
/// or for the subject given the object (reverse: "Paris is the capital of which country?").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Reverse,
}

#[derive(Debug, Clone)]
pub struct Found<'t> {
    pub fact: &'t Fact,
    pub direction: Direction,
}

impl Found<'_> {
    /// The answer as a sentence that names both sides of the fact.
    pub fn sentence(&self) -> String {
        let Fact {
            subject, object, ..
        } = self.fact;
        let lower = subject.to_lowercase();
        let sentence = match (self.fact.relation, self.direction) {
            (Relation::Capital, Direction::Forward) => {
                format!("The capital of {subject} is {object}.")
            }
            (Relation::Capital, Direction::Reverse) => {
                format!("{object} is the capital of {subject}.")
            }
            (Relation::Symbol, Direction::Forward) => {
                format!("The chemical symbol of {lower} is {object}.")
            }
            (Relation::Symbol, Direction::Reverse) => {
                format!("{object} is the chemical symbol of {lower}.")
            }
            (Relation::AtomicNumber, Direction::Forward) => {
                format!("The atomic number of {lower} is {object}.")
            }
            (Relation::AtomicNumber, Direction::Reverse) => {
                format!("The element with atomic number {object} is {lower}.")
            }
        };
        // "Washington, D.C." already ends the sentence.
        sentence.replace("..", ".")
    }
}

#[derive(Debug, Default)]
pub struct Table {
    facts: Vec<Fact>,
}

impl Table {
    /// Parse `relation<TAB>subject<TAB>object<TAB>subject aliases<TAB>object aliases`, with
    /// `|`-separated aliases; `#` starts a comment line.
    pub fn parse(src: &str) -> Result<Table, String> {
        let mut facts = Vec::new();
        for (n, line) in src.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() < 3 {
                return Err(format!(
                    "facts.tsv line {}: expected at least 3 columns",
                    n + 1
                ));
            }
            let relation = Relation::parse(cols[0]).ok_or_else(|| {
                format!("facts.tsv line {}: unknown relation {:?}", n + 1, cols[0])
            })?;
            let names = |canonical: &str, aliases: Option<&&str>| {
                std::iter::once(canonical)
                    .chain(aliases.map(|a| a.split('|')).into_iter().flatten())
                    .filter(|s| !s.trim().is_empty())
                    .map(padded_words)
                    .collect::<Vec<_>>()
            };
            facts.push(Fact {
                relation,
                subject: cols[1].to_string(),
                object: cols[2].to_string(),
                subject_names: names(cols[1], cols.get(3)),
                object_names: names(cols[2], cols.get(4)),
            });
        }
        if facts.is_empty() {
            return Err("facts.tsv holds no facts".into());
        }
        Ok(Table { facts })
    }

    pub fn len(&self) -> usize {
        self.facts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// The fact a question asks about, if the table holds it.
    pub fn lookup(&self, question: &str) -> Option<Found<'_>> {
        let words = padded_words(question);
        let relation = Relation::of_question(&words)?;
        let of_relation = || self.facts.iter().filter(move |f| f.relation == relation);
        // Prefer the longest subject named, so "South Korea" beats "Korea"-like overlaps.
        let longest = |names: fn(&Fact) -> &Vec<String>| {
            of_relation()
                .filter_map(|f| {
                    names(f)
                        .iter()
                        .filter(|n| words.contains(n.as_str()))
                        .map(|n| n.len())
                        .max()
                        .map(|len| (len, f))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, f)| f)
        };
        if let Some(fact) = longest(|f| &f.subject_names) {
            return Some(Found {
                fact,
                direction: Direction::Forward,
            });
        }
        let reverse = match relation {
            // Symbols are case-sensitive and short ("I", "C"): match exact tokens.
            Relation::Symbol => {
                let tokens: Vec<&str> = question
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|t| !t.is_empty())
                    .collect();
                of_relation().find(|f| tokens.contains(&f.object.as_str()))
            }
            Relation::AtomicNumber => {
                let numbers = text::numbers(question);
                of_relation().find(|f| f.object.parse::<f64>().is_ok_and(|v| numbers.contains(&v)))
            }
            Relation::Capital => longest(|f| &f.object_names),
        }?;
        Some(Found {
            fact: reverse,
            direction: Direction::Reverse,
        })
    }

    /// Whether `candidate` names the expected answer and no rival answer of the same kind.
    pub fn names_only_expected(&self, found: &Found<'_>, candidate: &str) -> bool {
        let words = padded_words(candidate);
        let expected = found.fact;
        let relation = expected.relation;
        let names_of = |f: &Fact| -> bool {
            match (relation, found.direction) {
                (Relation::Symbol, Direction::Forward) => candidate
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|t| t == f.object),
                (Relation::AtomicNumber, Direction::Forward) => f
                    .object
                    .parse::<f64>()
                    .is_ok_and(|v| text::numbers(candidate).contains(&v)),
                (_, Direction::Forward) => {
                    f.object_names.iter().any(|n| words.contains(n.as_str()))
                }
                (_, Direction::Reverse) => {
                    f.subject_names.iter().any(|n| words.contains(n.as_str()))
                }
            }
        };
        if !names_of(expected) {
            return false;
        }
        // In a reverse question the prompt's own object (e.g. the number) may be repeated;
        // rivals are other facts of the relation that the candidate also names.
        !self.facts.iter().any(|f| {
            f.relation == relation
                && !std::ptr::eq(f, expected)
                && f.subject != expected.subject
                && f.object != expected.object
                && names_of(f)
                && !overlaps(f, expected, found.direction)
        })
    }
}

/// A rival whose name contains the expected one ("Guatemala City" vs "Guatemala") is not
/// a rival when the expected name explains the match.
fn overlaps(rival: &Fact, expected: &Fact, direction: Direction) -> bool {
    let (r, e) = match direction {
        Direction::Forward => (&rival.object_names, &expected.object_names),
        Direction::Reverse => (&rival.subject_names, &expected.subject_names),
    };
    r.iter().any(|rn| {
        e.iter()
            .any(|en| en.contains(rn.as_str()) || rn.contains(en.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::parse(include_str!("../weights/facts.tsv")).expect("shipped table parses")
    }

    fn answer(q: &str) -> String {
        table()
            .lookup(q)
            .map(|f| f.sentence())
            .unwrap_or_else(|| format!("<none for {q}>"))
    }

    #[test]
    fn forward_questions() {
        assert_eq!(
            answer("What is the capital of France?"),
            "The capital of France is Paris."
        );
        assert_eq!(
            answer("what's the capital city of south korea"),
            "The capital of South Korea is Seoul."
        );
        assert_eq!(
            answer("Capital of the USA?"),
            "The capital of United States is Washington, D.C."
        );
        assert_eq!(
            answer("What is the chemical symbol for gold?"),
            "The chemical symbol of gold is Au."
        );
        assert_eq!(
            answer("What is the atomic number of carbon?"),
            "The atomic number of carbon is 6."
        );
    }

    #[test]
    fn reverse_questions() {
        assert_eq!(
            answer("Canberra is the capital of which country?"),
            "Canberra is the capital of Australia."
        );
        assert_eq!(
            answer("Which element has the symbol Fe?"),
            "Fe is the chemical symbol of iron."
        );
        assert_eq!(
            answer("Which element has atomic number 79?"),
            "The element with atomic number 79 is gold."
        );
    }

    #[test]
    fn declines_unknown() {
        let t = table();
        assert!(t.lookup("What is 17 * 23?").is_none());
        assert!(t.lookup("What is the capital of Atlantis?").is_none());
        assert!(t.lookup("Who wrote Hamlet?").is_none());
    }

    #[test]
    fn judging() {
        let t = table();
        let q = "What is the capital of Australia?";
        let f = t.lookup(q).unwrap();
        assert!(t.names_only_expected(&f, "It is Canberra."));
        assert!(!t.names_only_expected(&f, "Sydney"));
        assert!(!t.names_only_expected(&f, "Either Canberra or Vienna."));
        let q = "What is the chemical symbol for gold?";
        let f = t.lookup(q).unwrap();
        assert!(t.names_only_expected(&f, "Au"));
        assert!(!t.names_only_expected(&f, "Ag"));
        let f = t.lookup("What is the capital of Guatemala?").unwrap();
        assert!(t.names_only_expected(&f, "Guatemala City"));
    }

    #[test]
    fn parse_errors_are_clear() {
        assert!(Table::parse("").unwrap_err().contains("no facts"));
        assert!(
            Table::parse("colour\tsky\tblue")
                .unwrap_err()
                .contains("unknown relation")
        );
        assert!(
            Table::parse("capital\tFrance")
                .unwrap_err()
                .contains("3 columns")
        );
    }
}
