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
        /// Ask a running node (its HTTP API, e.g. http://127.0.0.1:8080) instead of
        /// running a local round: the question goes to the swarm.
        #[arg(long, env = "APIARY_NODE")]
        node: Option<String>,
        /// API key for --node, if its operator set one.
        #[arg(long, env = "APIARY_API_KEY")]
        api_key: Option<String>,
    },
    /// Score the plugins, majority vote, the swarm and the oracle on questions with known
    /// answers (JSON lines; scripts/fetch-datasets.py makes them).
    Eval(EvalArgs),
    /// Run a swarm node: load the plugins, join the swarm, serve the HTTP API.
    Run(RunArgs),
    /// Simulate a swarm of N nodes in this process (in-memory libp2p transport,
    /// simulated experts) and report per-round results and accuracy.
    Sim(SimArgs),
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

#[derive(Args)]
struct RoundArgs {
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
    fn settings(&self) -> apiary::swarm::RoundSettings {
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
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, env = "APIARY_PLUGINS", default_value = "plugins")]
    plugins: PathBuf,
    /// Node key and ledger. Default: $XDG_DATA_HOME/apiary or ~/.local/share/apiary.
    #[arg(long, env = "APIARY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// libp2p listen address (repeatable).
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/7373")]
    listen: Vec<libp2p::Multiaddr>,
    /// A peer to join through, with its /p2p/ id (repeatable).
    #[arg(long)]
    bootstrap: Vec<libp2p::Multiaddr>,
    /// Address of the OpenAI-compatible HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// Require this bearer token on the HTTP API (default: any token is accepted).
    #[arg(long, env = "APIARY_API_KEY")]
    api_key: Option<String>,
    /// Do not look for peers on the LAN with mDNS.
    #[arg(long)]
    no_mdns: bool,
    #[command(flatten)]
    round: RoundArgs,
}

#[derive(Args)]
struct EvalArgs {
    /// Dataset files (JSON lines in apiary's item format).
    #[arg(required = true)]
    datasets: Vec<PathBuf>,
    #[arg(long, env = "APIARY_PLUGINS", default_value = "plugins")]
    plugins: PathBuf,
    /// At most this many items per dataset (a seeded sample).
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of the judges (plugins) made adversarial: every verdict reversed.
    #[arg(long, default_value_t = 0.0)]
    byzantine: f64,
    /// Minimum assess score to answer.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// The whole report as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SimArgs {
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of nodes that collude: all answer one wrong number and vote for it.
    #[arg(long, default_value_t = 0.0)]
    colluders: f64,
    /// Fraction of nodes that answer garbage and judge at random.
    #[arg(long, default_value_t = 0.0)]
    garbage: f64,
    /// Fraction of nodes that answer after the deadline.
    #[arg(long, default_value_t = 0.0)]
    slow: f64,
    /// Fraction of nodes that crash when asked for their answer.
    #[arg(long, default_value_t = 0.0)]
    crashing: f64,
    /// Fraction of nodes that send forged, replayed, oversized and malformed messages.
    #[arg(long, default_value_t = 0.0)]
    forgers: f64,
    /// How often an honest node answers right.
    #[arg(long, default_value_t = 0.8)]
    answer_accuracy: f64,
    /// How often an honest judge prefers a right answer over a wrong one.
    #[arg(long, default_value_t = 0.8)]
    judge_accuracy: f64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    round: RoundArgs,
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
            node,
            api_key,
        } => {
            if let Some(url) = node {
                return ask_node(
                    &url,
                    api_key,
                    &question,
                    max_tokens,
                    temperature,
                    explain,
                    json,
                );
            }
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
                    config.reputation.insert(p.name.clone(), s.reputation);
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
        Command::Run(args) => run_node(&cli.sandbox, args),
        Command::Sim(args) => run_sim(args),
        Command::Eval(args) => run_eval(&cli.sandbox, args),
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
        "the verdicts did not separate the best answers; took the one with the most earned reputation (then assess, then the seed)".to_string()
    } else {
        format!("margin P(winner beats runner-up) = {:.2}", r.margin)
    };
    println!("{how}; round took {} ms", r.elapsed_ms);
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("apiary")
}

fn run_node(sandbox_args: &SandboxArgs, args: RunArgs) -> Result<ExitCode, String> {
    let registry = registry(sandbox_args, &args.plugins)?;
    for l in registry.listing() {
        match &l.status {
            apiary::plugins::registry::Status::Refused { reason } => {
                eprintln!("warning: plugin {} refused: {reason}", l.id)
            }
            apiary::plugins::registry::Status::Loaded { name, .. } => {
                eprintln!("plugin {name} loaded")
            }
        }
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let (key, ledger) = open_ledger(&data_dir)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let _watch = registry
            .watch(|report| {
                if !report.is_empty() {
                    eprintln!(
                        "plugins changed: {}",
                        serde_json::to_string(report).unwrap_or_default()
                    )
                }
            })
            .map_err(|e| {
                eprintln!(
                    "warning: not watching {} for changes: {e}",
                    args.plugins.display()
                )
            })
            .ok();
        let net = apiary::swarm::NetConfig {
            listen: args.listen.clone(),
            bootstrap: args.bootstrap.clone(),
            mdns: !args.no_mdns,
            ..Default::default()
        };
        let node = apiary::swarm::Node::start(
            key,
            ledger,
            Arc::new(apiary::swarm::Plugins { registry }),
            net,
            args.round.settings(),
            apiary::swarm::Persona::Honest,
        )?;
        let listener = tokio::net::TcpListener::bind(&args.http)
            .await
            .map_err(|e| format!("cannot serve HTTP on {}: {e} (pass --http ADDR)", args.http))?;
        let http = listener.local_addr().map_err(|e| e.to_string())?;
        // Let the transport bind before reporting where it listens.
        let mut addrs = Vec::new();
        for _ in 0..50 {
            addrs = node.net().listening().await;
            if !addrs.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        println!("node {}", node.id());
        for a in &addrs {
            println!("listening {a}/p2p/{}", node.net().peer_id);
        }
        println!("http http://{http}");
        println!("data {}", data_dir.display());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let token = args.api_key.clone();
        tokio::select! {
            _ = apiary::api::serve(listener, node, token) => {}
            _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn ask_node(
    url: &str,
    api_key: Option<String>,
    question: &str,
    max_tokens: u32,
    temperature: f32,
    explain: bool,
    json: bool,
) -> Result<ExitCode, String> {
    let rt = runtime()?;
    rt.block_on(async {
        let endpoint = format!("{}/v1/chat/completions", url.trim_end_matches('/'));
        let body = serde_json::json!({
            "model": apiary::api::MODEL,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens,
            "temperature": temperature,
        });
        let resp = reqwest::Client::new()
            .post(&endpoint)
            .bearer_auth(api_key.as_deref().unwrap_or("apiary"))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("cannot reach the node at {url}: {e}"))?;
        let status = resp.status();
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("the node at {url} did not answer with JSON: {e}"))?;
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("unknown error");
            return Err(format!("the node answered {status}: {msg}"));
        }
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
            );
            return Ok(ExitCode::SUCCESS);
        }
        if explain {
            let a = &v["apiary"];
            println!(
                "round {} ({} ms)",
                a["id"].as_str().unwrap_or("?"),
                a["elapsed_ms"]
            );
            for m in a["members"].as_array().into_iter().flatten() {
                println!(
                    "  {} {:<10} assess {:.2} answered {} judged {} {}",
                    m["node"]
                        .as_str()
                        .unwrap_or("?")
                        .chars()
                        .take(12)
                        .collect::<String>(),
                    m["plugin"].as_str().unwrap_or("?"),
                    m["score"].as_f64().unwrap_or(0.0),
                    m["answered"],
                    m["judged"],
                    m["note"].as_str().unwrap_or("")
                );
            }
            println!(
                "{} answers, {} verdicts, margin {:.2}{}",
                a["answers"],
                a["verdicts"],
                a["margin"].as_f64().unwrap_or(0.0),
                if a["single_answer"].as_bool() == Some(true) {
                    " (single answer)"
                } else if a["undecided"].as_bool() == Some(true) {
                    " (undecided: no verdict separated the answers; took the best-reputed node's)"
                } else {
                    ""
                }
            );
            println!();
        }
        println!(
            "{}",
            v["choices"][0]["message"]["content"].as_str().unwrap_or("")
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn run_sim(args: SimArgs) -> Result<ExitCode, String> {
    if args.nodes < 2 {
        return Err("a swarm needs at least 2 nodes (--nodes)".into());
    }
    let mut settings = args.round.settings();
    // Instant experts: keep the default deadlines of a simulation unless asked.
    if settings.answer_ms == 60_000 {
        settings.answer_ms = 2_000;
    }
    if settings.judge_ms == 60_000 {
        settings.judge_ms = 2_000;
    }
    let config = apiary::swarm::sim::SimConfig {
        nodes: args.nodes,
        rounds: args.rounds,
        seed: args.seed,
        colluders: args.colluders,
        garbage: args.garbage,
        slow: args.slow,
        crashing: args.crashing,
        forgers: args.forgers,
        answer_accuracy: args.answer_accuracy,
        judge_accuracy: args.judge_accuracy,
        settings,
    };
    let report = runtime()?.block_on(apiary::swarm::sim::run(config))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} nodes: {}",
        report.nodes,
        counts(report.roles.iter().map(|(r, n)| (r, *n)))
    );
    for (i, r) in report.rounds.iter().enumerate() {
        match &r.error {
            None => println!(
                "round {i:>3}: {} = {:<6} got {:<8} {}  {} members, {} answers, {} verdicts, {} ms{}",
                r.prompt
                    .trim_start_matches("What is ")
                    .trim_end_matches('?'),
                r.truth,
                r.answer.as_deref().unwrap_or("-"),
                if r.correct { "right" } else { "WRONG" },
                r.members,
                r.answers,
                r.verdicts,
                r.ms,
                if r.single_answer {
                    " (single answer)"
                } else {
                    ""
                }
            ),
            Some(e) => println!("round {i:>3}: {} failed: {e}", r.prompt),
        }
    }
    println!(
        "accuracy {:.0}% ({} of {} rounds right); round time p50 {} ms, p95 {} ms",
        report.accuracy * 100.0,
        report.rounds.iter().filter(|r| r.correct).count(),
        report.rounds.len(),
        report.p50_ms,
        report.p95_ms
    );
    if !report.rejected.is_empty() {
        println!(
            "messages refused by the entry node: {}",
            counts(report.rejected.iter().map(|(k, n)| (k, *n)))
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_eval(sandbox_args: &SandboxArgs, args: EvalArgs) -> Result<ExitCode, String> {
    use apiary::eval;
    let mut items = Vec::new();
    for path in &args.datasets {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut these = eval::read_items(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(n) = args.limit
            && these.len() > n
        {
            apiary::consensus::pairs::SplitMix(args.seed).shuffle(&mut these);
            these.truncate(n);
        }
        items.extend(these);
    }
    let registry = registry(sandbox_args, &args.plugins)?;
    let plugins = registry.active();
    if plugins.is_empty() {
        return Err(format!("no plugins loaded from {}", args.plugins.display()));
    }
    let config = RoundConfig {
        threshold: args.threshold,
        ..Default::default()
    };
    let total = items.len();
    let report = eval::run(
        registry.sandbox(),
        &plugins,
        &items,
        &config,
        args.seed,
        args.byzantine,
        |k, r| {
            eprint!(
                "\r{}/{} {:<40}",
                k + 1,
                total,
                format!(
                    "{} {}",
                    r.id.chars().take(30).collect::<String>(),
                    if r.swarm_right { "right" } else { "wrong" }
                )
            )
        },
    )?;
    eprintln!();
    let names: Vec<String> = plugins.iter().map(|p| p.name.clone()).collect();
    let mut table = String::new();
    table.push_str(&format!("{:<16} {:>6}", "dataset", "items"));
    for n in &names {
        table.push_str(&format!(" {:>9}", n.chars().take(9).collect::<String>()));
    }
    table.push_str(&format!(
        " {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "majority",
        "swarm",
        if args.byzantine > 0.0 {
            "swarm-byz"
        } else {
            "-"
        },
        "oracle",
        "answered",
        "judged"
    ));
    let pct = |n: usize, of: usize| {
        if of == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * n as f64 / of as f64)
        }
    };
    let rows = report
        .per_task
        .iter()
        .map(|(k, t)| (k.as_str(), t))
        .chain(std::iter::once(("overall", &report.overall)));
    for (name, t) in rows {
        table.push_str(&format!("{:<16} {:>6}", name, t.items));
        for n in &names {
            table.push_str(&format!(
                " {:>9}",
                pct(t.per_plugin.get(n).copied().unwrap_or(0), t.items)
            ));
        }
        table.push_str(&format!(
            " {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            pct(t.majority, t.items),
            pct(t.swarm, t.items),
            if args.byzantine > 0.0 {
                pct(t.swarm_byzantine, t.items)
            } else {
                "-".into()
            },
            pct(t.oracle, t.items),
            pct(t.answered, t.items),
            pct(t.judged, t.items)
        ));
    }
    table.push_str(&format!(
        "{:.1} rounds per minute; seed {}{}\n",
        report.rounds_per_minute,
        report.seed,
        if args.byzantine > 0.0 {
            format!(
                "; {:.0}% of judges adversarial in swarm-byz",
                args.byzantine * 100.0
            )
        } else {
            String::new()
        }
    ));
    if args.json {
        eprint!("{table}");
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{table}");
    }
    Ok(ExitCode::SUCCESS)
}

/// "3 honest, 1 forged": counts with what they count.
fn counts<'a>(items: impl Iterator<Item = (&'a String, impl std::fmt::Display)>) -> String {
    items
        .map(|(what, n)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}
