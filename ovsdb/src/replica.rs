//! A live replica of chosen tables and columns (what OVS calls the IDL).
//!
//! Owns: monitoring, applying `update`/`update2`/`update3` (update2 `modify` diffs
//! included), typed read access, the change stream, and surviving disconnects:
//! reconnect with backoff, resume with `monitor_cond_since` where the server still has
//! our last transaction, else take the full contents and diff them against what we had,
//! so the change stream reports exactly the rows that changed meanwhile.
//! Does not own: writing (use the [`Client`] from [`Replica::client`] or your own).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::client::{Client, ClientOptions, MonitorRequest, Notification};
use crate::data::{Datum, Row, Uuid};
use crate::error::{Error, json_excerpt};
use crate::schema::{DatabaseSchema, TableSchema};

/// A table to replicate and which of its columns (all when `columns` is empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// The table.
    pub table: String,
    /// The columns; empty means every column of the schema.
    pub columns: Vec<String>,
    /// With `columns` empty: columns of the schema left out (e.g. counters the server
    /// rewrites every few seconds, which would otherwise wake every reader).
    pub except: Vec<String>,
}

impl TableSpec {
    /// Every column of `table`.
    pub fn all(table: &str) -> TableSpec {
        TableSpec {
            table: table.to_owned(),
            columns: Vec::new(),
            except: Vec::new(),
        }
    }

    /// Every column of `table` but `except` (each must be in the schema).
    pub fn all_but(table: &str, except: &[&str]) -> TableSpec {
        TableSpec {
            table: table.to_owned(),
            columns: Vec::new(),
            except: except.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    /// The given columns of `table`.
    pub fn columns(table: &str, columns: &[&str]) -> TableSpec {
        TableSpec {
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            except: Vec::new(),
        }
    }
}

impl From<&str> for TableSpec {
    fn from(table: &str) -> TableSpec {
        TableSpec::all(table)
    }
}

impl From<(&str, &[&str])> for TableSpec {
    fn from((table, columns): (&str, &[&str])) -> TableSpec {
        TableSpec::columns(table, columns)
    }
}

impl<const N: usize> From<(&str, [&str; N])> for TableSpec {
    fn from((table, columns): (&str, [&str; N])) -> TableSpec {
        TableSpec::columns(table, &columns)
    }
}

/// One row that changed: `old` is `None` for an insertion, `new` is `None` for a
/// deletion. Both rows are complete (every replicated column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowChange {
    /// The table.
    pub table: String,
    /// The row.
    pub uuid: Uuid,
    /// The row before the change.
    pub old: Option<Row>,
    /// The row after the change.
    pub new: Option<Row>,
}

/// The rows of one table by UUID.
pub type Table = BTreeMap<Uuid, Row>;

/// A consistent copy of the replicated tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    tables: BTreeMap<String, Table>,
}

impl Snapshot {
    /// A table's rows (empty for a table that is not replicated).
    pub fn table(&self, name: &str) -> &Table {
        static EMPTY: Table = BTreeMap::new();
        self.tables.get(name).unwrap_or(&EMPTY)
    }

    /// One row.
    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.tables.get(table)?.get(uuid)
    }

    /// The replicated tables by name.
    pub fn tables(&self) -> &BTreeMap<String, Table> {
        &self.tables
    }

    /// The rows of `table` whose string column `column` equals `value`.
    pub fn find<'a>(
        &'a self,
        table: &str,
        column: &'a str,
        value: &'a str,
    ) -> impl Iterator<Item = (&'a Uuid, &'a Row)> + 'a {
        self.table(table)
            .iter()
            .filter(move |(_, row)| row.get(column).and_then(Datum::as_str) == Some(value))
    }
}

/// Tunables of a replica.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// Options of each connection.
    pub client: ClientOptions,
    /// First delay before reconnecting; doubled after each failure.
    pub min_backoff: Duration,
    /// Longest delay between reconnection attempts.
    pub max_backoff: Duration,
    /// Queue changes for [`Replica::changes`]. Turn off for a replica that is only read
    /// through snapshots: an untaken stream would otherwise grow without bound.
    pub change_stream: bool,
    /// Hold this lock (§4.1.8) in every session, so that only this replica's transactions
    /// that assert it ([`Operation::Assert`](crate::Operation::Assert)) commit. The first
    /// session takes it with `steal` (whoever held it is told `stolen`); once it has been
    /// stolen from this replica, later sessions only ask for it (`lock`) and wait: a
    /// writer that another one fenced off does not fence it back.
    /// [`ReplicaStatus::lock`] says where it stands.
    pub lock: Option<String>,
    /// Columns, as `(table, column)`, whose changes alone do not advance
    /// [`Replica::generation`] (they do advance [`Replica::volatile_generation`]): values
    /// the server rewrites on a timer that a reader of the rest need not wake for, such
    /// as ovs-vswitchd's `Controller` `status` (`sec_since_connect`, every 5 s).
    pub volatile: Vec<(String, String)>,
}

impl Default for ReplicaOptions {
    fn default() -> ReplicaOptions {
        ReplicaOptions {
            client: ClientOptions::default(),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(8),
            change_stream: true,
            lock: None,
            volatile: Vec::new(),
        }
    }
}

/// Where the replica's lock ([`ReplicaOptions::lock`]) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    /// This session holds it: transactions asserting it commit.
    Held,
    /// Asked for; another client holds it (a `locked` notification will follow).
    Waiting,
    /// Another client stole it from this session.
    Stolen,
    /// No session (disconnected).
    Lost,
}

/// Which monitor method a session uses (best first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorMethod {
    /// `monitor_cond_since` (`update3`): can resume without a full resend.
    CondSince,
    /// `monitor_cond` (`update2`).
    Cond,
    /// `monitor` (`update`), RFC 7047 proper.
    Plain,
}

/// Where the replica stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Connected and in sync.
    pub connected: bool,
    /// Number of completed (re)synchronisations.
    pub syncs: u64,
    /// The monitor method of the current or last session.
    pub method: Option<MonitorMethod>,
    /// Why the last session ended, if one did.
    pub last_error: Option<String>,
    /// The last synchronisation resumed from our last transaction id
    /// (`monitor_cond_since` found it) instead of taking the full contents.
    pub resumed: bool,
    /// The lock's state, when [`ReplicaOptions::lock`] names one.
    pub lock: Option<LockState>,
    /// The lock was stolen from this replica at least once (it stays set): another client
    /// has written since as the lock's holder.
    pub lock_stolen: bool,
}

struct Shared {
    target: String,
    db: String,
    specs: Vec<TableSpec>,
    options: ReplicaOptions,
    data: RwLock<Snapshot>,
    /// Bumped every time `data` is written (an update applied, a resynchronisation),
    /// except by an update that changes only volatile columns.
    generation: std::sync::atomic::AtomicU64,
    /// Bumped every time `data` is written.
    volatile_generation: std::sync::atomic::AtomicU64,
    schema: RwLock<Arc<DatabaseSchema>>,
    client: Mutex<Option<Client>>,
    changes: mpsc::UnboundedSender<RowChange>,
    status: watch::Sender<ReplicaStatus>,
}

/// A live replica; see the module documentation. Dropping it stops replication.
pub struct Replica {
    shared: Arc<Shared>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<RowChange>>>,
    task: JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("target", &self.shared.target)
            .field("db", &self.shared.db)
            .finish()
    }
}

struct Session {
    client: Client,
    notes: mpsc::UnboundedReceiver<Notification>,
    /// Monitored columns per table, resolved against this session's schema.
    columns: Columns,
}

type Columns = BTreeMap<String, Vec<String>>;

#[derive(Default)]
struct SyncState {
    last_txn_id: Option<Uuid>,
    method: Option<MonitorMethod>,
    synced_once: bool,
    sessions: u64,
}

impl Replica {
    /// Connects, monitors `tables` of `db`, and returns once the initial contents are
    /// loaded (they are also queued on [`changes`](Replica::changes) as insertions).
    /// Fails if the first connection fails or a table/column is not in the schema;
    /// after that, disconnects are handled in the background.
    pub async fn start<T: Into<TableSpec>>(
        target: &str,
        db: &str,
        tables: impl IntoIterator<Item = T>,
    ) -> Result<Replica, Error> {
        Replica::start_with(target, db, tables, ReplicaOptions::default()).await
    }

    /// [`start`](Replica::start) with options.
    pub async fn start_with<T: Into<TableSpec>>(
        target: &str,
        db: &str,
        tables: impl IntoIterator<Item = T>,
        options: ReplicaOptions,
    ) -> Result<Replica, Error> {
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        let change_stream = options.change_stream;
        let (status_tx, _) = watch::channel(ReplicaStatus {
            connected: false,
            syncs: 0,
            method: None,
            last_error: None,
            resumed: false,
            lock: None,
            lock_stolen: false,
        });
        let shared = Arc::new(Shared {
            target: target.to_owned(),
            db: db.to_owned(),
            specs: tables.into_iter().map(Into::into).collect(),
            options,
            data: RwLock::new(Snapshot::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
            volatile_generation: std::sync::atomic::AtomicU64::new(0),
            schema: RwLock::new(Arc::new(DatabaseSchema {
                name: db.to_owned(),
                version: String::new(),
                cksum: None,
                tables: BTreeMap::new(),
            })),
            client: Mutex::new(None),
            changes: changes_tx,
            status: status_tx,
        });
        let mut state = SyncState::default();
        let session = open_session(&shared, &mut state).await?;
        let task = tokio::spawn(run(shared.clone(), session, state));
        Ok(Replica {
            shared,
            changes: Mutex::new(change_stream.then_some(changes_rx)),
            task,
        })
    }

    /// Takes the change stream (the first call gets it; later calls get `None`). It
    /// starts with the initial contents as insertions, then every change, including
    /// those found on resynchronisation after a reconnect. Changes queue until taken;
    /// `None` as well when [`ReplicaOptions::change_stream`] is off.
    pub fn changes(&self) -> Option<mpsc::UnboundedReceiver<RowChange>> {
        self.changes.lock().ok().and_then(|mut c| c.take())
    }

    /// Increases every time the replicated contents may have changed (an update applied,
    /// a resynchronisation): equal values mean the same contents, so a reader can skip
    /// work it did for the contents it saw last.
    /// Changes to [`ReplicaOptions::volatile`] columns alone leave it as it is.
    pub fn generation(&self) -> u64 {
        self.shared
            .generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Like [`Replica::generation`], but also increases with changes to
    /// [`ReplicaOptions::volatile`] columns.
    pub fn volatile_generation(&self) -> u64 {
        self.shared
            .volatile_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// A copy of every replicated table.
    pub fn snapshot(&self) -> Snapshot {
        self.read(Snapshot::clone)
    }

    /// A copy of one table.
    pub fn table(&self, name: &str) -> Table {
        self.read(|s| s.table(name).clone())
    }

    /// Runs `f` on the current contents without copying them.
    pub fn read<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        match self.shared.data.read() {
            Ok(guard) => f(&guard),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// The database schema as of the last (re)connection.
    pub fn schema(&self) -> Arc<DatabaseSchema> {
        self.shared
            .schema
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The connection of the current session, for transactions on the same server.
    pub fn client(&self) -> Option<Client> {
        self.shared
            .client
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(|c| !c.is_closed())
    }

    /// Watches the connection state (e.g. `status().wait_for(|s| s.syncs > n)`).
    pub fn status(&self) -> watch::Receiver<ReplicaStatus> {
        self.shared.status.subscribe()
    }
}

async fn run(shared: Arc<Shared>, mut session: Session, mut state: SyncState) {
    loop {
        let error = follow(&shared, &mut session, &mut state).await;
        tracing::info!(target = %shared.target, %error, "OVSDB replica lost its session; reconnecting");
        if let Ok(mut c) = shared.client.lock() {
            *c = None;
        }
        shared.status.send_modify(|s| {
            s.connected = false;
            s.last_error = Some(error.to_string());
            if s.lock.is_some() {
                s.lock = Some(LockState::Lost);
            }
        });
        let mut backoff = shared.options.min_backoff;
        session = loop {
            tokio::time::sleep(backoff).await;
            match open_session(&shared, &mut state).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::debug!(target = %shared.target, error = %e, "OVSDB reconnect failed");
                    shared
                        .status
                        .send_modify(|s| s.last_error = Some(e.to_string()));
                    backoff = (backoff * 2).min(shared.options.max_backoff);
                }
            }
        };
    }
}

fn monitor_requests(
    shared: &Shared,
    schema: &DatabaseSchema,
) -> Result<BTreeMap<String, MonitorRequest>, Error> {
    let mut requests = BTreeMap::new();
    for spec in &shared.specs {
        let table = schema.table(&spec.table)?;
        for c in &spec.except {
            if !table.columns.contains_key(c) {
                return Err(Error::UnknownName {
                    db: shared.db.clone(),
                    what: "column",
                    name: format!("{}.{c}", spec.table),
                });
            }
        }
        let columns: Vec<String> = if spec.columns.is_empty() {
            table
                .columns
                .keys()
                .filter(|c| !spec.except.contains(c))
                .cloned()
                .collect()
        } else {
            for c in &spec.columns {
                if !table.columns.contains_key(c) {
                    return Err(Error::UnknownName {
                        db: shared.db.clone(),
                        what: "column",
                        name: format!("{}.{c}", spec.table),
                    });
                }
            }
            spec.columns.clone()
        };
        requests.insert(
            spec.table.clone(),
            MonitorRequest {
                columns: Some(columns),
                conditions: None,
            },
        );
    }
    Ok(requests)
}

fn is_unknown_method(error: &Error) -> bool {
    match error {
        Error::Rpc { error, .. } => {
            error.as_str() == Some("unknown method")
                || error.get("error").and_then(Json::as_str) == Some("unknown method")
        }
        _ => false,
    }
}

async fn open_session(shared: &Shared, state: &mut SyncState) -> Result<Session, Error> {
    let client = Client::connect_with(&shared.target, shared.options.client.clone()).await?;
    let notes = client.notifications().ok_or_else(|| Error::Disconnected {
        target: shared.target.clone(),
        reason: "notification stream already taken".into(),
    })?;
    let schema = Arc::new(client.get_schema(&shared.db).await?);
    let requests = monitor_requests(shared, &schema)?;
    let columns: Columns = requests
        .iter()
        .map(|(t, r)| (t.clone(), r.columns.clone().unwrap_or_default()))
        .collect();
    if let Ok(mut s) = shared.schema.write() {
        *s = schema.clone();
    }
    state.sessions += 1;
    let monitor_id = json!(format!("replica-{}", state.sessions));
    let mut method = state.method.unwrap_or(MonitorMethod::CondSince);
    let mut resumed = false;
    let changes = loop {
        let result = match method {
            MonitorMethod::CondSince => client
                .monitor_cond_since(
                    &shared.db,
                    monitor_id.clone(),
                    &requests,
                    state.last_txn_id.as_ref(),
                )
                .await
                .map(|r| {
                    let resumed = r.found && state.synced_once;
                    state.last_txn_id = Some(r.last_txn_id);
                    (resumed, r.updates)
                }),
            MonitorMethod::Cond => client
                .monitor_cond(&shared.db, monitor_id.clone(), &requests)
                .await
                .map(|u| (false, u)),
            MonitorMethod::Plain => client
                .monitor(&shared.db, monitor_id.clone(), &requests)
                .await
                .map(|u| (false, u)),
        };
        match result {
            Ok((true, updates)) => {
                resumed = true;
                break apply_updates(
                    shared,
                    &schema,
                    &columns,
                    &updates,
                    method != MonitorMethod::Plain,
                )?;
            }
            Ok((false, updates)) => break resync(shared, &schema, &columns, &updates, method)?,
            Err(e) if is_unknown_method(&e) && method != MonitorMethod::Plain => {
                method = if method == MonitorMethod::CondSince {
                    MonitorMethod::Cond
                } else {
                    MonitorMethod::Plain
                };
            }
            Err(e) => return Err(e),
        }
    };
    state.method = Some(method);
    state.synced_once = true;
    // The lock before the session is published: no transaction goes out on it unlocked.
    let lock = match &shared.options.lock {
        None => None,
        Some(name) if !shared.status.borrow().lock_stolen => {
            client.steal(name).await?;
            Some(LockState::Held)
        }
        Some(name) => Some(if client.lock(name).await? {
            LockState::Held
        } else {
            LockState::Waiting
        }),
    };
    emit(shared, changes);
    if let Ok(mut c) = shared.client.lock() {
        *c = Some(client.clone());
    }
    shared.status.send_modify(|s| {
        s.connected = true;
        s.syncs += 1;
        s.method = Some(method);
        s.resumed = resumed;
        s.lock = lock;
    });
    Ok(Session {
        client,
        notes,
        columns,
    })
}

async fn follow(shared: &Shared, session: &mut Session, state: &mut SyncState) -> Error {
    let schema = shared
        .schema
        .read()
        .map(|s| s.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    while let Some(note) = session.notes.recv().await {
        let result = match note {
            Notification::Update { updates, .. } => {
                apply_updates(shared, &schema, &session.columns, &updates, false)
            }
            Notification::Update2 { updates, .. } => {
                apply_updates(shared, &schema, &session.columns, &updates, true)
            }
            Notification::Update3 {
                updates,
                last_txn_id,
                ..
            } => {
                state.last_txn_id = Some(last_txn_id);
                apply_updates(shared, &schema, &session.columns, &updates, true)
            }
            Notification::Locked(name) => {
                if shared.options.lock.as_ref() == Some(&name) {
                    shared
                        .status
                        .send_modify(|s| s.lock = Some(LockState::Held));
                }
                continue;
            }
            Notification::Stolen(name) => {
                if shared.options.lock.as_ref() == Some(&name) {
                    tracing::warn!(target = %shared.target, lock = %name,
                        "OVSDB lock stolen: another client holds it now");
                    shared.status.send_modify(|s| {
                        s.lock = Some(LockState::Stolen);
                        s.lock_stolen = true;
                    });
                }
                continue;
            }
        };
        match result {
            Ok(changes) => emit(shared, changes),
            // A malformed update leaves the replica unsure of the truth: drop the
            // session and resynchronise from scratch.
            Err(e) => {
                state.last_txn_id = None;
                return e;
            }
        }
    }
    match session.client.request("echo", json!([])).await {
        Err(e) => e,
        Ok(_) => Error::Disconnected {
            target: shared.target.clone(),
            reason: "notification stream ended".into(),
        },
    }
}

fn emit(shared: &Shared, changes: Vec<RowChange>) {
    if !shared.options.change_stream {
        return;
    }
    for change in changes {
        // Nobody listening is fine: the snapshot still holds the truth.
        let _ = shared.changes.send(change);
    }
}

/// Parses a row from the wire with the column types of `table` (unknown columns such
/// as `_version` are skipped).
fn parse_row(table_name: &str, table: &TableSchema, json: &Json) -> Result<Row, Error> {
    let obj = json.as_object().ok_or_else(|| Error::Data {
        what: "row",
        reason: format!("table {table_name}: expected a JSON object"),
        json: json_excerpt(json),
    })?;
    let mut row = Row::new();
    for (column, value) in obj {
        if let Some(c) = table.columns.get(column) {
            row.set(column, Datum::from_json_typed(value, &c.column_type)?);
        }
    }
    Ok(row)
}

/// Fills the columns a row update left out (update2 omits columns with default values).
fn complete(table: &TableSchema, columns: &[String], mut row: Row) -> Row {
    for c in columns {
        if let (None, Some(schema)) = (row.get(c), table.columns.get(c)) {
            row.set(c, Datum::default_of(&schema.column_type));
        }
    }
    row
}

fn updates_object(updates: &Json) -> Result<&serde_json::Map<String, Json>, Error> {
    updates.as_object().ok_or_else(|| Error::Data {
        what: "table updates",
        reason: "expected a JSON object of tables".into(),
        json: json_excerpt(updates),
    })
}

/// Applies `<table-updates>` (v1) or `<table-updates2>` to the replica; returns the
/// changes in table, then UUID order.
fn apply_updates(
    shared: &Shared,
    schema: &DatabaseSchema,
    all_columns: &Columns,
    updates: &Json,
    v2: bool,
) -> Result<Vec<RowChange>, Error> {
    let mut data = shared.data.write().unwrap_or_else(|p| p.into_inner());
    let mut relevant = false;
    let applied = apply_updates_to(
        &mut data,
        &shared.options.volatile,
        schema,
        all_columns,
        updates,
        v2,
        &mut relevant,
    );
    use std::sync::atomic::Ordering::AcqRel;
    shared.volatile_generation.fetch_add(1, AcqRel);
    // A failed update may have applied part of itself: count it as a change.
    if relevant || applied.is_err() {
        shared.generation.fetch_add(1, AcqRel);
    }
    applied
}

/// Whether `old` and `new` (known to differ) differ in a column that is not `table`'s
/// volatile one.
fn differs_beyond(volatile: &[(String, String)], table: &str, old: &Row, new: &Row) -> bool {
    // Called for every changed row: no column set to build when nothing is volatile.
    if !volatile.iter().any(|(t, _)| t == table) {
        return true;
    }
    let is_volatile = |c: &str| volatile.iter().any(|(t, v)| t == table && v == c);
    let columns: BTreeSet<&String> = old.iter().chain(new.iter()).map(|(c, _)| c).collect();
    columns
        .into_iter()
        .any(|c| !is_volatile(c) && old.get(c) != new.get(c))
}

fn apply_updates_to(
    data: &mut Snapshot,
    volatile: &[(String, String)],
    schema: &DatabaseSchema,
    all_columns: &Columns,
    updates: &Json,
    v2: bool,
    relevant: &mut bool,
) -> Result<Vec<RowChange>, Error> {
    let mut changes = Vec::new();
    for (table_name, rows) in updates_object(updates)? {
        let table = schema.table(table_name)?;
        let columns = all_columns.get(table_name).map_or(&[][..], Vec::as_slice);
        let rows = updates_object(rows)?;
        let current = data.tables.entry(table_name.clone()).or_default();
        let mut sorted: Vec<_> = rows.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (uuid_text, update) in sorted {
            let uuid = Uuid::parse(uuid_text)?;
            // Taken out rather than cloned: it becomes the change's `old`.
            let old = current.remove(&uuid);
            let applied = if v2 {
                apply_update2(table_name, table, columns, old.as_ref(), update)
            } else {
                apply_update1(table_name, table, columns, old.as_ref(), update)
            };
            let new = match applied {
                Ok(new) => new,
                Err(e) => {
                    if let Some(old) = old {
                        current.insert(uuid, old);
                    }
                    return Err(e);
                }
            };
            if let Some(row) = &new {
                current.insert(uuid, row.clone());
            }
            if old != new {
                *relevant |= match (&old, &new) {
                    (Some(o), Some(n)) => differs_beyond(volatile, table_name, o, n),
                    _ => true,
                };
                changes.push(RowChange {
                    table: table_name.clone(),
                    uuid,
                    old,
                    new,
                });
            }
        }
    }
    Ok(changes)
}

fn apply_update1(
    table_name: &str,
    table: &TableSchema,
    columns: &[String],
    old: Option<&Row>,
    update: &Json,
) -> Result<Option<Row>, Error> {
    match update.get("new") {
        Some(new) if !new.is_null() => {
            let mut row = old.cloned().unwrap_or_default();
            for (c, v) in parse_row(table_name, table, new)?.iter() {
                row.set(c, v.clone());
            }
            Ok(Some(complete(table, columns, row)))
        }
        _ => Ok(None),
    }
}

fn apply_update2(
    table_name: &str,
    table: &TableSchema,
    columns: &[String],
    old: Option<&Row>,
    update: &Json,
) -> Result<Option<Row>, Error> {
    let bad = || Error::Data {
        what: "row update2",
        reason: format!("table {table_name}: expected one of initial, insert, modify, delete"),
        json: json_excerpt(update),
    };
    let obj = update.as_object().ok_or_else(bad)?;
    if let Some(row) = obj.get("initial").or_else(|| obj.get("insert")) {
        return Ok(Some(complete(
            table,
            columns,
            parse_row(table_name, table, row)?,
        )));
    }
    if let Some(diff) = obj.get("modify") {
        let diff = parse_row(table_name, table, diff)?;
        // Stored rows are already complete.
        let mut row = match old {
            Some(old) => old.clone(),
            None => complete(table, columns, Row::new()),
        };
        for (column, d) in diff.iter() {
            if let (Some(have), Some(c)) = (row.get_mut(column), table.columns.get(column)) {
                have.apply_diff(d, &c.column_type);
            }
        }
        return Ok(Some(row));
    }
    if obj.contains_key("delete") {
        return Ok(None);
    }
    Err(bad())
}

/// Replaces the replica with full contents from a fresh monitor, returning the rows that
/// differ from what we had (what changed while we were away).
fn resync(
    shared: &Shared,
    schema: &DatabaseSchema,
    all_columns: &Columns,
    updates: &Json,
    method: MonitorMethod,
) -> Result<Vec<RowChange>, Error> {
    let mut fresh: BTreeMap<String, Table> = all_columns
        .keys()
        .map(|t| (t.clone(), Table::new()))
        .collect();
    for (table_name, rows) in updates_object(updates)? {
        let table = schema.table(table_name)?;
        let columns = all_columns.get(table_name).map_or(&[][..], Vec::as_slice);
        let target = fresh.entry(table_name.clone()).or_default();
        for (uuid_text, update) in updates_object(rows)? {
            let uuid = Uuid::parse(uuid_text)?;
            let row = if method == MonitorMethod::Plain {
                apply_update1(table_name, table, columns, None, update)?
            } else {
                apply_update2(table_name, table, columns, None, update)?
            };
            if let Some(row) = row {
                target.insert(uuid, row);
            }
        }
    }
    let mut data = shared.data.write().unwrap_or_else(|p| p.into_inner());
    shared
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    shared
        .volatile_generation
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let mut changes = Vec::new();
    let names: BTreeSet<String> = fresh.keys().chain(data.tables.keys()).cloned().collect();
    for name in names {
        let empty = Table::new();
        let before = data.tables.get(&name).unwrap_or(&empty);
        let after = fresh.get(&name).unwrap_or(&empty);
        let uuids: BTreeSet<&Uuid> = before.keys().chain(after.keys()).collect();
        for uuid in uuids {
            let (old, new) = (before.get(uuid), after.get(uuid));
            if old != new {
                changes.push(RowChange {
                    table: name.clone(),
                    uuid: *uuid,
                    old: old.cloned(),
                    new: new.cloned(),
                });
            }
        }
    }
    data.tables = fresh;
    Ok(changes)
}
