//! The admin API's answers: each RPC reads the state snapshot, the agents' status and, for
//! flows, the node's br-int through its agent's connection. Nothing here changes anything.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use openflow::text;
use openflow::{
    FlowStats, FlowStatsRequest, MultipartReplyBody, MultipartRequest, MultipartRequestBody,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::AdminError;
use super::owners::{OwnerNames, owner_matches};
use super::proto;
use crate::agent::{AgentStatus, InstalledPod};
use crate::controller::{Shared, lock};
use crate::features::{self, NodeContext};
use crate::ids;
use crate::pipeline::Table;
use crate::policy::Direction;
use crate::realise::FlowKey;
use crate::source::ObjectKey;
use crate::state::Snapshot;
use crate::switch_config::{self, InterfaceView};
use crate::telemetry::RealisationEvent;
use crate::trace;

pub(super) struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    pub(super) fn new(shared: Arc<Shared>) -> AdminService {
        AdminService { shared }
    }
}

/// What an RPC reads of one agent, taken under the agents' lock and used after it.
struct AgentView {
    status: AgentStatus,
    installed: Arc<BTreeMap<ObjectKey, InstalledPod>>,
    ports: Arc<BTreeMap<String, InterfaceView>>,
    conn: Option<openflow::Connection>,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn instant_ms(t: Instant) -> i64 {
    ms(SystemTime::now() - t.elapsed())
}

impl AdminService {
    fn agent(&self, node: &str) -> Option<AgentView> {
        let agents = lock(&self.shared.agents);
        let a = agents.get(node)?;
        Some(AgentView {
            status: a.status.borrow().clone(),
            installed: a.installed.borrow().clone(),
            ports: a.ports.borrow().clone(),
            conn: a.connection(),
        })
    }

    fn node_agent(&self, snap: &Snapshot, node: &str) -> Result<AgentView, AdminError> {
        if snap.node(node).is_none() {
            return Err(AdminError::UnknownNode(node.to_owned()));
        }
        self.agent(node)
            .ok_or_else(|| AdminError::UnknownNode(node.to_owned()))
    }

    /// The node's agent and its br-int connection: what reading the switch needs.
    fn connected_agent(
        &self,
        snap: &Snapshot,
        node: &str,
    ) -> Result<(AgentView, openflow::Connection), AdminError> {
        let mut agent = self.node_agent(snap, node)?;
        let conn = agent
            .conn
            .take()
            .ok_or_else(|| AdminError::NotConnected(node.to_owned()))?;
        Ok((agent, conn))
    }

    fn pod_reply(
        &self,
        snap: &Snapshot,
        key: &ObjectKey,
        installed: Option<&InstalledPod>,
    ) -> Option<proto::Pod> {
        let pod = snap.pod(key)?;
        let attachment = snap.attachment(key);
        let mut ingress = Vec::new();
        let mut egress = Vec::new();
        for p in snap.policies_selecting(key) {
            if p.ingress.is_some() {
                ingress.push(p.key.to_string());
            }
            if p.egress.is_some() {
                egress.push(p.key.to_string());
            }
        }
        Some(proto::Pod {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            node: pod.node.clone(),
            ip: attachment.map(|a| a.ip.to_string()).unwrap_or_default(),
            mac: attachment.map(|a| a.mac.to_string()).unwrap_or_default(),
            interface: attachment.map(|a| a.iface.clone()).unwrap_or_default(),
            container_id: attachment
                .map(|a| a.container_id.clone())
                .unwrap_or_default(),
            ofport: installed.map_or(0, |i| i.ofport),
            installed_since_ms: installed.map_or(0, |i| ms(i.since)),
            flows_installed: -1,
            ingress_policies: ingress,
            egress_policies: egress,
            labels: pod.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        })
    }
}

/// Dumps the flows of a node whose cookie matches `cookie` under `mask`.
async fn dump(
    node: &str,
    conn: &openflow::Connection,
    request: FlowStatsRequest,
) -> Result<Vec<FlowStats>, AdminError> {
    conn.dump_flows(request)
        .await
        .map_err(|source| AdminError::Switch {
            node: node.to_owned(),
            what: "flow dump",
            source,
        })
}

fn cookie_filter(cookie: u64, mask: u64) -> FlowStatsRequest {
    FlowStatsRequest {
        cookie,
        cookie_mask: mask,
        ..FlowStatsRequest::default()
    }
}

/// The names the switch gives its tables and ports, as `ovs-ofctl --names` reads them.
async fn switch_names(node: &str, conn: &openflow::Connection) -> Result<text::Names, AdminError> {
    let err = |what, source| AdminError::Switch {
        node: node.to_owned(),
        what,
        source,
    };
    let tables = conn
        .table_names()
        .await
        .map_err(|e| err("table names", e))?;
    let parts = conn
        .multipart(MultipartRequest::new(MultipartRequestBody::PortDesc))
        .await
        .map_err(|e| err("port descriptions", e))?;
    let mut ports = BTreeMap::new();
    for part in parts {
        if let MultipartReplyBody::PortDesc(descs) = part {
            ports.extend(descs.into_iter().map(|d| (d.port_no, d.name)));
        }
    }
    Ok(text::Names { tables, ports })
}

fn flow_reply(fs: &FlowStats, names: &text::Names, owners: &OwnerNames) -> proto::Flow {
    proto::Flow {
        table_id: u32::from(fs.table_id),
        table: Table::from_id(fs.table_id)
            .map(|t| t.name().to_owned())
            .unwrap_or_default(),
        text: text::format_flow_stats_named(fs, false, names),
        owner: owners.name(fs.cookie),
        cookie: fs.cookie,
        packets: fs.packet_count,
        bytes: fs.byte_count,
    }
}

fn desired_stats(f: &features::Flow) -> FlowStats {
    FlowStats {
        table_id: f.table.id(),
        duration_sec: 0,
        duration_nsec: 0,
        priority: f.priority,
        idle_timeout: 0,
        hard_timeout: 0,
        // As the realiser installs every flow (FLOW_REMOVED reports deletions by others).
        flags: openflow::message::flow_mod::flags::SEND_FLOW_REM,
        cookie: f.cookie,
        packet_count: 0,
        byte_count: 0,
        match_: f.match_.clone(),
        instructions: f.instructions.clone(),
    }
}

/// ovs-ofctl's order: by table, then descending priority.
fn sort_flows(flows: &mut [FlowStats]) {
    flows.sort_by(|a, b| {
        a.table_id
            .cmp(&b.table_id)
            .then(b.priority.cmp(&a.priority))
    });
}

/// `--table`: a table's name or number.
fn parse_table(table: &str) -> Result<Option<u8>, AdminError> {
    if table.is_empty() {
        return Ok(None);
    }
    if let Some(t) = Table::ALL
        .iter()
        .find(|t| t.name().eq_ignore_ascii_case(table))
    {
        return Ok(Some(t.id()));
    }
    table.parse::<u8>().map(Some).map_err(|_| {
        let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        AdminError::BadRequest(format!(
            "table {table:?}: not a table number (0-254) or one of {}",
            names.join(", ")
        ))
    })
}

fn event_reply(e: &RealisationEvent) -> proto::RealisationEvent {
    proto::RealisationEvent {
        time_ms: ms(e.time),
        node: e.node.clone(),
        owners: e.owners.clone(),
        flows_added: e.flows_added,
        flows_removed: e.flows_removed,
        flows_modified: e.flows_modified,
        other_changes: e.other_changes,
        duration_us: u64::try_from(e.duration.as_micros()).unwrap_or(u64::MAX),
        state_version: e.state_version,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::RealisationEvent, Status>> + Send>>;

#[tonic::async_trait]
impl proto::admin_server::Admin for AdminService {
    async fn status(
        &self,
        _: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        let snap = self.shared.state.snapshot();
        let mut nodes = Vec::with_capacity(snap.node_count());
        for node in snap.nodes() {
            let status = self.agent(&node.name).map(|a| a.status).unwrap_or_default();
            let (last_ms, last_us, last_n) = match status.last_realisation {
                Some((at, took, n)) => (
                    instant_ms(at),
                    u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                    n as u64,
                ),
                None => (0, 0, 0),
            };
            let (error, error_ms) = match &status.last_error {
                Some((at, e)) => (e.clone(), instant_ms(*at)),
                None => (String::new(), 0),
            };
            nodes.push(proto::NodeStatus {
                name: node.name.to_string(),
                pod_cidr: node.pod_cidr.to_string(),
                internal_ip: node.internal_ip.to_string(),
                ovsdb_connected_since_ms: status.ovsdb_connected_since.map_or(0, ms),
                openflow_connected_since_ms: status.openflow_connected_since.map_or(0, ms),
                ready: status.ready,
                flows_desired: status.flows_desired as u64,
                flows_installed: status.flows_installed as u64,
                groups_desired: status.groups_desired as u64,
                meters_desired: status.meters_desired as u64,
                last_realisation_ms: last_ms,
                last_realisation_duration_us: last_us,
                last_realisation_changes: last_n,
                last_error: error,
                last_error_ms: error_ms,
                pods: snap.pod_count_on(&node.name) as u64,
            });
        }
        Ok(Response::new(proto::StatusReply {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            // Leader election comes with a later issue: a lone controller leads.
            role: "leader".to_owned(),
            source_synced: self.shared.telemetry.source_synced(),
            source: self.shared.source.kind_name().to_owned(),
            state_version: snap.version,
            nodes,
            kinds: self
                .shared
                .source
                .sync_status()
                .into_iter()
                .map(|(kind, sync)| proto::KindSync {
                    kind: kind.to_string(),
                    synced: sync.synced,
                    error: sync.error.unwrap_or_default(),
                    needed_by: kind.needed_by().to_owned(),
                })
                .collect(),
        }))
    }

    async fn list_pods(
        &self,
        request: Request<proto::ListPodsRequest>,
    ) -> Result<Response<proto::ListPodsReply>, Status> {
        let req = request.into_inner();
        let snap = self.shared.state.snapshot();
        let keys: Vec<ObjectKey> = match (req.node.as_str(), req.namespace.as_str()) {
            ("", "") => snap
                .nodes()
                .flat_map(|n| snap.pods_on(&n.name).cloned().collect::<Vec<_>>())
                .collect(),
            ("", ns) => snap.pods_in_namespace(ns).cloned().collect(),
            (node, ns) => {
                if snap.node(node).is_none() {
                    return Err(AdminError::UnknownNode(node.to_owned()).into());
                }
                snap.pods_on(node)
                    .filter(|k| ns.is_empty() || k.namespace == ns)
                    .cloned()
                    .collect()
            }
        };
        let mut by_node: BTreeMap<String, Vec<ObjectKey>> = BTreeMap::new();
        for key in keys {
            if let Some(pod) = snap.pod(&key) {
                by_node.entry(pod.node.clone()).or_default().push(key);
            }
        }
        let mut pods = Vec::new();
        for (node, keys) in by_node {
            let agent = self.agent(&node);
            // One cookie-filtered dump per node: the pods' own flows only.
            let counts: Option<HashMap<u32, i64>> = match (&agent, req.flow_counts) {
                (
                    Some(AgentView {
                        conn: Some(conn), ..
                    }),
                    true,
                ) => {
                    let pod_cat = ids::pod_cookie(Ipv4Addr::UNSPECIFIED);
                    let mut counts = HashMap::new();
                    let mut ok = true;
                    for cat in [
                        pod_cat,
                        ids::policy_target_cookie(Direction::Ingress, Ipv4Addr::UNSPECIFIED),
                    ] {
                        match dump(&node, conn, cookie_filter(cat, 0xff00_0000_0000_0000)).await {
                            Ok(flows) => {
                                for f in flows {
                                    *counts.entry(f.cookie as u32).or_insert(0) += 1;
                                }
                            }
                            Err(_) => ok = false,
                        }
                    }
                    ok.then_some(counts)
                }
                _ => None,
            };
            for key in keys {
                let installed = agent.as_ref().and_then(|a| a.installed.get(&key));
                if let Some(mut pod) = self.pod_reply(&snap, &key, installed) {
                    if let (Some(counts), Some(a)) = (&counts, snap.attachment(&key)) {
                        pod.flows_installed = counts.get(&u32::from(a.ip)).copied().unwrap_or(0);
                    }
                    pods.push(pod);
                }
            }
        }
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(Response::new(proto::ListPodsReply { pods }))
    }

    async fn get_pod(
        &self,
        request: Request<proto::GetPodRequest>,
    ) -> Result<Response<proto::Pod>, Status> {
        let req = request.into_inner();
        let key = ObjectKey::new(&req.namespace, &req.name);
        let snap = self.shared.state.snapshot();
        let pod = snap
            .pod(&key)
            .ok_or_else(|| AdminError::UnknownPod(key.to_string()))?;
        let agent = self.agent(&pod.node);
        let installed = agent.as_ref().and_then(|a| a.installed.get(&key));
        let mut reply = self
            .pod_reply(&snap, &key, installed)
            .ok_or_else(|| AdminError::UnknownPod(key.to_string()))?;
        if let (
            Some(AgentView {
                conn: Some(conn), ..
            }),
            Some(a),
        ) = (&agent, snap.attachment(&key))
        {
            let mut n = 0i64;
            for cookie in [
                ids::pod_cookie(a.ip),
                ids::policy_target_cookie(Direction::Ingress, a.ip),
                ids::policy_target_cookie(Direction::Egress, a.ip),
            ] {
                n += dump(&pod.node, conn, cookie_filter(cookie, u64::MAX))
                    .await?
                    .len() as i64;
            }
            reply.flows_installed = n;
        }
        Ok(Response::new(reply))
    }

    async fn dump_flows(
        &self,
        request: Request<proto::DumpFlowsRequest>,
    ) -> Result<Response<proto::DumpFlowsReply>, Status> {
        let req = request.into_inner();
        let snap = self.shared.state.snapshot();
        let (_, conn) = self.connected_agent(&snap, &req.node)?;
        let table = parse_table(&req.table)?;
        let mut request = FlowStatsRequest::default();
        if let Some(t) = table {
            request.table_id = t;
        }
        let mut flows = dump(&req.node, &conn, request).await?;
        sort_flows(&mut flows);
        let names = switch_names(&req.node, &conn).await?;
        let owners = OwnerNames::new(&snap, &req.node);
        let flows = flows
            .iter()
            .map(|f| flow_reply(f, &names, &owners))
            .filter(|f| owner_matches(&f.owner, &req.owner))
            .collect();
        Ok(Response::new(proto::DumpFlowsReply { flows }))
    }

    async fn diff_flows(
        &self,
        request: Request<proto::DiffFlowsRequest>,
    ) -> Result<Response<proto::DiffFlowsReply>, Status> {
        let req = request.into_inner();
        let snap = self.shared.state.snapshot();
        let (agent, conn) = self.connected_agent(&snap, &req.node)?;
        let node = snap
            .node(&req.node)
            .cloned()
            .ok_or_else(|| AdminError::UnknownNode(req.node.clone()))?;
        // The desired side, computed as the agent computes it (the features are pure): from
        // this snapshot and the ofports the node's OVSDB shows.
        let attachments: Vec<_> = snap.attachments_on(&req.node).cloned().collect();
        let ofports = switch_config::effective_ofports(&agent.ports, node.pod_cidr, &attachments);
        let ctx = NodeContext {
            node: &node,
            state: &snap,
            ofports: &ofports,
        };
        let mut desired: HashMap<FlowKey, features::Flow> = HashMap::new();
        for owner in features::node_owners(&ctx) {
            for f in features::owner_flows(&owner, &ctx) {
                desired.insert(FlowKey::new(f.table.id(), f.priority, &f.match_), f);
            }
        }
        let mut installed = dump(&req.node, &conn, FlowStatsRequest::default()).await?;
        sort_flows(&mut installed);
        let names = switch_names(&req.node, &conn).await?;
        let owners = OwnerNames::new(&snap, &req.node);
        let mut reply = proto::DiffFlowsReply {
            state_version: snap.version,
            ..Default::default()
        };
        for fs in &installed {
            let key = FlowKey::new(fs.table_id, fs.priority, &fs.match_);
            match desired.remove(&key) {
                None => reply.unexpected.push(flow_reply(fs, &names, &owners)),
                Some(want) => {
                    if !crate::realise::same_body(&want, fs.cookie, &fs.instructions) {
                        reply.changed.push(proto::FlowChange {
                            installed: Some(flow_reply(fs, &names, &owners)),
                            desired: Some(flow_reply(&desired_stats(&want), &names, &owners)),
                        });
                    }
                }
            }
        }
        let mut missing: Vec<FlowStats> = desired.values().map(desired_stats).collect();
        sort_flows(&mut missing);
        reply.missing = missing
            .iter()
            .map(|f| flow_reply(f, &names, &owners))
            .collect();
        Ok(Response::new(reply))
    }

    async fn trace(
        &self,
        request: Request<proto::TraceRequest>,
    ) -> Result<Response<proto::TraceReply>, Status> {
        let req = request.into_inner();
        let snap = self.shared.state.snapshot();
        let (agent, conn) = self.connected_agent(&snap, &req.node)?;
        // What the switch holds now, not what the controller wants: the trace explains
        // what a packet meets.
        let flows = dump(&req.node, &conn, FlowStatsRequest::default()).await?;
        let groups = conn
            .dump_groups()
            .await
            .map_err(|source| AdminError::Switch {
                node: req.node.clone(),
                what: "group dump",
                source,
            })?;
        let input = trace::TraceInput {
            node: &req.node,
            snapshot: &snap,
            pods: &agent.installed,
            flows: &flows,
            groups: &groups,
        };
        let report = trace::trace(&input, &req.packet).map_err(AdminError::Trace)?;
        Ok(Response::new(trace_reply(report)))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        use tokio_stream::StreamExt;
        use tokio_stream::wrappers::BroadcastStream;
        use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
        let req = request.into_inner();
        let (recent, live) = self.shared.telemetry.recent_and_subscribe();
        let node = req.node;
        let wanted = move |e: &RealisationEvent| node.is_empty() || e.node == node;
        let past: Vec<Result<proto::RealisationEvent, Status>> = recent
            .iter()
            .filter(|e| wanted(e))
            .map(|e| Ok(event_reply(e)))
            .collect();
        let past = tokio_stream::iter(past);
        if !req.follow {
            return Ok(Response::new(Box::pin(past)));
        }
        let wanted_live = wanted.clone();
        let live = BroadcastStream::new(live).filter_map(move |item| match item {
            Ok(e) => wanted_live(&e).then(|| Ok(event_reply(&e))),
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Err(Status::data_loss(format!(
                "this watcher fell {n} events behind and missed them; watch again"
            )))),
        });
        Ok(Response::new(Box::pin(past.chain(live))))
    }
}

/// A trace report as the API sends it.
fn trace_reply(report: trace::TraceReport) -> proto::TraceReply {
    use proto::trace_reply::Verdict as V;
    let verdict = match report.verdict {
        trace::Verdict::Output { port, name } => V::Output(proto::Output { port, name }),
        trace::Verdict::Tunnel { node, remote_ip } => V::Tunnel(proto::Tunnel {
            node,
            remote_ip: remote_ip.to_string(),
        }),
        trace::Verdict::Drop { reason } => V::Drop(proto::Drop { reason }),
        trace::Verdict::Local => V::Local(proto::Local {}),
        trace::Verdict::Refused { reason } => V::Refused(proto::Refused { reason }),
    };
    proto::TraceReply {
        packet: report.packet,
        steps: report
            .steps
            .into_iter()
            .map(|s| proto::TraceStep {
                table_id: u32::from(s.table),
                table: s.table_name,
                flow: s.flow,
                owner: s.owner,
                effects: s.effects,
            })
            .collect(),
        verdict: Some(verdict),
        explanation: report.explanation,
        notes: report.notes,
        service: report.service.unwrap_or_default(),
    }
}
