//! What a node brings to a round: its plugins (or, in `apiary sim`, a simulated expert).
//!
//! The round protocol only needs three things from a node: how willing it is
//! ([`Expertise::volunteer`]), an answer, and verdicts on pairs. A node speaks with one
//! voice per round: the plugin that assessed the request highest answers *and* judges,
//! so a node's reputation follows one specialist's competence on that kind of question.

use crate::consensus::Outcome;
use crate::plugins::{Plugin, Registry};
use crate::sandbox::{CallError, Request, Sandbox, Session, WitAnswer};
use std::sync::Arc;

/// A node's part in one round, kept from `assess` to the last verdict.
pub trait Work: Send {
    /// The answer: its text, the author's confidence, and for a multiple-choice request
    /// the option picked and each option's score.
    fn answer(&mut self, req: &Request) -> Result<WitAnswer, String>;
    /// A graded judgment of two candidates to `req`.
    fn judge(&mut self, req: &Request, first: &str, second: &str) -> Result<Outcome, String>;
}

pub struct Volunteer {
    pub score: f32,
    /// Which plugin would answer (for explanations).
    pub plugin: String,
    /// The score reaches the threshold: this node offers to answer.
    pub willing: bool,
    /// The best plugin's live instance: it answers if the node is chosen to, and judges
    /// (an unwilling node may still be asked to judge when too few members answered).
    pub work: Option<Box<dyn Work>>,
}

pub trait Expertise: Send + Sync + 'static {
    /// Assess the request with everything this node has; blocking (plugins run here).
    fn volunteer(&self, req: &Request, threshold: f32) -> Volunteer;
    /// Names for `GET /v1/models` and logs.
    fn names(&self) -> Vec<String>;
}

/// The node's plugins, from a [`Registry`] (hot reload included: each round sees the
/// plugins active when it starts).
pub struct Plugins {
    pub registry: Arc<Registry>,
}

struct PluginWork {
    plugin: Arc<Plugin>,
    session: Session,
    faulted: bool,
}

impl PluginWork {
    /// One plugin call: on a low-priority thread, timed and counted for `/metrics`, a
    /// fault remembered for the quarantine count.
    fn call<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Session) -> Result<T, CallError>,
    ) -> Result<T, String> {
        lower_priority_once();
        let start = std::time::Instant::now();
        let r = f(&mut self.session);
        let fault = matches!(&r, Err(e) if e.is_fault());
        crate::metrics::global().plugin_call(&self.plugin.name, name, start.elapsed(), fault);
        self.note(r)
    }

    fn note<T>(&mut self, r: Result<T, CallError>) -> Result<T, String> {
        r.map_err(|e| {
            if e.is_fault() {
                self.faulted = true;
                tracing::warn!(plugin = %self.plugin.name, "fault: {e}");
            }
            e.to_string()
        })
    }
}

/// Plugin work runs on threads the owner's own programs should win against (the nice
/// value of BOINC's service, and the idle I/O class): lowered once per thread, the first
/// time it runs a plugin call. A thread that cannot be lowered still runs the call.
fn lower_priority_once() {
    thread_local! {
        static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    LOWERED.with(|done| {
        if !done.replace(true)
            && let Err(e) = crate::governor::priority::lower_current_thread()
        {
            tracing::debug!("plugin thread keeps its priority: {e}");
        }
    });
}

impl Drop for PluginWork {
    fn drop(&mut self) {
        self.plugin
            .record_round(self.faulted, crate::plugins::DEFAULT_QUARANTINE_AFTER);
    }
}

impl Work for PluginWork {
    fn answer(&mut self, req: &Request) -> Result<WitAnswer, String> {
        self.call("answer", |s| s.answer(req))
    }

    fn judge(&mut self, req: &Request, first: &str, second: &str) -> Result<Outcome, String> {
        self.call("judge", |s| s.judge(req, first, second))
            .map(crate::round::outcome_of)
    }
}

impl Expertise for Plugins {
    fn volunteer(&self, req: &Request, threshold: f32) -> Volunteer {
        volunteer_with(
            self.registry.sandbox(),
            &self.registry.active(),
            req,
            threshold,
        )
    }

    fn names(&self) -> Vec<String> {
        self.registry
            .active()
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }
}

/// A fixed set of plugins, for nodes that share one process and one folder's plugins
/// between them (`apiary eval --nodes`).
pub struct PluginSet {
    pub sandbox: Arc<Sandbox>,
    pub plugins: Vec<Arc<Plugin>>,
}

impl Expertise for PluginSet {
    fn volunteer(&self, req: &Request, threshold: f32) -> Volunteer {
        volunteer_with(&self.sandbox, &self.plugins, req, threshold)
    }

    fn names(&self) -> Vec<String> {
        self.plugins.iter().map(|p| p.name.clone()).collect()
    }
}

/// Every plugin assesses in parallel; the most willing one speaks for the node.
fn volunteer_with(
    sandbox: &Arc<Sandbox>,
    plugins: &[Arc<Plugin>],
    req: &Request,
    threshold: f32,
) -> Volunteer {
    let mut assessed: Vec<(f32, PluginWork)> = std::thread::scope(|s| {
        let handles: Vec<_> = plugins
            .iter()
            .map(|p| s.spawn(move || assess_one(sandbox, p, req)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    });
    assessed.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.plugin.name.cmp(&b.1.plugin.name))
    });
    match assessed.into_iter().next() {
        Some((score, work)) => Volunteer {
            score,
            plugin: work.plugin.name.clone(),
            willing: score >= threshold,
            work: Some(Box::new(work)),
        },
        None => Volunteer {
            score: 0.0,
            plugin: String::new(),
            willing: false,
            work: None,
        },
    }
}

fn assess_one(sandbox: &Sandbox, p: &Arc<Plugin>, req: &Request) -> Option<(f32, PluginWork)> {
    let session = match p.session(sandbox, req.seed) {
        Ok(s) => s,
        Err(e) => {
            p.record_round(e.is_fault(), crate::plugins::DEFAULT_QUARANTINE_AFTER);
            return None;
        }
    };
    let mut work = PluginWork {
        plugin: p.clone(),
        session,
        faulted: false,
    };
    let score = work.call("assess", |s| s.assess(req)).ok()?;
    Some((score, work))
}
