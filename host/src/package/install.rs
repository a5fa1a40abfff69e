//! `install`: verify a package, then unpack it into the plugins folder atomically.
//!
//! The order is the point (see the module docs of [`super`]): nothing is created until
//! the index, the signature and the trust policy have all said yes, and nothing the
//! archive holds is read past what the signed index allows. Files are written into a
//! hidden staging folder inside the plugins folder, so the final step is a rename on one
//! file system. On Linux an existing plugin is swapped with the new one in one step
//! (`renameat2(RENAME_EXCHANGE)`): the plugin's name always holds a whole plugin. Where
//! that is not available the old folder is renamed aside first and the new one renamed in
//! (a moment with neither, never a mix), and the old one is put back if the second rename
//! fails. A [`Staging`] guard removes the staging folder on every error path.

use super::archive::{self, Kind};
use super::author::AuthorKey;
use super::index::{self, Index};
use super::trust::{Admission, Refusal, Signer, TrustPolicy};
use super::{
    EntryProblem, FILES_PREFIX, INDEX_ENTRY, INSTALLED_INDEX, INSTALLED_SIGNATURE, Limits,
    MAX_SIGNATURE_BYTES, PackageError, SIGNATURE_ENTRY, shown,
};
use crate::keyfile::{random_suffix, sync_dir};
use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// What [`install`] did.
#[derive(Debug, Clone)]
pub struct Installed {
    pub name: String,
    pub version: String,
    /// `<plugins>/<name>`.
    pub path: PathBuf,
    pub signer: Signer,
    pub admission: Admission,
    pub files: usize,
    /// The plugin's bytes (the files, not the archive).
    pub bytes: u64,
    /// Whether a plugin of that name was there before (and is now gone).
    pub replaced: bool,
}

/// A check of the unpacked, verified plugin before it is moved into place (the CLI loads
/// it in a sandbox); an error refuses the install and leaves the old plugin as it was.
pub type Check<'a> = &'a dyn Fn(&Path) -> Result<(), String>;

/// Install the package at `file` into `plugins_dir` under its name, if `policy` admits
/// its signer and it fits `limits`; `check` (if any) vets the unpacked folder first.
pub fn install(
    file: &Path,
    plugins_dir: &Path,
    policy: &TrustPolicy,
    limits: &Limits,
    check: Option<Check<'_>>,
) -> Result<Installed, PackageError> {
    let package = file
        .file_name()
        .map(|n| shown(Path::new(n)))
        .unwrap_or_else(|| shown(file));
    let handle = archive::open_package(file).map_err(|message| PackageError::Open {
        package: package.clone(),
        message,
    })?;
    let mut tar = tar::Archive::new(BufReader::with_capacity(1 << 20, handle));
    let entries = tar.entries().map_err(|e| damaged(&package, e))?;
    let mut entries = entries.raw(true);
    let mut next = || entries.next().transpose().map_err(|e| damaged(&package, e));

    // 1. The index, then the signature: read, size-capped, nothing written.
    let not_a_package = |why: String| PackageError::NotAPackage {
        package: package.clone(),
        why,
    };
    let mut first = next()?.ok_or_else(|| not_a_package("it is empty".into()))?;
    let index_bytes =
        read_named(&mut first, INDEX_ENTRY, limits.max_index_bytes()).map_err(not_a_package)?;
    drop(first);
    let index = Index::parse(&index_bytes, limits).map_err(|problem| PackageError::Index {
        package: package.clone(),
        problem,
    })?;
    let mut pending = next()?;
    let is_signature = pending
        .as_ref()
        .is_some_and(|e| archive::path(e.header()).as_deref() == Ok(SIGNATURE_ENTRY));
    let signature = match pending.take_if(|_| is_signature) {
        Some(mut e) => Some(
            read_named(&mut e, SIGNATURE_ENTRY, MAX_SIGNATURE_BYTES).map_err(|why| {
                PackageError::BadSignature {
                    package: package.clone(),
                    why,
                }
            })?,
        ),
        None => None,
    };

    // 2. The signature over the exact bytes, 3. the trust policy, 4. the index itself.
    let signer = verify(&package, &index, &index_bytes, signature.as_deref())?;
    let admission = policy.admit(&signer).map_err(|r| match r {
        Refusal::Unsigned => PackageError::Unsigned {
            package: package.clone(),
        },
        Refusal::UnknownAuthor(author) => PackageError::UnknownAuthor {
            package: package.clone(),
            author,
        },
    })?;
    index
        .validate(limits)
        .map_err(|problem| PackageError::Index {
            package: package.clone(),
            problem,
        })?;
    let target = plugins_dir.join(&index.name);
    let replaced = check_target(plugins_dir, &target)?;

    // 5. Only now is anything written: the files, into a staging folder.
    let staging = Staging::create(plugins_dir, &index.name)?;
    let mut unpack = Unpack::new(&package, &index, limits, staging.path());
    if let Some(e) = pending {
        unpack.entry(e)?;
    }
    while let Some(e) = next()? {
        unpack.entry(e)?;
    }
    unpack.finish()?;
    write_record(staging.path(), &index_bytes, signature.as_deref())?;
    if let Some(check) = check {
        check(staging.path()).map_err(|reason| PackageError::DoesNotLoad {
            package: package.clone(),
            reason,
        })?;
    }
    // 6. Into place.
    staging.swap_into(&target, replaced)?;
    sync_dir(plugins_dir);
    Ok(Installed {
        name: index.name.clone(),
        version: index.version.clone(),
        path: target,
        signer,
        admission,
        files: index.files.len(),
        bytes: index.files.iter().map(|f| f.bytes).sum(),
        replaced,
    })
}

fn damaged(package: &str, e: impl std::fmt::Display) -> PackageError {
    PackageError::Damaged {
        package: package.to_string(),
        message: crate::plugins::safe_read::excerpt(&e.to_string(), 200),
    }
}

/// The whole of entry `e`, which must be the regular file `name` of at most `max` bytes.
fn read_named<R: Read>(e: &mut tar::Entry<'_, R>, name: &str, max: u64) -> Result<Vec<u8>, String> {
    let header = e.header();
    let found = archive::shown_name(header);
    if archive::path(header).as_deref() != Ok(name) {
        return Err(format!("its first entry is {found:?}, not {name}"));
    }
    if archive::kind(header) != Ok(Kind::File) {
        return Err(format!("{name} is not a regular file"));
    }
    let size = header.entry_size().map_err(|e| e.to_string())?;
    match archive::read_small(e, size, max) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(format!(
            "{name} is {size} bytes, more than the {max} allowed"
        )),
        Err(e) => Err(format!("{name} cannot be read: {e}")),
    }
}

/// Check `signature` (hex, one line) over exactly `index_bytes` with the key the index
/// names. No signature and no author: unsigned. An author without a signature, or a
/// signature that does not verify, is refused whatever the trust policy.
pub fn verify(
    package: &str,
    index: &Index,
    index_bytes: &[u8],
    signature: Option<&[u8]>,
) -> Result<Signer, PackageError> {
    let bad = |why: &str| PackageError::BadSignature {
        package: package.to_string(),
        why: why.to_string(),
    };
    let Some(signature) = signature else {
        // An author is a claim only a signature makes: one named without it was removed.
        return match index.author {
            None => Ok(Signer::Unsigned),
            Some(author) => Err(bad(&format!(
                "the index names {author} as its signer, but the signature is missing"
            ))),
        };
    };
    let author: AuthorKey = index
        .author
        .ok_or_else(|| bad("the index names no author key"))?;
    let text = std::str::from_utf8(signature).map_err(|_| bad("the signature is not text"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let bytes: [u8; 64] = hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the signature is not 128 hex digits"))?;
    if !author.verifies(index_bytes, &bytes) {
        return Err(bad(&format!(
            "it is not {author}'s signature of this index"
        )));
    }
    Ok(Signer::Signed(author))
}

/// Whether `target` exists (a plugin to replace). Something there that is not a plain
/// folder is the operator's to move, not ours to delete.
fn check_target(plugins_dir: &Path, target: &Path) -> Result<bool, PackageError> {
    let fail = |why: String| PackageError::Target {
        dir: shown(plugins_dir),
        why,
    };
    match std::fs::metadata(plugins_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(fail("it is not a folder".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(
                "it does not exist; create it, or name the node's plugins folder with --plugins DIR"
                    .into(),
            ));
        }
        Err(e) => return Err(fail(e.to_string())),
    }
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(fail(format!(
            "{} is there and is not a plugin folder; move it away first",
            shown(target)
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fail(format!("{}: {e}", shown(target)))),
    }
}

/// The files of the archive, checked header by header against the signed index and
/// written into the staging folder.
struct Unpack<'a> {
    package: &'a str,
    root: &'a Path,
    limits: &'a Limits,
    /// Path → (bytes, sha256) from the index, removed as each arrives.
    expected: HashMap<&'a str, (u64, &'a str)>,
    folders: HashSet<&'a str>,
    made: HashSet<String>,
    seen: HashSet<String>,
    files: usize,
    bytes: u64,
}

impl<'a> Unpack<'a> {
    fn new(package: &'a str, index: &'a Index, limits: &'a Limits, root: &'a Path) -> Self {
        Unpack {
            package,
            root,
            limits,
            expected: index
                .files
                .iter()
                .map(|f| (f.path.as_str(), (f.bytes, f.sha256.as_str())))
                .collect(),
            folders: index.folders().into_iter().collect(),
            made: HashSet::new(),
            seen: HashSet::new(),
            files: 0,
            bytes: 0,
        }
    }

    fn refuse(&self, entry: &str, problem: EntryProblem) -> PackageError {
        PackageError::Entry {
            package: self.package.to_string(),
            entry: entry.to_string(),
            problem,
        }
    }

    /// One entry: its header is checked in full before a byte of its data is read.
    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), PackageError> {
        let header = e.header();
        let name = archive::shown_name(header);
        let kind = archive::kind(header).map_err(|p| self.refuse(&name, p))?;
        let full = archive::path(header).map_err(|p| self.refuse(&name, p))?;
        let rel = full
            .strip_prefix(FILES_PREFIX)
            .ok_or_else(|| self.refuse(&name, EntryProblem::Outside))?;
        let rel = match kind {
            Kind::Folder => rel.strip_suffix('/').unwrap_or(rel),
            Kind::File => rel,
        };
        index::check_path(rel).map_err(|p| self.refuse(&name, EntryProblem::BadPath(p)))?;
        if !self.seen.insert(rel.to_string()) {
            return Err(self.refuse(&name, EntryProblem::Twice));
        }
        if kind == Kind::Folder {
            // Only folders the index's files need; each is made once.
            if !self.folders.contains(rel) {
                return Err(self.refuse(&name, EntryProblem::NotInIndex));
            }
            return self.make_folders(rel, true);
        }
        let size = header
            .entry_size()
            .map_err(|err| damaged(self.package, format!("{name}: {err}")))?;
        let (bytes, sha256) = *self
            .expected
            .get(rel)
            .ok_or_else(|| self.refuse(&name, EntryProblem::NotInIndex))?;
        if size != bytes {
            return Err(self.refuse(
                &name,
                EntryProblem::Size {
                    header: size,
                    index: bytes,
                },
            ));
        }
        self.count(&name, size)?;
        self.make_folders(rel, false)?;
        let path = self.root.join(rel);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|err| write_error(&path, err))?;
        let (got, hash) =
            archive::copy_hashed(&mut e, size, &mut out).map_err(|err| match err {
                archive::CopyError::Read(err) => damaged(self.package, format!("{name}: {err}")),
                archive::CopyError::Write(err) => write_error(&path, err),
            })?;
        if got != size {
            return Err(self.refuse(
                &name,
                EntryProblem::Truncated {
                    got,
                    expected: size,
                },
            ));
        }
        if hex::encode(hash) != sha256 {
            return Err(self.refuse(&name, EntryProblem::Hash));
        }
        out.sync_all().map_err(|err| write_error(&path, err))?;
        self.expected.remove(rel);
        Ok(())
    }

    /// The running count and total, against the caps, before the data is read. (The
    /// index already passed the same caps and each size equals the index's; this holds
    /// even if that ever changes.)
    fn count(&mut self, name: &str, size: u64) -> Result<(), PackageError> {
        self.files += 1;
        self.bytes = self.bytes.saturating_add(size);
        if self.files > self.limits.max_files {
            let what = format!("{} files", self.limits.max_files);
            return Err(self.refuse(name, EntryProblem::OverCap { what }));
        }
        if self.bytes > self.limits.max_bytes {
            let what = format!("{} bytes", self.limits.max_bytes);
            return Err(self.refuse(name, EntryProblem::OverCap { what }));
        }
        Ok(())
    }

    /// The folders above `rel` (and `rel` itself if `itself`), in the staging folder.
    fn make_folders(&mut self, rel: &str, itself: bool) -> Result<(), PackageError> {
        let mut needed: Vec<&str> = index::folders_of(rel).collect();
        needed.reverse();
        if itself {
            needed.push(rel);
        }
        for d in needed {
            if self.made.insert(d.to_string()) {
                let path = self.root.join(d);
                std::fs::create_dir(&path).map_err(|err| write_error(&path, err))?;
            }
        }
        Ok(())
    }

    /// Every listed file arrived; the folders' entries are flushed.
    fn finish(self) -> Result<(), PackageError> {
        if let Some(missing) = self.expected.keys().min() {
            return Err(PackageError::Missing {
                package: self.package.to_string(),
                path: missing.to_string(),
            });
        }
        for d in &self.made {
            sync_dir(&self.root.join(d));
        }
        Ok(())
    }
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> PackageError {
    PackageError::Write {
        path: shown(path),
        message: e.to_string(),
    }
}

/// The index and signature, as received, beside the files: the plugin carries its
/// provenance ([`super::provenance`]).
fn write_record(root: &Path, index: &[u8], signature: Option<&[u8]>) -> Result<(), PackageError> {
    let mut files = vec![(INSTALLED_INDEX, index)];
    files.extend(signature.map(|s| (INSTALLED_SIGNATURE, s)));
    for (name, bytes) in files {
        let path = root.join(name);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            std::io::Write::write_all(&mut f, bytes)?;
            f.sync_all()
        };
        write().map_err(|e| write_error(&path, e))?;
    }
    sync_dir(root);
    Ok(())
}

/// `<plugins>/.installing-<name>-<random>`, removed on drop unless it was moved into place.
struct Staging {
    path: PathBuf,
    plugins_dir: PathBuf,
    name: String,
    kept: bool,
}

impl Staging {
    fn create(plugins_dir: &Path, name: &str) -> Result<Self, PackageError> {
        let path = plugins_dir.join(format!(".installing-{name}-{}", random_suffix()));
        std::fs::create_dir(&path).map_err(|e| PackageError::Target {
            dir: shown(plugins_dir),
            why: format!("cannot create a staging folder there: {e}"),
        })?;
        Ok(Staging {
            path,
            plugins_dir: plugins_dir.to_path_buf(),
            name: name.to_string(),
            kept: false,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Move the staged plugin to `target`, swapping out the old one if `replace`.
    fn swap_into(mut self, target: &Path, replace: bool) -> Result<(), PackageError> {
        let fail = |e: std::io::Error| PackageError::Target {
            dir: shown(&self.plugins_dir),
            why: format!("cannot move the new plugin into place: {e}"),
        };
        if !replace {
            rename_new(&self.path, target).map_err(fail)?;
            self.kept = true;
            return Ok(());
        }
        if exchange(&self.path, target).map_err(fail)? {
            // The staging name now holds the old plugin; the guard removes it.
            return Ok(());
        }
        let aside = self
            .plugins_dir
            .join(format!(".replaced-{}-{}", self.name, random_suffix()));
        std::fs::rename(target, &aside).map_err(fail)?;
        if let Err(e) = std::fs::rename(&self.path, target) {
            let _ = std::fs::rename(&aside, target);
            return Err(fail(e));
        }
        self.kept = true;
        remove_old(&aside);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.kept {
            remove_old(&self.path);
        }
    }
}

fn remove_old(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        tracing::warn!(
            "could not remove {} ({e}); it is hidden from the node, remove it by hand",
            shown(path)
        );
    }
}

/// Rename `from` to `to`, which must not exist (never onto an empty folder made meanwhile).
fn rename_new(from: &Path, to: &Path) -> std::io::Result<()> {
    if rename_flags(from, to, NOREPLACE)? {
        return Ok(());
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    std::fs::rename(from, to)
}

/// Swap `a` and `b` in one step where the platform and file system can; `false` where
/// they cannot (the caller renames in two steps).
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    rename_flags(a, b, EXCHANGE)
}

#[cfg(target_os = "linux")]
const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
#[cfg(target_os = "linux")]
const EXCHANGE: u32 = libc::RENAME_EXCHANGE;
#[cfg(not(target_os = "linux"))]
const NOREPLACE: u32 = 1;
#[cfg(not(target_os = "linux"))]
const EXCHANGE: u32 = 2;

/// No `renameat2` here: the callers take the portable way.
#[cfg(not(target_os = "linux"))]
fn rename_flags(_: &Path, _: &Path, _: u32) -> std::io::Result<bool> {
    Ok(false)
}

/// `renameat2(2)`; `Ok(false)` if the kernel or file system does not support `flags`.
#[cfg(target_os = "linux")]
fn rename_flags(from: &Path, to: &Path, flags: u32) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the current folder.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP) => Ok(false),
        _ => Err(e),
    }
}
