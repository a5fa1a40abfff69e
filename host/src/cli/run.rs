//! `apiary run`: a swarm node. Loads the plugins (and watches for changes), joins the
//! swarm over libp2p and serves the OpenAI-compatible HTTP API until Ctrl-C. The
//! governor (`[governor]` in the config file, `--governor`) decides from the machine's
//! load whether the node works, works less or rests.
//!
//! Every flag is also a key of the config file; [`RunCommand::configure`] merges the
//! file under what the command line and the environment set (`config show` uses it too).

use super::config::{Merge, parse_list, path_json};
use super::{CliError, Context, RoundArgs, default_data_dir, open_ledger, runtime};
use apiary::api::{Admission, ApiOptions};
use apiary::governor::{Governor, Mode, Rules};
use apiary::plugins::Registry;
use apiary::plugins::registry::{Status, WatchHandle};
use apiary::swarm::Node;
use clap::Args;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct RunCommand {
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
    /// Who decides when the node works: `auto` (the `[governor]` rules, from the
    /// machine's load, battery and idleness), `always` (a dedicated machine) or `never`
    /// (paused). Default: the config file's `[governor] mode`, else auto.
    #[arg(long, value_name = "MODE")]
    governor: Option<Mode>,
    /// Rounds this node starts through its HTTP API at once.
    #[arg(long, value_name = "N", default_value_t = Admission::default().max_rounds)]
    max_rounds: usize,
    /// Requests that may wait for a round beyond --max-rounds (more get 429).
    #[arg(long, value_name = "N", default_value_t = Admission::default().queue)]
    queue: usize,
    /// Multiple-choice items with their right answers (JSON lines, the `apiary eval`
    /// format) that this node asks the swarm now and then while it is idle, as rounds
    /// like any other, so that its standings learn which members are right, not only
    /// which agree (see `apiary::bank`).
    #[arg(long, value_name = "FILE")]
    known_answers: Option<PathBuf>,
    /// Minutes between two known-answer rounds, on average.
    #[arg(long, value_name = "MINUTES", default_value_t = 20.0)]
    known_every: f64,
    #[command(flatten)]
    round: RoundArgs,
}

impl RunCommand {
    /// The file's values for every flag that neither the command line nor the
    /// environment set, and the governor's rules (validated).
    pub fn configure(&mut self, merge: &mut Merge) -> Result<Rules, CliError> {
        let v = merge.file.values.clone();
        let file = merge.file;
        let listen = parse_list("listen", file, &v.listen)?;
        let bootstrap = parse_list("bootstrap", file, &v.bootstrap)?;
        let addrs =
            |a: &Vec<libp2p::Multiaddr>| json!(a.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        merge.take("plugins", &mut self.plugins, v.plugins, |p| path_json(p));
        merge.take("data-dir", &mut self.data_dir, v.data_dir.map(Some), |d| {
            path_json(&d.clone().unwrap_or_else(default_data_dir))
        });
        merge.take("listen", &mut self.listen, listen, addrs);
        merge.take("bootstrap", &mut self.bootstrap, bootstrap, addrs);
        merge.take("http", &mut self.http, v.http, |h| json!(h));
        // The key itself is a secret: `config show` says whether one is set.
        merge.take("api-key", &mut self.api_key, v.api_key.map(Some), |k| {
            k.as_ref().map_or(Value::Null, |_| json!("(set)"))
        });
        merge.take("no-mdns", &mut self.no_mdns, v.no_mdns, |b| json!(b));
        merge.take("max-rounds", &mut self.max_rounds, v.max_rounds, |n| {
            json!(n)
        });
        merge.take("queue", &mut self.queue, v.queue, |n| json!(n));
        merge.take(
            "known-answers",
            &mut self.known_answers,
            v.known_answers.map(Some),
            |p| p.as_deref().map_or(Value::Null, path_json),
        );
        merge.take("known-every", &mut self.known_every, v.known_every, |m| {
            json!(m)
        });
        if !(self.known_every.is_finite() && self.known_every * 60_000.0 >= 1_000.0) {
            return Err(CliError::Usage(format!(
                "--known-every (known-every) is {} minutes; give at least 1/60 (one second)",
                self.known_every
            )));
        }
        self.round.configure(merge);
        if self.max_rounds == 0 {
            return Err(CliError::Usage(
                "--max-rounds (max-rounds) must be at least 1; to stop work, use `apiary pause` \
                 or --governor never"
                    .into(),
            ));
        }
        merge.rules(self.governor)
    }

    pub fn run(mut self, ctx: &Context) -> Result<ExitCode, CliError> {
        let mut merge = Merge::new(ctx.command, ctx.leaf(), ctx.config);
        let rules = self.configure(&mut merge)?;
        // Read first: a bad bank is the operator's typo, told before anything starts.
        let bank = self
            .known_answers
            .as_deref()
            .map(apiary::bank::Bank::read)
            .transpose()
            .map_err(|e| CliError::Input(e.to_string()))?;
        let registry = ctx.sandbox.empty_registry(&self.plugins)?;
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        let (key, ledger) = open_ledger(&data_dir)?;
        runtime()?.block_on(async move {
            let node = Node::start(
                key,
                ledger,
                Arc::new(apiary::swarm::Plugins {
                    registry: registry.clone(),
                }),
                self.net(),
                self.round.settings(),
                apiary::swarm::Persona::Honest,
            )
            .map_err(CliError::node)?;
            let governor = Governor::start(rules);
            let s = governor.status();
            eprintln!("governor: mode {}, {} ({})", s.mode, s.state, s.reason);
            node.set_governor(governor);
            if let Some(bank) = bank {
                self.play_known(&node, bank);
            }
            self.serve(node, registry, &data_dir).await
        })
    }

    fn net(&self) -> apiary::swarm::NetConfig {
        apiary::swarm::NetConfig {
            listen: self.listen.clone(),
            bootstrap: self.bootstrap.clone(),
            mdns: !self.no_mdns,
            ..Default::default()
        }
    }

    /// The HTTP API, until Ctrl-C.
    async fn serve(
        &self,
        node: Node,
        registry: Arc<Registry>,
        data_dir: &Path,
    ) -> Result<ExitCode, CliError> {
        let listener = tokio::net::TcpListener::bind(&self.http)
            .await
            .map_err(|e| {
                CliError::Node(format!(
                    "cannot serve HTTP on {}: {e} (pass --http ADDR)",
                    self.http
                ))
            })?;
        let http = listener.local_addr().map_err(CliError::node)?;
        // Serve first, then load: `/health` says 503 while plugins compile (minutes for
        // a large model without a cache), so a supervisor can tell loading from dead.
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut options = self.api_options(registry.clone());
        options.ready = Some(ready.clone());
        let server = tokio::spawn(apiary::api::serve_with(listener, node.clone(), options));
        announce(&node, http, data_dir).await;
        let dir = self.plugins.clone();
        let loaded = tokio::task::spawn_blocking(move || registry.rescan().map(|_| registry))
            .await
            .map_err(|e| CliError::Plugins(format!("loading the plugins failed: {e}")))?
            .map_err(|e| CliError::Plugins(format!("cannot read {}: {e}", dir.display())))?;
        report_listing(&loaded);
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        println!("ready");
        let _ = std::io::stdout().flush();
        // Held for as long as the node runs; dropping it stops the watcher.
        let _watch = watch(&loaded, &self.plugins);
        tokio::select! {
            _ = server => {}
            _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl RunCommand {
    /// The node's known-answer rounds, for as long as it runs. The schedule's seed is
    /// fresh each start: nobody else should be able to tell when the tests come.
    fn play_known(&self, node: &Node, bank: apiary::bank::Bank) {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("the operating system provides randomness");
        let every = std::time::Duration::from_secs_f64(self.known_every * 60.0);
        eprintln!(
            "known-answer bank: {} items, a round every {} minutes on average while idle",
            bank.items.len(),
            self.known_every
        );
        apiary::bank::spawn(node.clone(), bank, every, u64::from_le_bytes(seed));
    }

    fn api_options(&self, registry: Arc<Registry>) -> ApiOptions {
        ApiOptions {
            token: self.api_key.clone(),
            admission: Admission {
                max_rounds: self.max_rounds,
                queue: self.queue,
            },
            registry: Some(registry),
            ..Default::default()
        }
    }
}

fn report_listing(registry: &Registry) {
    for l in registry.listing() {
        match &l.status {
            Status::Refused { reason } => {
                eprintln!("warning: plugin {} refused: {reason}", l.id)
            }
            Status::Loaded { name, .. } => {
                eprintln!("plugin {name} loaded")
            }
        }
    }
}

/// Hot reload is a convenience: a node that cannot watch its folder still serves.
fn watch(registry: &Arc<Registry>, dir: &Path) -> Option<WatchHandle> {
    registry
        .watch(|report| {
            if !report.is_empty() {
                eprintln!(
                    "plugins changed: {}",
                    serde_json::to_string(report).unwrap_or_default()
                )
            }
        })
        .map_err(|e| eprintln!("warning: not watching {} for changes: {e}", dir.display()))
        .ok()
}

/// Where the node can be reached, on stdout: scripts and tests read these lines to find
/// the ports that were picked.
async fn announce(node: &Node, http: std::net::SocketAddr, data_dir: &Path) {
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
    let _ = std::io::stdout().flush();
}
