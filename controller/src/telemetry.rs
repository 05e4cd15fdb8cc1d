//! What the controller's tasks report as they work, for the operator: Prometheus metrics
//! and the stream of realisation events the admin API's `WatchEvents` serves.
//!
//! Owns: the metric families (registered once, in one [`Registry`]) and the event channel.
//! Tasks only add to it (an observation, an event); nothing here is state the controller
//! decides by. Gauges that describe the state (flows per node, objects by kind, switches
//! connected) are not kept here: the metrics endpoint sets them from a snapshot and the
//! agents' status at scrape time, so they can never drift from what they describe. See
//! docs/operations.md for every metric.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;

use crate::features::Owner;

/// How many events a slow `WatchEvents` client may fall behind before it misses some (it
/// is told how many).
const EVENT_BACKLOG: usize = 1024;

/// How many past events `WatchEvents` replays first.
const RECENT_EVENTS: usize = 256;

/// At most this many owners are named in one event; a bigger realisation says how many
/// more there were.
const EVENT_OWNERS: usize = 32;

/// One bundle of changes a switch acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealisationEvent {
    /// When the switch acknowledged it.
    pub time: SystemTime,
    /// The node.
    pub node: String,
    /// The owners recomputed (`pod x/a`, `node node-2`, …), or `all`.
    pub owners: Vec<String>,
    /// Flows added.
    pub flows_added: u64,
    /// Flows deleted.
    pub flows_removed: u64,
    /// Flows modified in place.
    pub flows_modified: u64,
    /// Group and meter changes.
    pub other_changes: u64,
    /// From the agent waking to the switch's reply.
    pub duration: Duration,
    /// The state version realised.
    pub state_version: u64,
}

/// Labels of the realisation latency: which feature's owners the change marked.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabel {
    /// `pod`, `remote_node`, `policy`, `node` (the node's own pipeline and gateway), `all`
    /// (a whole switch).
    pub feature: String,
}

/// Labels of the CNI latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CniLabels {
    /// `add` or `del`.
    pub command: String,
    /// `ok` or the CNI error code.
    pub result: String,
}

/// A node label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// The node.
    pub node: String,
}

/// Labels of the per-node flow gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    /// The node.
    pub node: String,
    /// `desired` or `installed`.
    pub state: String,
}

/// A kind label (errors, objects, drift).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What kind.
    pub kind: String,
}

fn latency_buckets() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The controller's metrics. Names and meanings: docs/operations.md.
pub struct Metrics {
    registry: Registry,
    /// Source event (the state marking a node's owners) → bundle acknowledged, by feature.
    pub realisation_seconds: Family<FeatureLabel, Histogram>,
    /// CNI ADD/DEL handling time, by command and result.
    pub cni_seconds: Family<CniLabels, Histogram>,
    /// Changes per bundle.
    pub bundle_changes: Histogram,
    /// br-int connections after a node's first.
    pub reconnects: Family<NodeLabel, Counter>,
    /// Flows others changed and the controller put right (`restored`: ours, put back;
    /// `removed`: someone else's, deleted).
    pub drift: Family<KindLabel, Counter>,
    /// Errors by kind (`openflow`, `ovsdb`, `agent`, `cni`).
    pub errors: Family<KindLabel, Counter>,
    /// Flows per node (set at scrape).
    pub flows: Family<FlowLabels, Gauge>,
    /// Per node: times its agent planned the node's OVSDB rows (set at scrape).
    pub ovsdb_plans: Family<NodeLabel, Gauge>,
    /// Nodes whose br-int is connected (set at scrape).
    pub switches_connected: Gauge,
    /// Nodes whose pipeline is realised (set at scrape).
    pub nodes_ready: Gauge,
    /// Objects the state holds, by kind (set at scrape).
    pub objects: Family<KindLabel, Gauge>,
    /// 1 once the source has delivered its initial list (set at scrape).
    pub source_synced: Gauge,
    /// Per kind: 1 when listed and its watch not failing (set at scrape).
    pub kind_synced: Family<KindLabel, Gauge>,
    /// 1 while this replica leads (holds the Lease; always 1 without election).
    pub leader: Gauge,
    /// Times this replica took or lost the lead.
    pub leader_changes: Counter,
    /// CNI connections this standby handed on to the leader.
    pub cni_forwarded: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("switchyard");
        let m = Metrics {
            realisation_seconds: Family::new_with_constructor(latency_buckets),
            cni_seconds: Family::new_with_constructor(latency_buckets),
            bundle_changes: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            reconnects: Family::default(),
            drift: Family::default(),
            errors: Family::default(),
            flows: Family::default(),
            ovsdb_plans: Family::default(),
            switches_connected: Gauge::default(),
            nodes_ready: Gauge::default(),
            objects: Family::default(),
            source_synced: Gauge::default(),
            kind_synced: Family::default(),
            leader: Gauge::default(),
            leader_changes: Counter::default(),
            cni_forwarded: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "realisation_seconds",
            "From a state change marking a node's owners to the switch acknowledging the bundle, by feature",
            m.realisation_seconds.clone(),
        );
        registry.register(
            "cni_forwarded",
            "CNI connections this replica, as the standby, handed on to the leader's CNI listener",
            m.cni_forwarded.clone(),
        );
        registry.register(
            "cni_seconds",
            "CNI ADD and DEL handling time in the controller, by command and result",
            m.cni_seconds.clone(),
        );
        registry.register(
            "bundle_changes",
            "Flow, group and meter changes per OpenFlow bundle",
            m.bundle_changes.clone(),
        );
        registry.register(
            "openflow_reconnects",
            "br-int connections after a node's first one",
            m.reconnects.clone(),
        );
        registry.register(
            "flows_drift",
            "Flows changed behind the controller's back and put right (restored: ours put back; removed: foreign ones deleted)",
            m.drift.clone(),
        );
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register(
            "flows",
            "Flows per node, desired and installed",
            m.flows.clone(),
        );
        registry.register(
            "ovsdb_plans",
            "Times a node's agent planned its OVSDB rows (copied its replica and compared it with what the node should have); wakes that change no row, node or attachment skip it",
            m.ovsdb_plans.clone(),
        );
        registry.register(
            "switches_connected",
            "Nodes whose br-int is connected to the controller",
            m.switches_connected.clone(),
        );
        registry.register(
            "nodes_ready",
            "Nodes whose pipeline is realised",
            m.nodes_ready.clone(),
        );
        registry.register(
            "objects",
            "Objects the network state holds, by kind",
            m.objects.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads (holds the leader-election Lease) and programs the switches",
            m.leader.clone(),
        );
        registry.register(
            "leader_changes",
            "Times this replica took or lost the lead",
            m.leader_changes.clone(),
        );
        registry.register(
            "source_synced",
            "1 once the source of Kubernetes objects has delivered its initial list",
            m.source_synced.clone(),
        );
        registry.register(
            "source_kind_synced",
            "Per kind of object: 1 when the source has listed it and its watch is not failing",
            m.kind_synced.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Everything in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The controller's observations: metrics and realisation events. One per controller,
/// shared by every task (`Arc`).
pub struct Telemetry {
    /// The metrics.
    pub metrics: Metrics,
    events: broadcast::Sender<RealisationEvent>,
    /// The last [`RECENT_EVENTS`] events; its lock also orders sending against subscribing.
    recent: Mutex<VecDeque<RealisationEvent>>,
    source_synced: AtomicBool,
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry {
            metrics: Metrics::default(),
            events: broadcast::channel(EVENT_BACKLOG).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
            source_synced: AtomicBool::new(false),
        }
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// The recent events, and a receiver of every later one (none missed, none twice).
    pub fn recent_and_subscribe(
        &self,
    ) -> (Vec<RealisationEvent>, broadcast::Receiver<RealisationEvent>) {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        (recent.iter().cloned().collect(), self.events.subscribe())
    }

    /// A bundle was acknowledged.
    pub fn realised(&self, event: RealisationEvent) {
        let changes =
            event.flows_added + event.flows_removed + event.flows_modified + event.other_changes;
        self.metrics.bundle_changes.observe(changes as f64);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_EVENTS {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        // Nobody listening is no error.
        let _ = self.events.send(event);
    }

    /// The source delivered its initial list and the state holds it.
    pub fn mark_source_synced(&self) {
        self.source_synced.store(true, Ordering::Relaxed);
    }

    /// Whether [`Telemetry::mark_source_synced`] happened.
    pub fn source_synced(&self) -> bool {
        self.source_synced.load(Ordering::Relaxed)
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str) {
        self.metrics
            .errors
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Counts a flow put right after someone else changed it.
    pub fn drift(&self, restored: bool) {
        let kind = if restored { "restored" } else { "removed" };
        self.metrics
            .drift
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Counts a CNI connection handed on to the leader.
    pub fn cni_forwarded(&self) {
        self.metrics.cni_forwarded.inc();
    }

    /// Records how long a CNI command took.
    pub fn cni(&self, command: &str, result: &str, took: Duration) {
        self.metrics
            .cni_seconds
            .get_or_create(&CniLabels {
                command: command.into(),
                result: result.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records a realisation's latency for each feature it served.
    pub fn realisation_latency(&self, features: &[&'static str], took: Duration) {
        for f in features {
            self.metrics
                .realisation_seconds
                .get_or_create(&FeatureLabel {
                    feature: (*f).into(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// Counts a br-int reconnection.
    pub fn reconnect(&self, node: &str) {
        self.metrics
            .reconnects
            .get_or_create(&NodeLabel { node: node.into() })
            .inc();
    }
}

/// The feature an owner belongs to, as the latency metric labels it.
pub fn feature_of(owner: &Owner) -> &'static str {
    match owner {
        Owner::Pipeline | Owner::Gateway => "node",
        Owner::Pod(_) => "pod",
        Owner::RemoteNode(_) => "remote_node",
        Owner::PolicyBase | Owner::Policy(_) => "policy",
        Owner::ServiceBase | Owner::Service(_) => "service",
    }
}

/// An owner as the admin API names it: `pod x/a`, `node node-2`, `policy x/p/ingress[0]`.
pub fn owner_name(owner: &Owner) -> String {
    use crate::state::PolicyOwner;
    match owner {
        Owner::Pipeline => "pipeline".into(),
        Owner::Gateway => "gateway".into(),
        Owner::Pod(key) => format!("pod {key}"),
        Owner::RemoteNode(name) => format!("node {name}"),
        Owner::PolicyBase => "policy-base".into(),
        Owner::Policy(PolicyOwner::Target(d, key)) => {
            format!("policy-target {} {key}", d.field())
        }
        Owner::Policy(PolicyOwner::Rule(rule)) => format!("policy {rule}"),
        Owner::Policy(PolicyOwner::Peer(d, net)) => format!("policy-peer {} {net}", d.field()),
        Owner::ServiceBase => "service-base".into(),
        Owner::Service(key) => format!("service {key}"),
    }
}

/// The names of a realisation's owners for an event: at most [`EVENT_OWNERS`], then a count.
pub fn owner_names<'a>(owners: impl ExactSizeIterator<Item = &'a Owner>) -> Vec<String> {
    let n = owners.len();
    let mut names: Vec<String> = owners.take(EVENT_OWNERS).map(owner_name).collect();
    if n > EVENT_OWNERS {
        names.push(format!("… and {} more", n - EVENT_OWNERS));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_in_the_text_format_with_the_prefix() {
        let t = Telemetry::default();
        t.cni("add", "ok", Duration::from_millis(3));
        t.error("openflow");
        t.drift(true);
        let text = t.metrics.encode();
        assert!(
            text.contains("switchyard_cni_seconds_count{command=\"add\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("switchyard_errors_total{kind=\"openflow\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("switchyard_flows_drift_total{kind=\"restored\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// Every metric the controller registers (here and in the audit log's registry) has
    /// its row in docs/operations.md, as `switchyard_NAME` or, for a counter,
    /// `switchyard_NAME_total`: a new metric without its documentation fails here. (The
    /// names are read from the `register` calls: an empty label family is not encoded.)
    #[test]
    fn every_metric_is_documented_in_operations_md() {
        let docs = include_str!("../../docs/operations.md");
        let sources = [include_str!("telemetry.rs"), include_str!("audit.rs")];
        // Built here so that this test's own text does not contain it.
        let needle = ["registry", ".register("].concat();
        let mut names = Vec::new();
        for source in sources {
            for (_, after) in source
                .match_indices(needle.as_str())
                .map(|(i, _)| source.split_at(i))
            {
                let call = after[needle.len()..].trim_start();
                // The call's first argument, the name.
                let Some(literal) = call.strip_prefix('"') else {
                    continue;
                };
                let name = literal.split('"').next().expect("a metric name");
                names.push(format!("switchyard_{name}"));
            }
        }
        assert!(names.len() >= 15, "{names:?}");
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| {
                !docs.contains(&format!("`{n}`")) && !docs.contains(&format!("`{n}_total`"))
            })
            .collect();
        assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
    }

    #[test]
    fn events_name_a_bounded_number_of_owners() {
        let owners: Vec<Owner> = (0..40)
            .map(|i| {
                Owner::Pod(std::sync::Arc::new(crate::source::ObjectKey::new(
                    "x",
                    format!("p{i}"),
                )))
            })
            .collect();
        let names = owner_names(owners.iter());
        assert_eq!(names.len(), EVENT_OWNERS + 1);
        assert_eq!(names[0], "pod x/p0");
        assert_eq!(names[EVENT_OWNERS], "… and 8 more");
    }
}
