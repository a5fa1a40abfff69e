//! `apiary plugins check`: what a node will think of a plugin, before it is published.
//!
//! The plugin is loaded by [`Registry::load_one`], the code path (thread, load budget,
//! compile cache, import and contract checks, describe) of a node's rescan, under the
//! operator ceilings the command line gives. Then every export is called the way a round
//! calls it, a fresh instance per request, with a standard set of requests: questions of
//! its declared domains and of domains it did not declare, multiple choice, a
//! conversation, an empty prompt, and prompts just within and just past the longest a
//! node forwards. Pairs of answers are judged in both orders.
//!
//! Every call runs under the plugin's own granted budget, so a plugin that hangs costs
//! one budget, not the check: once an export has timed out it is not called again (a node
//! would have quarantined it by its third faulty round anyway).
//!
//! The result is a list of named items, each pass, warn or fail with a message that says
//! what to fix. A node refuses or quarantines a plugin for what fails here: a load
//! refusal, a trap, a timeout, a memory or output limit, an output the host must correct
//! (a NaN, a preference past certainty), volunteering for another domain's questions, or
//! a judge whose verdict depends on the order of the candidates.

use crate::plugins::{LoadError, Plugin, Registry};
use crate::sandbox::imports::CONTRACT_VERSION;
use crate::sandbox::limits::{CallKind, Limits};
use crate::sandbox::{CallError, CallUsage, Correction, Judgment, Message, Request, Session};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A preference and its mirror must add up to 1 within this (a judge that scores each
/// candidate on its own, with floating-point noise, passes easily).
pub const ORDER_TOLERANCE: f32 = 0.1;
/// `assess` at or below this outside the plugin's domains is declining.
pub const DECLINES_AT: f32 = 0.1;
/// `assess` at or above this volunteers: a node's default threshold (`run --threshold`).
pub const VOLUNTEERS_AT: f32 = 0.5;
/// Calls that take more than this share of their budget pass with a warning: a slower
/// or busier machine will time them out.
pub const SLOW_SHARE: f64 = 0.5;
/// Memory above this share of the limit passes with a warning.
pub const FULL_SHARE: f64 = 0.75;
/// Room left in a peer's announcement for everything but the prompt: the round's ids,
/// deadlines, up to 16 other open rounds and the signature (a few hundred bytes; 4 KiB
/// to spare).
const ANNOUNCEMENT_ROOM: usize = 4 << 10;
/// The longest prompt a node hands a plugin. A request reaches other nodes' plugins in
/// one signed announcement of at most `wire::MAX_MESSAGE_BYTES`, and `apiary run`
/// refuses (413) what would not fit.
pub const LARGEST_PROMPT_BYTES: usize = crate::swarm::wire::MAX_MESSAGE_BYTES - ANNOUNCEMENT_ROOM;
/// Just past anything a node forwards (only `apiary ask --plugins`, in one process,
/// passes a prompt this long).
pub const PAST_LARGEST_PROMPT_BYTES: usize = crate::swarm::wire::MAX_MESSAGE_BYTES + 1;

/// A question for each family of domains, for the in-domain probes. A domain not listed
/// gets a question naming it; `--prompt` adds the author's own.
const DOMAIN_QUESTIONS: &[(&[&str], &str)] = &[
    (&["math", "arithmetic", "algebra"], "What is 17 * 23?"),
    (
        &["units", "conversion", "measurement"],
        "How many feet are in 3 meters?",
    ),
    (
        &[
            "general",
            "knowledge",
            "facts",
            "geography",
            "trivia",
            "chat",
        ],
        "What is the capital of France?",
    ),
    (
        &["words", "text", "strings"],
        "How many words are in \"the quick brown fox\"?",
    ),
    (
        &["code", "programming"],
        "Write a Rust function that reverses a string.",
    ),
    (
        &["chemistry", "science"],
        "What is the chemical symbol for gold?",
    ),
];

/// Domains no plugin of ours declares, each with a question of its own: a plugin must
/// decline when the hint names one it did not declare.
const FOREIGN: &[(&str, &str)] = &[
    ("cooking", "How long should I boil an egg for a soft yolk?"),
    ("poetry", "Write a haiku about autumn leaves."),
    ("law", "Is a verbal agreement a binding contract?"),
    ("gardening", "When should I prune rose bushes?"),
];

/// Pairs judged in both orders: (question, options, a better answer, a worse one).
const PAIRS: &[(&str, &[&str], &str, &str)] = &[
    ("What is 17 * 23?", &[], "17 * 23 = 391", "381"),
    ("What is the capital of France?", &[], "Paris", "Lyon"),
    (
        "How many words are in \"the quick brown fox\"?",
        &[],
        "4",
        "5",
    ),
    (
        "Which of these animals is a mammal?",
        &["Shark", "Dolphin", "Trout", "Octopus"],
        "B. Dolphin",
        "A. Shark",
    ),
];

/// The worse candidate judged against a plugin's own answers.
const NON_ANSWER: &str = "I don't know.";

/// What the author can add to the standard run.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Questions of the plugin's own domain, asked with its first domain as the hint.
    pub prompts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// Not run (the plugin did not load).
    Skip,
    Warn,
    Fail,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Skip => "skip",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
        }
    }
}

/// One named finding.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub name: &'static str,
    pub outcome: Outcome,
    pub message: String,
}

fn item(name: &'static str, outcome: Outcome, message: impl Into<String>) -> Item {
    Item {
        name,
        outcome,
        message: message.into(),
    }
}

/// One call into the plugin.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    /// Which request (`in-domain:math`, `out-of-domain:cooking`, `judge:2:ba`, ...).
    pub probe: String,
    pub call: CallKind,
    pub ms: f64,
    pub memory_mib: f64,
    pub tensor_mib: f64,
    /// What came back, in a few words.
    pub result: String,
}

/// What the plugin is, as loaded.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub contract: String,
    pub domains: Vec<String>,
    pub sha256: String,
    pub limits: Limits,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub plugin: Option<PluginInfo>,
    pub items: Vec<Item>,
    pub calls: Vec<CallRecord>,
    /// No item failed.
    pub passed: bool,
}

impl Report {
    pub fn worst(&self) -> Outcome {
        self.items
            .iter()
            .map(|i| i.outcome)
            .max()
            .unwrap_or(Outcome::Pass)
    }

    fn finish(
        path: &Path,
        plugin: Option<PluginInfo>,
        items: Vec<Item>,
        calls: Vec<CallRecord>,
    ) -> Report {
        let passed = items.iter().all(|i| i.outcome != Outcome::Fail);
        Report {
            path: path.to_path_buf(),
            plugin,
            items,
            calls,
            passed,
        }
    }
}

/// Whether a judge's verdicts on the same pair in both orders agree: preferences that
/// add up to 1 (within [`ORDER_TOLERANCE`]), or no preference either way (`same`,
/// `abstain`, or a preference of one half).
pub fn order_consistent(ab: &Judgment, ba: &Judgment) -> bool {
    let lean = |j: &Judgment| match j {
        Judgment::Prefer(p) => Some(*p),
        Judgment::Same | Judgment::Abstain => None,
    };
    match (lean(ab), lean(ba)) {
        (Some(p), Some(q)) => (p + q - 1.0).abs() <= ORDER_TOLERANCE,
        (Some(p), None) | (None, Some(p)) => (p - 0.5).abs() <= ORDER_TOLERANCE,
        (None, None) => true,
    }
}

/// A judgment in words.
pub fn judgment_text(j: &Judgment) -> String {
    match j {
        Judgment::Prefer(p) => format!("prefer the first at {p:.2}"),
        Judgment::Same => "same".into(),
        Judgment::Abstain => "abstain".into(),
    }
}

/// How an `assess` score outside the plugin's domains reads: declining, below the
/// default threshold but not declining, or volunteering.
pub fn outside_outcome(score: f32) -> Outcome {
    if score <= DECLINES_AT {
        Outcome::Pass
    } else if score < VOLUNTEERS_AT {
        Outcome::Warn
    } else {
        Outcome::Fail
    }
}

/// The question for a domain's probe.
pub fn domain_question(domain: &str) -> String {
    DOMAIN_QUESTIONS
        .iter()
        .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(domain)))
        .map(|(_, q)| q.to_string())
        .unwrap_or_else(|| format!("Tell me something about {domain}."))
}

/// A prompt of `bytes` bytes of plain prose ending in a question.
pub fn long_prompt(bytes: usize) -> String {
    let question = "\n\nWhich animal jumps over the dog in the text above?";
    let filler = "The quick brown fox jumps over the lazy dog. ";
    let mut s = String::with_capacity(bytes);
    while s.len() + filler.len() + question.len() <= bytes {
        s.push_str(filler);
    }
    s.push_str(&"x".repeat(bytes.saturating_sub(s.len() + question.len())));
    s.push_str(question);
    s
}

/// A request as a node makes it (`round::request`), with a domain hint and options.
fn request(prompt: &str, domain: Option<&str>, choices: &[&str]) -> Request {
    Request {
        domain: domain.map(str::to_string),
        choices: choices.iter().map(|c| c.to_string()).collect(),
        ..crate::round::local::request(prompt, 7)
    }
}

fn conversation() -> Request {
    let turns = [
        ("system", "You are a concise assistant."),
        ("user", "Hello, my name is Ada."),
        ("assistant", "Hello Ada! How can I help you?"),
        ("user", "What is my name?"),
    ];
    Request {
        messages: turns
            .iter()
            .map(|(role, content)| Message {
                role: role.to_string(),
                content: content.to_string(),
            })
            .collect(),
        ..request("What is my name?", None, &[])
    }
}

/// Run the check on the plugin at `path` (a plugin folder, or a bare `.wasm`).
pub fn check(registry: &Registry, path: &Path, options: &CheckOptions) -> Report {
    let plugin = match registry.load_one(path) {
        Ok(p) => p,
        Err(e) => return refused(path, &e),
    };
    let info = PluginInfo {
        name: plugin.name.clone(),
        version: plugin.version.clone(),
        contract: plugin.contract.clone(),
        domains: plugin.domains.clone(),
        sha256: plugin.wasm_sha256.clone(),
        limits: plugin.limits,
    };
    let mut run = Run::new(registry, &plugin);
    let mut items = vec![loaded(&plugin), contract(&plugin)];
    items.extend(clamped(&plugin));
    items.push(run.manifest_domains());
    items.push(run.in_domain(&options.prompts));
    items.push(run.outside_domains());
    items.push(run.multiple_choice());
    items.push(run.conversation());
    items.push(run.empty_prompt());
    items.push(run.oversized_prompt());
    items.push(run.order_consistency());
    items.extend(run.verdicts());
    Report::finish(path, Some(info), items, run.calls)
}

fn refused(path: &Path, e: &LoadError) -> Report {
    let mut items = vec![item(
        "load",
        Outcome::Fail,
        format!(
            "a node refuses it: {e}. `apiary plugins audit {}` shows what the host sees",
            path.display()
        ),
    )];
    for name in [
        "contract",
        "volunteers-in-domain",
        "declines-outside-domains",
        "order-consistency",
        "traps",
        "latency",
        "memory",
        "outputs",
    ] {
        items.push(item(
            name,
            Outcome::Skip,
            "not run: the plugin did not load",
        ));
    }
    Report::finish(path, None, items, Vec::new())
}

fn loaded(p: &Plugin) -> Item {
    let l = &p.limits;
    item(
        "load",
        Outcome::Pass,
        format!(
            "loads as {} {} (sha256 {}); granted assess {} ms, answer {} ms, judge {} ms, \
             {} MiB memory, {} MiB tensors",
            p.name,
            p.version,
            &p.wasm_sha256[..12],
            l.assess_ms,
            l.answer_ms,
            l.compare_ms,
            l.memory_mib,
            l.tensor_mib
        ),
    )
}

fn contract(p: &Plugin) -> Item {
    let current = CONTRACT_VERSION
        .rsplit_once('.')
        .map_or(CONTRACT_VERSION, |(mm, _)| mm);
    if p.contract.starts_with(&format!("{current}.")) || p.contract == current {
        item(
            "contract",
            Outcome::Pass,
            format!(
                "built against contract {} (this host speaks {CONTRACT_VERSION})",
                p.contract
            ),
        )
    } else {
        item(
            "contract",
            Outcome::Warn,
            format!(
                "built against contract {}; this host speaks {CONTRACT_VERSION}. It loads, but \
                 rebuild with the current apiary-plugin-api for graded judgments (`judge`), \
                 conversations and option scores",
                p.contract
            ),
        )
    }
}

fn clamped(p: &Plugin) -> Option<Item> {
    if p.clamped.is_empty() {
        return None;
    }
    let asked: Vec<String> = p
        .clamped
        .iter()
        .map(|c| format!("{} = {} (granted {})", c.field, c.requested, c.granted))
        .collect();
    Some(item(
        "limits",
        Outcome::Warn,
        format!(
            "plugin.toml asks for more than this node's ceilings: {}; it runs under the \
             grant, so measure it there or ask for less",
            asked.join(", ")
        ),
    ))
}

/// A fault in a probe, for the per-kind items.
struct Fault {
    probe: String,
    error: CallError,
}

/// The state of one check: the calls made, the faults and corrections seen.
struct Run<'a> {
    registry: &'a Registry,
    plugin: &'a Plugin,
    calls: Vec<CallRecord>,
    faults: Vec<Fault>,
    /// Faults in the past-the-limit probe: warnings, since no node forwards such a prompt.
    past_faults: Vec<Fault>,
    corrections: Vec<(String, Correction)>,
    invalid: Vec<String>,
    /// Exports that timed out, not called again.
    timed_out: Vec<CallKind>,
    /// Calls that returned, but only when their budget was spent: the host's kernels
    /// stop at the deadline, and a plugin that then declines has lost its answer as
    /// surely as one that timed out.
    overran: Vec<String>,
    /// Probes not (fully) asked because an export had already timed out.
    skipped: Vec<String>,
    /// Requests of its own domains it answered, with the answer: judged against a
    /// non-answer, so a judge of one narrow domain is tried on its own ground too.
    own: Vec<(Request, String)>,
    seed: u64,
}

/// What an answer call came to.
enum Answered {
    Text(crate::sandbox::WitAnswer),
    Declined,
    Faulted,
    Skipped,
}

impl<'a> Run<'a> {
    fn new(registry: &'a Registry, plugin: &'a Plugin) -> Self {
        Run {
            registry,
            plugin,
            calls: Vec::new(),
            faults: Vec::new(),
            past_faults: Vec::new(),
            corrections: Vec::new(),
            invalid: Vec::new(),
            timed_out: Vec::new(),
            overran: Vec::new(),
            skipped: Vec::new(),
            own: Vec::new(),
            seed: 0,
        }
    }

    /// A fresh instance, as each round gets; `None` if it cannot start (a fault).
    fn session(&mut self, probe: &str) -> Option<Session> {
        if self.timed_out.contains(&CallKind::Describe) {
            self.skipped.push(probe.to_string());
            return None;
        }
        self.seed += 1;
        match self.plugin.session(self.registry.sandbox(), self.seed) {
            Ok(s) => Some(s),
            Err(error) => {
                if matches!(error, CallError::Timeout { .. }) {
                    self.timed_out.push(CallKind::Describe);
                }
                self.fault(probe, error);
                None
            }
        }
    }

    fn fault(&mut self, probe: &str, error: CallError) {
        let fault = Fault {
            probe: probe.to_string(),
            error,
        };
        if probe.starts_with("oversized:past") {
            self.past_faults.push(fault);
        } else {
            self.faults.push(fault);
        }
    }

    /// The session is done: keep what the host corrected in it.
    fn close(&mut self, probe: &str, session: Session) {
        for c in session.corrections() {
            self.corrections.push((probe.to_string(), c.clone()));
        }
    }

    /// Make one call, record it, and count a fault; `None` if it faulted or was skipped.
    fn call<T>(
        &mut self,
        session: &mut Session,
        probe: &str,
        kind: CallKind,
        f: impl FnOnce(&mut Session) -> Result<T, CallError>,
        describe: impl FnOnce(&Result<T, CallError>) -> String,
    ) -> Option<Result<T, CallError>> {
        if self.timed_out.contains(&kind) || session.is_poisoned() {
            self.record(probe, kind, None, "skipped: timed out earlier".into());
            self.skipped.push(probe.to_string());
            return None;
        }
        let out = f(session);
        let usage = session.last_call();
        self.record(probe, kind, usage, describe(&out));
        let budget = self.plugin.limits.budget(kind);
        // A decline counts too: the kernels' deadline error is how a plugin usually ends.
        let returned = out.as_ref().map_or_else(|e| !e.is_fault(), |_| true);
        if returned && usage.is_some_and(|u| u.elapsed >= budget) {
            self.overran.push(format!(
                "{probe}: {kind} returned only after its {} ms budget",
                budget.as_millis()
            ));
            // Treated as a timeout from here on: the check stays as quick as the budgets.
            self.timed_out.push(kind);
        }
        match out {
            Err(e) if e.is_fault() => {
                if matches!(e, CallError::Timeout { .. }) {
                    self.timed_out.push(kind);
                }
                self.fault(probe, e);
                None
            }
            other => Some(other),
        }
    }

    fn record(&mut self, probe: &str, call: CallKind, usage: Option<CallUsage>, result: String) {
        let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
        self.calls.push(CallRecord {
            probe: probe.to_string(),
            call,
            ms: usage.map_or(0.0, |u| u.elapsed.as_secs_f64() * 1e3),
            memory_mib: usage.map_or(0.0, |u| mib(u.memory_bytes)),
            tensor_mib: usage.map_or(0.0, |u| mib(u.tensor_peak_bytes)),
            result: crate::plugins::safe_read::excerpt(&result, 120),
        });
    }

    fn assess(&mut self, s: &mut Session, probe: &str, req: &Request) -> Option<f32> {
        self.call(
            s,
            probe,
            CallKind::Assess,
            |s| s.assess(req),
            |r| match r {
                Ok(v) => format!("{v:.2}"),
                Err(e) => e.to_string(),
            },
        )?
        .ok()
    }

    fn answer(&mut self, s: &mut Session, probe: &str, req: &Request) -> Answered {
        if self.timed_out.contains(&CallKind::Answer) {
            self.record(
                probe,
                CallKind::Answer,
                None,
                "skipped: timed out earlier".into(),
            );
            self.skipped.push(probe.to_string());
            return Answered::Skipped;
        }
        let out = self.call(
            s,
            probe,
            CallKind::Answer,
            |s| s.answer(req),
            |r| match r {
                Ok(a) => format!("answered {:?}", a.text),
                Err(e) => e.to_string(),
            },
        );
        match out {
            Some(Ok(a)) => {
                self.validate(probe, req, &a);
                Answered::Text(a)
            }
            Some(Err(_)) => Answered::Declined,
            None => Answered::Faulted,
        }
    }

    /// What a round cannot use in an answer (the host passes these on as they are today,
    /// so the check is where they are caught).
    fn validate(&mut self, probe: &str, req: &Request, a: &crate::sandbox::WitAnswer) {
        if !a.confidence.is_finite() || !(0.0..=1.0).contains(&a.confidence) {
            self.invalid.push(format!(
                "{probe}: confidence {} is not a probability; use Answer::new, which clamps it",
                a.confidence
            ));
        }
        if let Some(i) = a.choice
            && i as usize >= req.choices.len()
        {
            self.invalid.push(format!(
                "{probe}: picked option {i} of a request with {} options; pick one of the \
                 request's options (Answer::from_options) or decline",
                req.choices.len()
            ));
        }
    }

    fn judge(
        &mut self,
        s: &mut Session,
        probe: &str,
        req: &Request,
        a: &str,
        b: &str,
    ) -> Option<Judgment> {
        self.call(
            s,
            probe,
            CallKind::Compare,
            |s| s.judge(req, a, b),
            |r| match r {
                Ok(j) => judgment_text(j),
                Err(e) => e.to_string(),
            },
        )?
        .ok()
    }

    /// One request in a fresh instance: assess, then answer.
    fn ask(&mut self, probe: &str, req: &Request) -> (Option<f32>, Answered) {
        let Some(mut s) = self.session(probe) else {
            return (None, Answered::Faulted);
        };
        let score = self.assess(&mut s, probe, req);
        let answered = if s.is_poisoned() {
            Answered::Faulted
        } else {
            self.answer(&mut s, probe, req)
        };
        self.close(probe, s);
        (score, answered)
    }

    /// What went wrong in `probe`, if anything: a fault, or a call that spent its whole
    /// budget (counted in the per-kind items too).
    fn faulted(&self, probe: &str) -> Option<String> {
        self.faults
            .iter()
            .chain(&self.past_faults)
            .find(|f| f.probe == probe)
            .map(|f| f.error.to_string())
            .or_else(|| {
                let prefix = format!("{probe}: ");
                self.overran
                    .iter()
                    .find_map(|o| o.strip_prefix(&prefix).map(str::to_string))
            })
    }

    fn manifest_domains(&mut self) -> Item {
        let Some(mut s) = self.session("describe") else {
            return item(
                "manifest-domains",
                Outcome::Fail,
                "could not start an instance: see traps",
            );
        };
        let described = s.describe();
        self.record(
            "describe",
            CallKind::Describe,
            s.last_call(),
            "described".into(),
        );
        self.close("describe", s);
        let Ok(described) = described else {
            return item(
                "manifest-domains",
                Outcome::Fail,
                "describe failed: see traps",
            );
        };
        let declared = &self.plugin.domains;
        let norm = |v: &[String]| {
            let mut v: Vec<String> = v.iter().map(|d| d.to_lowercase()).collect();
            v.sort();
            v
        };
        if declared.is_empty() {
            item(
                "manifest-domains",
                Outcome::Warn,
                "declares no domains: a hint never matches it. Return them from describe() \
                 (and list them in plugin.toml)",
            )
        } else if norm(declared) != norm(&described.domains) {
            item(
                "manifest-domains",
                Outcome::Warn,
                format!(
                    "plugin.toml declares [{}] but describe() says [{}]: a node matches hints \
                     against the first, `assess` is given the second. Make them the same",
                    declared.join(", "),
                    described.domains.join(", ")
                ),
            )
        } else {
            item(
                "manifest-domains",
                Outcome::Pass,
                format!("domains [{}]", declared.join(", ")),
            )
        }
    }

    fn in_domain(&mut self, extra: &[String]) -> Item {
        let domains: Vec<String> = self.plugin.domains.iter().take(3).cloned().collect();
        let mut asks: Vec<(String, Request)> = domains
            .iter()
            .map(|d| {
                (
                    format!("in-domain:{d}"),
                    request(&domain_question(d), Some(d), &[]),
                )
            })
            .collect();
        let hint = domains.first().map(String::as_str);
        for (i, p) in extra.iter().enumerate() {
            asks.push((format!("prompt:{}", i + 1), request(p, hint, &[])));
        }
        let mut volunteered = 0;
        let mut answered = 0;
        for (probe, req) in &asks {
            let (score, a) = self.ask(probe, req);
            if score.is_some_and(|s| s >= VOLUNTEERS_AT) {
                volunteered += 1;
            }
            if let Answered::Text(a) = a {
                answered += 1;
                if self.own.len() < 2 && a.text != NON_ANSWER {
                    self.own.push((req.clone(), a.text));
                }
            }
        }
        let faulted = asks
            .iter()
            .filter(|(p, _)| self.faulted(p).is_some())
            .count();
        if faulted > 0 {
            return item(
                "volunteers-in-domain",
                Outcome::Fail,
                format!(
                    "{faulted} of {} questions of its own domains faulted: see traps, latency, memory",
                    asks.len()
                ),
            );
        }
        if asks.is_empty() {
            return item(
                "volunteers-in-domain",
                Outcome::Warn,
                "declares no domains, so no question of its own was asked; declare them, or \
                 pass --prompt \"...\" with a question it answers",
            );
        }
        if volunteered == 0 {
            return item(
                "volunteers-in-domain",
                Outcome::Warn,
                format!(
                    "volunteered for none of {} questions of its own domains; pass --prompt \"...\" \
                     with a question it answers, so its answers are checked too",
                    asks.len()
                ),
            );
        }
        item(
            "volunteers-in-domain",
            Outcome::Pass,
            format!(
                "volunteered for {volunteered} and answered {answered} of {} questions of its own domains",
                asks.len()
            ),
        )
    }

    fn outside_domains(&mut self) -> Item {
        let foreign: Vec<(&str, &str)> = FOREIGN
            .iter()
            .filter(|(d, _)| {
                !self
                    .plugin
                    .domains
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(d))
            })
            .take(3)
            .copied()
            .collect();
        let mut worst: Option<(f32, &str)> = None;
        for (domain, question) in &foreign {
            let probe = format!("out-of-domain:{domain}");
            let (score, _) = self.ask(&probe, &request(question, Some(domain), &[]));
            if let Some(s) = score
                && worst.is_none_or(|(w, _)| s > w)
            {
                worst = Some((s, domain));
            }
        }
        let Some((score, domain)) = worst else {
            return item(
                "declines-outside-domains",
                Outcome::Fail,
                "assess faulted on every question outside its domains: see traps, latency",
            );
        };
        let outcome = outside_outcome(score);
        let message = match outcome {
            Outcome::Pass => format!(
                "declines questions hinted at other domains ({}; at most {score:.2})",
                foreign
                    .iter()
                    .map(|(d, _)| *d)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Outcome::Warn => format!(
                "assess {score:.2} for a question hinted at {domain:?}: below a node's default \
                 threshold ({VOLUNTEERS_AT}), but not declining; return 0 when the request's \
                 domain hint is not one of yours"
            ),
            _ => format!(
                "volunteers ({score:.2}) for a question hinted at {domain:?}, a domain it does \
                 not declare; return 0 from assess when the request's domain hint is not one \
                 of yours (a plugin that volunteers for everything loses every round it \
                 cannot answer)"
            ),
        };
        item("declines-outside-domains", outcome, message)
    }

    fn multiple_choice(&mut self) -> Item {
        let asks = [
            (
                "choice:mammal",
                request(
                    "Which of these animals is a mammal?",
                    None,
                    &["Shark", "Dolphin", "Trout", "Octopus"],
                ),
            ),
            (
                "choice:product",
                request("What is 6 * 7?", None, &["41", "42", "43", "44"]),
            ),
        ];
        let mut said = Vec::new();
        let mut unpicked = Vec::new();
        for (probe, req) in &asks {
            let (_, a) = self.ask(probe, req);
            said.push(match a {
                Answered::Text(a) => {
                    if a.choice.is_none() {
                        unpicked.push(*probe);
                    }
                    format!("{}: {:?}", probe, a.text)
                }
                Answered::Declined => format!("{probe}: declined"),
                Answered::Faulted | Answered::Skipped => format!("{probe}: not answered"),
            });
        }
        let found = self.scenario(
            "multiple-choice",
            &["choice:mammal", "choice:product"],
            said.join("; "),
        );
        if found.outcome != Outcome::Pass || unpicked.is_empty() {
            return found;
        }
        item(
            "multiple-choice",
            Outcome::Warn,
            format!(
                "{}: answered without picking an option, so the round cannot group it with \
                 the option it means; pick one (Answer::from_options or Answer::choice) or \
                 decline",
                unpicked.join(", ")
            ),
        )
    }

    fn conversation(&mut self) -> Item {
        let (_, a) = self.ask("conversation", &conversation());
        let said = match a {
            Answered::Text(a) => format!("four turns: answered {:?}", a.text),
            Answered::Declined => "four turns: declined".into(),
            _ => String::new(),
        };
        self.scenario("conversation", &["conversation"], said)
    }

    fn empty_prompt(&mut self) -> Item {
        let (score, a) = self.ask("empty", &request("", None, &[]));
        if self.faulted("empty").is_some() || self.skipped.iter().any(|p| p == "empty") {
            return self.scenario("empty-prompt", &["empty"], String::new());
        }
        if score.is_some_and(|s| s >= VOLUNTEERS_AT) {
            return item(
                "empty-prompt",
                Outcome::Warn,
                format!(
                    "volunteers ({:.2}) for an empty prompt; decline it (assess 0)",
                    score.unwrap_or(0.0)
                ),
            );
        }
        let said = match a {
            Answered::Text(a) => format!("answered {:?}", a.text),
            _ => "declined".into(),
        };
        item("empty-prompt", Outcome::Pass, said)
    }

    fn oversized_prompt(&mut self) -> Item {
        let within = request(&long_prompt(LARGEST_PROMPT_BYTES), None, &[]);
        self.ask("oversized:within", &within);
        let past = request(&long_prompt(PAST_LARGEST_PROMPT_BYTES), None, &[]);
        self.ask("oversized:past", &past);
        if self.faulted("oversized:within").is_none() {
            let skip = self.scenario("oversized-prompt", &["oversized:within"], String::new());
            if skip.outcome == Outcome::Skip {
                return skip;
            }
        }
        if let Some(e) = self.faulted("oversized:within") {
            return item(
                "oversized-prompt",
                Outcome::Fail,
                format!(
                    "a {} KiB prompt, which a node forwards, failed ({e}); bound what the \
                     plugin reads (e.g. the prompt's last few KiB) and what it returns, so \
                     every call stays within its limits",
                    LARGEST_PROMPT_BYTES >> 10
                ),
            );
        }
        if let Some(e) = self.faulted("oversized:past") {
            return item(
                "oversized-prompt",
                Outcome::Warn,
                format!(
                    "handles a {} KiB prompt; one just past what a node forwards faulted ({e}). \
                     No node sends it one, but `apiary ask --plugins` would",
                    LARGEST_PROMPT_BYTES >> 10
                ),
            );
        }
        item(
            "oversized-prompt",
            Outcome::Pass,
            format!(
                "handles prompts of {} KiB (the longest a node forwards) and just past it",
                LARGEST_PROMPT_BYTES >> 10
            ),
        )
    }

    /// A scenario's item: fail if any of its probes faulted, skip if one was not asked
    /// (an export had timed out already), else pass with `said`.
    fn scenario(&self, name: &'static str, probes: &[&str], said: String) -> Item {
        let not_asked = probes.iter().find(|p| self.skipped.iter().any(|s| s == *p));
        if let Some(p) = not_asked
            && probes.iter().all(|p| self.faulted(p).is_none())
        {
            return item(
                name,
                Outcome::Skip,
                format!("{p}: not asked, an export had already timed out (see latency)"),
            );
        }
        match probes.iter().find_map(|p| self.faulted(p).map(|e| (*p, e))) {
            Some((p, e)) => item(
                name,
                Outcome::Fail,
                format!("{p}: {e}; see the fault items below"),
            ),
            None => item(name, Outcome::Pass, said),
        }
    }

    fn order_consistency(&mut self) -> Item {
        let mut inconsistent = Vec::new();
        let mut judged = 0;
        let mut committed = 0;
        let standard = PAIRS.iter().map(|(question, options, good, bad)| {
            (
                request(question, None, options),
                good.to_string(),
                bad.to_string(),
            )
        });
        let own = self
            .own
            .clone()
            .into_iter()
            .map(|(req, answer)| (req, answer, NON_ANSWER.to_string()));
        let pairs: Vec<(Request, String, String)> = standard.chain(own).collect();
        for (i, (req, good, bad)) in pairs.iter().enumerate() {
            let question = &req.prompt;
            let probe = format!("judge:{}", i + 1);
            let Some(mut s) = self.session(&probe) else {
                continue;
            };
            let ab = self.judge(&mut s, &format!("{probe}:ab"), req, good, bad);
            let ba = if s.is_poisoned() {
                None
            } else {
                self.judge(&mut s, &format!("{probe}:ba"), req, bad, good)
            };
            self.close(&probe, s);
            let (Some(ab), Some(ba)) = (ab, ba) else {
                continue;
            };
            judged += 1;
            if matches!(ab, Judgment::Prefer(_)) || matches!(ba, Judgment::Prefer(_)) {
                committed += 1;
            }
            if !order_consistent(&ab, &ba) {
                inconsistent.push(format!(
                    "{question:?}: ({good:?}, {bad:?}) → {}, ({bad:?}, {good:?}) → {}",
                    judgment_text(&ab),
                    judgment_text(&ba)
                ));
            }
        }
        if !inconsistent.is_empty() {
            return item(
                "order-consistency",
                Outcome::Fail,
                format!(
                    "the verdict depends on the order of the candidates on {} of {} pairs: {}. \
                     judge(a, b) = prefer p must mean judge(b, a) = prefer 1 − p: score each \
                     candidate on its own, or compare them symmetrically",
                    inconsistent.len(),
                    pairs.len(),
                    list_first(&inconsistent, 2)
                ),
            );
        }
        if judged == 0 {
            return item(
                "order-consistency",
                Outcome::Fail,
                "no pair could be judged: see traps, latency",
            );
        }
        if committed == 0 {
            return item(
                "order-consistency",
                Outcome::Pass,
                format!(
                    "abstained or said `same` on all {judged} pairs, in both orders (a judge that checks answers in its own domain earns reputation)"
                ),
            );
        }
        item(
            "order-consistency",
            Outcome::Pass,
            format!(
                "{judged} pairs judged in both orders; verdicts agree ({committed} with a preference)"
            ),
        )
    }

    /// The per-kind items: what a node would quarantine it for.
    fn verdicts(&self) -> Vec<Item> {
        vec![self.traps(), self.latency(), self.memory(), self.outputs()]
    }

    fn faults_of(&self, pick: impl Fn(&CallError) -> bool) -> Vec<String> {
        self.faults
            .iter()
            .filter(|f| pick(&f.error))
            .map(|f| format!("{}: {}", f.probe, f.error))
            .collect()
    }

    fn traps(&self) -> Item {
        let traps = self.faults_of(|e| {
            matches!(
                e,
                CallError::Panic { .. }
                    | CallError::Trap { .. }
                    | CallError::StackOverflow { .. }
                    | CallError::HostPanic { .. }
                    | CallError::Instantiate { .. }
            )
        });
        if traps.is_empty() {
            return item(
                "traps",
                Outcome::Pass,
                format!("{} calls, none trapped", self.calls.len()),
            );
        }
        item(
            "traps",
            Outcome::Fail,
            format!(
                "{}. A node counts each as a fault (three faulty rounds in a row quarantine the \
                 plugin): return a PluginError instead of panicking, and bound recursion",
                list(&traps)
            ),
        )
    }

    fn latency(&self) -> Item {
        let mut timeouts = self.faults_of(|e| matches!(e, CallError::Timeout { .. }));
        // Past the longest prompt a node forwards, running long is only a warning.
        let counted = self
            .overran
            .iter()
            .filter(|o| !o.starts_with("oversized:past"));
        timeouts.extend(counted.cloned());
        if !timeouts.is_empty() {
            return item(
                "latency",
                Outcome::Fail,
                format!(
                    "{}. Do less per call (bound the input, the tokens generated), or ask for \
                     more time in plugin.toml [limits] (granted up to the node's ceilings)",
                    list(&timeouts)
                ),
            );
        }
        let l = &self.plugin.limits;
        let mut parts = Vec::new();
        let mut slow = Vec::new();
        for (kind, name, budget) in [
            (CallKind::Assess, "assess", l.assess_ms),
            (CallKind::Answer, "answer", l.answer_ms),
            (CallKind::Compare, "judge", l.compare_ms),
        ] {
            // Past the longest prompt a node forwards, running long is the oversized
            // item's warning, not a latency figure.
            let worst = self
                .calls
                .iter()
                .filter(|c| c.call == kind && !c.probe.starts_with("oversized:past"))
                .max_by(|a, b| a.ms.total_cmp(&b.ms));
            let Some(worst) = worst else { continue };
            parts.push(format!("{name} ≤ {:.0} ms of {budget}", worst.ms));
            if worst.ms > budget as f64 * SLOW_SHARE {
                slow.push(format!(
                    "{name} took {:.0} ms ({}) of its {budget} ms",
                    worst.ms, worst.probe
                ));
            }
        }
        if !slow.is_empty() {
            return item(
                "latency",
                Outcome::Warn,
                format!(
                    "{}: over half its budget, so a slower or busier machine will time it out; \
                     do less per call or ask for more time in plugin.toml [limits]",
                    slow.join(", ")
                ),
            );
        }
        item("latency", Outcome::Pass, parts.join(", "))
    }

    fn memory(&self) -> Item {
        let over = self.faults_of(|e| matches!(e, CallError::MemoryLimit { .. }));
        if !over.is_empty() {
            return item(
                "memory",
                Outcome::Fail,
                format!(
                    "{}. Hold less in linear memory (stream, keep tensors on the host), or ask \
                     for more memory-mib in plugin.toml [limits]",
                    list(&over)
                ),
            );
        }
        let l = &self.plugin.limits;
        let peak = |f: fn(&CallRecord) -> f64| self.calls.iter().map(f).fold(0.0f64, f64::max);
        let (linear, tensors) = (peak(|c| c.memory_mib), peak(|c| c.tensor_mib));
        let text = format!(
            "linear memory ≤ {linear:.1} MiB of {} MiB, host tensors ≤ {tensors:.1} MiB of {} MiB",
            l.memory_mib, l.tensor_mib
        );
        if linear > l.memory_mib as f64 * FULL_SHARE || tensors > l.tensor_mib as f64 * FULL_SHARE {
            return item(
                "memory",
                Outcome::Warn,
                format!("{text}: over three quarters of a limit; a longer request may pass it"),
            );
        }
        item("memory", Outcome::Pass, text)
    }

    fn outputs(&self) -> Item {
        let mut bad = self.faults_of(|e| {
            matches!(
                e,
                CallError::OutputFlood { .. } | CallError::AnswerTooLarge { .. }
            )
        });
        bad.extend(
            self.corrections
                .iter()
                .map(|(probe, c)| format!("{probe}: {} (the host corrected it)", c.what)),
        );
        bad.extend(self.invalid.iter().cloned());
        if bad.is_empty() {
            return item(
                "outputs",
                Outcome::Pass,
                "every result was usable as returned",
            );
        }
        item(
            "outputs",
            Outcome::Fail,
            format!(
                "{}. Return scores and preferences in [0, 1] (never NaN), one finite option \
                 score per option, and answers within the answer-kib limit",
                list(&bad)
            ),
        )
    }
}

/// Up to five findings, then how many more.
fn list(found: &[String]) -> String {
    list_first(found, 5)
}

fn list_first(found: &[String], n: usize) -> String {
    let mut shown: Vec<String> = found.iter().take(n).cloned().collect();
    if found.len() > n {
        shown.push(format!("and {} more", found.len() - n));
    }
    shown.join("; ")
}

/// An export as authors know it (`compare` is the host's name for `judge`).
fn call_name(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Compare => "judge",
        CallKind::Describe => "describe",
        CallKind::Assess => "assess",
        CallKind::Answer => "answer",
    }
}

/// The report as text, one line per item, then the calls when `verbose`.
pub fn render(report: &Report, verbose: bool) -> String {
    let mut out = String::new();
    match &report.plugin {
        Some(p) => out.push_str(&format!(
            "checking {} {} (contract {}) from {}\n",
            p.name,
            p.version,
            p.contract,
            report.path.display()
        )),
        None => out.push_str(&format!("checking {}\n", report.path.display())),
    }
    for i in &report.items {
        out.push_str(&format!(
            "  {:<5} {:<25} {}\n",
            i.outcome.label(),
            i.name,
            i.message
        ));
    }
    if verbose {
        out.push_str("calls:\n");
        for c in &report.calls {
            out.push_str(&format!(
                "  {:<22} {:<9} {:>8.1} ms {:>7.1} MiB {:>7.1} MiB tensors  {}\n",
                c.probe,
                call_name(c.call),
                c.ms,
                c.memory_mib,
                c.tensor_mib,
                c.result
            ));
        }
    }
    let (fails, warns) = report
        .items
        .iter()
        .fold((0, 0), |(f, w), i| match i.outcome {
            Outcome::Fail => (f + 1, w),
            Outcome::Warn => (f, w + 1),
            _ => (f, w),
        });
    let total_ms: f64 = report.calls.iter().map(|c| c.ms).sum();
    out.push_str(&if report.passed {
        format!(
            "passed: {} checks, {warns} warning(s), {} calls in {:.1} s\n",
            report.items.len(),
            report.calls.len(),
            total_ms / 1e3
        )
    } else {
        format!(
            "FAILED: {fails} of {} checks failed, {warns} warning(s)\n",
            report.items.len()
        )
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrored_preferences_are_consistent_and_a_first_bias_is_not() {
        let p = Judgment::Prefer;
        assert!(order_consistent(&p(1.0), &p(0.0)));
        assert!(order_consistent(&p(0.7), &p(0.25)));
        assert!(!order_consistent(&p(0.8), &p(0.8)), "always the first");
        assert!(!order_consistent(&p(1.0), &p(1.0)));
        assert!(!order_consistent(&p(0.3), &p(0.3)), "always the second");
        assert!(order_consistent(&Judgment::Same, &Judgment::Same));
        assert!(order_consistent(&Judgment::Abstain, &Judgment::Abstain));
        assert!(order_consistent(&Judgment::Same, &Judgment::Abstain));
        assert!(
            order_consistent(&p(0.55), &Judgment::Abstain),
            "half is no preference"
        );
        assert!(!order_consistent(&p(0.9), &Judgment::Abstain));
        assert!(!order_consistent(&Judgment::Same, &p(0.0)));
        // The edge of the tolerance.
        assert!(order_consistent(&p(0.58), &p(0.5)));
        assert!(!order_consistent(&p(0.65), &p(0.5)));
    }

    #[test]
    fn assess_outside_the_domains_must_be_near_zero() {
        assert_eq!(outside_outcome(0.0), Outcome::Pass);
        assert_eq!(outside_outcome(DECLINES_AT), Outcome::Pass);
        assert_eq!(outside_outcome(0.3), Outcome::Warn);
        assert_eq!(outside_outcome(VOLUNTEERS_AT), Outcome::Fail);
        assert_eq!(outside_outcome(1.0), Outcome::Fail);
    }

    #[test]
    fn probes_are_what_they_claim() {
        for bytes in [LARGEST_PROMPT_BYTES, PAST_LARGEST_PROMPT_BYTES, 100] {
            let p = long_prompt(bytes);
            assert_eq!(p.len(), bytes.max(p.len()), "{bytes}");
            assert!(p.ends_with('?'));
        }
        assert_eq!(
            long_prompt(LARGEST_PROMPT_BYTES).len(),
            LARGEST_PROMPT_BYTES
        );
        const { assert!(PAST_LARGEST_PROMPT_BYTES > crate::swarm::wire::MAX_MESSAGE_BYTES) };
        assert_eq!(domain_question("Math"), "What is 17 * 23?");
        assert_eq!(
            domain_question("juggling"),
            "Tell me something about juggling."
        );
        // No foreign domain is one an example plugin declares.
        for (d, _) in FOREIGN {
            for (names, _) in DOMAIN_QUESTIONS {
                assert!(!names.contains(d), "{d}");
            }
        }
        let c = conversation();
        assert_eq!(c.messages.len(), 4);
        assert_eq!(c.messages.last().unwrap().content, c.prompt);
    }

    #[test]
    fn the_worst_item_decides() {
        let r = Report::finish(
            Path::new("p"),
            None,
            vec![item("a", Outcome::Pass, ""), item("b", Outcome::Warn, "")],
            Vec::new(),
        );
        assert!(r.passed);
        assert_eq!(r.worst(), Outcome::Warn);
        let r = Report::finish(
            Path::new("p"),
            None,
            vec![item("a", Outcome::Fail, "x"), item("b", Outcome::Warn, "")],
            Vec::new(),
        );
        assert!(!r.passed);
        assert!(render(&r, false).contains("FAILED: 1 of 2 checks failed"));
    }
}
