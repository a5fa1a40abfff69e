//! What each sandboxed instance owns on the host side: its WASI context (empty but for
//! captured stdio and the read-only `/weights`) and resource table, its memory limiter,
//! its bounded log and its tensor capability.

use super::limits::Limits;
use crate::bindings::apiary::plugin::{log, types};
use crate::tensor::TensorState;
use serde::Serialize;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Longest single log message kept; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 1024;

pub struct PluginState {
    pub(crate) plugin: String,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log: LogSink,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) tensors: TensorState,
}

impl PluginState {
    /// A state outside any wasm instance, for driving the host interfaces directly (the
    /// tensor fuzz target, tests): empty WASI context, default limits but `tensor_quota`.
    pub fn detached(name: &str, tensor_quota: usize, weights: Option<std::path::PathBuf>) -> Self {
        let limits = Limits::default();
        let stdout = MemoryOutputPipe::new(limits.output_bytes());
        let stderr = MemoryOutputPipe::new(limits.output_bytes());
        PluginState {
            plugin: name.to_string(),
            wasi: wasmtime_wasi::WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(&limits),
            log: LogSink::new(limits.log_lines as usize),
            stdout,
            stderr,
            tensors: TensorState::new(tensor_quota, weights),
        }
    }

    /// Start a host call that must end by `deadline` (kernels stop near it).
    pub fn set_call_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.tensors.deadline = deadline;
    }

    /// The instance's tensor capability, which implements the WIT `tensor` host traits:
    /// what a caller outside any wasm instance (the tensor fuzz target) drives directly.
    pub fn tensors_mut(&mut self) -> &mut TensorState {
        &mut self.tensors
    }

    /// Bytes of tensor memory this instance holds now.
    pub fn tensor_bytes_in_use(&self) -> usize {
        self.tensors.used
    }

    /// The last `n` bytes the plugin wrote to stderr, lossily decoded (e.g. a panic message).
    pub fn stderr_tail(&self, n: usize) -> String {
        let bytes = self.stderr.contents();
        let start = bytes.len().saturating_sub(n);
        String::from_utf8_lossy(&bytes[start..]).trim().to_string()
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for PluginState {}

impl log::Host for PluginState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.log.push(&self.plugin, level, message);
        Ok(())
    }
}

/// Memory and table growth limits for one instance. Growth past the limit traps, and the
/// limiter remembers it so the fault is reported as "memory limit" rather than a bare trap.
///
/// It also keeps the instance's linear memory size: wasmtime asks it before creating a
/// memory (from 0) and before every growth, and linear memory never shrinks, so the sum
/// of what it allowed is the instance's high-water mark (`apiary plugins check` reports
/// it per call against the plugin's limit).
pub struct MemoryLimiter {
    pub(crate) max_memory: usize,
    pub(crate) exceeded: Option<usize>,
    /// Bytes of linear memory allowed so far, over all of the instance's memories.
    pub(crate) allowed: usize,
}

/// Tables hold function references; no honest plugin needs more entries than this.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl MemoryLimiter {
    pub fn new(limits: &Limits) -> Self {
        MemoryLimiter {
            max_memory: limits.memory_bytes(),
            exceeded: None,
            allowed: 0,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.exceeded = Some(desired);
            wasmtime::bail!(
                "memory limit exceeded: tried to grow linear memory to {} MiB, limit {} MiB",
                desired >> 20,
                self.max_memory >> 20
            );
        }
        self.allowed = self.allowed.saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        8
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl From<log::Level> for LogLevel {
    fn from(l: log::Level) -> Self {
        match l {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// A plugin's log: forwarded to the host's tracing output tagged with the plugin's name,
/// and kept (bounded) for `--explain`.
#[derive(Debug, Default)]
pub struct LogSink {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) max_lines: usize,
    pub(crate) dropped: u64,
}

impl LogSink {
    pub fn new(max_lines: usize) -> Self {
        LogSink {
            lines: Vec::new(),
            max_lines,
            dropped: 0,
        }
    }

    fn push(&mut self, plugin: &str, level: log::Level, mut message: String) {
        if self.lines.len() >= self.max_lines {
            self.dropped += 1;
            return;
        }
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let level = LogLevel::from(level);
        match level {
            LogLevel::Trace => tracing::trace!(target: "apiary::plugin", plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "apiary::plugin", plugin, "{message}"),
            LogLevel::Info => tracing::info!(target: "apiary::plugin", plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "apiary::plugin", plugin, "{message}"),
            LogLevel::Error => tracing::error!(target: "apiary::plugin", plugin, "{message}"),
        }
        self.lines.push(LogLine { level, message });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_bounded() {
        let mut sink = LogSink::new(3);
        for i in 0..10 {
            sink.push("p", log::Level::Info, format!("line {i}"));
        }
        assert_eq!(sink.lines.len(), 3);
        assert_eq!(sink.dropped, 7);
        sink.max_lines = 10;
        sink.push("p", log::Level::Warn, "é".repeat(2000));
        let last = sink.lines.last().unwrap();
        assert!(last.message.len() <= MAX_LOG_MESSAGE + '…'.len_utf8());
    }

    #[test]
    fn memory_growth_past_limit_is_refused() {
        let mut l = MemoryLimiter::new(&Limits {
            memory_mib: 1,
            ..Limits::default()
        });
        assert!(l.memory_growing(0, 512 << 10, None).unwrap());
        assert!(l.memory_growing(0, 2 << 20, None).is_err());
        assert_eq!(l.exceeded, Some(2 << 20));
    }

    #[test]
    fn linear_memory_in_use_is_the_sum_of_what_was_allowed() {
        let mut l = MemoryLimiter::new(&Limits {
            memory_mib: 4,
            ..Limits::default()
        });
        // Two memories created, then the first grows; a refused growth adds nothing.
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert!(l.memory_growing(0, 64 << 10, None).unwrap());
        assert!(l.memory_growing(1 << 20, 3 << 20, None).unwrap());
        assert!(l.memory_growing(3 << 20, 8 << 20, None).is_err());
        assert_eq!(l.allowed, (3 << 20) + (64 << 10));
    }
}
