//! NetworkPolicy audit logging: one line per new connection that an audited policy's rule
//! allows or its isolation denies (policy, rule, 5-tuple, verdict, node).
//!
//! A policy is audited with the annotation [`crate::policy::AUDIT_ANNOTATION`]
//! (`switchyard.io/audit: "true"`), or every policy with `--policy-audit`. Its allow flows
//! (the rule's `conj_id` flow, or the direct allow of a one-clause rule) and the default
//! drop of the pods it isolates send a copy of the packet to the controller through the
//! audit meter [`AUDIT_METER_ID`] (`controller(max_len=128,meter_id=2)`; see
//! `features::policy`). Only a connection's first packet reaches those flows: established
//! and related packets bypass the rules, so allowed traffic runs at line rate after its
//! first packet, and the meter bounds what a flood of new connections costs the controller
//! (a copy the meter drops is only not logged; the packet itself is allowed or dropped as
//! before).
//!
//! The packet-in's cookie names the flow: a `PolicyRule` cookie (conjunction id) is an
//! allow by that rule, a `PolicyTarget` cookie (direction, pod address) the pod's default
//! deny, whose isolating policies the state lists. The same connection seen again within
//! [`REPEAT_WINDOW`] (a retransmitted SYN, more datagrams before a reply) is counted, not
//! logged again.
//!
//! Owns: the meter's configuration, decoding audit packet-ins, the log lines (tracing
//! target `switchyard::audit`, and `--policy-audit-file`), the audit metrics. Does not own:
//! the flows (`features::policy`), receiving packet-ins (`agent`).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{debug, info, warn};

use crate::pipeline::{AUDIT_METER_ID, CookieCategory, cookie_owner};
use crate::policy::Direction;
use crate::state::Snapshot;

/// The default `--policy-audit-rate`: audit packet-ins per second and node.
pub const DEFAULT_RATE: u32 = 100;
/// The default `--policy-audit-burst` (packets).
pub const DEFAULT_BURST: u32 = 100;
/// A connection seen again within this time is the same connection.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);
/// At most this many connections are remembered for [`REPEAT_WINDOW`].
const REPEAT_CAPACITY: usize = 16_384;
/// How often the audit meter's counters are read from a switch that sent audit packet-ins.
const METER_POLL: Duration = Duration::from_secs(5);
/// OFPMP_METER.
const OFPMP_METER: u16 = 9;

/// Audit settings (`--policy-audit`, `--policy-audit-rate`, `--policy-audit-burst`,
/// `--policy-audit-file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// Audit every NetworkPolicy, annotated or not.
    pub all_policies: bool,
    /// The audit meter's rate, packet-ins per second and node.
    pub rate: u32,
    /// The audit meter's burst, packets.
    pub burst: u32,
    /// Also append each line to this file.
    pub file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            all_policies: false,
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
            file: None,
        }
    }
}

/// What a connection was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A rule of an audited policy allowed it.
    Allow,
    /// The destination (ingress) or source (egress) pod is isolated and no rule allowed it.
    DefaultDeny,
}

impl Verdict {
    /// As logged and in the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::DefaultDeny => "default-deny",
        }
    }
}

/// A connection's addresses as the first packet carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// IP protocol number.
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port (0 for protocols without ports).
    pub dst_port: u16,
}

impl FiveTuple {
    /// The 5-tuple of an Ethernet frame carrying IPv4, if it is one.
    pub fn of_frame(frame: &[u8]) -> Option<FiveTuple> {
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
            return None;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
            return None;
        }
        let protocol = ip[9];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
        let l4 = &ip[ihl..];
        let (src_port, dst_port) = match protocol {
            6 | 17 | 132 if first_fragment && l4.len() >= 4 => (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            ),
            _ => (0, 0),
        };
        Some(FiveTuple {
            protocol,
            src,
            src_port,
            dst,
            dst_port,
        })
    }

    fn protocol_name(&self) -> String {
        match self.protocol {
            1 => "ICMP".into(),
            6 => "TCP".into(),
            17 => "UDP".into(),
            132 => "SCTP".into(),
            n => n.to_string(),
        }
    }

    fn has_ports(&self) -> bool {
        matches!(self.protocol, 6 | 17 | 132)
    }
}

/// One audit line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The node whose switch judged.
    pub node: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The allowing policy, or the isolating policies (namespace/name, sorted).
    pub policies: Vec<String>,
    /// The direction judged (unknown for a rule that is gone meanwhile).
    pub direction: Option<Direction>,
    /// The allowing rule's index in `spec.ingress` / `spec.egress` (none for a deny).
    pub rule: Option<u16>,
    /// The connection.
    pub tuple: FiveTuple,
}

impl fmt::Display for Record {
    /// `node=N verdict=V policy=NS/NAME[,…] direction=D rule=I|- proto=P src=A[:p] dst=B[:p]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tuple;
        let endpoint = |a: Ipv4Addr, p: u16| {
            if t.has_ports() {
                format!("{a}:{p}")
            } else {
                a.to_string()
            }
        };
        write!(
            f,
            "node={} verdict={} policy={} direction={} rule={} proto={} src={} dst={}",
            self.node,
            self.verdict.as_str(),
            if self.policies.is_empty() {
                "-".to_owned()
            } else {
                self.policies.join(",")
            },
            self.direction.map_or("-", Direction::field),
            self.rule.map_or("-".to_owned(), |i| i.to_string()),
            t.protocol_name(),
            endpoint(t.src, t.src_port),
            endpoint(t.dst, t.dst_port),
        )
    }
}

/// Whether a packet-in with this cookie came from an audited policy flow.
pub fn is_audit(cookie: u64) -> bool {
    matches!(
        CookieCategory::of(cookie),
        Some(CookieCategory::PolicyRule | CookieCategory::PolicyTarget)
    )
}

/// The audit line a packet-in stands for, from the flow's cookie and the state (`None`
/// when the packet is not IPv4, or the cookie names a rule or pod the state no longer has
/// and is not a policy cookie at all).
pub fn record(node: &str, cookie: u64, frame: &[u8], snap: &Snapshot) -> Option<Record> {
    let tuple = FiveTuple::of_frame(frame)?;
    match CookieCategory::of(cookie)? {
        CookieCategory::PolicyRule => {
            let rule = snap.rule_with_conj_id(cookie_owner(cookie));
            Some(Record {
                node: node.to_owned(),
                verdict: Verdict::Allow,
                policies: rule.map(|r| vec![r.policy.to_string()]).unwrap_or_default(),
                direction: rule.map(|r| r.direction),
                rule: rule.map(|r| r.index),
                tuple,
            })
        }
        CookieCategory::PolicyTarget => {
            let direction = if cookie & (1 << 32) != 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let pod = Ipv4Addr::from(cookie_owner(cookie));
            let mut policies: Vec<String> = snap
                .pod_at(pod)
                .into_iter()
                .flat_map(|k| snap.policies_selecting(k))
                .filter(|p| p.rules(direction).is_some())
                .map(|p| p.key.to_string())
                .collect();
            policies.sort();
            Some(Record {
                node: node.to_owned(),
                verdict: Verdict::DefaultDeny,
                policies,
                direction: Some(direction),
                rule: None,
                tuple,
            })
        }
        _ => None,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// Connections logged recently, oldest first.
#[derive(Default)]
struct Recent {
    order: VecDeque<(Instant, (String, u64, FiveTuple))>,
    seen: HashSet<(String, u64, FiveTuple)>,
}

impl Recent {
    /// True when the connection was not seen within the window (and remembers it).
    fn first(&mut self, now: Instant, key: (String, u64, FiveTuple)) -> bool {
        while let Some((t, _)) = self.order.front()
            && (now.duration_since(*t) >= REPEAT_WINDOW || self.order.len() >= REPEAT_CAPACITY)
        {
            let (_, k) = self.order.pop_front().expect("front exists");
            self.seen.remove(&k);
        }
        if self.seen.contains(&key) {
            return false;
        }
        self.seen.insert(key.clone());
        self.order.push_back((now, key));
        true
    }
}

/// The audit log: configuration, the optional file, repeats and metrics. One per
/// controller, shared by the node agents.
pub struct AuditLog {
    /// The settings it was made with.
    pub config: AuditConfig,
    file: Mutex<Option<std::fs::File>>,
    recent: Mutex<Recent>,
    registry: Registry,
    lines: Family<VerdictLabel, Counter>,
    repeats: Counter,
    unknown: Counter,
    meter_dropped: Family<NodeLabel, Gauge>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for AuditLog {
    fn default() -> AuditLog {
        AuditLog::with_file(AuditConfig::default(), None)
    }
}

impl AuditLog {
    /// Validates the settings and opens the file (appending).
    pub fn new(config: AuditConfig) -> Result<AuditLog, String> {
        if config.rate == 0 {
            return Err("--policy-audit-rate 0: the audit meter needs a rate of at least 1 packet per second".into());
        }
        if config.burst == 0 {
            return Err(
                "--policy-audit-burst 0: the audit meter needs a burst of at least 1 packet".into(),
            );
        }
        let file = match &config.file {
            None => None,
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        format!(
                            "--policy-audit-file {}: cannot open for appending: {e}",
                            path.display()
                        )
                    })?,
            ),
        };
        Ok(AuditLog::with_file(config, file))
    }

    fn with_file(config: AuditConfig, file: Option<std::fs::File>) -> AuditLog {
        let mut registry = Registry::with_prefix("switchyard");
        let log = AuditLog {
            config,
            file: Mutex::new(file),
            recent: Mutex::default(),
            registry: Registry::default(),
            lines: Family::default(),
            repeats: Counter::default(),
            unknown: Counter::default(),
            meter_dropped: Family::default(),
        };
        registry.register(
            "policy_audit_lines",
            "NetworkPolicy audit lines written, by verdict (allow, default-deny)",
            log.lines.clone(),
        );
        registry.register(
            "policy_audit_repeats",
            "Audit packet-ins of a connection already logged within the repeat window (not logged again)",
            log.repeats.clone(),
        );
        registry.register(
            "policy_audit_undecoded",
            "Audit packet-ins that named no policy flow or carried no IPv4 packet",
            log.unknown.clone(),
        );
        registry.register(
            "policy_audit_meter_dropped_packets",
            "Audit copies the switch's audit meter dropped (not logged), by node, as last read from the switch",
            log.meter_dropped.clone(),
        );
        AuditLog { registry, ..log }
    }

    /// Logs the connection a packet-in from an audited flow stands for, unless it was
    /// logged within [`REPEAT_WINDOW`].
    pub fn packet_in(&self, node: &str, cookie: u64, frame: &[u8], snap: &Snapshot) {
        let Some(r) = record(node, cookie, frame, snap) else {
            self.unknown.inc();
            debug!(node = %node, cookie = format_args!("{cookie:#x}"), "audit packet-in without an IPv4 packet");
            return;
        };
        let fresh = crate::controller::lock(&self.recent)
            .first(Instant::now(), (node.to_owned(), cookie, r.tuple));
        if !fresh {
            self.repeats.inc();
            return;
        }
        self.write(&r, cookie);
    }

    fn write(&self, r: &Record, cookie: u64) {
        self.lines
            .get_or_create(&VerdictLabel {
                verdict: r.verdict.as_str().into(),
            })
            .inc();
        if r.verdict == Verdict::Allow && r.policies.is_empty() {
            info!(target: "switchyard::audit", conj_id = cookie_owner(cookie), "connection {r}");
        } else {
            info!(target: "switchyard::audit", "connection {r}");
        }
        let mut file = crate::controller::lock(&self.file);
        if let Some(f) = file.as_mut() {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let line = format!("{}.{:03} {r}\n", ms / 1000, ms % 1000);
            if let Err(e) = f.write_all(line.as_bytes()) {
                warn!(
                    "--policy-audit-file: cannot write ({e}); audit lines go to the log only from now on"
                );
                *file = None;
            }
        }
    }

    /// The audit metrics in the OpenMetrics text format, without the final `# EOF`.
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            return String::new();
        }
        out.strip_suffix("# EOF\n").unwrap_or(&out).to_owned()
    }

    fn set_meter_dropped(&self, node: &str, dropped: u64) {
        self.meter_dropped
            .get_or_create(&NodeLabel {
                node: node.to_owned(),
            })
            .set(i64::try_from(dropped).unwrap_or(i64::MAX));
    }
}

/// Installs (or sets right) the audit meter on a newly connected switch. Outside the
/// bundles (OVS takes no meter_mod inside one); modify first, so a meter left by an
/// earlier controller keeps the flows that use it.
pub async fn ensure_meter(conn: &openflow::Connection, node: &str, log: &AuditLog) {
    use openflow::{Message, MeterMod, MeterModCommand};
    let add = MeterMod::drop_above_pps(AUDIT_METER_ID, log.config.rate, log.config.burst);
    let modify = MeterMod {
        command: MeterModCommand::Modify,
        ..add.clone()
    };
    if conn.apply(&[Message::MeterMod(modify)]).await.is_ok() {
        return;
    }
    if let Err(e) = conn.apply(&[Message::MeterMod(add)]).await {
        warn!(node = %node, "cannot install the audit meter ({e}): audited policies' connections are not logged");
    }
}

/// The packets the audit meter's band dropped, from an OFPMP_METER reply body.
fn band_drops(body: &[u8]) -> Option<u64> {
    // ofp_meter_stats: meter_id, len, pad[6], flow_count, packet_in_count, byte_in_count,
    // duration_sec, duration_nsec (40 bytes), then ofp_meter_band_stats (16 bytes each).
    let mut b = body;
    let mut dropped = None;
    while b.len() >= 40 {
        let id = (&b[0..4]).get_u32();
        let len = usize::from((&b[4..6]).get_u16());
        if len < 40 || len > b.len() {
            return dropped;
        }
        if id == AUDIT_METER_ID {
            let bands = &b[40..len];
            dropped = Some(bands.chunks_exact(16).map(|c| (&c[0..8]).get_u64()).sum());
        }
        b = &b[len..];
    }
    dropped
}

/// Reads the audit meter's counters every few seconds, for the metric, until the
/// connection ends (or the task is aborted).
pub async fn poll_meter(conn: openflow::Connection, node: String, log: std::sync::Arc<AuditLog>) {
    use openflow::{MultipartReplyBody, MultipartRequest, MultipartRequestBody};
    loop {
        let mut body = BytesMut::new();
        body.put_u32(AUDIT_METER_ID);
        body.put_bytes(0, 4);
        let req = MultipartRequest::new(MultipartRequestBody::Other {
            mp_type: OFPMP_METER,
            body: Bytes::from(body),
        });
        match conn.multipart(req).await {
            Ok(parts) => {
                let mut all = BytesMut::new();
                for p in parts {
                    if let MultipartReplyBody::Other { body, .. } = p {
                        all.put_slice(&body);
                    }
                }
                if let Some(d) = band_drops(&all) {
                    log.set_meter_dropped(&node, d);
                }
            }
            Err(e) if conn.closed_reason().is_some() => {
                debug!(node = %node, "audit meter counters no longer read: {e}");
                return;
            }
            Err(e) => debug!(node = %node, "audit meter counters not read: {e}"),
        }
        tokio::time::sleep(METER_POLL).await;
    }
}

#[cfg(test)]
mod tests;
