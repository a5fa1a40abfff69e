//! `apiary run`: a swarm node. Loads the plugins (and watches for changes), joins the
//! swarm over libp2p and serves the OpenAI-compatible HTTP API until Ctrl-C.

use super::{CliError, RoundArgs, SandboxArgs, default_data_dir, open_ledger, runtime};
use apiary::plugins::Registry;
use apiary::plugins::registry::{Status, WatchHandle};
use apiary::swarm::Node;
use clap::Args;
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
    #[command(flatten)]
    round: RoundArgs,
}

impl RunCommand {
    pub fn run(self, sandbox: &SandboxArgs) -> Result<ExitCode, CliError> {
        let registry = sandbox.registry(&self.plugins)?;
        report_listing(&registry);
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        let (key, ledger) = open_ledger(&data_dir)?;
        runtime()?.block_on(async move {
            // Held for as long as the node runs; dropping it stops the watcher.
            let _watch = watch(&registry, &self.plugins);
            let node = Node::start(
                key,
                ledger,
                Arc::new(apiary::swarm::Plugins { registry }),
                self.net(),
                self.round.settings(),
                apiary::swarm::Persona::Honest,
            )
            .map_err(CliError::node)?;
            self.serve(node, &data_dir).await
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
    async fn serve(&self, node: Node, data_dir: &Path) -> Result<ExitCode, CliError> {
        let listener = tokio::net::TcpListener::bind(&self.http)
            .await
            .map_err(|e| {
                CliError::Node(format!(
                    "cannot serve HTTP on {}: {e} (pass --http ADDR)",
                    self.http
                ))
            })?;
        let http = listener.local_addr().map_err(CliError::node)?;
        announce(&node, http, data_dir).await;
        tokio::select! {
            _ = apiary::api::serve(listener, node, self.api_key.clone()) => {}
            _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
        }
        Ok(ExitCode::SUCCESS)
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
