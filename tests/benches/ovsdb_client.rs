//! OVSDB client benchmark: the `ovsdb` crate against the python-ovs IDL (Debian
//! python3-openvswitch, driven by `ovsdb_peer.py` next to this file), same workloads,
//! same machine, same run, each on its own fresh sandbox (ovsdb-server only: vswitchd is
//! stopped so it does not race the clients for the two cores).
//!
//! Workloads, each timed until the client's own replica shows the result (what an IDL
//! user waits for):
//! - 1,000 ports (Interface + Port + Bridge.ports mutation) in one transaction;
//! - 1,000 ports, one transaction each, sequentially;
//! - applying 10,000 monitor updates: with the replica paused, a writer changes
//!   `external_ids` of 10,000 ports in 10,000 transactions; then the clock runs while
//!   the replica reads and applies them.
//!
//! Run: `cargo bench -p switchyard-tests --bench ovsdb_client`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use ovsdb::{Client, Condition, Datum, Mutation, Replica, Row, RowChange, TableSpec, Transaction};
use switchyard_tests::OvsSandbox;
use tokio::sync::mpsc::UnboundedReceiver;

const DB: &str = "Open_vSwitch";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const PORTS: usize = 1_000;
const UPDATES: usize = 10_000;
/// Debian's interpreter: python3-openvswitch installs `ovs` for it, not for a pyenv one.
const PYTHON: &str = "/usr/bin/python3";

/// Wall-clock and client CPU time of one workload.
#[derive(Clone, Copy)]
struct Measure {
    wall: f64,
    cpu: f64,
}

/// CPU time of this process so far, in seconds: the sum over its threads of
/// /proc/self/task/*/schedstat (nanosecond resolution, unlike getrusage's ticks).
fn process_cpu() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// Starts the clocks; `stop` reads them.
struct Clock {
    wall: Instant,
    cpu: f64,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: process_cpu(),
        }
    }
    fn stop(&self) -> Measure {
        Measure {
            wall: self.wall.elapsed().as_secs_f64(),
            cpu: process_cpu() - self.cpu,
        }
    }
}

fn peer_script() -> PathBuf {
    let here = PathBuf::from(file!()).with_file_name("ovsdb_peer.py");
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        here.clone(),
        manifest
            .parent()
            .map(|root| root.join(&here))
            .unwrap_or_default(),
        manifest.join("benches/ovsdb_peer.py"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("ovsdb_peer.py next to the bench source")
}

fn tables() -> Vec<TableSpec> {
    vec![
        TableSpec::columns("Bridge", &["name", "ports"]),
        TableSpec::columns("Port", &["name", "interfaces", "external_ids"]),
        TableSpec::columns("Interface", &["name"]),
    ]
}

/// A sandbox with only ovsdb-server running and an empty bridge br0.
fn sandbox() -> OvsSandbox {
    let ovs = OvsSandbox::start();
    ovs.stop_vswitchd();
    ovs.vsctl(&["--no-wait", "add-br", "br0"]);
    ovs
}

fn add_ports(txn: &mut Transaction, prefix: &str, first: usize, count: usize) {
    let mut ports = Vec::with_capacity(count);
    for i in first..first + count {
        let name = format!("{prefix}{i}");
        let iface = txn.insert("Interface", Row::new().with("name", name.as_str()));
        ports.push(
            txn.insert(
                "Port",
                Row::new()
                    .with("name", name.as_str())
                    .with("interfaces", &iface),
            ),
        );
    }
    txn.mutate(
        "Bridge",
        vec![Condition::eq("name", "br0")],
        vec![Mutation::insert("ports", Datum::set(ports.iter()))],
    );
}

async fn wait_inserted(changes: &mut UnboundedReceiver<RowChange>, prefix: &str, n: usize) {
    let mut seen = 0;
    while seen < n {
        let change = changes.recv().await.expect("replica alive");
        if change.table == "Port"
            && change.old.is_none()
            && change
                .new
                .as_ref()
                .is_some_and(|r| r.str("name").starts_with(prefix))
        {
            seen += 1;
        }
    }
}

async fn ours_one_txn(target: &str) -> Measure {
    let replica = Replica::start(target, DB, tables()).await.expect("replica");
    let mut changes = replica.changes().expect("changes");
    let client = replica.client().expect("client");
    let clock = Clock::start();
    let mut txn = Transaction::new();
    add_ports(&mut txn, "rs", 0, PORTS);
    client.transact(DB, txn).await.expect("one transaction");
    wait_inserted(&mut changes, "rs", PORTS).await;
    clock.stop()
}

async fn ours_many_txn(target: &str) -> Measure {
    let replica = Replica::start(target, DB, tables()).await.expect("replica");
    let mut changes = replica.changes().expect("changes");
    let client = replica.client().expect("client");
    let clock = Clock::start();
    for i in 0..PORTS {
        let mut txn = Transaction::new();
        add_ports(&mut txn, "rs", i, 1);
        client.transact(DB, txn).await.expect("transaction");
    }
    wait_inserted(&mut changes, "rs", PORTS).await;
    clock.stop()
}

/// The 1,000 transactions all in flight at once on one connection (the python IDL
/// allows one transaction at a time, so it has no counterpart).
async fn ours_many_txn_pipelined(target: &str) -> Measure {
    let replica = Replica::start(target, DB, tables()).await.expect("replica");
    let mut changes = replica.changes().expect("changes");
    let client = replica.client().expect("client");
    let clock = Clock::start();
    let mut inflight = tokio::task::JoinSet::new();
    for i in 0..PORTS {
        let client = client.clone();
        inflight.spawn(async move {
            let mut txn = Transaction::new();
            add_ports(&mut txn, "rs", i, 1);
            client.transact(DB, txn).await.expect("transaction")
        });
    }
    while let Some(done) = inflight.join_next().await {
        done.expect("transaction task");
    }
    wait_inserted(&mut changes, "rs", PORTS).await;
    clock.stop()
}

/// Gives br0 `UPDATES` ports (untimed setup).
fn fill(rt: &tokio::runtime::Runtime, target: &str) {
    rt.block_on(async {
        let client = Client::connect(target).await.expect("connect");
        let mut txn = Transaction::new();
        add_ports(&mut txn, "fill", 0, UPDATES);
        client.transact(DB, txn).await.expect("fill");
    });
}

/// Changes external_ids of every port, one transaction each, all in flight at once.
fn write_updates(rt: &tokio::runtime::Runtime, target: &str) {
    rt.block_on(async {
        let client = Client::connect(target).await.expect("connect");
        let mut select = Transaction::new();
        select.select("Port", vec![], Some(vec!["_uuid".into(), "name".into()]));
        let rows = client.transact(DB, select).await.expect("select ports");
        let uuids: Vec<_> = rows[0]
            .rows()
            .iter()
            .filter(|r| r.str("name").starts_with("fill"))
            .filter_map(|r| r.get("_uuid").and_then(Datum::as_uuid).cloned())
            .collect();
        assert_eq!(uuids.len(), UPDATES);
        let mut writes = tokio::task::JoinSet::new();
        for uuid in uuids {
            let client = client.clone();
            writes.spawn(async move {
                let mut txn = Transaction::new();
                txn.update(
                    "Port",
                    vec![Condition::uuid(&uuid)],
                    Row::new().with("external_ids", Datum::map([("round", "1")])),
                );
                client.transact(DB, txn).await.expect("update")
            });
        }
        while let Some(done) = writes.join_next().await {
            done.expect("writer task");
        }
    });
}

fn ours_apply(rt: &tokio::runtime::Runtime, target: &str) -> Measure {
    // The replica lives on its own current-thread runtime, which runs only inside
    // block_on: between the calls it is paused and the updates queue up.
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let replica = paused
        .block_on(Replica::start(target, DB, tables()))
        .expect("replica");
    let mut changes = replica.changes().expect("changes");
    paused.block_on(async { while changes.try_recv().is_ok() {} });
    write_updates(rt, target);
    let clock = Clock::start();
    paused.block_on(async {
        let mut applied = 0;
        while applied < UPDATES {
            let change = changes.recv().await.expect("replica alive");
            if change.table == "Port"
                && change.new.as_ref().is_some_and(|r| {
                    r.string_map("external_ids")
                        .get("round")
                        .is_some_and(|v| v == "1")
                })
            {
                applied += 1;
            }
        }
    });
    clock.stop()
}

fn peer_measure(output: &str) -> Measure {
    let v: serde_json::Value = serde_json::from_str(output.trim()).expect("peer prints JSON");
    Measure {
        wall: v["seconds"].as_f64().expect("seconds"),
        cpu: v["cpu"].as_f64().expect("cpu"),
    }
}

fn python(mode: &str, target: &str, n: usize) -> Measure {
    let out = Command::new(PYTHON)
        .arg(peer_script())
        .args([mode, target, SCHEMA, &n.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python peer {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    peer_measure(&String::from_utf8_lossy(&out.stdout))
}

fn python_apply(rt: &tokio::runtime::Runtime, target: &str) -> Measure {
    let mut child = Command::new(PYTHON)
        .arg(peer_script())
        .args(["apply", target, SCHEMA, &UPDATES.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    assert_eq!(line.trim(), "ready", "python peer did not sync");
    write_updates(rt, target);
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "go").expect("go");
    line.clear();
    stdout.read_line(&mut line).expect("result line");
    let status = child.wait().expect("python exit");
    assert!(status.success(), "python peer apply failed");
    peer_measure(&line)
}

fn report(name: &str, ours: Measure, theirs: Measure) {
    println!(
        "{name:<46} {:>8.3} s {:>8.3} s {:>6.1}x  {:>8.3} s {:>8.3} s {:>6.1}x",
        ours.wall,
        theirs.wall,
        theirs.wall / ours.wall,
        ours.cpu,
        theirs.cpu,
        theirs.cpu / ours.cpu,
    );
}

fn main() {
    switchyard_tests::require_root();
    // One thread, like the python IDL's loop (and cheaper than cross-thread wakeups).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "{:<46} {:>10} {:>10} {:>7}  {:>10} {:>10} {:>7}",
        "workload", "ours wall", "py wall", "ratio", "ours cpu", "py cpu", "ratio"
    );

    // OVSDB_BENCH=one,many,apply picks workloads (all by default), e.g. for profiling.
    let only = std::env::var("OVSDB_BENCH").unwrap_or_else(|_| "one,many,apply".into());
    let wanted = |w: &str| only.split(',').any(|o| o == w);

    if wanted("one") {
        let (a, b) = (sandbox(), sandbox());
        let ours = rt.block_on(ours_one_txn(&a.db_target()));
        let theirs = python("one-txn", &b.db_target(), PORTS);
        report("1,000 ports in one transaction", ours, theirs);
        drop((a, b));
    }
    if wanted("many") {
        let (a, b, c) = (sandbox(), sandbox(), sandbox());
        let ours = rt.block_on(ours_many_txn(&a.db_target()));
        let theirs = python("many-txn", &b.db_target(), PORTS);
        report("1,000 ports in 1,000 transactions", ours, theirs);
        let pipelined = rt.block_on(ours_many_txn_pipelined(&c.db_target()));
        report("  same, ours pipelined (py sequential)", pipelined, theirs);
        drop((a, b, c));
    }
    if wanted("apply") {
        let (a, b) = (sandbox(), sandbox());
        fill(&rt, &a.db_target());
        fill(&rt, &b.db_target());
        let ours = ours_apply(&rt, &a.db_target());
        let theirs = python_apply(&rt, &b.db_target());
        report("apply 10,000 monitor updates", ours, theirs);
    }
    println!("(wall: until the client's replica shows the result; cpu: the client process only)");
}
