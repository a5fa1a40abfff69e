//! Weighted log-linear pooling of option scores.
//!
//! On a multiple-choice request several models can score every option (a language
//! model's log-likelihood of each option's text, say). Taking each model's argmax and a
//! majority vote throws away how sure each model was: a model that is nearly certain of
//! option C is outvoted by two that lean towards A by a hair. Log-linear pooling keeps it:
//!
//!   log p(o) = Σ_m w_m · log p_m(o) / Σ_m w_m + const,
//!
//! a weighted geometric mean of the models' distributions, renormalised. A model's
//! scores are first turned into a distribution by log-softmax, so only differences
//! between its options matter, not the scale of its log-likelihoods.
//!
//! Weights come from a model's measured accuracy ([`weight_from_accuracy`]): zero at or
//! below chance, so a model that guesses cannot drag down one that knows.
//!
//! The result decides an answer and is recomputed by other nodes, so `exp` and `ln` here
//! are computed from +, −, ×, ÷ only (each correctly rounded by IEEE 754, so the same
//! bits everywhere) rather than by `f64::exp`/`f64::ln`, which call the platform's libm
//! and may differ in the last bit between platforms. Sums run in index order.

/// Accuracy is clipped to this before it becomes a weight: a model that was perfect on a
/// small calibration sample would otherwise get an infinite weight and silence all others.
pub const MAX_ACCURACY: f64 = 0.99;

/// Pool per-option scores. Each model is `(scores, weight)`: `scores[o]` its score or
/// log-likelihood for option `o`, any scale (log-softmax normalises it), `weight` its
/// weight. Models whose vector does not have `n_options` entries, has a non-finite
/// entry, or whose weight is not positive and finite are skipped.
///
/// Returns the pooled probabilities (summing to 1, in option order), or `None` when no
/// model counts or there are no options.
pub fn pool(models: &[(&[f64], f64)], n_options: usize) -> Option<Vec<f64>> {
    let valid: Vec<(&[f64], f64)> = models
        .iter()
        .copied()
        .filter(|&(scores, w)| {
            scores.len() == n_options
                && scores.iter().all(|s| s.is_finite())
                && w.is_finite()
                && w > 0.0
        })
        .collect();
    // Weights relative to the largest, so their sum cannot overflow.
    let top = valid.iter().map(|m| m.1).fold(0.0, f64::max);
    if n_options == 0 || top == 0.0 {
        return None;
    }
    let mut pooled = vec![0.0; n_options];
    let mut total = 0.0;
    for (scores, w) in valid {
        let w = w / top;
        for (acc, lp) in pooled.iter_mut().zip(log_softmax(scores)) {
            *acc += w * lp;
        }
        total += w;
    }
    for acc in &mut pooled {
        *acc /= total;
    }
    Some(softmax(&pooled))
}

/// The weight of a model that picks the right one of `n_options` options with probability
/// `accuracy`: ln(a·(n − 1)/(1 − a)), the log-odds of its accuracy over chance, 0 at or
/// below chance (1/n), with `a` clipped to [`MAX_ACCURACY`].
///
/// Why this form: if a model is right with probability a and otherwise picks one of the
/// n − 1 wrong options uniformly, its pick multiplies the odds of that option by exactly
/// a(n − 1)/(1 − a); the log of that is the optimal weight of its vote (Nitzan and
/// Paroush, 1982). It grows slowly near chance and fast near certainty: on four options a
/// 38 % model weighs 0.61 and a 58 % model 1.42, so even two 38 % models together cannot
/// outvote one 58 % model, while a linear weight (0.38 against 0.58) would let them.
pub fn weight_from_accuracy(accuracy: f64, n_options: usize) -> f64 {
    if n_options < 2 || !accuracy.is_finite() {
        return 0.0;
    }
    let chance = 1.0 / n_options as f64;
    if accuracy <= chance {
        return 0.0;
    }
    let a = accuracy.min(MAX_ACCURACY);
    ln(a * (n_options - 1) as f64 / (1.0 - a)).max(0.0)
}

/// The product of the models' distributions, each raised to its weight and renormalised:
/// softmax(Σ_m w_m · log p_m). Unlike [`pool`], the weights are not averaged out, so a
/// weight is a temperature (`consensus::known`'s fitted scale) and two calibrated
/// models that agree are surer together than either alone. Skips what [`pool`] skips.
pub fn product(models: &[(&[f64], f64)], n_options: usize) -> Option<Vec<f64>> {
    let mut pooled = vec![0.0; n_options];
    let mut any = false;
    for &(scores, w) in models {
        if scores.len() != n_options
            || !scores.iter().all(|s| s.is_finite())
            || !w.is_finite()
            || w <= 0.0
        {
            continue;
        }
        any = true;
        for (acc, lp) in pooled.iter_mut().zip(log_softmax(scores)) {
            *acc += w * lp;
        }
    }
    (any && n_options > 0 && pooled.iter().all(|x| x.is_finite())).then(|| softmax(&pooled))
}

/// log p_o = s_o − max − ln Σ exp(s − max): stable for any finite scores.
pub(crate) fn log_softmax(scores: &[f64]) -> Vec<f64> {
    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_sum = ln(scores.iter().map(|s| exp(s - top)).sum());
    scores.iter().map(|s| (s - top) - log_sum).collect()
}

pub(crate) fn softmax(logs: &[f64]) -> Vec<f64> {
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logs.iter().map(|l| exp(l - top)).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// ln 2 split so that k·LN2_HI is exact for |k| < 2¹¹ (fdlibm's constants, by their bits).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

/// e^x, deterministic: x = k·ln 2 + r with |r| ≤ ln2/2, e^r by its Taylor series to
/// degree 13 (truncation below 1e-18), then scaled by 2^k.
pub(crate) fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.8 {
        return f64::INFINITY;
    }
    if x < -745.2 {
        return 0.0;
    }
    // `round` is exact, so it cannot differ between platforms.
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0;
    for i in (1..=13).rev() {
        p = 1.0 + p * r / f64::from(i);
    }
    // In two steps, so neither power of two leaves the normal range; only the second
    // multiplication can round (into the subnormals).
    let k = k as i32;
    p * pow2(k / 2) * pow2(k - k / 2)
}

/// 2^k for k in −1022..=1023, built from its bits.
fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// ln x, deterministic: x = m·2^e with m in (√½, √2], ln m = 2·atanh(s) with
/// s = (m − 1)/(m + 1), |s| < 0.172, by its series to s²⁷ (truncation below 1e-20).
pub(crate) fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    let (mut m, mut e) = (x, 0i32);
    if m < f64::MIN_POSITIVE {
        m *= pow2(54);
        e -= 54;
    }
    let bits = m.to_bits();
    e += ((bits >> 52) & 0x7ff) as i32 - 1023;
    m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut p = 0.0;
    for k in (0..=13).rev() {
        p = 1.0 / f64::from(2 * k + 1) + s2 * p;
    }
    let e = f64::from(e);
    e * LN2_HI + (e * LN2_LO + 2.0 * s * p)
}

#[cfg(test)]
mod tests {
    use super::super::pairs::SplitMix;
    use super::*;

    fn argmax(v: &[f64]) -> usize {
        (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    /// One model nearly sure of option 2, two leaning to option 0 by a hair.
    const SURE: [f64; 3] = [0.0, 0.0, 5.0];
    const LEAN: [f64; 3] = [1.0, 0.9, 0.0];

    #[test]
    fn pooling_beats_the_majority_of_argmaxes() {
        let models: [(&[f64], f64); 3] = [(&SURE, 1.0), (&LEAN, 1.0), (&LEAN, 1.0)];
        let picks: Vec<usize> = models.iter().map(|m| argmax(m.0)).collect();
        assert_eq!(picks, vec![2, 0, 0], "the majority says option 0");
        let p = pool(&models, 3).unwrap();
        assert_eq!(argmax(&p), 2, "{p:?}");
        // By hand: log-softmax of SURE is (−5.0134, −5.0134, −0.0134) and of LEAN
        // (−0.8210, −0.9210, −1.8210); their means (−2.2184, −2.2851, −1.2184) softmax to
        // (0.2149, 0.2010, 0.5841).
        assert!(close(&p, &[0.2149, 0.2010, 0.5841], 1e-4), "{p:?}");
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn equal_weights_give_the_geometric_mean() {
        let a = [0.2, -1.0, 3.0, 0.5];
        let b = [2.0, 2.0, -4.0, 1.0];
        let c = [-7.0, 0.0, 1.0, 1.5];
        let dist = |s: &[f64]| softmax(s);
        let (da, db, dc) = (dist(&a), dist(&b), dist(&c));
        let geo: Vec<f64> = (0..4).map(|o| (da[o] * db[o] * dc[o]).cbrt()).collect();
        let sum: f64 = geo.iter().sum();
        let expect: Vec<f64> = geo.iter().map(|g| g / sum).collect();
        for w in [1.0, 0.3, 1e300] {
            let p = pool(&[(&a, w), (&b, w), (&c, w)], 4).unwrap();
            assert!(close(&p, &expect, 1e-12), "w {w}: {p:?} vs {expect:?}");
        }
        // One model: its own softmax, whatever its scale or offset.
        let p = pool(&[(&a, 2.0)], 4).unwrap();
        assert!(close(&p, &da, 1e-15));
        let shifted: Vec<f64> = a.iter().map(|x| x + 1e3).collect();
        assert!(close(&pool(&[(&shifted, 2.0)], 4).unwrap(), &da, 1e-12));
    }

    #[test]
    fn zero_weight_and_bad_vectors_are_ignored() {
        let alone = pool(&[(&LEAN, 1.0)], 3).unwrap();
        let bad: [&[f64]; 4] = [
            &[1.0, 2.0],
            &[1.0, f64::NAN, 0.0],
            &[f64::INFINITY, 0.0, 0.0],
            &[],
        ];
        let mut models: Vec<(&[f64], f64)> = vec![(&LEAN, 1.0), (&SURE, 0.0), (&SURE, -1.0)];
        models.push((&SURE, f64::NAN));
        models.push((&SURE, f64::INFINITY));
        models.extend(bad.iter().map(|b| (*b, 1.0)));
        assert_eq!(pool(&models, 3), Some(alone));
        assert_eq!(pool(&models[1..], 3), None, "all skipped");
        assert_eq!(pool(&[], 3), None);
        assert_eq!(pool(&[(&[], 1.0)], 0), None, "no options");
    }

    #[test]
    fn the_product_multiplies_distributions_and_skips_what_pool_skips() {
        let a = [0.2, -1.0, 3.0, 0.5];
        let b = [2.0, 2.0, -4.0, 1.0];
        let (da, db) = (softmax(&a), softmax(&b));
        let raw: Vec<f64> = (0..4).map(|o| da[o] * da[o] * db[o].sqrt()).collect();
        let sum: f64 = raw.iter().sum();
        let expect: Vec<f64> = raw.iter().map(|x| x / sum).collect();
        let p = product(&[(&a, 2.0), (&b, 0.5), (&b, 0.0), (&[1.0], 1.0)], 4).unwrap();
        assert!(close(&p, &expect, 1e-12), "{p:?} vs {expect:?}");
        // Two models that agree are surer together than one; the average is not.
        let one = product(&[(&SURE, 1.0)], 3).unwrap();
        let two = product(&[(&SURE, 1.0), (&SURE, 1.0)], 3).unwrap();
        assert!(
            two[2] > one[2]
                && close(
                    &pool(&[(&SURE, 1.0), (&SURE, 1.0)], 3).unwrap(),
                    &one,
                    1e-12
                )
        );
        assert_eq!(product(&[(&SURE, 0.0)], 3), None, "no voice at all");
        assert_eq!(product(&[], 3), None);
    }

    #[test]
    fn accuracy_weights() {
        assert_eq!(weight_from_accuracy(0.25, 4), 0.0, "chance");
        assert_eq!(weight_from_accuracy(0.2, 4), 0.0, "below chance");
        assert_eq!(weight_from_accuracy(0.5, 2), 0.0);
        assert!((weight_from_accuracy(0.38, 4) - 0.609_064_063_349).abs() < 1e-9);
        assert!((weight_from_accuracy(0.58, 4) - 1.421_385_680_931).abs() < 1e-9);
        assert!(
            (weight_from_accuracy(1.0, 4) - 297f64.ln()).abs() < 1e-12,
            "clipped"
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(weight_from_accuracy(bad, 4), 0.0);
        }
        assert_eq!(weight_from_accuracy(0.9, 1), 0.0);
        assert_eq!(weight_from_accuracy(0.9, 0), 0.0);
        let grid: Vec<f64> = (0..=100)
            .map(|i| weight_from_accuracy(f64::from(i) / 100.0, 4))
            .collect();
        assert!(grid.windows(2).all(|w| w[0] <= w[1]), "monotone");
    }

    #[test]
    fn a_weak_pair_does_not_outvote_a_strong_model() {
        // Two 38 % models lean to option 1 as firmly as a 58 % model leans to option 0.
        let strong = [1.0, 0.0, 0.0, 0.0];
        let weak = [0.0, 1.0, 0.0, 0.0];
        let (ws, ww) = (weight_from_accuracy(0.58, 4), weight_from_accuracy(0.38, 4));
        let weighted = pool(&[(&strong, ws), (&weak, ww), (&weak, ww)], 4).unwrap();
        assert_eq!(argmax(&weighted), 0, "{weighted:?}");
        let equal = pool(&[(&strong, 1.0), (&weak, 1.0), (&weak, 1.0)], 4).unwrap();
        assert_eq!(argmax(&equal), 1, "{equal:?}");
        let guesser = pool(&[(&strong, ws), (&weak, weight_from_accuracy(0.24, 4))], 4);
        assert_eq!(
            guesser,
            pool(&[(&strong, ws)], 4),
            "a guesser counts nothing"
        );
    }

    #[test]
    fn deterministic_exp_and_ln_match_the_platform_closely() {
        let mut rng = SplitMix(5);
        for _ in 0..20_000 {
            let x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 1400.0 - 700.0;
            let (ours, std) = (exp(x), x.exp());
            assert!(
                (ours - std).abs() <= 4e-16 * std,
                "exp({x}) = {ours:e} vs {std:e}"
            );
            let y = f64::from_bits(rng.next_u64() % f64::MAX.to_bits()); // any positive
            let (ours, std) = (ln(y), y.ln());
            assert!(
                (ours - std).abs() <= 4e-16 * std.abs().max(1.0),
                "ln({y:e}) = {ours} vs {std}"
            );
        }
        assert_eq!((exp(0.0), ln(1.0)), (1.0, 0.0));
        assert_eq!(exp(-800.0), 0.0);
        assert_eq!(exp(800.0), f64::INFINITY);
        assert!(exp(-740.0) > 0.0 && (exp(-740.0) / (-740f64).exp() - 1.0).abs() < 1e-3);
        assert!((ln(5e-324) - (5e-324f64).ln()).abs() < 1e-12, "subnormal");
        assert!(ln(-1.0).is_nan() && ln(0.0) == f64::NEG_INFINITY);
    }
}
