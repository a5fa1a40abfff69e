//! SentencePiece BPE as llama.cpp runs it (`tokenizer.ggml.model = "llama"`), built from
//! a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Gemma's vocabulary has no merge list, only a score per piece: starting from single
//! characters, the adjacent pair whose concatenation is a piece with the highest score is
//! merged first (leftmost on ties), until no pair forms a piece. Characters that are not
//! pieces fall back to byte tokens (`<0x41>`). Before that, the text is cut at
//! user-defined pieces (runs of spaces, tabs and newlines, a few HTML tags), which match
//! the raw text, longest first; spaces elsewhere become `▁`. Control tokens
//! (`<start_of_turn>`) are never produced from text, so a prompt cannot forge them.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

const SPACE: char = '▁';

/// GGUF token types (llama.cpp's `llama_token_type`).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const BYTE: i64 = 6;

/// FNV-1a: the vocabulary map is rebuilt with every fresh plugin instance (every round),
/// and SipHash over 262,144 pieces costs more than this trusted-input map needs.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

pub struct Tokenizer {
    vocab: FastMap<String, u32>,
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i64>,
    /// User-defined pieces, longest first.
    user_defined: Vec<(String, u32)>,
    /// `byte_ids[b]`: the id of `<0xXX>`.
    byte_ids: [Option<u32>; 256],
}

/// A merge candidate: symbols `left` and `right` (adjacent) would form a piece of `score`.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Highest score first, then leftmost (a max-heap pops the greatest).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// A symbol of the text being merged: a byte range, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Tokenizer {
    /// `tokens[i]` is piece i, `scores[i]` its score, `types[i]` its GGUF token type.
    pub fn new(tokens: Vec<String>, scores: Vec<f32>, types: Vec<i64>) -> Tokenizer {
        let mut vocab = FastMap::with_capacity_and_hasher(tokens.len(), Default::default());
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), i as u32);
        }
        let mut user_defined: Vec<(String, u32)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| types.get(*i) == Some(&USER_DEFINED) && !t.is_empty())
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        user_defined.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut byte_ids = [None; 256];
        for (i, t) in tokens.iter().enumerate() {
            if types.get(i) == Some(&BYTE)
                && let Some(hex) = t.strip_prefix("<0x").and_then(|h| h.strip_suffix('>'))
                && let Ok(b) = u8::from_str_radix(hex, 16)
            {
                byte_ids[b as usize] = Some(i as u32);
            }
        }
        Tokenizer {
            vocab,
            tokens,
            scores,
            types,
            user_defined,
            byte_ids,
        }
    }

    pub fn id(&self, piece: &str) -> Option<u32> {
        self.vocab.get(piece).copied()
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Token ids of `text` (no BOS).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        // Cut at user-defined pieces, longest first, as llama.cpp partitions its text.
        enum Frag<'a> {
            Text(&'a str),
            Piece(u32),
        }
        let mut frags = vec![Frag::Text(text)];
        for (piece, id) in &self.user_defined {
            if !text.contains(piece.as_str()) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                match f {
                    Frag::Text(t) if t.contains(piece.as_str()) => {
                        let mut parts = t.split(piece.as_str()).peekable();
                        while let Some(part) = parts.next() {
                            if !part.is_empty() {
                                next.push(Frag::Text(part));
                            }
                            if parts.peek().is_some() {
                                next.push(Frag::Piece(*id));
                            }
                        }
                    }
                    other => next.push(other),
                }
            }
            frags = next;
        }
        let mut out = Vec::new();
        for f in frags {
            match f {
                Frag::Piece(id) => out.push(id),
                Frag::Text(t) => self.encode_fragment(&t.replace(' ', "▁"), &mut out),
            }
        }
        out
    }

    fn piece_score(&self, s: &str) -> Option<(u32, f32)> {
        let id = *self.vocab.get(s)?;
        let ty = self.types.get(id as usize).copied().unwrap_or(1);
        // Only normal pieces take part in merging (llama.cpp ignores the rest).
        if ty == CONTROL || ty == USER_DEFINED || ty == BYTE {
            return None;
        }
        Some((id, self.scores.get(id as usize).copied().unwrap_or(0.0)))
    }

    fn encode_fragment(&self, text: &str, out: &mut Vec<u32>) {
        let n = text.chars().count();
        let mut syms: Vec<Symbol> = text
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
            })
            .collect();
        let mut heap = BinaryHeap::new();
        let try_pair = |heap: &mut BinaryHeap<Bigram>, syms: &[Symbol], left: usize| {
            let Some(right) = syms[left].next else { return };
            let (a, b) = (syms[left], syms[right]);
            let s = &text[a.start..b.start + b.len];
            if let Some((_, score)) = self.piece_score(s) {
                heap.push(Bigram {
                    score,
                    left,
                    right,
                    len: s.len(),
                });
            }
        };
        for i in 0..n.saturating_sub(1) {
            try_pair(&mut heap, &syms, i);
        }
        while let Some(bg) = heap.pop() {
            let (l, r) = (syms[bg.left], syms[bg.right]);
            // Stale: one side has been merged since this pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.len || l.next != Some(bg.right) {
                continue;
            }
            syms[bg.left].len += r.len;
            syms[bg.left].next = r.next;
            syms[bg.right].len = 0;
            if let Some(nx) = r.next {
                syms[nx].prev = Some(bg.left);
            }
            if let Some(pv) = syms[bg.left].prev {
                try_pair(&mut heap, &syms, pv);
            }
            try_pair(&mut heap, &syms, bg.left);
        }
        let mut at = (n > 0).then_some(0);
        while let Some(i) = at {
            let s = syms[i];
            let piece = &text[s.start..s.start + s.len];
            match self.vocab.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(piece.bytes().filter_map(|b| self.byte_ids[b as usize])),
            }
            at = s.next;
        }
    }

    /// Text of `ids`; control tokens are left out, byte tokens joined into UTF-8.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(t) = self.tokens.get(id as usize) else {
                continue;
            };
            match self.types.get(id as usize).copied().unwrap_or(1) {
                CONTROL => {}
                BYTE => {
                    if let Some(b) = t
                        .strip_prefix("<0x")
                        .and_then(|h| h.strip_suffix('>'))
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        bytes.push(b);
                    }
                }
                _ => bytes.extend(t.replace(SPACE, " ").bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small vocabulary in Gemma's shape.
    fn tok() -> Tokenizer {
        let pieces: &[(&str, f32, i64)] = &[
            ("<pad>", 0.0, CONTROL),
            ("<eos>", 0.0, CONTROL),
            ("<bos>", 0.0, CONTROL),
            ("\n", 0.0, USER_DEFINED),
            ("  ", 0.0, USER_DEFINED),
            ("<0xC3>", 0.0, BYTE),
            ("<0xA9>", 0.0, BYTE),
            ("a", -1.0, 1),
            ("b", -1.0, 1),
            ("c", -1.0, 1),
            ("▁", -1.0, 1),
            ("ab", -5.0, 1),
            ("bc", -2.0, 1),
            ("abc", -3.0, 1),
            ("▁a", -4.0, 1),
        ];
        Tokenizer::new(
            pieces.iter().map(|p| p.0.to_string()).collect(),
            pieces.iter().map(|p| p.1).collect(),
            pieces.iter().map(|p| p.2).collect(),
        )
    }

    #[test]
    fn merges_by_score_not_by_position() {
        let t = tok();
        // "bc" (-2) merges before "ab" (-5); then "a"+"bc" forms "abc" (-3).
        assert_eq!(t.encode("abc"), vec![t.id("abc").unwrap()]);
        // "ab" only where no better pair competes.
        assert_eq!(t.encode("ab"), vec![t.id("ab").unwrap()]);
    }

    #[test]
    fn spaces_user_pieces_and_byte_fallback() {
        let t = tok();
        let id = |s| t.id(s).unwrap();
        assert_eq!(t.encode("b a"), vec![id("b"), id("▁a")]);
        // Two spaces are a user-defined piece matched on the raw text.
        assert_eq!(
            t.encode("b  a\n"),
            vec![id("b"), id("  "), id("a"), id("\n")]
        );
        // "é" is not a piece: its UTF-8 bytes.
        assert_eq!(t.encode("é"), vec![id("<0xC3>"), id("<0xA9>")]);
        // Control tokens are never produced from text.
        assert!(!t.encode("<eos>").contains(&id("<eos>")));
        for s in ["b  a\n", "é", "abc ab", ""] {
            assert_eq!(t.decode(&t.encode(s)), s);
        }
    }
}
