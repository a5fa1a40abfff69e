//! A weighted Bradley–Terry fit with a weak prior.
//!
//! Model: answer *i* has strength π_i > 0 and beats *j* with probability π_i / (π_i + π_j).
//! Each comparison carries a weight (the judge's reputation; ties count half each way).
//!
//! Fitting uses Newman's iteration (J. Stat. Mech. 2023, "Efficient computation of
//! rankings from pairwise comparisons"):
//!
//! π_i ← [Σ_j w_ij π_j / (π_i + π_j)] / [Σ_j w_ji / (π_i + π_j)]
//!
//! which converges in far fewer steps than the classic Zermelo/MM update. The prior is a
//! virtual opponent of strength 1 that every answer has beaten, and lost to, `prior`
//! times: it keeps strengths finite when an answer won (or lost) every comparison and
//! makes sparse or disconnected graphs well-posed, while barely moving dense ones.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Comparison {
    pub winner: usize,
    pub loser: usize,
    pub weight: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Pseudo-wins and pseudo-losses against a virtual opponent of strength 1.
    pub prior: f64,
    /// Stop when no log-strength moves more than this.
    pub tolerance: f64,
    pub max_iterations: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            prior: 0.1,
            tolerance: 1e-10,
            max_iterations: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    /// Log-strengths, centred to mean 0. Higher is better.
    pub scores: Vec<f64>,
    /// Index of the best answer, if any: the lowest index among those tied at the top
    /// (within [`SEPARATION`]), so the order of the items decides what the fit cannot.
    pub winner: Option<usize>,
    /// Whether the best answer's score is above every other's by more than
    /// [`SEPARATION`]: only then did the comparisons decide.
    pub separated: bool,
    /// Modelled probability that the winner beats the runner-up (0.5 = no margin; 1 when
    /// there is a single answer).
    pub margin: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// Fit strengths for `n` items from weighted comparisons. Comparisons naming an item
/// outside `0..n`, a self-comparison, or a non-positive or non-finite weight are ignored.
pub fn fit(n: usize, comparisons: &[Comparison], opts: FitOptions) -> Fit {
    if n == 0 {
        return Fit {
            scores: vec![],
            winner: None,
            separated: false,
            margin: 0.0,
            iterations: 0,
            converged: true,
        };
    }
    // Aggregate into sparse neighbour lists: for each i, (j, w_ij, w_ji) where w_ij is
    // the weight of i beating j. Sorting by unordered pair merges repeats in O(m log m).
    let mut edges: Vec<(usize, usize, f64, f64)> = comparisons
        .iter()
        .filter(|c| {
            c.winner < n
                && c.loser < n
                && c.winner != c.loser
                && c.weight.is_finite()
                && c.weight > 0.0
        })
        .map(|c| {
            if c.winner < c.loser {
                (c.winner, c.loser, c.weight, 0.0)
            } else {
                (c.loser, c.winner, 0.0, c.weight)
            }
        })
        .collect();
    edges.sort_unstable_by_key(|e| (e.0, e.1));
    let mut neighbours: Vec<Vec<(usize, f64, f64)>> = vec![Vec::new(); n];
    let mut k = 0;
    while k < edges.len() {
        let (lo, hi, mut lo_wins, mut hi_wins) = edges[k];
        k += 1;
        while k < edges.len() && edges[k].0 == lo && edges[k].1 == hi {
            lo_wins += edges[k].2;
            hi_wins += edges[k].3;
            k += 1;
        }
        neighbours[lo].push((hi, lo_wins, hi_wins));
        neighbours[hi].push((lo, hi_wins, lo_wins));
    }
    let prior = opts.prior.max(0.0);
    let mut pi = vec![1.0f64; n];
    let mut iterations = 0;
    let mut converged = false;
    while iterations < opts.max_iterations {
        iterations += 1;
        let mut max_change = 0.0f64;
        for i in 0..n {
            let mut num = prior / (pi[i] + 1.0);
            let mut den = prior / (pi[i] + 1.0);
            for &(j, w_ij, w_ji) in &neighbours[i] {
                let s = pi[i] + pi[j];
                num += w_ij * pi[j] / s;
                den += w_ji / s;
            }
            let next = if den > 0.0 && num > 0.0 {
                num / den
            } else if num > 0.0 {
                // Never lost and no prior: unbounded; grow rather than divide by zero.
                pi[i] * 2.0
            } else {
                pi[i]
            };
            let next = next.clamp(1e-12, 1e12);
            max_change = max_change.max((next.ln() - pi[i].ln()).abs());
            pi[i] = next;
        }
        // The comparisons say nothing about the overall scale; only the prior does, and
        // weakly, so left to the sweep above it would converge very slowly. Solve it
        // exactly instead: the prior's log-likelihood is maximal over a common factor
        // c = e^t when Σ tanh((t + ln π_i)/2) = 0 (Newton's method; the sum is monotone).
        // Without a prior the scale is free: pin the geometric mean to 1.
        let shift = if prior > 0.0 {
            prior_scale(&pi)
        } else {
            -pi.iter().map(|p| p.ln()).sum::<f64>() / n as f64
        };
        if shift != 0.0 {
            for p in &mut pi {
                *p = (p.ln() + shift).exp().clamp(1e-12, 1e12);
            }
        }
        if max_change < opts.tolerance {
            converged = true;
            break;
        }
    }
    let mean_log = pi.iter().map(|p| p.ln()).sum::<f64>() / n as f64;
    let scores: Vec<f64> = pi.iter().map(|p| p.ln() - mean_log).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let tied = top_group(&scores);
    let separated = tied.len() == 1;
    let winner = tied.first().copied();
    if let Some(w) = winner {
        order.retain(|&i| i != w);
        order.insert(0, w);
    }
    let margin = match order.as_slice() {
        [w, r, ..] => pi[*w] / (pi[*w] + pi[*r]),
        [_] => 1.0,
        [] => 0.0,
    };
    Fit {
        scores,
        winner,
        separated,
        margin,
        iterations,
        converged,
    }
}

/// Scores closer than this count as tied: verdicts that cancel each other leave
/// differences at the fit's tolerance, far below what any one real verdict moves.
pub const SEPARATION: f64 = 1e-6;

/// The items whose scores are within [`SEPARATION`] of the best, in index order.
pub fn top_group(scores: &[f64]) -> Vec<usize> {
    let best = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (0..scores.len())
        .filter(|&i| scores[i] >= best - SEPARATION)
        .collect()
}

/// The log-factor t maximising the prior's likelihood over a common scale of `pi`.
fn prior_scale(pi: &[f64]) -> f64 {
    let logs: Vec<f64> = pi.iter().map(|p| p.ln()).collect();
    let mut t = -logs.iter().sum::<f64>() / logs.len() as f64;
    for _ in 0..50 {
        let (mut g, mut dg) = (0.0, 0.0);
        for l in &logs {
            let th = ((t + l) / 2.0).tanh();
            g += th;
            dg += 0.5 * (1.0 - th * th);
        }
        if g.abs() < 1e-13 || dg <= 0.0 {
            break;
        }
        t -= (g / dg).clamp(-5.0, 5.0);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(winner: usize, loser: usize, weight: f64) -> Comparison {
        Comparison {
            winner,
            loser,
            weight,
        }
    }

    fn no_prior() -> FitOptions {
        FitOptions {
            prior: 0.0,
            ..Default::default()
        }
    }

    #[test]
    fn two_items_hand_computed() {
        // A beats B 3 times, B beats A once: the MLE is π_A/π_B = 3.
        let f = fit(2, &[c(0, 1, 3.0), c(1, 0, 1.0)], no_prior());
        assert!(f.converged);
        assert!((f.scores[0] - f.scores[1] - 3f64.ln()).abs() < 1e-9);
        assert_eq!(f.winner, Some(0));
        assert!((f.margin - 0.75).abs() < 1e-9);
    }

    #[test]
    fn three_items_cycle_is_a_tie() {
        let f = fit(3, &[c(0, 1, 1.0), c(1, 2, 1.0), c(2, 0, 1.0)], no_prior());
        for s in &f.scores {
            assert!(s.abs() < 1e-9);
        }
        assert!((f.margin - 0.5).abs() < 1e-9);
    }

    #[test]
    fn three_items_hand_computed() {
        // Chain with known solution: 0 beats 1 twice, 1 beats 0 once, 1 beats 2 twice,
        // 2 beats 1 once. By symmetry π1² = π0·π2 and π0/π1 = π1/π2 = r where the
        // score equations give r = 2.
        let f = fit(
            3,
            &[c(0, 1, 2.0), c(1, 0, 1.0), c(1, 2, 2.0), c(2, 1, 1.0)],
            no_prior(),
        );
        assert!(
            (f.scores[0] - f.scores[1] - 2f64.ln()).abs() < 1e-8,
            "{:?}",
            f.scores
        );
        assert!((f.scores[1] - f.scores[2] - 2f64.ln()).abs() < 1e-8);
    }

    #[test]
    fn prior_keeps_undefeated_finite() {
        let f = fit(2, &[c(0, 1, 5.0)], FitOptions::default());
        assert!(f.converged);
        assert!(f.scores.iter().all(|s| s.is_finite()));
        assert_eq!(f.winner, Some(0));
        assert!(f.margin > 0.9);
    }

    #[test]
    fn disconnected_and_empty_graphs() {
        let f = fit(4, &[c(0, 1, 1.0)], FitOptions::default());
        assert!(f.converged);
        assert_eq!(f.winner, Some(0));
        assert!(
            (f.scores[2] - f.scores[3]).abs() < 1e-9,
            "no evidence: equal"
        );
        let f = fit(3, &[], FitOptions::default());
        assert_eq!(f.winner, Some(0), "lowest index wins an exact tie");
        assert_eq!(fit(0, &[], FitOptions::default()).winner, None);
        assert_eq!(fit(1, &[], FitOptions::default()).margin, 1.0);
    }

    #[test]
    fn garbage_comparisons_are_ignored() {
        let f = fit(
            2,
            &[
                c(0, 5, 1.0),
                c(1, 1, 1.0),
                c(1, 0, f64::NAN),
                c(1, 0, -3.0),
                c(0, 1, 1.0),
            ],
            FitOptions::default(),
        );
        assert_eq!(f.winner, Some(0));
    }

    #[test]
    fn weights_scale_influence() {
        // One heavy vote for 1 outweighs two light votes for 0.
        let f = fit(
            2,
            &[c(0, 1, 0.2), c(0, 1, 0.2), c(1, 0, 1.0)],
            FitOptions::default(),
        );
        assert_eq!(f.winner, Some(1));
    }

    /// Classic Zermelo / MM iteration (Hunter 2004), an independent reference.
    fn reference_mm(n: usize, comps: &[Comparison], prior: f64) -> Vec<f64> {
        let mut pi = vec![1.0f64; n];
        for _ in 0..100_000 {
            let mut next = vec![0.0; n];
            for i in 0..n {
                let wins: f64 = comps
                    .iter()
                    .filter(|x| x.winner == i)
                    .map(|x| x.weight)
                    .sum::<f64>()
                    + prior;
                let mut den = 2.0 * prior / (pi[i] + 1.0);
                for x in comps {
                    if x.winner == i || x.loser == i {
                        let j = if x.winner == i { x.loser } else { x.winner };
                        den += x.weight / (pi[i] + pi[j]);
                    }
                }
                next[i] = wins / den;
            }
            pi = next;
        }
        let g = pi.iter().map(|p| p.ln()).sum::<f64>() / n as f64;
        pi.iter().map(|p| p.ln() - g).collect()
    }

    #[test]
    fn agrees_with_reference_on_random_graphs() {
        // Small deterministic LCG so the test needs no RNG crate and never changes.
        let mut state = 0x2545F4914F6CDD1Du64;
        let mut rand = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        for trial in 0..8 {
            let n = 3 + trial % 5;
            let truth: Vec<f64> = (0..n).map(|_| rand() * 3.0).collect();
            let mut comps = Vec::new();
            for _ in 0..(n * 6) {
                let i = (rand() * n as f64) as usize % n;
                let j = (rand() * n as f64) as usize % n;
                if i == j {
                    continue;
                }
                let p = 1.0 / (1.0 + (truth[j] - truth[i]).exp());
                let w = 0.5 + rand();
                comps.push(if rand() < p { c(i, j, w) } else { c(j, i, w) });
            }
            let prior = 0.1;
            let ours = fit(
                n,
                &comps,
                FitOptions {
                    prior,
                    ..Default::default()
                },
            );
            let reference = reference_mm(n, &comps, prior);
            assert!(ours.converged);
            for (a, b) in ours.scores.iter().zip(&reference) {
                assert!(
                    (a - b).abs() < 1e-6,
                    "trial {trial}: {:?} vs {:?}",
                    ours.scores,
                    reference
                );
            }
        }
    }

    #[test]
    fn cancelling_comparisons_do_not_separate() {
        let c = |winner, loser| Comparison {
            winner,
            loser,
            weight: 1.0,
        };
        let f = fit(2, &[c(0, 1), c(1, 0)], FitOptions::default());
        assert!(!f.separated, "{f:?}");
        assert_eq!(f.winner, Some(0), "ties go to the lowest index");
        let g = fit(3, &[c(1, 0), c(2, 0)], FitOptions::default());
        assert!(!g.separated && g.winner == Some(1), "{g:?}");
        let h = fit(2, &[c(1, 0)], FitOptions::default());
        assert!(h.separated && h.winner == Some(1), "{h:?}");
    }

    #[test]
    fn one_graded_vote_hand_computed() {
        // Prefer(750) at weight 1: 0.75 of a win for 0, 0.25 for 1. Without a prior the
        // MLE ratio is 0.75 / 0.25 = 3, as for three wins against one.
        let graded = super::super::comparisons(0, 1, super::super::Outcome::Prefer(750), 1.0);
        let f = fit(2, &graded, no_prior());
        assert!(
            (f.scores[0] - f.scores[1] - 3f64.ln()).abs() < 1e-9,
            "{f:?}"
        );
        assert!((f.margin - 0.75).abs() < 1e-9);
        // With the default prior (0.1 wins and losses against a virtual opponent of
        // strength 1) the prior is symmetric under π → 1/π, so the optimum has
        // θ_0 = −θ_1 = θ, and setting the derivative of
        //   0.75·ln σ(2θ) + 0.25·ln σ(−2θ) + 0.1·Σ_{±} [ln σ(±θ) + ln σ(∓θ)]
        // to zero gives σ(2θ) = 0.75 − 0.1·tanh(θ/2). Its root, by bisection:
        let sigma = |x: f64| 1.0 / (1.0 + (-x).exp());
        let (mut lo, mut hi) = (0.0f64, 2.0f64);
        for _ in 0..200 {
            let mid = (lo + hi) / 2.0;
            if sigma(2.0 * mid) > 0.75 - 0.1 * (mid / 2.0).tanh() {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        assert!((lo - 0.487_458_540_337).abs() < 1e-9, "bisection: {lo}");
        let f = fit(2, &graded, FitOptions::default());
        assert!(f.converged);
        assert!(
            (f.scores[0] - lo).abs() < 1e-9 && (f.scores[1] + lo).abs() < 1e-9,
            "{f:?}"
        );
        assert!((f.margin - sigma(2.0 * lo)).abs() < 1e-9, "{f:?}");
        assert!((f.margin - 0.726_098_490_618).abs() < 1e-9);
    }

    /// ln σ(x), stable for large |x|.
    fn ln_sigma(x: f64) -> f64 {
        if x >= 0.0 {
            -(-x).exp().ln_1p()
        } else {
            x - x.exp().ln_1p()
        }
    }

    /// The penalised log-likelihood that `fit` maximises, in log-strengths θ:
    /// Σ_c w_c·ln σ(θ_winner − θ_loser) + prior·Σ_i [ln σ(θ_i) + ln σ(−θ_i)]
    /// (the prior: `prior` wins and `prior` losses against a virtual opponent θ = 0).
    fn penalised_log_likelihood(t: &[f64], comps: &[Comparison], prior: f64) -> f64 {
        let data: f64 = comps
            .iter()
            .map(|c| c.weight * ln_sigma(t[c.winner] - t[c.loser]))
            .sum();
        data + prior * t.iter().map(|&x| ln_sigma(x) + ln_sigma(-x)).sum::<f64>()
    }

    /// Solve A·x = b by Gaussian elimination with partial pivoting.
    fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
        let n = b.len();
        for k in 0..n {
            let p = (k..n)
                .max_by(|&i, &j| a[i][k].abs().total_cmp(&a[j][k].abs()))
                .unwrap();
            a.swap(k, p);
            b.swap(k, p);
            let pivot = a[k].clone();
            for i in (k + 1)..n {
                let f = a[i][k] / pivot[k];
                for (x, p) in a[i][k..].iter_mut().zip(&pivot[k..]) {
                    *x -= f * p;
                }
                b[i] -= f * b[k];
            }
        }
        let mut x = vec![0.0; n];
        for k in (0..n).rev() {
            let s: f64 = ((k + 1)..n).map(|j| a[k][j] * x[j]).sum();
            x[k] = (b[k] - s) / a[k][k];
        }
        x
    }

    /// An independent maximiser of the same objective: damped Newton on θ (the objective
    /// is strictly concave when prior > 0), centred like `fit`'s scores.
    fn newton_reference(n: usize, comps: &[Comparison], prior: f64) -> Vec<f64> {
        let sigma = |x: f64| 1.0 / (1.0 + (-x).exp());
        let mut t = vec![0.0f64; n];
        for _ in 0..500 {
            let mut g = vec![0.0; n];
            let mut h = vec![vec![0.0; n]; n];
            for i in 0..n {
                let p = sigma(t[i]);
                g[i] += prior * (1.0 - 2.0 * p);
                h[i][i] -= 2.0 * prior * p * (1.0 - p);
            }
            for c in comps {
                let (i, j) = (c.winner, c.loser);
                let p = sigma(t[i] - t[j]);
                g[i] += c.weight * (1.0 - p);
                g[j] -= c.weight * (1.0 - p);
                let q = c.weight * p * (1.0 - p);
                h[i][i] -= q;
                h[j][j] -= q;
                h[i][j] += q;
                h[j][i] += q;
            }
            let step = solve(h, g.iter().map(|x| -x).collect());
            let before = penalised_log_likelihood(&t, comps, prior);
            let mut scale = 1.0;
            let next = loop {
                let cand: Vec<f64> = t.iter().zip(&step).map(|(x, d)| x + scale * d).collect();
                if penalised_log_likelihood(&cand, comps, prior) >= before || scale < 1e-6 {
                    break cand;
                }
                scale /= 2.0;
            };
            t = next;
            if step.iter().all(|d| d.abs() < 1e-14) {
                break;
            }
        }
        let mean = t.iter().sum::<f64>() / n as f64;
        t.iter().map(|x| x - mean).collect()
    }

    #[test]
    fn graded_fit_agrees_with_newton_on_random_graphs() {
        use super::super::{Outcome, comparisons, pairs::SplitMix};
        let mut rng = SplitMix(0xA91A_2024);
        let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        for trial in 0..50 {
            let n = 2 + trial % 8;
            let prior = [0.1, 0.5, 0.02][trial % 3];
            let truth: Vec<f64> = (0..n).map(|_| unit() * 4.0 - 2.0).collect();
            let mut comps = Vec::new();
            let verdicts = (unit() * (4 * n) as f64) as usize;
            for _ in 0..verdicts {
                let i = (unit() * n as f64) as usize;
                let j = (unit() * n as f64) as usize;
                if i == j {
                    continue;
                }
                let p = 1.0 / (1.0 + (truth[j] - truth[i]).exp());
                let outcome = match (unit() * 6.0) as usize {
                    0 => Outcome::First,
                    1 => Outcome::Second,
                    2 => Outcome::Tie,
                    3 => Outcome::Same,
                    4 => Outcome::Abstain,
                    // A graded judge near the truth, rounded to per mille.
                    _ => Outcome::Prefer((p * 1000.0).round() as u16),
                };
                comps.extend(comparisons(i, j, outcome, 0.1 + 2.0 * unit()));
            }
            let opts = FitOptions {
                prior,
                ..Default::default()
            };
            let ours = fit(n, &comps, opts);
            let reference = newton_reference(n, &comps, prior);
            assert!(ours.converged, "trial {trial}");
            for (a, b) in ours.scores.iter().zip(&reference) {
                assert!(
                    (a - b).abs() < 1e-6,
                    "trial {trial}: {:?} vs {:?}",
                    ours.scores,
                    reference
                );
            }
        }
    }
}
