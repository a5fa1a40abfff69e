//! Known-answer items mixed into judges' work: proof of capability.
//!
//! An entry node hides a few pairs whose better answer it knows among a judge's real
//! pairs (uncalibrated judges get enough to be calibrated in one round; calibrated ones
//! one pair, both orders, to keep them honest). A verdict for the right answer counts as
//! correct, for the wrong one as incorrect; a tie abstains (a specialist outside its
//! domain should say tie, and that is no lie): see `ledger::transcript::CalibrationCheck`,
//! which records each item in the round's transcript. Items are generated from the round
//! seed, so a judge cannot learn them in advance.

use crate::consensus::pairs::SplitMix;

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub prompt: String,
    pub right: String,
    pub wrong: String,
}

const CAPITALS: &[(&str, &str, &str)] = &[
    ("France", "Paris", "Lyon"),
    ("Japan", "Tokyo", "Osaka"),
    ("Italy", "Rome", "Milan"),
    ("Canada", "Ottawa", "Toronto"),
    ("Australia", "Canberra", "Sydney"),
    ("Germany", "Berlin", "Munich"),
    ("Spain", "Madrid", "Barcelona"),
    ("Egypt", "Cairo", "Alexandria"),
];

/// `n` items from `seed`: mostly arithmetic, some geography.
pub fn items(seed: u64, n: usize) -> Vec<Item> {
    items_for(seed, n, "open")
}

/// How many of every four items are geography in `domain` (`round::domain_of`):
/// calibration proves a judge where its verdicts will count, so a math round asks
/// arithmetic, a knowledge or multiple-choice round facts, and an open round a mix.
fn facts_per_four(domain: &str) -> u64 {
    const MATH: &[&str] = &["math", "arithmetic", "algebra", "maths", "numbers"];
    match domain {
        d if MATH.contains(&d) => 0,
        "open" => 1,
        _ => 4,
    }
}

/// `n` items from `seed` for a round in `domain`.
pub fn items_for(seed: u64, n: usize, domain: &str) -> Vec<Item> {
    let mut rng = SplitMix(seed ^ 0xCA11_B8A7_E000_0001);
    let facts = facts_per_four(domain);
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            if r % 4 >= 4 - facts {
                let (country, capital, other) = CAPITALS[(r >> 8) as usize % CAPITALS.len()];
                Item {
                    prompt: format!("What is the capital of {country}?"),
                    right: format!("The capital of {country} is {capital}."),
                    wrong: format!("The capital of {country} is {other}."),
                }
            } else {
                let a = 11 + (r >> 8) % 89;
                let b = 11 + (r >> 20) % 89;
                let off = 1 + (r >> 32) % 9;
                let (prompt, value) = if r.is_multiple_of(2) {
                    (format!("What is {a} + {b}?"), a + b)
                } else {
                    (format!("What is {a} * {b}?"), a * b)
                };
                Item {
                    prompt,
                    right: format!("{value}"),
                    wrong: format!("{}", value + off),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_seeded_and_right_differs_from_wrong() {
        let a = items(7, 20);
        assert_eq!(a, items(7, 20));
        assert_ne!(a, items(8, 20));
        assert!(a.iter().all(|i| i.right != i.wrong));
        assert!(a.iter().any(|i| i.prompt.contains("capital")));
    }

    #[test]
    fn each_domain_is_calibrated_on_its_own_kind_of_item() {
        let math = items_for(7, 40, "math");
        assert!(math.iter().all(|i| !i.prompt.contains("capital")));
        let facts = items_for(7, 40, "choice");
        assert!(facts.iter().all(|i| i.prompt.contains("capital")));
        let open = items_for(7, 40, "open");
        assert_eq!(open, items(7, 40), "open rounds keep the old mix");
        assert!(open.iter().any(|i| i.prompt.contains("capital")));
        assert!(open.iter().any(|i| !i.prompt.contains("capital")));
    }
}
