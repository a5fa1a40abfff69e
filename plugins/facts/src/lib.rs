//! Knowledge specialist: answers factual questions (capitals of countries, chemical
//! symbols, atomic numbers) from a table it ships in its own `weights/facts.tsv`, read
//! through WASI from the read-only `/weights` mount. It answers only what the table holds
//! and, as a judge, prefers the candidate that names the true answer and no rival.

use apiary_plugin_api::{
    Answer, Manifest, PluginError, Request, Specialist, Verdict, export_specialist, text,
};

mod table;

pub use table::{Direction, Fact, Found, Relation, Table};

/// Where the host mounts the plugin's `weights/` folder.
const FACTS_PATH: &str = "/weights/facts.tsv";

pub struct Facts {
    table: Result<Table, String>,
}

impl Default for Facts {
    fn default() -> Self {
        let table = std::fs::read_to_string(FACTS_PATH)
            .map_err(|e| format!("cannot read {FACTS_PATH}: {e}"))
            .and_then(|s| Table::parse(&s));
        Facts { table }
    }
}

impl Facts {
    fn lookup(&self, prompt: &str) -> Result<Found<'_>, PluginError> {
        let table = self
            .table
            .as_ref()
            .map_err(|e| PluginError::Internal(e.clone()))?;
        table.lookup(prompt).ok_or_else(|| {
            PluginError::Unsupported(
                "not a capital, chemical-symbol or atomic-number question I know".into(),
            )
        })
    }
}

impl Specialist for Facts {
    fn describe(&self, base: Manifest) -> Manifest {
        Manifest {
            domains: vec!["geography".into(), "chemistry".into(), "knowledge".into()],
            ..base
        }
    }

    fn assess(&self, req: &Request, _domains: &[String]) -> f32 {
        if self.answer(req).is_ok() { 0.9 } else { 0.0 }
    }

    fn answer(&self, req: &Request) -> Result<Answer, PluginError> {
        let found = self.lookup(&req.prompt)?;
        if req.choices.is_empty() {
            return Ok(Answer::new(found.sentence(), 0.95));
        }
        // Multiple choice: the option that names the answer, or decline.
        let table = self
            .table
            .as_ref()
            .map_err(|e| PluginError::Internal(e.clone()))?;
        Answer::from_options(&req.choices, |o| table.names_only_expected(&found, o), 0.95)
            .ok_or_else(|| {
                PluginError::Unsupported(format!("{} is not among the options", found.sentence()))
            })
    }

    fn compare(&self, prompt: &str, first: &str, second: &str) -> Verdict {
        let Ok(found) = self.lookup(prompt) else {
            return Verdict::Tie;
        };
        let table = match &self.table {
            Ok(t) => t,
            Err(_) => return Verdict::Tie,
        };
        let right = |c: &str| table.names_only_expected(&found, c);
        match (right(first), right(second)) {
            (true, false) => Verdict::First,
            (false, true) => Verdict::Second,
            _ => Verdict::Tie,
        }
    }
}

export_specialist!(Facts);

/// Lower-case words separated by single spaces, padded with spaces so that a phrase can
/// be found on word boundaries with `contains(" phrase ")`.
pub(crate) fn padded_words(s: &str) -> String {
    format!(" {} ", text::words(s).join(" "))
}
