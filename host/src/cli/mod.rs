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
//! Settings come from the command line, then the flags' environment variables, then the
//! configuration file (`config.rs`), then the defaults: `main` merges the file into the
//! global flags and hands each command a [`Context`] with the file and clap's matches, so
//! a command that takes file keys (`run`, `config show`) merges its own.
//!
//! Errors are [`CliError`]s. The library's own error text goes inside, and the context
//! (which file, which flag to pass instead) is added here at the edge, where it is known
//! what the user typed. `main` prints `error: {message}` and exits with
//! [`CliError::exit_code`].

mod ask;
pub mod config;
mod eval;
mod keys;
mod pause;
mod plugins;
mod plugins_check;
mod plugins_new;
mod plugins_pack;
mod rounds;
mod run;
mod service;
mod sim;
mod status;

use apiary::ledger::{Ledger, NodeKey};
use apiary::plugins::{CompileCache, Registry};
use apiary::sandbox::limits::{LimitPolicy, Limits};
use apiary::sandbox::{Sandbox, SandboxConfig};
use clap::{ArgMatches, Args, Subcommand};
use config::{ConfigFile, Merge, Setting, path_json};
use serde_json::{Value, json};
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
    /// `plugins check`: at least one check failed (the report says which, and what to fix).
    pub const CHECK_FAILED: u8 = 5;
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
    (
        exit::CHECK_FAILED,
        "`plugins check`: the plugin failed a check a node would refuse or quarantine it for",
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
    /// The configuration file (~/.config/apiary/config.toml): where it is, and the
    /// settings in effect with where each comes from.
    Config(config::ConfigCommand),
    /// What a running node is doing: its governor, peers, plugins and recent rounds.
    Status(status::StatusCommand),
    /// Pause a running node's plugin work (for a while, or until `apiary resume`).
    Pause(pause::PauseCommand),
    /// Resume a paused node: the governor's rules decide again.
    Resume(pause::ResumeCommand),
    /// Run the node as a background service of this user (a systemd user unit).
    Service(service::ServiceCommand),
    /// The author key that signs plugin packages (`keys new`, `keys show`).
    Keys(keys::KeysCommand),
}

impl Command {
    pub fn run(self, ctx: &Context) -> Result<ExitCode, CliError> {
        let sandbox = ctx.sandbox;
        match self {
            Command::Ask(c) => c.run(sandbox),
            Command::Eval(c) => c.run(sandbox),
            Command::Run(c) => c.run(ctx),
            Command::Sim(c) => c.run(),
            Command::Rounds(c) => c.run(),
            Command::Plugins(c) => c.run(ctx),
            Command::Config(c) => c.run(ctx),
            Command::Status(c) => c.run(ctx),
            Command::Pause(c) => c.run(ctx),
            Command::Resume(c) => c.run(ctx),
            Command::Service(c) => c.run(ctx),
            Command::Keys(c) => c.run(ctx),
        }
    }

    /// Whether the configuration file must be read (and be valid) first. `config path`
    /// and `service uninstall` work with a broken file: they are how one gets rid of it.
    pub fn needs_config(&self) -> bool {
        match self {
            Command::Config(c) => c.needs_file(),
            Command::Service(c) => c.needs_file(),
            _ => true,
        }
    }
}

/// What every command may need beyond its own flags: the global flags (merged with the
/// file), the file, and clap's view of the command line (which flags were given).
pub struct Context<'a> {
    pub sandbox: &'a SandboxArgs,
    pub config: &'a ConfigFile,
    /// The global flags' merged settings, for `config show`.
    pub global: &'a [Setting],
    /// `--config` as given (none: the default file), for `service install`.
    pub config_flag: Option<&'a Path>,
    /// The whole CLI, where flags' environment variables are looked up.
    pub command: &'a clap::Command,
    pub matches: &'a ArgMatches,
}

impl Context<'_> {
    /// The matches of the command that runs (`show` in `apiary config show`).
    pub fn leaf(&self) -> &ArgMatches {
        let mut m = self.matches;
        while let Some((_, sub)) = m.subcommand() {
            m = sub;
        }
        m
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
    /// The configuration file: unreadable, unknown key, bad value, invalid rules.
    #[error("{0}")]
    Config(String),
    /// `service install|uninstall`: the unit file, or a platform where it is not automated.
    #[error("{0}")]
    Service(String),
    /// Plugin packages and the author key: packing, verifying, installing.
    #[error("{0}")]
    Package(String),
    /// `plugins build`: cargo, the wasm target, or laying out the plugin folder.
    #[error("{0}")]
    Build(String),
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
            | CliError::Output(_)
            | CliError::Config(_)
            | CliError::Service(_)
            | CliError::Package(_)
            | CliError::Build(_) => exit::ERROR,
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
    /// The file's values for the global flags that neither the command line nor the
    /// environment set. `merge` holds the top-level matches.
    pub fn configure(&mut self, merge: &mut Merge) -> Result<(), CliError> {
        let v = merge.file.values.clone();
        let ceilings = Limits::default_ceilings();
        merge.take(
            "cache-dir",
            &mut self.cache_dir,
            v.cache_dir.map(Some),
            |d| {
                d.clone()
                    .or_else(CompileCache::default_dir)
                    .as_deref()
                    .map_or(Value::Null, path_json)
            },
        );
        merge.take("no-cache", &mut self.no_cache, v.no_cache, |b| json!(b));
        for (key, slot, file, default) in [
            (
                "max-memory-mib",
                &mut self.max_memory_mib,
                v.max_memory_mib,
                ceilings.memory_mib,
            ),
            (
                "max-answer-ms",
                &mut self.max_answer_ms,
                v.max_answer_ms,
                ceilings.answer_ms,
            ),
            (
                "max-compare-ms",
                &mut self.max_compare_ms,
                v.max_compare_ms,
                ceilings.compare_ms,
            ),
            (
                "max-assess-ms",
                &mut self.max_assess_ms,
                v.max_assess_ms,
                ceilings.assess_ms,
            ),
        ] {
            merge.take(key, slot, file.map(Some), |x| json!(x.unwrap_or(default)));
        }
        let backend = v
            .tensor_backend
            .as_deref()
            .map(|t| config::parse_value("tensor-backend", merge.file, t))
            .transpose()?;
        merge.take("tensor-backend", &mut self.tensor_backend, backend, |c| {
            json!(format!("{c:?}").to_lowercase())
        });
        Ok(())
    }

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
        for line in apiary::tensor::backend::probe_output().lines() {
            tracing::debug!("GPU probe said: {line}");
        }
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
        let registry = self.empty_registry(dir)?;
        registry
            .rescan()
            .map_err(|e| CliError::Plugins(format!("cannot read {}: {e}", dir.display())))?;
        Ok(registry)
    }

    /// The registry of `dir` before its plugins are loaded (`run` serves `/health`
    /// meanwhile, answering 503 until [`Registry::rescan`] is done).
    pub fn empty_registry(&self, dir: &Path) -> Result<Arc<Registry>, CliError> {
        if !dir.is_dir() {
            return Err(CliError::Plugins(format!(
                "plugins folder {} does not exist; pass --plugins DIR (scripts/demo.sh builds one at target/plugins)",
                dir.display()
            )));
        }
        let sandbox = self.sandbox()?;
        let cache = self.cache(&sandbox);
        Ok(Arc::new(Registry::new(dir, sandbox, cache)))
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
    /// The file's values for the flags the command line did not set.
    pub fn configure(&mut self, merge: &mut Merge) {
        let v = merge.file.values.clone();
        let n = |x: &u64| json!(x);
        merge.take("join-ms", &mut self.join_ms, v.join_ms, n);
        merge.take("answer-ms", &mut self.answer_ms, v.answer_ms, n);
        merge.take("judge-ms", &mut self.judge_ms, v.judge_ms, n);
        merge.take("max-members", &mut self.max_members, v.max_members, |x| {
            json!(x)
        });
        merge.take(
            "pairs-per-judge",
            &mut self.pairs_per_judge,
            v.pairs_per_judge,
            |x| json!(x),
        );
        merge.take("threshold", &mut self.threshold, v.threshold, |x| json!(x));
        merge.take("no-clip", &mut self.no_clip, v.no_clip, |b| json!(b));
        merge.take(
            "no-reputation",
            &mut self.no_reputation,
            v.no_reputation,
            |b| json!(b),
        );
    }

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

/// Which running node `status`, `pause` and `resume` talk to, and with what key.
#[derive(Args)]
pub struct NodeArgs {
    /// The node's HTTP API. Default: the config file's `http`, else http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    node: Option<String>,
    /// The node's API key (`apiary run --api-key`). Default: the config file's `api-key`.
    #[arg(long, env = "APIARY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// How long `status`, `pause` and `resume` wait for a node.
const NODE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl NodeArgs {
    /// `--node`, else `http://` + the file's `http` (an unspecified address such as
    /// 0.0.0.0 is reached on loopback), else the default address of `apiary run`.
    pub fn url(&self, file: &ConfigFile) -> String {
        let url = match (&self.node, &file.values.http) {
            (Some(u), _) => u.clone(),
            (None, Some(addr)) => format!("http://{}", reachable(addr)),
            (None, None) => "http://127.0.0.1:8080".to_string(),
        };
        let url = if url.contains("://") {
            url
        } else {
            format!("http://{url}")
        };
        url.trim_end_matches('/').to_string()
    }

    fn key<'a>(&'a self, file: &'a ConfigFile) -> Option<&'a str> {
        self.api_key
            .as_deref()
            .or(file.values.api_key.as_deref())
            .filter(|k| !k.is_empty())
    }

    /// `method` `path` on the node with an optional JSON body; the response's JSON, or an
    /// error that says what to do.
    pub fn call(
        &self,
        file: &ConfigFile,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let base = self.url(file);
        let url = format!("{base}{path}");
        let key = self.key(file).map(str::to_string);
        runtime()?.block_on(async move {
            let client = reqwest::Client::builder()
                .timeout(NODE_TIMEOUT)
                .build()
                .map_err(CliError::node)?;
            let mut req = client.request(method, &url);
            if let Some(k) = &key {
                req = req.bearer_auth(k);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| unreachable(&base, &e))?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| unreachable(&base, &e))?;
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(json);
            }
            let said = json["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| text.chars().take(200).collect());
            Err(CliError::Node(match status.as_u16() {
                401 if key.is_none() => format!(
                    "the node at {base} wants an API key: pass --api-key KEY, set \
                     APIARY_API_KEY or put api-key in the config file"
                ),
                401 => format!(
                    "the node at {base} refused the API key (--api-key, APIARY_API_KEY or the \
                     config file's api-key): it must be the one `apiary run` was given"
                ),
                404 => format!(
                    "the node at {base} has no {path} ({said}): is it an older apiary, or not \
                     an apiary node?"
                ),
                _ => format!("the node at {base} answered {status}: {said}"),
            }))
        })
    }
}

/// The address to connect to for a listening address: 0.0.0.0 and [::] are every
/// interface, so loopback reaches them.
fn reachable(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip: std::net::IpAddr = if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(ip, a.port()).to_string()
        }
        _ => addr.to_string(),
    }
}

/// A request that reached no node, with the cause and what to do.
fn unreachable(base: &str, e: &reqwest::Error) -> CliError {
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let what = if e.is_timeout() {
        format!("it did not answer within {} s", NODE_TIMEOUT.as_secs())
    } else {
        cause
    };
    CliError::Node(format!(
        "cannot reach a node at {base}: {what}. Start one with `apiary run`, or pass \
         --node URL for a node elsewhere (or set `http` in the config file)"
    ))
}

/// Milliseconds since the Unix epoch, for "since" and "until" times the node reports.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A duration in words: `90s`, `30m`, `1h 5m`, `2d 3h`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => match s % 60 {
            0 => format!("{}m", s / 60),
            r => format!("{}m {r}s", s / 60),
        },
        3600..86400 => match (s % 3600) / 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h {m}m", s / 3600),
        },
        _ => match (s % 86400) / 3600 {
            0 => format!("{}d", s / 86400),
            h => format!("{}d {h}h", s / 86400),
        },
    }
}
