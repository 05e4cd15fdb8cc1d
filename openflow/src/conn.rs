//! A thin tokio layer over the codec: the [`OfCodec`] framer on the 8-byte header, a
//! cloneable [`Connection`] to one switch (active `unix:`/`tcp:` or accepted by a
//! [`Listener`] on `punix:`/`ptcp:`), with the HELLO/FEATURES handshake, echo keepalive
//! in both directions, xid correlation (replies and errors go to the request that caused
//! them), multipart reassembly, barriers and ONF bundles.
//!
//! Shape: one reader task owns the read half and routes every message (pending request by
//! xid, or the asynchronous event channel); one writer task owns the write half and
//! batches what callers queued; a keepalive task sends echo requests when the peer is
//! quiet. Callers encode on their own task, so encoding errors come back synchronously.
//! Dropping the last clone of a [`Connection`] stops the tasks and closes the socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder, FramedRead};
use tracing::{debug, warn};

use crate::message::bundle::flags as bundle_flags;
use crate::message::{HEADER_LEN, Header};
use crate::{
    BundleAdd, BundleControl, BundleCtrlType, Error, ErrorMsg, FeaturesReply, FlowMonitorRequest,
    FlowStats, FlowStatsRequest, FlowUpdate, GroupDesc, Hello, Message, MonitorExt,
    MultipartReplyBody, MultipartRequest, MultipartRequestBody, OFP_VERSION, Result,
};

/// tokio-util framer: splits a byte stream into OpenFlow messages on the header's length
/// field. A frame that is well delimited but does not decode is yielded as
/// `(xid, Err(..))` so one bad message does not end the connection; only an impossible
/// header (length < 8) is fatal.
#[derive(Clone, Copy, Debug, Default)]
pub struct OfCodec;

impl Decoder for OfCodec {
    type Item = (u32, Result<Message>);
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = Header::parse(&src[..HEADER_LEN])?;
        let len = usize::from(h.length);
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(len).freeze();
        Ok(Some(match Message::decode(&mut frame) {
            Ok((xid, msg)) => (xid, Ok(msg)),
            Err(e) => (h.xid, Err(e)),
        }))
    }
}

impl Encoder<(u32, Message)> for OfCodec {
    type Error = Error;

    fn encode(&mut self, (xid, msg): (u32, Message), dst: &mut BytesMut) -> Result<()> {
        msg.encode(xid, dst)
    }
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Error {
        Error::Io {
            context: "OpenFlow connection".into(),
            source,
        }
    }
}

/// Connection tuning.
#[derive(Clone, Debug)]
pub struct Config {
    /// Send an echo request after this long without hearing from the peer.
    pub echo_interval: Duration,
    /// Declare the peer dead after this many consecutive unanswered echo requests, unless
    /// one of our requests is still waiting for its reply (then its `request_timeout`
    /// decides).
    pub max_missed_echoes: u32,
    /// How long a request waits for its reply (and the handshake for each step).
    pub request_timeout: Duration,
    /// Asynchronous messages buffered for [`Connection::take_events`]; beyond this they
    /// are dropped with a warning rather than growing without bound.
    pub event_capacity: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            echo_interval: Duration::from_secs(5),
            max_missed_echoes: 3,
            request_timeout: Duration::from_secs(60),
            event_capacity: 4096,
        }
    }
}

/// Counters of what the connection has seen, for observability and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages received.
    pub messages_received: u64,
    /// Echo requests the peer sent (each was answered).
    pub echo_requests_answered: u64,
    /// Echo requests we sent for keepalive.
    pub echo_requests_sent: u64,
    /// Echo replies the peer sent.
    pub echo_replies_received: u64,
    /// Asynchronous messages dropped because nobody drained the event channel.
    pub events_dropped: u64,
}

enum Pending {
    Single(oneshot::Sender<Result<Message>>),
    Multipart {
        parts: Vec<MultipartReplyBody>,
        tx: oneshot::Sender<Result<Vec<MultipartReplyBody>>>,
    },
}

/// Errors for a contiguous range of xids (the messages of a bundle or a batch).
struct ErrorSink {
    lo: u32,
    hi: u32,
    tx: mpsc::UnboundedSender<(u32, ErrorMsg)>,
}

struct Shared {
    peer: String,
    config: Config,
    writer: mpsc::UnboundedSender<Bytes>,
    pending: Mutex<HashMap<u32, Pending>>,
    sinks: Mutex<Vec<ErrorSink>>,
    next_xid: AtomicU32,
    next_bundle: AtomicU32,
    closed: Mutex<Option<String>>,
    is_closed: AtomicBool,
    /// Tells the reader and writer tasks to stop (and so close the socket).
    stop: tokio::sync::watch::Sender<bool>,
    events: Mutex<Option<mpsc::Receiver<Message>>>,
    started: Instant,
    last_rx_ms: AtomicU64,
    messages_received: AtomicU64,
    echo_requests_answered: AtomicU64,
    echo_requests_sent: AtomicU64,
    echo_replies_received: AtomicU64,
    events_dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the maps inconsistent in a
    // way that matters more than losing the connection, so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn alloc_xids(&self, n: u32) -> u32 {
        loop {
            let cur = self.next_xid.load(Ordering::Relaxed);
            let (start, next) = match cur.checked_add(n) {
                Some(next) if cur != 0 => (cur, next),
                _ => (1, 1 + n),
            };
            if self
                .next_xid
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return start;
            }
        }
    }

    fn closed_error(&self) -> Error {
        Error::Closed(
            lock(&self.closed)
                .clone()
                .unwrap_or_else(|| format!("connection to {} closed", self.peer)),
        )
    }

    fn send_bytes(&self, b: Bytes) -> Result<()> {
        if self.is_closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        self.writer.send(b).map_err(|_| self.closed_error())
    }

    fn send(&self, xid: u32, msg: &Message) -> Result<()> {
        self.send_bytes(msg.to_bytes(xid)?)
    }

    /// Marks the connection closed and fails everything waiting on it.
    fn shutdown(&self, reason: String) {
        {
            let mut c = lock(&self.closed);
            if c.is_some() {
                return;
            }
            debug!(peer = %self.peer, %reason, "OpenFlow connection closed");
            *c = Some(reason.clone());
        }
        self.is_closed.store(true, Ordering::Release);
        self.stop.send_replace(true);
        let pending: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in pending {
            let e = Error::Closed(reason.clone());
            match p {
                Pending::Single(tx) => {
                    let _ = tx.send(Err(e));
                }
                Pending::Multipart { tx, .. } => {
                    let _ = tx.send(Err(e));
                }
            }
        }
        lock(&self.sinks).clear();
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_rx_ms.store(ms, Ordering::Relaxed);
        self.messages_received.fetch_add(1, Ordering::Relaxed);
    }

    fn route(&self, xid: u32, msg: Result<Message>, events: &mpsc::Sender<Message>) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                // Undecodable reply: fail the request it answers, else just log.
                if let Some(p) = lock(&self.pending).remove(&xid) {
                    match p {
                        Pending::Single(tx) => {
                            let _ = tx.send(Err(e));
                        }
                        Pending::Multipart { tx, .. } => {
                            let _ = tx.send(Err(e));
                        }
                    }
                } else {
                    warn!(peer = %self.peer, xid, error = %e, "undecodable OpenFlow message");
                }
                return;
            }
        };
        match msg {
            Message::EchoRequest(data) => {
                self.echo_requests_answered.fetch_add(1, Ordering::Relaxed);
                let _ = self.send(xid, &Message::EchoReply(data));
                return;
            }
            Message::Hello(_) => return,
            _ => {}
        }
        if let Message::Error(e) = &msg {
            let sinks = lock(&self.sinks);
            if let Some(s) = sinks.iter().find(|s| (s.lo..s.hi).contains(&xid)) {
                let _ = s.tx.send((xid, e.clone()));
                return;
            }
        }
        let mut pending = lock(&self.pending);
        match pending.remove(&xid) {
            Some(Pending::Single(tx)) => {
                drop(pending);
                let r = match msg {
                    Message::Error(e) => Err(Error::Switch(e)),
                    m => Ok(m),
                };
                let _ = tx.send(r);
            }
            Some(Pending::Multipart { mut parts, tx }) => match msg {
                Message::MultipartReply(r) => {
                    let more = r.more();
                    parts.push(r.body);
                    if more {
                        pending.insert(xid, Pending::Multipart { parts, tx });
                    } else {
                        drop(pending);
                        let _ = tx.send(Ok(parts));
                    }
                }
                Message::Error(e) => {
                    drop(pending);
                    let _ = tx.send(Err(Error::Switch(e)));
                }
                other => {
                    drop(pending);
                    let _ = tx.send(Err(Error::Protocol(format!(
                        "expected a multipart reply for xid {xid}, got message type {}",
                        other.msg_type()
                    ))));
                }
            },
            None => {
                drop(pending);
                match msg {
                    // Answers to our keepalive echoes carry no pending entry.
                    Message::EchoReply(_) => {
                        self.echo_replies_received.fetch_add(1, Ordering::Relaxed);
                    }
                    m => {
                        if let Err(mpsc::error::TrySendError::Full(_)) = events.try_send(m) {
                            let n = self.events_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                            // Logged at 1, 2, 4, 8... drops so a deaf consumer cannot
                            // flood the log.
                            if n.is_power_of_two() {
                                warn!(peer = %self.peer, dropped = n, "event channel full, dropping asynchronous messages");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Aborts the connection's tasks when the last handle is dropped.
struct Tasks {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.shared.shutdown("connection handle dropped".into());
        for h in &self.handles {
            h.abort();
        }
    }
}

/// A connection to one switch. Cheap to clone; clones share the socket.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    features: FeaturesReply,
    peer_certificate: Option<CertificateDer<'static>>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.shared.peer)
            .field(
                "datapath_id",
                &format_args!("{:016x}", self.features.datapath_id),
            )
            .finish()
    }
}

/// Where to connect or listen, parsed from OVS-style strings (shared with the other
/// Switchyard crates).
pub use switchyard_target::Target;
use switchyard_tls::rustls_pki_types::CertificateDer;
use switchyard_tls::{ClientConfig, ServerConfig, TlsAcceptor, TlsConnector};

fn bad_target(error: switchyard_target::ParseError) -> Error {
    Error::BadTarget {
        target: error.input,
        reason: error.reason,
    }
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

impl Connection {
    /// Connects to a switch's management socket or OpenFlow port (`unix:PATH`,
    /// `tcp:IP:PORT`) and completes the handshake. `ssl:` needs
    /// [`Connection::connect_tls`].
    pub async fn connect(target: &str) -> Result<Connection> {
        Connection::connect_with(target, Config::default()).await
    }

    /// [`Connection::connect`] with explicit settings.
    pub async fn connect_with(target: &str, config: Config) -> Result<Connection> {
        match Target::parse_connect(target).map_err(bad_target)? {
            Target::Unix(p) => {
                let s = UnixStream::connect(&p)
                    .await
                    .map_err(io_err(format!("connecting to {target}")))?;
                Connection::from_stream(s, target.to_string(), config).await
            }
            Target::Tcp(a) => {
                let s = TcpStream::connect(a.as_str())
                    .await
                    .map_err(io_err(format!("connecting to {target}")))?;
                let _ = s.set_nodelay(true);
                Connection::from_stream(s, target.to_string(), config).await
            }
            Target::Ssl(_) => Err(Error::BadTarget {
                target: target.to_string(),
                reason: "ssl: needs a CA, certificate and key (Connection::connect_tls)",
            }),
            Target::PUnix(_) | Target::PTcp(_) | Target::PSsl(_) => Err(Error::BadTarget {
                target: target.to_string(),
                reason: "a passive target: use Listener::bind",
            }),
        }
    }

    /// Connects to `ssl:HOST:PORT` (a switch's `pssl:` OpenFlow port), checks that the
    /// switch's certificate chains to the CA of `tls` and names `server_name`, presents
    /// ours, and completes the OpenFlow handshake.
    pub async fn connect_tls(
        target: &str,
        config: Config,
        tls: Arc<ClientConfig>,
        server_name: &str,
    ) -> Result<Connection> {
        let Target::Ssl(a) = Target::parse_connect(target).map_err(bad_target)? else {
            return Err(Error::BadTarget {
                target: target.to_string(),
                reason: "connect_tls needs an ssl:HOST:PORT target",
            });
        };
        let name = switchyard_tls::server_name(server_name).map_err(|e| Error::Tls {
            peer: target.to_string(),
            reason: e.to_string(),
        })?;
        let s = TcpStream::connect(a.as_str())
            .await
            .map_err(io_err(format!("connecting to {target}")))?;
        let _ = s.set_nodelay(true);
        let s = tokio::time::timeout(
            config.request_timeout,
            TlsConnector::from(tls).connect(name, s),
        )
        .await
        .map_err(|_| Error::Tls {
            peer: target.to_string(),
            reason: "no TLS handshake within the request timeout".into(),
        })?
        .map_err(|e| Error::Tls {
            peer: target.to_string(),
            reason: e.to_string(),
        })?;
        Connection::from_stream(s, target.to_string(), config).await
    }

    /// Runs the handshake on an already connected stream (any transport) and starts the
    /// connection's tasks. `peer` names the peer in errors and logs.
    pub async fn from_stream<S>(stream: S, peer: String, config: Config) -> Result<Connection>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (rd, mut wr) = tokio::io::split(stream);
        let mut reader = FramedRead::new(rd, OfCodec);
        let step = config.request_timeout;

        // HELLO both ways (OpenFlow 1.3 §6.3.1), then FEATURES to learn the datapath id.
        wr.write_all(&Message::Hello(Hello::of13()).to_bytes(0)?)
            .await
            .map_err(io_err(format!("sending HELLO to {peer}")))?;
        let hello = loop {
            match next_frame(&mut reader, step, &peer, "HELLO").await? {
                (_, Ok(Message::Hello(h))) => break h,
                (_, Ok(Message::Error(e))) => return Err(Error::Switch(e)),
                (xid, Ok(Message::EchoRequest(d))) => {
                    wr.write_all(&Message::EchoReply(d).to_bytes(xid)?).await?;
                }
                (_, Ok(other)) => {
                    return Err(Error::Protocol(format!(
                        "{peer} sent message type {} before HELLO",
                        other.msg_type()
                    )));
                }
                (_, Err(e)) => return Err(e),
            }
        };
        if !hello.supports(OFP_VERSION) {
            let err = ErrorMsg {
                error_type: 0,
                code: 0,
                experimenter: None,
                data: Bytes::from_static(b"only OpenFlow 1.3 (0x04) is supported"),
            };
            let _ = wr.write_all(&Message::Error(err).to_bytes(0)?).await;
            return Err(Error::Protocol(format!(
                "{peer} does not support OpenFlow 1.3 (HELLO version 0x{:02x}, bitmap {:?})",
                hello.version, hello.version_bitmap
            )));
        }
        let features_xid = 1;
        wr.write_all(&Message::FeaturesRequest.to_bytes(features_xid)?)
            .await
            .map_err(io_err(format!("sending FEATURES_REQUEST to {peer}")))?;
        let features = loop {
            match next_frame(&mut reader, step, &peer, "FEATURES_REPLY").await? {
                (x, Ok(Message::FeaturesReply(f))) if x == features_xid => break f,
                (_, Ok(Message::Error(e))) => return Err(Error::Switch(e)),
                (xid, Ok(Message::EchoRequest(d))) => {
                    wr.write_all(&Message::EchoReply(d).to_bytes(xid)?).await?;
                }
                // Anything else before the features reply (port status, role...) is
                // harmless; it is not replayed as an event.
                (_, Ok(other)) => debug!(%peer, t = other.msg_type(), "ignored during handshake"),
                (_, Err(e)) => return Err(e),
            }
        };

        let (wtx, wrx) = mpsc::unbounded_channel();
        let (etx, erx) = mpsc::channel(config.event_capacity.max(1));
        let shared = Arc::new(Shared {
            peer: peer.clone(),
            config: config.clone(),
            writer: wtx,
            pending: Mutex::new(HashMap::new()),
            sinks: Mutex::new(Vec::new()),
            next_xid: AtomicU32::new(2),
            next_bundle: AtomicU32::new(1),
            closed: Mutex::new(None),
            is_closed: AtomicBool::new(false),
            stop: tokio::sync::watch::Sender::new(false),
            events: Mutex::new(Some(erx)),
            started: Instant::now(),
            last_rx_ms: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            echo_requests_answered: AtomicU64::new(0),
            echo_requests_sent: AtomicU64::new(0),
            echo_replies_received: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
        });
        let writer = tokio::spawn(write_loop(wr, wrx, shared.clone()));
        let reader = tokio::spawn(read_loop(reader, shared.clone(), etx));
        let keepalive = tokio::spawn(keepalive_loop(shared.clone()));
        Ok(Connection {
            features,
            peer_certificate: None,
            _tasks: Arc::new(Tasks {
                shared: shared.clone(),
                handles: vec![writer, reader, keepalive],
            }),
            shared,
        })
    }

    /// The certificate the switch presented, when it connected to a `pssl:` listener
    /// (verified against the listener's CA during the TLS handshake). `None` on every
    /// other transport.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.peer_certificate.as_ref()
    }

    /// The switch's datapath id, from its FEATURES_REPLY.
    pub fn datapath_id(&self) -> u64 {
        self.features.datapath_id
    }

    /// The switch's FEATURES_REPLY.
    pub fn features(&self) -> FeaturesReply {
        self.features
    }

    /// True when both handles are clones of the same connection.
    pub fn same_as(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Who the peer is (the target string or the accepting listener's view of it).
    pub fn peer(&self) -> &str {
        &self.shared.peer
    }

    /// Counters (messages, echoes).
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            messages_received: s.messages_received.load(Ordering::Relaxed),
            echo_requests_answered: s.echo_requests_answered.load(Ordering::Relaxed),
            echo_requests_sent: s.echo_requests_sent.load(Ordering::Relaxed),
            echo_replies_received: s.echo_replies_received.load(Ordering::Relaxed),
            events_dropped: s.events_dropped.load(Ordering::Relaxed),
        }
    }

    /// Why the connection closed, or `None` while it is open.
    pub fn closed_reason(&self) -> Option<String> {
        lock(&self.shared.closed).clone()
    }

    /// Closes the connection; pending requests fail with [`Error::Closed`].
    pub fn close(&self) {
        self.shared.shutdown("closed by this side".into());
    }

    /// The channel of asynchronous messages: PACKET_IN, PORT_STATUS, FLOW_REMOVED, flow
    /// monitor updates (multipart replies with xid 0, body
    /// [`MultipartReplyBody::FlowMonitor`]) and [`Message::FlowMonitorPaused`] /
    /// [`Message::FlowMonitorResumed`], and errors caused by messages sent with
    /// [`Connection::send`]. Can be taken once.
    pub fn take_events(&self) -> Option<mpsc::Receiver<Message>> {
        lock(&self.shared.events).take()
    }

    /// Sends a message without waiting for anything; returns the xid it used. An error
    /// the switch sends about it arrives on the event channel.
    pub fn send(&self, msg: &Message) -> Result<u32> {
        let xid = self.shared.alloc_xids(1);
        self.shared.send(xid, msg)?;
        Ok(xid)
    }

    async fn wait<T>(&self, xid: u32, rx: oneshot::Receiver<Result<T>>, what: &str) -> Result<T> {
        match tokio::time::timeout(self.shared.config.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.shared.closed_error()),
            Err(_) => {
                lock(&self.shared.pending).remove(&xid);
                Err(Error::Timeout(format!(
                    "{what} (xid {xid}) from {}",
                    self.shared.peer
                )))
            }
        }
    }

    /// Sends a request and waits for the message with the same xid (its reply, or the
    /// switch's error as [`Error::Switch`]). Only for messages that have a reply:
    /// a flow-mod that succeeds gets none (use [`Connection::apply`]).
    pub async fn request(&self, msg: &Message) -> Result<Message> {
        let xid = self.shared.alloc_xids(1);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(xid, Pending::Single(tx));
        if let Err(e) = self.shared.send(xid, msg) {
            lock(&self.shared.pending).remove(&xid);
            return Err(e);
        }
        self.wait(xid, rx, "reply").await
    }

    /// Sends a multipart request and returns the bodies of every reply part, in order
    /// (use [`MultipartReplyBody::concat`] to merge them).
    pub async fn multipart(&self, req: MultipartRequest) -> Result<Vec<MultipartReplyBody>> {
        let xid = self.shared.alloc_xids(1);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(
            xid,
            Pending::Multipart {
                parts: Vec::new(),
                tx,
            },
        );
        if let Err(e) = self.shared.send(xid, &Message::MultipartRequest(req)) {
            lock(&self.shared.pending).remove(&xid);
            return Err(e);
        }
        self.wait(xid, rx, "multipart reply").await
    }

    /// Sends a barrier and waits for its reply: everything sent before has been
    /// processed (and any error for it has been routed).
    pub async fn barrier(&self) -> Result<()> {
        match self.request(&Message::BarrierRequest).await? {
            Message::BarrierReply => Ok(()),
            other => Err(Error::Protocol(format!(
                "expected BARRIER_REPLY, got message type {}",
                other.msg_type()
            ))),
        }
    }

    /// Sends `msgs` and a barrier, not atomically; fails with the first error the switch
    /// reported, naming the index of the message in `msgs` as
    /// [`Error::BundleFailed`]`{ index, .. }`. Messages after a failing one are still
    /// applied by the switch: use [`Connection::bundle`] for all-or-nothing.
    pub async fn apply(&self, msgs: &[Message]) -> Result<()> {
        let n = u32::try_from(msgs.len()).map_err(|_| Error::TooLong {
            what: "batch",
            length: msgs.len(),
            max: u32::MAX as usize,
        })?;
        let lo = self.shared.alloc_xids(n);
        let mut errors = self.register_sink(lo, n);
        let result = async {
            for (i, m) in msgs.iter().enumerate() {
                self.shared.send(lo + i as u32, m)?;
            }
            self.barrier().await
        }
        .await;
        self.unregister_sink(lo);
        result?;
        match errors.try_recv() {
            Ok((xid, error)) => Err(Error::BundleFailed {
                index: Some((xid - lo) as usize),
                error,
            }),
            Err(_) => Ok(()),
        }
    }

    fn register_sink(&self, lo: u32, n: u32) -> mpsc::UnboundedReceiver<(u32, ErrorMsg)> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.shared.sinks).push(ErrorSink {
            lo,
            hi: lo.saturating_add(n),
            tx,
        });
        rx
    }

    fn unregister_sink(&self, lo: u32) {
        lock(&self.shared.sinks).retain(|s| s.lo != lo);
    }

    async fn bundle_control(&self, bundle_id: u32, t: BundleCtrlType, flags: u16) -> Result<()> {
        let want = match t {
            BundleCtrlType::OpenRequest => BundleCtrlType::OpenReply,
            BundleCtrlType::CloseRequest => BundleCtrlType::CloseReply,
            BundleCtrlType::CommitRequest => BundleCtrlType::CommitReply,
            _ => BundleCtrlType::DiscardReply,
        };
        let reply = self
            .request(&Message::BundleControl(BundleControl {
                bundle_id,
                ctrl_type: t,
                flags,
            }))
            .await?;
        match reply {
            Message::BundleControl(c) if c.ctrl_type == want && c.bundle_id == bundle_id => Ok(()),
            other => Err(Error::Protocol(format!(
                "expected bundle {want:?} for bundle {bundle_id}, got {other:?}"
            ))),
        }
    }

    /// Applies `msgs` as one atomic, ordered ONF bundle (OpenFlow 1.4 bundles, the ONF
    /// extension in 1.3): open, add each message, commit. Either all are applied or none;
    /// on failure the error is [`Error::BundleFailed`] naming the index (in `msgs`) of the
    /// message the switch rejected and its error type/code.
    pub async fn bundle(&self, msgs: Vec<Message>) -> Result<()> {
        self.bundle_with_flags(msgs, bundle_flags::ATOMIC | bundle_flags::ORDERED)
            .await
    }

    /// [`Connection::bundle`] with explicit OFPBF_* flags
    /// ([`crate::message::bundle::flags`]); without ATOMIC the switch may apply part.
    pub async fn bundle_with_flags(&self, msgs: Vec<Message>, flags: u16) -> Result<()> {
        let n = u32::try_from(msgs.len()).map_err(|_| Error::TooLong {
            what: "bundle",
            length: msgs.len(),
            max: u32::MAX as usize,
        })?;
        let bundle_id = self.shared.next_bundle.fetch_add(1, Ordering::Relaxed);
        let failed = |index, error| Error::BundleFailed { index, error };
        match self
            .bundle_control(bundle_id, BundleCtrlType::OpenRequest, flags)
            .await
        {
            Ok(()) => {}
            Err(Error::Switch(e)) => return Err(failed(None, e)),
            Err(e) => return Err(e),
        }
        let lo = self.shared.alloc_xids(n);
        let mut errors = self.register_sink(lo, n);
        let outcome = async {
            for (i, m) in msgs.into_iter().enumerate() {
                // OVS requires the inner message's xid to equal the BUNDLE_ADD's
                // (OFPBFC_MSG_BAD_XID otherwise).
                let xid = lo + i as u32;
                let add = Message::BundleAdd(BundleAdd {
                    bundle_id,
                    flags,
                    xid,
                    message: Box::new(m),
                });
                self.shared.send(xid, &add)?;
            }
            // A message OVS rejects when it is added is left out of the bundle, which
            // would still commit the rest: wait for add-time errors before committing.
            self.barrier().await?;
            if let Ok((xid, e)) = errors.try_recv() {
                let _ = self
                    .bundle_control(bundle_id, BundleCtrlType::DiscardRequest, flags)
                    .await;
                return Err(failed(Some((xid - lo) as usize), e));
            }
            match self
                .bundle_control(bundle_id, BundleCtrlType::CommitRequest, flags)
                .await
            {
                Ok(()) => Ok(()),
                Err(Error::Switch(commit_err)) => {
                    // OVS reports the message that failed (with its own xid) before
                    // answering the commit with OFPBFC_MSG_FAILED.
                    Err(match errors.try_recv() {
                        Ok((xid, e)) => failed(Some((xid - lo) as usize), e),
                        Err(_) => failed(None, commit_err),
                    })
                }
                Err(e) => Err(e),
            }
        }
        .await;
        self.unregister_sink(lo);
        outcome
    }

    /// Flow statistics of the flows `filter` selects: e.g.
    /// `FlowStatsRequest::default()` for every flow,
    /// `FlowStatsRequest::table(3).with_cookie(c, u64::MAX)` for one table and cookie.
    /// Reply parts are reassembled.
    pub async fn dump_flows(&self, filter: FlowStatsRequest) -> Result<Vec<FlowStats>> {
        let parts = self
            .multipart(MultipartRequest::new(MultipartRequestBody::Flow(filter)))
            .await?;
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        match MultipartReplyBody::concat(parts)? {
            MultipartReplyBody::Flow(v) => Ok(v),
            other => Err(Error::Protocol(format!(
                "flow stats request answered with {other:?}"
            ))),
        }
    }

    /// Starts a flow monitor (ONFST_FLOW_MONITOR, what ovs-vswitchd speaks on OpenFlow 1.3)
    /// and returns the updates of the switch's reply: the flows matching now with
    /// [`flags::INITIAL`](crate::message::flow_monitor::flags::INITIAL), else none. Every later update arrives on the
    /// event channel ([`Connection::take_events`]) as a [`Message::MultipartReply`] with
    /// body [`MultipartReplyBody::FlowMonitor`]. Changes made by other connections come
    /// as full updates; without [`flags::OWN`](crate::message::flow_monitor::flags::OWN)
    /// this connection's own flow-mods are reported only as [`FlowUpdate::Abbrev`]
    /// naming their xid (the xid [`Connection::send`] returned). A switch that does not
    /// support monitors (or rejects the request) answers with an error, returned as
    /// [`Error::Switch`].
    pub async fn monitor_flows(&self, req: FlowMonitorRequest) -> Result<Vec<FlowUpdate>> {
        let parts = self
            .multipart(MultipartRequest::new(MultipartRequestBody::FlowMonitor(
                vec![req],
            )))
            .await?;
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        match MultipartReplyBody::concat(parts)? {
            MultipartReplyBody::FlowMonitor(v) => Ok(v),
            other => Err(Error::Protocol(format!(
                "flow monitor request answered with {other:?}"
            ))),
        }
    }

    /// Cancels the flow monitor `id` (ONFT_FLOW_MONITOR_CANCEL) and waits for a barrier;
    /// an unknown id is the switch's error.
    pub async fn cancel_flow_monitor(&self, id: u32) -> Result<()> {
        let cancel = Message::FlowMonitorCancel {
            ext: MonitorExt::Onf,
            id,
        };
        match self.apply(&[cancel]).await {
            Err(Error::BundleFailed { error, .. }) => Err(Error::Switch(error)),
            r => r,
        }
    }

    /// Every group's description.
    pub async fn dump_groups(&self) -> Result<Vec<GroupDesc>> {
        let parts = self
            .multipart(MultipartRequest::new(MultipartRequestBody::GroupDesc))
            .await?;
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        match MultipartReplyBody::concat(parts)? {
            MultipartReplyBody::GroupDesc(v) => Ok(v),
            other => Err(Error::Protocol(format!(
                "group desc request answered with {other:?}"
            ))),
        }
    }

    /// The names the switch gives its tables (OFPMP_TABLE_FEATURES, OF1.3 §7.3.5.5), by
    /// table id — what `ovs-ofctl --names` prints. OVS takes them from OVSDB `Flow_Table`
    /// rows; a table without a configured name is left out, so callers print its number.
    pub async fn table_names(&self) -> Result<std::collections::BTreeMap<u8, String>> {
        let parts = self
            .multipart(MultipartRequest::new(MultipartRequestBody::Other {
                mp_type: OFPMP_TABLE_FEATURES,
                body: Bytes::new(),
            }))
            .await?;
        let mut names = std::collections::BTreeMap::new();
        for part in parts {
            let MultipartReplyBody::Other { mp_type, body } = part else {
                return Err(Error::Protocol(format!(
                    "table features request answered with {part:?}"
                )));
            };
            if mp_type != OFPMP_TABLE_FEATURES {
                return Err(Error::Protocol(format!(
                    "table features request answered with multipart type {mp_type}"
                )));
            }
            parse_table_names(&body, &mut names)?;
        }
        Ok(names)
    }
}

/// OFPMP_TABLE_FEATURES.
const OFPMP_TABLE_FEATURES: u16 = 12;

/// Reads the name of every `ofp_table_features` entry in one reply part:
/// length(2) table_id(1) pad(5) name(32) metadata_match(8) metadata_write(8) config(4)
/// max_entries(4) properties... A name equal to OVS's default (`table<N>`) is not a name
/// anybody configured, and is skipped.
fn parse_table_names(
    mut body: &[u8],
    names: &mut std::collections::BTreeMap<u8, String>,
) -> Result<()> {
    const FIXED: usize = 64;
    while !body.is_empty() {
        if body.len() < FIXED {
            return Err(Error::Protocol(format!(
                "table features entry truncated: {} bytes left, {FIXED} needed",
                body.len()
            )));
        }
        let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        if len < FIXED || len > body.len() || len % 8 != 0 {
            return Err(Error::Protocol(format!(
                "table features entry claims {len} bytes with {} left",
                body.len()
            )));
        }
        let table = body[2];
        let raw = &body[8..40];
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        let name = String::from_utf8_lossy(&raw[..end]).into_owned();
        if !name.is_empty() && name != format!("table{table}") {
            names.insert(table, name);
        }
        body = &body[len..];
    }
    Ok(())
}

async fn next_frame<R>(
    reader: &mut FramedRead<R, OfCodec>,
    timeout: Duration,
    peer: &str,
    what: &str,
) -> Result<(u32, Result<Message>)>
where
    R: AsyncRead + Unpin,
{
    match tokio::time::timeout(timeout, reader.next()).await {
        Err(_) => Err(Error::Timeout(format!("{what} from {peer}"))),
        Ok(None) => Err(Error::Closed(format!(
            "{peer} closed the connection during the handshake (waiting for {what})"
        ))),
        Ok(Some(r)) => r,
    }
}

async fn read_loop<R>(
    mut reader: FramedRead<R, OfCodec>,
    shared: Arc<Shared>,
    events: mpsc::Sender<Message>,
) where
    R: AsyncRead + Unpin,
{
    let mut stop = shared.stop.subscribe();
    let reason = loop {
        let next = tokio::select! {
            n = reader.next() => n,
            _ = stop.wait_for(|s| *s) => return,
        };
        match next {
            Some(Ok((xid, msg))) => {
                shared.touch();
                shared.route(xid, msg, &events);
            }
            Some(Err(e)) => break format!("reading from {}: {e}", shared.peer),
            None => break format!("{} closed the connection", shared.peer),
        }
    };
    shared.shutdown(reason);
}

async fn write_loop<W>(mut wr: W, mut rx: mpsc::UnboundedReceiver<Bytes>, shared: Arc<Shared>)
where
    W: AsyncWrite + Unpin,
{
    // Coalesce queued messages into one write: installing 100k flows is otherwise
    // dominated by syscalls.
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut stop = shared.stop.subscribe();
    loop {
        let first = tokio::select! {
            f = rx.recv() => match f {
                Some(f) => f,
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        buf.extend_from_slice(&first);
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(b) => buf.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            shared.shutdown(format!("writing to {}: {e}", shared.peer));
            return;
        }
        buf.clear();
        if shared.is_closed.load(Ordering::Acquire) {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn keepalive_loop(shared: Arc<Shared>) {
    let interval = shared.config.echo_interval;
    // Echo requests sent since the peer last said anything: any message from the peer
    // (not only an echo reply) proves it alive and resets the count.
    let mut missed = 0u32;
    let mut last_probe_ms = 0u64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if shared.is_closed.load(Ordering::Acquire) {
            return;
        }
        let last_rx = shared.last_rx_ms.load(Ordering::Relaxed);
        if last_rx >= last_probe_ms {
            missed = 0;
        }
        let now = shared.started.elapsed().as_millis() as u64;
        if now.saturating_sub(last_rx) < interval.as_millis() as u64 {
            continue;
        }
        if missed >= shared.config.max_missed_echoes {
            // A peer still working on one of our requests is busy, not dead: ovs-vswitchd
            // answers nothing (echoes included) while it commits a large bundle, 45 s for
            // 54,000 flows here. The request's own timeout (`request_timeout`) bounds the
            // wait; once it has failed, the missed echoes count again.
            if !lock(&shared.pending).is_empty() {
                continue;
            }
            shared.shutdown(format!(
                "{} did not answer {missed} echo requests ({:?} apart): peer is dead",
                shared.peer, interval
            ));
            return;
        }
        missed += 1;
        last_probe_ms = now;
        let xid = shared.alloc_xids(1);
        shared.echo_requests_sent.fetch_add(1, Ordering::Relaxed);
        if shared
            .send(xid, &Message::EchoRequest(Bytes::new()))
            .is_err()
        {
            return;
        }
    }
}

/// Accepts connections from switches (`punix:PATH`, `ptcp:PORT[:IP]`, `pssl:PORT[:IP]`),
/// e.g. after `ovs-vsctl set-controller br0 unix:PATH` makes ovs-vswitchd connect to us.
///
/// Every accepted stream gets its own task for the TLS and OpenFlow handshakes, so a peer
/// that connects and stays silent delays nobody else: [`Listener::accept`] returns whichever
/// handshake finishes first. At most [`MAX_PENDING_HANDSHAKES`] run at once (beyond that
/// the listener stops accepting until one ends), and each is bounded by
/// [`HANDSHAKE_LIMIT_STEPS`] request timeouts in all.
pub struct Listener {
    inner: ListenerInner,
    config: Config,
    handshakes: tokio::task::JoinSet<Result<Connection>>,
}

/// Handshakes in progress at once on one listener.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// How long [`Listener::accept`] waits after the listening socket itself failed.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A whole handshake (TLS, HELLO, FEATURES) may take this many request timeouts.
pub const HANDSHAKE_LIMIT_STEPS: u32 = 3;

enum ListenerInner {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
    Tls(TcpListener, TlsAcceptor),
}

type Handshake = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Connection>> + Send>>;

impl Listener {
    /// Starts listening.
    pub async fn bind(target: &str) -> Result<Listener> {
        Listener::bind_with(target, Config::default()).await
    }

    /// [`Listener::bind`] with settings applied to every accepted connection. `pssl:` needs
    /// [`Listener::bind_tls`].
    pub async fn bind_with(target: &str, config: Config) -> Result<Listener> {
        Listener::bind_inner(target, config, None).await
    }

    /// Listens on `pssl:PORT[:IP]`: every switch must present a certificate from the CA of
    /// `tls` (see [`Connection::peer_certificate`] for who it is).
    pub async fn bind_tls(
        target: &str,
        config: Config,
        tls: Arc<ServerConfig>,
    ) -> Result<Listener> {
        Listener::bind_inner(target, config, Some(tls)).await
    }

    async fn bind_inner(
        target: &str,
        config: Config,
        tls: Option<Arc<ServerConfig>>,
    ) -> Result<Listener> {
        let inner = match Target::parse_listen(target).map_err(bad_target)? {
            Target::PUnix(p) => {
                // A stale socket file from an earlier run would make bind fail.
                if std::fs::symlink_metadata(&p)
                    .map(|m| {
                        use std::os::unix::fs::FileTypeExt;
                        m.file_type().is_socket()
                    })
                    .unwrap_or(false)
                {
                    let _ = std::fs::remove_file(&p);
                }
                let l = UnixListener::bind(&p).map_err(io_err(format!("binding {target}")))?;
                ListenerInner::Unix(l, p)
            }
            Target::PTcp(a) => ListenerInner::Tcp(
                TcpListener::bind(a)
                    .await
                    .map_err(io_err(format!("binding {target}")))?,
            ),
            Target::PSsl(a) => {
                let Some(tls) = tls else {
                    return Err(Error::BadTarget {
                        target: target.to_string(),
                        reason: "pssl: needs a CA, certificate and key (Listener::bind_tls)",
                    });
                };
                ListenerInner::Tls(
                    TcpListener::bind(a)
                        .await
                        .map_err(io_err(format!("binding {target}")))?,
                    TlsAcceptor::from(tls),
                )
            }
            Target::Unix(_) | Target::Tcp(_) | Target::Ssl(_) => {
                return Err(Error::BadTarget {
                    target: target.to_string(),
                    reason: "not a passive target: use punix:PATH, ptcp:PORT[:IP] or pssl:PORT[:IP]",
                });
            }
        };
        Ok(Listener {
            inner,
            config,
            handshakes: tokio::task::JoinSet::new(),
        })
    }

    /// The TCP address bound (useful with `ptcp:0`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            ListenerInner::Tcp(l) | ListenerInner::Tls(l, _) => l.local_addr().ok(),
            ListenerInner::Unix(..) => None,
        }
    }

    /// Waits for the next switch whose handshake completes, or for the next one that
    /// failed (the error names the peer). Cancel-safe: handshakes already started go on in
    /// their own tasks and are returned by a later call.
    pub async fn accept(&mut self) -> Result<Connection> {
        loop {
            let room = self.handshakes.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    return done.unwrap_or_else(|e| {
                        Err(Error::Protocol(format!("a handshake task ended: {e}")))
                    });
                }
                stream = accept_stream(&self.inner, &self.config), if room => {
                    let (peer, handshake) = match stream {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // The socket itself failed (out of descriptors, say): back off
                            // so a caller that loops on errors does not spin.
                            tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                            return Err(e);
                        }
                    };
                    let limit = self.config.request_timeout * HANDSHAKE_LIMIT_STEPS;
                    self.handshakes.spawn(async move {
                        tokio::time::timeout(limit, handshake).await.unwrap_or_else(|_| {
                            Err(Error::Protocol(format!(
                                "{peer} did not complete the handshake within {limit:?}"
                            )))
                        })
                    });
                }
            }
        }
    }
}

/// Accepts one stream and returns the handshake still to run on it (in its own task).
async fn accept_stream(inner: &ListenerInner, config: &Config) -> Result<(String, Handshake)> {
    let config = config.clone();
    match inner {
        ListenerInner::Unix(l, p) => {
            let (s, _) = l
                .accept()
                .await
                .map_err(io_err(format!("accepting on punix:{}", p.display())))?;
            let peer = format!("switch on punix:{}", p.display());
            Ok((
                peer.clone(),
                Box::pin(Connection::from_stream(s, peer, config)),
            ))
        }
        ListenerInner::Tcp(l) => {
            let (s, a) = l
                .accept()
                .await
                .map_err(io_err("accepting on ptcp".to_string()))?;
            let _ = s.set_nodelay(true);
            let peer = format!("switch at tcp:{a}");
            Ok((
                peer.clone(),
                Box::pin(Connection::from_stream(s, peer, config)),
            ))
        }
        ListenerInner::Tls(l, acceptor) => {
            let (s, a) = l
                .accept()
                .await
                .map_err(io_err("accepting on pssl".to_string()))?;
            let _ = s.set_nodelay(true);
            let peer = format!("switch at ssl:{a}");
            let acceptor = acceptor.clone();
            let name = peer.clone();
            Ok((
                peer,
                Box::pin(async move {
                    let tls = tokio::time::timeout(config.request_timeout, acceptor.accept(s))
                        .await
                        .map_err(|_| Error::Tls {
                            peer: name.clone(),
                            reason: "no TLS handshake within the request timeout".into(),
                        })?
                        .map_err(|e| Error::Tls {
                            peer: name.clone(),
                            reason: e.to_string(),
                        })?;
                    let cert = switchyard_tls::client_certificate(&tls);
                    let mut conn = Connection::from_stream(tls, name, config).await?;
                    conn.peer_certificate = cert;
                    Ok(conn)
                }),
            ))
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let ListenerInner::Unix(_, p) = &self.inner {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features_entry(table: u8, name: &str) -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[..2].copy_from_slice(&64u16.to_be_bytes());
        e[2] = table;
        e[8..8 + name.len()].copy_from_slice(name.as_bytes());
        e
    }

    #[test]
    fn table_feature_names_are_read_and_defaults_skipped() {
        let mut body = features_entry(0, "Classifier");
        body.extend(features_entry(1, "table1"));
        body.extend(features_entry(60, "L3Forwarding"));
        let mut names = std::collections::BTreeMap::new();
        parse_table_names(&body, &mut names).unwrap();
        assert_eq!(names.len(), 2);
        assert_eq!(names[&0], "Classifier");
        assert_eq!(names[&60], "L3Forwarding");
        // A length that lies is an error, not a panic.
        let mut bad = features_entry(0, "x");
        bad[1] = 200;
        assert!(parse_table_names(&bad, &mut names).is_err());
        assert!(parse_table_names(&bad[..10], &mut names).is_err());
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            "unix:/run/br0.mgmt".parse::<Target>().unwrap(),
            Target::Unix("/run/br0.mgmt".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:6653".parse::<Target>().unwrap(),
            Target::Tcp("127.0.0.1:6653".into())
        );
        assert_eq!(
            "ptcp:6653".parse::<Target>().unwrap(),
            Target::PTcp("0.0.0.0:6653".parse().unwrap())
        );
        assert_eq!(
            "ptcp:6653:[::1]".parse::<Target>().unwrap(),
            Target::PTcp("[::1]:6653".parse().unwrap())
        );
        let e = "tcp:nowhere".parse::<Target>().unwrap_err();
        assert!(e.to_string().contains("tcp:nowhere"), "{e}");
        assert_eq!(
            "ssl:1.2.3.4:6653".parse::<Target>().unwrap(),
            Target::Ssl("1.2.3.4:6653".into())
        );
    }

    #[tokio::test]
    async fn tls_targets_need_tls_settings() {
        let e = Listener::bind("pssl:0:127.0.0.1").await.err().unwrap();
        assert!(e.to_string().contains("bind_tls"), "{e}");
        let e = Connection::connect("ssl:127.0.0.1:1").await.unwrap_err();
        assert!(e.to_string().contains("connect_tls"), "{e}");
    }

    #[test]
    fn codec_waits_for_whole_frames_and_survives_bad_bodies() {
        let mut c = OfCodec;
        let full = Message::BarrierRequest.to_bytes(9).unwrap();
        let mut buf = BytesMut::from(&full[..5]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&full[5..]);
        // A flow-mod with a body too short for its fixed part: delimited, but bad.
        buf.extend_from_slice(&[4, 14, 0, 12, 0, 0, 0, 7, 1, 2, 3, 4]);
        let (xid, m) = c.decode(&mut buf).unwrap().unwrap();
        assert_eq!((xid, m.unwrap()), (9, Message::BarrierRequest));
        let (xid, m) = c.decode(&mut buf).unwrap().unwrap();
        assert_eq!(xid, 7);
        assert!(m.is_err());
        assert!(buf.is_empty());
        buf.extend_from_slice(&[4, 0, 0, 3, 0, 0, 0, 0]);
        assert!(
            c.decode(&mut buf).is_err(),
            "length below the header is fatal"
        );
    }
}
