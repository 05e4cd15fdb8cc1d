//! The `ovsdb` replica against a real ovsdb-server and ovs-vswitchd: what `ovs-vsctl`
//! changes (bridges, ports, maps, sets, deletions and the garbage collection they
//! cascade into) ends up in the replica exactly as `ovsdb-client dump` shows the
//! database; a restart of ovsdb-server is survived, with the rows changed meanwhile
//! reported on the change stream.

use std::collections::BTreeMap;
use std::time::Duration;

use ovsdb::vswitch::{self, TableRow};
use ovsdb::{DatabaseSchema, Datum, Replica, Row, RowChange, Uuid};
use serde_json::Value;
use switchyard_tests::{OvsSandbox, run};
use tokio::sync::mpsc::UnboundedReceiver;

const DB: &str = "Open_vSwitch";
const TABLES: [&str; 5] = ["Open_vSwitch", "Bridge", "Port", "Interface", "Controller"];

/// One table as `ovsdb-client dump -f json` prints it, parsed with the schema's types.
fn dump_table(ovs: &OvsSandbox, schema: &DatabaseSchema, table: &str) -> BTreeMap<Uuid, Row> {
    let out = run(
        "ovsdb-client",
        &["dump", "-f", "json", &ovs.db_target(), DB, table],
    );
    let json: Value = serde_json::from_str(&out).expect("dump is JSON");
    let headings: Vec<&str> = json["headings"]
        .as_array()
        .expect("headings")
        .iter()
        .map(|h| h.as_str().expect("heading"))
        .collect();
    let table_schema = schema.table(table).expect("table in schema");
    let mut rows = BTreeMap::new();
    for data in json["data"].as_array().expect("data") {
        let mut row = Row::new();
        let mut uuid = None;
        for (heading, value) in headings.iter().zip(data.as_array().expect("row array")) {
            if *heading == "_uuid" {
                uuid = Datum::from_json(value).expect("uuid").as_uuid().cloned();
            } else if let (false, Some(ty)) =
                (heading.starts_with('_'), table_schema.column_type(heading))
            {
                row.set(
                    heading,
                    Datum::from_json_typed(value, &ty).expect("typed value"),
                );
            }
        }
        rows.insert(uuid.expect("_uuid column"), row);
    }
    rows
}

/// Waits until the replica equals the dump for every table; fails with the differing
/// rows if it never does.
async fn converge(replica: &Replica, ovs: &OvsSandbox, tables: &[&str]) {
    let schema = replica.schema();
    let mut last = String::new();
    for _ in 0..150 {
        last.clear();
        for table in tables {
            let want = dump_table(ovs, &schema, table);
            let have = replica.table(table);
            if want != have {
                for uuid in want.keys().chain(have.keys()) {
                    if want.get(uuid) != have.get(uuid) {
                        last.push_str(&format!(
                            "{table} {uuid}:\n  dump:    {:?}\n  replica: {:?}\n",
                            want.get(uuid),
                            have.get(uuid)
                        ));
                    }
                }
            }
        }
        if last.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("replica never matched ovsdb-client dump:\n{last}");
}

fn drain(changes: &mut UnboundedReceiver<RowChange>) -> Vec<RowChange> {
    let mut out = Vec::new();
    while let Ok(c) = changes.try_recv() {
        out.push(c);
    }
    out
}

fn name_of(change: &RowChange) -> &str {
    change
        .new
        .as_ref()
        .or(change.old.as_ref())
        .map_or("", |r| r.str("name"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsctl_changes_reach_the_replica_exactly_as_dump_shows_them() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let replica = Replica::start(&ovs.db_target(), DB, TABLES)
        .await
        .expect("replica");
    let mut changes = replica.changes().expect("change stream");
    let initial = drain(&mut changes);
    assert!(
        initial.iter().all(|c| c.old.is_none()),
        "initial contents come as insertions"
    );
    assert_eq!(
        initial.iter().filter(|c| c.table == "Open_vSwitch").count(),
        1
    );

    ovs.add_bridge("br0");
    ovs.vsctl(&[
        "add-port",
        "br0",
        "p1",
        "--",
        "set",
        "Interface",
        "p1",
        "type=internal",
    ]);
    ovs.vsctl(&[
        "add-port",
        "br0",
        "p2",
        "--",
        "set",
        "Port",
        "p2",
        "trunks=1,2,3",
        "external_ids:a=1",
        "external_ids:b=2",
        "--",
        "set",
        "Interface",
        "p2",
        "type=internal",
    ]);
    converge(&replica, &ovs, &TABLES).await;

    // update2 diffs: a set loses and gains elements, a map loses, changes and keeps keys.
    ovs.vsctl(&[
        "set",
        "Port",
        "p2",
        "trunks=2,4",
        "external_ids:b=3",
        "--",
        "remove",
        "Port",
        "p2",
        "external_ids",
        "a",
    ]);
    ovs.vsctl(&[
        "set-controller",
        "br0",
        "tcp:127.0.0.1:6653",
        "--",
        "set-fail-mode",
        "br0",
        "secure",
    ]);
    converge(&replica, &ovs, &TABLES).await;
    let p2 = replica.read(|s| s.find("Port", "name", "p2").map(|(_, r)| r.clone()).next());
    let p2 = p2.expect("p2 replicated");
    assert_eq!(p2.get("trunks"), Some(&Datum::set([2i64, 4])));
    assert_eq!(p2.get("external_ids"), Some(&Datum::map([("b", "3")])));
    let bridges = vswitch::rows::<vswitch::Bridge>(&replica.snapshot());
    assert_eq!(bridges.len(), 1);
    assert_eq!(bridges[0].fail_mode.as_deref(), Some("secure"));
    assert_eq!(bridges[0].datapath_type, "netdev");
    assert_eq!(bridges[0].protocols, ["OpenFlow10", "OpenFlow13"]);
    assert_eq!(bridges[0].ports.len(), 3);

    // Deleting the port garbage-collects its Interface: both are reported deleted.
    drain(&mut changes);
    ovs.vsctl(&["del-port", "br0", "p1"]);
    converge(&replica, &ovs, &TABLES).await;
    let seen = drain(&mut changes);
    for table in ["Port", "Interface"] {
        assert!(
            seen.iter()
                .any(|c| c.table == table && c.new.is_none() && name_of(c) == "p1"),
            "no deletion of {table} p1 in {seen:?}"
        );
    }

    // Deleting the bridge cascades to its ports, interfaces and controller.
    ovs.vsctl(&["del-br", "br0"]);
    converge(&replica, &ovs, &TABLES).await;
    let seen = drain(&mut changes);
    for (table, name) in [
        ("Bridge", "br0"),
        ("Port", "p2"),
        ("Interface", "p2"),
        ("Port", "br0"),
    ] {
        assert!(
            seen.iter()
                .any(|c| c.table == table && c.new.is_none() && name_of(c) == name),
            "no deletion of {table} {name}"
        );
    }
    assert!(
        seen.iter()
            .any(|c| c.table == "Controller" && c.new.is_none())
    );
    assert!(replica.table("Interface").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_survives_an_ovsdb_server_restart_and_reports_what_changed_meanwhile() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    let tables = ["Bridge", "Port", "Interface"];
    let replica = Replica::start(&ovs.db_target(), DB, tables)
        .await
        .expect("replica");
    let mut changes = replica.changes().expect("change stream");
    let mut status = replica.status();
    converge(&replica, &ovs, &tables).await;
    drain(&mut changes);

    ovs.stop_ovsdb_server();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| !s.connected))
        .await
        .expect("disconnect noticed")
        .expect("replica alive");

    // Change the database file while no server runs: only a resynchronisation can
    // reveal this.
    let db_file = ovs.dir().join("conf.db");
    let txn = serde_json::json!([
        DB,
        {"op": "insert", "table": "Interface", "row": {"name": "offline", "type": "internal"}, "uuid-name": "i"},
        {"op": "insert", "table": "Port", "row": {"name": "offline", "interfaces": ["named-uuid", "i"]}, "uuid-name": "p"},
        {"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
         "mutations": [["ports", "insert", ["named-uuid", "p"]],
                       ["external_ids", "insert", ["map", [["while", "away"]]]]]}
    ]);
    run(
        "ovsdb-tool",
        &[
            "transact",
            db_file.to_str().expect("utf-8"),
            &txn.to_string(),
        ],
    );

    ovs.restart_ovsdb_server();
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.connected && s.syncs >= 2),
    )
    .await
    .expect("resynchronised")
    .expect("replica alive");
    converge(&replica, &ovs, &tables).await;
    let seen = drain(&mut changes);
    assert!(
        seen.iter()
            .any(|c| c.table == "Port" && c.old.is_none() && name_of(c) == "offline"),
        "offline port not reported: {seen:?}"
    );
    let bridge = seen
        .iter()
        .find(|c| c.table == "Bridge")
        .expect("bridge change reported");
    let old = bridge.old.as_ref().expect("bridge existed before");
    let new = bridge.new.as_ref().expect("bridge exists after");
    assert!(!old.string_map("external_ids").contains_key("while"));
    assert_eq!(new.string_map("external_ids")["while"], "away");

    // And it keeps following live changes.
    ovs.vsctl(&[
        "add-port",
        "br0",
        "after",
        "--",
        "set",
        "Interface",
        "after",
        "type=internal",
    ]);
    converge(&replica, &ovs, &tables).await;
    let ifaces = vswitch::rows::<vswitch::Interface>(&replica.snapshot());
    assert!(ifaces.iter().any(|i| i.name == "after"));
    let uuid = Uuid::zero();
    assert_eq!(vswitch::Port::from_row(&uuid, &Row::new()).name, "");
}

/// A Unix-socket relay to the server that can be unplugged: `pull` drops every relayed
/// connection and refuses new ones until `plug`.
struct Cable {
    path: String,
    plugged: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Cable {
    fn new(path: &str, upstream: &str) -> Cable {
        let listener = tokio::net::UnixListener::bind(path).expect("bind cable socket");
        let (plugged, watch) = tokio::sync::watch::channel(true);
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                if !*watch.borrow() {
                    continue;
                }
                let Ok(mut up) = tokio::net::UnixStream::connect(&upstream).await else {
                    continue;
                };
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = watch.wait_for(|p| !*p) => {}
                    }
                });
            }
        });
        Cable {
            path: path.to_owned(),
            plugged,
            task,
        }
    }

    fn target(&self) -> String {
        format!("unix:{}", self.path)
    }

    fn pull(&self) {
        let _ = self.plugged.send(false);
    }

    fn plug(&self) {
        let _ = self.plugged.send(true);
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A standalone ovsdb-server on a *clustered* (single-member Raft) database: the kind
/// that keeps transaction history, so `monitor_cond_since` can resume. Stopped by PID.
struct ClusteredServer {
    dir: tempfile::TempDir,
}

impl ClusteredServer {
    fn start() -> ClusteredServer {
        switchyard_tests::require_root();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-ovsdb-raft-")
            .tempdir()
            .expect("temp dir");
        let server = ClusteredServer { dir };
        let db = server.path("conf.db");
        let raft = format!("unix:{}", server.path("raft.sock"));
        run(
            "ovsdb-tool",
            &[
                "create-cluster",
                &db,
                "/usr/share/openvswitch/vswitch.ovsschema",
                &raft,
            ],
        );
        server.run_server();
        server.vsctl(&["init"]);
        server
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn target(&self) -> String {
        format!("unix:{}", self.path("db.sock"))
    }

    fn run_server(&self) {
        let _ = std::fs::remove_file(self.path("db.sock"));
        run(
            "ovsdb-server",
            &[
                "--detach",
                "--no-chdir",
                &format!("--pidfile={}", self.path("ovsdb-server.pid")),
                &format!("--log-file={}", self.path("ovsdb-server.log")),
                &format!("--remote=punix:{}", self.path("db.sock")),
                &format!("--unixctl={}", self.path("ovsdb-server.ctl")),
                &self.path("conf.db"),
            ],
        );
    }

    fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.target());
        let mut all = vec![db.as_str(), "--no-wait", "--timeout=20"];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    fn stop(&self) {
        let Ok(text) = std::fs::read_to_string(self.path("ovsdb-server.pid")) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let gone = switchyard_tests::wait_for(Duration::from_secs(5), || {
            nix::sys::signal::kill(pid, None).is_err()
        });
        if gone.is_none() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for ClusteredServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_clustered_database_the_replica_resumes_from_its_last_transaction() {
    switchyard_tests::skip_unless_root!();
    let server = ClusteredServer::start();
    // ovsdb-server trims its history once it holds more atoms than the database itself
    // (a modified row counts whole, before and after): give this tiny database some
    // bulk, in a row the transactions below do not touch, so they stay resumable.
    let bulk: Vec<String> = (0..500)
        .map(|i| format!("external_ids:k{i}=v{i}"))
        .collect();
    let mut args = vec!["add-br", "bulk", "--", "set", "Bridge", "bulk"];
    args.extend(bulk.iter().map(String::as_str));
    server.vsctl(&args);
    server.vsctl(&["add-br", "br0"]);
    // The replica reaches the server through a cable we can pull: the server (and its
    // transaction history) stays up while our session is cut.
    let cable = Cable::new(&server.path("cable.sock"), &server.path("db.sock"));
    let replica = Replica::start(&cable.target(), DB, ["Bridge", "Port"])
        .await
        .expect("replica");
    let mut changes = replica.changes().expect("change stream");
    let mut status = replica.status();
    assert_eq!(
        status.borrow().method,
        Some(ovsdb::MonitorMethod::CondSince)
    );
    server.vsctl(&["add-br", "br1"]);
    let wait_bridges = |want: &'static [&'static str]| {
        let replica = &replica;
        async move {
            for _ in 0..300 {
                let mut names: Vec<String> = replica
                    .table("Bridge")
                    .values()
                    .map(|r| r.str("name").to_owned())
                    .collect();
                names.sort();
                if names == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("replica never had exactly the bridges {want:?}");
        }
    };
    wait_bridges(&["br0", "br1", "bulk"]).await;
    drain(&mut changes);

    cable.pull();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| !s.connected))
        .await
        .expect("disconnect noticed")
        .expect("replica alive");
    server.vsctl(&["add-br", "br2", "--", "del-br", "br0"]);
    cable.plug();
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.connected && s.syncs >= 2),
    )
    .await
    .expect("resynchronised")
    .expect("replica alive");
    let now = status.borrow().clone();
    assert!(
        now.resumed,
        "monitor_cond_since should have found our last transaction: {now:?}"
    );
    wait_bridges(&["br1", "br2", "bulk"]).await;
    let seen = drain(&mut changes);
    assert!(
        seen.iter()
            .any(|c| c.table == "Bridge" && c.old.is_none() && name_of(c) == "br2")
    );
    assert!(
        seen.iter()
            .any(|c| c.table == "Bridge" && c.new.is_none() && name_of(c) == "br0")
    );
    assert!(
        !seen
            .iter()
            .any(|c| c.table == "Bridge" && name_of(c) == "br1"),
        "br1 did not change"
    );
}

/// A column left out of the monitor (the interfaces' `statistics`, which vswitchd rewrites
/// every few seconds) is neither replicated nor a reason for the replica to move on: while
/// a replica of every column sees vswitchd's statistics updates, one without them stays
/// at the same generation. A column the schema does not have is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_left_out_column_neither_shows_nor_moves_the_replica() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    ovs.vsctl(&[
        "add-port",
        "br0",
        "p1",
        "--",
        "set",
        "Interface",
        "p1",
        "type=internal",
    ]);
    let everything = Replica::start(&ovs.db_target(), DB, ["Interface"])
        .await
        .expect("replica of every column");
    let quiet = Replica::start(
        &ovs.db_target(),
        DB,
        [ovsdb::TableSpec::all_but("Interface", &["statistics"])],
    )
    .await
    .expect("replica without statistics");
    // Both have the port (and only the full one its statistics).
    let has = |r: &Replica, column: &str| {
        r.table("Interface")
            .values()
            .any(|row| row.str("name") == "p1" && row.get(column).is_some())
    };
    assert!(
        switchyard_tests::wait_for(Duration::from_secs(20), || has(&quiet, "ofport")
            && has(&everything, "ofport"))
        .is_some(),
        "both replicas have p1"
    );
    assert!(!has(&quiet, "statistics"), "statistics were left out");
    // Traffic into br0 through p1 (ARP for an address nobody has, inside the test's
    // namespace), so its counters keep changing.
    ovs.netns
        .exec(&["ip", "addr", "add", "10.249.9.1/24", "dev", "p1"]);
    ovs.netns.exec(&["ip", "link", "set", "p1", "up"]);
    let mut pinger = std::process::Command::new("ip")
        .args(["netns", "exec", ovs.netns.name(), "ping", "-q", "-i", "0.2"])
        .args(["-w", "60", "10.249.9.2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ping");
    // vswitchd writes statistics every 5 s (stats-update-interval): let one pass for the
    // port to settle, then watch the next.
    let full_update = |from: u64| {
        switchyard_tests::wait_for(Duration::from_secs(30), || everything.generation() > from)
            .is_some()
    };
    assert!(
        full_update(everything.generation()),
        "vswitchd never updated p1's statistics"
    );
    let (full_before, quiet_before) = (everything.generation(), quiet.generation());
    assert!(
        full_update(full_before),
        "vswitchd did not update the statistics again (the full replica stayed at {full_before})"
    );
    let _ = pinger.kill();
    let _ = pinger.wait();
    assert_eq!(
        quiet.generation(),
        quiet_before,
        "the replica without statistics moved on though nothing it holds changed"
    );

    let e = Replica::start(
        &ovs.db_target(),
        DB,
        [ovsdb::TableSpec::all_but("Interface", &["nonesuch"])],
    )
    .await
    .expect_err("an unknown column is refused");
    assert!(e.to_string().contains("Interface.nonesuch"), "{e}");
}

/// A transaction on `replica`'s session that asserts `lock` and adds
/// `external_ids:by-WRITER` to br0.
async fn write_as(replica: &Replica, lock: &str, writer: &str) -> Result<(), ovsdb::Error> {
    let mut txn = ovsdb::Transaction::new();
    txn.assert_lock(lock);
    txn.mutate(
        "Bridge",
        vec![ovsdb::Condition::eq("name", "br0")],
        vec![ovsdb::Mutation::insert(
            "external_ids",
            Datum::map([(format!("by-{writer}").as_str(), "yes")]),
        )],
    );
    replica
        .client()
        .expect("a live session")
        .transact(DB, txn)
        .await
        .map(|_| ())
}

async fn lock_becomes(replica: &Replica, what: &str, want: impl Fn(&ovsdb::ReplicaStatus) -> bool) {
    let mut status = replica.status();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| want(s)))
        .await
        .unwrap_or_else(|_| panic!("{what}: status stayed {:?}", *replica.status().borrow()))
        .expect("replica alive");
}

/// Two writers of one switch (two controllers): the later one steals the lock; the
/// earlier one is told, and its transactions no longer commit; after ovsdb-server
/// restarts, the one that was fenced off does not steal the lock back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_lock_fences_the_first_writer_even_across_a_restart() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    let options = || ovsdb::ReplicaOptions {
        lock: Some("switchyard".into()),
        ..Default::default()
    };
    let writer = |name: &str| {
        ovs.vsctl(&["get", "Bridge", "br0", "external_ids"])
            .contains(&format!("by-{name}="))
    };
    let first = Replica::start_with(&ovs.db_target(), DB, ["Bridge"], options())
        .await
        .expect("first replica");
    assert_eq!(first.status().borrow().lock, Some(ovsdb::LockState::Held));
    write_as(&first, "switchyard", "first")
        .await
        .expect("the holder writes");
    assert!(writer("first"));

    let second = Replica::start_with(&ovs.db_target(), DB, ["Bridge"], options())
        .await
        .expect("second replica");
    assert_eq!(second.status().borrow().lock, Some(ovsdb::LockState::Held));
    lock_becomes(&first, "the first writer hears of the steal", |s| {
        s.lock == Some(ovsdb::LockState::Stolen) && s.lock_stolen
    })
    .await;
    let refused = write_as(&first, "switchyard", "stale").await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("not owner")),
        "a fenced writer's transaction must fail with ovsdb-server's 'not owner': {refused:?}"
    );
    write_as(&second, "switchyard", "second")
        .await
        .expect("the new holder writes");
    assert!(writer("second") && !writer("stale"));

    // Both sessions end; both reconnect. Only the one never fenced takes the lock.
    ovs.stop_ovsdb_server();
    lock_becomes(&first, "first disconnected", |s| !s.connected).await;
    lock_becomes(&second, "second disconnected", |s| !s.connected).await;
    ovs.restart_ovsdb_server();
    lock_becomes(&second, "the unfenced writer holds the lock again", |s| {
        s.connected && s.lock == Some(ovsdb::LockState::Held)
    })
    .await;
    lock_becomes(
        &first,
        "the fenced writer reconnects without the lock",
        |s| s.connected && s.lock != Some(ovsdb::LockState::Held) && s.lock_stolen,
    )
    .await;
    let refused = write_as(&first, "switchyard", "stale").await;
    assert!(
        refused.is_err(),
        "after the restart the fenced writer still cannot write"
    );
    write_as(&second, "switchyard", "second-again")
        .await
        .expect("the holder writes");
    assert!(writer("second-again") && !writer("stale"));
}

/// A volatile column (`ReplicaOptions::volatile`): vswitchd rewrites a connected
/// controller's `status` every 5 s (`sec_since_connect`). The replica holds the new values
/// and moves `volatile_generation` on, but `generation` stays, so a reader that plans from
/// the rest (the node agent) does not wake for it; a change to another column of the same
/// row moves both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volatile_column_is_replicated_without_moving_the_generation() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    let sock = ovs.dir().join("controller.sock");
    let mut listener = openflow::Listener::bind(&format!("punix:{}", sock.display()))
        .await
        .expect("bind");
    ovs.vsctl(&["set-controller", "br0", &format!("unix:{}", sock.display())]);
    let _conn = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("vswitchd connects within 30 s")
        .expect("handshake");
    let options = ovsdb::ReplicaOptions {
        volatile: vec![("Controller".into(), "status".into())],
        ..Default::default()
    };
    let replica = Replica::start_with(&ovs.db_target(), DB, ["Controller"], options)
        .await
        .expect("replica");
    let since_connect = |r: &Replica| -> Option<String> {
        r.table("Controller")
            .values()
            .find_map(|row| row.string_map("status").remove("sec_since_connect"))
    };
    let r = &replica;
    switchyard_tests::wait_for(Duration::from_secs(30), || since_connect(r).is_some())
        .expect("vswitchd reports sec_since_connect");
    let first = since_connect(r).expect("reported");
    let (generation, volatile) = (replica.generation(), replica.volatile_generation());
    switchyard_tests::wait_for(Duration::from_secs(30), || {
        since_connect(r).is_some_and(|v| v != first)
    })
    .expect("vswitchd rewrites sec_since_connect within 30 s");
    let next = since_connect(r).expect("reported");
    assert!(
        replica.volatile_generation() > volatile,
        "the volatile generation moved on ({first} -> {next})"
    );
    assert_eq!(
        replica.generation(),
        generation,
        "a change to the volatile column alone left the generation ({first} -> {next})"
    );
    ovs.vsctl(&["set", "controller", "br0", "inactivity_probe=12345"]);
    assert!(
        switchyard_tests::wait_for(Duration::from_secs(30), || replica.generation()
            > generation)
        .is_some(),
        "a change to another column moves the generation"
    );
}
