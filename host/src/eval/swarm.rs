//! `apiary eval --nodes N`: the same items through a swarm of N nodes in this process,
//! over libp2p's in-memory transport, with the plugins spread over the nodes. Every
//! message is signed, gated and checked as between real nodes, so the eval measures the
//! networked protocol itself; only the wire's latency is missing.

use super::{ItemResult, Items, Played, Report, run_with};
use crate::plugins::Plugin;
use crate::sandbox::Sandbox;
use crate::swarm::expertise::PluginSet;
use crate::swarm::{Expertise, Limits, Node, Persona, RoundFailure, RoundSettings, sim};
use std::sync::Arc;

/// Which plugins each node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Plugin `i` on node `i mod N`: one plugin per node when N is the number of plugins.
    Spread,
    /// Named groups, one per node: `arith+facts,units` is two nodes.
    Groups(Vec<Vec<String>>),
}

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(s: &str) -> Result<Layout, String> {
        if s == "spread" {
            return Ok(Layout::Spread);
        }
        let groups: Vec<Vec<String>> = s
            .split(',')
            .map(|g| g.split('+').map(|p| p.trim().to_string()).collect())
            .collect();
        if groups.iter().flatten().any(|p| p.is_empty()) {
            return Err(format!(
                "layout {s:?}: name plugins as `a+b,c` (a node per comma), or say `spread`"
            ));
        }
        Ok(Layout::Groups(groups))
    }
}

/// The plugins of each node.
pub fn arrange(
    layout: &Layout,
    nodes: Option<usize>,
    plugins: &[Arc<Plugin>],
) -> Result<Vec<Vec<Arc<Plugin>>>, String> {
    let groups = match layout {
        Layout::Spread => {
            let n = nodes.unwrap_or(plugins.len());
            if n == 0 || n > plugins.len() {
                return Err(format!(
                    "--nodes {n} with {} plugins: every node needs a plugin to answer or judge with",
                    plugins.len()
                ));
            }
            (0..n)
                .map(|i| plugins.iter().skip(i).step_by(n).cloned().collect())
                .collect()
        }
        Layout::Groups(names) => names
            .iter()
            .map(|g| g.iter().map(|name| find(plugins, name)).collect())
            .collect::<Result<Vec<Vec<_>>, String>>()?,
    };
    if let Some(n) = nodes
        && n != groups.len()
    {
        return Err(format!(
            "--nodes {n} but the layout names {} nodes",
            groups.len()
        ));
    }
    Ok(groups)
}

fn find(plugins: &[Arc<Plugin>], name: &str) -> Result<Arc<Plugin>, String> {
    plugins
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
            format!(
                "layout names plugin {name:?}, which is not loaded (loaded: {})",
                known.join(", ")
            )
        })
}

/// Start one node per group; node 0 is the entry node of every round.
pub async fn start(
    sandbox: &Arc<Sandbox>,
    groups: Vec<Vec<Arc<Plugin>>>,
    settings: &RoundSettings,
    seed: u64,
) -> Result<Vec<Node>, String> {
    let members = groups
        .into_iter()
        .map(|plugins| {
            let set = PluginSet {
                sandbox: sandbox.clone(),
                plugins,
            };
            (Arc::new(set) as Arc<dyn Expertise>, Persona::Honest)
        })
        .collect();
    // Rounds run back to back, far faster than one operator would announce them.
    sim::spawn(seed, settings, members, Limits::simulation()).await
}

/// Play one item's request as a round of the swarm whose entry node is `entry`; with
/// `known`, as a known-answer round.
pub async fn play(
    entry: &Node,
    request: &crate::sandbox::Request,
    known: Option<u32>,
) -> Result<Played, String> {
    let started = std::time::Instant::now();
    let seed = Some(request.seed);
    let r = match known {
        Some(k) => entry.ask_known(request.clone(), seed, k).await,
        None => entry.ask_request(request.clone(), seed, None).await,
    };
    match r {
        Ok(r) => Ok(Played::swarm(&r)),
        Err(RoundFailure::NoVolunteers | RoundFailure::NoAnswers(_)) => {
            Ok(Played::nothing(started.elapsed().as_millis() as u64))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Every item as a round of a swarm of the plugins laid out by `groups`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    sandbox: &Arc<Sandbox>,
    groups: Vec<Vec<Arc<Plugin>>>,
    items: Items<'_>,
    settings: &RoundSettings,
    seed: u64,
    byzantine: f64,
    progress: impl FnMut(usize, &ItemResult),
) -> Result<Report, String> {
    let mut names: Vec<String> = groups.iter().flatten().map(|p| p.name.clone()).collect();
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let nodes = rt.block_on(start(sandbox, groups, settings, seed))?;
    let entry = nodes[0].clone();
    let report = run_with(
        &names,
        items,
        seed,
        byzantine,
        progress,
        |request, known| rt.block_on(play(&entry, request, known)),
    );
    for n in &nodes {
        n.net().shutdown();
    }
    report
}
