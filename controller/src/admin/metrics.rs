//! The metrics endpoint (`--metrics-listen`): `/metrics` in the Prometheus text format,
//! `/healthz` (the process answers) and `/readyz` (the source is synced, every kind of
//! object is in sync, and every node whose OVSDB is reachable has its pipeline realised). Plain HTTP, so loopback only unless
//! `--metrics-allow-remote` says otherwise.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tracing::info;

use super::AdminError;
use crate::controller::{Shared, lock};
use crate::telemetry::{FlowLabels, KindLabel, NodeLabel};

/// The default `--metrics-listen`.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// Where the metrics endpoint listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The address.
    pub listen: SocketAddr,
}

impl MetricsConfig {
    /// Validates `--metrics-listen`: an IP:PORT, loopback unless `allow_remote`.
    pub fn new(listen: &str, allow_remote: bool) -> Result<MetricsConfig, AdminError> {
        let addr: SocketAddr = listen.parse().map_err(|_| AdminError::BadAddress {
            flag: "--metrics-listen",
            value: listen.to_owned(),
            reason: "not IP:PORT (e.g. 127.0.0.1:9464)".into(),
        })?;
        if !allow_remote && !addr.ip().is_loopback() {
            return Err(AdminError::PlaintextRemote {
                flag: "--metrics-listen",
                addr,
                what: "HTTP",
                remedy: "the metrics endpoint speaks plain HTTP: add --metrics-allow-remote to serve it beyond this machine anyway",
            });
        }
        Ok(MetricsConfig { listen: addr })
    }
}

/// Opens the metrics listener.
pub(crate) async fn bind(config: &MetricsConfig) -> Result<tokio::net::TcpListener, AdminError> {
    tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AdminError::Listen {
            what: "metrics",
            target: config.listen.to_string(),
            source,
        })
}

/// Serves the endpoint until it fails.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
) -> Result<(), AdminError> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared);
    info!(listen = ?listener.local_addr().ok(), "metrics endpoint ready (/metrics, /healthz, /readyz)");
    axum::serve(listener, app)
        .await
        .map_err(|e| AdminError::Serve(format!("metrics endpoint: {e}")))
}

/// Sets the gauges that describe the state from the snapshot and the agents, then encodes
/// everything. Proportional to the number of nodes (the flow gauges are per node).
async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let m = &shared.telemetry.metrics;
    let snap = shared.state.snapshot();
    let statuses: Vec<(String, crate::agent::AgentStatus, bool)> = lock(&shared.agents)
        .iter()
        .map(|(n, a)| {
            (
                n.clone(),
                a.status.borrow().clone(),
                a.connection().is_some(),
            )
        })
        .collect();
    m.flows.clear();
    let mut connected = 0;
    let mut ready = 0;
    for (node, status, conn) in &statuses {
        for (state, n) in [
            ("desired", status.flows_desired),
            ("installed", status.flows_installed),
        ] {
            m.flows
                .get_or_create(&FlowLabels {
                    node: node.clone(),
                    state: state.into(),
                })
                .set(n as i64);
        }
        m.ovsdb_plans
            .get_or_create(&NodeLabel { node: node.clone() })
            .set(status.ovsdb_plans as i64);
        connected += i64::from(*conn);
        ready += i64::from(status.ready);
    }
    m.switches_connected.set(connected);
    m.nodes_ready.set(ready);
    for (kind, n) in [
        ("node", snap.node_count()),
        ("pod", snap.pod_count()),
        ("attachment", snap.attachment_count()),
        ("networkpolicy", snap.policy_count()),
    ] {
        m.objects
            .get_or_create(&KindLabel { kind: kind.into() })
            .set(n as i64);
    }
    m.source_synced
        .set(i64::from(shared.telemetry.source_synced()));
    for (kind, sync) in shared.source.sync_status() {
        m.kind_synced
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .set(i64::from(sync.in_sync()));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        with_audit(m.encode(), &shared.audit.encode_metrics()),
    )
}

/// The controller's metrics with the audit metrics (`crate::audit`) before the final
/// `# EOF`.
fn with_audit(main: String, audit: &str) -> String {
    match main.strip_suffix("# EOF\n") {
        Some(head) => format!("{head}{audit}# EOF\n"),
        None => main + audit,
    }
}

/// 200 once the source is synced, every kind in sync and every reachable node (its OVSDB
/// connected) realised, and no node's agent fenced off by another controller; 503 with the
/// reasons otherwise, one a line (a kind not in sync names what waits for it). A standby
/// (no agents) is ready once its source is: it can take over.
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let mut waiting = Vec::new();
    if !shared.telemetry.source_synced() {
        waiting
            .push("the source of Kubernetes objects has not delivered its initial list".to_owned());
    }
    for (kind, sync) in shared.source.sync_status() {
        if sync.in_sync() {
            continue;
        }
        let state = if sync.synced {
            "watch failing, objects as last seen"
        } else {
            "not in sync"
        };
        let error = sync.error.as_deref().unwrap_or("not listed yet");
        waiting.push(format!(
            "kind {kind}: {state} ({error}); waiting: {}",
            kind.needed_by()
        ));
    }
    for (node, agent) in lock(&shared.agents).iter() {
        let s = agent.status.borrow();
        if s.fenced {
            waiting.push(format!(
                "node {node}: fenced off: another controller has taken over its switch \
                 (this replica writes nothing to it until it leads again)"
            ));
        } else if s.ovsdb_connected && !s.ready {
            waiting.push(format!(
                "node {node}: pipeline not realised (br-int connected: {})",
                agent.connection().is_some()
            ));
        }
    }
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", waiting.join("\n")),
        )
    }
}
