//! `yardctl ovsdb` against a real ovsdb-server, compared with `ovsdb-client` and
//! `ovs-vsctl` run on the same database.
//!
//! Needs the binary: `cargo build -p switchyard --bin yardctl` (or set `YARDCTL` to it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use switchyard_tests::{OvsSandbox, run, run_output};

fn yardctl() -> PathBuf {
    if let Ok(path) = std::env::var("YARDCTL") {
        return PathBuf::from(path);
    }
    // Test binaries live in target/<profile>/deps; yardctl in target/<profile>.
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("yardctl"))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} not found: run `cargo build -p switchyard --bin yardctl` first (or set YARDCTL)",
        path.display()
    );
    path
}

fn yardctl_output(args: &[&str]) -> Output {
    Command::new(yardctl())
        .arg("ovsdb")
        .args(args)
        .output()
        .expect("run yardctl")
}

/// Replaces every UUID with `<uuid>`: inserts get fresh UUIDs on each run.
fn without_uuids(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let candidate = bytes.get(i..i + 36);
        let is_uuid = candidate.is_some_and(|c| {
            c.iter().enumerate().all(|(j, b)| match j {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
        });
        if is_uuid {
            out.push_str("<uuid>");
            i += 36;
        } else {
            let ch = text[i..].chars().next().expect("char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[test]
fn list_dbs_and_get_schema_print_what_ovsdb_client_prints() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    let target = ovs.db_target();
    for args in [
        vec!["list-dbs", target.as_str()],
        vec!["get-schema", target.as_str(), "Open_vSwitch"],
    ] {
        let ours = yardctl_output(&args);
        assert!(
            ours.status.success(),
            "{}",
            String::from_utf8_lossy(&ours.stderr)
        );
        let theirs = run("ovsdb-client", &args);
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            theirs,
            "yardctl ovsdb {args:?}"
        );
    }
}

#[test]
fn transact_prints_byte_for_byte_what_ovsdb_client_transact_prints() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    ovs.vsctl(&[
        "set",
        "Bridge",
        "br0",
        "external_ids:zone=blue",
        "external_ids:\"odd key\"=\"é \\\" }\"",
    ]);
    let target = ovs.db_target();
    let transactions = [
        // Reads: maps, sets, strings with escapes.
        r#"["Open_vSwitch",{"op":"select","table":"Bridge","where":[["name","==","br0"]],"columns":["name","external_ids","protocols","datapath_type","fail_mode","flood_vlans"]},{"op":"comment","comment":"tab\t quote\" unicode é \u0001"}]"#,
        // Insert + read back (UUIDs differ between runs and are masked).
        r#"["Open_vSwitch",{"op":"insert","table":"Flow_Table","row":{"name":"x","groups":["set",["b","a"]],"external_ids":["map",[["k","v"]]]},"uuid-name":"t"},{"op":"mutate","table":"Bridge","where":[["name","==","br0"]],"mutations":[["flow_tables","insert",["map",[[7,["named-uuid","t"]]]]]]},{"op":"select","table":"Flow_Table","where":[["_uuid","==",["named-uuid","t"]]],"columns":["name","groups","external_ids"]}]"#,
        // Operation error: unknown column, later operations not run.
        r#"["Open_vSwitch",{"op":"comment","comment":"c"},{"op":"update","table":"Bridge","where":[],"row":{"nope":1}},{"op":"select","table":"Bridge","where":[]}]"#,
        // wait that times out at once.
        r#"["Open_vSwitch",{"op":"wait","table":"Bridge","where":[["name","==","br0"]],"columns":["name"],"until":"==","rows":[],"timeout":0}]"#,
        // Commit failure (index on Bridge name) reported past the operations.
        r#"["Open_vSwitch",{"op":"insert","table":"Bridge","row":{"name":"br0"},"uuid-name":"b"},{"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["bridges","insert",["named-uuid","b"]]]}]"#,
        // Abort.
        r#"["Open_vSwitch",{"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["next_cfg","+=",0]]},{"op":"abort"}]"#,
        // Referential integrity violation.
        r#"["Open_vSwitch",{"op":"insert","table":"Port","row":{"name":"dangling","interfaces":["uuid","00000000-0000-0000-0000-000000000001"]}}]"#,
    ];
    for txn in transactions {
        let ours = yardctl_output(&["transact", &target, txn]);
        assert!(
            ours.status.success(),
            "{txn}: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        let theirs = run("ovsdb-client", &["transact", &target, txn]);
        assert_eq!(
            without_uuids(&String::from_utf8_lossy(&ours.stdout)),
            without_uuids(&theirs),
            "transaction {txn}"
        );
    }

    // A JSON-RPC error: both fail, with the same message after the program name.
    let txn = r#"["Nope",{"op":"select","table":"Bridge","where":[]}]"#;
    let ours = yardctl_output(&["transact", &target, txn]);
    let theirs = run_output("ovsdb-client", &["transact", &target, txn]);
    assert!(!ours.status.success() && !theirs.status.success());
    let message = |out: &Output| {
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.split_once(": ")
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or(text)
    };
    assert_eq!(message(&ours), message(&theirs));
    assert!(message(&ours).starts_with("transaction returned error: {\"details\""));
}

#[test]
fn show_lists_what_ovs_vsctl_show_lists() {
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
        "--",
        "set",
        "Port",
        "p1",
        "tag=5",
    ]);
    ovs.vsctl(&[
        "add-port",
        "br0",
        "tun0",
        "--",
        "set",
        "Interface",
        "tun0",
        "type=geneve",
        "options:remote_ip=flow",
        "options:key=flow",
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
    let ours = yardctl_output(&["show", &ovs.db_target()]);
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    // ovs-vsctl orders ports by hash; compare the sets of lines.
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(&String::from_utf8_lossy(&ours.stdout)),
        sorted(&ovs.vsctl(&["show"]))
    );
}

/// A running `yardctl ovsdb monitor`, killed on drop.
struct Monitor {
    child: std::process::Child,
    lines: mpsc::Receiver<Value>,
}

impl Monitor {
    fn start(args: &[&str]) -> Monitor {
        let mut child = Command::new(yardctl())
            .arg("ovsdb")
            .arg("monitor")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn yardctl ovsdb monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Monitor { child, lines }
    }

    /// Reads lines until one matches; fails if none does within a generous bound.
    fn expect(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => continue,
                Err(e) => panic!("monitor never printed {what}: {e}"),
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn named(v: &Value, side: &str, name: &str) -> bool {
    v[side]["name"] == name
}

#[test]
fn monitor_prints_complete_rows_per_change_and_survives_a_restart() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    let schema: Value = serde_json::from_str(&run(
        "ovsdb-client",
        &["get-schema", &ovs.db_target(), "Open_vSwitch"],
    ))
    .expect("schema");
    let port_columns: Vec<String> = schema["tables"]["Port"]["columns"]
        .as_object()
        .expect("Port columns")
        .keys()
        .cloned()
        .collect();

    let monitor = Monitor::start(&[&ovs.db_target(), "Open_vSwitch", "Bridge", "Port"]);
    let initial = monitor.expect("the initial br0 port", |v| {
        v["table"] == "Port" && named(v, "new", "br0")
    });
    assert!(initial["old"].is_null());
    let mut keys: Vec<String> = initial["new"]
        .as_object()
        .expect("row")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    let mut want = port_columns.clone();
    want.sort();
    assert_eq!(keys, want, "a row carries every column of the table");

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
    let insert = monitor.expect("p1 inserted", |v| {
        v["table"] == "Port" && named(v, "new", "p1")
    });
    assert!(insert["old"].is_null());
    assert_eq!(
        insert["new"]["external_ids"],
        serde_json::json!(["map", []])
    );

    ovs.vsctl(&["set", "Port", "p1", "external_ids:owner=test", "trunks=3,4"]);
    let modify = monitor.expect("p1 modified", |v| {
        v["table"] == "Port" && named(v, "old", "p1") && named(v, "new", "p1")
    });
    assert_eq!(modify["old"]["trunks"], serde_json::json!(["set", []]));
    assert_eq!(modify["new"]["trunks"], serde_json::json!(["set", [3, 4]]));
    assert_eq!(
        modify["new"]["external_ids"],
        serde_json::json!(["map", [["owner", "test"]]])
    );

    ovs.stop_ovsdb_server();
    ovs.restart_ovsdb_server();
    ovs.vsctl(&["del-port", "br0", "p1"]);
    let delete = monitor.expect("p1 deleted after the restart", |v| {
        v["table"] == "Port" && named(v, "old", "p1") && v["new"].is_null()
    });
    assert_eq!(delete["uuid"], insert["uuid"]);
}
