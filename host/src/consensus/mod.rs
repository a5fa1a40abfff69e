//! Consensus as pure functions: who judges which pair, and what the verdicts add up to.
//!
//! Nothing here does I/O or keeps state, so a round's result can be recomputed from its
//! transcript anywhere, and every function is tested against hand-computed cases.

pub mod bradley_terry;
pub mod fallback;
pub mod pairs;
pub mod scoring;

pub use bradley_terry::{Comparison, Fit, FitOptions, SEPARATION, fit, top_group};
pub use fallback::{Claim, decided, fallback_order};
pub use pairs::{Assignment, balanced_assignment};
pub use scoring::{Standing, Vote, aggregate, rewards, weighted_comparisons};

/// A judge's decision on an ordered pair, in the host's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    First,
    Second,
    Tie,
}

/// Turn one verdict on the ordered pair (`first`, `second`) into weighted wins. A tie is
/// half a win each way, so it pulls the two scores together.
pub fn comparisons(first: usize, second: usize, outcome: Outcome, weight: f64) -> Vec<Comparison> {
    match outcome {
        Outcome::First => vec![Comparison {
            winner: first,
            loser: second,
            weight,
        }],
        Outcome::Second => vec![Comparison {
            winner: second,
            loser: first,
            weight,
        }],
        Outcome::Tie => vec![
            Comparison {
                winner: first,
                loser: second,
                weight: weight / 2.0,
            },
            Comparison {
                winner: second,
                loser: first,
                weight: weight / 2.0,
            },
        ],
    }
}
