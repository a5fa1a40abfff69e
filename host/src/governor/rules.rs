//! The owner's rules and the engine that applies them.
//!
//! The engine is a plain state machine: samples go in with the time they were taken,
//! a [`Status`] comes out when the state changes. It reads no clock and touches no
//! file, so every decision it makes can be replayed from a recorded list of samples,
//! which is how the tests below check it (the same split as quinn-proto's: the
//! protocol is pure, the driver around it does the I/O).
//!
//! Two layers decide the state:
//!
//! - the **level**: what the rules say, with hysteresis. A worse state is taken at the
//!   first sample that calls for it, because the owner notices a slow computer at
//!   once; a better one only after every sample for `resume_after_s` allowed it,
//!   because a load that hovers around a threshold would otherwise switch the node on
//!   and off every few seconds, and each switch costs a round that is abandoned;
//! - the **manual pause** (`apiary pause`), laid over the level. The level keeps
//!   following the samples underneath, so `resume` lands at once on the state the
//!   rules justify now instead of starting the hysteresis over.

use super::sample::Sample;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Who decides the state.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The rules decide from the samples.
    #[default]
    Auto,
    /// Always active, whatever the machine does (a dedicated machine). A manual pause
    /// still holds: the owner asked for it just now.
    Always,
    /// Always paused: the node stays in the swarm's view but does no work.
    Never,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Always => "always",
            Mode::Never => "never",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Mode::Auto),
            "always" => Ok(Mode::Always),
            "never" => Ok(Mode::Never),
            _ => Err(format!(
                "unknown governor mode {s:?} (expected auto, always or never)"
            )),
        }
    }
}

/// What the node may do now. The order is from best to worst, so `a > b` reads
/// "a is a step down from b".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Answer and judge at full speed.
    Active,
    /// Fewer concurrent rounds (`throttled-rounds`).
    Throttled,
    /// No plugin work (judging only if `judge-when-paused`).
    Paused,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Throttled => "throttled",
            State::Paused => "paused",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The owner's rules: the `[governor]` table of `config.toml`. Every default is one an
/// owner who never opens the file would accept on a laptop they work on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rules {
    pub mode: Mode,
    /// Pause while other processes use more than this share of the whole machine's
    /// CPU (all cores = 100). BOINC's "suspend when non-BOINC CPU usage is above".
    pub pause_above_percent: f32,
    /// Throttle while other processes use more than this (and no more than the pause
    /// threshold).
    pub throttle_above_percent: f32,
    /// How long every sample must allow a better state before the node steps up.
    pub resume_after_s: u64,
    /// Pause while the machine has less memory available than this (0: never).
    pub min_available_memory_mib: u64,
    /// Pause while the machine runs on battery.
    pub pause_on_battery: bool,
    /// Run only after the user has been idle this many minutes (BOINC's "only after
    /// the computer has been idle"); paused while they use it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_minutes: Option<u64>,
    /// Ceiling on this node's own plugin work, as a duty cycle (BOINC's "use at most
    /// N % of CPU time"): keeps fans and temperatures down even when nothing else runs.
    pub max_cpu_percent: u8,
    /// Concurrent member rounds while throttled.
    pub throttled_rounds: usize,
    /// Keep judging other nodes' answers while paused (judging is short; answering is
    /// what costs).
    pub judge_when_paused: bool,
    /// How often the machine is sampled.
    pub sample_every_ms: u64,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            mode: Mode::Auto,
            pause_above_percent: 50.0,
            throttle_above_percent: 25.0,
            resume_after_s: 30,
            min_available_memory_mib: 512,
            pause_on_battery: true,
            idle_minutes: None,
            max_cpu_percent: 100,
            throttled_rounds: 1,
            judge_when_paused: false,
            sample_every_ms: 2000,
        }
    }
}

/// Shortest sampling period accepted: below it the sampler's own reads become load.
pub const MIN_SAMPLE_EVERY_MS: u64 = 100;
/// Longest sampling period accepted: above it a pause comes too late to matter.
pub const MAX_SAMPLE_EVERY_MS: u64 = 600_000;

impl Rules {
    /// Checks every key; the message names the key as it is spelled in `config.toml`.
    pub fn validate(&self) -> Result<(), String> {
        percent("pause-above-percent", self.pause_above_percent)?;
        percent("throttle-above-percent", self.throttle_above_percent)?;
        if self.throttle_above_percent > self.pause_above_percent {
            return Err(format!(
                "governor.throttle-above-percent ({}) must not exceed \
                 governor.pause-above-percent ({})",
                self.throttle_above_percent, self.pause_above_percent
            ));
        }
        if !(1..=100).contains(&self.max_cpu_percent) {
            return Err(format!(
                "governor.max-cpu-percent must be in 1..=100, got {}",
                self.max_cpu_percent
            ));
        }
        if self.throttled_rounds == 0 {
            // Zero rounds is a pause; saying so keeps the two states distinct.
            return Err(
                "governor.throttled-rounds must be at least 1, got 0 (use mode = \"never\" to pause)"
                    .into(),
            );
        }
        if !(MIN_SAMPLE_EVERY_MS..=MAX_SAMPLE_EVERY_MS).contains(&self.sample_every_ms) {
            return Err(format!(
                "governor.sample-every-ms must be in {MIN_SAMPLE_EVERY_MS}..={MAX_SAMPLE_EVERY_MS}, got {}",
                self.sample_every_ms
            ));
        }
        Ok(())
    }
}

fn percent(key: &str, value: f32) -> Result<(), String> {
    // Written so that NaN fails too.
    if value > 0.0 && value <= 100.0 {
        Ok(())
    } else {
        Err(format!("governor.{key} must be in (0, 100], got {value}"))
    }
}

/// What the node reports at `GET /v1/node` as `"governor"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    /// Why, in words an owner reads in the dashboard.
    pub reason: String,
    pub mode: Mode,
    /// When the state last changed.
    pub since_ms: u64,
    /// The manual pause's deadline, if it has one.
    pub paused_until_ms: Option<u64>,
    /// True while `apiary pause` holds.
    pub manual: bool,
    /// The latest sample (none before the first).
    pub sample: Option<Sample>,
    pub max_cpu_percent: u8,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Manual {
    from_ms: u64,
    until_ms: Option<u64>,
}

/// The pure rule engine. See the module docs for the two layers.
#[derive(Clone, Debug)]
pub struct Engine {
    rules: Rules,
    /// A state no sample changes (modes always/never, `Governor::fixed`).
    fixed: Option<State>,
    level: State,
    level_reason: String,
    /// Since when every sample allowed `Active`, and since when every one allowed at
    /// least `Throttled`: the two clocks of the hysteresis.
    calm_active_since: Option<u64>,
    calm_throttled_since: Option<u64>,
    manual: Option<Manual>,
    since_ms: u64,
    sample: Option<Sample>,
}

impl Engine {
    /// Starts active in mode auto: with no sample there is nothing to hold the node
    /// back, and the first sample that shows load steps it down at once.
    pub fn new(rules: Rules, now_ms: u64) -> Engine {
        let fixed = match rules.mode {
            Mode::Auto => None,
            Mode::Always => Some(State::Active),
            Mode::Never => Some(State::Paused),
        };
        Engine::with_fixed(rules, fixed, now_ms)
    }

    /// An engine that holds `state` whatever the samples say.
    pub(crate) fn fixed(rules: Rules, state: State, now_ms: u64) -> Engine {
        Engine::with_fixed(rules, Some(state), now_ms)
    }

    fn with_fixed(rules: Rules, fixed: Option<State>, now_ms: u64) -> Engine {
        let (level, level_reason) = match fixed {
            None => (State::Active, "no sample yet".to_string()),
            Some(state) => (state, fixed_reason(rules.mode, state)),
        };
        Engine {
            rules,
            fixed,
            level,
            level_reason,
            calm_active_since: None,
            calm_throttled_since: None,
            manual: None,
            since_ms: now_ms,
            sample: None,
        }
    }

    /// Feeds one sample; returns the new status when the state changed.
    pub fn observe(&mut self, sample: Sample) -> Option<Status> {
        let before = self.state();
        let now = sample.at_ms;
        self.expire_manual(now);
        if self.fixed.is_none() {
            let (target, reason) = verdict(&self.rules, &sample);
            self.track_calm(target, now);
            self.step(target, reason, now);
        }
        self.sample = Some(sample);
        self.settle(before, now)
    }

    /// Pauses by hand until `until_ms`, or until [`Engine::resume`] when `None`. A
    /// second pause replaces the first's deadline.
    pub fn pause(&mut self, until_ms: Option<u64>, now_ms: u64) -> Status {
        let before = self.state();
        self.manual = Some(Manual {
            from_ms: now_ms,
            until_ms,
        });
        self.settle(before, now_ms);
        self.status()
    }

    /// Ends a manual pause; the state is again what the rules decide.
    pub fn resume(&mut self, now_ms: u64) -> Status {
        let before = self.state();
        self.manual = None;
        self.settle(before, now_ms);
        self.status()
    }

    /// Lets time pass without a sample: ends a manual pause whose deadline came.
    pub fn tick(&mut self, now_ms: u64) -> Option<Status> {
        let before = self.state();
        self.expire_manual(now_ms);
        self.settle(before, now_ms)
    }

    pub fn status(&self) -> Status {
        let reason = match self.manual {
            Some(m) => manual_reason(m),
            None => self.level_reason.clone(),
        };
        Status {
            state: self.state(),
            reason,
            mode: self.rules.mode,
            since_ms: self.since_ms,
            paused_until_ms: self.manual.and_then(|m| m.until_ms),
            manual: self.manual.is_some(),
            sample: self.sample.clone(),
            max_cpu_percent: self.rules.max_cpu_percent,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The state in force: a manual pause wins over the level.
    pub fn state(&self) -> State {
        if self.manual.is_some() {
            State::Paused
        } else {
            self.level
        }
    }

    /// The manual pause's deadline, for a driver that wants to wake up for it.
    pub fn paused_until_ms(&self) -> Option<u64> {
        self.manual.and_then(|m| m.until_ms)
    }

    fn expire_manual(&mut self, now_ms: u64) {
        if let Some(Manual {
            until_ms: Some(until),
            ..
        }) = self.manual
            && now_ms >= until
        {
            self.manual = None;
        }
    }

    fn track_calm(&mut self, target: State, now_ms: u64) {
        self.calm_active_since = calm(self.calm_active_since, target <= State::Active, now_ms);
        self.calm_throttled_since = calm(
            self.calm_throttled_since,
            target <= State::Throttled,
            now_ms,
        );
    }

    /// Moves the level towards `target`: down at once, up only as far as the calm
    /// clocks allow.
    fn step(&mut self, target: State, reason: String, now_ms: u64) {
        if target >= self.level {
            self.level = target;
            self.level_reason = reason;
            return;
        }
        let next = self.allowed_up(now_ms);
        if next == target {
            self.level = target;
            self.level_reason = reason;
        } else {
            self.level = next;
            self.level_reason = self.held_reason(next, &reason, now_ms);
        }
    }

    /// The best state the calm clocks allow now (never worse than the level).
    fn allowed_up(&self, now_ms: u64) -> State {
        let wait = self.rules.resume_after_s.saturating_mul(1000);
        let long_enough =
            |since: Option<u64>| since.is_some_and(|s| now_ms.saturating_sub(s) >= wait);
        if long_enough(self.calm_active_since) {
            State::Active
        } else if long_enough(self.calm_throttled_since) {
            State::Throttled.min(self.level)
        } else {
            self.level
        }
    }

    fn held_reason(&self, held: State, target_reason: &str, now_ms: u64) -> String {
        let since = if held == State::Paused {
            self.calm_throttled_since
        } else {
            self.calm_active_since
        };
        let calm_s = since.map_or(0, |s| now_ms.saturating_sub(s) / 1000);
        format!(
            "{held} until the load stays lower for {} s ({calm_s} s so far): {target_reason}",
            self.rules.resume_after_s
        )
    }

    /// Records a change of the state in force; the status when there was one.
    fn settle(&mut self, before: State, now_ms: u64) -> Option<Status> {
        if self.state() == before {
            return None;
        }
        self.since_ms = now_ms;
        Some(self.status())
    }
}

fn calm(since: Option<u64>, allowed: bool, now_ms: u64) -> Option<u64> {
    if allowed {
        Some(since.unwrap_or(now_ms))
    } else {
        None
    }
}

/// What the rules call for on this one sample, with hysteresis left out.
fn verdict(rules: &Rules, s: &Sample) -> (State, String) {
    let pauses = pause_causes(rules, s);
    if !pauses.is_empty() {
        return (State::Paused, pauses.join("; "));
    }
    let cpu = s.other_cpu_percent;
    if cpu > rules.throttle_above_percent {
        let why = format!(
            "other processes use {cpu:.0} % of the CPU (throttle above {:.0} %)",
            rules.throttle_above_percent
        );
        return (State::Throttled, why);
    }
    (
        State::Active,
        format!("other processes use {cpu:.0} % of the CPU"),
    )
}

fn pause_causes(rules: &Rules, s: &Sample) -> Vec<String> {
    let mut causes = Vec::new();
    if s.other_cpu_percent > rules.pause_above_percent {
        causes.push(format!(
            "other processes use {:.0} % of the CPU (pause above {:.0} %)",
            s.other_cpu_percent, rules.pause_above_percent
        ));
    }
    if let Some(mib) = s.available_memory_mib
        && mib < rules.min_available_memory_mib
    {
        causes.push(format!(
            "{mib} MiB of memory available (pause below {} MiB)",
            rules.min_available_memory_mib
        ));
    }
    if rules.pause_on_battery && s.on_battery == Some(true) {
        causes.push("running on battery".into());
    }
    // A platform that cannot tell idleness leaves the rule out rather than pausing
    // forever: an owner who set it on such a machine still gets the other rules.
    if let (Some(minutes), Some(idle)) = (rules.idle_minutes, s.user_idle_s)
        && idle < minutes.saturating_mul(60)
    {
        causes.push(format!(
            "the computer is in use (idle {idle} s; run after {minutes} idle minutes)"
        ));
    }
    causes
}

fn fixed_reason(mode: Mode, state: State) -> String {
    match mode {
        Mode::Always | Mode::Never => format!("mode {mode}"),
        Mode::Auto => format!("fixed {state}"),
    }
}

fn manual_reason(m: Manual) -> String {
    match m.until_ms {
        None => "paused by the owner until resumed".into(),
        Some(until) => format!(
            "paused by the owner for {}",
            duration_words(until.saturating_sub(m.from_ms))
        ),
    }
}

fn duration_words(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s.div_ceil(60)),
        _ => format!("{} h", s.div_ceil(3600)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quiet machine: nothing else running, plenty of memory, on mains, user away.
    fn quiet(at_s: u64) -> Sample {
        Sample {
            at_ms: at_s * 1000,
            other_cpu_percent: 5.0,
            own_cpu_percent: 40.0,
            available_memory_mib: Some(8192),
            on_battery: Some(false),
            user_idle_s: Some(3600),
        }
    }

    fn cpu(at_s: u64, other: f32) -> Sample {
        Sample {
            other_cpu_percent: other,
            ..quiet(at_s)
        }
    }

    /// Feeds samples in order; returns the state after each and the transitions seen.
    fn replay(engine: &mut Engine, samples: &[Sample]) -> (Vec<State>, usize) {
        let mut states = Vec::new();
        let mut changes = 0;
        for s in samples {
            if engine.observe(s.clone()).is_some() {
                changes += 1;
            }
            states.push(engine.state());
        }
        (states, changes)
    }

    fn engine() -> Engine {
        Engine::new(Rules::default(), 0)
    }

    #[test]
    fn defaults_validate_and_starts_active() {
        Rules::default().validate().unwrap();
        let e = engine();
        assert_eq!(e.state(), State::Active);
        assert_eq!(e.status().sample, None);
    }

    #[test]
    fn pauses_within_one_sample_above_the_pause_threshold() {
        let mut e = engine();
        let status = e.observe(cpu(2, 83.0)).expect("a change");
        assert_eq!(status.state, State::Paused);
        assert_eq!(status.since_ms, 2000);
        assert_eq!(
            status.reason,
            "other processes use 83 % of the CPU (pause above 50 %)"
        );
        assert_eq!(status.sample.unwrap().other_cpu_percent, 83.0);
    }

    #[test]
    fn throttles_between_the_thresholds() {
        let mut e = engine();
        let (states, _) = replay(&mut e, &[cpu(2, 10.0), cpu(4, 30.0), cpu(6, 49.0)]);
        assert_eq!(states, [State::Active, State::Throttled, State::Throttled]);
        assert!(e.status().reason.contains("throttle above 25 %"));
    }

    #[test]
    fn steps_back_up_only_after_resume_after_s_below() {
        let mut e = engine();
        // Paused at 2 s; quiet from 4 s on, every 2 s. Resume after 30 s means the
        // first sample at least 30 s after the first quiet one: 34 s.
        let mut samples = vec![cpu(2, 90.0)];
        samples.extend((2..=20).map(|i| quiet(i * 2)));
        let (states, changes) = replay(&mut e, &samples);
        let first_active = states.iter().position(|s| *s == State::Active).unwrap();
        assert_eq!(samples[first_active].at_ms, 34_000);
        assert!(states[..first_active].iter().all(|s| *s == State::Paused));
        assert_eq!(changes, 2);
        assert_eq!(e.status().since_ms, 34_000);
    }

    #[test]
    fn steps_up_through_throttled_when_only_that_is_calm_long_enough() {
        let mut e = engine();
        // Paused, then 30 % (throttle band) for 30 s, then quiet: throttled first.
        let mut samples = vec![cpu(0, 90.0)];
        samples.extend((1..=16).map(|i| cpu(i * 2, 30.0)));
        let (states, _) = replay(&mut e, &samples);
        assert_eq!(states[15], State::Paused, "28 s after: still held");
        assert_eq!(
            states[16],
            State::Throttled,
            "30 s after the first 30 % sample"
        );
        // Now quiet: held throttled for 30 s more, then active.
        let (states, _) = replay(&mut e, &(17..=33).map(|i| quiet(i * 2)).collect::<Vec<_>>());
        assert_eq!(states[14], State::Throttled);
        assert_eq!(states[15], State::Active);
    }

    #[test]
    fn a_quiet_sample_while_paused_says_what_it_waits_for() {
        let mut e = engine();
        replay(&mut e, &[cpu(0, 90.0), quiet(2), quiet(12)]);
        assert_eq!(e.state(), State::Paused);
        let reason = e.status().reason;
        assert!(reason.contains("30 s (10 s so far)"), "{reason}");
    }

    #[test]
    fn a_load_oscillating_around_the_pause_threshold_does_not_flap() {
        // 55/45/55/45 … every 2 s for two minutes, pause at 50.
        let samples: Vec<Sample> = (0..60)
            .map(|i| cpu(i * 2, if i % 2 == 0 { 55.0 } else { 45.0 }))
            .collect();
        let mut e = engine();
        let (states, changes) = replay(&mut e, &samples);
        assert_eq!(changes, 1, "{states:?}");
        assert!(states.iter().all(|s| *s == State::Paused));

        // Starting on the low side, the node may step down twice (active → throttled
        // at 45, paused at 55) and then must hold.
        let mut e = engine();
        let (_, changes) = replay(&mut e, &samples[1..]);
        assert!(changes <= 2, "{changes}");
        assert_eq!(e.state(), State::Paused);
    }

    #[test]
    fn low_memory_pauses() {
        let mut e = engine();
        let low = Sample {
            available_memory_mib: Some(300),
            ..quiet(2)
        };
        let status = e.observe(low).unwrap();
        assert_eq!(status.state, State::Paused);
        assert_eq!(
            status.reason,
            "300 MiB of memory available (pause below 512 MiB)"
        );
        // Unknown memory is not low memory.
        let mut e = engine();
        let unknown = Sample {
            available_memory_mib: None,
            ..quiet(2)
        };
        assert_eq!(e.observe(unknown), None);
    }

    #[test]
    fn battery_pauses_only_when_the_rule_says_so() {
        let on_battery = Sample {
            on_battery: Some(true),
            ..quiet(2)
        };
        let mut e = engine();
        assert_eq!(
            e.observe(on_battery.clone()).unwrap().reason,
            "running on battery"
        );

        let rules = Rules {
            pause_on_battery: false,
            ..Rules::default()
        };
        let mut e = Engine::new(rules, 0);
        assert_eq!(e.observe(on_battery), None);
        assert_eq!(e.state(), State::Active);
    }

    #[test]
    fn idle_minutes_pauses_while_the_user_is_active() {
        let rules = Rules {
            idle_minutes: Some(5),
            resume_after_s: 0,
            ..Rules::default()
        };
        let mut e = Engine::new(rules, 0);
        let user = |at_s, idle_s| Sample {
            user_idle_s: Some(idle_s),
            ..quiet(at_s)
        };
        let (states, _) = replay(
            &mut e,
            &[
                user(2, 10),
                user(4, 299),
                user(6, 300),
                user(8, 3),
                user(10, 900),
            ],
        );
        use State::*;
        assert_eq!(states, [Paused, Paused, Active, Paused, Active]);
        // A platform that cannot tell leaves the rule out.
        let mut e = Engine::new(e.rules().clone(), 0);
        let unknown = Sample {
            user_idle_s: None,
            ..quiet(2)
        };
        assert_eq!(e.observe(unknown), None);
    }

    #[test]
    fn modes_always_and_never_ignore_samples() {
        let storm = [
            cpu(2, 99.0),
            Sample {
                on_battery: Some(true),
                available_memory_mib: Some(1),
                ..cpu(4, 99.0)
            },
            quiet(6),
        ];
        for (mode, state) in [(Mode::Always, State::Active), (Mode::Never, State::Paused)] {
            let rules = Rules {
                mode,
                ..Rules::default()
            };
            let mut e = Engine::new(rules, 0);
            let (states, changes) = replay(&mut e, &storm);
            assert_eq!(changes, 0, "{mode}");
            assert!(states.iter().all(|s| *s == state), "{mode}: {states:?}");
            let status = e.status();
            assert_eq!(status.reason, format!("mode {mode}"));
            assert_eq!(status.mode, mode);
            // The samples are still shown.
            assert_eq!(status.sample.unwrap().at_ms, 6000);
        }
    }

    #[test]
    fn a_manual_pause_with_a_deadline_expires_via_tick() {
        let mut e = engine();
        let status = e.pause(Some(60_000), 10_000);
        assert_eq!(status.state, State::Paused);
        assert!(status.manual);
        assert_eq!(status.paused_until_ms, Some(60_000));
        assert_eq!(status.reason, "paused by the owner for 50 s");
        assert_eq!(status.since_ms, 10_000);
        // Quiet samples do not end it; the deadline does.
        assert_eq!(e.observe(quiet(20)), None);
        assert_eq!(e.tick(59_999), None);
        let status = e.tick(60_000).expect("the deadline ends the pause");
        assert_eq!(status.state, State::Active);
        assert!(!status.manual);
        assert_eq!(status.paused_until_ms, None);
        assert_eq!(status.since_ms, 60_000);
        assert_eq!(e.tick(70_000), None);
    }

    #[test]
    fn a_sample_past_the_deadline_ends_the_pause_too() {
        let mut e = engine();
        e.pause(Some(5_000), 0);
        assert_eq!(e.observe(quiet(6)).unwrap().state, State::Active);
    }

    #[test]
    fn resume_ends_a_manual_pause_and_the_rules_decide_again() {
        let mut e = engine();
        let status = e.pause(None, 1_000);
        assert_eq!(status.reason, "paused by the owner until resumed");
        assert_eq!(e.tick(u64::MAX), None, "no deadline: only resume ends it");
        // The rules kept following the samples underneath.
        e.observe(cpu(2, 30.0));
        let status = e.resume(3_000);
        assert_eq!(status.state, State::Throttled);
        assert!(!status.manual);
        assert_eq!(status.since_ms, 3_000);
        // Resume without a pause changes nothing.
        assert_eq!(e.resume(4_000).since_ms, 3_000);
    }

    #[test]
    fn a_manual_pause_holds_even_in_mode_always() {
        let rules = Rules {
            mode: Mode::Always,
            ..Rules::default()
        };
        let mut e = Engine::new(rules, 0);
        assert_eq!(e.pause(None, 1).state, State::Paused);
        assert_eq!(e.resume(2).state, State::Active);
    }

    #[test]
    fn several_causes_are_all_named() {
        let mut e = engine();
        let s = Sample {
            on_battery: Some(true),
            ..cpu(2, 70.0)
        };
        let reason = e.observe(s).unwrap().reason;
        assert_eq!(
            reason,
            "other processes use 70 % of the CPU (pause above 50 %); running on battery"
        );
    }

    #[test]
    fn validate_names_the_key() {
        let bad = |r: Rules| r.validate().unwrap_err();
        let msg = bad(Rules {
            pause_above_percent: 150.0,
            ..Rules::default()
        });
        assert_eq!(
            msg,
            "governor.pause-above-percent must be in (0, 100], got 150"
        );
        assert!(
            bad(Rules {
                throttle_above_percent: f32::NAN,
                ..Rules::default()
            })
            .starts_with("governor.throttle-above-percent")
        );
        assert!(
            bad(Rules {
                throttle_above_percent: 60.0,
                ..Rules::default()
            })
            .contains("must not exceed")
        );
        assert!(
            bad(Rules {
                max_cpu_percent: 0,
                ..Rules::default()
            })
            .starts_with("governor.max-cpu-percent")
        );
        assert!(
            bad(Rules {
                throttled_rounds: 0,
                ..Rules::default()
            })
            .starts_with("governor.throttled-rounds")
        );
        assert!(
            bad(Rules {
                sample_every_ms: 10,
                ..Rules::default()
            })
            .starts_with("governor.sample-every-ms")
        );
    }

    #[test]
    fn rules_read_from_a_kebab_case_table_with_defaults() {
        let rules: Rules =
            toml::from_str("mode = \"never\"\npause-above-percent = 80\nidle-minutes = 10\n")
                .unwrap();
        assert_eq!(rules.mode, Mode::Never);
        assert_eq!(rules.pause_above_percent, 80.0);
        assert_eq!(rules.idle_minutes, Some(10));
        assert_eq!(rules.resume_after_s, 30);
        let err = toml::from_str::<Rules>("pause-above = 80\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let back: Rules = toml::from_str(&toml::to_string(&rules).unwrap()).unwrap();
        assert_eq!(back, rules);
        let defaults: Rules = toml::from_str("").unwrap();
        assert_eq!(defaults, Rules::default());
    }

    #[test]
    fn modes_and_states_spell_lowercase() {
        for (m, s) in [
            (Mode::Auto, "auto"),
            (Mode::Always, "always"),
            (Mode::Never, "never"),
        ] {
            assert_eq!(m.to_string(), s);
            assert_eq!(s.parse::<Mode>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{s}\""));
            assert_eq!(<Mode as clap::ValueEnum>::from_str(s, false).unwrap(), m);
        }
        assert!(
            "sometimes"
                .parse::<Mode>()
                .unwrap_err()
                .contains("auto, always or never")
        );
        for (st, s) in [
            (State::Active, "active"),
            (State::Throttled, "throttled"),
            (State::Paused, "paused"),
        ] {
            assert_eq!(st.to_string(), s);
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{s}\""));
        }
    }

    #[test]
    fn status_serializes_for_the_node_endpoint() {
        let mut e = engine();
        e.observe(cpu(2, 83.0));
        let v = serde_json::to_value(e.status()).unwrap();
        assert_eq!(v["state"], "paused");
        assert_eq!(v["mode"], "auto");
        assert_eq!(v["manual"], false);
        assert_eq!(v["sample"]["other_cpu_percent"], 83.0);
        assert_eq!(v["max_cpu_percent"], 100);
    }
}
