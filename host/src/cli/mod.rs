//! The commands of the `apiary` binary, one file each (the layout of wasmtime's
//! `src/commands/`).
//!
//! Why the split: `main.rs` had grown to a thousand lines in which every command's flags,
//! logic and printing sat side by side, so changing what one command prints meant reading
//! all of them. Now each file holds one command: its flags (a clap `Args` struct), what it
//! does (`run`) and the printing only it uses. This module keeps what the commands share:
//! the operator's sandbox ceilings, opening a plugins folder and a ledger, the async
//! runtime, the default data folder, the error type and the exit codes.
//!
//! Errors are [`CliError`]s. The library's own error text goes inside, and the context
//! (which file, which flag to pass instead) is added here at the edge, where it is known
//! what the user typed. `main` prints `error: {message}` and exits with
//! [`CliError::exit_code`].

mod ask;
mod eval;
mod plugins;
mod rounds;
mod run;
mod sim;

use apiary::ledger::{Ledger, NodeKey};
use apiary::plugins::{CompileCache, Registry};
use apiary::sandbox::limits::{LimitPolicy, Limits};
use apiary::sandbox::{Sandbox, SandboxConfig};
use clap::{Args, Subcommand};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The exit codes of `apiary`. Scripts branch on them, so the values never change; they
/// are listed in `apiary --help` (see [`exit_codes_help`]).
pub mod exit {
    pub const SUCCESS: u8 = 0;
    /// Any [`super::CliError`]: the message on stderr says what failed.
    pub const ERROR: u8 = 1;
    /// `ask` ran its round but no plugin could answer.
    pub const NO_ANSWER: u8 = 2;
    /// clap's own code for a command line it cannot parse; the same value as
    /// [`NO_ANSWER`], which predates this table.
    pub const USAGE: u8 = 2;
    /// `plugins audit`: the plugin would be refused.
    pub const AUDIT_REFUSED: u8 = 3;
    /// `rounds verify`: a signature or a recomputed result does not match the transcript.
    pub const VERIFY_FAILED: u8 = 4;
}

/// Every exit code with what it means, in the order `--help` lists them.
pub const EXIT_CODES: &[(u8, &str)] = &[
    (
        exit::SUCCESS,
        "success (`rounds verify`: the transcript holds; `plugins audit`: the plugin loads)",
    ),
    (
        exit::ERROR,
        "an error; the message on stderr says what failed and what to do",
    ),
    (
        exit::NO_ANSWER,
        "`ask`: no plugin could answer the question",
    ),
    (
        exit::USAGE,
        "usage error: an unknown flag, a missing or invalid argument",
    ),
    (
        exit::AUDIT_REFUSED,
        "`plugins audit`: the plugin would be refused",
    ),
    (
        exit::VERIFY_FAILED,
        "`rounds verify`: a signature or a recomputed result does not match",
    ),
];

/// The `Exit codes:` section of `apiary --help`, built from [`EXIT_CODES`] so the help
/// cannot drift from the values the commands return.
pub fn exit_codes_help() -> String {
    let mut text = String::from("Exit codes:");
    for (code, meaning) in EXIT_CODES {
        text.push_str(&format!("\n  {code}  {meaning}"));
    }
    text
}

#[derive(Subcommand)]
pub enum Command {
    /// Ask a question: a local round among the plugins in a folder.
    Ask(ask::AskCommand),
    /// Score the plugins, majority vote, the swarm and the oracle on questions with known
    /// answers (JSON lines; scripts/fetch-datasets.py makes them).
    Eval(eval::EvalCommand),
    /// Run a swarm node: load the plugins, join the swarm, serve the HTTP API.
    Run(run::RunCommand),
    /// Simulate a swarm of N nodes in this process (in-memory libp2p transport,
    /// simulated experts) and report per-round results and accuracy.
    Sim(sim::SimCommand),
    /// Rounds recorded in the ledger.
    Rounds(rounds::RoundsCommand),
    /// Inspect plugins.
    Plugins(plugins::PluginsCommand),
}

impl Command {
    pub fn run(self, sandbox: &SandboxArgs) -> Result<ExitCode, CliError> {
        match self {
            Command::Ask(c) => c.run(sandbox),
            Command::Eval(c) => c.run(sandbox),
            Command::Run(c) => c.run(sandbox),
            Command::Sim(c) => c.run(),
            Command::Rounds(c) => c.run(),
            Command::Plugins(c) => c.run(sandbox),
        }
    }
}

/// Why a command failed. Each variant is one part of the system, so the code that handles
/// a failure can tell a missing plugins folder from an unreachable node; the text is the
/// full message the user reads, context included.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments ask for something that cannot be done as given.
    #[error("{0}")]
    Usage(String),
    /// A file named on the command line cannot be read or parsed (datasets).
    #[error("{0}")]
    Input(String),
    /// The sandbox cannot start: tensor backend, engine, linker.
    #[error("{0}")]
    Sandbox(String),
    /// The plugins folder: missing, unreadable, empty, not watchable.
    #[error("{0}")]
    Plugins(String),
    /// The node key or the SQLite ledger in the data folder.
    #[error("{0}")]
    Ledger(String),
    /// A swarm node: starting one, serving its HTTP API, or talking to one (`ask --node`).
    #[error("{0}")]
    Node(String),
    /// A round (local, evaluation or simulated) could not run.
    #[error("{0}")]
    Round(String),
    /// The process itself: the async runtime.
    #[error("{0}")]
    Runtime(String),
    /// A report could not be written as JSON.
    #[error("{0}")]
    Output(String),
}

impl CliError {
    /// Every error exits with [`exit::ERROR`]: that is what scripts written against
    /// earlier versions test for; the variant is for the code, the message for the user.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Usage(_)
            | CliError::Input(_)
            | CliError::Sandbox(_)
            | CliError::Plugins(_)
            | CliError::Ledger(_)
            | CliError::Node(_)
            | CliError::Round(_)
            | CliError::Runtime(_)
            | CliError::Output(_) => exit::ERROR,
        })
    }

    // Constructors that take any error, for `map_err(CliError::ledger)`.

    pub fn sandbox(e: impl fmt::Display) -> Self {
        CliError::Sandbox(e.to_string())
    }

    pub fn ledger(e: impl fmt::Display) -> Self {
        CliError::Ledger(e.to_string())
    }

    pub fn node(e: impl fmt::Display) -> Self {
        CliError::Node(e.to_string())
    }

    pub fn round(e: impl fmt::Display) -> Self {
        CliError::Round(e.to_string())
    }

    pub fn output(e: impl fmt::Display) -> Self {
        CliError::Output(e.to_string())
    }
}

/// Operator limits: ceilings no plugin can exceed, whatever its plugin.toml asks.
#[derive(Args, Clone)]
pub struct SandboxArgs {
    /// Folder for precompiled plugin code (host-only). Default: ~/.cache/apiary/compiled.
    #[arg(long, global = true, env = "APIARY_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile plugins every time instead of using the cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Ceiling on linear memory per plugin instance, MiB.
    #[arg(long, global = true)]
    max_memory_mib: Option<u64>,
    /// Ceiling on one `answer` call, milliseconds.
    #[arg(long, global = true)]
    max_answer_ms: Option<u64>,
    /// Ceiling on one `compare` call, milliseconds.
    #[arg(long, global = true)]
    max_compare_ms: Option<u64>,
    /// Ceiling on one `assess` call, milliseconds.
    #[arg(long, global = true)]
    max_assess_ms: Option<u64>,
    /// Tensor kernels: `auto` (a hardware GPU through wgpu if there is one, else the CPU),
    /// `cpu`, or `wgpu` (forced; accepts a software adapter such as lavapipe).
    #[arg(
        long,
        global = true,
        env = "APIARY_TENSOR_BACKEND",
        default_value = "auto"
    )]
    tensor_backend: apiary::tensor::backend::Choice,
}

impl SandboxArgs {
    /// The default limits under the operator's ceilings.
    fn policy(&self) -> LimitPolicy {
        let mut ceilings = Limits::default_ceilings();
        if let Some(v) = self.max_memory_mib {
            ceilings.memory_mib = v;
        }
        if let Some(v) = self.max_answer_ms {
            ceilings.answer_ms = v;
        }
        if let Some(v) = self.max_compare_ms {
            ceilings.compare_ms = v;
        }
        if let Some(v) = self.max_assess_ms {
            ceilings.assess_ms = v;
        }
        LimitPolicy::new(Limits::default(), ceilings)
    }

    /// The tensor backend is chosen first: plugins may call kernels as soon as they load.
    pub fn sandbox(&self) -> Result<Arc<Sandbox>, CliError> {
        let backend =
            apiary::tensor::backend::init(self.tensor_backend).map_err(CliError::sandbox)?;
        tracing::info!("tensor kernels: {backend}");
        let config = SandboxConfig {
            limits: self.policy(),
            ..Default::default()
        };
        Sandbox::new(config)
            .map(Arc::new)
            .map_err(CliError::sandbox)
    }

    /// A cache that cannot be opened costs compile time, not the command: warn and go on.
    fn cache(&self, sandbox: &Sandbox) -> Option<CompileCache> {
        if self.no_cache {
            return None;
        }
        let dir = self.cache_dir.clone().or_else(CompileCache::default_dir)?;
        match CompileCache::open(&dir, sandbox.engine()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("warning: not caching compiled plugins: {e}");
                None
            }
        }
    }

    /// The plugins of `dir`, loaded. A plugin that is refused is not an error here: each
    /// command reports refusals its own way.
    pub fn registry(&self, dir: &Path) -> Result<Arc<Registry>, CliError> {
        if !dir.is_dir() {
            return Err(CliError::Plugins(format!(
                "plugins folder {} does not exist; pass --plugins DIR (scripts/demo.sh builds one at target/plugins)",
                dir.display()
            )));
        }
        let sandbox = self.sandbox()?;
        let cache = self.cache(&sandbox);
        let registry = Arc::new(Registry::new(dir, sandbox, cache));
        registry
            .rescan()
            .map_err(|e| CliError::Plugins(format!("cannot read {}: {e}", dir.display())))?;
        Ok(registry)
    }
}

/// Phase deadlines and consensus settings of the rounds a node starts (`run`, `sim`).
#[derive(Args)]
pub struct RoundArgs {
    /// Phase deadlines of rounds this node starts, milliseconds.
    #[arg(long, default_value_t = 3_000)]
    join_ms: u64,
    #[arg(long, default_value_t = 60_000)]
    answer_ms: u64,
    #[arg(long, default_value_t = 60_000)]
    judge_ms: u64,
    /// Most members in a round's sub-swarm.
    #[arg(long, default_value_t = 16)]
    max_members: usize,
    /// Pairs each judge compares (each in both orders).
    #[arg(long, default_value_t = 3)]
    pairs_per_judge: usize,
    /// Minimum assess score for this node to volunteer.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Disable per-judge influence clipping (to see why it matters).
    #[arg(long)]
    no_clip: bool,
    /// Count every verdict equally: no reputation weights, no calibration gate.
    #[arg(long)]
    no_reputation: bool,
}

impl RoundArgs {
    pub fn settings(&self) -> apiary::swarm::RoundSettings {
        let mut params = apiary::ledger::transcript::Params::default();
        if self.no_clip {
            params.clip = 0.0;
        }
        if self.no_reputation {
            params.reputation.require_calibration = false;
            params.reputation.alpha = 0.0;
            params.reputation.initial = 1.0;
        }
        apiary::swarm::RoundSettings {
            join_ms: self.join_ms,
            answer_ms: self.answer_ms,
            judge_ms: self.judge_ms,
            max_members: self.max_members,
            pairs_per_judge: self.pairs_per_judge,
            threshold: self.threshold,
            params,
            ..apiary::swarm::RoundSettings::swarm()
        }
    }
}

/// The node key and ledger in `dir`, created on first use. The key's identity is recorded
/// so the ledger can tell this node's own rounds from others'.
pub fn open_ledger(dir: &Path) -> Result<(NodeKey, Ledger), CliError> {
    let key = NodeKey::load_or_create(dir).map_err(CliError::ledger)?;
    let ledger = Ledger::open(dir).map_err(CliError::ledger)?;
    ledger
        .remember_identity(&key.id())
        .map_err(CliError::ledger)?;
    Ok((key, ledger))
}

/// Only the networked commands need one, so it is built on demand rather than in `main`.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(format!("cannot start the async runtime: {e}")))
}

/// $XDG_DATA_HOME/apiary, else ~/.local/share/apiary, else ./apiary.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("apiary")
}

/// Pretty JSON of a report, for `--json`.
pub fn to_json(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(value).map_err(CliError::output)
}
