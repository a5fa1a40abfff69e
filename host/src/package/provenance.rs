//! Provenance of an installed plugin: who signed it, and whether it changed since.
//!
//! `install` leaves the signed index and its signature in the plugin folder
//! (`.apiary-package.json`, `.apiary-package.sig`). `apiary plugins list` and `audit`
//! read them back (size-capped, through [`safe_read`]), verify the signature again and
//! compare the folder with the index. A folder without a record was put there by hand;
//! the node loads it all the same, and the operator is told so.
//!
//! How much is compared depends on [`Depth`]:
//!
//! - [`Depth::Full`] (`audit`): every file's SHA-256, and every file in the folder that
//!   the index does not list.
//! - [`Depth::Quick`] (`list`, which runs whenever an operator looks): the same, except
//!   that files under `weights/` are compared by size only. The manifest and the
//!   component, which decide what runs and with what limits, are always hashed (a few
//!   hundred kilobytes); weights are hundreds of megabytes, and hashing them on every
//!   listing would make `list` take seconds per model.

use super::author::AuthorKey;
use super::index::Index;
use super::trust::{Signer, TrustPolicy};
use super::{INSTALLED_INDEX, INSTALLED_SIGNATURE, Limits, MAX_SIGNATURE_BYTES};
use crate::plugins::loader::WEIGHTS_DIR;
use crate::plugins::safe_read::{self, FileKind, excerpt};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

/// How closely to compare a folder with its record (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Depth {
    Quick,
    Full,
}

/// Entries looked at in a folder before the search for added files stops.
const MAX_LOOKED: usize = 100_000;
/// Caps on the record read back: the files were installed under some [`Limits`]; this
/// only keeps a planted record from costing unbounded memory.
const RECORD_LIMITS: Limits = Limits {
    max_files: 100_000,
    max_bytes: u64::MAX,
};

/// One way the folder differs from its signed index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    #[serde(flatten)]
    pub what: ChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Same size, different SHA-256.
    Changed,
    Resized {
        signed: u64,
        now: u64,
    },
    Missing,
    /// In the folder, not in the index.
    Added,
    /// No longer a regular file (a symlink, a FIFO...).
    NotAFile {
        now: String,
    },
    Unreadable {
        why: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = excerpt(&self.path, 120);
        match &self.what {
            ChangeKind::Changed => write!(f, "{path} (its sha256 differs)"),
            ChangeKind::Resized { signed, now } => {
                write!(f, "{path} (signed at {signed} bytes, now {now})")
            }
            ChangeKind::Missing => write!(f, "{path} (missing)"),
            ChangeKind::Added => write!(f, "{path} (added)"),
            ChangeKind::NotAFile { now } => write!(f, "{path} (now {now})"),
            ChangeKind::Unreadable { why } => write!(f, "{path} (cannot be read: {why})"),
        }
    }
}

/// What an installed folder's record says, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Provenance {
    /// No record: put there by hand (or a bare `.wasm`).
    ByHand,
    /// Installed from an unsigned package (`--allow-unsigned`).
    Unsigned {
        name: String,
        version: String,
        checked: Depth,
        modified: Vec<Change>,
    },
    Signed {
        author: AuthorKey,
        name: String,
        version: String,
        checked: Depth,
        modified: Vec<Change>,
    },
    /// A record that does not hold up (a broken signature, a damaged index).
    Invalid { reason: String },
}

impl Provenance {
    pub fn author(&self) -> Option<&AuthorKey> {
        match self {
            Provenance::Signed { author, .. } => Some(author),
            _ => None,
        }
    }

    pub fn modified(&self) -> &[Change] {
        match self {
            Provenance::Signed { modified, .. } | Provenance::Unsigned { modified, .. } => modified,
            _ => &[],
        }
    }
}

/// Check the record in `folder` (a plugin folder or a bare `.wasm`).
pub fn check(folder: &Path, depth: Depth) -> Provenance {
    if !std::fs::metadata(folder).is_ok_and(|m| m.is_dir()) {
        return Provenance::ByHand;
    }
    let dir = match Dir::open_ambient_dir(folder, ambient_authority()) {
        Ok(d) => d,
        Err(e) => return invalid(format!("the folder cannot be opened: {e}")),
    };
    let index_bytes =
        match safe_read::read_in(&dir, INSTALLED_INDEX, RECORD_LIMITS.max_index_bytes()) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return match dir.symlink_metadata(INSTALLED_SIGNATURE) {
                    Ok(_) => invalid(format!(
                        "{INSTALLED_SIGNATURE} is there but {INSTALLED_INDEX} is not"
                    )),
                    Err(_) => Provenance::ByHand,
                };
            }
            Err(e) => return invalid(format!("{INSTALLED_INDEX} {e}")),
        };
    let index = match Index::parse(&index_bytes, &RECORD_LIMITS)
        .and_then(|i| i.validate(&RECORD_LIMITS).map(|()| i))
    {
        Ok(i) => i,
        Err(e) => return invalid(format!("{INSTALLED_INDEX} is not a valid index: {e}")),
    };
    let signature = match safe_read::read_in(&dir, INSTALLED_SIGNATURE, MAX_SIGNATURE_BYTES) {
        Ok(s) => Some(s),
        Err(e) if e.is_not_found() => None,
        Err(e) => return invalid(format!("{INSTALLED_SIGNATURE} {e}")),
    };
    if signature.is_none()
        && let Some(author) = index.author
    {
        return invalid(format!(
            "the record names {author} as its signer, but {INSTALLED_SIGNATURE} is gone"
        ));
    }
    let verified =
        super::install::verify(INSTALLED_INDEX, &index, &index_bytes, signature.as_deref());
    let signer = match verified {
        Ok(s) => s,
        Err(e) => return invalid(format!("{INSTALLED_INDEX} was changed after signing ({e})")),
    };
    let modified = compare(&dir, folder, &index, depth);
    let (name, version) = (index.name, index.version);
    match signer {
        Signer::Unsigned => Provenance::Unsigned {
            name,
            version,
            checked: depth,
            modified,
        },
        Signer::Signed(author) => Provenance::Signed {
            author,
            name,
            version,
            checked: depth,
            modified,
        },
    }
}

fn invalid(reason: String) -> Provenance {
    Provenance::Invalid {
        reason: excerpt(&reason, 400),
    }
}

/// How the folder differs from `index`, sorted by path.
fn compare(dir: &Dir, folder: &Path, index: &Index, depth: Depth) -> Vec<Change> {
    let mut changes = Vec::new();
    for f in &index.files {
        let change = |what| Change {
            path: f.path.clone(),
            what,
        };
        let meta = match dir.symlink_metadata(&f.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                changes.push(change(ChangeKind::Missing));
                continue;
            }
            Err(e) => {
                changes.push(change(ChangeKind::Unreadable { why: e.to_string() }));
                continue;
            }
        };
        let t = meta.file_type();
        let kind = if t.is_symlink() {
            Some(FileKind::Symlink)
        } else if t.is_dir() {
            Some(FileKind::Folder)
        } else if t.is_file() {
            None
        } else {
            Some(FileKind::Other)
        };
        if let Some(kind) = kind {
            changes.push(change(ChangeKind::NotAFile {
                now: kind.to_string(),
            }));
            continue;
        }
        if meta.len() != f.bytes {
            changes.push(change(ChangeKind::Resized {
                signed: f.bytes,
                now: meta.len(),
            }));
            continue;
        }
        let in_weights = f.path.starts_with(&format!("{WEIGHTS_DIR}/"));
        if depth == Depth::Quick && in_weights {
            continue;
        }
        match hash_in(dir, &f.path) {
            Ok(sha) if sha == f.sha256 => {}
            Ok(_) => changes.push(change(ChangeKind::Changed)),
            Err(why) => changes.push(change(ChangeKind::Unreadable { why })),
        }
    }
    let listed: HashSet<&str> = index.files.iter().map(|f| f.path.as_str()).collect();
    let mut looked = 0;
    added(folder, "", &listed, &mut looked, &mut changes);
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

fn hash_in(dir: &Dir, path: &str) -> Result<String, String> {
    let file = safe_read::open_in(dir, path).map_err(|e| e.to_string())?;
    super::archive::hash_reader(file)
        .map(|(_, sha)| hex::encode(sha))
        .map_err(|e| e.to_string())
}

/// Files under `folder/rel` that the index does not list (symlinks are not followed).
fn added(
    folder: &Path,
    rel: &str,
    listed: &HashSet<&str>,
    looked: &mut usize,
    out: &mut Vec<Change>,
) {
    let Ok(rd) = std::fs::read_dir(folder.join(rel)) else {
        return;
    };
    for e in rd.flatten() {
        *looked += 1;
        if *looked > MAX_LOOKED {
            return;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if rel.is_empty() && (name == INSTALLED_INDEX || name == INSTALLED_SIGNATURE) {
            continue;
        }
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            added(folder, &path, listed, looked, out);
        } else if !listed.contains(path.as_str()) {
            out.push(Change {
                path,
                what: ChangeKind::Added,
            });
        }
    }
}

/// A plugin's provenance with the operator's verdict on its signer, as `list` and
/// `audit` print it (and as the `"signer"` object of their JSON).
#[derive(Debug, Clone, Serialize)]
pub struct SignerReport {
    #[serde(flatten)]
    pub provenance: Provenance,
    /// For a signed plugin: whether its author is in the trust list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted: Option<bool>,
}

impl SignerReport {
    pub fn new(provenance: Provenance, policy: &TrustPolicy) -> Self {
        let trusted = provenance.author().map(|a| policy.is_trusted(a));
        SignerReport {
            provenance,
            trusted,
        }
    }

    /// Installed from a package and unchanged since (signed or not).
    pub fn intact(&self) -> bool {
        matches!(
            &self.provenance,
            Provenance::Signed { modified, .. } | Provenance::Unsigned { modified, .. }
                if modified.is_empty()
        )
    }
}

impl std::fmt::Display for SignerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match (&self.provenance, self.trusted) {
            (Provenance::ByHand, _) => return f.write_str("unsigned (installed by hand)"),
            (Provenance::Invalid { reason }, _) => {
                return write!(f, "INVALID package record: {reason}");
            }
            (Provenance::Unsigned { name, version, .. }, _) => {
                format!("unsigned package {name} {version} (installed with --allow-unsigned)")
            }
            (Provenance::Signed { author, .. }, trusted) => format!(
                "signed by {author} ({})",
                if trusted == Some(true) {
                    "trusted"
                } else {
                    "unknown"
                }
            ),
        };
        let modified = self.provenance.modified();
        match modified.split_first() {
            None => f.write_str(&who),
            Some((first, rest)) => {
                write!(f, "MODIFIED since signing: {first}")?;
                if !rest.is_empty() {
                    write!(f, " and {} more", rest.len())?;
                }
                write!(f, "; {who}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::author::AuthorSigner;
    use crate::package::{install, pack};

    /// A signed plugin installed into a fresh plugins folder, and its path.
    fn installed(signer: &AuthorSigner) -> (tempfile::TempDir, std::path::PathBuf) {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(
            src.path().join("plugin.toml"),
            "name = \"demo\"\nversion = \"1.0.0\"\n",
        )
        .unwrap();
        std::fs::write(src.path().join("demo.wasm"), b"\0asm-not-really").unwrap();
        std::fs::create_dir(src.path().join("weights")).unwrap();
        std::fs::write(src.path().join("weights/w.bin"), vec![1u8; 5000]).unwrap();
        let plugins = tempfile::tempdir().unwrap();
        let packed = pack::pack(
            src.path(),
            Some(signer),
            plugins.path(),
            &Limits::default(),
            &mut || Err("unused".into()),
        )
        .unwrap();
        let policy = TrustPolicy {
            trusted: vec![signer.public()],
            ..Default::default()
        };
        let done = install::install(
            &packed.path,
            plugins.path(),
            &policy,
            &Limits::default(),
            None,
        )
        .unwrap();
        std::fs::remove_file(&packed.path).unwrap();
        (plugins, done.path)
    }

    #[test]
    fn an_intact_plugin_shows_its_signer_and_changes_are_named() {
        let signer = AuthorSigner::from_secret([9; 32]);
        let (_plugins, dir) = installed(&signer);
        let p = check(&dir, Depth::Full);
        assert_eq!(p.author(), Some(&signer.public()));
        assert!(p.modified().is_empty(), "{p:?}");
        let trusting = TrustPolicy {
            trusted: vec![signer.public()],
            ..Default::default()
        };
        let r = SignerReport::new(p.clone(), &trusting);
        assert_eq!(
            r.to_string(),
            format!("signed by {} (trusted)", signer.public())
        );
        assert!(r.intact());
        let r = SignerReport::new(p, &TrustPolicy::default());
        assert!(r.to_string().ends_with("(unknown)"), "{r}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["state"], "signed");
        assert_eq!(json["author"], signer.public().to_string());
        assert_eq!(json["trusted"], false);

        // A weights file changed in place, same size: only the full check sees it.
        let mut w = std::fs::read(dir.join("weights/w.bin")).unwrap();
        w[4000] ^= 1;
        std::fs::write(dir.join("weights/w.bin"), &w).unwrap();
        assert!(check(&dir, Depth::Quick).modified().is_empty());
        let p = check(&dir, Depth::Full);
        assert_eq!(
            p.modified(),
            [Change {
                path: "weights/w.bin".into(),
                what: ChangeKind::Changed
            }]
        );
        let text = SignerReport::new(p, &trusting).to_string();
        assert!(
            text.starts_with(
                "MODIFIED since signing: weights/w.bin (its sha256 differs); signed by"
            ),
            "{text}"
        );
        // The component changed: the quick check hashes it.
        std::fs::write(dir.join("demo.wasm"), b"\0asm-not-reallX").unwrap();
        let quick = check(&dir, Depth::Quick);
        assert_eq!(quick.modified()[0].path, "demo.wasm");
        // A file added, one removed, one resized, one turned into a symlink.
        std::fs::write(dir.join("weights/extra.bin"), b"x").unwrap();
        std::fs::write(dir.join("plugin.toml"), "name = \"demo\"\n").unwrap();
        std::fs::remove_file(dir.join("demo.wasm")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("demo.wasm")).unwrap();
        let kinds: Vec<(String, ChangeKind)> = check(&dir, Depth::Quick)
            .modified()
            .iter()
            .map(|c| (c.path.clone(), c.what.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    "demo.wasm".into(),
                    ChangeKind::NotAFile {
                        now: "a symbolic link".into()
                    }
                ),
                (
                    "plugin.toml".into(),
                    ChangeKind::Resized {
                        signed: 32,
                        now: 14
                    }
                ),
                ("weights/extra.bin".into(), ChangeKind::Added),
            ]
        );
    }

    #[test]
    fn a_folder_without_a_record_or_with_a_broken_one_says_so() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(check(d.path(), Depth::Full), Provenance::ByHand);
        let text = SignerReport::new(Provenance::ByHand, &TrustPolicy::default()).to_string();
        assert_eq!(text, "unsigned (installed by hand)");

        let signer = AuthorSigner::from_secret([9; 32]);
        let (_plugins, dir) = installed(&signer);
        // The record edited to hide a change: its signature no longer verifies.
        let record = std::fs::read_to_string(dir.join(INSTALLED_INDEX)).unwrap();
        std::fs::write(dir.join(INSTALLED_INDEX), record.replace("1.0.0", "1.0.1")).unwrap();
        match check(&dir, Depth::Quick) {
            Provenance::Invalid { reason } => {
                assert!(reason.contains("changed after signing"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // The signature removed: not quietly "unsigned".
        std::fs::write(dir.join(INSTALLED_INDEX), &record).unwrap();
        std::fs::remove_file(dir.join(INSTALLED_SIGNATURE)).unwrap();
        match check(&dir, Depth::Quick) {
            Provenance::Invalid { reason } => assert!(reason.contains("is gone"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // A FIFO planted as the record is refused, not waited on.
        std::fs::remove_file(dir.join(INSTALLED_INDEX)).unwrap();
        let c = std::ffi::CString::new(dir.join(INSTALLED_INDEX).as_os_str().as_encoded_bytes())
            .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        match check(&dir, Depth::Quick) {
            Provenance::Invalid { reason } => assert!(reason.contains("named pipe"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
