//! Arithmetic and linear-algebra specialist.
//!
//! Reads plain-English math ("What is 17 times 23?", "Solve 3x + 5 = 20", "15% of 80",
//! "square root of 144") into an expression, evaluates it exactly in f64, and solves
//! linear equations in one variable. As a judge it recomputes the answer and prefers the
//! candidate whose final number matches; when it cannot compute the answer it abstains.

use apiary_plugin_api::{
    Answer, Judgment, Manifest, PluginError, Request, Specialist, Verdict, export_specialist, text,
};

mod expr;

pub use expr::{Solution, solve};

#[derive(Default)]
pub struct Arith;

impl Specialist for Arith {
    fn describe(&self, base: Manifest) -> Manifest {
        Manifest {
            domains: vec!["math".into(), "arithmetic".into(), "algebra".into()],
            ..base
        }
    }

    fn assess(&self, req: &Request, _domains: &[String]) -> f32 {
        // Looks like math but is beyond us (word problems, non-linear), or a multiple-
        // choice question whose options miss our result: stay out.
        if self.answer(req).is_ok() { 0.95 } else { 0.0 }
    }

    fn answer(&self, req: &Request) -> Result<Answer, PluginError> {
        let solution = solve(&req.prompt).map_err(PluginError::Unsupported)?;
        if req.choices.is_empty() {
            return Ok(Answer::new(solution.to_string(), 0.99));
        }
        let right =
            |o: &str| text::final_number(o).is_some_and(|v| text::close(v, solution.value()));
        Answer::from_options(&req.choices, right, 0.99)
            .ok_or_else(|| PluginError::Unsupported(format!("{solution} is not among the options")))
    }

    /// Recomputes the answer: certain when exactly one candidate has it, "the same" when
    /// both do, and abstains otherwise (two wrong numbers, or what it cannot solve: an
    /// incidental number in two texts does not make them the same answer).
    fn judge(&self, req: &Request, first: &str, second: &str) -> Judgment {
        let (Ok(solution), Some(a), Some(b)) = (
            solve(&req.prompt),
            text::final_number(first),
            text::final_number(second),
        ) else {
            return Judgment::Abstain;
        };
        match (
            text::close(a, solution.value()),
            text::close(b, solution.value()),
        ) {
            (true, true) => Judgment::Same,
            (true, false) => Judgment::Prefer(1.0),
            (false, true) => Judgment::Prefer(0.0),
            _ => Judgment::Abstain,
        }
    }

    fn compare(&self, prompt: &str, first: &str, second: &str) -> Verdict {
        let Ok(solution) = solve(prompt) else {
            return Verdict::Tie;
        };
        let right = |candidate: &str| {
            text::final_number(candidate).is_some_and(|v| text::close(v, solution.value()))
        };
        match (right(first), right(second)) {
            (true, false) => Verdict::First,
            (false, true) => Verdict::Second,
            _ => Verdict::Tie,
        }
    }
}

export_specialist!(Arith);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_by_recomputing() {
        let a = Arith;
        let p = "What is 17 * 23?";
        assert_eq!(a.compare(p, "17 * 23 = 391", "381"), Verdict::First);
        assert_eq!(
            a.compare(p, "It is 381", "The answer is 391."),
            Verdict::Second
        );
        assert_eq!(a.compare(p, "381", "382"), Verdict::Tie);
        let req = Request::question(p);
        assert_eq!(a.judge(&req, "17 * 23 = 391", "381"), Judgment::Prefer(1.0));
        assert_eq!(a.judge(&req, "381", "It is 391."), Judgment::Prefer(0.0));
        assert_eq!(a.judge(&req, "391", "The answer is 391."), Judgment::Same);
        assert_eq!(a.judge(&req, "381", "382"), Judgment::Abstain);
        assert_eq!(a.judge(&req, "381", "x = 381"), Judgment::Abstain);
        assert_eq!(
            a.judge(&Request::question("Who?"), "1", "2"),
            Judgment::Abstain
        );
        assert_eq!(
            a.compare("What is the capital of France?", "Paris", "Lyon"),
            Verdict::Tie
        );
    }

    #[test]
    fn multiple_choice_picks_the_option_or_declines() {
        let a = Arith;
        let req = |choices: &[&str]| Request {
            prompt: "What is 17 * 23?".into(),
            domain: None,
            choices: choices.iter().map(|c| c.to_string()).collect(),
            max_tokens: 16,
            temperature: 0.0,
            seed: 0,
            messages: Vec::new(),
        };
        let got = a.answer(&req(&["381", "391", "401"])).unwrap();
        assert_eq!((got.choice, got.text.as_str()), (Some(1), "B. 391"));
        let none = req(&["381", "401"]);
        assert!(matches!(a.answer(&none), Err(PluginError::Unsupported(_))));
        assert_eq!(a.assess(&none, &[]), 0.0);
    }
}
