//! The tar layer: writing a package, and reading one without trusting it.
//!
//! Writing uses plain ustar headers only (mode 0644, owner 0, time 0), so the same
//! folder signed by the same key gives the same bytes, and no header holds anything
//! install must ignore.
//!
//! Reading goes through the `tar` crate's *raw* entries: every header as it is in the
//! file. The crate's ordinary iterator would merge GNU long-name and PAX extension
//! entries into the next entry, reading each into memory whatever size its header claims;
//! we never write those, so here they are simply entries of a kind a package does not
//! hold, refused by their header like symlinks, hard links, devices and FIFOs. Only
//! regular files and folders pass [`kind`], and a file's data is read at most to the size
//! the signed index gives it ([`copy_hashed`]).

use super::EntryProblem;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::Path;

/// A header for `name` (a regular file of `size` bytes), or `None` if `name` does not fit
/// a ustar header (100 bytes, or up to 255 split at a `/`).
pub fn file_header(name: &str, size: u64) -> Option<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name).ok()?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    Some(header)
}

/// What an entry is, as far as a package is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
}

/// The entry's kind from its header; anything but a regular file or a folder is refused,
/// named, before any of its data is read.
pub fn kind(header: &tar::Header) -> Result<Kind, EntryProblem> {
    let t = header.entry_type();
    let what = match t {
        tar::EntryType::Regular => return Ok(Kind::File),
        tar::EntryType::Directory => return Ok(Kind::Folder),
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::Fifo => "a named pipe (FIFO)",
        tar::EntryType::Continuous => "a contiguous file (a special kind)",
        tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
            "a GNU long-name record (apiary never writes one)"
        }
        tar::EntryType::GNUSparse => "a sparse file",
        tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {
            "a PAX extended header (apiary never writes one)"
        }
        _ => "an entry of an unknown kind",
    };
    Err(EntryProblem::NotAFile(what))
}

/// The entry's path as written in its header (ustar prefix and name joined), which must be
/// UTF-8. A folder's trailing `/` is dropped.
pub fn path(header: &tar::Header) -> Result<String, EntryProblem> {
    let bytes = header.path_bytes();
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| EntryProblem::BadPath(super::PathProblem::NotUtf8))?;
    Ok(text.to_string())
}

/// A name for messages: printable and short, whatever the header holds.
pub fn shown_name(header: &tar::Header) -> String {
    let bytes = header.path_bytes();
    crate::plugins::safe_read::excerpt(&String::from_utf8_lossy(&bytes), 120)
}

/// Read all of a small entry (the index, the signature), refusing one larger than `max`
/// by its header, before reading.
pub fn read_small(entry: &mut impl Read, size: u64, max: u64) -> io::Result<Option<Vec<u8>>> {
    if size > max {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry.take(size).read_to_end(&mut bytes)?;
    if (bytes.len() as u64) < size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the archive ends inside an entry",
        ));
    }
    Ok(Some(bytes))
}

/// Why [`copy_hashed`] stopped: the source (the package) or the destination failed.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Read(e) | CopyError::Write(e) => e.fmt(f),
        }
    }
}

/// Copy at most `size` bytes of `from` into `to`, hashing them. Returns how many came and
/// their SHA-256: fewer than `size` means the archive was cut short.
pub fn copy_hashed(
    from: impl Read,
    size: u64,
    to: &mut impl Write,
) -> Result<(u64, [u8; 32]), CopyError> {
    let mut hasher = Sha256::new();
    let mut reader = from.take(size);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
    Ok((total, hasher.finalize().into()))
}

/// SHA-256 and length of everything `from` gives.
pub fn hash_reader(from: impl Read) -> io::Result<(u64, [u8; 32])> {
    copy_hashed(from, u64::MAX, &mut io::sink()).map_err(|e| match e {
        CopyError::Read(e) | CopyError::Write(e) => e,
    })
}

/// Open a package file to read: a regular file only (a FIFO is not even waited on).
pub fn open_package(path: &Path) -> Result<std::fs::File, String> {
    crate::plugins::safe_read::open_path(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_plain_and_reproducible() {
        let h = file_header("files/weights/model.gguf", 5).unwrap();
        assert_eq!(kind(&h), Ok(Kind::File));
        assert_eq!(path(&h).unwrap(), "files/weights/model.gguf");
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(
            h.as_bytes(),
            file_header("files/weights/model.gguf", 5)
                .unwrap()
                .as_bytes()
        );
        // Split at a `/` into the ustar prefix: still one header.
        let long = format!("files/{}/{}", "d".repeat(120), "f".repeat(90));
        let h = file_header(&long, 1).unwrap();
        assert_eq!(path(&h).unwrap(), long);
        // A last part over 100 bytes fits no ustar header.
        assert!(file_header(&format!("files/{}", "f".repeat(101)), 1).is_none());
        // Sizes past ustar's 8 GiB octal field are written in base-256 and read back.
        let h = file_header("files/big", 10 << 30).unwrap();
        assert_eq!(h.entry_size().unwrap(), 10 << 30);
    }

    #[test]
    fn only_files_and_folders_pass() {
        use tar::EntryType as T;
        for (t, needle) in [
            (T::Symlink, "symbolic link"),
            (T::Link, "hard link"),
            (T::Char, "character device"),
            (T::Block, "block device"),
            (T::Fifo, "named pipe"),
            (T::GNULongName, "long-name"),
            (T::XHeader, "PAX"),
            (T::GNUSparse, "sparse"),
            (T::new(b'Z'), "unknown"),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(t);
            let e = kind(&h).unwrap_err().to_string();
            assert!(e.contains(needle), "{t:?}: {e}");
        }
        let mut h = tar::Header::new_old();
        h.set_entry_type(T::new(0));
        assert_eq!(kind(&h), Ok(Kind::File), "an old-style regular file");
    }

    #[test]
    fn small_entries_are_capped_by_their_header() {
        let data = [1u8; 100];
        assert_eq!(read_small(&mut &data[..], 100, 99).unwrap(), None);
        assert_eq!(
            read_small(&mut &data[..], 100, 100).unwrap().unwrap().len(),
            100
        );
        assert!(read_small(&mut &data[..50], 100, 100).is_err());
        let (n, _) = copy_hashed(&data[..], 10, &mut io::sink()).unwrap();
        assert_eq!(n, 10, "never more than the size asked for");
        let (n, h) = hash_reader(&b"abc"[..]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            hex::encode(h),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
