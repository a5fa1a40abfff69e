//! The sandbox: one wasmtime engine for every plugin, and a fresh, locked-down instance
//! per plugin per round.
//!
//! Why these choices:
//! - **Epoch interruption**, not fuel: a ticker thread bumps the engine's epoch every
//!   [`TICK`]; each call sets a deadline in ticks, so an infinite loop traps at its wall-clock
//!   budget at a cost of a few percent, where fuel costs 2–3×.
//! - **A resource limiter per store** caps linear memory; `memory.copy` and friends check
//!   the epoch only once, so time alone would not bound a memory bomb.
//! - **The pooling allocator** when the machine has the address space for it (probed at
//!   start, on-demand allocation otherwise): instantiation is then a few microseconds of
//!   slot reuse instead of fresh mmaps, which is what makes a fresh instance per round cheap.
//! - **`concurrency_support(false)`**: we use no component-model async, and leaving it on
//!   makes every host↔guest call several times slower.
//! - **A fresh instance per round**: no user's prompt can leak into another user's answer
//!   through guest memory. After a fault the instance is dropped (a trapped component
//!   instance must not be re-entered).

pub mod imports;
pub mod limits;
mod state;

pub use state::{LogLevel, LogLine, PluginState};

use crate::sandbox::limits::{CallKind, LimitPolicy, Limits};
use crate::tensor::TensorState;
use imports::ImportPolicy;
use state::{LogSink, MemoryLimiter};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// The generated bindings, re-exported where they were before they moved to their own
/// leaf module (see [`crate::bindings`] for why).
pub use crate::bindings;

pub use bindings::apiary::plugin::types::{
    Judgment, Manifest as WitManifest, Message, PluginError as WitPluginError, Request,
    Response as WitAnswer,
};
use bindings::{Specialist, SpecialistPre, v1_1};

mod legacy;

/// Epoch tick: the granularity of call budgets.
pub const TICK: Duration = Duration::from_millis(5);

/// Instances the pooling allocator keeps slots for. A local round holds one instance per
/// plugin; parallel rounds and the benches need a few more.
const POOLED_INSTANCES: u32 = 128;

/// Operator-level sandbox settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub limits: LimitPolicy,
    pub imports: ImportPolicy,
    /// Use the pooling allocator if the machine can reserve its address space.
    pub pooling: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            limits: LimitPolicy::default(),
            imports: ImportPolicy::contract(),
            pooling: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot set up the WebAssembly engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error("cannot register the host interfaces: {0:#}")]
    Linker(wasmtime::Error),
}

/// The engine, the linker with exactly the allowed host interfaces, and the epoch ticker.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<PluginState>,
    config: SandboxConfig,
    pooling: bool,
    ticker: Option<Ticker>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn engine_config(pooling: Option<&Limits>) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.concurrency_support(false);
    c.max_wasm_stack(1 << 20);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if let Some(ceilings) = pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOLED_INSTANCES)
            .total_core_instances(POOLED_INSTANCES * 8)
            .total_memories(POOLED_INSTANCES * 2)
            .total_tables(POOLED_INSTANCES * 8)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(16)
            .max_memory_size(ceilings.memory_bytes())
            .max_unused_warm_slots(16);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// The world's imports, each given only the part of the store it serves: `types` and
/// `log` the plugin state, `tensor` its [`TensorState`]. One call per interface the
/// `specialist` world imports; an import left out here fails every plugin that uses it
/// at load, naming it.
fn link_contract(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    use bindings::apiary::plugin::{log, types};
    types::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    log::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    crate::tensor::add_to_linker(linker, |s: &mut PluginState| &mut s.tensors)
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let (engine, pooling) = if config.pooling {
            match Engine::new(&engine_config(Some(&config.limits.ceilings))) {
                Ok(e) => (e, true),
                Err(err) => {
                    tracing::warn!(
                        "pooling allocator unavailable ({err:#}); using on-demand instance allocation"
                    );
                    (
                        Engine::new(&engine_config(None)).map_err(SandboxError::Engine)?,
                        false,
                    )
                }
            }
        } else {
            (
                Engine::new(&engine_config(None)).map_err(SandboxError::Engine)?,
                false,
            )
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(SandboxError::Linker)?;
        link_contract(&mut linker).map_err(SandboxError::Linker)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("apiary-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| SandboxError::Engine(e.into()))?
        };
        Ok(Sandbox {
            engine,
            linker,
            config,
            pooling,
            ticker: Some(Ticker {
                stop,
                thread: Some(thread),
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Link a component and find its exports: the current contract's, else 1.1's (a 1.1
    /// or 1.0 plugin lacks `judge`, so the first lookup fails on it).
    pub(crate) fn pre(&self, component: &wasmtime::component::Component) -> wasmtime::Result<Pre> {
        let pre = self.linker.instantiate_pre(component)?;
        match SpecialistPre::new(pre.clone()) {
            Ok(current) => Ok(Pre::Current(current)),
            Err(current) => v1_1::SpecialistPre::new(pre)
                .map(Pre::V1_1)
                .map_err(|_| current),
        }
    }

    /// Whether the epoch ticker is running (it stops only when the sandbox is dropped).
    pub fn ticking(&self) -> bool {
        self.ticker.is_some()
    }
}

/// Why a call into a plugin did not produce a usable result. Everything but
/// [`CallError::Declined`] is a fault of the plugin, counted towards quarantine.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CallError {
    #[error("{call} timed out: exceeded its {budget_ms} ms budget")]
    Timeout { call: CallKind, budget_ms: u64 },
    #[error("{call} exceeded the memory limit of {limit_mib} MiB")]
    MemoryLimit { call: CallKind, limit_mib: u64 },
    #[error("{call} overflowed the stack")]
    StackOverflow { call: CallKind },
    #[error("{call} panicked: {message}")]
    Panic { call: CallKind, message: String },
    #[error("{call} wrote more than {limit_kib} KiB to {stream}")]
    OutputFlood {
        call: CallKind,
        stream: String,
        limit_kib: u64,
    },
    #[error("answer of {size} bytes is larger than the {limit_kib} KiB limit")]
    AnswerTooLarge { size: usize, limit_kib: u64 },
    #[error("{call} trapped: {message}")]
    Trap { call: CallKind, message: String },
    /// The host itself panicked while serving this call (a host bug the plugin reached).
    /// Caught at the boundary, so it costs this plugin this call and nothing more.
    #[error("{call} made the host fail ({message}); the plugin is charged with a fault")]
    HostPanic { call: CallKind, message: String },
    #[error("cannot start the plugin: {message}")]
    Instantiate { message: String },
    #[error("skipped: this plugin's instance faulted earlier in the round")]
    Poisoned,
    #[error("declined: {0}")]
    Declined(String),
}

/// The text of a caught panic's payload, cut short.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".into());
    text.chars().take(200).collect()
}

impl CallError {
    /// Whether this outcome counts as a fault of the plugin (towards quarantine).
    pub fn is_fault(&self) -> bool {
        !matches!(self, CallError::Declined(_) | CallError::Poisoned)
    }
}

/// A linked plugin, ready to instantiate, by the contract whose exports it has.
pub enum Pre {
    Current(SpecialistPre<PluginState>),
    V1_1(v1_1::SpecialistPre<PluginState>),
}

/// A live instance's exports.
enum Exports {
    Current(Specialist),
    V1_1(v1_1::Specialist),
}

/// What the host needs to know about the plugin it is instantiating.
pub struct InstanceSpec<'a> {
    pub name: &'a str,
    pub pre: &'a Pre,
    pub limits: Limits,
    pub weights: Option<&'a Path>,
    pub seed: u64,
}

/// A live instance of one plugin for one round.
pub struct Session {
    store: Store<PluginState>,
    bindings: Exports,
    limits: Limits,
    poisoned: bool,
    last: Option<CallUsage>,
    corrections: Vec<Correction>,
}

/// What one call into the plugin spent: time, and memory at its worst. Rounds ignore it;
/// `apiary plugins check` reports it against the plugin's limits.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CallUsage {
    pub call: CallKind,
    /// Wall-clock time of the guest call, host kernels included.
    pub elapsed: Duration,
    /// Linear memory of the instance after the call. Linear memory never shrinks, so this
    /// is also the most the call had.
    pub memory_bytes: usize,
    /// The most host tensor memory the instance held during the call (mapped weights are
    /// not counted; nor is a kernel's scratch, which is reserved and freed inside it).
    pub tensor_peak_bytes: usize,
}

/// A value a plugin returned that the host corrected before using it (a NaN assess read
/// as 0, a preference past certainty clamped, option scores dropped). A round goes on
/// with the corrected value; `apiary plugins check` fails a plugin that needs any.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Correction {
    pub call: CallKind,
    pub what: String,
}

fn ticks(budget: Duration) -> u64 {
    (budget.as_micros() / TICK.as_micros()).max(1) as u64 + 1
}

impl Session {
    /// Instantiate a plugin with an empty WASI context: no env, no args, closed stdin,
    /// capped stdout/stderr, and its `weights/` folder (if any) read-only at `/weights`.
    pub fn new(sandbox: &Sandbox, spec: InstanceSpec<'_>) -> Result<Session, CallError> {
        let stdout = MemoryOutputPipe::new(spec.limits.output_bytes());
        let stderr = MemoryOutputPipe::new(spec.limits.output_bytes());
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .insecure_random_seed(u128::from(spec.seed));
        if let Some(weights) = spec.weights {
            // Re-checked here, not only at load: the folder may have changed since.
            let is_real_dir = std::fs::symlink_metadata(weights)
                .map(|m| m.file_type().is_dir())
                .unwrap_or(false);
            if !is_real_dir {
                return Err(CallError::Instantiate {
                    message: format!("{} is no longer a plain folder", weights.display()),
                });
            }
            wasi.preopened_dir(weights, "/weights", FsPerms::ReadOnly)
                .map_err(|e| CallError::Instantiate {
                    message: format!("cannot open {}: {e:#}", weights.display()),
                })?;
        }
        let state = PluginState {
            plugin: spec.name.to_string(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(&spec.limits),
            log: LogSink::new(spec.limits.log_lines as usize),
            stdout,
            stderr,
            tensors: TensorState::new(
                spec.limits.tensor_bytes(),
                spec.weights.map(Path::to_path_buf),
            ),
        };
        let mut store = Store::new(sandbox.engine(), state);
        store.limiter(|s| &mut s.limiter);
        let budget = spec.limits.budget(CallKind::Assess);
        store.set_epoch_deadline(ticks(budget));
        store.data_mut().tensors.deadline = Some(Instant::now() + budget);
        let instantiated =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match spec.pre {
                Pre::Current(pre) => pre.instantiate(&mut store).map(Exports::Current),
                Pre::V1_1(pre) => pre.instantiate(&mut store).map(Exports::V1_1),
            }))
            .map_err(|panic| CallError::HostPanic {
                call: CallKind::Describe,
                message: panic_message(&*panic),
            })?;
        let bindings = instantiated.map_err(|e| {
            match classify(e, CallKind::Describe, &spec.limits, store.data()) {
                CallError::Trap { message, .. } => CallError::Instantiate { message },
                other => other,
            }
        })?;
        Ok(Session {
            store,
            bindings,
            limits: spec.limits,
            poisoned: false,
            last: None,
            corrections: Vec::new(),
        })
    }

    fn call<R>(
        &mut self,
        kind: CallKind,
        f: impl FnOnce(&Exports, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        if self.poisoned {
            return Err(CallError::Poisoned);
        }
        let budget = self.limits.budget(kind);
        self.store.set_epoch_deadline(ticks(budget));
        let started = Instant::now();
        // Host kernels are not interrupted by epochs: they stop at this deadline instead.
        self.store.data_mut().tensors.deadline = Some(started + budget);
        self.store.data_mut().tensors.start_peak();
        // The last line of defence: a panic anywhere below (a host function, wasmtime)
        // unwinds to here and becomes this call's fault. The store is then never
        // re-entered (poisoned), so no state a panic interrupted is observed.
        let (bindings, store) = (&self.bindings, &mut self.store);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(bindings, store)));
        let state = self.store.data();
        self.last = Some(CallUsage {
            call: kind,
            elapsed: started.elapsed(),
            memory_bytes: state.limiter.allowed,
            tensor_peak_bytes: state.tensors.peak,
        });
        tracing::trace!(plugin = %state.plugin, %kind, elapsed = ?started.elapsed());
        match out {
            Ok(out) => out.map_err(|e| {
                self.poisoned = true;
                classify(e, kind, &self.limits, self.store.data())
            }),
            Err(panic) => {
                self.poisoned = true;
                Err(CallError::HostPanic {
                    call: kind,
                    message: panic_message(&*panic),
                })
            }
        }
    }

    pub fn describe(&mut self) -> Result<WitManifest, CallError> {
        self.call(CallKind::Describe, |b, s| match b {
            Exports::Current(b) => b.apiary_plugin_handler().call_describe(s),
            Exports::V1_1(b) => b
                .apiary_plugin_handler()
                .call_describe(s)
                .map(legacy::manifest),
        })
    }

    /// The plugin's expertise score, clamped to [0, 1] (NaN counts as 0).
    pub fn assess(&mut self, req: &Request) -> Result<f32, CallError> {
        let v = self.call(CallKind::Assess, |b, s| match b {
            Exports::Current(b) => b.apiary_plugin_handler().call_assess(s, req),
            Exports::V1_1(b) => b
                .apiary_plugin_handler()
                .call_assess(s, &legacy::request(req)),
        })?;
        let fixed = if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if fixed != v {
            self.correct(
                CallKind::Assess,
                format!("assess returned {v}, read as {fixed}"),
            );
        }
        Ok(fixed)
    }

    pub fn answer(&mut self, req: &Request) -> Result<WitAnswer, CallError> {
        let out = self.call(CallKind::Answer, |b, s| match b {
            Exports::Current(b) => b.apiary_plugin_handler().call_answer(s, req),
            Exports::V1_1(b) => b
                .apiary_plugin_handler()
                .call_answer(s, &legacy::request(req))
                .map(legacy::answer),
        })?;
        let mut answer = out.map_err(|e| CallError::Declined(plugin_error_text(&e)))?;
        // Option scores are pooled with other plugins': only a finite score per option
        // of this request can be, so anything else is dropped here, at the boundary.
        let fits = answer.option_scores.len() == req.choices.len()
            && answer.option_scores.iter().all(|s| s.is_finite());
        if !fits && !answer.option_scores.is_empty() {
            let what = format!(
                "{} option scores ({}) for {} options; dropped",
                answer.option_scores.len(),
                if answer.option_scores.iter().all(|s| s.is_finite()) {
                    "all numbers"
                } else {
                    "not all numbers"
                },
                req.choices.len()
            );
            self.correct(CallKind::Answer, what);
            answer.option_scores.clear();
        }
        if answer.text.len() > self.limits.answer_bytes() {
            // The instance is fine, but an oversized answer is the plugin's fault.
            return Err(CallError::AnswerTooLarge {
                size: answer.text.len(),
                limit_kib: self.limits.answer_kib,
            });
        }
        Ok(answer)
    }

    /// Judge two candidates. A 1.1 plugin's `compare` is asked instead, and its verdict
    /// read as a certainty (`first`, `second`) or no preference (`tie`, as 1.1 hosts
    /// counted it). A preference outside [0, 1] is clamped and NaN abstains, so what a
    /// plugin returns can never be read as more than certainty.
    pub fn judge(
        &mut self,
        req: &Request,
        first: &str,
        second: &str,
    ) -> Result<Judgment, CallError> {
        let out = self.call(CallKind::Compare, |b, s| match b {
            Exports::Current(b) => b.apiary_plugin_handler().call_judge(s, req, first, second),
            Exports::V1_1(b) => b
                .apiary_plugin_handler()
                .call_compare(s, &req.prompt, first, second)
                .map(legacy::judgment),
        })?;
        Ok(match out {
            Judgment::Prefer(p) if !(0.0..=1.0).contains(&p) => {
                let fixed = if p.is_nan() {
                    Judgment::Abstain
                } else {
                    Judgment::Prefer(p.clamp(0.0, 1.0))
                };
                let read = match fixed {
                    Judgment::Prefer(q) => format!("a preference of {q}"),
                    _ => "an abstention".into(),
                };
                let what = format!("judge preferred the first with {p}, read as {read}");
                self.correct(CallKind::Compare, what);
                fixed
            }
            other => other,
        })
    }

    fn correct(&mut self, call: CallKind, what: String) {
        // Bounded: a plugin cannot grow the host's memory through its mistakes.
        if self.corrections.len() < 64 {
            self.corrections.push(Correction { call, what });
        }
    }

    /// What the last call spent (none before the first call).
    pub fn last_call(&self) -> Option<CallUsage> {
        self.last
    }

    /// Every value the host has corrected in this instance's results so far.
    pub fn corrections(&self) -> &[Correction] {
        &self.corrections
    }

    /// Which contract the instance speaks: "1.2" or "1.1" (1.0 plugins have 1.1's exports).
    pub fn contract(&self) -> &'static str {
        match self.bindings {
            Exports::Current(_) => "1.2",
            Exports::V1_1(_) => "1.1",
        }
    }

    /// The plugin's log lines so far, and how many were dropped past the bound.
    pub fn logs(&self) -> (&[LogLine], u64) {
        let log = &self.store.data().log;
        (&log.lines, log.dropped)
    }

    /// Captured stdout, lossily decoded.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.store.data().stdout.contents()).into_owned()
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

pub fn plugin_error_text(e: &WitPluginError) -> String {
    match e {
        WitPluginError::Unsupported(m) => format!("unsupported: {m}"),
        WitPluginError::InvalidRequest(m) => format!("invalid request: {m}"),
        WitPluginError::Internal(m) => format!("internal error: {m}"),
    }
}

/// Turn a wasmtime error into what happened, in words an operator can act on.
fn classify(e: wasmtime::Error, call: CallKind, limits: &Limits, state: &PluginState) -> CallError {
    if state.limiter.exceeded.is_some() {
        return CallError::MemoryLimit {
            call,
            limit_mib: limits.memory_mib,
        };
    }
    let chain = format!("{e:#}");
    if chain.contains("write beyond capacity") {
        let stream = if state.stdout.contents().len() >= state.stderr.contents().len() {
            "stdout"
        } else {
            "stderr"
        };
        return CallError::OutputFlood {
            call,
            stream: stream.into(),
            limit_kib: limits.output_kib,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout {
            call,
            budget_ms: limits.budget(call).as_millis() as u64,
        },
        Some(Trap::StackOverflow) => CallError::StackOverflow { call },
        Some(Trap::UnreachableCodeReached) => {
            let tail = state.stderr_tail(600);
            let message = tail
                .split_once("panicked at")
                .map(|(_, rest)| {
                    // "src/lib.rs:1:2:\nmessage\nnote: ..." → the message line(s).
                    let after_loc = rest.split_once('\n').map(|x| x.1).unwrap_or(rest);
                    after_loc
                        .lines()
                        .take_while(|l| !l.starts_with("note:"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| "the plugin aborted (unreachable instruction)".into());
            // Rust's println! panics when the capped pipe refuses a write.
            for stream in ["stdout", "stderr"] {
                if message.contains(&format!("failed printing to {stream}")) {
                    return CallError::OutputFlood {
                        call,
                        stream: stream.into(),
                        limit_kib: limits.output_kib,
                    };
                }
            }
            CallError::Panic {
                call,
                message: message.trim().to_string(),
            }
        }
        Some(trap) => CallError::Trap {
            call,
            message: trap.to_string(),
        },
        None => CallError::Trap {
            call,
            message: chain,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_in_ticks_rounds_up() {
        assert_eq!(ticks(Duration::from_millis(0)), 2);
        assert_eq!(ticks(Duration::from_millis(5)), 2);
        assert_eq!(ticks(Duration::from_millis(1000)), 201);
    }

    #[test]
    fn sandbox_starts_with_or_without_pooling() {
        let s = Sandbox::new(SandboxConfig::default()).expect("sandbox");
        assert!(s.ticking());
        let s = Sandbox::new(SandboxConfig {
            pooling: false,
            ..Default::default()
        })
        .expect("sandbox");
        assert!(!s.pooling());
    }

    #[test]
    fn declines_are_not_faults() {
        assert!(!CallError::Declined("no".into()).is_fault());
        assert!(
            CallError::StackOverflow {
                call: CallKind::Answer
            }
            .is_fault()
        );
    }

    /// Each call's time and memory are measured (what `apiary plugins check` reports),
    /// and every value the host corrects is noted.
    #[test]
    fn each_call_reports_what_it_spent_and_what_was_corrected() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures");
        assert!(
            fixtures.is_dir(),
            "{} is missing: run scripts/build-plugins.sh first",
            fixtures.display()
        );
        let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
        let load = |name: &str| {
            crate::plugins::loader::load(&sandbox, None, &fixtures.join(name)).expect("loads")
        };
        let req = crate::round::local::request("hello", 1);

        let harmless = load("harmless");
        let mut s = harmless.session(&sandbox, 1).expect("instance");
        assert!(s.last_call().is_none());
        s.answer(&req).expect("answers");
        let u = s.last_call().expect("measured");
        assert_eq!(u.call, CallKind::Answer);
        assert!(u.memory_bytes > 0 && u.memory_bytes <= harmless.limits.memory_bytes());
        assert!(u.elapsed < harmless.limits.budget(CallKind::Answer));
        assert_eq!(u.tensor_peak_bytes, 0);
        assert!(s.corrections().is_empty());

        // A memory bomb's last call had all the memory it was allowed, and no more.
        let bomb = load("memory-bomb");
        let mut s = bomb.session(&sandbox, 1).expect("instance");
        assert!(matches!(s.answer(&req), Err(CallError::MemoryLimit { .. })));
        let (u, limit) = (s.last_call().expect("measured"), bomb.limits.memory_bytes());
        assert!(
            u.memory_bytes <= limit && u.memory_bytes > limit - (32 << 20),
            "{} of {limit}",
            u.memory_bytes
        );

        // A NaN preference is read as an abstention, and noted.
        let wild = load("wild-judge");
        let mut s = wild.session(&sandbox, 1).expect("instance");
        assert!(matches!(s.judge(&req, "abc", "x"), Ok(Judgment::Abstain)));
        assert_eq!(s.corrections().len(), 1, "{:?}", s.corrections());
        assert!(
            s.corrections()[0].what.contains("NaN"),
            "{:?}",
            s.corrections()
        );
    }

    /// A host panic inside a call (what a host bug reached by a plugin would do) ends as
    /// that call's fault, with the instance poisoned, and the process goes on.
    #[test]
    fn a_host_panic_inside_a_call_is_this_calls_fault() {
        let harmless =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures/harmless");
        assert!(
            harmless.is_dir(),
            "{} is missing: run scripts/build-plugins.sh first",
            harmless.display()
        );
        let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
        let plugin = crate::plugins::loader::load(&sandbox, None, &harmless).expect("loads");
        let mut session = plugin.session(&sandbox, 1).expect("instance");
        let out: Result<(), CallError> =
            session.call(CallKind::Answer, |_, _| panic!("injected host bug"));
        match out {
            Err(CallError::HostPanic { call, message }) => {
                assert_eq!(call, CallKind::Answer);
                assert!(message.contains("injected host bug"), "{message}");
            }
            other => panic!("expected a host panic fault, got {other:?}"),
        }
        assert!(session.is_poisoned());
        assert!(matches!(session.describe(), Err(CallError::Poisoned)));
        // A fresh instance of the same plugin works.
        let mut again = plugin.session(&sandbox, 2).expect("instance");
        assert!(again.describe().is_ok());
    }
}
