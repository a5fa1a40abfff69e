//! The package index (`apiary-package.json`): what the package holds, named by hash.
//!
//! The index is the one thing the author signs. Every file of the plugin is listed with
//! its SHA-256 and size, so the signature over the index covers every byte of every file
//! without signing the (possibly gigabytes of) data itself. The index is kept and checked
//! as the exact bytes that were signed; it is parsed to learn what it says, but never
//! re-serialised, so no two parsers can disagree about what was signed.
//!
//! Everything in it is untrusted until the signature and the trust policy say otherwise,
//! and even then it is validated before a single file is written: paths must be plain
//! relative names (no `/` at the start, no `..`, no `.` or empty parts, nothing hidden,
//! no control characters or backslashes, a bounded length), listed once each in sorted
//! order, none both a file and a folder, and the count and total size within the
//! operator's [`Limits`].

use super::Limits;
use super::author::AuthorKey;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The only format this host reads and writes.
pub const FORMAT: u32 = 1;
/// Longest path in a package (bytes). The tar header holds up to 255 (`files/` included)
/// when split at a `/`; one limit both sides know keeps pack and install in agreement.
pub const MAX_PATH_BYTES: usize = 240;
/// Longest part of a path (bytes); the part after the last `/` must fit the header's
/// 100-byte name field.
pub const MAX_PART_BYTES: usize = 100;
/// Longest plugin name and version.
pub const MAX_NAME_CHARS: usize = 64;

/// `apiary-package.json` as parsed. Field order is the file's (serde writes fields in
/// declaration order), and unknown fields are refused: format 1 says exactly this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub format: u32,
    pub name: String,
    pub version: String,
    /// The signer's key; absent in an unsigned package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<AuthorKey>,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// What is wrong with an index (or with a path or name that would go into one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexProblem {
    #[error("it is not a format-{FORMAT} index: {0}")]
    Json(String),
    #[error("it is format {0}; this apiary reads format {FORMAT} (a newer apiary made it)")]
    Format(u32),
    #[error("it is {bytes} bytes, more than the {max} that {files} files could need")]
    TooLarge { bytes: u64, max: u64, files: usize },
    #[error("the plugin name {name:?} {why}")]
    Name { name: String, why: &'static str },
    #[error("the version {version:?} {why}")]
    Version { version: String, why: &'static str },
    #[error("{path:?} {why}")]
    Path { path: String, why: PathProblem },
    #[error("{0:?} is listed twice")]
    Duplicate(String),
    #[error("the files are not sorted by path ({after:?} comes after {before:?})")]
    Unsorted { before: String, after: String },
    #[error("{file:?} is a file and also a folder of {inside:?}")]
    FileAndFolder { file: String, inside: String },
    #[error("the sha256 of {0:?} is not 64 lower-case hex digits")]
    Hash(String),
    #[error("it lists no files")]
    Empty,
    #[error("it lists {count} files, more than the {max} allowed (--max-files)")]
    TooManyFiles { count: usize, max: usize },
    #[error("its files add up to {total} bytes, more than the {max} allowed (--max-bytes)")]
    TooManyBytes { total: u128, max: u64 },
}

/// Why a path is not a plain relative name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("is empty")]
    Empty,
    #[error("is absolute (starts with /)")]
    Absolute,
    #[error("has a `..` part (it would lead out of the plugin folder)")]
    Parent,
    #[error("has an empty or `.` part")]
    EmptyPart,
    #[error("has a hidden part (starting with `.`); packages hold no hidden files")]
    Hidden,
    #[error("has a control character")]
    Control,
    #[error("has a backslash (paths are separated by `/`)")]
    Backslash,
    #[error("is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("has a part longer than {MAX_PART_BYTES} bytes")]
    PartTooLong,
    #[error("is not UTF-8")]
    NotUtf8,
}

/// Check that `path` is a plain relative name for a file inside a plugin folder.
pub fn check_path(path: &str) -> Result<(), PathProblem> {
    if path.is_empty() {
        return Err(PathProblem::Empty);
    }
    if path.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathProblem::TooLong);
    }
    if path.chars().any(char::is_control) {
        return Err(PathProblem::Control);
    }
    if path.contains('\\') {
        return Err(PathProblem::Backslash);
    }
    for part in path.split('/') {
        match part {
            ".." => return Err(PathProblem::Parent),
            "" | "." => return Err(PathProblem::EmptyPart),
            p if p.starts_with('.') => return Err(PathProblem::Hidden),
            p if p.len() > MAX_PART_BYTES => return Err(PathProblem::PartTooLong),
            _ => {}
        }
    }
    Ok(())
}

/// A plugin name becomes a folder name in the plugins folder and part of the package's
/// file name: letters, digits, `-`, `_` and `.`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), IndexProblem> {
    let why = plain_word(name, true);
    match why {
        None => Ok(()),
        Some(why) => Err(IndexProblem::Name {
            name: crate::plugins::safe_read::excerpt(name, 80),
            why,
        }),
    }
}

/// A version: the same characters as a name, and `+` (semver build metadata).
pub fn check_version(version: &str) -> Result<(), IndexProblem> {
    match plain_word(version, false) {
        None => Ok(()),
        Some(why) => Err(IndexProblem::Version {
            version: crate::plugins::safe_read::excerpt(version, 80),
            why,
        }),
    }
}

fn plain_word(s: &str, is_name: bool) -> Option<&'static str> {
    let allowed = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (!is_name && c == '+')
    };
    if s.is_empty() {
        Some("is empty")
    } else if s.chars().count() > MAX_NAME_CHARS {
        Some("is longer than 64 characters")
    } else if s.starts_with(['.', '-']) {
        Some("starts with `.` or `-`")
    } else if !s.chars().all(allowed) {
        Some(if is_name {
            "must be a plain folder name: letters, digits, `-`, `_` and `.`"
        } else {
            "may hold only letters, digits, `-`, `_`, `.` and `+`"
        })
    } else {
        None
    }
}

/// 64 lower-case hex digits: what [`hex::encode`] of a SHA-256 writes.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Index {
    /// Parse the exact bytes of an index entry; nothing is validated yet but the JSON's
    /// shape (validation comes after the signature check: [`Index::validate`]).
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Index, IndexProblem> {
        let max = limits.max_index_bytes();
        if bytes.len() as u64 > max {
            return Err(IndexProblem::TooLarge {
                bytes: bytes.len() as u64,
                max,
                files: limits.max_files,
            });
        }
        let index: Index = serde_json::from_slice(bytes).map_err(|e| {
            IndexProblem::Json(crate::plugins::safe_read::excerpt(&e.to_string(), 200))
        })?;
        if index.format != FORMAT {
            return Err(IndexProblem::Format(index.format));
        }
        Ok(index)
    }

    /// Everything [`Index`]'s module docs require, against `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<(), IndexProblem> {
        check_name(&self.name)?;
        check_version(&self.version)?;
        if self.files.len() > limits.max_files {
            return Err(IndexProblem::TooManyFiles {
                count: self.files.len(),
                max: limits.max_files,
            });
        }
        if self.files.is_empty() {
            return Err(IndexProblem::Empty);
        }
        let total: u128 = self.files.iter().map(|f| u128::from(f.bytes)).sum();
        if total > u128::from(limits.max_bytes) {
            return Err(IndexProblem::TooManyBytes {
                total,
                max: limits.max_bytes,
            });
        }
        for f in &self.files {
            check_path(&f.path).map_err(|why| IndexProblem::Path {
                path: crate::plugins::safe_read::excerpt(&f.path, 80),
                why,
            })?;
            if !is_sha256_hex(&f.sha256) {
                return Err(IndexProblem::Hash(f.path.clone()));
            }
        }
        for pair in self.files.windows(2) {
            let (a, b) = (&pair[0].path, &pair[1].path);
            if a == b {
                return Err(IndexProblem::Duplicate(a.clone()));
            }
            if a > b {
                return Err(IndexProblem::Unsorted {
                    before: a.clone(),
                    after: b.clone(),
                });
            }
        }
        let files: HashSet<&str> = self.files.iter().map(|f| f.path.as_str()).collect();
        for f in &self.files {
            if let Some(folder) = folders_of(&f.path).find(|d| files.contains(d)) {
                return Err(IndexProblem::FileAndFolder {
                    file: folder.to_string(),
                    inside: f.path.clone(),
                });
            }
        }
        Ok(())
    }

    /// The index as the bytes that are signed and stored. Only [`super::pack`] calls it:
    /// an index read from a package is kept as the bytes it came as.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("an index serializes");
        bytes.push(b'\n');
        bytes
    }

    /// The package's file name, `NAME-VERSION.apiary`.
    pub fn file_name(&self) -> String {
        format!("{}-{}.{}", self.name, self.version, super::EXTENSION)
    }

    /// The folders a file needs, for the staging folder (`weights` for
    /// `weights/model.gguf`), each once, parents first.
    pub fn folders(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        let mut out: Vec<&str> = Vec::new();
        for f in &self.files {
            let mut mine: Vec<&str> = folders_of(&f.path).collect();
            mine.reverse();
            for d in mine {
                if seen.insert(d) {
                    out.push(d);
                }
            }
        }
        out
    }
}

/// The folders above `path`, innermost first: `a/b/c` → `a/b`, `a`.
pub fn folders_of(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = path;
    std::iter::from_fn(move || {
        let cut = rest.rfind('/')?;
        rest = &rest[..cut];
        Some(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, bytes: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            sha256: "0".repeat(64),
            bytes,
        }
    }

    fn index(files: Vec<FileEntry>) -> Index {
        Index {
            format: FORMAT,
            name: "arith".into(),
            version: "0.1.0".into(),
            author: None,
            files,
        }
    }

    #[test]
    fn paths_must_be_plain_relative_names() {
        for ok in [
            "plugin.toml",
            "arith.wasm",
            "weights/model.gguf",
            "a/b/c-d_e.f",
            "weights/vocab..json",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        let long_part = "p".repeat(101);
        let long_path = "d/".repeat(121);
        for (bad, why) in [
            ("", PathProblem::Empty),
            ("/etc/passwd", PathProblem::Absolute),
            ("/tmp/x", PathProblem::Absolute),
            ("../x", PathProblem::Parent),
            ("weights/../../x", PathProblem::Parent),
            ("..", PathProblem::Parent),
            ("a//b", PathProblem::EmptyPart),
            ("a/./b", PathProblem::EmptyPart),
            ("weights/", PathProblem::EmptyPart),
            (".", PathProblem::EmptyPart),
            (".apiary-package.json", PathProblem::Hidden),
            ("weights/.hidden", PathProblem::Hidden),
            ("a\nb", PathProblem::Control),
            ("a\u{1b}[2Jb", PathProblem::Control),
            ("nul\0", PathProblem::Control),
            ("a\\..\\b", PathProblem::Backslash),
            (long_part.as_str(), PathProblem::PartTooLong),
            (long_path.as_str(), PathProblem::TooLong),
        ] {
            assert_eq!(check_path(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn names_and_versions_are_plain_words() {
        for ok in ["arith", "smollm", "my_plugin-2", "a.b"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-flag",
            "a/b",
            "a b",
            "x\u{1b}",
            "é",
            &"n".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_version("0.1.0+build.5").is_ok());
        assert!(check_name("a+b").is_err());
        assert!(check_version("1/2").is_err());
    }

    #[test]
    fn a_valid_index_passes_and_round_trips() {
        let i = index(vec![entry("arith.wasm", 10), entry("plugin.toml", 3)]);
        i.validate(&Limits::default()).unwrap();
        let bytes = i.to_bytes();
        assert_eq!(Index::parse(&bytes, &Limits::default()).unwrap(), i);
        assert_eq!(i.file_name(), "arith-0.1.0.apiary");
        // Unsigned indexes have no author key at all.
        assert!(!String::from_utf8(bytes).unwrap().contains("author"));
    }

    #[test]
    fn bad_indexes_are_refused_with_the_reason() {
        let l = Limits::default();
        let bad = |files: Vec<FileEntry>| index(files).validate(&l).unwrap_err();
        assert_eq!(
            bad(vec![entry("a", 1), entry("a", 1)]),
            IndexProblem::Duplicate("a".into())
        );
        assert!(matches!(
            bad(vec![entry("b", 1), entry("a", 1)]),
            IndexProblem::Unsorted { .. }
        ));
        assert!(matches!(
            bad(vec![entry("../x", 1)]),
            IndexProblem::Path {
                why: PathProblem::Parent,
                ..
            }
        ));
        assert!(matches!(
            bad(vec![entry("/tmp/x", 1)]),
            IndexProblem::Path {
                why: PathProblem::Absolute,
                ..
            }
        ));
        assert_eq!(
            bad(vec![entry("weights", 1), entry("weights/x", 1)]),
            IndexProblem::FileAndFolder {
                file: "weights".into(),
                inside: "weights/x".into()
            }
        );
        assert_eq!(bad(vec![]), IndexProblem::Empty);
        let mut e = entry("a", 1);
        e.sha256 = "A".repeat(64);
        assert_eq!(bad(vec![e]), IndexProblem::Hash("a".into()));
        let mut i = index(vec![entry("a", 1)]);
        i.name = "../../etc".into();
        assert!(matches!(i.validate(&l), Err(IndexProblem::Name { .. })));
        // Unknown fields, another format, not JSON.
        let e = Index::parse(
            br#"{"format":1,"name":"a","version":"1","files":[],"x":1}"#,
            &l,
        )
        .unwrap_err();
        assert!(matches!(e, IndexProblem::Json(_)), "{e}");
        let e =
            Index::parse(br#"{"format":2,"name":"a","version":"1","files":[]}"#, &l).unwrap_err();
        assert_eq!(e, IndexProblem::Format(2));
        assert!(matches!(
            Index::parse(b"\x00\x01", &l),
            Err(IndexProblem::Json(_))
        ));
    }

    #[test]
    fn caps_on_count_total_and_index_size_hold() {
        let small = Limits {
            max_files: 3,
            max_bytes: 100,
        };
        let files: Vec<FileEntry> = (0..4).map(|i| entry(&format!("f{i}"), 1)).collect();
        assert_eq!(
            index(files).validate(&small),
            Err(IndexProblem::TooManyFiles { count: 4, max: 3 })
        );
        assert_eq!(
            index(vec![entry("a", 60), entry("b", 41)]).validate(&small),
            Err(IndexProblem::TooManyBytes {
                total: 101,
                max: 100
            })
        );
        index(vec![entry("a", 60), entry("b", 40)])
            .validate(&small)
            .unwrap();
        // Sizes that overflow u64 when added are still refused, not wrapped.
        let huge = index(vec![entry("a", u64::MAX), entry("b", u64::MAX)]);
        assert!(matches!(
            huge.validate(&Limits::default()),
            Err(IndexProblem::TooManyBytes { .. })
        ));
        // The index's own size is capped before it is parsed.
        let big = vec![b' '; small.max_index_bytes() as usize + 1];
        assert!(matches!(
            Index::parse(&big, &small),
            Err(IndexProblem::TooLarge { .. })
        ));
        // The default cap leaves room for the default number of files at the longest path.
        let longest = "p/".repeat(MAX_PATH_BYTES / 2 - 1) + "pp";
        assert_eq!(check_path(&longest), Ok(()));
        let full: Vec<FileEntry> = (0..Limits::default().max_files)
            .map(|_| entry(&longest, u64::MAX / 20_000))
            .collect();
        assert!(
            (index(full).to_bytes().len() as u64) < Limits::default().max_index_bytes(),
            "the index cap must not refuse a full, valid index"
        );
    }

    #[test]
    fn folders_are_listed_parents_first_once() {
        let i = index(vec![
            entry("a/b/c", 1),
            entry("a/b/d", 1),
            entry("a/e", 1),
            entry("f", 1),
        ]);
        assert_eq!(i.folders(), vec!["a", "a/b"]);
        assert_eq!(folders_of("x").count(), 0);
    }
}
