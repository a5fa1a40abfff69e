//! Reading the machine.
//!
//! The governor judges *other* load, not the machine's total: counting its own work
//! would pause the node because it was working, and resume it because it had paused.
//! Like BOINC, it takes the machine's busy CPU time and subtracts this process's,
//! which covers every plugin, since plugins run on threads of this process.
//!
//! What each platform gets:
//!
//! - **Linux**: CPU from `/proc/stat` (busy jiffies of all cores) minus
//!   `/proc/self/stat` (`utime + stime`, all threads); memory from `/proc/meminfo`
//!   (`MemAvailable`); battery from `/sys/class/power_supply` (on battery when no
//!   mains supply is online and a system battery is discharging; a machine with no
//!   system battery is never on battery); user idleness from the newest access or
//!   modification time of `/dev/input/event*` and the newest access time of
//!   `/dev/tty*` and `/dev/pts/*` (a terminal's access time moves when its shell reads
//!   a keystroke; its modification time also moves when anything, this node's logs
//!   included, is written to it, so that one is not used). Devices the process cannot
//!   stat are skipped; with none left idleness is unknown.
//! - **Other platforms**: nothing yet (the host does not depend on `sysinfo`): CPU
//!   reads 0 and the rest `None`, so only the modes and manual pauses apply.

use serde::{Deserialize, Serialize};

/// One reading of the machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall time of the reading, ms since the Unix epoch.
    pub at_ms: u64,
    /// CPU used by processes other than this one since the previous sample, % of all
    /// cores (the whole machine busy = 100).
    pub other_cpu_percent: f32,
    /// CPU used by this process since the previous sample, % of all cores.
    pub own_cpu_percent: f32,
    pub available_memory_mib: Option<u64>,
    /// None: the platform does not tell.
    pub on_battery: Option<bool>,
    /// Seconds since the user last touched an input device. None: the platform does
    /// not tell.
    pub user_idle_s: Option<u64>,
}

/// CPU counters at one instant, in clock ticks summed over all cores.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counters {
    busy: u64,
    total: u64,
    own: u64,
}

/// Reads the machine. CPU shares are deltas between two calls, so it keeps the
/// previous call's counters: the first sample after `new` only primes them and
/// reports 0 %.
#[derive(Debug, Default)]
pub struct Sampler {
    prev: Option<Counters>,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler::default()
    }

    /// One reading. `now_ms` is wall time; it is compared with device timestamps for
    /// idleness.
    pub fn sample(&mut self, now_ms: u64) -> Sample {
        let (other_cpu_percent, own_cpu_percent) = self.cpu();
        Sample {
            at_ms: now_ms,
            other_cpu_percent,
            own_cpu_percent,
            available_memory_mib: platform::available_memory_mib(),
            on_battery: platform::on_battery(),
            user_idle_s: platform::user_idle_s(now_ms),
        }
    }

    fn cpu(&mut self) -> (f32, f32) {
        let Some(now) = platform::counters() else {
            return (0.0, 0.0);
        };
        let shares = self.prev.and_then(|prev| shares(prev, now));
        // Two reads within one tick have nothing between them: keep the older
        // counters so the next delta spans a real interval.
        if shares.is_some() || self.prev.is_none() {
            self.prev = Some(now);
        }
        shares.unwrap_or((0.0, 0.0))
    }
}

/// (other, own) in % of the machine between two readings; None without elapsed ticks.
fn shares(prev: Counters, now: Counters) -> Option<(f32, f32)> {
    let total = now.total.checked_sub(prev.total).filter(|t| *t > 0)? as f64;
    let busy = now.busy.saturating_sub(prev.busy) as f64;
    let own = now.own.saturating_sub(prev.own) as f64;
    // The two files are accounted apart and rounded apart: own can exceed busy by a
    // tick, so clamp rather than report negative load.
    let pct = |x: f64| (x / total * 100.0).clamp(0.0, 100.0) as f32;
    Some((pct(busy - own), pct(own)))
}

/// `(busy, total)` ticks from the first line of `/proc/stat`.
fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    // already inside user and nice, so it is not added again.
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let idle = at(3) + at(4);
    (v.len() >= 4).then_some((busy, busy + idle))
}

/// `utime + stime` ticks from `/proc/self/stat`.
fn parse_self_stat(text: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count from the
    // last ')'. After it come field 3 (state) onwards; utime and stime are 14 and 15.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `MemAvailable` in MiB from `/proc/meminfo`.
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// One entry of `/sys/class/power_supply`, the files that matter.
#[derive(Clone, Debug, Default, PartialEq)]
struct Supply {
    kind: String,
    /// `System` or `Device` (a wireless mouse's battery); absent on older kernels.
    scope: Option<String>,
    status: Option<String>,
    online: Option<String>,
}

fn on_battery_from(supplies: &[Supply]) -> bool {
    let mains_online = supplies
        .iter()
        .any(|s| s.kind == "Mains" && s.online.as_deref() == Some("1"));
    let discharging = supplies.iter().any(|s| {
        s.kind == "Battery"
            && s.scope.as_deref() != Some("Device")
            && s.status.as_deref() == Some("Discharging")
    });
    !mains_online && discharging
}

#[cfg(target_os = "linux")]
mod platform {
    use super::*;
    use std::fs;
    use std::path::Path;
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(super) fn counters() -> Option<Counters> {
        let (busy, total) = parse_proc_stat(&fs::read_to_string("/proc/stat").ok()?)?;
        let own = parse_self_stat(&fs::read_to_string("/proc/self/stat").ok()?)?;
        Some(Counters { busy, total, own })
    }

    pub(super) fn available_memory_mib() -> Option<u64> {
        parse_meminfo(&fs::read_to_string("/proc/meminfo").ok()?)
    }

    pub(super) fn on_battery() -> Option<bool> {
        let entries = fs::read_dir("/sys/class/power_supply").ok()?;
        let supplies: Vec<Supply> = entries.flatten().map(|e| supply(&e.path())).collect();
        Some(on_battery_from(&supplies))
    }

    fn supply(dir: &Path) -> Supply {
        let read = |name: &str| {
            fs::read_to_string(dir.join(name))
                .ok()
                .map(|s| s.trim().to_string())
        };
        Supply {
            kind: read("type").unwrap_or_default(),
            scope: read("scope"),
            status: read("status"),
            online: read("online"),
        }
    }

    pub(super) fn user_idle_s(now_ms: u64) -> Option<u64> {
        let newest = [
            newest_in("/dev/input", "event", true),
            newest_in("/dev", "tty", false),
            newest_in("/dev/pts", "", false),
        ]
        .into_iter()
        .flatten()
        .max()?;
        let newest_s = newest.duration_since(UNIX_EPOCH).ok()?.as_secs();
        Some((now_ms / 1000).saturating_sub(newest_s))
    }

    /// The newest timestamp among `dir`'s entries whose names start with `prefix`.
    fn newest_in(dir: &str, prefix: &str, with_mtime: bool) -> Option<SystemTime> {
        let entries = fs::read_dir(dir).ok()?;
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(prefix) && name != "ptmx"
            })
            .filter_map(|e| {
                let meta = fs::metadata(e.path()).ok()?;
                let accessed = meta.accessed().ok();
                let modified = if with_mtime {
                    meta.modified().ok()
                } else {
                    None
                };
                accessed.max(modified)
            })
            .max()
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    //! No readings yet on this platform (see the module docs).
    use super::Counters;

    pub(super) fn counters() -> Option<Counters> {
        None
    }
    pub(super) fn available_memory_mib() -> Option<u64> {
        None
    }
    pub(super) fn on_battery() -> Option<bool> {
        None
    }
    pub(super) fn user_idle_s(_now_ms: u64) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  100 5 50 800 20 3 2 1 7 0\ncpu0 50 2 25 400 10 1 1 0 3 0\n";
        assert_eq!(parse_proc_stat(text), Some((161, 981)));
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 x 3 4\n"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn parses_self_stat_past_a_hostile_command_name() {
        // Field 2 with spaces and a ')' inside; utime = 1234, stime = 56.
        let text = "4242 (we ird) (x) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 56 0 0 20 0 9 0";
        assert_eq!(parse_self_stat(text), Some(1290));
        assert_eq!(parse_self_stat("4242 (short) S 1"), None);
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       16303284 kB\nMemFree:  1000 kB\nMemAvailable:    8151642 kB\n";
        assert_eq!(parse_meminfo(text), Some(7960));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn shares_subtract_own_time_and_clamp() {
        let a = Counters {
            busy: 1000,
            total: 4000,
            own: 100,
        };
        let b = Counters {
            busy: 1600,
            total: 5000,
            own: 300,
        };
        assert_eq!(shares(a, b), Some((40.0, 20.0)));
        // Own time rounded past busy time: no negative load.
        let c = Counters { own: 800, ..b };
        assert_eq!(shares(a, c), Some((0.0, 70.0)));
        assert_eq!(shares(a, a), None);
    }

    #[test]
    fn battery_only_when_a_system_battery_discharges_off_mains() {
        let bat = |status: &str, scope: Option<&str>| Supply {
            kind: "Battery".into(),
            scope: scope.map(Into::into),
            status: Some(status.into()),
            online: None,
        };
        let ac = |online: &str| Supply {
            kind: "Mains".into(),
            online: Some(online.into()),
            ..Supply::default()
        };
        assert!(on_battery_from(&[bat("Discharging", None), ac("0")]));
        assert!(on_battery_from(&[bat("Discharging", Some("System"))]));
        assert!(!on_battery_from(&[bat("Discharging", None), ac("1")]));
        assert!(!on_battery_from(&[bat("Charging", None), ac("0")]));
        assert!(!on_battery_from(&[
            bat("Discharging", Some("Device")),
            ac("0")
        ]));
        assert!(!on_battery_from(&[]), "a desktop");
    }

    #[test]
    fn the_first_sample_primes() {
        let mut s = Sampler::new();
        let first = s.sample(1);
        assert_eq!(first.at_ms, 1);
        assert_eq!((first.other_cpu_percent, first.own_cpu_percent), (0.0, 0.0));
    }

    #[cfg(target_os = "linux")]
    mod linux {
        use super::*;
        use std::process::{Child, Command};
        use std::time::{Duration, Instant};

        fn spin(d: Duration) {
            let end = Instant::now() + d;
            let mut x = 0u64;
            while Instant::now() < end {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }

        /// Kills the child when the test ends, failed assertions included.
        struct Killed(Child);
        impl Drop for Killed {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }

        #[test]
        fn memory_is_known() {
            let s = Sampler::new().sample(0);
            assert!(s.available_memory_mib.is_some_and(|m| m > 0), "{s:?}");
            assert!(
                s.on_battery.is_some() || !std::path::Path::new("/sys/class/power_supply").exists()
            );
        }

        #[test]
        fn a_busy_thread_here_counts_as_own_load() {
            let mut s = Sampler::new();
            s.sample(0);
            std::thread::spawn(|| spin(Duration::from_secs(1)))
                .join()
                .unwrap();
            let r = s.sample(1000);
            // One core of a shared two-core machine spinning for the whole interval
            // would be 50 %; others' work may take some of it.
            assert!(r.own_cpu_percent > 10.0, "{r:?}");
            assert!(r.own_cpu_percent + r.other_cpu_percent <= 100.5, "{r:?}");
        }

        #[test]
        fn a_busy_child_process_counts_as_other_load() {
            let child = Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("sh runs");
            let _child = Killed(child);
            let mut s = Sampler::new();
            s.sample(0);
            std::thread::sleep(Duration::from_millis(1500));
            let r = s.sample(1500);
            assert!(r.other_cpu_percent > 10.0, "{r:?}");
        }

        #[test]
        fn idleness_is_not_in_the_future() {
            let now = crate::swarm::wire::now_ms();
            if let Some(idle) = Sampler::new().sample(now).user_idle_s {
                // Device times are in the past, so idleness is a plain subtraction.
                assert!(idle < now / 1000, "{idle}");
            }
        }
    }
}
