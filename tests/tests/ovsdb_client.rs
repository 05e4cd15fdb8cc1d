//! The `ovsdb` client against a real ovsdb-server: what our transactions do is what
//! `ovs-vsctl` sees, per-operation errors carry the server's words, `wait` gives
//! optimistic concurrency, locks are reported stolen, echo works both ways.

use ovsdb::vswitch::external_ids;
use ovsdb::{Client, Condition, Datum, Error, Mutation, Notification, Row, Transaction};
use serde_json::json;
use switchyard_tests::{OvsSandbox, run};

const DB: &str = "Open_vSwitch";

/// Adds port `name` (one internal interface) to `bridge` in one transaction.
fn add_port_txn(bridge: &str, name: &str) -> Transaction {
    let mut txn = Transaction::new();
    let iface = txn.insert(
        "Interface",
        Row::new()
            .with("name", name)
            .with("type", "internal")
            .with("ofport_request", 33000)
            .with("external_ids", Datum::map([("pod", "default/web-1")])),
    );
    let port = txn.insert(
        "Port",
        Row::new()
            .with("name", name)
            .with("interfaces", &iface)
            .with("tag", 7)
            .with("external_ids", Datum::map([("owner", "switchyard")])),
    );
    txn.mutate(
        "Bridge",
        vec![Condition::eq("name", bridge)],
        vec![Mutation::insert("ports", &port)],
    );
    txn.comment(&format!("switchyard: add {name}"));
    txn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_transactions_are_what_ovs_vsctl_sees() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    let client = Client::connect(&ovs.db_target()).await.expect("connect");
    assert_eq!(
        client.list_dbs().await.expect("list_dbs"),
        ["Open_vSwitch", "_Server"]
    );

    let results = client
        .transact(DB, add_port_txn("br0", "pod1"))
        .await
        .expect("add port");
    assert_eq!(results.len(), 4);
    let port_uuid = *results[1].uuid().expect("port uuid");
    assert_eq!(results[2].count(), Some(1));

    assert!(
        ovs.vsctl(&["list-ports", "br0"])
            .lines()
            .any(|l| l == "pod1")
    );
    assert_eq!(
        ovs.vsctl(&["get", "Port", "pod1", "_uuid"]).trim(),
        port_uuid.as_str()
    );
    assert_eq!(ovs.vsctl(&["get", "Port", "pod1", "tag"]).trim(), "7");
    assert_eq!(
        ovs.vsctl(&["get", "Interface", "pod1", "external_ids:pod"])
            .trim(),
        "\"default/web-1\""
    );
    assert_eq!(
        ovs.vsctl(&["get", "Interface", "pod1", "ofport_request"])
            .trim(),
        "33000"
    );

    // A map edit by mutation, and an update by condition.
    let mut txn = Transaction::new();
    let mut muts = external_ids::set("external_ids", "owner", "controller-2");
    muts.push(Mutation::insert(
        "external_ids",
        Datum::map([("round", "3")]),
    ));
    txn.mutate("Port", vec![Condition::uuid(&port_uuid)], muts);
    txn.update(
        "Interface",
        vec![Condition::eq("name", "pod1")],
        Row::new().with("options", Datum::map([("a", "1"), ("b", "2")])),
    );
    client.transact(DB, txn).await.expect("edit");
    assert_eq!(
        ovs.vsctl(&["get", "Port", "pod1", "external_ids"]).trim(),
        "{owner=controller-2, round=\"3\"}"
    );
    assert_eq!(
        ovs.vsctl(&["get", "Interface", "pod1", "options"]).trim(),
        "{a=\"1\", b=\"2\"}"
    );

    // Removing the reference garbage-collects Port and Interface (non-root tables).
    let mut txn = Transaction::new();
    txn.mutate(
        "Bridge",
        vec![Condition::eq("name", "br0")],
        vec![Mutation::delete("ports", port_uuid)],
    );
    client.transact(DB, txn).await.expect("remove");
    assert!(!ovs.vsctl(&["list-ports", "br0"]).contains("pod1"));
    assert_eq!(
        ovs.vsctl(&["--bare", "--columns=name", "find", "Interface", "name=pod1"])
            .trim(),
        ""
    );

    // select reads back what vsctl wrote.
    ovs.vsctl(&["set", "Bridge", "br0", "external_ids:zone=blue"]);
    let mut txn = Transaction::new();
    txn.select(
        "Bridge",
        vec![Condition::eq("name", "br0")],
        Some(vec!["external_ids".into()]),
    );
    let results = client.transact(DB, txn).await.expect("select");
    assert_eq!(
        results[0].rows()[0].string_map("external_ids")["zone"],
        "blue"
    );
}

/// Runs `ovsdb-client transact` with the same params, for the server's own wording.
fn ovsdb_client_result(ovs: &OvsSandbox, params: &serde_json::Value) -> serde_json::Value {
    let out = run(
        "ovsdb-client",
        &["transact", &ovs.db_target(), &params.to_string()],
    );
    serde_json::from_str(&out).expect("ovsdb-client prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_operation_errors_carry_the_servers_error_details_and_index() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    let client = Client::connect(&ovs.db_target()).await.expect("connect");

    // Operation 1 fails (no such column).
    let mut txn = Transaction::new();
    txn.comment("first");
    txn.update(
        "Bridge",
        vec![Condition::eq("name", "br0")],
        Row::new().with("no_such_column", 1),
    );
    let expected = ovsdb_client_result(&ovs, &txn.to_params(DB));
    match client.transact(DB, txn).await {
        Err(Error::Operation {
            index,
            op,
            error,
            details,
            ..
        }) => {
            assert_eq!((index, op.as_str()), (1, "update"));
            assert_eq!(error, expected[1]["error"].as_str().expect("error string"));
            assert_eq!(details.as_deref(), expected[1]["details"].as_str());
            assert!(details.unwrap_or_default().contains("no_such_column"));
        }
        other => panic!("expected an operation error, got {other:?}"),
    }

    // The commit fails: a second bridge named br0 violates the index. The server reports
    // it in an extra element past the operations.
    let mut txn = Transaction::new();
    let b = txn.insert("Bridge", Row::new().with("name", "br0"));
    txn.mutate(
        "Open_vSwitch",
        vec![],
        vec![Mutation::insert("bridges", &b)],
    );
    match client.transact(DB, txn).await {
        Err(Error::Operation {
            index,
            op,
            error,
            details,
            ..
        }) => {
            assert_eq!(
                (index, op.as_str(), error.as_str()),
                (2, "commit", "constraint violation")
            );
            assert!(details.unwrap_or_default().contains("br0"));
        }
        other => panic!("expected a constraint violation, got {other:?}"),
    }

    // A JSON-RPC level error (unknown database) is not an operation error.
    let err = client
        .transact("Nope", Transaction::new())
        .await
        .expect_err("unknown db");
    assert!(
        matches!(&err, Error::Rpc { error, .. } if error["error"] == "unknown database"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_rejects_a_write_based_on_a_stale_read() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    ovs.vsctl(&["set", "Bridge", "br0", "external_ids:gen=1"]);
    let client = Client::connect(&ovs.db_target()).await.expect("connect");

    let read = Row::new().with("external_ids", Datum::map([("gen", "1")]));
    let guarded = |generation: &str| {
        let mut txn = Transaction::new();
        txn.wait(
            "Bridge",
            vec![Condition::eq("name", "br0")],
            &["external_ids"],
            vec![read.clone()],
        );
        txn.update(
            "Bridge",
            vec![Condition::eq("name", "br0")],
            Row::new().with("external_ids", Datum::map([("gen", generation)])),
        );
        txn
    };
    client
        .transact(DB, guarded("2"))
        .await
        .expect("first writer wins");
    assert_eq!(
        ovs.vsctl(&["get", "Bridge", "br0", "external_ids:gen"])
            .trim(),
        "\"2\""
    );
    match client.transact(DB, guarded("3")).await {
        Err(Error::Operation {
            index: 0,
            op,
            error,
            ..
        }) => {
            assert_eq!((op.as_str(), error.as_str()), ("wait", "timed out"));
        }
        other => panic!("stale write went through: {other:?}"),
    }
    assert_eq!(
        ovs.vsctl(&["get", "Bridge", "br0", "external_ids:gen"])
            .trim(),
        "\"2\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_taken_by_one_client_is_reported_stolen_and_given_back() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let first = Client::connect(&ovs.db_target()).await.expect("connect 1");
    let second = Client::connect(&ovs.db_target()).await.expect("connect 2");
    let mut first_notes = first.notifications().expect("notifications");

    assert!(first.lock("switchyard_leader").await.expect("lock"));
    assert!(!second.lock("switchyard_leader").await.expect("lock queued"));
    // OVS refuses `steal` while this session's own `lock` request is queued.
    second
        .unlock("switchyard_leader")
        .await
        .expect("withdraw queued request");
    second.steal("switchyard_leader").await.expect("steal");
    // ovsdb-server 3.1 re-announces `locked` to the owner when a queued waiter
    // withdraws; the `stolen` follows.
    loop {
        match first_notes.recv().await {
            Some(Notification::Locked(name)) if name == "switchyard_leader" => continue,
            Some(Notification::Stolen(name)) if name == "switchyard_leader" => break,
            other => panic!("expected stolen, got {other:?}"),
        }
    }

    // `assert` fails for the session that lost the lock.
    let mut txn = Transaction::new();
    txn.assert_lock("switchyard_leader");
    match first.transact(DB, txn).await {
        Err(Error::Operation { op, error, .. }) => {
            assert_eq!((op.as_str(), error.as_str()), ("assert", "not owner"))
        }
        other => panic!("assert passed without the lock: {other:?}"),
    }

    // Asking again queues; the holder's unlock hands it over with `locked`.
    first
        .unlock("switchyard_leader")
        .await
        .expect("unlock stale");
    assert!(!first.lock("switchyard_leader").await.expect("queued"));
    second.unlock("switchyard_leader").await.expect("unlock");
    assert_eq!(
        first_notes.recv().await,
        Some(Notification::Locked("switchyard_leader".into()))
    );
    assert_eq!(
        first.echo(json!(["ping", 1])).await.expect("echo"),
        json!(["ping", 1])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_monitor_updates_then_monitor_cancel_and_cancel_of_a_blocked_wait() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    let client = Client::connect(&ovs.db_target()).await.expect("connect");
    let mut notes = client.notifications().expect("notifications");
    let requests = std::collections::BTreeMap::from([(
        "Bridge".to_owned(),
        ovsdb::MonitorRequest {
            columns: Some(vec!["name".into(), "external_ids".into()]),
            conditions: None,
        },
    )]);
    let initial = client
        .monitor(DB, json!("plain"), &requests)
        .await
        .expect("monitor");
    let rows = initial["Bridge"].as_object().expect("Bridge updates");
    assert_eq!(rows.len(), 1);
    let (uuid, update) = rows.iter().next().expect("br0");
    assert_eq!(update["new"]["name"], "br0");

    ovs.vsctl(&["set", "Bridge", "br0", "external_ids:k=v"]);
    match notes.recv().await {
        Some(Notification::Update {
            monitor_id,
            updates,
        }) => {
            assert_eq!(monitor_id, "plain");
            let row = &updates["Bridge"][uuid.as_str()];
            // RFC 7047 §4.1.6: "old" holds the changed columns, "new" every column.
            assert_eq!(row["old"]["external_ids"], json!(["map", []]));
            assert_eq!(row["new"]["external_ids"], json!(["map", [["k", "v"]]]));
            assert_eq!(row["new"]["name"], "br0");
        }
        other => panic!("expected an update, got {other:?}"),
    }
    client
        .monitor_cancel(json!("plain"))
        .await
        .expect("monitor_cancel");
    let err = client
        .monitor_cancel(json!("plain"))
        .await
        .expect_err("already cancelled");
    assert!(matches!(err, Error::Rpc { .. }), "{err}");

    // A wait that cannot finish for a minute, cancelled: its waiter is released (the
    // server itself sends no answer) and the connection stays usable.
    let mut txn = Transaction::new();
    txn.push(ovsdb::Operation::Wait {
        table: "Bridge".into(),
        conditions: vec![Condition::eq("name", "br0")],
        columns: vec!["name".into()],
        until: ovsdb::WaitUntil::NotEqual,
        rows: vec![Row::new().with("name", "br0")],
        timeout: Some(60_000),
    });
    let pending = client
        .send_request("transact", txn.to_params(DB))
        .expect("send");
    client.cancel(pending.id()).expect("cancel");
    let err = pending.reply().await.expect_err("cancelled");
    assert!(
        matches!(&err, Error::Canceled { method, .. } if method == "transact"),
        "{err}"
    );
    assert_eq!(
        client.list_dbs().await.expect("still usable"),
        ["Open_vSwitch", "_Server"]
    );
}
