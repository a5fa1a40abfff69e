//! What a node has done, for `GET /metrics` (the OpenMetrics text format, which
//! Prometheus scrapes), built on the Prometheus project's own Rust client.
//!
//! Why one process-wide set: metrics describe the process an operator runs, and the
//! places that count (a plugin call deep in the sandbox adapter, a round in the node, an
//! HTTP refusal in the API) share no object they could hang a registry on without
//! threading it through every layer. Counters are atomics, so counting costs nothing
//! measurable beside a plugin call. Figures that another part already keeps (peers,
//! refused messages by reason, the governor's state) are not counted twice: the API
//! copies them into gauges just before it encodes ([`Metrics::encode`]'s `snapshot`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    pub plugin: String,
    pub call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// A label value as the text format wants it. The client library writes label values as
/// given, and plugin names and refusal reasons come from outside: unescaped, a quote or a
/// newline in one would end the line and forge metrics of its own.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Figures owned elsewhere, copied in at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub peers: usize,
    /// Refused peer messages by reason (the network side's own counts).
    pub refused: Vec<(String, u64)>,
    /// The governor's state, one of `active`, `throttled`, `paused`.
    pub governor: Option<String>,
    pub rounds_running: usize,
    pub rounds_queued: usize,
}

pub struct Metrics {
    registry: Registry,
    rounds: Family<OutcomeLabel, Counter>,
    round_seconds: Histogram,
    plugin_call_seconds: Family<CallLabel, Histogram, fn() -> Histogram>,
    plugin_faults: Family<PluginLabel, Counter>,
    http_rejected: Family<ReasonLabel, Counter>,
    peers: Gauge,
    refused: Family<ReasonLabel, Gauge>,
    governor: Family<StateLabel, Gauge>,
    rounds_running: Gauge,
    rounds_queued: Gauge,
    known_rounds: Family<OutcomeLabel, Counter>,
}

/// Seconds, from a few milliseconds (a rule-based plugin) to minutes (a language model
/// on a busy CPU).
fn latency_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ])
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("apiary");
        let m = Metrics {
            rounds: Family::default(),
            round_seconds: latency_buckets(),
            plugin_call_seconds: Family::new_with_constructor(latency_buckets),
            plugin_faults: Family::default(),
            http_rejected: Family::default(),
            peers: Gauge::default(),
            refused: Family::default(),
            governor: Family::default(),
            rounds_running: Gauge::default(),
            rounds_queued: Gauge::default(),
            known_rounds: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rounds",
            "Rounds this node started, by outcome (decided_by, or failed)",
            m.rounds.clone(),
        );
        registry.register(
            "round_seconds",
            "Time from a chat request to its round's result",
            m.round_seconds.clone(),
        );
        registry.register(
            "plugin_call_seconds",
            "Time of one plugin call (assess, answer, judge), by plugin",
            m.plugin_call_seconds.clone(),
        );
        registry.register(
            "plugin_faults",
            "Plugin calls that trapped, ran out of time or memory, by plugin",
            m.plugin_faults.clone(),
        );
        registry.register(
            "http_rejected",
            "Chat requests refused before a round started, by reason",
            m.http_rejected.clone(),
        );
        registry.register("peers", "Peers connected now", m.peers.clone());
        registry.register(
            "refused_messages",
            "Peer messages refused since start, by reason",
            m.refused.clone(),
        );
        registry.register(
            "governor_state",
            "1 for the governor's current state, 0 for the others",
            m.governor.clone(),
        );
        registry.register(
            "rounds_running",
            "Rounds started through the API and not yet finished",
            m.rounds_running.clone(),
        );
        registry.register(
            "rounds_queued",
            "Chat requests waiting for a round slot",
            m.rounds_queued.clone(),
        );
        registry.register(
            "known_rounds",
            "Known-answer rounds from this node's bank, by outcome (right, wrong, failed)",
            m.known_rounds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A round this node started ended: `outcome` is how it was decided, or `failed`.
    pub fn round(&self, outcome: &str, took: Duration) {
        self.rounds
            .get_or_create(&OutcomeLabel {
                outcome: label(outcome),
            })
            .inc();
        self.round_seconds.observe(took.as_secs_f64());
    }

    /// A known-answer round from the node's bank (`crate::bank`) ended: `outcome` says
    /// whether the swarm picked the right option: a live accuracy figure for the
    /// operator. (Each is a round this node started, so `rounds` counts it too.)
    pub fn known_round(&self, outcome: &str) {
        self.known_rounds
            .get_or_create(&OutcomeLabel {
                outcome: label(outcome),
            })
            .inc();
    }

    pub fn plugin_call(&self, plugin: &str, call: &str, took: Duration, fault: bool) {
        self.plugin_call_seconds
            .get_or_create(&CallLabel {
                plugin: label(plugin),
                call: label(call),
            })
            .observe(took.as_secs_f64());
        if fault {
            self.plugin_faults
                .get_or_create(&PluginLabel {
                    plugin: label(plugin),
                })
                .inc();
        }
    }

    /// A chat request refused at the door (`busy`: 429; `too_large`: 413).
    pub fn http_rejected(&self, reason: &str) {
        self.http_rejected
            .get_or_create(&ReasonLabel {
                reason: label(reason),
            })
            .inc();
    }

    /// The OpenMetrics text of everything, with `snapshot` copied in first.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        self.peers.set(snapshot.peers as i64);
        for (reason, n) in &snapshot.refused {
            self.refused
                .get_or_create(&ReasonLabel {
                    reason: label(reason),
                })
                .set(*n as i64);
        }
        if let Some(state) = &snapshot.governor {
            for s in ["active", "throttled", "paused"] {
                self.governor
                    .get_or_create(&StateLabel {
                        state: s.to_string(),
                    })
                    .set(i64::from(s == state));
            }
        }
        self.rounds_running.set(snapshot.rounds_running as i64);
        self.rounds_queued.set(snapshot.rounds_queued as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// OpenMetrics' media type; Prometheus asks for it and parses it strictly.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_snapshot_appear_in_the_text() {
        let m = Metrics::new();
        m.round("support", Duration::from_millis(1200));
        m.round("failed", Duration::from_millis(30));
        m.plugin_call("arith", "answer", Duration::from_millis(3), false);
        m.plugin_call("hog", "answer", Duration::from_secs(2), true);
        m.http_rejected("busy");
        let text = m.encode(&Snapshot {
            peers: 3,
            refused: vec![("bad signature".into(), 2)],
            governor: Some("paused".into()),
            rounds_running: 1,
            rounds_queued: 0,
        });
        for line in [
            "apiary_rounds_total{outcome=\"support\"} 1",
            "apiary_rounds_total{outcome=\"failed\"} 1",
            "apiary_round_seconds_count 2",
            "apiary_plugin_call_seconds_count{plugin=\"hog\",call=\"answer\"} 1",
            "apiary_plugin_faults_total{plugin=\"hog\"} 1",
            "apiary_http_rejected_total{reason=\"busy\"} 1",
            "apiary_peers 3",
            "apiary_refused_messages{reason=\"bad signature\"} 2",
            "apiary_governor_state{state=\"paused\"} 1",
            "apiary_governor_state{state=\"active\"} 0",
            "apiary_rounds_running 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("apiary_plugin_faults_total{plugin=\"arith\"}"));
    }

    #[test]
    fn hostile_label_values_are_escaped() {
        let m = Metrics::new();
        m.plugin_call("a\"b\nc", "answer", Duration::from_millis(1), true);
        let text = m.encode(&Snapshot::default());
        assert!(text.contains(r#"plugin="a\"b\nc""#), "{text}");
        assert!(text.lines().all(|l| !l.starts_with('c')));
    }
}
