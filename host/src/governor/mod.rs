//! # The governor: the owner's computer comes first
//!
//! Operators run a node in the background of the computer they work on. If the node
//! makes that computer slow, loud or short of battery, it gets uninstalled, and a
//! swarm is only as large as the number of owners who keep it running. So the node
//! watches the machine every few seconds and sets its own state:
//!
//! - **active**: answer and judge at full speed;
//! - **throttled**: the owner's programs are busy: fewer concurrent rounds;
//! - **paused**: the owner needs the machine (or asked, with `apiary pause`): no
//!   plugin work, judging only if the owner allows it.
//!
//! The rules follow BOINC's computing preferences, which millions of volunteers have
//! lived with for two decades: suspend while *other* programs use more than N % of the
//! CPU, while memory is short, on battery, or until the user has been idle N minutes;
//! and cap the node's own work at N % of the time by duty cycle, since a machine can
//! be idle and still not want its fans at full speed.
//!
//! The pieces:
//!
//! - [`rules`]: the owner's [`Rules`] (`[governor]` in `config.toml`) and the
//!   [`Engine`], a pure state machine fed samples with their time; all the judgement
//!   lives there and is tested with recorded samples;
//! - [`sample`]: the [`Sampler`], the only code that reads the machine, and what it
//!   can read on each platform;
//! - [`priority`]: lowering worker threads so the OS favours the owner between samples;
//! - [`Governor`] (here): a thread that drives the engine with real samples and wall
//!   time, and the handle the rest of the node asks ("may I start a round?").

pub mod priority;
pub mod rules;
pub mod sample;

pub use rules::{Engine, Mode, Rules, State, Status};
pub use sample::{Sample, Sampler};

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

use crate::swarm::wire::now_ms;

/// The running governor: a cheap handle; clones share one engine.
///
/// [`Governor::start`] runs one thread, `apiary-governor`, that samples the machine
/// and feeds the engine. The thread holds the shared state only weakly and waits on a
/// channel whose sender lives in it, so dropping the last handle wakes it and it ends.
#[derive(Clone)]
pub struct Governor {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Mutex<Engine>,
    /// Notifies subscribers of changes that matter to them (state, manual pause); the
    /// latest sample is written in silently, so `borrow()` is always current.
    tx: watch::Sender<Status>,
    /// Wakes the thread early (a pause deadline changed) and, dropped with the last
    /// handle, tells it to end.
    wake: mpsc::Sender<()>,
}

impl Governor {
    /// Starts sampling under `rules` (validate them first; an out-of-range sampling
    /// period is clamped here rather than spinning). Modes `always` and `never`
    /// sample too, so the dashboard still shows the machine.
    pub fn start(rules: Rules) -> Governor {
        Governor::spawn(rules, Sampler::new(), now_ms).0
    }

    /// A governor with no sampling thread that holds `state`, for tests and for a
    /// node that must not depend on the machine's readings. Manual pauses still work.
    pub fn fixed(state: State) -> Governor {
        let rules = Rules {
            mode: match state {
                State::Active => Mode::Always,
                State::Paused => Mode::Never,
                State::Throttled => Mode::Auto,
            },
            ..Rules::default()
        };
        let (wake, _) = mpsc::channel();
        Governor::with_engine(Engine::fixed(rules, state, now_ms()), wake)
    }

    fn with_engine(engine: Engine, wake: mpsc::Sender<()>) -> Governor {
        let (tx, _) = watch::channel(engine.status());
        Governor {
            inner: Arc::new(Inner {
                engine: Mutex::new(engine),
                tx,
                wake,
            }),
        }
    }

    /// The thread behind [`Governor::start`], with the sampler and clock passed in so
    /// tests can drive it; returns the thread's handle too.
    fn spawn(rules: Rules, mut sampler: Sampler, clock: fn() -> u64) -> (Governor, JoinHandle<()>) {
        let (wake, woken) = mpsc::channel();
        let every = Duration::from_millis(
            rules
                .sample_every_ms
                .clamp(rules::MIN_SAMPLE_EVERY_MS, rules::MAX_SAMPLE_EVERY_MS),
        );
        let governor = Governor::with_engine(Engine::new(rules, clock()), wake);
        // Prime the CPU counters now, so the first sample the engine sees spans a real
        // interval instead of reporting an idle machine.
        sampler.sample(clock());
        let weak = Arc::downgrade(&governor.inner);
        let thread = std::thread::Builder::new()
            .name("apiary-governor".into())
            .spawn(move || run(weak, woken, sampler, every, clock))
            .expect("spawning the governor thread");
        (governor, thread)
    }

    pub fn status(&self) -> Status {
        self.engine().status()
    }

    pub fn state(&self) -> State {
        self.engine().state()
    }

    /// The rules in force.
    pub fn rules(&self) -> Rules {
        self.engine().rules().clone()
    }

    /// Pauses by hand for `for_ms`, or until [`Governor::resume`] when `None`.
    pub fn pause(&self, for_ms: Option<u64>) -> Status {
        let now = now_ms();
        let until = for_ms.map(|d| now.saturating_add(d));
        let status = self.apply(|e| e.pause(until, now));
        // The thread may be asleep for a whole period; let it wait for the deadline.
        let _ = self.inner.wake.send(());
        status
    }

    /// Ends a manual pause.
    pub fn resume(&self) -> Status {
        self.apply(|e| e.resume(now_ms()))
    }

    /// Change notifications: a new value whenever the state or the manual pause
    /// changes.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.inner.tx.subscribe()
    }

    /// How long to rest after `busy` of plugin work so this node's work stays under
    /// `max-cpu-percent` of the time (BOINC's duty cycle): `busy × (100/p − 1)`, zero
    /// at 100 %.
    pub fn rest_after(&self, busy: Duration) -> Duration {
        rest_after(busy, self.engine().rules().max_cpu_percent)
    }

    /// Concurrent member rounds allowed now: `normal` when active,
    /// `throttled-rounds` (never more than `normal`) when throttled, 0 when paused.
    pub fn round_slots(&self, normal: usize) -> usize {
        let engine = self.engine();
        match engine.state() {
            State::Active => normal,
            State::Throttled => engine.rules().throttled_rounds.min(normal),
            State::Paused => 0,
        }
    }

    /// Whether this node may judge other nodes' answers now: always unless paused,
    /// and while paused only if `judge-when-paused`.
    pub fn may_judge(&self) -> bool {
        let engine = self.engine();
        engine.state() != State::Paused || engine.rules().judge_when_paused
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.inner.engine()
    }

    /// Runs `f` on the engine and publishes the outcome.
    fn apply(&self, f: impl FnOnce(&mut Engine) -> Status) -> Status {
        let status = f(&mut self.engine());
        self.inner.publish();
        status
    }
}

impl Inner {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        // The engine has no invariant a panic halfway could break that matters more
        // than keeping the node answering; a poisoned lock is taken as it is.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the engine's status into the watch; wakes subscribers only for what
    /// they act on, not for every sample.
    ///
    /// The status is read inside the watch's lock, so two publishers cannot leave an
    /// older status last; and the locks are always taken watch first, engine second
    /// (a subscriber holding `borrow()` may call `status()`), never the other way.
    fn publish(&self) {
        self.tx.send_if_modified(|old| {
            let status = self.engine().status();
            let notable = old.state != status.state
                || old.manual != status.manual
                || old.paused_until_ms != status.paused_until_ms;
            if old.state != status.state {
                // Throttled: the kernels keep to one core (the caller's), so the owner's
                // work has the rest; otherwise they use every core.
                let one = status.state == State::Throttled;
                apiary_tensor::pool::set_max_threads(usize::from(one));
            }
            *old = status;
            notable
        });
    }
}

/// The governor thread: sample, feed, publish, wait for the next period or an earlier
/// pause deadline; end when the handles are gone.
///
/// It keeps its normal priority (see [`priority`]): when the machine is loaded it
/// is the thread that has to run to pause the node.
fn run(
    weak: Weak<Inner>,
    woken: mpsc::Receiver<()>,
    mut sampler: Sampler,
    every: Duration,
    clock: fn() -> u64,
) {
    let mut next_sample = clock().saturating_add(every.as_millis() as u64);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let now = clock();
        let mut engine = inner.engine();
        if now >= next_sample {
            engine.observe(sampler.sample(now));
            next_sample = now.saturating_add(every.as_millis() as u64);
        } else {
            engine.tick(now);
        }
        let wake_at = engine
            .paused_until_ms()
            .map_or(next_sample, |d| d.min(next_sample));
        drop(engine);
        inner.publish();
        // Holding no strong reference while asleep, so the last handle can go.
        drop(inner);
        let wait = Duration::from_millis(wake_at.saturating_sub(now));
        match woken.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// `busy × (100 − p) / p`, in integer nanoseconds so 50 % rests exactly as long as it
/// worked.
fn rest_after(busy: Duration, max_cpu_percent: u8) -> Duration {
    let p = u128::from(max_cpu_percent.clamp(1, 100));
    let nanos = busy.as_nanos() * (100 - p) / p;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn with_max_cpu(p: u8) -> Governor {
        let rules = Rules {
            max_cpu_percent: p,
            ..Rules::default()
        };
        let (wake, _) = mpsc::channel();
        Governor::with_engine(Engine::fixed(rules, State::Active, 0), wake)
    }

    #[test]
    fn rest_after_keeps_the_duty_cycle() {
        let ms = Duration::from_millis;
        assert_eq!(with_max_cpu(100).rest_after(ms(500)), Duration::ZERO);
        assert_eq!(with_max_cpu(50).rest_after(ms(500)), ms(500));
        assert_eq!(with_max_cpu(25).rest_after(ms(100)), ms(300));
        assert_eq!(with_max_cpu(1).rest_after(ms(10)), ms(990));
        assert_eq!(with_max_cpu(80).rest_after(ms(400)), ms(100));
        // Out-of-range values are clamped, never a division by zero.
        assert_eq!(rest_after(ms(10), 0), ms(990));
        assert_eq!(rest_after(ms(10), 200), Duration::ZERO);
        assert_eq!(rest_after(Duration::MAX, 1), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn round_slots_follow_the_state() {
        assert_eq!(Governor::fixed(State::Active).round_slots(4), 4);
        assert_eq!(Governor::fixed(State::Throttled).round_slots(4), 1);
        assert_eq!(Governor::fixed(State::Throttled).round_slots(0), 0);
        assert_eq!(Governor::fixed(State::Paused).round_slots(4), 0);
    }

    #[test]
    fn fixed_holds_its_state_and_says_why() {
        for state in [State::Active, State::Throttled, State::Paused] {
            let g = Governor::fixed(state);
            assert_eq!(g.state(), state);
            let status = g.status();
            assert_eq!(status.state, state);
            assert!(!status.manual);
            assert_eq!(status.sample, None);
        }
        assert_eq!(Governor::fixed(State::Paused).status().reason, "mode never");
        assert!(!Governor::fixed(State::Paused).may_judge());
        assert!(Governor::fixed(State::Throttled).may_judge());
    }

    #[test]
    fn pause_and_resume_through_the_handle_notify_subscribers() {
        let g = Governor::fixed(State::Active);
        let other = g.clone();
        let mut rx = g.subscribe();
        let status = other.pause(Some(3_600_000));
        assert_eq!(status.state, State::Paused);
        assert!(status.manual);
        assert!(status.paused_until_ms.unwrap() > now_ms());
        assert_eq!(g.state(), State::Paused, "clones share the engine");
        assert_eq!(g.round_slots(3), 0);
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow_and_update().manual);

        let status = g.resume();
        assert_eq!(status.state, State::Active);
        assert!(!status.manual);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().state, State::Active);
    }

    #[test]
    fn a_timed_pause_ends_on_the_running_thread() {
        let rules = Rules {
            sample_every_ms: 60_000,
            ..Rules::default()
        };
        let (g, _thread) = Governor::spawn(rules, Sampler::new(), now_ms);
        let mut rx = g.subscribe();
        g.pause(Some(200));
        assert_eq!(g.state(), State::Paused);
        // The thread sleeps for a minute between samples but wakes for the deadline.
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let ended = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| !s.manual))
                .await
                .is_ok()
        });
        assert!(ended, "the pause did not expire");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!g.status().manual);
    }

    #[test]
    fn the_thread_samples_and_exits_when_the_handles_drop() {
        let rules = Rules {
            sample_every_ms: 100,
            ..Rules::default()
        };
        let (g, thread) = Governor::spawn(rules, Sampler::new(), now_ms);
        assert_eq!(thread.thread().name(), Some("apiary-governor"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while g.status().sample.is_none() {
            assert!(Instant::now() < deadline, "no sample within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let clone = g.clone();
        drop(g);
        std::thread::sleep(Duration::from_millis(300));
        assert!(!thread.is_finished(), "a handle is still alive");
        drop(clone);
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the thread outlived its handles");
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().unwrap();
    }

    #[test]
    fn start_runs_with_the_defaults() {
        let g = Governor::start(Rules::default());
        assert_eq!(g.status().mode, Mode::Auto);
        assert_eq!(g.status().max_cpu_percent, 100);
    }
}
