//! `yardctl status | pods | pod | flows | diff | events | trace`: the controller's admin API
//! (gRPC, `switchyard.admin.v1`) as tables an operator reads, or `--json` a script reads.
//!
//! Owns the command lines, the tables and the exit codes (see [`Exit`]); the RPCs and their
//! meaning are the server's (controller/src/admin).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchyard::admin::client::{self, ClientError};
use switchyard::admin::proto;
use switchyard::admin::{DEFAULT_ADMIN_SOCKET, TlsFiles};
use tonic::Code;

/// How to reach the controller, shared by every admin command.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// The controller's admin API: unix:PATH, /PATH or tcp:HOST:PORT.
    #[arg(long, env = "SWITCHYARD_ADMIN", default_value = DEFAULT_ADMIN_SOCKET)]
    server: String,
    /// Print JSON instead of a table (one object; `events` prints one per line).
    #[arg(long)]
    json: bool,
    /// PEM CA certificate that signed the server's certificate (tcp: with mutual TLS).
    #[arg(long, env = "SWITCHYARD_ADMIN_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate.
    #[arg(long, env = "SWITCHYARD_ADMIN_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHYARD_ADMIN_TLS_KEY", value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
}

/// The admin commands.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// The controller and every node: connections, flows, last realisation, last error.
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The networked pods, with their live flow counts.
    Pods {
        /// Only pods of this node.
        #[arg(long)]
        node: Option<String>,
        /// Only pods of this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One pod: address, port, flows, the policies selecting it.
    Pod {
        /// NAMESPACE/NAME.
        pod: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A node's flows, live, in `ovs-ofctl dump-flows --names` syntax, with their owners.
    Flows {
        /// The node.
        node: String,
        /// Only this table (name or number).
        #[arg(long)]
        table: Option<String>,
        /// Only this owner ("pod x/a", "node node-2") or kind (pod, node, policy, pipeline,
        /// gateway, foreign).
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// What the controller wants on a node's br-int against what it holds; exit 1 when they
    /// differ.
    Diff {
        /// The node.
        node: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Realisation events: the recent ones; with -f, then each as it happens.
    Events {
        /// Keep following.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only this node's.
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A packet through the controller's model of a node's pipeline.
    Trace {
        /// The node the packet enters.
        node: String,
        /// ovs-ofctl microflow (`in_port=NAME,tcp,nw_src=…,nw_dst=…,tp_dst=80`) or
        /// `from=ns/pod to=ns/pod|service:ns/name|IP port=80/TCP [sport=N]` (the source
        /// port decides a UDP Service's endpoint); either may add `dp_hash=N` to pick a
        /// Service's endpoint as the switch would for that hash.
        packet: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// yardctl's exit codes for the admin commands (docs/operations.md lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done; `diff`: converged.
    Ok = 0,
    /// `diff`: desired and installed differ; `trace`: the packet is dropped.
    Differs = 1,
    /// The command line or a local file is wrong.
    Usage = 2,
    /// The admin API cannot be reached (or the TLS handshake failed).
    Unreachable = 3,
    /// The request names something the controller does not have, or is malformed.
    NotFound = 4,
    /// The controller could not answer (br-int not connected, not implemented, internal).
    Failed = 5,
}

/// A failure, with its exit code.
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

fn from_status(s: tonic::Status) -> Failure {
    let exit = match s.code() {
        Code::NotFound | Code::InvalidArgument => Exit::NotFound,
        Code::Unavailable if s.message().contains("br-int") => Exit::Failed,
        Code::Unavailable => Exit::Unreachable,
        _ => Exit::Failed,
    };
    let message = if s.code() == Code::Unavailable && exit == Exit::Unreachable {
        format!("the admin API is unreachable: {}", s.message())
    } else {
        s.message().to_owned()
    };
    Failure { exit, message }
}

fn from_client(e: ClientError) -> Failure {
    let exit = match e {
        ClientError::Config(_) => Exit::Usage,
        ClientError::Unreachable(_) => Exit::Unreachable,
    };
    Failure {
        exit,
        message: e.to_string(),
    }
}

async fn connect(
    s: &ServerArgs,
) -> Result<proto::admin_client::AdminClient<tonic::transport::Channel>, Failure> {
    let tls = TlsFiles::from_flags(
        s.tls_ca.clone(),
        s.tls_cert.clone(),
        s.tls_key.clone(),
        ["--tls-ca", "--tls-cert", "--tls-key"],
    )
    .map_err(|e| Failure {
        exit: Exit::Usage,
        message: e.to_string(),
    })?;
    client::connect(&s.server, tls.as_ref())
        .await
        .map_err(from_client)
}

/// Runs one admin command; what it printed is on stdout.
pub async fn run(command: AdminCommand) -> Result<Exit, Failure> {
    match command {
        AdminCommand::Status { server } => {
            let mut c = connect(&server).await?;
            let r = c
                .status(proto::StatusRequest {})
                .await
                .map_err(from_status)?
                .into_inner();
            if server.json {
                print_json(&status_json(&r));
            } else {
                print!("{}", status_text(&r));
            }
            Ok(Exit::Ok)
        }
        AdminCommand::Pods {
            node,
            namespace,
            server,
        } => {
            let mut c = connect(&server).await?;
            let r = c
                .list_pods(proto::ListPodsRequest {
                    node: node.unwrap_or_default(),
                    namespace: namespace.unwrap_or_default(),
                    flow_counts: true,
                })
                .await
                .map_err(from_status)?
                .into_inner();
            if server.json {
                print_json(&json!({"pods": r.pods.iter().map(pod_json).collect::<Vec<_>>()}));
            } else {
                print!("{}", pods_text(&r.pods));
            }
            Ok(Exit::Ok)
        }
        AdminCommand::Pod { pod, server } => {
            let Some((namespace, name)) = pod.split_once('/') else {
                return Err(Failure {
                    exit: Exit::Usage,
                    message: format!("pod {pod:?}: give NAMESPACE/NAME"),
                });
            };
            let mut c = connect(&server).await?;
            let p = c
                .get_pod(proto::GetPodRequest {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
                .await
                .map_err(from_status)?
                .into_inner();
            if server.json {
                print_json(&pod_json(&p));
            } else {
                print!("{}", pod_text(&p));
            }
            Ok(Exit::Ok)
        }
        AdminCommand::Flows {
            node,
            table,
            owner,
            server,
        } => {
            let mut c = connect(&server).await?;
            let r = c
                .dump_flows(proto::DumpFlowsRequest {
                    node,
                    table: table.unwrap_or_default(),
                    owner: owner.unwrap_or_default(),
                })
                .await
                .map_err(from_status)?
                .into_inner();
            if server.json {
                print_json(&json!({"flows": r.flows.iter().map(flow_json).collect::<Vec<_>>()}));
            } else {
                print!("{}", flows_text(&r.flows));
            }
            Ok(Exit::Ok)
        }
        AdminCommand::Diff { node, server } => {
            let mut c = connect(&server).await?;
            let r = c
                .diff_flows(proto::DiffFlowsRequest { node: node.clone() })
                .await
                .map_err(from_status)?
                .into_inner();
            let converged = r.missing.is_empty() && r.unexpected.is_empty() && r.changed.is_empty();
            if server.json {
                print_json(&diff_json(&r));
            } else {
                print!("{}", diff_text(&node, &r));
            }
            Ok(if converged { Exit::Ok } else { Exit::Differs })
        }
        AdminCommand::Events {
            follow,
            node,
            server,
        } => {
            use futures::StreamExt;
            let mut c = connect(&server).await?;
            let mut stream = c
                .watch_events(proto::WatchEventsRequest {
                    node: node.unwrap_or_default(),
                    follow,
                })
                .await
                .map_err(from_status)?
                .into_inner();
            if !server.json {
                println!("{}", event_header());
            }
            while let Some(e) = stream.next().await {
                let e = e.map_err(from_status)?;
                if server.json {
                    println!("{}", event_json(&e));
                } else {
                    println!("{}", event_text(&e));
                }
            }
            Ok(Exit::Ok)
        }
        AdminCommand::Trace {
            node,
            packet,
            server,
        } => {
            let mut c = connect(&server).await?;
            let r = c
                .trace(proto::TraceRequest { node, packet })
                .await
                .map_err(from_status)?
                .into_inner();
            if server.json {
                print_json(&json!({
                    "packet": r.packet,
                    "steps": r.steps.iter().map(|s| json!({
                        "table_id": s.table_id, "table": s.table, "flow": s.flow,
                        "owner": s.owner, "effects": s.effects,
                    })).collect::<Vec<_>>(),
                    "verdict": verdict_json(&r.verdict),
                    "service": r.service,
                    "explanation": r.explanation,
                    "notes": r.notes,
                }));
            } else {
                println!("packet: {}", r.packet);
                for s in &r.steps {
                    println!("{:>3} {}: {}  [{}]", s.table_id, s.table, s.flow, s.owner);
                    for e in &s.effects {
                        println!("      {e}");
                    }
                }
                if !r.service.is_empty() {
                    println!("service: {}", r.service);
                }
                println!("verdict: {}", verdict_text(&r.verdict));
                println!("{}", r.explanation);
                for n in &r.notes {
                    println!("note: {n}");
                }
            }
            Ok(match r.verdict {
                Some(
                    proto::trace_reply::Verdict::Drop(_) | proto::trace_reply::Verdict::Refused(_),
                )
                | None => Exit::Differs,
                Some(_) => Exit::Ok,
            })
        }
    }
}

fn verdict_text(v: &Option<proto::trace_reply::Verdict>) -> String {
    use proto::trace_reply::Verdict as V;
    match v {
        Some(V::Output(o)) => format!("output to port {} ({})", o.port, o.name),
        Some(V::Tunnel(t)) => format!("tunnel to node {} ({})", t.node, t.remote_ip),
        Some(V::Drop(d)) => format!("dropped: {}", d.reason),
        Some(V::Local(_)) => "delivered to the node's network stack".to_owned(),
        Some(V::Refused(r)) => r.reason.clone(),
        None => "none (the controller sent no verdict)".to_owned(),
    }
}

fn verdict_json(v: &Option<proto::trace_reply::Verdict>) -> Value {
    use proto::trace_reply::Verdict as V;
    match v {
        Some(V::Output(o)) => json!({"kind": "output", "port": o.port, "name": o.name}),
        Some(V::Tunnel(t)) => json!({"kind": "tunnel", "node": t.node, "remote_ip": t.remote_ip}),
        Some(V::Drop(d)) => json!({"kind": "drop", "reason": d.reason}),
        Some(V::Local(_)) => json!({"kind": "local"}),
        Some(V::Refused(r)) => json!({"kind": "refused", "reason": r.reason}),
        None => Value::Null,
    }
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Columns aligned like kubectl's: each as wide as its widest cell, two spaces apart, the
/// last one not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        let cells: Vec<&str> = cells.collect();
        for (i, cell) in cells.iter().enumerate() {
            s.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How long ago, kubectl style (`45s`, `3m12s`, `2h5m`, `3d4h`); `-` for never.
pub fn age(since_ms: i64) -> String {
    if since_ms <= 0 {
        return "-".into();
    }
    let s = ((now_ms() - since_ms).max(0) / 1000) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn micros(us: u64) -> String {
    let d = Duration::from_micros(us);
    if d < Duration::from_millis(10) {
        format!("{:.2}ms", us as f64 / 1000.0)
    } else if d < Duration::from_secs(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

fn status_text(r: &proto::StatusReply) -> String {
    let mut out = format!(
        "controller {}  role {}  source {} ({})  state version {}\n\n",
        r.version,
        r.role,
        r.source,
        if r.source_synced {
            "synced"
        } else {
            "not synced"
        },
        r.state_version
    );
    for k in r.kinds.iter().filter(|k| !k.synced || !k.error.is_empty()) {
        out.push_str(&format!(
            "{} {}: {} (waiting: {})\n",
            k.kind,
            if k.synced {
                "watch failing"
            } else {
                "not in sync"
            },
            or_dash(&k.error),
            k.needed_by
        ));
    }
    if r.kinds.iter().any(|k| !k.synced || !k.error.is_empty()) {
        out.push('\n');
    }
    let rows: Vec<Vec<String>> = r
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.pod_cidr.clone(),
                n.internal_ip.clone(),
                age(n.ovsdb_connected_since_ms),
                age(n.openflow_connected_since_ms),
                if n.ready { "yes" } else { "no" }.into(),
                n.pods.to_string(),
                format!("{}/{}", n.flows_desired, n.flows_installed),
                format!("{}/{}", n.groups_desired, n.meters_desired),
                if n.last_realisation_ms > 0 {
                    format!(
                        "{} ago, {}, {} changes",
                        age(n.last_realisation_ms),
                        micros(n.last_realisation_duration_us),
                        n.last_realisation_changes
                    )
                } else {
                    "-".into()
                },
                if n.last_error.is_empty() {
                    "-".into()
                } else {
                    format!("{} ago: {}", age(n.last_error_ms), n.last_error)
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "NODE",
            "POD CIDR",
            "INTERNAL IP",
            "OVSDB",
            "OPENFLOW",
            "READY",
            "PODS",
            "FLOWS DESIRED/INSTALLED",
            "GROUPS/METERS",
            "LAST REALISATION",
            "LAST ERROR",
        ],
        &rows,
    ));
    out
}

fn status_json(r: &proto::StatusReply) -> Value {
    json!({
        "version": r.version, "role": r.role, "source": r.source,
        "source_synced": r.source_synced, "state_version": r.state_version,
        "kinds": r.kinds.iter().map(|k| json!({
            "kind": k.kind, "synced": k.synced, "error": k.error, "needed_by": k.needed_by,
        })).collect::<Vec<_>>(),
        "nodes": r.nodes.iter().map(|n| json!({
            "name": n.name, "pod_cidr": n.pod_cidr, "internal_ip": n.internal_ip,
            "ovsdb_connected_since_ms": n.ovsdb_connected_since_ms,
            "openflow_connected_since_ms": n.openflow_connected_since_ms,
            "ready": n.ready, "pods": n.pods,
            "flows_desired": n.flows_desired, "flows_installed": n.flows_installed,
            "groups_desired": n.groups_desired, "meters_desired": n.meters_desired,
            "last_realisation_ms": n.last_realisation_ms,
            "last_realisation_duration_us": n.last_realisation_duration_us,
            "last_realisation_changes": n.last_realisation_changes,
            "last_error": n.last_error, "last_error_ms": n.last_error_ms,
        })).collect::<Vec<_>>(),
    })
}

fn flows_count(n: i64) -> String {
    if n < 0 { "?".into() } else { n.to_string() }
}

fn pods_text(pods: &[proto::Pod]) -> String {
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|p| {
            vec![
                p.namespace.clone(),
                p.name.clone(),
                p.node.clone(),
                or_dash(&p.ip),
                or_dash(&p.mac),
                or_dash(&p.interface),
                if p.ofport == 0 {
                    "-".into()
                } else {
                    p.ofport.to_string()
                },
                flows_count(p.flows_installed),
                age(p.installed_since_ms),
                or_dash(&p.ingress_policies.join(",")),
                or_dash(&p.egress_policies.join(",")),
            ]
        })
        .collect();
    table(
        &[
            "NAMESPACE",
            "NAME",
            "NODE",
            "IP",
            "MAC",
            "INTERFACE",
            "OFPORT",
            "FLOWS",
            "INSTALLED",
            "INGRESS POLICIES",
            "EGRESS POLICIES",
        ],
        &rows,
    )
}

fn pod_json(p: &proto::Pod) -> Value {
    json!({
        "namespace": p.namespace, "name": p.name, "node": p.node, "ip": p.ip, "mac": p.mac,
        "interface": p.interface, "container_id": p.container_id, "ofport": p.ofport,
        "installed_since_ms": p.installed_since_ms, "flows_installed": p.flows_installed,
        "ingress_policies": p.ingress_policies, "egress_policies": p.egress_policies,
        "labels": p.labels,
    })
}

fn pod_text(p: &proto::Pod) -> String {
    let rows = [
        ("Pod", format!("{}/{}", p.namespace, p.name)),
        ("Node", p.node.clone()),
        ("IP", or_dash(&p.ip)),
        ("MAC", or_dash(&p.mac)),
        ("Interface", or_dash(&p.interface)),
        (
            "OpenFlow port",
            if p.ofport == 0 {
                "-".into()
            } else {
                p.ofport.to_string()
            },
        ),
        ("Container", or_dash(&p.container_id)),
        ("Installed", age(p.installed_since_ms)),
        ("Flows installed", flows_count(p.flows_installed)),
        ("Ingress policies", or_dash(&p.ingress_policies.join(", "))),
        ("Egress policies", or_dash(&p.egress_policies.join(", "))),
        ("Labels", or_dash(&p.labels.join(", "))),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

fn flow_json(f: &proto::Flow) -> Value {
    json!({
        "table_id": f.table_id, "table": f.table, "flow": f.text, "owner": f.owner,
        "cookie": format!("{:#x}", f.cookie), "packets": f.packets, "bytes": f.bytes,
    })
}

fn flows_text(flows: &[proto::Flow]) -> String {
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|f| vec![f.owner.clone(), f.text.clone()])
        .collect();
    table(&["OWNER", "FLOW"], &rows)
}

fn diff_json(r: &proto::DiffFlowsReply) -> Value {
    json!({
        "state_version": r.state_version,
        "converged": r.missing.is_empty() && r.unexpected.is_empty() && r.changed.is_empty(),
        "missing": r.missing.iter().map(flow_json).collect::<Vec<_>>(),
        "unexpected": r.unexpected.iter().map(flow_json).collect::<Vec<_>>(),
        "changed": r.changed.iter().map(|c| json!({
            "installed": c.installed.as_ref().map(flow_json),
            "desired": c.desired.as_ref().map(flow_json),
        })).collect::<Vec<_>>(),
    })
}

fn diff_text(node: &str, r: &proto::DiffFlowsReply) -> String {
    if r.missing.is_empty() && r.unexpected.is_empty() && r.changed.is_empty() {
        return format!(
            "{node}: converged (br-int holds exactly what state version {} wants)\n",
            r.state_version
        );
    }
    let mut out = format!(
        "{node}: br-int differs from state version {}\n",
        r.state_version
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    for f in &r.missing {
        rows.push(vec!["missing".into(), f.owner.clone(), f.text.clone()]);
    }
    for f in &r.unexpected {
        rows.push(vec!["unexpected".into(), f.owner.clone(), f.text.clone()]);
    }
    for c in &r.changed {
        if let (Some(i), Some(d)) = (&c.installed, &c.desired) {
            rows.push(vec!["installed".into(), i.owner.clone(), i.text.clone()]);
            rows.push(vec!["desired".into(), d.owner.clone(), d.text.clone()]);
        }
    }
    out.push_str(&table(&["DIFF", "OWNER", "FLOW"], &rows));
    out
}

fn event_header() -> String {
    format!(
        "{:<12}  {:<12}  {:>6}  {:>7}  {:>8}  {:>6}  {:>9}  OWNERS",
        "TIME", "NODE", "ADDED", "REMOVED", "MODIFIED", "OTHER", "DURATION"
    )
}

fn clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let day = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3600,
        (day % 3600) / 60,
        day % 60,
        ms.rem_euclid(1000)
    )
}

fn event_text(e: &proto::RealisationEvent) -> String {
    format!(
        "{:<12}  {:<12}  {:>6}  {:>7}  {:>8}  {:>6}  {:>9}  {}",
        clock(e.time_ms),
        e.node,
        e.flows_added,
        e.flows_removed,
        e.flows_modified,
        e.other_changes,
        micros(e.duration_us),
        e.owners.join(", ")
    )
}

fn event_json(e: &proto::RealisationEvent) -> Value {
    json!({
        "time_ms": e.time_ms, "node": e.node, "owners": e.owners,
        "flows_added": e.flows_added, "flows_removed": e.flows_removed,
        "flows_modified": e.flows_modified, "other_changes": e.other_changes,
        "duration_us": e.duration_us, "state_version": e.state_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_do_not_pad_the_last() {
        let t = table(
            &["NAME", "IP"],
            &[
                vec!["a".into(), "10.0.0.1".into()],
                vec!["longer".into(), "-".into()],
            ],
        );
        assert_eq!(t, "NAME    IP\na       10.0.0.1\nlonger  -\n");
    }
}
