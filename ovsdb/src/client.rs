//! The JSON-RPC connection to an OVSDB server (RFC 7047 §4) and every method on it.
//!
//! Owns: transports (`unix:`, `tcp:`, `ssl:` with [`ClientOptions::tls`]; anything else
//! plugs in through [`Client::from_stream`]),
//! request/reply matching by id, answering the server's `echo`, probing a silent peer
//! with our own `echo`, and routing notifications (`update`, `update2`, `update3`,
//! `locked`, `stolen`) to one receiver. Does not own: keeping a copy of the database
//! (see `replica`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::data::Uuid;
use crate::error::{Error, json_excerpt};
use crate::framing::{DEFAULT_MAX_MESSAGE, Framer};
use crate::schema::DatabaseSchema;
use crate::transaction::{Condition, OperationResult, Transaction, parse_results};

/// Where the server listens, in ovsdb-client's syntax (`unix:PATH`, `tcp:HOST:PORT`);
/// the type is shared with the other Switchyard crates.
pub use switchyard_target::Target;

/// Parses `unix:PATH`, `tcp:HOST:PORT` or `ssl:HOST:PORT`.
fn parse_target(text: &str) -> Result<Target, Error> {
    Target::parse_connect(text).map_err(|error| Error::InvalidTarget {
        target: error.input,
        reason: error.reason.to_owned(),
    })
}

/// How long an `ssl:` connection waits for the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream a client can run on (a socket, or a TLS session over one).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Tunables of a connection.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Largest message accepted from the server, in bytes.
    pub max_message: usize,
    /// After this long without hearing from the server we send an `echo`; if another
    /// interval passes without any message the connection is closed as dead. `None`
    /// disables probing. ovsdb-server's own default is 5 s.
    pub inactivity_probe: Option<Duration>,
    /// For `ssl:` targets: whom we trust, who we are, and the name the server's
    /// certificate must carry. `ssl:` without it is refused.
    pub tls: Option<TlsClient>,
}

/// TLS settings of an `ssl:` connection.
#[derive(Clone, Debug)]
pub struct TlsClient {
    /// CA and our certificate (switchyard_tls::client_config).
    pub config: Arc<switchyard_tls::ClientConfig>,
    /// The name the server's certificate must carry (a DNS subjectAltName or IP address).
    pub server_name: String,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            max_message: DEFAULT_MAX_MESSAGE,
            inactivity_probe: Some(Duration::from_secs(5)),
            tls: None,
        }
    }
}

/// A notification from the server.
#[derive(Clone, Debug, PartialEq)]
pub enum Notification {
    /// `update` (reply to `monitor`): `<table-updates>` with `old`/`new` rows.
    Update {
        /// The monitor id we chose.
        monitor_id: Json,
        /// The `<table-updates>` object.
        updates: Json,
    },
    /// `update2` (reply to `monitor_cond`): `<table-updates2>`.
    Update2 {
        /// The monitor id we chose.
        monitor_id: Json,
        /// The `<table-updates2>` object.
        updates: Json,
    },
    /// `update3` (reply to `monitor_cond_since`): `<table-updates2>` with the id of the
    /// transaction that made them.
    Update3 {
        /// The monitor id we chose.
        monitor_id: Json,
        /// The transaction id, to resume from after a reconnect.
        last_txn_id: Uuid,
        /// The `<table-updates2>` object.
        updates: Json,
    },
    /// `locked`: a lock we asked for is now ours.
    Locked(String),
    /// `stolen`: another session took a lock we held.
    Stolen(String),
}

/// What one table of a monitor request asks for (RFC 7047 §4.1.5, and the
/// `monitor_cond` `where` of ovsdb-server(7)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MonitorRequest {
    /// Columns to monitor; all when `None`.
    pub columns: Option<Vec<String>>,
    /// Only rows matching these (monitor_cond and later); all rows when `None`.
    pub conditions: Option<Vec<Condition>>,
}

impl MonitorRequest {
    fn to_json(&self, conditional: bool) -> Json {
        let mut o = json!({});
        if let Some(c) = &self.columns {
            o["columns"] = json!(c);
        }
        if let (true, Some(w)) = (conditional, &self.conditions) {
            o["where"] = Json::Array(w.iter().map(Condition::to_json).collect());
        }
        o
    }
}

fn requests_json(requests: &BTreeMap<String, MonitorRequest>, conditional: bool) -> Json {
    Json::Object(
        requests
            .iter()
            .map(|(t, r)| (t.clone(), r.to_json(conditional)))
            .collect(),
    )
}

/// The reply of `monitor_cond_since`.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorSince {
    /// The server still had the asked-for transaction: `updates` holds only what changed
    /// since. Otherwise `updates` holds the whole current contents.
    pub found: bool,
    /// The last transaction id the server knows (all zero where it keeps no history,
    /// e.g. a standalone database).
    pub last_txn_id: Uuid,
    /// `<table-updates2>`.
    pub updates: Json,
}

type Reply = Result<Json, Error>;

/// A request on the wire whose reply has not been awaited yet.
pub struct PendingReply {
    id: u64,
    rx: oneshot::Receiver<Reply>,
    core: Arc<Core>,
}

impl PendingReply {
    /// The JSON-RPC id of the request.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the reply: the `result`, or [`Error::Rpc`] with the server's `error`.
    pub async fn reply(self) -> Result<Json, Error> {
        match self.rx.await {
            Ok(reply) => reply,
            Err(_) => Err(self.core.closed_error()),
        }
    }
}

struct State {
    pending: HashMap<u64, (String, oneshot::Sender<Reply>)>,
    closed: Option<String>,
}

struct Core {
    target: String,
    state: Mutex<State>,
    out: mpsc::UnboundedSender<Vec<u8>>,
}

impl Core {
    fn close(&self, reason: String) {
        let pending = match self.state.lock() {
            Ok(mut state) => {
                state.closed.get_or_insert(reason);
                std::mem::take(&mut state.pending)
            }
            Err(_) => HashMap::new(),
        };
        // Dropping the senders wakes every waiter, which then reads `closed`.
        drop(pending);
    }

    fn closed_error(&self) -> Error {
        let reason = self
            .state
            .lock()
            .ok()
            .and_then(|s| s.closed.clone())
            .unwrap_or_else(|| "closed".into());
        Error::Disconnected {
            target: self.target.clone(),
            reason,
        }
    }
}

struct Tasks {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// A connection to one OVSDB server. Cloning gives another handle to the same
/// connection; the connection closes when the last handle is dropped.
#[derive(Clone)]
pub struct Client {
    core: Arc<Core>,
    next_id: Arc<AtomicU64>,
    notifications: Arc<Mutex<Option<mpsc::UnboundedReceiver<Notification>>>>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.core.target)
            .finish()
    }
}

impl Client {
    /// Connects to `unix:PATH` or `tcp:IP:PORT` with default options (`ssl:` needs
    /// [`ClientOptions::tls`]).
    pub async fn connect(target: &str) -> Result<Client, Error> {
        Client::connect_with(target, ClientOptions::default()).await
    }

    /// Connects with the given options.
    pub async fn connect_with(target: &str, options: ClientOptions) -> Result<Client, Error> {
        let connect_err = |source| Error::Connect {
            target: target.to_owned(),
            source,
        };
        match parse_target(target)? {
            Target::Unix(path) => {
                let s = tokio::net::UnixStream::connect(&path)
                    .await
                    .map_err(connect_err)?;
                Ok(Client::from_stream(s, target, options))
            }
            Target::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(connect_err)?;
                let _ = s.set_nodelay(true);
                Ok(Client::from_stream(s, target, options))
            }
            Target::Ssl(addr) => {
                let Some(tls) = options.tls.clone() else {
                    return Err(Error::InvalidTarget {
                        target: target.to_owned(),
                        reason: "ssl: needs a CA, certificate and key".to_owned(),
                    });
                };
                let tls_err = |reason: String| Error::Tls {
                    target: target.to_owned(),
                    reason,
                };
                let name = switchyard_tls::server_name(&tls.server_name)
                    .map_err(|e| tls_err(e.to_string()))?;
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(connect_err)?;
                let _ = s.set_nodelay(true);
                let handshake = switchyard_tls::TlsConnector::from(tls.config).connect(name, s);
                let s = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake)
                    .await
                    .map_err(|_| tls_err("no TLS handshake within 10 s".to_owned()))?
                    .map_err(|e| tls_err(e.to_string()))?;
                Ok(Client::from_stream(s, target, options))
            }
            Target::PUnix(_) | Target::PTcp(_) | Target::PSsl(_) => Err(Error::InvalidTarget {
                target: target.to_owned(),
                reason: "a listening target: expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT"
                    .to_owned(),
            }),
        }
    }

    /// Runs the protocol over an already open stream (the seam for TLS or tests).
    /// `name` is used in error messages. Must be called inside a tokio runtime.
    pub fn from_stream(stream: impl Stream, name: &str, options: ClientOptions) -> Client {
        let (read, write) = tokio::io::split(stream);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let core = Arc::new(Core {
            target: name.to_owned(),
            state: Mutex::new(State {
                pending: HashMap::new(),
                closed: None,
            }),
            out: out_tx,
        });
        let writer = tokio::spawn(write_loop(core.clone(), write, out_rx));
        let reader = tokio::spawn(read_loop(core.clone(), read, options, note_tx));
        Client {
            core,
            next_id: Arc::new(AtomicU64::new(1)),
            notifications: Arc::new(Mutex::new(Some(note_rx))),
            _tasks: Arc::new(Tasks { reader, writer }),
        }
    }

    /// The target this client talks to.
    pub fn target(&self) -> &str {
        &self.core.target
    }

    /// Takes the receiver of server notifications (monitor updates, lock changes). There
    /// is one receiver per connection: the first call gets it, later calls get `None`.
    /// Notifications queue until taken.
    pub fn notifications(&self) -> Option<mpsc::UnboundedReceiver<Notification>> {
        self.notifications.lock().ok().and_then(|mut n| n.take())
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.core
            .state
            .lock()
            .map(|s| s.closed.is_some())
            .unwrap_or(true)
    }

    /// Sends a request and waits for its reply. Returns the `result`, or
    /// [`Error::Rpc`] with the server's `error`.
    pub async fn request(&self, method: &str, params: Json) -> Result<Json, Error> {
        self.send_request(method, params)?.reply().await
    }

    /// Sends a request without waiting: the returned handle knows the request id (for
    /// [`cancel`](Client::cancel)) and yields the reply.
    pub fn send_request(&self, method: &str, params: Json) -> Result<PendingReply, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self
                .core
                .state
                .lock()
                .map_err(|_| self.core.closed_error())?;
            if state.closed.is_some() {
                drop(state);
                return Err(self.core.closed_error());
            }
            state.pending.insert(id, (method.to_owned(), tx));
        }
        let msg = json!({"method": method, "params": params, "id": id});
        if self.core.out.send(encode(&msg)).is_err() {
            return Err(self.core.closed_error());
        }
        Ok(PendingReply {
            id,
            rx,
            core: self.core.clone(),
        })
    }

    /// Sends a notification (a request with a null id: no reply).
    pub fn notify(&self, method: &str, params: Json) -> Result<(), Error> {
        let msg = json!({"method": method, "params": params, "id": null});
        self.core
            .out
            .send(encode(&msg))
            .map_err(|_| self.core.closed_error())
    }

    /// `list_dbs` (§4.1.1).
    pub async fn list_dbs(&self) -> Result<Vec<String>, Error> {
        let r = self.request("list_dbs", json!([])).await?;
        serde_json::from_value(r.clone()).map_err(|_| Error::Protocol {
            reason: "list_dbs result is not an array of strings".into(),
            message: json_excerpt(&r),
        })
    }

    /// `get_schema` (§4.1.2), as the server sent it.
    pub async fn get_schema_json(&self, db: &str) -> Result<Json, Error> {
        self.request("get_schema", json!([db])).await
    }

    /// `get_schema` (§4.1.2), parsed.
    pub async fn get_schema(&self, db: &str) -> Result<DatabaseSchema, Error> {
        DatabaseSchema::from_json(&self.get_schema_json(db).await?)
    }

    /// `transact` (§4.1.3): runs the operations atomically. Returns one result per
    /// operation, or [`Error::Operation`] naming the first that failed with the server's
    /// `error` and `details`.
    pub async fn transact(
        &self,
        db: &str,
        transaction: Transaction,
    ) -> Result<Vec<OperationResult>, Error> {
        let result = self.request("transact", transaction.to_params(db)).await?;
        parse_results(db, transaction.operations(), &result)
    }

    /// `transact` with raw params (`[db, op, ...]`), returning the raw result array
    /// (per-operation errors included, as the server sent them).
    pub async fn transact_json(&self, params: Json) -> Result<Json, Error> {
        self.request("transact", params).await
    }

    /// `cancel` (§4.1.4): asks the server to abandon the request with this id (a `wait`
    /// that has not finished). Its waiter gets [`Error::Canceled`] at once: RFC 7047 says
    /// the server answers the cancelled request with an error, but ovsdb-server 3.1 sends
    /// nothing at all, so waiting for that answer would hang.
    pub fn cancel(&self, request_id: u64) -> Result<(), Error> {
        self.notify("cancel", json!([request_id]))?;
        let entry = self
            .core
            .state
            .lock()
            .ok()
            .and_then(|mut s| s.pending.remove(&request_id));
        if let Some((method, tx)) = entry {
            let _ = tx.send(Err(Error::Canceled {
                method,
                id: request_id,
            }));
        }
        Ok(())
    }

    /// `monitor` (§4.1.5): returns the initial `<table-updates>`; later changes arrive as
    /// [`Notification::Update`].
    pub async fn monitor(
        &self,
        db: &str,
        monitor_id: Json,
        requests: &BTreeMap<String, MonitorRequest>,
    ) -> Result<Json, Error> {
        self.request(
            "monitor",
            json!([db, monitor_id, requests_json(requests, false)]),
        )
        .await
    }

    /// `monitor_cond` (ovsdb-server(7)): like `monitor` with per-table conditions;
    /// initial and later updates use the compact `update2` form.
    pub async fn monitor_cond(
        &self,
        db: &str,
        monitor_id: Json,
        requests: &BTreeMap<String, MonitorRequest>,
    ) -> Result<Json, Error> {
        self.request(
            "monitor_cond",
            json!([db, monitor_id, requests_json(requests, true)]),
        )
        .await
    }

    /// `monitor_cond_since` (ovsdb-server(7)): resumes after `last_txn_id` when the server
    /// still has it; later updates arrive as [`Notification::Update3`].
    pub async fn monitor_cond_since(
        &self,
        db: &str,
        monitor_id: Json,
        requests: &BTreeMap<String, MonitorRequest>,
        last_txn_id: Option<&Uuid>,
    ) -> Result<MonitorSince, Error> {
        let last = last_txn_id.cloned().unwrap_or_else(Uuid::zero);
        let r = self
            .request(
                "monitor_cond_since",
                json!([db, monitor_id, requests_json(requests, true), last.as_str()]),
            )
            .await?;
        let bad = || Error::Protocol {
            reason: "monitor_cond_since result is not [found, last_txn_id, updates]".into(),
            message: json_excerpt(&r),
        };
        let a = r.as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
        Ok(MonitorSince {
            found: a[0].as_bool().ok_or_else(bad)?,
            last_txn_id: Uuid::parse(a[1].as_str().ok_or_else(bad)?)?,
            updates: a[2].clone(),
        })
    }

    /// `monitor_cancel` (§4.1.7).
    pub async fn monitor_cancel(&self, monitor_id: Json) -> Result<(), Error> {
        self.request("monitor_cancel", json!([monitor_id]))
            .await
            .map(|_| ())
    }

    /// `lock` (§4.1.8): `true` if the lock is ours now; otherwise a
    /// [`Notification::Locked`] follows when it becomes ours.
    pub async fn lock(&self, name: &str) -> Result<bool, Error> {
        let r = self.request("lock", json!([name])).await?;
        Ok(r.get("locked").and_then(Json::as_bool).unwrap_or(false))
    }

    /// `steal` (§4.1.9): takes the lock from whoever holds it (they get `stolen`).
    pub async fn steal(&self, name: &str) -> Result<(), Error> {
        self.request("steal", json!([name])).await.map(|_| ())
    }

    /// `unlock` (§4.1.10).
    pub async fn unlock(&self, name: &str) -> Result<(), Error> {
        self.request("unlock", json!([name])).await.map(|_| ())
    }

    /// `echo` (§4.1.11): the server returns `params` unchanged.
    pub async fn echo(&self, params: Json) -> Result<Json, Error> {
        self.request("echo", params).await
    }
}

fn encode(msg: &Json) -> Vec<u8> {
    // Serializing a Value cannot fail: its keys are strings.
    serde_json::to_vec(msg).unwrap_or_default()
}

async fn write_loop(
    core: Arc<Core>,
    mut write: tokio::io::WriteHalf<impl Stream>,
    mut out: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(mut bytes) = out.recv().await {
        // Coalesce what is already queued into one write.
        while let Ok(more) = out.try_recv() {
            bytes.extend_from_slice(&more);
        }
        if let Err(e) = write.write_all(&bytes).await {
            core.close(format!("write failed: {e}"));
            return;
        }
    }
}

/// Owns the notification sender, so the receiver sees the stream end when the
/// connection does.
async fn read_loop(
    core: Arc<Core>,
    mut read: tokio::io::ReadHalf<impl Stream>,
    options: ClientOptions,
    notifications: mpsc::UnboundedSender<Notification>,
) {
    let reason = match read_messages(&core, &mut read, &options, &notifications).await {
        Ok(()) => "the server closed the connection".to_owned(),
        Err(e) => e.to_string(),
    };
    tracing::debug!(target = %core.target, %reason, "OVSDB connection closed");
    core.close(reason);
}

async fn read_messages(
    core: &Core,
    read: &mut tokio::io::ReadHalf<impl Stream>,
    options: &ClientOptions,
    notifications: &mpsc::UnboundedSender<Notification>,
) -> Result<(), Error> {
    let mut framer = Framer::new(options.max_message);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut echo_outstanding = false;
    loop {
        while let Some(msg) = framer.next_message()? {
            dispatch(core, notifications, msg);
        }
        let n = match options.inactivity_probe {
            Some(probe) => match tokio::time::timeout(probe, read.read(&mut chunk)).await {
                Ok(r) => r,
                Err(_) if echo_outstanding => {
                    return Err(Error::Inactivity {
                        target: core.target.clone(),
                        timeout: probe,
                    });
                }
                Err(_) => {
                    echo_outstanding = true;
                    let msg = json!({"method": "echo", "params": [], "id": "echo"});
                    let _ = core.out.send(encode(&msg));
                    continue;
                }
            },
            None => read.read(&mut chunk).await,
        }
        .map_err(|source| Error::Io {
            target: core.target.clone(),
            source,
        })?;
        if n == 0 {
            return Ok(());
        }
        echo_outstanding = false;
        framer.push(&chunk[..n]);
    }
}

fn dispatch(core: &Core, notifications: &mpsc::UnboundedSender<Notification>, msg: Json) {
    let Json::Object(mut msg) = msg else {
        tracing::warn!(target = %core.target, message = %json_excerpt(&msg), "ignoring a JSON-RPC message that is not an object");
        return;
    };
    let id = msg.remove("id").unwrap_or(Json::Null);
    let method = match msg.remove("method") {
        Some(Json::String(m)) => Some(m),
        _ => None,
    };
    // Messages are taken apart by value: update notifications can be megabytes.
    let params = msg.remove("params");
    match method.as_deref() {
        Some("echo") if !id.is_null() => {
            let params = params.unwrap_or_else(|| json!([]));
            let _ = core
                .out
                .send(encode(&json!({"id": id, "result": params, "error": null})));
        }
        Some(other) if !id.is_null() => {
            let reply =
                json!({"id": id, "result": null, "error": format!("unknown method {other}")});
            let _ = core.out.send(encode(&reply));
        }
        Some(method) => match parse_notification(method, params) {
            Some(n) => {
                let _ = notifications.send(n);
            }
            None => {
                tracing::warn!(target = %core.target, method, "ignoring unknown or malformed notification")
            }
        },
        None => {
            let Some(id) = id.as_u64() else {
                // Our inactivity probe (id "echo") or something we never sent.
                return;
            };
            let entry = core
                .state
                .lock()
                .ok()
                .and_then(|mut s| s.pending.remove(&id));
            let Some((method, tx)) = entry else {
                // A request we cancelled (some servers still answer it) or never sent.
                tracing::debug!(target = %core.target, id, "reply to no pending request");
                return;
            };
            let reply = match msg.remove("error") {
                Some(e) if !e.is_null() => Err(Error::Rpc { method, error: e }),
                _ => Ok(msg.remove("result").unwrap_or(Json::Null)),
            };
            let _ = tx.send(reply);
        }
    }
}

fn parse_notification(method: &str, params: Option<Json>) -> Option<Notification> {
    let Some(Json::Array(p)) = params else {
        return None;
    };
    let mut p = p.into_iter();
    let mut next = || p.next();
    Some(match method {
        "update" => Notification::Update {
            monitor_id: next()?,
            updates: next()?,
        },
        "update2" => Notification::Update2 {
            monitor_id: next()?,
            updates: next()?,
        },
        "update3" => Notification::Update3 {
            monitor_id: next()?,
            last_txn_id: Uuid::parse(next()?.as_str()?).ok()?,
            updates: next()?,
        },
        "locked" => Notification::Locked(next()?.as_str()?.to_owned()),
        "stolen" => Notification::Stolen(next()?.as_str()?.to_owned()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("unix:/a/b").ok(),
            Some(Target::Unix("/a/b".into()))
        );
        assert_eq!(
            parse_target("tcp:127.0.0.1:6640").ok(),
            Some(Target::Tcp("127.0.0.1:6640".into()))
        );
        assert_eq!(
            parse_target("tcp:[::1]:6640").ok(),
            Some(Target::Tcp("[::1]:6640".into()))
        );
        assert_eq!(
            parse_target("ssl:10.0.0.1:6640").ok(),
            Some(Target::Ssl("10.0.0.1:6640".into()))
        );
        for bad in [
            "",
            "unix:",
            "tcp:1.2.3.4",
            "tcp:1.2.3.4:x",
            "ssl:1.2.3.4",
            "/tmp/x",
            "punix:/tmp/x",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn ssl_without_tls_settings_is_refused_naming_what_is_missing() {
        let e = Client::connect("ssl:127.0.0.1:1").await.err().unwrap();
        assert!(e.to_string().contains("CA, certificate and key"), "{e}");
    }

    #[tokio::test]
    async fn answers_echo_and_matches_replies_over_a_socket_pair() {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().expect("socketpair");
        let client = Client::from_stream(ours, "pair", ClientOptions::default());
        theirs
            .write_all(br#"{"id":"e1","method":"echo","params":[1]}"#)
            .await
            .expect("write");
        let mut buf = vec![0u8; 4096];
        let n = theirs.read(&mut buf).await.expect("read");
        let reply: Json = serde_json::from_slice(&buf[..n]).expect("json reply");
        assert_eq!(reply, json!({"id": "e1", "result": [1], "error": null}));

        let call = tokio::spawn({
            let c = client.clone();
            async move { c.list_dbs().await }
        });
        let n = theirs.read(&mut buf).await.expect("read");
        let req: Json = serde_json::from_slice(&buf[..n]).expect("json request");
        assert_eq!(req["method"], "list_dbs");
        let reply = json!({"id": req["id"], "result": ["A", "B"], "error": null}).to_string();
        // Split the reply to exercise framing across reads.
        theirs
            .write_all(&reply.as_bytes()[..5])
            .await
            .expect("write");
        theirs
            .write_all(&reply.as_bytes()[5..])
            .await
            .expect("write");
        let dbs = call.await.expect("join").expect("list_dbs");
        assert_eq!(dbs, ["A", "B"]);

        drop(theirs);
        assert!(matches!(
            client.list_dbs().await,
            Err(Error::Disconnected { .. })
        ));
    }
}
