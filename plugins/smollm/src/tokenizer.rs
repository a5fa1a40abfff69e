//! GPT-2 style byte-level BPE, built from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Text is split into pieces (SmolLM's pre-tokenizer: every digit alone, then GPT-2's
//! pattern), each piece's bytes are mapped to printable characters (GPT-2's byte
//! encoder), and adjacent symbols are merged by rank until no merge applies.

use std::collections::HashMap;

pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    tokens: Vec<String>,
    merges: HashMap<(String, String), u32>,
    /// Control tokens (`<|im_start|>` ...) never appear in decoded text.
    special: Vec<bool>,
    byte_encoder: [char; 256],
    byte_decoder: HashMap<char, u8>,
}

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
    /// `types[i] == 3` marks control tokens.
    pub fn new(tokens: Vec<String>, merges: &[String], types: &[i64]) -> Tokenizer {
        let vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .enumerate()
            .filter_map(|(rank, m)| {
                m.split_once(' ')
                    .map(|(a, b)| ((a.to_string(), b.to_string()), rank as u32))
            })
            .collect();
        let special = (0..tokens.len())
            .map(|i| types.get(i) == Some(&3))
            .collect();
        let byte_encoder = byte_encoder();
        let byte_decoder = byte_encoder
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        Tokenizer {
            vocab,
            tokens,
            merges,
            special,
            byte_encoder,
            byte_decoder,
        }
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for piece in pre_tokenize(text) {
            let mut symbols: Vec<String> = piece
                .bytes()
                .map(|b| self.byte_encoder[b as usize].to_string())
                .collect();
            loop {
                let best = symbols
                    .windows(2)
                    .enumerate()
                    .filter_map(|(i, w)| {
                        self.merges
                            .get(&(w[0].clone(), w[1].clone()))
                            .map(|&r| (r, i))
                    })
                    .min();
                let Some((_, i)) = best else { break };
                let merged = format!("{}{}", symbols[i], symbols[i + 1]);
                symbols.splice(i..i + 2, [merged]);
            }
            for s in symbols {
                match self.vocab.get(&s) {
                    Some(&id) => ids.push(id),
                    // A symbol without a token: fall back to its single characters.
                    None => ids.extend(
                        s.chars()
                            .filter_map(|c| self.vocab.get(&c.to_string()).copied()),
                    ),
                }
            }
        }
        ids
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let i = id as usize;
            if i >= self.tokens.len() || self.special[i] {
                continue;
            }
            for c in self.tokens[i].chars() {
                if let Some(&b) = self.byte_decoder.get(&c) {
                    bytes.push(b);
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// SmolLM's pre-tokenizer: digits alone, then GPT-2's pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
pub fn pre_tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() || c.is_numeric() {
            gpt2_split(&rest, &mut out);
            rest.clear();
            out.push(c.to_string());
        } else {
            rest.push(c);
        }
    }
    gpt2_split(&rest, &mut out);
    out
}

fn gpt2_split(text: &str, out: &mut Vec<String>) {
    let c: Vec<char> = text.chars().collect();
    let n = c.len();
    let letter = |x: char| x.is_alphabetic();
    let number = |x: char| x.is_numeric();
    let other = |x: char| !x.is_whitespace() && !x.is_alphabetic() && !x.is_numeric();
    let mut i = 0;
    while i < n {
        if c[i] == '\'' {
            let tail: String = c[i + 1..n.min(i + 3)].iter().collect();
            let len = ["ll", "re", "ve", "s", "t", "m", "d"]
                .iter()
                .find(|s| tail.starts_with(**s))
                .map(|s| s.len());
            if let Some(len) = len {
                out.push(c[i..=i + len].iter().collect());
                i += len + 1;
                continue;
            }
        }
        let start = i;
        let mut j = i;
        if c[j] == ' ' && j + 1 < n && !c[j + 1].is_whitespace() {
            j += 1;
        }
        let class: Option<&dyn Fn(char) -> bool> = if letter(c[j]) {
            Some(&letter)
        } else if number(c[j]) {
            Some(&number)
        } else if other(c[j]) {
            Some(&other)
        } else {
            None
        };
        match class {
            Some(f) => {
                while j < n && f(c[j]) {
                    j += 1;
                }
                out.push(c[start..j].iter().collect());
                i = j;
            }
            None => {
                let mut k = i;
                while k < n && c[k].is_whitespace() {
                    k += 1;
                }
                // \s+(?!\S): leave the last space to lead the next word.
                let end = if k < n && k - i > 1 { k - 1 } else { k };
                out.push(c[i..end].iter().collect());
                i = end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenizer_matches_gpt2_pattern() {
        assert_eq!(pre_tokenize("Hello world"), vec!["Hello", " world"]);
        assert_eq!(
            pre_tokenize("What is 17*23?"),
            vec!["What", " is", " ", "1", "7", "*", "2", "3", "?"]
        );
        assert_eq!(
            pre_tokenize("it's  fine\n"),
            vec!["it", "'s", " ", " fine", "\n"]
        );
        assert_eq!(pre_tokenize("a!! b"), vec!["a", "!!", " b"]);
    }

    #[test]
    fn bpe_merges_by_rank_and_round_trips() {
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
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let merges: Vec<String> = ["h e", "l l", "he ll", "hell o", &format!("{sp} h")]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let types = vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3];
        let t = Tokenizer::new(tokens, &merges, &types);
        assert_eq!(t.encode("hello"), vec![8]);
        assert_eq!(
            t.encode("hello hello"),
            vec![8, 4, 8],
            "h+e (rank 0) wins over space+h (rank 4)"
        );
        assert_eq!(t.decode(&t.encode("hello hello")), "hello hello");
        assert_eq!(t.decode(&[8, 10]), "hello", "control tokens are not text");
        assert_eq!(t.id("<|im_end|>"), Some(10));
    }
}
