//! `pack`: a plugin folder into one signed package file.
//!
//! The folder is taken as it is on disk, with two rules that keep a package honest:
//! only regular files and folders go in (a symlink, FIFO or device anywhere is an error,
//! not silently skipped: the author would ship something other than what they tested),
//! and names starting with `.` are left out (editors' and version control's files, and
//! the provenance record of an installed plugin). Every file is read twice, once to hash
//! it for the index and once to write it, and the second read is hashed again: a file
//! that changes in between fails the pack instead of shipping bytes the index does not
//! describe.
//!
//! The package is named `NAME-VERSION.apiary`. Name and version come from plugin.toml;
//! a plugin.toml without them (the example plugins leave the version to the component)
//! gets them from what the plugin itself reports (`describe`), which the caller supplies
//! because only it has a sandbox to load the plugin in.

use super::archive::{self, hash_reader};
use super::author::{AuthorKey, AuthorSigner};
use super::index::{self, FileEntry, Index};
use super::{FILES_PREFIX, INDEX_ENTRY, Limits, PackageError, SIGNATURE_ENTRY, shown};
use crate::keyfile::random_suffix;
use crate::plugins::manifest::{MANIFEST_FILE, MAX_MANIFEST_BYTES, PluginManifest};
use crate::plugins::safe_read::{self, FileKind};
use sha2::{Digest, Sha256};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A package written by [`pack`].
#[derive(Debug, Clone)]
pub struct Packed {
    pub path: PathBuf,
    /// The package file's size, bytes.
    pub size: u64,
    pub index: Index,
    pub signer: Option<AuthorKey>,
}

/// What the plugin reports about itself, asked only when plugin.toml lacks a name or a
/// version: `(name, version)`, or why it could not be asked.
pub type Describe<'a> = &'a mut dyn FnMut() -> Result<(String, String), String>;

/// One file found in the folder.
struct Found {
    rel: String,
    path: PathBuf,
}

/// Pack `dir` into `out_dir/NAME-VERSION.apiary`, signed by `signer` (unsigned without
/// one), within `limits` (a package that `install` would refuse by default is not made).
pub fn pack(
    dir: &Path,
    signer: Option<&AuthorSigner>,
    out_dir: &Path,
    limits: &Limits,
    describe: Describe<'_>,
) -> Result<Packed, PackageError> {
    if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Err(PackageError::NotAFolder { path: shown(dir) });
    }
    let manifest = read_manifest(dir)?;
    let mut found = Vec::new();
    walk(dir, "", limits, &mut found)?;
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    let files = found
        .iter()
        .map(|f| {
            let (bytes, sha) = hash_file(&f.path)?;
            Ok(FileEntry {
                path: f.rel.clone(),
                sha256: hex::encode(sha),
                bytes,
            })
        })
        .collect::<Result<Vec<_>, PackageError>>()?;
    let (name, version) = name_and_version(dir, &manifest, describe)?;
    let index = Index {
        format: index::FORMAT,
        name,
        version,
        author: signer.map(AuthorSigner::public),
        files,
    };
    index
        .validate(limits)
        .map_err(|problem| PackageError::CannotPack {
            dir: shown(dir),
            problem,
        })?;
    let index_bytes = index.to_bytes();
    let signature = signer.map(|s| format!("{}\n", hex::encode(s.sign(&index_bytes))));
    std::fs::create_dir_all(out_dir).map_err(|e| write_error(out_dir, e))?;
    let path = out_dir.join(index.file_name());
    write_package(&path, &index, &index_bytes, signature.as_deref(), &found)?;
    let size = std::fs::metadata(&path)
        .map(|m| m.len())
        .map_err(|e| write_error(&path, e))?;
    Ok(Packed {
        path,
        size,
        signer: index.author,
        index,
    })
}

fn read_manifest(dir: &Path) -> Result<PluginManifest, PackageError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = match safe_read::read_path(&path, MAX_MANIFEST_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(PackageError::NoManifest { dir: shown(dir) }),
        Err(e) => {
            return Err(PackageError::Read {
                path: shown(&path),
                message: e.to_string(),
            });
        }
    };
    let manifest_error = |message: String| PackageError::Manifest {
        path: shown(&path),
        message,
    };
    let text = String::from_utf8(bytes).map_err(|e| manifest_error(format!("not UTF-8 ({e})")))?;
    PluginManifest::parse(&text).map_err(manifest_error)
}

/// plugin.toml's name and version, or the plugin's own for what plugin.toml leaves out.
fn name_and_version(
    dir: &Path,
    manifest: &PluginManifest,
    describe: Describe<'_>,
) -> Result<(String, String), PackageError> {
    let (mut name, mut version) = (manifest.name.clone(), manifest.version.clone());
    if name.is_none() || version.is_none() {
        let (n, v) = describe().map_err(|reason| PackageError::Manifest {
            path: shown(&dir.join(MANIFEST_FILE)),
            message: format!(
                "it gives no name or version, and the plugin could not be loaded to ask it: {reason}; put `name` and `version` in plugin.toml"
            ),
        })?;
        name = name.or(Some(n));
        version = version.or(Some(v));
    }
    let nonempty = |v: Option<String>, what| {
        v.filter(|s| !s.trim().is_empty())
            .ok_or(PackageError::NoName {
                dir: shown(dir),
                what,
            })
    };
    Ok((nonempty(name, "name")?, nonempty(version, "version")?))
}

/// Every regular file under `dir` (relative names in `rel`), refusing anything else.
fn walk(dir: &Path, rel: &str, limits: &Limits, out: &mut Vec<Found>) -> Result<(), PackageError> {
    let read_error = |p: &Path, e: std::io::Error| PackageError::Read {
        path: shown(p),
        message: e.to_string(),
    };
    for e in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let e = e.map_err(|e| read_error(dir, e))?;
        let path = e.path();
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            return Err(PackageError::BadName {
                path: shown(&path),
                problem: index::PathProblem::NotUtf8,
            });
        };
        if name.starts_with('.') {
            continue;
        }
        let rel_path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        index::check_path(&rel_path).map_err(|problem| PackageError::BadName {
            path: shown(&path),
            problem,
        })?;
        // `file_type` does not follow a symlink: a link is seen as a link.
        let t = e.file_type().map_err(|e| read_error(&path, e))?;
        match FileKind::of_std(&t) {
            None => {
                out.push(Found {
                    rel: rel_path,
                    path,
                });
                if out.len() > limits.max_files {
                    return Err(PackageError::CannotPack {
                        dir: shown(dir),
                        problem: index::IndexProblem::TooManyFiles {
                            count: out.len(),
                            max: limits.max_files,
                        },
                    });
                }
            }
            Some(FileKind::Folder) => walk(&path, &rel_path, limits, out)?,
            Some(kind) => {
                return Err(PackageError::Unpackable {
                    path: shown(&path),
                    kind: kind.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn open(path: &Path) -> Result<std::fs::File, PackageError> {
    safe_read::open_path(path).map_err(|e| PackageError::Read {
        path: shown(path),
        message: e.to_string(),
    })
}

fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), PackageError> {
    hash_reader(open(path)?).map_err(|e| PackageError::Read {
        path: shown(path),
        message: e.to_string(),
    })
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> PackageError {
    PackageError::Write {
        path: shown(path),
        message: e.to_string(),
    }
}

/// Write the archive beside `path` under a hidden temporary name, flush it, and rename it
/// into place: a half-written package never has the package's name.
fn write_package(
    path: &Path,
    index: &Index,
    index_bytes: &[u8],
    signature: Option<&str>,
    found: &[Found],
) -> Result<(), PackageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.tmp-{}", random_suffix()));
    let result = write_archive(&temp, index, index_bytes, signature, found)
        .and_then(|()| std::fs::rename(&temp, path).map_err(|e| write_error(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn write_archive(
    temp: &Path,
    index: &Index,
    index_bytes: &[u8],
    signature: Option<&str>,
    found: &[Found],
) -> Result<(), PackageError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(|e| write_error(temp, e))?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    let fail = |e: std::io::Error| write_error(temp, e);
    let small = |name: &str, bytes: &[u8]| {
        archive::file_header(name, bytes.len() as u64).expect("fixed names fit a header")
    };
    builder
        .append(&small(INDEX_ENTRY, index_bytes), index_bytes)
        .map_err(fail)?;
    if let Some(sig) = signature {
        builder
            .append(&small(SIGNATURE_ENTRY, sig.as_bytes()), sig.as_bytes())
            .map_err(fail)?;
    }
    for (entry, f) in index.files.iter().zip(found) {
        let name = format!("{FILES_PREFIX}{}", entry.path);
        let header =
            archive::file_header(&name, entry.bytes).ok_or_else(|| PackageError::BadName {
                path: shown(&f.path),
                problem: index::PathProblem::TooLong,
            })?;
        let mut reader = Hashing::new(open(&f.path)?.take(entry.bytes));
        builder.append(&header, &mut reader).map_err(fail)?;
        if reader.count != entry.bytes || hex::encode(reader.finish()) != entry.sha256 {
            return Err(PackageError::ChangedWhilePacking {
                path: shown(&f.path),
            });
        }
    }
    let mut out = builder.into_inner().map_err(fail)?;
    out.flush().map_err(fail)?;
    let file = out.into_inner().map_err(|e| fail(e.into_error()))?;
    file.sync_all().map_err(fail)
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_describe() -> impl FnMut() -> Result<(String, String), String> {
        || Err("no sandbox in this test".to_string())
    }

    fn folder() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("plugin.toml"),
            "name = \"demo\"\nversion = \"1.2.3\"\n",
        )
        .unwrap();
        std::fs::write(d.path().join("demo.wasm"), b"\0asm").unwrap();
        std::fs::create_dir(d.path().join("weights")).unwrap();
        std::fs::write(d.path().join("weights/w.bin"), vec![9u8; 3000]).unwrap();
        d
    }

    #[test]
    fn a_folder_packs_into_a_sorted_signed_index_and_the_same_bytes_twice() {
        let d = folder();
        std::fs::write(d.path().join(".swp"), b"editor").unwrap();
        std::fs::create_dir(d.path().join(".git")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let signer = AuthorSigner::from_secret([4; 32]);
        let p = pack(
            d.path(),
            Some(&signer),
            out.path(),
            &Limits::default(),
            &mut no_describe(),
        )
        .unwrap();
        assert_eq!(p.path, out.path().join("demo-1.2.3.apiary"));
        let paths: Vec<&str> = p.index.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["demo.wasm", "plugin.toml", "weights/w.bin"]);
        assert_eq!(p.signer, Some(signer.public()));
        let first = std::fs::read(&p.path).unwrap();
        assert_eq!(first.len() as u64, p.size);
        let again = pack(
            d.path(),
            Some(&signer),
            out.path(),
            &Limits::default(),
            &mut no_describe(),
        )
        .unwrap();
        assert_eq!(std::fs::read(&again.path).unwrap(), first, "reproducible");
        // Nothing but the package is left in the output folder.
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
    }

    #[test]
    fn symlinks_special_files_and_odd_names_are_refused() {
        let out = tempfile::tempdir().unwrap();
        let run = |d: &Path| {
            pack(d, None, out.path(), &Limits::default(), &mut no_describe()).unwrap_err()
        };
        let d = folder();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("weights/link")).unwrap();
        let e = run(d.path());
        assert!(matches!(e, PackageError::Unpackable { .. }), "{e}");
        assert!(e.to_string().contains("a symbolic link"), "{e}");

        let d = folder();
        let fifo =
            std::ffi::CString::new(d.path().join("weights/pipe").as_os_str().as_encoded_bytes())
                .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let e = run(d.path());
        assert!(e.to_string().contains("named pipe"), "{e}");

        let d = folder();
        std::fs::write(d.path().join("weights/a\u{1b}b"), b"x").unwrap();
        let e = run(d.path());
        assert!(matches!(e, PackageError::BadName { .. }), "{e}");

        let d = folder();
        std::fs::remove_file(d.path().join("plugin.toml")).unwrap();
        assert!(matches!(run(d.path()), PackageError::NoManifest { .. }));
        assert!(matches!(
            run(&d.path().join("demo.wasm")),
            PackageError::NotAFolder { .. }
        ));
        // Nothing was written for any of them.
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn name_and_version_come_from_the_plugin_when_plugin_toml_lacks_them() {
        let d = folder();
        std::fs::write(d.path().join("plugin.toml"), "name = \"demo\"\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut asked = 0;
        let mut describe = || {
            asked += 1;
            Ok(("ignored".to_string(), "0.9.0".to_string()))
        };
        let p = pack(
            d.path(),
            None,
            out.path(),
            &Limits::default(),
            &mut describe,
        )
        .unwrap();
        assert_eq!(asked, 1);
        assert_eq!(
            p.index.file_name(),
            "demo-0.9.0.apiary",
            "plugin.toml's name wins"
        );
        let e = pack(
            d.path(),
            None,
            out.path(),
            &Limits::default(),
            &mut no_describe(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("put `name` and `version` in plugin.toml"),
            "{e}"
        );
        // A name that cannot be a folder name is refused, not sanitised.
        std::fs::write(
            d.path().join("plugin.toml"),
            "name = \"my plugin\"\nversion = \"1\"\n",
        )
        .unwrap();
        let e = pack(
            d.path(),
            None,
            out.path(),
            &Limits::default(),
            &mut no_describe(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("plain folder name"), "{e}");
    }

    #[test]
    fn the_caps_apply_when_packing_too() {
        let d = folder();
        let out = tempfile::tempdir().unwrap();
        let small = Limits {
            max_files: 2,
            max_bytes: 1 << 20,
        };
        let e = pack(d.path(), None, out.path(), &small, &mut no_describe()).unwrap_err();
        assert!(e.to_string().contains("more than the 2 allowed"), "{e}");
        let small = Limits {
            max_files: 10,
            max_bytes: 100,
        };
        let e = pack(d.path(), None, out.path(), &small, &mut no_describe()).unwrap_err();
        assert!(e.to_string().contains("more than the 100 allowed"), "{e}");
    }
}
