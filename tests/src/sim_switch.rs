//! A simulated OpenFlow 1.3 switch, for benchmarks that run hundreds of "nodes" in one
//! process against one controller.
//!
//! Owns: the switch side of an OpenFlow 1.3 connection, spoken through the `openflow`
//! crate's own codec ([`OfCodec`] in a [`Framed`]): it dials the controller like br-int
//! does (`unix:PATH` or `tcp:IP:PORT`), sends HELLO, answers FEATURES_REQUEST with its
//! datapath id (254 tables), and keeps flow, group and meter tables that FLOW_MOD,
//! GROUP_MOD, METER_MOD and ONF bundles change. One spawned task per switch serves the
//! connection; [`SimSwitch`] is a cheap handle to it.
//!
//! Modelled like ovs-vswitchd:
//! - HELLO (a peer without OpenFlow 1.3 gets OFPET_HELLO_FAILED and is dropped), ECHO,
//!   FEATURES, GET/SET_CONFIG, ROLE (with generation-id staleness), BARRIER,
//!   NXT_SET_PACKET_IN_FORMAT (accepted), PACKET_OUT (accepted and counted, no packet
//!   processing);
//! - FLOW_MOD: add (replaces a flow of identical table + priority + match), modify and
//!   modify-strict (change the instructions; when nothing matches and no cookie mask is
//!   given they add, as OVS does), delete and delete-strict (table 255 = every table,
//!   cookie/mask, `out_port`/`out_group` filters, loose match subsumption with masks).
//!   A deleted flow with `send_flow_rem` is reported with OFPT_FLOW_REMOVED (reason
//!   delete), as OVS does; the controller installs all its flows that way;
//! - ONF bundles exactly as [`openflow::Connection::bundle`] drives them: open, add,
//!   close, commit, discard, with OVS's replies and OFPBFC_* errors (unknown id, closed
//!   bundle, flags mismatch, inner xid mismatch, unsupported inner message). Messages are
//!   checked when added (bad table ids, goto_table backwards: error for the add, nothing
//!   queued); at commit they are applied in order and atomically: the first failure
//!   (group exists, unknown group or meter...) rolls every change back, is reported with
//!   the failing message's xid and fails the commit with OFPBFC_MSG_FAILED;
//! - multipart: flow stats (table, cookie/mask, match and out_port/out_group filters;
//!   split over several OFPMPF_REPLY_MORE parts so each message stays under 64 KiB),
//!   aggregate, desc, table stats, table features (default names only), port desc and
//!   port stats (no ports), group desc, group stats (zero counters). Any other multipart
//!   type gets OFPBRC_BAD_MULTIPART, any message type it does not model OFPBRC_BAD_TYPE
//!   (unknown experimenters OFPBRC_BAD_EXPERIMENTER / BAD_EXP_TYPE), and an undecodable
//!   message OFPBRC_BAD_LEN (OFPBRC_BAD_VERSION for a wrong version), so a controller
//!   waiting on a reply never hangs.
//!
//! Simplified versus a real switch:
//! - no datapath: no packets, counters stay 0, no ports, PACKET_OUT is swallowed;
//! - no timeouts: idle/hard timeouts are stored and reported, flows never expire;
//! - bundles are always atomic and ordered whatever their flags; no bundle timeout;
//! - no references are checked: a flow may name a group or meter that does not exist,
//!   deleting a group does not delete the flows that use it, `check_overlap` is
//!   ignored, action sets are not validated beyond what the codec checks;
//! - add, modify and modify-strict naming table 254 or 255, and deletes naming 254, are
//!   rejected with OFPFMFC_BAD_TABLE_ID (OVS's exact codes for every corner may differ);
//! - error data is the offending message re-encoded (first 64 bytes), or empty for a
//!   message that did not decode (the codec does not hand the raw bytes out);
//! - no echo requests are sent (ovs-vswitchd does not send them on unix sockets either);
//!   one connection per switch, no reconnection.
//!
//! Cost: a flow is stored in its wire encoding, keyed by (table, priority, encoded
//! `ofp_match`) in a `HashMap` — the crate's `Match` is normalised and sorted, so equal
//! matches have equal encodings — with its encoded instructions as two exact-size
//! boxed slices. Adding a flow is one hash insert and two small allocations; reading flows
//! back decodes them through the codec.
//!
//! Measured with a counting global allocator (requested bytes, malloc's own overhead not
//! included), 100 switches × 700 flows: ~175 bytes per flow of the controller's shape
//! (in_port, eth_type, ip_dst, reg0 → set reg1, resubmit), ~210 with four actions; an
//! idle switch ~19 KiB (mostly the codec's two 8 KiB buffers). 1000 switches × 700 flows
//! is so about 125-150 MiB of tables plus ~19 MiB of connections on the switch side.
//! (A one-off measurement: the counting allocator needs `unsafe`, which the workspace
//! denies, so it is not part of the tests.)

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use openflow::conn::{OfCodec, Target};
use openflow::field::{NX_EXPERIMENTER, ONF_EXPERIMENTER};
use openflow::message::flow_mod::flags as fm_flags;
use openflow::message::multipart::OFPMPF_MORE;
use openflow::message::switch::role;
use openflow::{
    Action, AggregateStats, BundleAdd, BundleControl, BundleCtrlType, ErrorMsg, FeaturesReply,
    FlowMod, FlowModCommand, FlowRemoved, FlowStats, FlowStatsRequest, GroupDesc, GroupMod,
    GroupModCommand, GroupStats, Instruction, Match, Message, MeterMod, MeterModCommand,
    MultipartReply, MultipartReplyBody, MultipartRequest, MultipartRequestBody, Role, SwitchConfig,
    SwitchDesc, TableStats, port,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tokio_util::codec::Framed;

/// Tables the switch reports (OVS: 254, ids 0..=253).
pub const N_TABLES: u8 = 254;

/// Largest OpenFlow message.
const MAX_MESSAGE: usize = 0xffff;
/// ofp_header + ofp_multipart_reply header.
const MULTIPART_HEADER: usize = 16;
/// Fixed part of an ofp_flow_stats entry, before the match.
const FLOW_STATS_FIXED: usize = 48;
/// OFPMP_TABLE_FEATURES.
const OFPMP_TABLE_FEATURES: u16 = 12;
/// OFPRR_DELETE.
const OFPRR_DELETE: u8 = 2;

/// OFPET_* / OFP*C_* numbers the switch sends (OpenFlow 1.3 §7.4.4, ONF bundle errors
/// as OVS sends them in 1.3).
mod code {
    pub const HELLO_FAILED: u16 = 0;
    pub const BAD_REQUEST: u16 = 1;
    pub const BRC_BAD_VERSION: u16 = 0;
    pub const BRC_BAD_TYPE: u16 = 1;
    pub const BRC_BAD_MULTIPART: u16 = 2;
    pub const BRC_BAD_EXPERIMENTER: u16 = 3;
    pub const BRC_BAD_EXP_TYPE: u16 = 4;
    pub const BRC_BAD_LEN: u16 = 6;
    pub const BAD_INSTRUCTION: u16 = 3;
    pub const BIC_BAD_TABLE_ID: u16 = 2;
    pub const BAD_MATCH: u16 = 4;
    pub const FLOW_MOD_FAILED: u16 = 5;
    pub const FMFC_BAD_TABLE_ID: u16 = 2;
    pub const GROUP_MOD_FAILED: u16 = 6;
    pub const GMFC_GROUP_EXISTS: u16 = 0;
    pub const GMFC_INVALID_GROUP: u16 = 1;
    pub const GMFC_UNKNOWN_GROUP: u16 = 8;
    pub const ROLE_REQUEST_FAILED: u16 = 11;
    pub const RRFC_STALE: u16 = 0;
    pub const RRFC_BAD_ROLE: u16 = 2;
    pub const METER_MOD_FAILED: u16 = 12;
    pub const MMFC_METER_EXISTS: u16 = 1;
    pub const MMFC_INVALID_METER: u16 = 2;
    pub const MMFC_UNKNOWN_METER: u16 = 3;
    pub const BFC_BAD_ID: u16 = 2302;
    pub const BFC_BUNDLE_CLOSED: u16 = 2304;
    pub const BFC_BAD_TYPE: u16 = 2306;
    pub const BFC_BAD_FLAGS: u16 = 2307;
    pub const BFC_MSG_BAD_XID: u16 = 2309;
    pub const BFC_MSG_UNSUP: u16 = 2310;
    pub const BFC_MSG_FAILED: u16 = 2313;
}

/// An error the switch reports: type, code, and for ONF errors the experimenter id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OfError {
    error_type: u16,
    code: u16,
    experimenter: Option<u32>,
}

impl OfError {
    fn new(error_type: u16, code: u16) -> OfError {
        OfError {
            error_type,
            code,
            experimenter: None,
        }
    }

    fn bundle(code: u16) -> OfError {
        OfError {
            error_type: openflow::message::error_msg::OFPET_EXPERIMENTER,
            code,
            experimenter: Some(ONF_EXPERIMENTER),
        }
    }

    /// The OFPT_ERROR message, echoing the first 64 bytes of `offending` sent with `xid`.
    fn message(self, xid: u32, offending: Option<&Message>) -> (u32, Message) {
        let data = offending
            .and_then(|m| m.to_bytes(xid).ok())
            .map(|b| b.slice(..b.len().min(64)))
            .unwrap_or_default();
        (
            xid,
            Message::Error(ErrorMsg {
                error_type: self.error_type,
                code: self.code,
                experimenter: self.experimenter,
                data,
            }),
        )
    }
}

/// What the switch has seen and done; see [`SimSwitch::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages received (a BUNDLE_ADD counts once, its inner message not again).
    pub messages_received: u64,
    /// FLOW_MODs applied, directly or in committed bundles.
    pub flow_mods: u64,
    /// GROUP_MODs applied, directly or in committed bundles.
    pub group_mods: u64,
    /// METER_MODs applied, directly or in committed bundles.
    pub meter_mods: u64,
    /// Bundles committed.
    pub bundles: u64,
    /// Bundles whose commit failed (nothing applied).
    pub bundles_failed: u64,
    /// Bundles discarded by the controller.
    pub bundles_discarded: u64,
    /// BUNDLE_ADDs accepted into an open bundle.
    pub bundle_messages: u64,
    /// OFPT_ERROR messages sent.
    pub errors_sent: u64,
    /// Barrier requests answered.
    pub barriers: u64,
    /// Echo requests answered.
    pub echoes: u64,
    /// Multipart requests answered (with a reply or an error).
    pub multipart_requests: u64,
    /// Multipart reply messages sent (parts).
    pub multipart_parts_sent: u64,
    /// FLOW_REMOVED messages sent.
    pub flow_removed_sent: u64,
    /// PACKET_OUTs swallowed.
    pub packet_outs: u64,
    /// When the FEATURES_REPLY was sent (handshake complete).
    pub ready_at: Option<Instant>,
    /// When the last bundle was committed.
    pub last_bundle_at: Option<Instant>,
}

/// The committed-bundle counter a benchmark can await without polling
/// ([`SimSwitch::commits`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Commits {
    /// Bundles committed so far.
    pub count: u64,
    /// When the last one was committed (taken inside the switch, before the reply).
    pub last_at: Option<Instant>,
}

/// Where the connection is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Dialled, HELLO sent, FEATURES_REQUEST not seen yet.
    Connected,
    /// FEATURES_REPLY sent: the controller knows the datapath id.
    Ready,
    /// The connection is gone, and why.
    Closed(String),
}

/// Key of a flow: table, priority and the encoded (normalised, sorted, padded)
/// `ofp_match`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    table: u8,
    priority: u16,
    match_: Box<[u8]>,
}

/// The rest of a flow, instructions encoded.
#[derive(Clone, Debug)]
struct FlowEntry {
    cookie: u64,
    idle_timeout: u16,
    hard_timeout: u16,
    flags: u16,
    /// Nanoseconds after the switch started.
    installed_ns: u64,
    instructions: Box<[u8]>,
}

/// One change, for rolling a bundle back.
enum Undo {
    /// The flow at this key was this (None: absent).
    Flow(FlowKey, Option<FlowEntry>),
    Group(u32, Option<GroupDesc>),
    Meter(u32, Option<MeterMod>),
    AllGroups(HashMap<u32, GroupDesc>),
    AllMeters(HashMap<u32, MeterMod>),
}

/// Records undo entries when a bundle commits; off for single messages (which validate
/// everything before changing anything).
struct Journal {
    on: bool,
    log: Vec<Undo>,
}

impl Journal {
    fn new(on: bool) -> Journal {
        Journal {
            on,
            log: Vec::new(),
        }
    }

    fn record(&mut self, undo: impl FnOnce() -> Undo) {
        if self.on {
            self.log.push(undo());
        }
    }
}

struct Bundle {
    flags: u16,
    closed: bool,
    messages: Vec<(u32, Message)>,
}

struct State {
    flows: HashMap<FlowKey, FlowEntry>,
    groups: HashMap<u32, GroupDesc>,
    meters: HashMap<u32, MeterMod>,
    bundles: HashMap<u32, Bundle>,
    config: SwitchConfig,
    role: Role,
    generation_id: Option<u64>,
    stats: SimStats,
    scratch: BytesMut,
}

struct Shared {
    datapath_id: u64,
    started: Instant,
    state: Mutex<State>,
    commits: watch::Sender<Commits>,
    phase: watch::Sender<Phase>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops the serving task when the last handle goes.
struct Task(tokio::task::AbortHandle);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A handle to one simulated switch. Cheap to clone; dropping the last clone (or
/// [`SimSwitch::disconnect`]) stops its task and closes its connection.
#[derive(Clone)]
pub struct SimSwitch {
    shared: Arc<Shared>,
    task: Arc<Task>,
}

impl std::fmt::Debug for SimSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSwitch")
            .field(
                "datapath_id",
                &format_args!("{:016x}", self.shared.datapath_id),
            )
            .field("phase", &*self.shared.phase.borrow())
            .finish()
    }
}

impl SimSwitch {
    /// Dials the controller's OpenFlow listener (`unix:PATH` or `tcp:IP:PORT`) and serves
    /// the connection in a spawned task, answering FEATURES_REQUEST with `datapath_id`.
    /// Returns once connected; the handshake completes when the controller accepts
    /// ([`SimSwitch::wait_ready`]). Must be called inside a tokio runtime.
    pub async fn connect(target: &str, datapath_id: u64) -> io::Result<SimSwitch> {
        let bad = |reason: String| io::Error::new(io::ErrorKind::InvalidInput, reason);
        match target.parse::<Target>().map_err(|e| bad(e.to_string()))? {
            Target::Unix(p) => Ok(SimSwitch::from_stream(
                UnixStream::connect(p).await?,
                datapath_id,
            )),
            Target::Tcp(a) => {
                let s = TcpStream::connect(a).await?;
                s.set_nodelay(true)?;
                Ok(SimSwitch::from_stream(s, datapath_id))
            }
            Target::PUnix(_) | Target::PTcp(_) | Target::PSsl(_) | Target::Ssl(_) => Err(bad(
                format!("{target}: a switch dials the controller; use unix:PATH or tcp:IP:PORT"),
            )),
        }
    }

    /// Serves an already connected stream (a socket pair end, say) as the switch side.
    /// Must be called inside a tokio runtime.
    pub fn from_stream<S>(stream: S, datapath_id: u64) -> SimSwitch
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared {
            datapath_id,
            started: Instant::now(),
            state: Mutex::new(State {
                flows: HashMap::new(),
                groups: HashMap::new(),
                meters: HashMap::new(),
                bundles: HashMap::new(),
                config: SwitchConfig {
                    flags: 0,
                    miss_send_len: 128,
                },
                role: Role {
                    role: role::EQUAL,
                    generation_id: 0,
                },
                generation_id: None,
                stats: SimStats::default(),
                scratch: BytesMut::new(),
            }),
            commits: watch::Sender::new(Commits::default()),
            phase: watch::Sender::new(Phase::Connected),
        });
        let io = Framed::new(stream, OfCodec);
        let handle = tokio::spawn(serve(io, shared.clone()));
        SimSwitch {
            shared,
            task: Arc::new(Task(handle.abort_handle())),
        }
    }

    /// The datapath id it reports.
    pub fn datapath_id(&self) -> u64 {
        self.shared.datapath_id
    }

    /// Where the connection is.
    pub fn phase(&self) -> Phase {
        self.shared.phase.borrow().clone()
    }

    /// Waits until the handshake is complete (FEATURES_REPLY sent); false if the
    /// connection closed first or `timeout` passed.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.phase.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|p| *p != Phase::Connected)).await;
        matches!(waited, Ok(Ok(p)) if *p == Phase::Ready)
    }

    /// Number of flows in all tables.
    pub fn flow_count(&self) -> usize {
        lock(&self.shared.state).flows.len()
    }

    /// Every flow, as a flow-stats entry (duration since installed, zero counters),
    /// ordered by table, then priority from high to low, then encoded match.
    pub fn flows(&self) -> Vec<FlowStats> {
        let now = self.shared.now_ns();
        let st = lock(&self.shared.state);
        let mut v: Vec<(&FlowKey, &FlowEntry)> = st.flows.iter().collect();
        sort_flows(&mut v);
        v.into_iter().map(|(k, e)| flow_stats(k, e, now)).collect()
    }

    /// Every group, by id.
    pub fn groups(&self) -> Vec<GroupDesc> {
        let st = lock(&self.shared.state);
        let mut v: Vec<GroupDesc> = st.groups.values().cloned().collect();
        v.sort_by_key(|g| g.group_id);
        v
    }

    /// Every meter, by id.
    pub fn meters(&self) -> Vec<MeterMod> {
        let st = lock(&self.shared.state);
        let mut v: Vec<MeterMod> = st.meters.values().cloned().collect();
        v.sort_by_key(|m| m.meter_id);
        v
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        lock(&self.shared.state).stats
    }

    /// The committed-bundle counter: `changed().await` on it wakes when a bundle commits,
    /// so a benchmark can time "event → bundle committed" without polling.
    pub fn commits(&self) -> watch::Receiver<Commits> {
        self.shared.commits.subscribe()
    }

    /// Waits until at least `n` bundles have been committed; false on timeout.
    pub async fn wait_for_bundles(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.commits();
        tokio::time::timeout(timeout, rx.wait_for(|c| c.count >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Closes the connection (the controller sees the switch go away) and stops the
    /// task. The tables stay readable.
    pub fn disconnect(&self) {
        self.task.0.abort();
        self.shared.phase.send_if_modified(|p| {
            if matches!(p, Phase::Closed(_)) {
                false
            } else {
                *p = Phase::Closed("disconnected by SimSwitch::disconnect".into());
                true
            }
        });
    }
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

async fn serve<S>(mut io: Framed<S, OfCodec>, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reason = match run(&mut io, &shared).await {
        Ok(()) => "the controller closed the connection".to_string(),
        Err(e) => e,
    };
    shared.phase.send_replace(Phase::Closed(reason));
}

async fn run<S>(io: &mut Framed<S, OfCodec>, shared: &Shared) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.send((0, Message::Hello(openflow::Hello::of13())))
        .await
        .map_err(|e| format!("sending HELLO: {e}"))?;
    let mut out: Vec<(u32, Message)> = Vec::new();
    while let Some(frame) = io.next().await {
        let (xid, msg) = frame.map_err(|e| format!("reading: {e}"))?;
        let verdict = {
            let mut st = lock(&shared.state);
            let verdict = handle(shared, &mut st, xid, msg, &mut out);
            st.stats.errors_sent += out
                .iter()
                .filter(|(_, m)| matches!(m, Message::Error(_)))
                .count() as u64;
            st.stats.flow_removed_sent += out
                .iter()
                .filter(|(_, m)| matches!(m, Message::FlowRemoved(_)))
                .count() as u64;
            verdict
        };
        for m in out.drain(..) {
            io.feed(m).await.map_err(|e| format!("writing: {e}"))?;
        }
        io.flush().await.map_err(|e| format!("writing: {e}"))?;
        verdict?;
    }
    Ok(())
}

/// Handles one received message, queueing what to send in `out`. An `Err` ends the
/// connection (after `out` is sent).
fn handle(
    shared: &Shared,
    st: &mut State,
    xid: u32,
    msg: openflow::Result<Message>,
    out: &mut Vec<(u32, Message)>,
) -> Result<(), String> {
    st.stats.messages_received += 1;
    let msg = match msg {
        Ok(m) => m,
        Err(e) => {
            let c = match e {
                openflow::Error::BadVersion { .. } => code::BRC_BAD_VERSION,
                _ => code::BRC_BAD_LEN,
            };
            out.push(OfError::new(code::BAD_REQUEST, c).message(xid, None));
            return Ok(());
        }
    };
    match msg {
        Message::Hello(h) => {
            if !h.supports(openflow::OFP_VERSION) {
                out.push((
                    xid,
                    Message::Error(ErrorMsg {
                        error_type: code::HELLO_FAILED,
                        code: 0,
                        experimenter: None,
                        data: Bytes::from_static(b"only OpenFlow 1.3 (0x04) is supported"),
                    }),
                ));
                return Err("the controller does not speak OpenFlow 1.3".into());
            }
        }
        Message::EchoRequest(d) => {
            st.stats.echoes += 1;
            out.push((xid, Message::EchoReply(d)));
        }
        Message::EchoReply(_) => {}
        Message::FeaturesRequest => {
            out.push((
                xid,
                Message::FeaturesReply(FeaturesReply {
                    datapath_id: shared.datapath_id,
                    n_buffers: 0,
                    n_tables: N_TABLES,
                    auxiliary_id: 0,
                    // flow, table, port, group, queue stats: what OVS reports.
                    capabilities: 0x4f,
                }),
            ));
            if st.stats.ready_at.is_none() {
                st.stats.ready_at = Some(Instant::now());
            }
            shared.phase.send_if_modified(|p| {
                let change = *p == Phase::Connected;
                if change {
                    *p = Phase::Ready;
                }
                change
            });
        }
        Message::GetConfigRequest => out.push((xid, Message::GetConfigReply(st.config))),
        Message::SetConfig(c) => st.config = c,
        Message::RoleRequest(r) => match role_request(st, r) {
            Ok(reply) => out.push((xid, Message::RoleReply(reply))),
            Err(e) => out.push(e.message(xid, Some(&Message::RoleRequest(r)))),
        },
        Message::BarrierRequest => {
            st.stats.barriers += 1;
            out.push((xid, Message::BarrierReply));
        }
        Message::SetPacketInFormat(_) => {}
        Message::PacketOut(_) => st.stats.packet_outs += 1,
        m @ (Message::FlowMod(_) | Message::GroupMod(_) | Message::MeterMod(_)) => {
            let now = shared.now_ns();
            let mut journal = Journal::new(false);
            let mut removed = Vec::new();
            match check(&m).and_then(|()| apply(st, &m, now, &mut journal, &mut removed)) {
                Ok(()) => {
                    count_applied(&mut st.stats, &m);
                    out.extend(removed.into_iter().map(|r| (0, Message::FlowRemoved(r))));
                }
                Err(e) => out.push(e.message(xid, Some(&m))),
            }
        }
        Message::BundleControl(c) => bundle_control(shared, st, xid, c, out),
        Message::BundleAdd(a) => bundle_add(st, xid, a, out),
        Message::MultipartRequest(r) => {
            st.stats.multipart_requests += 1;
            let before = out.len();
            multipart(shared, st, xid, r, out);
            st.stats.multipart_parts_sent += out[before..]
                .iter()
                .filter(|(_, m)| matches!(m, Message::MultipartReply(_)))
                .count() as u64;
        }
        Message::Experimenter(e) => {
            let known = e.experimenter == NX_EXPERIMENTER || e.experimenter == ONF_EXPERIMENTER;
            let c = if known {
                code::BRC_BAD_EXP_TYPE
            } else {
                code::BRC_BAD_EXPERIMENTER
            };
            let m = Message::Experimenter(e);
            out.push(OfError::new(code::BAD_REQUEST, c).message(xid, Some(&m)));
        }
        other => {
            out.push(OfError::new(code::BAD_REQUEST, code::BRC_BAD_TYPE).message(xid, Some(&other)))
        }
    }
    Ok(())
}

fn role_request(st: &mut State, r: Role) -> Result<Role, OfError> {
    match r.role {
        role::NOCHANGE => {}
        role::EQUAL => st.role.role = role::EQUAL,
        role::MASTER | role::SLAVE => {
            if let Some(g) = st.generation_id
                && (r.generation_id.wrapping_sub(g) as i64) < 0
            {
                return Err(OfError::new(code::ROLE_REQUEST_FAILED, code::RRFC_STALE));
            }
            st.generation_id = Some(r.generation_id);
            st.role = r;
        }
        _ => return Err(OfError::new(code::ROLE_REQUEST_FAILED, code::RRFC_BAD_ROLE)),
    }
    Ok(Role {
        role: st.role.role,
        generation_id: st.generation_id.unwrap_or(0),
    })
}

fn count_applied(stats: &mut SimStats, m: &Message) {
    match m {
        Message::FlowMod(_) => stats.flow_mods += 1,
        Message::GroupMod(_) => stats.group_mods += 1,
        Message::MeterMod(_) => stats.meter_mods += 1,
        Message::PacketOut(_) => stats.packet_outs += 1,
        _ => {}
    }
}

/// Checks that do not depend on the tables: what OVS rejects when a message is added to
/// a bundle (or, outright, when sent alone).
fn check(m: &Message) -> Result<(), OfError> {
    match m {
        Message::FlowMod(fm) => {
            let bad_table = OfError::new(code::FLOW_MOD_FAILED, code::FMFC_BAD_TABLE_ID);
            let all_ok = matches!(
                fm.command,
                FlowModCommand::Delete | FlowModCommand::DeleteStrict
            );
            if fm.table_id >= N_TABLES && !(all_ok && fm.table_id == port::TABLE_ALL) {
                return Err(bad_table);
            }
            if fm.match_.check_prerequisites().is_err() {
                return Err(OfError::new(code::BAD_MATCH, 9)); // OFPBMC_BAD_PREREQ
            }
            if !all_ok {
                for i in &fm.instructions {
                    if let Instruction::GotoTable(t) = i
                        && (*t <= fm.table_id || *t >= N_TABLES)
                    {
                        return Err(OfError::new(code::BAD_INSTRUCTION, code::BIC_BAD_TABLE_ID));
                    }
                }
            }
            Ok(())
        }
        Message::GroupMod(g) => {
            if g.group_id > port::GROUP_MAX
                && !(g.command == GroupModCommand::Delete && g.group_id == port::GROUP_ALL)
            {
                return Err(OfError::new(
                    code::GROUP_MOD_FAILED,
                    code::GMFC_INVALID_GROUP,
                ));
            }
            Ok(())
        }
        Message::MeterMod(mm) => {
            let valid = (1..=0xffff_0000).contains(&mm.meter_id)
                || (mm.command == MeterModCommand::Delete && mm.meter_id == 0xffff_ffff);
            if !valid {
                return Err(OfError::new(
                    code::METER_MOD_FAILED,
                    code::MMFC_INVALID_METER,
                ));
            }
            Ok(())
        }
        Message::PacketOut(_) => Ok(()),
        _ => Err(OfError::bundle(code::BFC_MSG_UNSUP)),
    }
}

/// Applies one checked message to the tables. Fails only before changing anything for
/// this message; earlier messages of a bundle are undone from the journal.
fn apply(
    st: &mut State,
    m: &Message,
    now: u64,
    journal: &mut Journal,
    removed: &mut Vec<FlowRemoved>,
) -> Result<(), OfError> {
    match m {
        Message::FlowMod(fm) => flow_mod(st, fm, now, journal, removed),
        Message::GroupMod(g) => group_mod(st, g, journal),
        Message::MeterMod(mm) => meter_mod(st, mm, journal),
        Message::PacketOut(_) => Ok(()),
        _ => Err(OfError::bundle(code::BFC_MSG_UNSUP)),
    }
}

fn encode_match(scratch: &mut BytesMut, m: &Match) -> Result<Box<[u8]>, OfError> {
    scratch.clear();
    m.encode(scratch)
        .map_err(|_| OfError::new(code::BAD_MATCH, 0))?;
    Ok(Box::from(&scratch[..]))
}

fn encode_instructions(
    scratch: &mut BytesMut,
    instructions: &[Instruction],
) -> Result<Box<[u8]>, OfError> {
    scratch.clear();
    Instruction::encode_list(instructions, scratch)
        .map_err(|_| OfError::new(code::BAD_INSTRUCTION, 0))?;
    Ok(Box::from(&scratch[..]))
}

/// Whether every criterion of `req` is implied by `flow`: `flow` has the field with at
/// least the same mask bits, and the values agree under `req`'s mask (OVS's loose match).
fn covers(req: &Match, flow: &Match) -> bool {
    req.iter().all(|r| {
        flow.get(r.field).is_some_and(|f| {
            r.value.len() == f.value.len()
                && (0..r.value.len()).all(|i| {
                    let rm = r.mask.as_ref().map_or(0xff, |m| m[i]);
                    let fm = f.mask.as_ref().map_or(0xff, |m| m[i]);
                    rm & !fm == 0 && (r.value[i] & rm) == (f.value[i] & rm)
                })
        })
    })
}

fn outputs_to(instructions: &[Instruction], out_port: u32, out_group: u32) -> bool {
    let actions = instructions.iter().flat_map(|i| match i {
        Instruction::ApplyActions(a) | Instruction::WriteActions(a) => a.as_slice(),
        _ => &[],
    });
    let mut port_ok = out_port == port::ANY;
    let mut group_ok = out_group == port::GROUP_ANY;
    for a in actions {
        match a {
            Action::Output { port, .. } if *port == out_port => port_ok = true,
            Action::Group(g) if *g == out_group => group_ok = true,
            _ => {}
        }
    }
    port_ok && group_ok
}

/// The flow selection of a modify, delete or stats request.
struct Selection<'a> {
    table: u8,
    cookie: u64,
    cookie_mask: u64,
    /// Strict: exactly this priority and match.
    strict: Option<(u16, &'a [u8])>,
    match_: &'a Match,
    out_port: u32,
    out_group: u32,
}

impl Selection<'_> {
    fn from_request(r: &FlowStatsRequest) -> Selection<'_> {
        Selection {
            table: r.table_id,
            cookie: r.cookie,
            cookie_mask: r.cookie_mask,
            strict: None,
            match_: &r.match_,
            out_port: r.out_port,
            out_group: r.out_group,
        }
    }

    fn selects(&self, k: &FlowKey, e: &FlowEntry) -> bool {
        if self.table != port::TABLE_ALL && k.table != self.table {
            return false;
        }
        if (e.cookie ^ self.cookie) & self.cookie_mask != 0 {
            return false;
        }
        match self.strict {
            Some((priority, m)) => {
                if k.priority != priority || *k.match_ != *m {
                    return false;
                }
            }
            None => {
                if !self.match_.is_empty() && !covers(self.match_, &decode_flow(k, e).match_) {
                    return false;
                }
            }
        }
        (self.out_port == port::ANY && self.out_group == port::GROUP_ANY)
            || outputs_to(
                &decode_flow(k, e).instructions,
                self.out_port,
                self.out_group,
            )
    }
}

fn flow_mod(
    st: &mut State,
    fm: &FlowMod,
    now: u64,
    journal: &mut Journal,
    removed: &mut Vec<FlowRemoved>,
) -> Result<(), OfError> {
    let match_ = encode_match(&mut st.scratch, &fm.match_)?;
    let strict = matches!(
        fm.command,
        FlowModCommand::ModifyStrict | FlowModCommand::DeleteStrict
    );
    let is_delete = matches!(
        fm.command,
        FlowModCommand::Delete | FlowModCommand::DeleteStrict
    );
    let sel = Selection {
        table: fm.table_id,
        cookie: fm.cookie,
        cookie_mask: fm.cookie_mask,
        strict: strict.then_some((fm.priority, &match_[..])),
        match_: &fm.match_,
        // OpenFlow 1.3: out_port/out_group filter deletes only.
        out_port: if is_delete { fm.out_port } else { port::ANY },
        out_group: if is_delete {
            fm.out_group
        } else {
            port::GROUP_ANY
        },
    };
    let new_entry = |st: &mut State| -> Result<FlowEntry, OfError> {
        Ok(FlowEntry {
            cookie: fm.cookie,
            idle_timeout: fm.idle_timeout,
            hard_timeout: fm.hard_timeout,
            flags: fm.flags,
            installed_ns: now,
            instructions: encode_instructions(&mut st.scratch, &fm.instructions)?,
        })
    };
    match fm.command {
        FlowModCommand::Add => {
            let entry = new_entry(st)?;
            let key = FlowKey {
                table: fm.table_id,
                priority: fm.priority,
                match_,
            };
            if journal.on {
                let old = st.flows.insert(key.clone(), entry);
                journal.record(|| Undo::Flow(key, old));
            } else {
                st.flows.insert(key, entry);
            }
        }
        FlowModCommand::Modify | FlowModCommand::ModifyStrict => {
            let instructions = encode_instructions(&mut st.scratch, &fm.instructions)?;
            let key = FlowKey {
                table: fm.table_id,
                priority: fm.priority,
                match_: match_.clone(),
            };
            let mut touched = 0;
            if strict {
                if let Some(e) = st.flows.get_mut(&key)
                    && sel.selects(&key, e)
                {
                    let old = std::mem::replace(&mut e.instructions, instructions.clone());
                    let before = FlowEntry {
                        instructions: old,
                        ..e.clone()
                    };
                    journal.record(|| Undo::Flow(key.clone(), Some(before)));
                    touched = 1;
                }
            } else {
                for (k, e) in st.flows.iter_mut() {
                    if sel.selects(k, e) {
                        let before = e.clone();
                        e.instructions = instructions.clone();
                        journal.record(|| Undo::Flow(k.clone(), Some(before)));
                        touched += 1;
                    }
                }
            }
            // Like OVS, a modify that finds nothing adds the flow (unless it filtered
            // on the cookie).
            if touched == 0 && fm.cookie_mask == 0 {
                let entry = new_entry(st)?;
                let old = st.flows.insert(key.clone(), entry);
                journal.record(|| Undo::Flow(key, old));
            }
        }
        FlowModCommand::Delete | FlowModCommand::DeleteStrict => {
            let gone: Vec<(FlowKey, FlowEntry)> = if strict && fm.table_id != port::TABLE_ALL {
                let key = FlowKey {
                    table: fm.table_id,
                    priority: fm.priority,
                    match_: match_.clone(),
                };
                match st.flows.get(&key) {
                    Some(e) if sel.selects(&key, e) => {
                        st.flows.remove_entry(&key).into_iter().collect()
                    }
                    _ => Vec::new(),
                }
            } else {
                st.flows.extract_if(|k, e| sel.selects(k, e)).collect()
            };
            for (k, e) in gone {
                if e.flags & fm_flags::SEND_FLOW_REM != 0 {
                    let d = now.saturating_sub(e.installed_ns);
                    removed.push(FlowRemoved {
                        cookie: e.cookie,
                        priority: k.priority,
                        reason: OFPRR_DELETE,
                        table_id: k.table,
                        duration_sec: (d / 1_000_000_000) as u32,
                        duration_nsec: (d % 1_000_000_000) as u32,
                        idle_timeout: e.idle_timeout,
                        hard_timeout: e.hard_timeout,
                        packet_count: 0,
                        byte_count: 0,
                        match_: decode_flow(&k, &e).match_,
                    });
                }
                journal.record(|| Undo::Flow(k, Some(e)));
            }
        }
    }
    Ok(())
}

fn group_mod(st: &mut State, g: &GroupMod, journal: &mut Journal) -> Result<(), OfError> {
    let desc = || GroupDesc {
        group_type: g.group_type,
        group_id: g.group_id,
        buckets: g.buckets.clone(),
    };
    match g.command {
        GroupModCommand::Add => {
            if st.groups.contains_key(&g.group_id) {
                return Err(OfError::new(
                    code::GROUP_MOD_FAILED,
                    code::GMFC_GROUP_EXISTS,
                ));
            }
            st.groups.insert(g.group_id, desc());
            journal.record(|| Undo::Group(g.group_id, None));
        }
        GroupModCommand::Modify => {
            let Some(old) = st.groups.insert(g.group_id, desc()) else {
                st.groups.remove(&g.group_id);
                return Err(OfError::new(
                    code::GROUP_MOD_FAILED,
                    code::GMFC_UNKNOWN_GROUP,
                ));
            };
            journal.record(|| Undo::Group(g.group_id, Some(old)));
        }
        GroupModCommand::Delete => {
            if g.group_id == port::GROUP_ALL {
                let all = std::mem::take(&mut st.groups);
                journal.record(|| Undo::AllGroups(all));
            } else if let Some(old) = st.groups.remove(&g.group_id) {
                journal.record(|| Undo::Group(g.group_id, Some(old)));
            }
        }
    }
    Ok(())
}

fn meter_mod(st: &mut State, mm: &MeterMod, journal: &mut Journal) -> Result<(), OfError> {
    match mm.command {
        MeterModCommand::Add => {
            if st.meters.contains_key(&mm.meter_id) {
                return Err(OfError::new(
                    code::METER_MOD_FAILED,
                    code::MMFC_METER_EXISTS,
                ));
            }
            st.meters.insert(mm.meter_id, mm.clone());
            journal.record(|| Undo::Meter(mm.meter_id, None));
        }
        MeterModCommand::Modify => {
            let Some(old) = st.meters.insert(mm.meter_id, mm.clone()) else {
                st.meters.remove(&mm.meter_id);
                return Err(OfError::new(
                    code::METER_MOD_FAILED,
                    code::MMFC_UNKNOWN_METER,
                ));
            };
            journal.record(|| Undo::Meter(mm.meter_id, Some(old)));
        }
        MeterModCommand::Delete => {
            if mm.meter_id == 0xffff_ffff {
                let all = std::mem::take(&mut st.meters);
                journal.record(|| Undo::AllMeters(all));
            } else if let Some(old) = st.meters.remove(&mm.meter_id) {
                journal.record(|| Undo::Meter(mm.meter_id, Some(old)));
            }
        }
    }
    Ok(())
}

fn rollback(st: &mut State, journal: Journal) {
    for undo in journal.log.into_iter().rev() {
        match undo {
            Undo::Flow(k, Some(e)) => {
                st.flows.insert(k, e);
            }
            Undo::Flow(k, None) => {
                st.flows.remove(&k);
            }
            Undo::Group(id, Some(g)) => {
                st.groups.insert(id, g);
            }
            Undo::Group(id, None) => {
                st.groups.remove(&id);
            }
            Undo::Meter(id, Some(m)) => {
                st.meters.insert(id, m);
            }
            Undo::Meter(id, None) => {
                st.meters.remove(&id);
            }
            Undo::AllGroups(all) => st.groups = all,
            Undo::AllMeters(all) => st.meters = all,
        }
    }
}

fn bundle_control(
    shared: &Shared,
    st: &mut State,
    xid: u32,
    c: BundleControl,
    out: &mut Vec<(u32, Message)>,
) {
    let reply = |ctrl_type| {
        (
            xid,
            Message::BundleControl(BundleControl {
                bundle_id: c.bundle_id,
                ctrl_type,
                flags: c.flags,
            }),
        )
    };
    let fail = |code| OfError::bundle(code).message(xid, Some(&Message::BundleControl(c)));
    let id = c.bundle_id;
    match c.ctrl_type {
        BundleCtrlType::OpenRequest => {
            if st.bundles.remove(&id).is_some() {
                out.push(fail(code::BFC_BAD_ID));
            } else {
                st.bundles.insert(
                    id,
                    Bundle {
                        flags: c.flags,
                        closed: false,
                        messages: Vec::new(),
                    },
                );
                out.push(reply(BundleCtrlType::OpenReply));
            }
        }
        BundleCtrlType::CloseRequest => match st.bundles.get_mut(&id) {
            None => out.push(fail(code::BFC_BAD_ID)),
            Some(b) if b.closed => out.push(fail(code::BFC_BUNDLE_CLOSED)),
            Some(b) if b.flags != c.flags => {
                st.bundles.remove(&id);
                out.push(fail(code::BFC_BAD_FLAGS));
            }
            Some(b) => {
                b.closed = true;
                out.push(reply(BundleCtrlType::CloseReply));
            }
        },
        BundleCtrlType::CommitRequest => match st.bundles.remove(&id) {
            None => out.push(fail(code::BFC_BAD_ID)),
            Some(b) if b.flags != c.flags => out.push(fail(code::BFC_BAD_FLAGS)),
            Some(b) => {
                let now = shared.now_ns();
                let mut journal = Journal::new(true);
                let mut removed = Vec::new();
                let mut failure = None;
                for (ixid, m) in &b.messages {
                    if let Err(e) = apply(st, m, now, &mut journal, &mut removed) {
                        failure = Some((*ixid, m, e));
                        break;
                    }
                }
                match failure {
                    Some((ixid, m, e)) => {
                        rollback(st, journal);
                        st.stats.bundles_failed += 1;
                        // OVS names the failing message (its own xid), then fails the
                        // commit.
                        out.push(e.message(ixid, Some(m)));
                        out.push(fail(code::BFC_MSG_FAILED));
                    }
                    None => {
                        for (_, m) in &b.messages {
                            count_applied(&mut st.stats, m);
                        }
                        let at = Instant::now();
                        st.stats.bundles += 1;
                        st.stats.last_bundle_at = Some(at);
                        let count = st.stats.bundles;
                        out.extend(removed.into_iter().map(|r| (0, Message::FlowRemoved(r))));
                        out.push(reply(BundleCtrlType::CommitReply));
                        shared.commits.send_replace(Commits {
                            count,
                            last_at: Some(at),
                        });
                    }
                }
            }
        },
        BundleCtrlType::DiscardRequest => match st.bundles.remove(&id) {
            None => out.push(fail(code::BFC_BAD_ID)),
            Some(_) => {
                st.stats.bundles_discarded += 1;
                out.push(reply(BundleCtrlType::DiscardReply));
            }
        },
        _ => out.push(fail(code::BFC_BAD_TYPE)),
    }
}

fn bundle_add(st: &mut State, xid: u32, a: BundleAdd, out: &mut Vec<(u32, Message)>) {
    let fail = |e: OfError, a: BundleAdd, out: &mut Vec<(u32, Message)>| {
        out.push(e.message(xid, Some(&Message::BundleAdd(a))));
    };
    if a.xid != xid {
        return fail(OfError::bundle(code::BFC_MSG_BAD_XID), a, out);
    }
    if !matches!(
        *a.message,
        Message::FlowMod(_) | Message::GroupMod(_) | Message::MeterMod(_) | Message::PacketOut(_)
    ) {
        return fail(OfError::bundle(code::BFC_MSG_UNSUP), a, out);
    }
    // OVS opens a bundle implicitly on its first add.
    let b = st.bundles.entry(a.bundle_id).or_insert_with(|| Bundle {
        flags: a.flags,
        closed: false,
        messages: Vec::new(),
    });
    if b.closed || b.flags != a.flags {
        let e = if b.closed {
            code::BFC_BUNDLE_CLOSED
        } else {
            code::BFC_BAD_FLAGS
        };
        st.bundles.remove(&a.bundle_id);
        return fail(OfError::bundle(e), a, out);
    }
    if let Err(e) = check(&a.message) {
        return fail(e, a, out);
    }
    b.messages.push((xid, *a.message));
    st.stats.bundle_messages += 1;
}

/// Sorts by table, priority (high first), encoded match.
fn sort_flows(v: &mut [(&FlowKey, &FlowEntry)]) {
    v.sort_unstable_by(|(a, _), (b, _)| {
        (a.table, std::cmp::Reverse(a.priority), &a.match_).cmp(&(
            b.table,
            std::cmp::Reverse(b.priority),
            &b.match_,
        ))
    });
}

/// The flow as a FlowMod, decoded through the codec from its stored encoding.
fn decode_flow(k: &FlowKey, e: &FlowEntry) -> FlowMod {
    let mut b = BytesMut::with_capacity(48 + k.match_.len() + e.instructions.len());
    b.put_u8(openflow::OFP_VERSION);
    b.put_u8(openflow::message::ofpt::FLOW_MOD);
    b.put_u16(0);
    b.put_u32(0);
    b.put_u64(e.cookie);
    b.put_u64(0);
    b.put_u8(k.table);
    b.put_u8(0);
    b.put_u16(e.idle_timeout);
    b.put_u16(e.hard_timeout);
    b.put_u16(k.priority);
    b.put_u32(port::NO_BUFFER);
    b.put_u32(port::ANY);
    b.put_u32(port::GROUP_ANY);
    b.put_u16(e.flags);
    b.put_u16(0);
    b.put_slice(&k.match_);
    b.put_slice(&e.instructions);
    // The pieces came from one message, so they fit in one again.
    let len = u16::try_from(b.len()).expect("a stored flow fits in one message");
    b[2..4].copy_from_slice(&len.to_be_bytes());
    match Message::decode(&mut b.freeze()) {
        Ok((_, Message::FlowMod(fm))) => fm,
        other => panic!("a stored flow does not decode again: {other:?}"),
    }
}

fn flow_stats(k: &FlowKey, e: &FlowEntry, now: u64) -> FlowStats {
    let mut s = FlowStats::from(&decode_flow(k, e));
    let d = now.saturating_sub(e.installed_ns);
    s.duration_sec = (d / 1_000_000_000) as u32;
    s.duration_nsec = (d % 1_000_000_000) as u32;
    s
}

/// Sends `items` (each with its encoded size) as multipart reply parts of at most 64 KiB,
/// all but the last flagged OFPMPF_REPLY_MORE; an empty list is one empty part.
fn send_parts<T>(
    xid: u32,
    items: Vec<(usize, T)>,
    wrap: fn(Vec<T>) -> MultipartReplyBody,
    out: &mut Vec<(u32, Message)>,
) {
    let mut parts: Vec<Vec<T>> = vec![Vec::new()];
    let mut size = MULTIPART_HEADER;
    for (n, item) in items {
        let last = parts.last_mut().expect("one part at least");
        if size + n > MAX_MESSAGE && !last.is_empty() {
            parts.push(Vec::new());
            size = MULTIPART_HEADER;
        }
        size += n;
        parts.last_mut().expect("one part at least").push(item);
    }
    let n = parts.len();
    for (i, p) in parts.into_iter().enumerate() {
        let flags = if i + 1 < n { OFPMPF_MORE } else { 0 };
        out.push((
            xid,
            Message::MultipartReply(MultipartReply {
                flags,
                body: wrap(p),
            }),
        ));
    }
}

/// Encoded size of one entry of a reply body of one element.
fn entry_size(body: MultipartReplyBody) -> usize {
    Message::MultipartReply(MultipartReply { flags: 0, body })
        .to_bytes(0)
        .map_or(MAX_MESSAGE, |b| b.len() - MULTIPART_HEADER)
}

fn multipart(
    shared: &Shared,
    st: &mut State,
    xid: u32,
    r: MultipartRequest,
    out: &mut Vec<(u32, Message)>,
) {
    use MultipartReplyBody as R;
    use MultipartRequestBody as Q;
    let one = |body| {
        (
            xid,
            Message::MultipartReply(MultipartReply { flags: 0, body }),
        )
    };
    match &r.body {
        Q::Flow(f) => {
            let sel = Selection::from_request(f);
            let now = shared.now_ns();
            let mut v: Vec<(&FlowKey, &FlowEntry)> =
                st.flows.iter().filter(|(k, e)| sel.selects(k, e)).collect();
            sort_flows(&mut v);
            let items = v
                .into_iter()
                .map(|(k, e)| {
                    let size = FLOW_STATS_FIXED + k.match_.len() + e.instructions.len();
                    (size, flow_stats(k, e, now))
                })
                .collect();
            send_parts(xid, items, R::Flow, out);
        }
        Q::Aggregate(f) => {
            let sel = Selection::from_request(f);
            let flow_count = st.flows.iter().filter(|(k, e)| sel.selects(k, e)).count();
            out.push(one(R::Aggregate(AggregateStats {
                packet_count: 0,
                byte_count: 0,
                flow_count: flow_count as u32,
            })));
        }
        Q::Desc => out.push(one(R::Desc(SwitchDesc {
            mfr_desc: "Switchyard".into(),
            hw_desc: "SimSwitch".into(),
            sw_desc: env!("CARGO_PKG_VERSION").into(),
            serial_num: String::new(),
            dp_desc: format!("simulated switch {:016x}", shared.datapath_id),
        }))),
        Q::Table => {
            let mut active = [0u32; N_TABLES as usize];
            for k in st.flows.keys() {
                active[usize::from(k.table)] += 1;
            }
            let v = (0..N_TABLES)
                .map(|t| TableStats {
                    table_id: t,
                    active_count: active[usize::from(t)],
                    lookup_count: 0,
                    matched_count: 0,
                })
                .collect();
            out.push(one(R::Table(v)));
        }
        Q::PortDesc => out.push(one(R::PortDesc(Vec::new()))),
        Q::PortStats(_) => out.push(one(R::PortStats(Vec::new()))),
        Q::GroupDesc => {
            let mut v: Vec<GroupDesc> = st.groups.values().cloned().collect();
            v.sort_by_key(|g| g.group_id);
            let items = v
                .into_iter()
                .map(|g| (entry_size(R::GroupDesc(vec![g.clone()])), g))
                .collect();
            send_parts(xid, items, R::GroupDesc, out);
        }
        Q::GroupStats(id) => {
            let mut v: Vec<GroupStats> = st
                .groups
                .values()
                .filter(|g| *id == port::GROUP_ALL || g.group_id == *id)
                .map(|g| GroupStats {
                    group_id: g.group_id,
                    ref_count: 0,
                    packet_count: 0,
                    byte_count: 0,
                    duration_sec: 0,
                    duration_nsec: 0,
                    bucket_stats: vec![(0, 0); g.buckets.len()],
                })
                .collect();
            v.sort_by_key(|g| g.group_id);
            let items = v.into_iter().map(|g| (40 + 16 * g.bucket_stats.len(), g));
            send_parts(xid, items.collect(), R::GroupStats, out);
        }
        Q::Other {
            mp_type: OFPMP_TABLE_FEATURES,
            body,
        } if body.is_empty() => {
            // One 64-byte entry per table, default name, no properties.
            let mut b = BytesMut::with_capacity(64 * usize::from(N_TABLES));
            for t in 0..N_TABLES {
                b.put_u16(64);
                b.put_u8(t);
                b.put_bytes(0, 5);
                let mut name = [0u8; 32];
                let s = format!("table{t}");
                name[..s.len()].copy_from_slice(s.as_bytes());
                b.put_slice(&name);
                b.put_u64(u64::MAX);
                b.put_u64(u64::MAX);
                b.put_u32(0);
                b.put_u32(1_000_000);
            }
            out.push(one(R::Other {
                mp_type: OFPMP_TABLE_FEATURES,
                body: b.freeze(),
            }));
        }
        _ => {
            let m = Message::MultipartRequest(r.clone());
            out.push(
                OfError::new(code::BAD_REQUEST, code::BRC_BAD_MULTIPART).message(xid, Some(&m)),
            );
        }
    }
}
