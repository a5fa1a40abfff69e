//! Reading files from a plugin folder without trusting them.
//!
//! A plugin folder is the operator's, but a hostile or broken one must not hang or flood
//! the host. Every file the loader reads from it goes through here:
//!
//! - it is opened with `O_NONBLOCK | O_NOCTTY`, so a named pipe (FIFO) without a writer
//!   does not block the open, and no terminal becomes ours;
//! - its type is checked before the open (so device nodes are normally not even opened)
//!   and again on the opened handle (`fstat`), which is what counts: only regular files
//!   are read; FIFOs, sockets, character and block devices and folders are refused, naming
//!   the kind;
//! - it is read through `Read::take(max + 1)` whatever its metadata says, and refused if
//!   more than `max` bytes come (files in `/proc` report a size of 0, for one).
//!
//! Text taken from such files into messages goes through [`excerpt`], so an error never
//! quotes more than a short, printable piece of untrusted content.

use cap_std::fs::{Dir, OpenOptions};
use serde::Serialize;
use std::io::Read;
use std::path::Path;

/// Flags every plugin-folder file is opened with, on top of read-only.
#[cfg(unix)]
const OPEN_FLAGS: i32 = libc::O_NONBLOCK | libc::O_NOCTTY;

/// The kind of a `std` or cap-std `FileType`, `None` for a regular file.
macro_rules! kind_of {
    ($t:expr) => {{
        let t = $t;
        #[cfg(unix)]
        let special = {
            #[allow(unused_imports)]
            use {cap_std::fs::FileTypeExt as _, std::os::unix::fs::FileTypeExt as _};
            (
                t.is_fifo(),
                t.is_socket(),
                t.is_char_device(),
                t.is_block_device(),
            )
        };
        #[cfg(not(unix))]
        let special = (false, false, false, false);
        FileKind::classify(t.is_file(), t.is_dir(), t.is_symlink(), special)
    }};
}

/// What a path turned out to be, when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    Folder,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Symlink,
    Other,
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Folder => "a folder",
            FileKind::Fifo => "a named pipe (FIFO)",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Symlink => "a symbolic link",
            FileKind::Other => "a special file",
        })
    }
}

impl FileKind {
    /// `None` for a regular file.
    pub fn of_std(t: &std::fs::FileType) -> Option<FileKind> {
        kind_of!(t)
    }

    fn of_cap(t: &cap_std::fs::FileType) -> Option<FileKind> {
        kind_of!(t)
    }

    fn classify(
        file: bool,
        dir: bool,
        link: bool,
        (fifo, socket, chr, block): (bool, bool, bool, bool),
    ) -> Option<FileKind> {
        Some(if file {
            return None;
        } else if dir {
            FileKind::Folder
        } else if link {
            FileKind::Symlink
        } else if fifo {
            FileKind::Fifo
        } else if socket {
            FileKind::Socket
        } else if chr {
            FileKind::CharDevice
        } else if block {
            FileKind::BlockDevice
        } else {
            FileKind::Other
        })
    }
}

/// Why a plugin-folder file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// It could not be opened or read (missing, not permitted, a symlink leading out of
    /// the folder, an I/O error).
    Io(std::io::Error),
    /// It is not a regular file.
    NotAFile(FileKind),
    /// It has more than `max` bytes; `size` is how many it has at least.
    TooLarge { size: u64, max: u64 },
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotAFile(kind) => write!(f, "is {kind}, not a regular file"),
            ReadError::TooLarge { size, max } => {
                write!(
                    f,
                    "is at least {size} bytes, more than the {max} byte limit"
                )
            }
        }
    }
}

/// Read `name` inside `dir` (resolved by cap-std: nothing outside `dir` is reachable),
/// at most `max` bytes.
pub fn read_in(dir: &Dir, name: impl AsRef<Path>, max: u64) -> Result<Vec<u8>, ReadError> {
    read_opened(open_in(dir, name)?, max)
}

/// Open `name` inside `dir` for reading as [`read_in`] does, for a caller that streams
/// the file (hashing a weights file) rather than holding it. The handle is a regular file.
pub fn open_in(dir: &Dir, name: impl AsRef<Path>) -> Result<std::fs::File, ReadError> {
    let name = name.as_ref();
    // Look before opening: a device node is not even opened. The opened handle is
    // checked again below, which is what holds if the file is swapped in between.
    let meta = dir.metadata(name).map_err(ReadError::Io)?;
    if let Some(kind) = FileKind::of_cap(&meta.file_type()) {
        return Err(ReadError::NotAFile(kind));
    }
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    cap_std::fs::OpenOptionsExt::custom_flags(&mut options, OPEN_FLAGS);
    let file = dir
        .open_with(name, &options)
        .map_err(ReadError::Io)?
        .into_std();
    regular(file)
}

/// Read the file at `path` (a plain path: symlinks are followed, for a bare `.wasm` the
/// operator put in the plugins folder), at most `max` bytes.
pub fn read_path(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    read_opened(open_path(path)?, max)
}

/// Open the file at `path` as [`read_path`] does; the handle is a regular file.
pub fn open_path(path: &Path) -> Result<std::fs::File, ReadError> {
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if let Some(kind) = FileKind::of_std(&meta.file_type()) {
        return Err(ReadError::NotAFile(kind));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, OPEN_FLAGS);
    regular(options.open(path).map_err(ReadError::Io)?)
}

/// The handle itself, if it is a regular file (`fstat`: what was opened is what counts).
fn regular(file: std::fs::File) -> Result<std::fs::File, ReadError> {
    let meta = file.metadata().map_err(ReadError::Io)?;
    match FileKind::of_std(&meta.file_type()) {
        Some(kind) => Err(ReadError::NotAFile(kind)),
        None => Ok(file),
    }
}

/// Check an opened handle (it must be a regular file) and read at most `max` bytes of it.
fn read_opened(file: std::fs::File, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = regular(file)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if meta.len() > max {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            max,
        });
    }
    // The reported size is a hint for the allocation, never a bound on the read.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

/// At most `max_chars` characters of untrusted text, for a message: control characters
/// (newlines, escape sequences) become spaces, runs of whitespace one space, and a cut is
/// marked with `…`.
pub fn excerpt(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut taken = 0;
    let mut last_space = false;
    for c in s.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        if taken == max_chars {
            out.push('…');
            return out;
        }
        last_space = c == ' ';
        out.push(c);
        taken += 1;
    }
    out
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use cap_std::ambient_authority;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::sync::mpsc::channel;
    use std::time::{Duration, Instant};

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
        assert_eq!(rc, 0, "mkfifo {}", std::io::Error::last_os_error());
    }

    /// A character device like /dev/zero, made with mknod where that is permitted (root,
    /// outside user namespaces that forbid it). `false` if it cannot be made here.
    fn mknod_zero(path: &Path) -> bool {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; makedev(1, 5) is /dev/zero.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
        rc == 0
    }

    /// Run `f` on another thread and fail if it does not return within 5 s (it should
    /// take milliseconds; a blocking open of a FIFO never returns).
    fn promptly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = channel();
        let start = Instant::now();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        let out = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{what} hung (still blocked after 5 s)"));
        assert!(start.elapsed() < Duration::from_secs(5));
        out
    }

    fn dir(path: &Path) -> Dir {
        Dir::open_ambient_dir(path, ambient_authority()).unwrap()
    }

    #[test]
    fn a_fifo_is_refused_promptly_in_a_dir_and_by_path() {
        let tmp = tempfile::tempdir().unwrap();
        mkfifo(&tmp.path().join("plugin.toml"));
        let root = tmp.path().to_path_buf();
        let e = promptly("read_in of a FIFO", move || {
            read_in(&dir(&root), "plugin.toml", 1024)
        })
        .unwrap_err();
        assert!(matches!(e, ReadError::NotAFile(FileKind::Fifo)), "{e:?}");
        assert!(e.to_string().contains("named pipe (FIFO)"), "{e}");
        let path = tmp.path().join("plugin.toml");
        let e = promptly("read_path of a FIFO", move || read_path(&path, 1024)).unwrap_err();
        assert!(matches!(e, ReadError::NotAFile(FileKind::Fifo)), "{e:?}");
    }

    #[test]
    fn a_fifo_with_a_writer_is_refused_too() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("x.wasm");
        mkfifo(&fifo);
        // A writer that keeps writing (O_RDWR opens a FIFO without waiting for a reader;
        // the thread blocks once the pipe is full and is left behind with the test).
        let w = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(w)
                .unwrap();
            let block = [0u8; 4096];
            while std::io::Write::write_all(&mut f, &block).is_ok() {}
        });
        std::thread::sleep(Duration::from_millis(50));
        let root = tmp.path().to_path_buf();
        let e = promptly("read_in of a fed FIFO", move || {
            read_in(&dir(&root), "x.wasm", 1 << 20)
        })
        .unwrap_err();
        assert!(matches!(e, ReadError::NotAFile(FileKind::Fifo)), "{e:?}");
        let e = promptly("read_path of a fed FIFO", move || read_path(&fifo, 1 << 20)).unwrap_err();
        assert!(matches!(e, ReadError::NotAFile(FileKind::Fifo)), "{e:?}");
    }

    #[test]
    fn the_opened_handle_is_what_is_checked() {
        // Whatever the look before the open said, a non-regular handle is refused: open a
        // FIFO ourselves (non-blocking) and hand it to the reader.
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("p");
        mkfifo(&fifo);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(OPEN_FLAGS)
            .open(&fifo)
            .unwrap();
        let e = promptly("read_opened of a FIFO", move || read_opened(f, 1024)).unwrap_err();
        assert!(matches!(e, ReadError::NotAFile(FileKind::Fifo)), "{e:?}");
        let f = std::fs::File::open(tmp.path()).unwrap();
        let e = read_opened(f, 1024).unwrap_err();
        assert!(matches!(e, ReadError::NotAFile(FileKind::Folder)), "{e:?}");
        let f = std::fs::File::open("/dev/zero").unwrap();
        let e = read_opened(f, 1024).unwrap_err();
        assert!(
            matches!(e, ReadError::NotAFile(FileKind::CharDevice)),
            "{e:?}"
        );
    }

    #[test]
    fn devices_are_refused_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        // By plain path, a symlink is followed: to /dev/zero it is a character device.
        let link = tmp.path().join("zero.wasm");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = promptly("read_path of /dev/zero", move || read_path(&link, 1 << 20)).unwrap_err();
        assert!(
            matches!(e, ReadError::NotAFile(FileKind::CharDevice)),
            "{e:?}"
        );
        assert!(e.to_string().contains("character device"), "{e}");
        // Inside a Dir, the same symlink leads out of the folder and cap-std refuses it.
        let root = tmp.path().to_path_buf();
        let e = promptly("read_in of a symlink to /dev/zero", move || {
            read_in(&dir(&root), "zero.wasm", 1 << 20)
        })
        .unwrap_err();
        assert!(matches!(e, ReadError::Io(_)), "{e:?}");
        // A device node inside the folder itself.
        if mknod_zero(&tmp.path().join("dev.wasm")) {
            let root = tmp.path().to_path_buf();
            let e = promptly("read_in of a device node", move || {
                read_in(&dir(&root), "dev.wasm", 1 << 20)
            })
            .unwrap_err();
            assert!(
                matches!(e, ReadError::NotAFile(FileKind::CharDevice)),
                "{e:?}"
            );
        } else {
            eprintln!("mknod not permitted here: the in-folder device node case is skipped");
        }
    }

    #[test]
    fn folders_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub.wasm")).unwrap();
        let e = read_in(&dir(tmp.path()), "sub.wasm", 1024).unwrap_err();
        assert!(matches!(e, ReadError::NotAFile(FileKind::Folder)), "{e:?}");
        assert!(
            e.to_string().contains("a folder, not a regular file"),
            "{e}"
        );
        let e = read_path(&tmp.path().join("sub.wasm"), 1024).unwrap_err();
        assert!(matches!(e, ReadError::NotAFile(FileKind::Folder)), "{e:?}");
    }

    #[test]
    fn size_is_capped_whatever_the_metadata_says() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("big"), vec![b'x'; 4097]).unwrap();
        std::fs::write(tmp.path().join("exact"), vec![b'x'; 4096]).unwrap();
        let d = dir(tmp.path());
        let e = read_in(&d, "big", 4096).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::TooLarge {
                    size: 4097,
                    max: 4096
                }
            ),
            "{e:?}"
        );
        assert_eq!(read_in(&d, "exact", 4096).unwrap().len(), 4096);
        assert_eq!(
            read_path(&tmp.path().join("exact"), 4096).unwrap().len(),
            4096
        );
        assert!(matches!(
            read_path(&tmp.path().join("big"), 4096),
            Err(ReadError::TooLarge { .. })
        ));
        // /proc files are regular files that report a size of 0 but have content: the
        // cap holds on what is read, not on what the metadata says.
        let maps = Path::new("/proc/self/maps");
        assert_eq!(std::fs::metadata(maps).unwrap().len(), 0);
        let e = read_path(maps, 64).unwrap_err();
        assert!(
            matches!(e, ReadError::TooLarge { size: 65, max: 64 }),
            "{e:?}"
        );
        let f = std::fs::File::open(maps).unwrap();
        assert!(matches!(
            read_opened(f, 64),
            Err(ReadError::TooLarge { .. })
        ));
    }

    #[test]
    fn missing_files_are_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(
            read_in(&dir(tmp.path()), "nope", 10)
                .unwrap_err()
                .is_not_found()
        );
        assert!(
            read_path(&tmp.path().join("nope"), 10)
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn excerpts_are_short_and_printable() {
        let long = "a\u{1b}[31m\n".repeat(100_000);
        let e = excerpt(&long, 50);
        assert!(e.chars().count() <= 51, "{e}");
        assert!(e.ends_with('…'));
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert_eq!(excerpt("fine  text\n", 50), "fine text ");
        assert_eq!(excerpt("abc", 3), "abc");
        assert_eq!(excerpt("abcd", 3), "abc…");
    }
}
