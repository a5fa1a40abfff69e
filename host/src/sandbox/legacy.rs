//! Calling a plugin built against contract 1.1 (or 1.0): the current records, converted
//! to and from 1.1's. What 1.1 cannot say is left out on the way in (the conversation:
//! `prompt` already holds its last user message) and empty on the way out (no option
//! scores, no token count).

use super::bindings::apiary::plugin::types as now;
use super::bindings::v1_1::apiary::plugin::types as old;

pub(super) fn request(r: &now::Request) -> old::Request {
    old::Request {
        prompt: r.prompt.clone(),
        domain: r.domain.clone(),
        choices: r.choices.clone(),
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        seed: r.seed,
    }
}

pub(super) fn manifest(m: old::Manifest) -> now::Manifest {
    now::Manifest {
        name: m.name,
        version: m.version,
        domains: m.domains,
        description: m.description,
    }
}

pub(super) fn answer(
    r: Result<old::Response, old::PluginError>,
) -> Result<now::Response, now::PluginError> {
    match r {
        Ok(a) => Ok(now::Response {
            text: a.text,
            confidence: a.confidence,
            choice: a.choice,
            option_scores: Vec::new(),
            tokens: 0,
        }),
        Err(old::PluginError::Unsupported(m)) => Err(now::PluginError::Unsupported(m)),
        Err(old::PluginError::InvalidRequest(m)) => Err(now::PluginError::InvalidRequest(m)),
        Err(old::PluginError::Internal(m)) => Err(now::PluginError::Internal(m)),
    }
}

/// 1.1's verdicts as graded judgments: `tie` is no preference, which is how 1.1 hosts
/// counted it (half a win each way), so an old plugin sways rounds exactly as before.
pub(super) fn judgment(v: old::Verdict) -> now::Judgment {
    match v {
        old::Verdict::First => now::Judgment::Prefer(1.0),
        old::Verdict::Second => now::Judgment::Prefer(0.0),
        old::Verdict::Tie => now::Judgment::Prefer(0.5),
    }
}
