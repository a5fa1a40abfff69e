//! The `apiary` command line.

use apiary::consensus::Outcome;
use apiary::ledger::{Ledger, NodeKey, local};
use apiary::plugins::{CompileCache, Registry, audit};
use apiary::round::{self, RoundConfig, RoundReport};
use apiary::sandbox::limits::{LimitPolicy, Limits};
use apiary::sandbox::{Sandbox, SandboxConfig};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "apiary",
    version,
    about = "Swarm inference node: sandboxed specialist plugins that answer and rank each other"
)]
struct Cli {
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Log filter (e.g. `info`, `apiary=debug`); also read from RUST_LOG.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

/// Operator limits: ceilings no plugin can exceed, whatever its plugin.toml asks.
#[derive(Args, Clone)]
struct SandboxArgs {
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

#[derive(Subcommand)]
enum Command {
    /// Ask a question: a local round among the plugins in a folder.
    Ask {
        /// The question.
        question: String,
        #[arg(long, env = "APIARY_PLUGINS", default_value = "plugins")]
        plugins: PathBuf,
        /// Show every answer, verdict and score.
        #[arg(long)]
        explain: bool,
        /// Print the whole round as JSON.
        #[arg(long)]
        json: bool,
        /// Domain hint passed to the plugins (e.g. math, geography).
        #[arg(long)]
        domain: Option<String>,
        /// Seed for everything random in the round.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Minimum assess score to answer.
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
        /// Most tokens a generative plugin may produce.
        #[arg(long, default_value_t = 256)]
        max_tokens: u32,
        /// Sampling temperature for generative plugins (0 = greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Record the round in the ledger in this folder (node key, SQLite ledger);
        /// plugins' reputations from earlier rounds weigh their verdicts.
        #[arg(long, env = "APIARY_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Rounds recorded in the ledger.
    Rounds {
        #[command(subcommand)]
        command: RoundsCommand,
    },
    /// Inspect plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
}

#[derive(Subcommand)]
enum RoundsCommand {
    /// The most recent rounds.
    List {
        #[arg(long, env = "APIARY_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// A round's transcript as JSON: signed answers, verdicts and result.
    Show {
        id: String,
        #[arg(long, env = "APIARY_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Check every signature and recompute winner, rewards and reputation changes from
    /// the transcript alone. Exit 0 if it holds, 4 if not.
    Verify {
        id: String,
        #[arg(long, env = "APIARY_DATA_DIR")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Load every plugin in a folder and report each as loaded or refused (with why).
    List {
        #[arg(env = "APIARY_PLUGINS", default_value = "plugins")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Everything a reviewer needs about one plugin (folder or .wasm): hash, imports,
    /// exports, manifest, limits, data, and whether it loads.
    Audit {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Watch a folder and report plugins as they are added, replaced or removed.
    Watch {
        #[arg(env = "APIARY_PLUGINS", default_value = "plugins")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn sandbox(args: &SandboxArgs) -> Result<Arc<Sandbox>, String> {
    let backend = apiary::tensor::backend::init(args.tensor_backend)?;
    tracing::info!("tensor kernels: {backend}");
    let mut ceilings = Limits::default_ceilings();
    if let Some(v) = args.max_memory_mib {
        ceilings.memory_mib = v;
    }
    if let Some(v) = args.max_answer_ms {
        ceilings.answer_ms = v;
    }
    if let Some(v) = args.max_compare_ms {
        ceilings.compare_ms = v;
    }
    if let Some(v) = args.max_assess_ms {
        ceilings.assess_ms = v;
    }
    let config = SandboxConfig {
        limits: LimitPolicy::new(Limits::default(), ceilings),
        ..Default::default()
    };
    Sandbox::new(config)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

fn cache(args: &SandboxArgs, sandbox: &Sandbox) -> Option<CompileCache> {
    if args.no_cache {
        return None;
    }
    let dir = args.cache_dir.clone().or_else(CompileCache::default_dir)?;
    match CompileCache::open(&dir, sandbox.engine()) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("warning: not caching compiled plugins: {e}");
            None
        }
    }
}

fn registry(args: &SandboxArgs, dir: &Path) -> Result<Arc<Registry>, String> {
    if !dir.is_dir() {
        return Err(format!(
            "plugins folder {} does not exist; pass --plugins DIR (scripts/demo.sh builds one at target/plugins)",
            dir.display()
        ));
    }
    let sandbox = sandbox(args)?;
    let cache = cache(args, &sandbox);
    let registry = Arc::new(Registry::new(dir, sandbox, cache));
    registry
        .rescan()
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    Ok(registry)
}

fn open_ledger(dir: &Path) -> Result<(NodeKey, Ledger), String> {
    let key = NodeKey::load_or_create(dir).map_err(|e| e.to_string())?;
    let ledger = Ledger::open(dir).map_err(|e| e.to_string())?;
    ledger
        .remember_identity(&key.id())
        .map_err(|e| e.to_string())?;
    Ok((key, ledger))
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Ask {
            question,
            plugins,
            explain,
            json,
            domain,
            seed,
            threshold,
            max_tokens,
            temperature,
            data_dir,
        } => {
            let registry = registry(&cli.sandbox, &plugins)?;
            let ledger = match &data_dir {
                Some(dir) => Some(open_ledger(dir)?),
                None => None,
            };
            for l in registry.listing() {
                if let apiary::plugins::registry::Status::Refused { reason } = &l.status {
                    eprintln!("warning: plugin {} refused: {reason}", l.id);
                }
            }
            let mut request = round::request(&question, seed);
            request.domain = domain;
            request.max_tokens = max_tokens;
            request.temperature = temperature;
            let mut config = RoundConfig {
                threshold,
                ..Default::default()
            };
            let params = local::local_params();
            let active = registry.active();
            let mut before = Vec::new();
            if let Some((key, ledger)) = &ledger {
                for p in &active {
                    let s = ledger
                        .standing(&local::member_key(&key.id(), &p.name), &params.reputation)
                        .map_err(|e| e.to_string())?;
                    config
                        .weights
                        .insert(p.name.clone(), s.vote_weight(&params.reputation));
                    before.push(s);
                }
            }
            let report = round::run_local_round(registry.sandbox(), &active, &request, &config)
                .map_err(|e| e.to_string())?;
            if let Some((key, mut ledger)) = ledger {
                let id = local::round_id(&key.id(), &question);
                let t = local::transcript(&key, id.clone(), &report, &before, params);
                let recorded = t
                    .result
                    .payload
                    .winner
                    .map(|w| t.answers[w].payload.text.clone());
                if recorded.as_deref() != report.winning_answer().map(|a| a.text.as_str()) {
                    eprintln!("warning: the ledger's recomputed winner differs from the round's");
                }
                ledger.record(&t).map_err(|e| e.to_string())?;
                eprintln!("round {id} recorded (apiary rounds show {id})");
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
            } else if explain {
                print_explain(&report);
            }
            match report.winning_answer() {
                Some(a) => {
                    if !json {
                        if explain {
                            println!();
                        }
                        println!("{}", a.text);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    if !json {
                        eprintln!(
                            "no plugin could answer this question (use --explain to see why)"
                        );
                    }
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Rounds { command } => match command {
            RoundsCommand::List { data_dir, limit } => {
                let (_, ledger) = open_ledger(&data_dir)?;
                for (id, created, prompt) in ledger.rounds(limit).map_err(|e| e.to_string())? {
                    println!("{id}  {created}  {prompt}");
                }
                Ok(ExitCode::SUCCESS)
            }
            RoundsCommand::Show { id, data_dir } => {
                let (_, ledger) = open_ledger(&data_dir)?;
                let t = ledger.round(&id).map_err(|e| e.to_string())?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&t).map_err(|e| e.to_string())?
                );
                Ok(ExitCode::SUCCESS)
            }
            RoundsCommand::Verify { id, data_dir } => {
                let (_, ledger) = open_ledger(&data_dir)?;
                let t = ledger.round(&id).map_err(|e| e.to_string())?;
                let problems = t.verify();
                if problems.is_empty() {
                    let winner = t
                        .result
                        .payload
                        .winner
                        .map(|w| t.answers[w].payload.text.clone());
                    println!(
                        "round {id}: {} signatures valid; winner, rewards and reputation recomputed and equal (winner: {})",
                        t.answers.len() + t.verdicts.len() + 1,
                        winner.as_deref().unwrap_or("none")
                    );
                    Ok(ExitCode::SUCCESS)
                } else {
                    for p in &problems {
                        println!("round {id}: {p}");
                    }
                    Ok(ExitCode::from(4))
                }
            }
        },
        Command::Plugins { command } => match command {
            PluginsCommand::List { dir, json } => {
                let registry = registry(&cli.sandbox, &dir)?;
                let listing = registry.listing();
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&listing).map_err(|e| e.to_string())?
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                let s = registry.sandbox();
                println!(
                    "{} plugins in {} (instances: {}; tensor kernels: {})",
                    listing.len(),
                    dir.display(),
                    if s.pooling() {
                        "pooling allocator"
                    } else {
                        "on-demand allocation"
                    },
                    apiary::tensor::backend_name()
                );
                for l in &listing {
                    match &l.status {
                        apiary::plugins::registry::Status::Loaded {
                            name,
                            version,
                            domains,
                            sha256,
                            quarantined,
                        } => {
                            let p = registry.get(&l.id);
                            let limits = p.map(|p| p.limits).unwrap_or_default();
                            println!(
                                "  loaded   {:<14} {name} {version}  [{}]  sha256 {}  answer {} ms, {} MiB{}",
                                l.id,
                                domains.join(", "),
                                &sha256[..12],
                                limits.answer_ms,
                                limits.memory_mib,
                                if *quarantined { "  QUARANTINED" } else { "" }
                            );
                        }
                        apiary::plugins::registry::Status::Refused { reason } => {
                            println!("  refused  {:<14} {reason}", l.id);
                        }
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            PluginsCommand::Audit { path, json } => {
                let sandbox = sandbox(&cli.sandbox)?;
                let report = audit::audit(&sandbox, &path);
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                    );
                } else {
                    print!("{report}");
                }
                Ok(if report.refused.is_none() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(3)
                })
            }
            PluginsCommand::Watch { dir } => {
                let registry = registry(&cli.sandbox, &dir)?;
                for l in registry.listing() {
                    println!("{}", serde_json::to_string(&l).unwrap_or_default());
                }
                let _watch = registry
                    .watch(|report| {
                        println!("{}", serde_json::to_string(report).unwrap_or_default())
                    })
                    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
                println!("watching {} (Ctrl-C to stop)", dir.display());
                loop {
                    std::thread::park();
                }
            }
        },
    }
}

fn print_explain(r: &RoundReport) {
    println!("question: {}", r.prompt);
    println!("members:");
    for m in &r.members {
        let assess = m
            .assess
            .map(|s| format!("{s:.2}"))
            .unwrap_or_else(|| "-".into());
        match (&m.answer, &m.error) {
            (Some(a), _) => println!("  {:<12} assess {assess}  answered: {a}", m.plugin),
            (None, Some(e)) => println!(
                "  {:<12} assess {assess}  {}{e}",
                m.plugin,
                if m.fault { "FAULT: " } else { "" }
            ),
            (None, None) => println!("  {:<12} assess {assess}", m.plugin),
        }
    }
    if !r.verdicts.is_empty() {
        println!("verdicts (judge: first vs second -> preferred):");
        for v in &r.verdicts {
            let pick = match v.outcome {
                Some(Outcome::First) => r.answers[v.first].plugin.clone(),
                Some(Outcome::Second) => r.answers[v.second].plugin.clone(),
                Some(Outcome::Tie) => "tie".into(),
                None => format!("error: {}", v.error.as_deref().unwrap_or("?")),
            };
            println!(
                "  {:<12} {} vs {} -> {pick}",
                v.judge, r.answers[v.first].plugin, r.answers[v.second].plugin
            );
        }
    }
    println!("scores (Bradley-Terry log-strength):");
    for (i, a) in r.answers.iter().enumerate() {
        let mark = if Some(i) == r.winner { "*" } else { " " };
        println!(" {mark} {:<12} {:+.3}  {}", a.plugin, a.score, a.text);
    }
    let how = if r.single_answer {
        "single answer: nothing to compare".to_string()
    } else if r.undecided {
        "no judge preferred any answer; picked the most confident".to_string()
    } else {
        format!("margin P(winner beats runner-up) = {:.2}", r.margin)
    };
    println!("{how}; round took {} ms", r.elapsed_ms);
}
