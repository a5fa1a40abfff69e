//! Equivalent answers form one candidate.
//!
//! Judges compare candidates, not strings: when five members answer "391", "391.0", "The
//! answer is 391.", "B" and "B. Paris", there are two candidates, not five. Without this
//! copies of the right answer split its support and tie with each other at the top
//! (see [`super::fallback::decided`]), and a wrong answer given once can outrank a right
//! one given in three spellings.
//!
//! Each answer gets a [`Key`], the most reliable reading of what it says, tried in order:
//!
//! 1. **Option** — on a multiple-choice request, the chosen option: a structured choice,
//!    else a leading letter ("B", "(B)", "b. text", "Answer: B"), else text equal to an
//!    option's. A leading letter wins over the text after it: on a multiple-choice
//!    request "A. Lincoln" is option A.
//! 2. **Number** — the answer's final number, when the answer is short (at most
//!    [`SHORT_WORDS`] words) or states it as the result ("= 391", "the answer is 391"):
//!    a long explanation's last number is often incidental, not its answer.
//! 3. **Text** — the answer normalised as SQuAD does (lowercase, punctuation and the
//!    articles a/an/the dropped, whitespace collapsed), Unicode-aware. There is no
//!    Unicode normalisation (NFC), so a composed and a decomposed "é" differ.
//!
//! [`group`] makes equal keys one candidate. Options never merge with a different
//! option, nor numbers with a different number, nor keys of different kinds: that is
//! what a key is for. Numbers are compared by value, equal within a relative 1e-9 (so
//! 391 and 391.0000000001 are one); texts of four words or more are one when they are
//! near-identical: Levenshtein distance at most a tenth of the longer (in chars).
//!
//! Near-identity is checked only up to [`MAX_NEAR_CHARS`] chars per text; longer texts
//! must match exactly, and judges can still call them the same. The check is a banded
//! edit distance, at most 2048 × 410 cell updates a pair, after a histogram filter that
//! discards unrelated texts in 64 steps; 32 adversarial answers of 2 KB that all pass
//! the filter (496 pairs) took under a second on a loaded 2-core machine. The cap is
//! below the few KB an answer may have on purpose: the cost is per *pair*, so it grows
//! with the square of the number of answers.
//!
//! [`merge_same`] then lets judges merge what the keys could not see is equal
//! ("three hundred ninety-one" and 391): a weight majority of the judges who judged a
//! pair must call it `Same`. Hard keys win over judges: two different options or two
//! different numbers are never merged, not even through a third candidate, so colluders
//! cannot fold a wrong option into the right one to share its win.
//!
//! Everything is deterministic: union-find over answers in index order, candidates
//! numbered in order of their first answer, merges in a fixed order, exact arithmetic
//! (integer comparisons; the one float test is a relative difference of parsed numbers).
//! Lowercasing and `is_alphanumeric` follow the Unicode tables of the Rust release, so
//! nodes recomputing a transcript should build with the same toolchain.

use super::scoring::Vote;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an answer says, as far as grouping is concerned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Key {
    /// The index of the chosen option of a multiple-choice request.
    Option(u32),
    /// A number, canonical: Rust's shortest round-trip decimal, so "391", "391.0" and
    /// "391.00" are all "391", and "-0" is "0".
    Number(String),
    /// The answer's text, normalised by [`normalise`].
    Text(String),
}

/// An answer of at most this many words may be keyed by its final number wherever it is.
pub const SHORT_WORDS: usize = 12;

/// Texts longer than this (in chars, after normalising) are only grouped when equal.
pub const MAX_NEAR_CHARS: usize = 2048;

/// Near-identical texts need at least this many words: "sodium chloride" and "sodium
/// chlorite" are one letter apart and different salts; in a sentence of four words or
/// more, one letter in ten is far more likely a typo or a spelling variant.
const NEAR_MIN_WORDS: usize = 4;

/// Numbers are one candidate within this relative difference.
const NUMBER_TOLERANCE: f64 = 1e-9;

/// The key of one answer. `choices` is the request's options (empty when it has none);
/// `choice` is the option the answerer picked, when it answered in structured form.
pub fn key(text: &str, choice: Option<u32>, choices: &[String]) -> Key {
    if let Some(o) = option_of(text, choice, choices) {
        return Key::Option(o);
    }
    if let Some(n) = stated_number(text) {
        return Key::Number(n);
    }
    Key::Text(normalise(text))
}

/// SQuAD-style normalisation: lowercase, drop every char that is neither alphanumeric nor
/// whitespace, drop the words a/an/the, collapse whitespace.
pub fn normalise(s: &str) -> String {
    let kept: String = s
        .chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect();
    kept.split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn option_of(text: &str, choice: Option<u32>, choices: &[String]) -> Option<u32> {
    let n = choices.len();
    if n == 0 {
        return None;
    }
    if let Some(c) = choice.filter(|&c| (c as usize) < n) {
        return Some(c);
    }
    let body = strip_lead_in(text.trim());
    let letter = leading_letter(body);
    if let Some((i, _)) = letter.filter(|&(i, _)| i < n) {
        return u32::try_from(i).ok();
    }
    // No usable letter: the text itself (or what follows an out-of-range letter).
    let said = [Some(body), letter.map(|(_, rest)| rest)];
    let said: Vec<String> = said.into_iter().flatten().map(normalise).collect();
    choices
        .iter()
        .position(|c| {
            let unlettered = leading_letter(c.trim()).map_or(c.as_str(), |l| l.1);
            let forms = [normalise(c), normalise(unlettered)];
            forms.iter().any(|f| !f.is_empty() && said.contains(f))
        })
        .and_then(|i| u32::try_from(i).ok())
}

/// "Answer: B" → "B": phrases that introduce an answer, case-insensitive, whole words.
fn strip_lead_in(s: &str) -> &str {
    const LEAD_INS: [&str; 7] = [
        "the correct answer is",
        "the answer is",
        "correct answer is",
        "answer is",
        "correct answer",
        "answer",
        "option",
    ];
    for p in LEAD_INS {
        let Some(head) = s.get(..p.len()) else {
            continue;
        };
        let rest = &s[p.len()..];
        if head.eq_ignore_ascii_case(p) && !rest.starts_with(char::is_alphanumeric) {
            return rest.trim_start_matches(|c: char| c == ':' || c.is_whitespace());
        }
    }
    s
}

/// "B", "B.", "B)", "B:", "(B)", "b. text" → (1, rest). A letter must stand alone or be
/// closed by punctuation, so the article in "A cat" is not option A.
fn leading_letter(s: &str) -> Option<(usize, &str)> {
    let b = s.as_bytes();
    let paren = b.first() == Some(&b'(');
    let at = usize::from(paren);
    let letter = *b.get(at).filter(|c| c.is_ascii_alphabetic())?;
    let mut end = at + 1;
    if paren {
        (b.get(end) == Some(&b')')).then_some(())?;
        end += 1;
        if matches!(b.get(end), Some(b'.' | b':')) {
            end += 1;
        }
    } else if matches!(b.get(end), Some(b'.' | b')' | b':')) {
        end += 1;
    } else if end != b.len() {
        return None;
    }
    let rest = &s[end..];
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    Some((
        usize::from(letter.to_ascii_lowercase() - b'a'),
        rest.trim_start(),
    ))
}

/// The canonical final number of `text`, if it has one that is its answer.
fn stated_number(text: &str) -> Option<String> {
    let (value, start) = final_number(text)?;
    let short = text.split_whitespace().count() <= SHORT_WORDS;
    if short || states_result(&text[..start]) {
        canonical(value)
    } else {
        None
    }
}

/// Whether `before` (the text before a number) ends by stating a result: "= ", "is ",
/// "equals ", "answer: ", "result: ", "total: ", ignoring markdown and currency marks.
fn states_result(before: &str) -> bool {
    let p = before.trim_end_matches(|c: char| c.is_whitespace() || "*_:$`".contains(c));
    if p.ends_with('=') {
        return true;
    }
    let last = p.rsplit(char::is_whitespace).next().unwrap_or("");
    ["is", "equals", "answer", "result", "total"]
        .iter()
        .any(|w| last.eq_ignore_ascii_case(w))
}

/// Rust's shortest round-trip decimal ("391", "-3.5", "0.1"), with -0 as 0; `None` for
/// a value that is not finite (a 400-digit integer parses to infinity).
fn canonical(v: f64) -> Option<String> {
    v.is_finite()
        .then(|| format!("{}", if v == 0.0 { 0.0 } else { v }))
}

/// The last number written with digits in `s` and where it starts: integers, decimals,
/// negatives and thousands separators ("1,234"); a full stop after it ("391.") ends the
/// sentence, not the number. The same reading as the plugin API's `text::final_number`.
fn final_number(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    let mut last = None;
    let mut i = 0;
    while i < b.len() {
        let minus = b[i] == b'-'
            && b.get(i + 1).is_some_and(u8::is_ascii_digit)
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        if !(b[i].is_ascii_digit() || minus) {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < b.len() {
            let digit_follows = b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if b[i].is_ascii_digit() || (matches!(b[i], b'.' | b',') && digit_follows) {
                i += 1;
            } else {
                break;
            }
        }
        let cleaned: String = s[start..i].chars().filter(|&c| c != ',').collect();
        if let Ok(v) = cleaned.parse::<f64>() {
            last = Some((v, start));
        }
    }
    last
}

fn numbers_equal(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y || (x - y).abs() <= NUMBER_TOLERANCE * x.abs().max(y.abs()),
        _ => a == b,
    }
}

/// Union-find whose root is always the lowest index in its set, so the result does not
/// depend on the order of unions.
struct Sets(Vec<usize>);

impl Sets {
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    /// Join the sets of `a` and `b`; returns the surviving root.
    fn union(&mut self, a: usize, b: usize) -> usize {
        let (ra, rb) = (self.find(a), self.find(b));
        let (lo, hi) = (ra.min(rb), ra.max(rb));
        self.0[hi] = lo;
        lo
    }

    /// Set ids numbered 0.. in order of each set's first member.
    fn numbered(&mut self) -> Vec<usize> {
        let roots: Vec<usize> = (0..self.0.len()).map(|i| self.find(i)).collect();
        renumber(&roots)
    }
}

/// Labels renamed 0.. in order of first use.
fn renumber(labels: &[usize]) -> Vec<usize> {
    let mut ids: BTreeMap<usize, usize> = BTreeMap::new();
    labels
        .iter()
        .map(|&l| {
            let next = ids.len();
            *ids.entry(l).or_insert(next)
        })
        .collect()
}

/// A candidate id per answer (per key), numbered 0.. in order of each candidate's first
/// answer. Answers are compared pairwise in index order and joined by union-find, so a
/// chain of near-identical texts is one candidate whatever order the answers come in.
pub fn group(keys: &[Key]) -> Vec<usize> {
    let near: Vec<Option<Near>> = keys.iter().map(Near::new).collect();
    let mut sets = Sets((0..keys.len()).collect());
    for i in 0..keys.len() {
        for j in 0..i {
            if sets.find(i) != sets.find(j) && same_key(&keys[j], &keys[i], &near[j], &near[i]) {
                sets.union(i, j);
            }
        }
    }
    sets.numbered()
}

fn same_key(a: &Key, b: &Key, near_a: &Option<Near>, near_b: &Option<Near>) -> bool {
    match (a, b) {
        (Key::Option(x), Key::Option(y)) => x == y,
        (Key::Number(x), Key::Number(y)) => numbers_equal(x, y),
        (Key::Text(x), Key::Text(y)) if x == y => true,
        (Key::Text(_), Key::Text(_)) => match (near_a, near_b) {
            (Some(x), Some(y)) => x.close_to(y),
            _ => false,
        },
        _ => false,
    }
}

/// A text that may be near-identical to another, prepared once per answer.
struct Near {
    chars: Vec<char>,
    /// Char counts in 64 bins (by code point mod 64).
    histogram: [u32; 64],
}

impl Near {
    fn new(key: &Key) -> Option<Near> {
        let Key::Text(t) = key else {
            return None;
        };
        let chars: Vec<char> = t.chars().collect();
        if t.split(' ').count() < NEAR_MIN_WORDS || chars.len() > MAX_NEAR_CHARS {
            return None;
        }
        let mut histogram = [0u32; 64];
        for &c in &chars {
            histogram[(u32::from(c) % 64) as usize] += 1;
        }
        Some(Near { chars, histogram })
    }

    /// Whether the Levenshtein distance is at most a tenth of the longer text, i.e. the
    /// similarity 1 − d/max is at least 0.9 (as 10·d ≤ max: integers, no rounding).
    fn close_to(&self, other: &Near) -> bool {
        let k = self.chars.len().max(other.chars.len()) / 10;
        // An edit changes the histogram by at most 2 (in L1), and binning chars can only
        // lower that distance: a cheap lower bound that rules out unrelated texts before
        // the quadratic check.
        let l1: u32 = (self.histogram.iter().zip(&other.histogram))
            .map(|(x, y)| x.abs_diff(*y))
            .sum();
        l1 as usize <= 2 * k && within_distance(&self.chars, &other.chars, k)
    }
}

/// Whether the Levenshtein distance of `a` and `b` is at most `k`: the usual dynamic
/// programme restricted to the band |i − j| ≤ k (cells outside it exceed k anyway), with
/// values capped at k + 1 and an early exit once a whole row exceeds k. O(len·k).
/// The band moves right by one cell a row, so the cell left of it is reset each row, and
/// the cells right of it were never written: they still hold their initial k + 1.
fn within_distance(a: &[char], b: &[char], k: usize) -> bool {
    let (n, m) = (a.len(), b.len());
    if n.abs_diff(m) > k {
        return false;
    }
    let big = k + 1;
    let mut prev: Vec<usize> = (0..=m).map(|j| j.min(big)).collect();
    let mut cur = vec![big; m + 1];
    for (i, &ai) in (1..=n).zip(a) {
        let (lo, hi) = (i.saturating_sub(k).max(1), (i + k).min(m));
        let mut left = if lo == 1 { i.min(big) } else { big };
        cur[lo - 1] = left;
        let mut row_min = left;
        // Slices and zips instead of indexes, so the inner loop has no bounds checks.
        let above = prev[lo - 1..=hi].windows(2);
        for ((up, &bj), out) in above.zip(&b[lo - 1..hi]).zip(&mut cur[lo..=hi]) {
            let substitute = up[0] + usize::from(ai != bj);
            left = substitute.min(up[1] + 1).min(left + 1).min(big);
            *out = left;
            row_min = row_min.min(left);
        }
        if row_min > k {
            return false;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[m] <= k
}

/// One judge's word on whether candidates `first` and `second` are the same answer:
/// `same` is true for an `Outcome::Same` verdict and false for any verdict that compared
/// them (a preference or a tie says they differ, or the judge would have said so).
/// `weight` is the judge's voting weight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SameVote {
    pub judge: usize,
    pub first: usize,
    pub second: usize,
    pub weight: f64,
    pub same: bool,
}

/// The same-votes among `votes` (on candidates), weighted by `weights[judge]` as
/// [`super::weighted_comparisons`] weighs them. Abstentions and malformed verdicts are
/// left out: a judge that did not judge the pair has no say on it either way.
pub fn same_votes(votes: &[Vote], weights: &[f64]) -> Vec<SameVote> {
    votes
        .iter()
        .filter_map(|v| {
            let same = v.outcome == super::Outcome::Same;
            (same || v.outcome.per_mille().is_some()).then(|| SameVote {
                judge: v.judge,
                first: v.first,
                second: v.second,
                weight: weights.get(v.judge).copied().unwrap_or(0.0),
                same,
            })
        })
        .collect()
}

/// Merge candidates that the judges call the same. `groups` is a candidate id per answer
/// (from [`group`]), `keys` the answers' keys, `votes` the same-votes on candidate pairs.
///
/// A pair merges when the judges saying "same" hold more than half of the weight of the
/// judges who judged it. A judge counts once per pair whatever the order and number of
/// its verdicts: its weight is split in the proportion of its "same" verdicts, so a
/// judge that says "same" one way round and prefers one answer the other way counts
/// half. Qualifying pairs merge strongest first ("same" share, then the lower ids), and
/// never when the two sides would hold different options or different numbers.
///
/// Returns a candidate id per answer, renumbered 0.. in order of first answer. Votes on
/// unknown candidates, a candidate with itself, or with a non-positive or non-finite
/// weight are ignored.
pub fn merge_same(groups: &[usize], keys: &[Key], votes: &[SameVote]) -> Vec<usize> {
    let n = groups.iter().map(|&g| g + 1).max().unwrap_or(0);
    let mut sets = Sets((0..n).collect());
    let mut hard = hard_keys(groups, keys, n);
    for (a, b) in majority_same(votes, n) {
        let (ra, rb) = (sets.find(a), sets.find(b));
        if ra == rb || conflict(&hard[ra], &hard[rb]) {
            continue;
        }
        let (ka, kb) = (hard[ra].clone(), hard[rb].clone());
        let root = sets.union(ra, rb);
        hard[root] = (ka.0.or(kb.0), ka.1.or(kb.1));
    }
    let merged: Vec<usize> = groups.iter().map(|&g| sets.find(g)).collect();
    renumber(&merged)
}

/// Per candidate: its option and its number, if any answer in it has one.
type Hard = (Option<u32>, Option<String>);

fn hard_keys(groups: &[usize], keys: &[Key], n: usize) -> Vec<Hard> {
    let mut hard: Vec<Hard> = vec![(None, None); n];
    for (&g, k) in groups.iter().zip(keys) {
        match k {
            Key::Option(o) => hard[g].0 = hard[g].0.or(Some(*o)),
            Key::Number(x) if hard[g].1.is_none() => hard[g].1 = Some(x.clone()),
            _ => {}
        }
    }
    hard
}

fn conflict(a: &Hard, b: &Hard) -> bool {
    let options = matches!((a.0, b.0), (Some(x), Some(y)) if x != y);
    let numbers = matches!((&a.1, &b.1), (Some(x), Some(y)) if !numbers_equal(x, y));
    options || numbers
}

/// The candidate pairs (lower id first) that a weight majority calls the same, strongest
/// first. Sums run over `BTreeMap`s, so their order (and every bit of the result) is fixed.
fn majority_same(votes: &[SameVote], n: usize) -> Vec<(usize, usize)> {
    // (pair, judge) → (weight of "same" verdicts, weight of all, number of verdicts).
    let mut per_judge: BTreeMap<(usize, usize, usize), (f64, f64, u32)> = BTreeMap::new();
    for v in votes {
        let valid = v.first < n && v.second < n && v.first != v.second;
        if !valid || !v.weight.is_finite() || v.weight <= 0.0 {
            continue;
        }
        let (lo, hi) = (v.first.min(v.second), v.first.max(v.second));
        let e = per_judge.entry((lo, hi, v.judge)).or_default();
        e.0 += if v.same { v.weight } else { 0.0 };
        e.1 += v.weight;
        e.2 += 1;
    }
    let mut per_pair: BTreeMap<(usize, usize), (f64, f64)> = BTreeMap::new();
    for ((lo, hi, _), (same, all, count)) in per_judge {
        let e = per_pair.entry((lo, hi)).or_default();
        e.0 += same / f64::from(count);
        e.1 += all / f64::from(count);
    }
    let mut pairs: Vec<(f64, usize, usize)> = per_pair
        .into_iter()
        .filter(|(_, (same, all))| 2.0 * same > *all)
        .map(|((lo, hi), (same, all))| (same / all, lo, hi))
        .collect();
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    pairs.into_iter().map(|(_, lo, hi)| (lo, hi)).collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Outcome, pairs::SplitMix};
    use super::*;

    fn plain(text: &str) -> Key {
        key(text, None, &[])
    }

    fn num(s: &str) -> Key {
        Key::Number(s.into())
    }

    fn capitals() -> Vec<String> {
        ["Berlin", "Paris", "Rome"].map(String::from).to_vec()
    }

    #[test]
    fn numbers_are_canonical() {
        for t in [
            "391",
            "391.0",
            "391.00",
            "The answer is 391.",
            "x = 391",
            "391.",
        ] {
            assert_eq!(plain(t), num("391"), "{t:?}");
        }
        assert_eq!(plain("1,234"), num("1234"));
        assert_eq!(plain("-3.5"), num("-3.5"));
        assert_eq!(plain("It is -0"), num("0"));
        assert_eq!(plain("17 * 23 = 391"), num("391"));
        assert_eq!(plain("about 0.10 km"), num("0.1"));
        let keys: Vec<Key> = ["391", "391.0", "The answer is 391."].map(plain).to_vec();
        assert_eq!(group(&keys), vec![0, 0, 0]);
    }

    #[test]
    fn long_text_uses_a_number_only_when_it_is_the_result() {
        let incidental = "The tower was finished in 1889 and it is still one of the most \
                          visited monuments of the whole world";
        assert!(
            matches!(plain(incidental), Key::Text(_)),
            "{:?}",
            plain(incidental)
        );
        let stated = "First multiply seventeen by twenty and add seventeen times three, \
                      which gives the product, so the answer is **391**.";
        assert_eq!(plain(stated), num("391"));
        let equation = "Working it through step by step with the usual long multiplication \
                        we get 17 × 23 = 391";
        assert_eq!(plain(equation), num("391"));
        let huge = "9".repeat(400);
        assert_eq!(
            plain(&huge),
            Key::Text(huge.clone()),
            "infinity is no number"
        );
    }

    #[test]
    fn options_by_index_letter_or_text() {
        let ch = capitals();
        for t in [
            "B",
            "B.",
            "(B)",
            "B)",
            "B:",
            "b. paris",
            "Answer: B",
            "The answer is (B).",
            "Paris",
            "paris.",
            "B. Paris",
            "Option B",
        ] {
            assert_eq!(key(t, None, &ch), Key::Option(1), "{t:?}");
        }
        assert_eq!(
            key("whatever", Some(2), &ch),
            Key::Option(2),
            "structured choice"
        );
        assert_eq!(
            key("Rome", Some(7), &ch),
            Key::Option(2),
            "out-of-range choice ignored"
        );
        assert_eq!(
            key("A cat", None, &ch),
            Key::Text("cat".into()),
            "an article, not A"
        );
        assert_eq!(key("D", None, &ch), Key::Text("d".into()), "no option D");
        assert_eq!(
            key("D. Rome", None, &ch),
            Key::Option(2),
            "the text after a bad letter"
        );
        let lettered = ["A. Berlin", "B. Paris"].map(String::from);
        assert_eq!(key("Paris", None, &lettered), Key::Option(1));
        assert_eq!(key("391", None, &[]), num("391"), "no choices: a number");
        let keys: Vec<Key> = ["B", "B. Paris", "Paris"]
            .map(|t| key(t, None, &ch))
            .to_vec();
        assert_eq!(group(&keys), vec![0, 0, 0]);
    }

    #[test]
    fn normalised_and_near_identical_text() {
        assert_eq!(
            normalise("  The Capital, of  FRANCE is Paris!"),
            "capital of france is paris"
        );
        assert_eq!(normalise("Ünïcödé — Straße"), "ünïcödé straße");
        assert_eq!(normalise("An apple a day"), "apple day");
        let keys: Vec<Key> = [
            "The capital of France is Paris.",
            "the capital of france is paris",
            "The capitol of France is Paris",
            "Paris is in France",
            "in paris",
            "is paris",
            "Sodium chloride",
            "sodium chlorite",
        ]
        .map(plain)
        .to_vec();
        assert_eq!(group(&keys), vec![0, 0, 0, 1, 2, 3, 4, 5], "{keys:?}");
    }

    #[test]
    fn different_answers_stay_apart() {
        let ch = capitals();
        assert_eq!(group(&[plain("391"), plain("392")]), vec![0, 1]);
        assert_eq!(
            group(&[key("B", None, &ch), key("C", None, &ch)]),
            vec![0, 1]
        );
        assert_eq!(group(&[plain("Paris"), plain("Rome")]), vec![0, 1]);
        assert_eq!(group(&[plain("391"), plain("391.000001")]), vec![0, 1]);
        assert_eq!(
            group(&[plain("391"), plain("391.0000000001")]),
            vec![0, 0],
            "1e-9"
        );
        // A number, an option and a text never share a key, whatever they say.
        assert_eq!(
            group(&[Key::Option(1), num("1"), Key::Text("1".into())]),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn ids_follow_first_answers_and_chains_are_one_candidate() {
        let t = |s: &str| Key::Text(s.into());
        assert_eq!(
            group(&[t("b"), num("1"), t("b"), Key::Option(0)]),
            vec![0, 1, 0, 2]
        );
        assert!(group(&[]).is_empty());
        // x ~ y and y ~ z (one edit in 17 chars each) but x and z are two edits apart.
        let (x, y, z) = (
            t("aaaa bbbb cccc dd"),
            t("aaaa bbbb cccc de"),
            t("aaaa bbbb cccc ee"),
        );
        assert_eq!(group(&[x.clone(), z.clone()]), vec![0, 1]);
        for order in [[&x, &y, &z], [&x, &z, &y], [&z, &x, &y], [&y, &z, &x]] {
            let keys: Vec<Key> = order.into_iter().cloned().collect();
            assert_eq!(group(&keys), vec![0, 0, 0], "{keys:?}");
        }
    }

    #[test]
    fn long_texts_merge_only_when_equal() {
        let long = "word ".repeat(MAX_NEAR_CHARS / 5 + 10);
        let (a, b) = (normalise(&long), normalise(&format!("{long}x")));
        assert!(a.chars().count() > MAX_NEAR_CHARS);
        let keys = [Key::Text(a.clone()), Key::Text(b), Key::Text(a)];
        assert_eq!(group(&keys), vec![0, 1, 0]);
        let at_cap = "abcd ".repeat(MAX_NEAR_CHARS / 5);
        let keys = [Key::Text(at_cap.clone()), Key::Text(format!("{at_cap}x"))];
        assert_eq!(
            group(&keys),
            vec![0, 0],
            "one edit in {} chars",
            at_cap.len()
        );
    }

    fn levenshtein(a: &[char], b: &[char]) -> usize {
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut cur = vec![i; b.len() + 1];
            for j in 1..=b.len() {
                let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
                cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
            }
            prev = cur;
        }
        prev[b.len()]
    }

    #[test]
    fn banded_distance_agrees_with_the_full_one() {
        let mut rng = SplitMix(11);
        let word = |rng: &mut SplitMix| -> Vec<char> {
            let len = (rng.next_u64() % 14) as usize;
            (0..len)
                .map(|_| ['a', 'b', 'c'][(rng.next_u64() % 3) as usize])
                .collect()
        };
        for _ in 0..2000 {
            let (a, b) = (word(&mut rng), word(&mut rng));
            let d = levenshtein(&a, &b);
            for k in 0..16 {
                assert_eq!(
                    within_distance(&a, &b, k),
                    d <= k,
                    "{a:?} {b:?} k={k} d={d}"
                );
            }
        }
    }

    fn vote(judge: usize, first: usize, second: usize, weight: f64, same: bool) -> SameVote {
        SameVote {
            judge,
            first,
            second,
            weight,
            same,
        }
    }

    #[test]
    fn judges_merge_by_weight_majority() {
        let keys = [
            plain("three hundred ninety one"),
            num("391"),
            plain("a dog"),
        ];
        let groups = group(&keys);
        assert_eq!(groups, vec![0, 1, 2]);
        // Exactly half is not more than half.
        let half = [vote(0, 0, 1, 1.0, true), vote(1, 1, 0, 1.0, false)];
        assert_eq!(merge_same(&groups, &keys, &half), vec![0, 1, 2]);
        let below = [vote(0, 0, 1, 0.9, true), vote(1, 1, 0, 1.0, false)];
        assert_eq!(merge_same(&groups, &keys, &below), vec![0, 1, 2]);
        let above = [vote(0, 0, 1, 1.1, true), vote(1, 1, 0, 1.0, false)];
        assert_eq!(merge_same(&groups, &keys, &above), vec![0, 0, 1]);
        // Judges who did not judge the pair (here: none on (1, 2)) have no say on it.
        let other = [vote(0, 0, 1, 1.0, true), vote(1, 1, 2, 5.0, false)];
        assert_eq!(merge_same(&groups, &keys, &other), vec![0, 0, 1]);
    }

    #[test]
    fn a_judge_counts_once_per_pair() {
        let keys = [plain("x"), plain("y")];
        let mut votes: Vec<SameVote> = (0..10).map(|_| vote(0, 0, 1, 1.0, true)).collect();
        votes.push(vote(1, 0, 1, 0.6, false));
        votes.push(vote(2, 1, 0, 0.6, false));
        assert_eq!(
            merge_same(&[0, 1], &keys, &votes),
            vec![0, 1],
            "1 against 1.2"
        );
        // Same one way round, a preference the other: half its weight says same.
        let split = [
            vote(0, 0, 1, 1.0, true),
            vote(0, 1, 0, 1.0, false),
            vote(1, 0, 1, 0.4, true),
        ];
        assert_eq!(merge_same(&[0, 1], &keys, &split), vec![0, 0], "0.9 of 1.4");
    }

    #[test]
    fn hard_keys_win_over_judges() {
        let ch = capitals();
        let keys = [
            key("B", None, &ch),
            key("C", None, &ch),
            key("it is the big one", None, &ch),
        ];
        let groups = group(&keys);
        assert_eq!(groups, vec![0, 1, 2]);
        let collude = [vote(0, 0, 1, 9.0, true), vote(1, 0, 1, 9.0, true)];
        assert_eq!(
            merge_same(&groups, &keys, &collude),
            vec![0, 1, 2],
            "two options"
        );
        let numbers = [num("391"), num("392")];
        assert_eq!(
            merge_same(&[0, 1], &numbers, &collude),
            vec![0, 1],
            "two numbers"
        );
        // Not through a third candidate either: both pairs with the text qualify, the
        // text joins C (all "same") before B (2/3 "same"), and then joining B would put
        // two options in one candidate.
        let bridge = [
            vote(0, 2, 0, 1.0, true),
            vote(1, 2, 1, 1.0, true),
            vote(2, 2, 1, 1.0, true),
            vote(3, 2, 0, 0.5, false),
        ];
        assert_eq!(merge_same(&groups, &keys, &bridge), vec![0, 1, 1]);
        // The same with the text first: after joining B, the text's candidate holds B.
        let keys = [keys[2].clone(), keys[0].clone(), keys[1].clone()];
        let bridge = [
            vote(0, 0, 1, 1.0, true),
            vote(1, 0, 2, 1.0, true),
            vote(2, 0, 2, 0.5, false),
        ];
        assert_eq!(merge_same(&[0, 1, 2], &keys, &bridge), vec![0, 0, 1]);
    }

    #[test]
    fn merged_ids_follow_first_answers_and_garbage_is_ignored() {
        let keys = [plain("x"), plain("y"), plain("z"), plain("y")];
        let groups = group(&keys);
        assert_eq!(groups, vec![0, 1, 2, 1]);
        let votes = [
            vote(0, 2, 0, 1.0, true),
            vote(0, 0, 9, 1.0, true),
            vote(0, 1, 1, 1.0, true),
            vote(1, 1, 2, f64::NAN, true),
            vote(1, 1, 2, -1.0, true),
            vote(1, 1, 2, 0.0, true),
        ];
        assert_eq!(merge_same(&groups, &keys, &votes), vec![0, 1, 0, 1]);
        assert!(merge_same(&[], &[], &votes).is_empty());
    }

    #[test]
    fn same_votes_from_verdicts() {
        let v = |judge, outcome| Vote {
            judge,
            first: 0,
            second: 1,
            outcome,
        };
        let votes = [
            v(0, Outcome::Same),
            v(1, Outcome::First),
            v(1, Outcome::Tie),
            v(2, Outcome::Abstain),
            v(2, Outcome::Prefer(1001)),
            v(3, Outcome::Prefer(300)),
        ];
        let s = same_votes(&votes, &[0.5, 1.0, 1.0]);
        let got: Vec<(usize, f64, bool)> = s.iter().map(|s| (s.judge, s.weight, s.same)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0.5, true),
                (1, 1.0, false),
                (1, 1.0, false),
                (3, 0.0, false)
            ]
        );
    }
}
