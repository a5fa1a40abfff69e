//! Running plugin work behind the owner's own programs.
//!
//! The governor reacts within a sample (seconds); the OS scheduler reacts within a
//! time slice. Lowering the threads that run plugins lets the owner's programs win
//! every contended slice in between, which is what BOINC does by running its work at
//! nice 10 and in the idle I/O class. Only worker threads are lowered: the governor's
//! own thread keeps its priority, or a loaded machine would starve the very thread
//! that is meant to pause the node.

/// The nice value worker threads run at (BOINC's).
pub const NICE: i32 = 10;

/// Lowers the calling thread: nice 10 and the idle I/O class on Linux; a no-op
/// returning `Ok` elsewhere. A thread already nicer than 10 is left as it is
/// (raising priority back would need privileges and is not the point).
pub fn lower_current_thread() -> Result<(), String> {
    imp::lower_current_thread()
}

#[cfg(target_os = "linux")]
mod imp {
    use super::NICE;

    /// `IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT`: I/O only when no one else wants the
    /// disk. Not in `libc`, so spelled out from `linux/ioprio.h`.
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_IDLE: libc::c_long = 3 << 13;

    pub(super) fn lower_current_thread() -> Result<(), String> {
        let tid = current_tid();
        nice_thread(tid)?;
        idle_io(tid)
    }

    fn current_tid() -> libc::pid_t {
        // SAFETY: gettid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
    }

    /// On Linux `PRIO_PROCESS` with a thread id addresses that one thread (a
    /// departure from POSIX that threads rely on), so the rest of the process keeps
    /// its priority.
    fn nice_thread(tid: libc::pid_t) -> Result<(), String> {
        let current = thread_nice(tid)?;
        if current >= NICE {
            return Ok(());
        }
        // SAFETY: plain syscall wrapper on our own thread id.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) };
        if rc != 0 {
            return Err(format!(
                "setpriority(nice {NICE}) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// The thread's nice value. getpriority may legitimately return -1, so errors are
    /// told apart by errno.
    pub(super) fn thread_nice(tid: libc::pid_t) -> Result<i32, String> {
        // SAFETY: errno is thread-local; getpriority only reads scheduler state.
        unsafe {
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            let err = *libc::__errno_location();
            if nice == -1 && err != 0 {
                return Err(format!(
                    "getpriority failed: {}",
                    std::io::Error::from_raw_os_error(err)
                ));
            }
            Ok(nice)
        }
    }

    fn idle_io(tid: libc::pid_t) -> Result<(), String> {
        // SAFETY: ioprio_set takes three integers; no memory is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                tid as libc::c_long,
                IOPRIO_IDLE,
            )
        };
        if rc != 0 {
            return Err(format!(
                "ioprio_set(idle) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn io_class(tid: libc::pid_t) -> libc::c_long {
        // SAFETY: as for ioprio_set.
        unsafe {
            libc::syscall(
                libc::SYS_ioprio_get,
                IOPRIO_WHO_PROCESS,
                tid as libc::c_long,
            ) >> 13
        }
    }

    #[cfg(test)]
    pub(super) fn tid() -> libc::pid_t {
        current_tid()
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn lower_current_thread() -> Result<(), String> {
        // Not yet: Windows has THREAD_MODE_BACKGROUND_BEGIN, macOS QoS classes.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_a_thread_succeeds() {
        std::thread::spawn(|| lower_current_thread().unwrap())
            .join()
            .unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_lowered_thread_runs_at_nice_10_idle_io_and_alone() {
        let me = imp::tid();
        let before = imp::thread_nice(me).unwrap();
        let (nice, class) = std::thread::spawn(|| {
            let t = imp::tid();
            lower_current_thread().unwrap();
            (imp::thread_nice(t).unwrap(), imp::io_class(t))
        })
        .join()
        .unwrap();
        assert_eq!(nice, NICE.max(before));
        assert_eq!(class, 3, "idle I/O class");
        // Only that thread moved.
        assert_eq!(imp::thread_nice(me).unwrap(), before);
    }
}
