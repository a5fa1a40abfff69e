//! Signed plugin packages: one file, `NAME-VERSION.apiary`, that says who made a plugin
//! and proves it has not changed since.
//!
//! Without packages an operator receives a plugin as a loose folder (`plugin.toml`, the
//! `.wasm`, maybe `weights/`) and nothing says who made it or whether a byte of it was
//! changed on the way. A package carries the same folder with a signed list of its files.
//!
//! # The format
//!
//! An uncompressed tar (ustar headers), in this order:
//!
//! 1. `apiary-package.json`, the index ([`index`]): format, name, version, the author's
//!    key (`ed25519:<hex>`) and every file's path, SHA-256 and size, sorted by path;
//! 2. `apiary-package.sig`: the author's ed25519 signature, in hex, over the exact bytes
//!    of the index entry (absent in an unsigned package);
//! 3. every file of the plugin under `files/<path>`.
//!
//! Not compressed: the bulk of a plugin is its weights, already quantized (4–8 bits a
//! weight), which general-purpose compression barely shrinks, while a plain tar can be
//! checked and unpacked as a stream at disk speed. The signature covers the index and the
//! index names every file by hash, so one signature over a few kilobytes covers gigabytes.
//!
//! # Installing: verify before anything is written
//!
//! [`install`] reads the index and the signature first (each size-capped), checks the
//! signature over the exact bytes read, checks the author against the operator's
//! [`TrustPolicy`], and validates the index against [`Limits`] (count, total size, plain
//! paths), all before it creates anything. Only then does it stream the files, each
//! refused at its header if it is not a regular file listed in the index with that exact
//! size (so a header claiming 10 GB is refused without reading 10 GB), hashing as it
//! writes into a hidden staging folder in the plugins folder (the registry ignores
//! dot-folders). Every listed file must arrive exactly once with its hash; then the index
//! and signature are stored beside the files (`.apiary-package.json`,
//! `.apiary-package.sig`), everything is flushed to disk, and the folder is renamed into
//! place, swapped with any older version so the hot reload sees the whole old plugin or
//! the whole new one. On any error the staging folder is removed: nothing is left behind.
//!
//! # Afterwards
//!
//! [`provenance`] re-checks an installed folder against the record it carries, for
//! `apiary plugins list` and `audit`: who signed it, and whether any file changed since.
//! The node itself still loads any folder, signed or not (operators may drop folders in by
//! hand); packages are about what the operator is told, and what `install` lets in.

pub mod archive;
pub mod author;
pub mod index;
pub mod install;
pub mod pack;
pub mod provenance;
pub mod trust;

pub use author::{AuthorKey, AuthorSigner, KeyError};
pub use index::{Index, IndexProblem, PathProblem};
pub use install::{Installed, install};
pub use pack::{Packed, pack};
pub use provenance::{Depth, Provenance};
pub use trust::{Admission, Signer, TrustPolicy};

/// A package file's extension.
pub const EXTENSION: &str = "apiary";
/// The index's name inside the archive.
pub const INDEX_ENTRY: &str = "apiary-package.json";
/// The signature's name inside the archive.
pub const SIGNATURE_ENTRY: &str = "apiary-package.sig";
/// Where the plugin's files are inside the archive.
pub const FILES_PREFIX: &str = "files/";
/// The index as stored in an installed plugin folder (hidden: not one of the plugin's
/// files, and the registry's fingerprint does not look at it).
pub const INSTALLED_INDEX: &str = ".apiary-package.json";
/// The signature as stored in an installed plugin folder.
pub const INSTALLED_SIGNATURE: &str = ".apiary-package.sig";
/// Largest signature entry read: 128 hex digits and a line break, with room to spare.
pub const MAX_SIGNATURE_BYTES: u64 = 1024;

/// The operator's caps on what one package may hold, checked on the signed index before
/// anything is written and again on every archive header before its data is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_files: usize,
    pub max_bytes: u64,
}

impl Default for Limits {
    /// 10,000 files and 8 GiB: a 7B-parameter model at 8 bits fits, a folder tree of a
    /// whole dataset does not.
    fn default() -> Self {
        Limits {
            max_files: 10_000,
            max_bytes: 8 << 30,
        }
    }
}

impl Limits {
    /// The largest index `max_files` files could need (a longest path, a hash and a size
    /// each take well under 2 KiB of JSON), so a huge index is refused before it is parsed.
    pub fn max_index_bytes(&self) -> u64 {
        (self.max_files as u64)
            .saturating_mul(2048)
            .saturating_add(4096)
    }
}

/// What is wrong with one archive entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error(
        "is {0}; a package holds only regular files and folders (it was not made by `apiary plugins pack`: do not install it)"
    )]
    NotAFile(&'static str),
    #[error("is outside files/; the archive was not made by `apiary plugins pack`")]
    Outside,
    #[error("its name {0}")]
    BadPath(PathProblem),
    #[error(
        "is not listed in the signed index (something was added to the package after signing; get it again from its author)"
    )]
    NotInIndex,
    #[error(
        "is in the archive twice (a package lists each file once; get it again from its author)"
    )]
    Twice,
    #[error(
        "its header says {header} bytes but the signed index says {index} (the file was changed after signing; get the package again from its author)"
    )]
    Size { header: u64, index: u64 },
    #[error(
        "would take the package past {what} (the cap is checked on every header before its data is read)"
    )]
    OverCap { what: String },
    #[error(
        "ends after {got} of its {expected} bytes (the package is cut short; download it again)"
    )]
    Truncated { got: u64, expected: u64 },
    #[error(
        "sha256 does not match the signed index (the file was changed after signing; get the package again from its author)"
    )]
    Hash,
}

/// Why packing or installing failed. Each message says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    // --- packing a folder ---
    #[error(
        "{path} is not a plugin folder; `apiary plugins pack` takes the folder that holds plugin.toml"
    )]
    NotAFolder { path: String },
    #[error(
        "{dir} has no plugin.toml; a package carries the plugin's manifest (`apiary plugins new` writes one)"
    )]
    NoManifest { dir: String },
    #[error("{path} is invalid: {message}")]
    Manifest { path: String, message: String },
    #[error(
        "{dir}: the plugin reports no {what}; put `{what} = \"...\"` in plugin.toml (the package is named NAME-VERSION.apiary)"
    )]
    NoName { dir: String, what: &'static str },
    #[error(
        "{path} is {kind}; a package holds only regular files and folders: replace it with the file itself, or move it out of the plugin folder"
    )]
    Unpackable { path: String, kind: String },
    #[error("{path}: its name {problem}; rename it (a package holds plain relative names)")]
    BadName { path: String, problem: PathProblem },
    #[error("{dir} cannot be packed: {problem}")]
    CannotPack { dir: String, problem: IndexProblem },
    #[error(
        "{path} changed while it was being packed; pack again when nothing is writing to the folder"
    )]
    ChangedWhilePacking { path: String },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },

    // --- installing a package ---
    #[error("cannot read package {package}: {message}")]
    Open { package: String, message: String },
    #[error(
        "{package} is not an apiary package ({why}); packages are made by `apiary plugins pack`"
    )]
    NotAPackage { package: String, why: String },
    #[error("package {package}: the archive is damaged ({message}); download it again")]
    Damaged { package: String, message: String },
    #[error(
        "package {package}: its index is not valid: {problem}; do not install it, and tell its author"
    )]
    Index {
        package: String,
        problem: IndexProblem,
    },
    #[error(
        "package {package}: the signature does not verify ({why}): the index was changed after signing, or signed by a key other than the one it names. Do not install it; get the package again from its author"
    )]
    BadSignature { package: String, why: String },
    #[error(
        "package {package} is not signed: nothing says who made it or that it is unchanged. If you know where it came from, install it with --allow-unsigned"
    )]
    Unsigned { package: String },
    #[error(
        "package {package} is signed by {author}, which is not one of your trusted authors. If you trust this author, add the key to `trusted-authors` in the config file or pass --trust {author}; --allow-unknown-author installs it anyway"
    )]
    UnknownAuthor { package: String, author: AuthorKey },
    #[error("package {package}: {entry}: {problem}")]
    Entry {
        package: String,
        entry: String,
        problem: EntryProblem,
    },
    #[error(
        "package {package}: files/{path} is in the signed index but not in the archive (the package is incomplete; download it again)"
    )]
    Missing { package: String, path: String },
    #[error("cannot install into {dir}: {why}")]
    Target { dir: String, why: String },
    #[error(
        "package {package} was unpacked and verified, but the plugin does not load on this host: {reason}. Nothing was installed"
    )]
    DoesNotLoad { package: String, reason: String },

    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A path for a message, printable (control characters replaced) and not too long.
pub(crate) fn shown(path: &std::path::Path) -> String {
    crate::plugins::loader::shown(path)
}
