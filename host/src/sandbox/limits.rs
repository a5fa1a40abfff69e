//! Per-plugin limits: what a call may spend and produce.
//!
//! Three layers, so that the operator stays in charge: DESIGN.md's defaults apply to every
//! plugin; a plugin may *ask* for more in its `plugin.toml`; the operator's ceilings cap
//! what any plugin gets. An operator tightening a ceiling below a default tightens the
//! default too.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Effective limits for one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Limits {
    /// Wall-clock budget of one `assess` call.
    pub assess_ms: u64,
    /// Wall-clock budget of one `answer` call.
    pub answer_ms: u64,
    /// Wall-clock budget of one `compare` call.
    pub compare_ms: u64,
    /// Linear memory of one instance, in MiB.
    pub memory_mib: u64,
    /// Captured stdout and stderr per instance, each, in KiB. Writing past it faults.
    pub output_kib: u64,
    /// Largest answer text accepted, in KiB.
    pub answer_kib: u64,
    /// Log lines kept per instance; further lines are dropped and counted.
    pub log_lines: u32,
    /// Host memory for the plugin's own tensors (activations, caches), in MiB. Mapped
    /// weights are not counted: the file backs them.
    pub tensor_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            assess_ms: 2_000,
            answer_ms: 30_000,
            compare_ms: 5_000,
            memory_mib: 512,
            output_kib: 64,
            answer_kib: 64,
            log_lines: 200,
            tensor_mib: 512,
        }
    }
}

impl Limits {
    /// The operator's default ceilings: what a plugin can get by asking.
    pub fn default_ceilings() -> Self {
        Limits {
            assess_ms: 5_000,
            answer_ms: 120_000,
            compare_ms: 20_000,
            memory_mib: 1_024,
            output_kib: 1_024,
            answer_kib: 256,
            log_lines: 1_000,
            tensor_mib: 4_096,
        }
    }

    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize) << 20
    }

    pub fn output_bytes(&self) -> usize {
        (self.output_kib as usize) << 10
    }

    pub fn tensor_bytes(&self) -> usize {
        (self.tensor_mib as usize) << 20
    }

    pub fn answer_bytes(&self) -> usize {
        (self.answer_kib as usize) << 10
    }

    pub fn budget(&self, call: CallKind) -> Duration {
        Duration::from_millis(match call {
            CallKind::Describe | CallKind::Assess => self.assess_ms,
            CallKind::Answer => self.answer_ms,
            CallKind::Compare => self.compare_ms,
        })
    }

    /// Field-wise minimum.
    pub fn min(self, other: Limits) -> Limits {
        Limits {
            assess_ms: self.assess_ms.min(other.assess_ms),
            answer_ms: self.answer_ms.min(other.answer_ms),
            compare_ms: self.compare_ms.min(other.compare_ms),
            memory_mib: self.memory_mib.min(other.memory_mib),
            output_kib: self.output_kib.min(other.output_kib),
            answer_kib: self.answer_kib.min(other.answer_kib),
            log_lines: self.log_lines.min(other.log_lines),
            tensor_mib: self.tensor_mib.min(other.tensor_mib),
        }
    }
}

/// What a plugin asks for in `plugin.toml`'s `[limits]`; absent fields take the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RequestedLimits {
    pub assess_ms: Option<u64>,
    pub answer_ms: Option<u64>,
    pub compare_ms: Option<u64>,
    pub memory_mib: Option<u64>,
    pub output_kib: Option<u64>,
    pub answer_kib: Option<u64>,
    pub log_lines: Option<u32>,
    pub tensor_mib: Option<u64>,
}

/// The operator's policy: defaults for every plugin and ceilings no plugin passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitPolicy {
    pub defaults: Limits,
    pub ceilings: Limits,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        LimitPolicy::new(Limits::default(), Limits::default_ceilings())
    }
}

/// One limit a plugin asked for beyond the ceiling, reported at load and in audits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clamped {
    pub field: &'static str,
    pub requested: u64,
    pub granted: u64,
}

impl LimitPolicy {
    /// A policy whose defaults never exceed its ceilings.
    pub fn new(defaults: Limits, ceilings: Limits) -> Self {
        LimitPolicy {
            defaults: defaults.min(ceilings),
            ceilings,
        }
    }

    /// Grant a plugin's request: each field is the request if given, else the default,
    /// capped by the ceiling. Returns the limits and the fields that were capped.
    pub fn grant(&self, req: &RequestedLimits) -> (Limits, Vec<Clamped>) {
        let mut clamped = Vec::new();
        let mut pick = |field: &'static str, asked: Option<u64>, default: u64, ceiling: u64| {
            let want = asked.unwrap_or(default);
            if want > ceiling {
                clamped.push(Clamped {
                    field,
                    requested: want,
                    granted: ceiling,
                });
            }
            want.min(ceiling)
        };
        let (d, c) = (&self.defaults, &self.ceilings);
        let limits = Limits {
            assess_ms: pick("assess-ms", req.assess_ms, d.assess_ms, c.assess_ms),
            answer_ms: pick("answer-ms", req.answer_ms, d.answer_ms, c.answer_ms),
            compare_ms: pick("compare-ms", req.compare_ms, d.compare_ms, c.compare_ms),
            memory_mib: pick("memory-mib", req.memory_mib, d.memory_mib, c.memory_mib),
            output_kib: pick("output-kib", req.output_kib, d.output_kib, c.output_kib),
            answer_kib: pick("answer-kib", req.answer_kib, d.answer_kib, c.answer_kib),
            log_lines: pick(
                "log-lines",
                req.log_lines.map(u64::from),
                u64::from(d.log_lines),
                u64::from(c.log_lines),
            ) as u32,
            tensor_mib: pick("tensor-mib", req.tensor_mib, d.tensor_mib, c.tensor_mib),
        };
        (limits, clamped)
    }
}

/// Which entry point a call is, for budgets and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallKind {
    Describe,
    Assess,
    Answer,
    Compare,
}

impl std::fmt::Display for CallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CallKind::Describe => "describe",
            CallKind::Assess => "assess",
            CallKind::Answer => "answer",
            CallKind::Compare => "compare",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_capped_by_ceilings() {
        let policy = LimitPolicy::default();
        let (l, clamped) = policy.grant(&RequestedLimits {
            memory_mib: Some(4096),
            answer_ms: Some(1_000),
            ..Default::default()
        });
        assert_eq!(l.memory_mib, policy.ceilings.memory_mib);
        assert_eq!(l.answer_ms, 1_000, "asking for less is always granted");
        assert_eq!(l.compare_ms, policy.defaults.compare_ms);
        assert_eq!(clamped.len(), 1);
        assert_eq!(clamped[0].field, "memory-mib");
    }

    #[test]
    fn tightened_ceiling_tightens_default() {
        let tight = Limits {
            memory_mib: 64,
            ..Limits::default_ceilings()
        };
        let policy = LimitPolicy::new(Limits::default(), tight);
        let (l, clamped) = policy.grant(&RequestedLimits::default());
        assert_eq!(l.memory_mib, 64);
        assert!(clamped.is_empty());
    }
}
