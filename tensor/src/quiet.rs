//! Keeping the GPU probe from talking over the operator.
//!
//! Why: opening a Vulkan instance lets system libraries the process does not control (the
//! Vulkan loader, Mesa's window-system code, libwayland) print straight to file
//! descriptor 2. On a machine without a desktop session that is `error: XDG_RUNTIME_DIR is
//! invalid or not set in the environment.`, twice, before every command, which reads as a
//! failure of Apiary's. Nothing is wrong: Apiary never draws to a window. So while the
//! probe runs, descriptor 2 points at a scratch file, and what was written there is
//! logged afterwards at `debug` level (`--log debug` shows it), never lost.
//!
//! The redirection is process-wide for its duration; the probe runs once, at start-up,
//! before plugins or the network start threads of their own.

/// Run `f` with the process's stderr captured; returns its result and what was written.
#[cfg(unix)]
pub fn capture_stderr<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let Ok(mut scratch) = scratch_file() else {
        return (f(), String::new());
    };
    let _ = std::io::stderr().flush();
    // SAFETY: dup and dup2 on descriptor 2 and on a file this function owns; the saved
    // descriptor is restored and closed before returning.
    let saved = unsafe { libc::dup(2) };
    if saved < 0 || unsafe { libc::dup2(scratch.as_raw_fd(), 2) } < 0 {
        if saved >= 0 {
            unsafe { libc::close(saved) };
        }
        return (f(), String::new());
    }
    let out = f();
    let _ = std::io::stderr().flush();
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    let mut said = String::new();
    let _ = scratch.seek(std::io::SeekFrom::Start(0));
    let _ = Read::by_ref(&mut scratch)
        .take(64 << 10)
        .read_to_string(&mut said);
    (out, said)
}

#[cfg(not(unix))]
pub fn capture_stderr<T>(f: impl FnOnce() -> T) -> (T, String) {
    (f(), String::new())
}

/// An unnamed file: created, then unlinked at once, so nothing is left behind.
#[cfg(unix)]
fn scratch_file() -> std::io::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!(
        "apiary-probe-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_to_descriptor_2_is_captured_and_stderr_comes_back() {
        let (v, said) = capture_stderr(|| {
            let msg = b"error: XDG_RUNTIME_DIR is invalid\n";
            // Written the way a C library writes: to the descriptor, not through Rust.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            7
        });
        assert_eq!(v, 7);
        assert_eq!(said, "error: XDG_RUNTIME_DIR is invalid\n");
        let (_, again) = capture_stderr(|| ());
        assert_eq!(again, "", "each capture starts empty");
        // Descriptor 2 is the original again: valid, and not the scratch file.
        assert!(unsafe { libc::fcntl(2, libc::F_GETFD) } >= 0);
    }
}
