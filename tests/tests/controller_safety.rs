//! The controller process keeps itself safe, judged on the real binary: plaintext TCP beyond
//! loopback only with `--insecure-listen`; SIGTERM and SIGINT stop it cleanly (sockets
//! removed); a second controller cannot take over a live controller's unix socket (a stale
//! one is taken over); a fake switch presenting a connected node's datapath id is refused
//! and the real br-int keeps its flows.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchyard::switch_config::datapath_id;
use switchyard_tests::cni_node::{CniNode, NODE};
use switchyard_tests::sim_switch::{Phase, SimSwitch};
use switchyard_tests::{Netns, skip_unless_root, wait_for, workspace_binary};

const CLUSTER: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: sf-node}\nspec: {podCIDR: \"10.253.0.0/24\"}\nstatus:\n  addresses: [{type: InternalIP, address: 192.0.2.20}]\n";

/// A controller process and where it keeps its files.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    /// Starts `switchyard controller` (inside `netns` if given) with `flags` after the
    /// cluster file and OVSDB/OpenFlow targets that lead nowhere (no node is reached).
    fn spawn(dir: &Path, netns: Option<&Netns>, name: &str, flags: &[&str]) -> Controller {
        let cluster = dir.join("cluster.yaml");
        std::fs::write(&cluster, CLUSTER).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let bin = workspace_binary("switchyard");
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = netns {
            argv.extend(["netns", "exec", ns.name()].map(String::from));
        }
        argv.push(bin.display().to_string());
        argv.extend(
            [
                "controller",
                "--cluster-file",
                &cluster.display().to_string(),
                "--ovsdb-template",
                &format!("unix:{}/nowhere/{{node}}.sock", dir.display()),
                "--openflow-target",
                &format!("unix:{}/nowhere/ofp.sock", dir.display()),
                // Its own admin socket and any free metrics port: tests (and the controllers
                // of one test) run side by side.
                "--admin-listen",
                &format!("unix:{}/admin-{name}.sock", dir.display()),
                "--metrics-listen",
                "127.0.0.1:0",
            ]
            .map(String::from),
        );
        argv.extend(flags.iter().map(|f| f.to_string()));
        let (program, args) = match netns {
            // `ip netns exec` execs the program: the child's PID is the controller's.
            Some(_) => ("ip", &argv[..]),
            None => (argv[0].as_str(), &argv[1..]),
        };
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start the controller");
        Controller { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own; its exit status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_for(Duration::from_secs(60), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap_or_else(|| panic!("the controller did not exit; its log:\n{}", self.log()))
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {signal} {pid}");
    }

    fn wait_log(&self, what: &str) {
        assert!(
            wait_for(Duration::from_secs(60), || self.log().contains(what)).is_some(),
            "the controller never logged {what:?}; its log:\n{}",
            self.log()
        );
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_flags(dir: &Path, tag: &str) -> [String; 4] {
    [
        "--openflow-listen".into(),
        format!("punix:{}/{tag}-ofp.sock", dir.display()),
        "--cni-listen".into(),
        format!("unix:{}/{tag}-cni.sock", dir.display()),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn answers(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

#[test]
fn plaintext_tcp_beyond_loopback_needs_insecure_listen() {
    skip_unless_root!();
    let dir = tempfile::tempdir().unwrap();
    // Its own namespace: 0.0.0.0 there is that namespace's loopback only.
    let ns = Netns::new("sf");
    let ofp = format!("punix:{}/ofp.sock", dir.path().display());
    let cni = "tcp:0.0.0.0:16654";

    let mut refused = Controller::spawn(
        dir.path(),
        Some(&ns),
        "refused",
        &["--openflow-listen", &ofp, "--cni-listen", cni],
    );
    let status = refused.wait_exit();
    let log = refused.log();
    assert!(
        !status.success(),
        "started without --insecure-listen:\n{log}"
    );
    assert!(
        log.contains("--cni-listen") && log.contains("--insecure-listen"),
        "the error must name the flag and the way out:\n{log}"
    );
    let listening = ns.exec(&["ss", "-Hltn"]);
    assert!(!listening.contains(":16654"), "{listening}");

    // The OpenFlow listener's old default (every interface) is refused the same way.
    let mut refused = Controller::spawn(
        dir.path(),
        Some(&ns),
        "refused-ofp",
        &[
            "--openflow-listen",
            "ptcp:16653",
            "--cni-listen",
            "tcp:127.0.0.1:16654",
        ],
    );
    assert!(!refused.wait_exit().success());
    assert!(
        refused.log().contains("--openflow-listen"),
        "{}",
        refused.log()
    );

    let mut accepted = Controller::spawn(
        dir.path(),
        Some(&ns),
        "accepted",
        &[
            "--openflow-listen",
            &ofp,
            "--cni-listen",
            cni,
            "--insecure-listen",
        ],
    );
    accepted.wait_log("CNI server ready");
    let log = accepted.log();
    assert!(
        log.contains("--insecure-listen") && log.contains("any host that reaches it"),
        "the warning must say what is exposed:\n{log}"
    );
    let listening = ns.exec(&["ss", "-Hltn"]);
    assert!(listening.contains("0.0.0.0:16654"), "{listening}");
    accepted.signal("TERM");
    assert!(accepted.wait_exit().success(), "{}", accepted.log());
}

#[test]
fn sigterm_and_sigint_stop_cleanly_and_remove_the_sockets() {
    skip_unless_root!();
    let dir = tempfile::tempdir().unwrap();
    for signal in ["TERM", "INT"] {
        let flags = unix_flags(dir.path(), signal);
        let mut c = Controller::spawn(dir.path(), None, signal, &strs(&flags));
        c.wait_log("CNI server ready");
        c.wait_log("new node: starting its agent");
        let ofp = dir.path().join(format!("{signal}-ofp.sock"));
        let cni = dir.path().join(format!("{signal}-cni.sock"));
        assert!(answers(&ofp) && answers(&cni));
        c.signal(signal);
        let status = c.wait_exit();
        let log = c.log();
        assert!(status.success(), "SIG{signal}: exit {status}:\n{log}");
        assert!(log.contains(&format!("signal=SIG{signal}")), "{log}");
        assert!(log.contains("stopped"), "{log}");
        assert!(!ofp.exists(), "SIG{signal} left {}", ofp.display());
        assert!(!cni.exists(), "SIG{signal} left {}", cni.display());
    }
}

#[test]
fn a_live_controllers_socket_is_refused_a_stale_one_taken_over() {
    skip_unless_root!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let first = Controller::spawn(
        dir.path(),
        None,
        "first",
        &strs(&unix_flags(dir.path(), "a")),
    );
    first.wait_log("CNI server ready");
    let cni = dir.path().join("a-cni.sock");
    let ofp = dir.path().join("a-ofp.sock");

    // The same CNI socket, then the same OpenFlow socket: each refused, naming the flag.
    for (name, flags, flag) in [
        (
            "second-cni",
            [
                "--openflow-listen".to_string(),
                format!("punix:{d}/b-ofp.sock"),
                "--cni-listen".into(),
                format!("unix:{d}/a-cni.sock"),
            ],
            "--cni-listen",
        ),
        (
            "second-ofp",
            [
                "--openflow-listen".to_string(),
                format!("punix:{d}/a-ofp.sock"),
                "--cni-listen".into(),
                format!("unix:{d}/b-cni.sock"),
            ],
            "--openflow-listen",
        ),
    ] {
        let mut second = Controller::spawn(dir.path(), None, name, &strs(&flags));
        let status = second.wait_exit();
        let log = second.log();
        assert!(!status.success(), "{name} started:\n{log}");
        assert!(
            log.contains(flag) && log.contains("held by a live process"),
            "{name}: {log}"
        );
        // The first controller still has both.
        assert!(answers(&cni) && answers(&ofp), "{name} disturbed the first");
    }

    // The first dies without cleaning up: its socket files stay, nobody answers.
    drop(first);
    assert!(cni.exists() && !answers(&cni));
    let third = Controller::spawn(
        dir.path(),
        None,
        "third",
        &strs(&unix_flags(dir.path(), "a")),
    );
    third.wait_log("CNI server ready");
    assert!(
        third.log().contains("removing a stale socket"),
        "{}",
        third.log()
    );
    assert!(answers(&cni) && answers(&ofp));
}

fn flow_set(node: &CniNode) -> BTreeSet<String> {
    node.ovs
        .ofctl("dump-flows", "br-int", &["--no-stats"])
        .lines()
        .filter(|l| l.contains("table="))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn a_fake_switch_claiming_a_connected_nodes_datapath_id_is_refused() {
    skip_unless_root!();
    let node = CniNode::start(&[]);
    let connected = || {
        node.ovs
            .vsctl(&["--columns=is_connected", "list", "Controller"])
            .contains("true")
    };
    assert!(wait_for(Duration::from_secs(30), connected).is_some());
    let before = flow_set(&node);
    assert!(!before.is_empty(), "br-int has no flows");

    let target = format!("unix:{}/controller.sock", node.ovs.dir().display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(async {
        let fake = SimSwitch::connect(&target, datapath_id(NODE))
            .await
            .unwrap();
        let mut closed = false;
        for _ in 0..300 {
            if matches!(fake.phase(), Phase::Closed(_)) {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            closed,
            "the fake switch was not disconnected: {:?}",
            fake.phase()
        );
        fake
    });
    let log = node.controller_log();
    assert!(
        log.contains("refusing a second OpenFlow connection") && log.contains(NODE),
        "{log}"
    );
    assert_eq!(fake.flow_count(), 0, "the fake switch was programmed");
    assert!(connected(), "the real br-int lost its connection");
    assert_eq!(flow_set(&node), before, "the real br-int's flows changed");
}
