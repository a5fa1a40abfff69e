//! Qwen2's byte-level BPE, built from a GGUF file's `tokenizer.ggml.*` metadata
//! (`tokenizer.ggml.model = gpt2`, `tokenizer.ggml.pre = qwen2`).
//!
//! Adapted from the smollm plugin's tokenizer, with three differences:
//! - control and user-defined tokens (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`,
//!   `<tool_call>` …) are matched as whole tokens in the text before anything else;
//! - the pre-tokenizer is Qwen2's pattern (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2`):
//!   `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
//!   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` — every digit alone;
//! - merges work on token ids: a table from a pair of ids to the merge's rank and the
//!   merged id, built once from the 151,387 merges (a hash-map insert each), so encoding
//!   allocates no strings.

use crate::unicode::{is_letter, is_number};
use std::collections::HashMap;

/// GGUF token types.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const UNUSED: i64 = 5;

pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    tokens: Vec<String>,
    types: Vec<i64>,
    /// `(left, right)` → `(rank, merged)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// The token of each byte's printable stand-in (GPT-2's byte encoder).
    byte_token: [Option<u32>; 256],
    /// The byte each stand-in character (all below U+0144) encodes.
    byte_decoder: HashMap<char, u8>,
    /// Control and user-defined tokens, matched whole in text, longest first.
    specials: Vec<(String, u32)>,
}

/// GPT-2's byte encoder: printable bytes stand for themselves, the others for U+0100….
fn byte_encoder() -> [char; 256] {
    let mut table = ['\0'; 256];
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('?')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('?')
        };
    }
    table
}

impl Tokenizer {
    /// `tokens[i]` is token i's string; `merges` are "left right" pairs in rank order;
    /// `types[i]` is token i's GGUF type (3 control, 4 user-defined, 5 unused).
    pub fn new(tokens: Vec<String>, merges: &[String], types: &[i64]) -> Tokenizer {
        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut table = HashMap::with_capacity(merges.len());
        let mut joined = String::new();
        for (rank, m) in merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                continue;
            };
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            // A merge whose parts or result have no token cannot produce one: skipped.
            if let (Some(&a), Some(&b), Some(&ab)) =
                (vocab.get(a), vocab.get(b), vocab.get(joined.as_str()))
            {
                table.entry((a, b)).or_insert((rank as u32, ab));
            }
        }
        let encoder = byte_encoder();
        let mut byte_token = [None; 256];
        for (b, c) in encoder.iter().enumerate() {
            byte_token[b] = vocab.get(c.to_string().as_str()).copied();
        }
        let byte_decoder = encoder
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let types: Vec<i64> = (0..tokens.len())
            .map(|i| types.get(i).copied().unwrap_or(1))
            .collect();
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (t, ty))| matches!(**ty, CONTROL | USER_DEFINED) && !t.is_empty())
            .map(|(i, (t, _))| (t.clone(), i as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Tokenizer {
            vocab,
            tokens,
            types,
            merges: table,
            byte_token,
            byte_decoder,
            specials,
        }
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// `text` as token ids, control and user-defined tokens matched where they occur.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            // The earliest special token in `rest`, the longest at that position.
            let next = self
                .specials
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s.len(), *id)))
                .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            match next {
                Some((at, len, id)) => {
                    self.encode_plain(&rest[..at], &mut ids);
                    ids.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_plain(rest, &mut ids);
                    break;
                }
            }
        }
        ids
    }

    /// Text without special tokens: pre-tokenized, then each piece merged by rank.
    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) {
        for piece in pre_tokenize(text) {
            let mut symbols: Vec<u32> = piece
                .bytes()
                .filter_map(|b| self.byte_token[b as usize])
                .collect();
            loop {
                // The lowest-ranked adjacent pair, the leftmost of equals.
                let mut best: Option<(u32, usize, u32)> = None;
                for (i, w) in symbols.windows(2).enumerate() {
                    if let Some(&(rank, merged)) = self.merges.get(&(w[0], w[1]))
                        && best.is_none_or(|(r, _, _)| rank < r)
                    {
                        best = Some((rank, i, merged));
                    }
                }
                let Some((_, i, merged)) = best else { break };
                symbols[i] = merged;
                symbols.remove(i + 1);
            }
            ids.extend(symbols);
        }
    }

    /// The text of `ids`; control and unused tokens are not text.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let i = id as usize;
            let Some(token) = self.tokens.get(i) else {
                continue;
            };
            match self.types[i] {
                CONTROL | UNUSED => {}
                USER_DEFINED => bytes.extend(token.as_bytes()),
                _ => bytes.extend(token.chars().filter_map(|c| self.byte_decoder.get(&c))),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Qwen2's pre-tokenizer: `text` (no special tokens) split into the pieces that are
/// merged separately. Each branch is one alternative of the pattern, tried in order at
/// the current position, as llama.cpp's `unicode_regex_split_custom_qwen2` does.
pub fn pre_tokenize(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let byte = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
    let letter = |i: usize| at(i).is_some_and(is_letter);
    let number = |i: usize| at(i).is_some_and(is_number);
    let space = |i: usize| at(i).is_some_and(char::is_whitespace);
    let newline = |i: usize| matches!(at(i), Some('\r' | '\n'));
    // [^\s\p{L}\p{N}]
    let other = |i: usize| at(i).is_some() && !space(i) && !letter(i) && !number(i);
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        let end = 'piece: {
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if c == '\'' {
                let lower = |k: usize| at(k).map(|c| c.to_ascii_lowercase());
                if matches!(lower(i + 1), Some('s' | 't' | 'm' | 'd')) {
                    break 'piece i + 2;
                }
                if matches!(
                    (lower(i + 1), lower(i + 2)),
                    (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
                ) {
                    break 'piece i + 3;
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !newline(i) && !number(i) && (letter(i) || letter(i + 1)) {
                let mut j = i + 1;
                while letter(j) {
                    j += 1;
                }
                break 'piece j;
            }
            // \p{N}
            if number(i) {
                break 'piece i + 1;
            }
            // ' '?[^\s\p{L}\p{N}]+[\r\n]*
            let first = if c == ' ' { i + 1 } else { i };
            if other(first) {
                let mut j = first;
                while other(j) {
                    j += 1;
                }
                while newline(j) {
                    j += 1;
                }
                break 'piece j;
            }
            let mut k = i;
            let mut last_newline = None;
            while space(k) {
                if newline(k) {
                    last_newline = Some(k + 1);
                }
                k += 1;
            }
            // \s*[\r\n]+
            if let Some(j) = last_newline {
                break 'piece j;
            }
            // \s+(?!\S): leave the last space to lead the next piece.
            if k - i > 1 && k < n {
                break 'piece k - 1;
            }
            // \s+
            if k > i {
                break 'piece k;
            }
            i + 1
        };
        out.push(&text[byte(i)..byte(end)]);
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenizer_follows_the_qwen2_pattern() {
        assert_eq!(pre_tokenize("Hello world"), vec!["Hello", " world"]);
        assert_eq!(
            pre_tokenize("What is 17*23?"),
            vec!["What", " is", " ", "1", "7", "*", "2", "3", "?"]
        );
        assert_eq!(
            pre_tokenize("it's  fine\n"),
            vec!["it", "'s", " ", " fine", "\n"]
        );
        assert_eq!(pre_tokenize("I'LL GO"), vec!["I", "'LL", " GO"]);
        // A non-letter, non-newline character leads a word; punctuation keeps newlines.
        assert_eq!(pre_tokenize("(foo);\n\nbar"), vec!["(foo", ");\n\n", "bar"]);
        assert_eq!(
            pre_tokenize("def f(x):\n    return x"),
            vec!["def", " f", "(x", "):\n", "   ", " return", " x"]
        );
        // \s*[\r\n]+ ends at the last newline of a whitespace run.
        assert_eq!(pre_tokenize("a \n \n  b"), vec!["a", " \n \n", " ", " b"]);
        assert_eq!(pre_tokenize("a   "), vec!["a", "   "]);
        assert_eq!(pre_tokenize("\tx"), vec!["\tx"]);
        assert_eq!(pre_tokenize("日本語 ok"), vec!["日本語", " ok"]);
        assert_eq!(pre_tokenize("é"), vec!["é"]);
        assert_eq!(pre_tokenize(""), Vec::<&str>::new());
    }

    fn toy() -> Tokenizer {
        let enc = byte_encoder();
        let sp = enc[b' ' as usize].to_string();
        let tokens: Vec<String> = [
            "h",
            "e",
            "l",
            "o",
            &sp,
            "he",
            "ll",
            "hell",
            "hello",
            &format!("{sp}h"),
            "<|im_end|>",
            "<|im_end|>x",
            "<tool>",
            "[PAD]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let merges: Vec<String> = ["h e", "l l", "he ll", "hell o", &format!("{sp} h")]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let types = vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 4, 5];
        Tokenizer::new(tokens, &merges, &types)
    }

    #[test]
    fn bpe_merges_by_rank_and_round_trips() {
        let t = toy();
        assert_eq!(t.encode("hello"), vec![8]);
        assert_eq!(
            t.encode("hello hello"),
            vec![8, 4, 8],
            "h+e (rank 0) wins over space+h (rank 4)"
        );
        assert_eq!(t.decode(&t.encode("hello hello")), "hello hello");
        assert_eq!(t.decode(&[8, 10]), "hello", "control tokens are not text");
        assert_eq!(
            t.decode(&[12, 13]),
            "<tool>",
            "user-defined tokens are, unused not"
        );
        assert_eq!(t.id("<|im_end|>"), Some(10));
    }

    #[test]
    fn special_tokens_are_matched_whole_longest_first() {
        let t = toy();
        assert_eq!(t.encode("hello<|im_end|>hello"), vec![8, 10, 8]);
        assert_eq!(t.encode("<|im_end|>xhe"), vec![11, 5]);
        assert_eq!(t.encode("<tool><|im_end|>"), vec![12, 10]);
        assert_eq!(
            t.encode("<|im_en"),
            vec![1],
            "not special: its bytes (only e has one)"
        );
        assert_eq!(
            t.encode("[PAD]"),
            Vec::<u32>::new(),
            "unused tokens are not matched"
        );
    }
}
