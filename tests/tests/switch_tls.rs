//! TLS on the switch channels, against real OVS configured as an operator would
//! (`ovs-vsctl set-ssl KEY CERT CA`, `set-manager pssl:6640`, `set-controller ssl:…`):
//! - the OVSDB client over `ssl:` proves both sides: ovsdb-server's certificate must chain
//!   to our CA and name the node; a stranger, or plaintext, gets nothing;
//! - ovs-vswitchd connects to a `pssl:` OpenFlow listener; its certificate names its node;
//!   one from another CA is refused in the handshake;
//! - the controller programs a node over TLS on both channels, and a node whose
//!   certificate names another node is refused with one warning.
//!
//! Every socket lives in the sandbox's own network namespace: the test's TLS clients and
//! listeners run on a thread that entered it, the controller is started inside it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_tests::OvsSandbox;
use switchyard_tests::pki::{Identity, Pki, list_dbs};
use switchyard_tests::pod_servers::in_netns;

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn ovsdb_over_tls_proves_both_sides_and_refuses_strangers_and_plaintext() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start_tagged("tls");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ours, theirs) = (Pki::new(dir.path(), "a"), Pki::new(dir.path(), "b"));
    let node = ours.issue("node-1");
    let controller = ours.issue("controller");
    let stranger = theirs.issue("controller");
    let args = node.set_ssl_args();
    ovs.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ovs.vsctl(&["set-manager", "pssl:6640:127.0.0.1"]);

    let results = in_netns(ovs.netns.path(), async move || {
        let target = "ssl:127.0.0.1:6640";
        // ovsdb-server opens the remote when it reads the Manager row: retry until then.
        let deadline = Instant::now() + DEADLINE;
        let ok = loop {
            match list_dbs(target, controller.ovsdb_options("node-1")).await {
                Ok(dbs) => break Ok(dbs),
                Err(e) if Instant::now() > deadline => break Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let wrong_name = list_dbs(target, controller.ovsdb_options("node-2")).await;
        let stranger_ca = list_dbs(target, stranger.ovsdb_options("node-1")).await;
        // Trusts the server's CA, but its own certificate is from another one.
        let mut foreign = stranger.clone();
        foreign.ca = controller.ca.clone();
        let foreign_cert = list_dbs(target, foreign.ovsdb_options("node-1")).await;
        let plaintext = list_dbs("tcp:127.0.0.1:6640", Default::default()).await;
        (ok, wrong_name, stranger_ca, foreign_cert, plaintext)
    })
    .join()
    .expect("client thread");
    let (ok, wrong_name, stranger_ca, foreign_cert, plaintext) = results;
    let dbs = ok.unwrap_or_else(|e| {
        panic!(
            "OVSDB over TLS failed: {e}\n{}",
            ovs.log_tail("ovsdb-server")
        )
    });
    assert!(dbs.contains(&"Open_vSwitch".to_string()), "{dbs:?}");
    let e = wrong_name.expect_err("a server certificate for node-1 is not node-2's");
    assert!(
        e.contains("TLS") && e.contains("node-2"),
        "the error names TLS and the expected name: {e}"
    );
    let e = stranger_ca.expect_err("a client that trusts another CA refuses the server");
    assert!(e.contains("TLS"), "{e}");
    foreign_cert.expect_err("the server refuses a client certificate from another CA");
    plaintext.expect_err("plaintext to a pssl: remote gets no answer");
}

#[test]
fn vswitchd_connects_to_a_pssl_listener_and_its_certificate_names_its_node() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start_tagged("tls");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ours, theirs) = (Pki::new(dir.path(), "a"), Pki::new(dir.path(), "b"));
    let node = ours.issue("node-1");
    let controller = ours.issue("controller");
    let args = node.set_ssl_args();
    ovs.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ovs.add_bridge("br0");
    let dpid = u64::from_str_radix(
        ovs.vsctl(&["get", "bridge", "br0", "datapath_id"])
            .trim()
            .trim_matches('"'),
        16,
    )
    .expect("datapath id");

    // The listener reports every accept's outcome until it has seen a refusal after a
    // success (or the deadline passes).
    let (events_tx, events) = std::sync::mpsc::channel();
    let server = switchyard_tls::server_config(&controller.files()).expect("server config");
    let listener = in_netns(ovs.netns.path(), async move || {
        let mut listener =
            openflow::Listener::bind_tls("pssl:6653:127.0.0.1", Default::default(), server)
                .await
                .expect("bind pssl:6653");
        events_tx.send(Accept::Bound).expect("tell the test");
        let deadline = tokio::time::Instant::now() + 2 * DEADLINE;
        let mut accepted = false;
        while let Ok(result) = tokio::time::timeout_at(deadline, listener.accept()).await {
            match result {
                Ok(conn) => {
                    accepted = true;
                    let cert = conn.peer_certificate().cloned();
                    let _ = events_tx.send(Accept::Switch(conn.datapath_id(), cert));
                }
                Err(e) => {
                    let _ = events_tx.send(Accept::Refused(e.to_string()));
                    if accepted {
                        return;
                    }
                }
            }
        }
    });
    let next = || events.recv_timeout(2 * DEADLINE).expect("a listener event");
    assert!(matches!(next(), Accept::Bound));
    let set_controller = || {
        ovs.vsctl(&["set-controller", "br0", "ssl:127.0.0.1:6653"]);
        ovs.vsctl(&["set", "controller", "br0", "connection-mode=out-of-band"]);
    };
    set_controller();
    let (got_dpid, cert) = loop {
        match next() {
            Accept::Switch(dpid, cert) => break (dpid, cert),
            Accept::Refused(e) => eprintln!("refused before the first switch: {e}"),
            Accept::Bound => unreachable!(),
        }
    };
    assert_eq!(got_dpid, dpid, "the connection is br0's");
    let cert = cert.expect("a pssl: connection carries the switch's certificate");
    assert!(switchyard_tls::certificate_names(&cert, "node-1"));
    assert!(!switchyard_tls::certificate_names(&cert, "node-2"));

    // Now the switch presents a certificate from another CA (and still trusts ours).
    let mut stranger = theirs.issue("node-1");
    stranger.ca = node.ca.clone();
    ovs.vsctl(&["del-controller", "br0"]);
    let args = stranger.set_ssl_args();
    ovs.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    set_controller();
    let refusal = match next() {
        Accept::Refused(e) => e,
        Accept::Switch(..) => panic!("a switch with a stranger's certificate was accepted"),
        Accept::Bound => unreachable!(),
    };
    assert!(refusal.contains("TLS"), "{refusal}");
    listener.join().expect("listener thread");
}

enum Accept {
    Bound,
    Switch(
        u64,
        Option<switchyard_tls::rustls_pki_types::CertificateDer<'static>>,
    ),
    Refused(String),
}

/// A controller started inside the sandbox's namespace, over TLS on both channels.
struct TlsController {
    child: Child,
    log: PathBuf,
}

impl TlsController {
    /// `ovsdb`: the OVSDB template (`ssl:{internal_ip}:6640`, or the sandbox's unix
    /// socket to leave OVSDB plaintext and put only OpenFlow on TLS).
    fn start(
        ovs: &OvsSandbox,
        dir: &Path,
        node: &str,
        me: &Identity,
        ovsdb: &str,
    ) -> TlsController {
        let cluster = dir.join("cluster.yaml");
        std::fs::write(
            &cluster,
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\nspec: {{podCIDR: \"10.244.7.0/24\"}}\nstatus:\n  addresses: [{{type: InternalIP, address: 127.0.0.1}}]\n"
            ),
        )
        .expect("cluster file");
        let log = dir.join("controller.log");
        let out = std::fs::File::create(&log).expect("controller.log");
        let err = out.try_clone().expect("controller.log");
        let d = dir.display();
        let bin = switchyard_tests::workspace_binary("switchyard");
        let p = |p: &Path| p.display().to_string();
        // `ip netns exec` execs the controller: the child's PID is the controller's.
        let child = Command::new("ip")
            .args(["netns", "exec", ovs.netns.name()])
            .arg(bin)
            .args([
                "controller",
                "--cluster-file",
                &p(&cluster),
                "--ovsdb-template",
                ovsdb,
                "--openflow-listen",
                "pssl:6653:127.0.0.1",
                "--openflow-target",
                "ssl:127.0.0.1:6653",
                "--cni-listen",
                &format!("unix:{d}/cni.sock"),
                "--admin-listen",
                &format!("unix:{d}/admin.sock"),
                "--metrics-listen",
                "127.0.0.1:0",
                "--switch-tls-ca",
                &p(&me.ca),
                "--switch-tls-cert",
                &p(&me.cert),
                "--switch-tls-key",
                &p(&me.key),
            ])
            .env("RUST_LOG", "info,switchyard::agent=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start the controller");
        TlsController { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TlsController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sandbox_with_identity(node_cert: &Identity) -> OvsSandbox {
    let ovs = OvsSandbox::start_tagged("tls");
    let args = node_cert.set_ssl_args();
    ovs.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ovs.vsctl(&["set-manager", "pssl:6640:127.0.0.1"]);
    ovs
}

#[test]
fn the_controller_programs_a_node_over_tls_on_both_channels() {
    switchyard_tests::skip_unless_root!();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "a");
    let ovs = sandbox_with_identity(&pki.issue("node-1"));
    let controller = TlsController::start(
        &ovs,
        dir.path(),
        "node-1",
        &pki.issue("controller"),
        "ssl:{internal_ip}:6640",
    );
    // br-int exists only if OVSDB over TLS worked; its flows only if OpenFlow did.
    let programmed = switchyard_tests::wait_for(DEADLINE, || {
        ovs.testbed()
            .ofctl("dump-flows", "br-int", &[])
            .is_ok_and(|f| f.lines().filter(|l| l.contains("actions=")).count() >= 10)
    });
    assert!(
        programmed.is_some(),
        "br-int was not programmed over TLS:\n{}\n{}",
        controller.log(),
        ovs.log_tail("ovs-vswitchd")
    );
    let target = ovs.vsctl(&["get", "controller", "br-int", "target"]);
    assert_eq!(target.trim(), "\"ssl:127.0.0.1:6653\"");
    let connected = switchyard_tests::wait_for(DEADLINE, || {
        ovs.vsctl(&["--columns=is_connected", "list", "Controller"])
            .contains("true")
    });
    assert!(
        connected.is_some(),
        "br-int's Controller row never showed is_connected"
    );
    assert!(
        controller.log().contains("br-int connected"),
        "{}",
        controller.log()
    );
}

#[test]
fn a_node_whose_certificate_names_another_node_is_refused_with_one_warning() {
    switchyard_tests::skip_unless_root!();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "a");
    // The switch holds node-2's certificate, but the cluster's node is node-1.
    let ovs = sandbox_with_identity(&pki.issue("node-2"));
    let controller = TlsController::start(
        &ovs,
        dir.path(),
        "node-1",
        &pki.issue("controller"),
        "ssl:{internal_ip}:6640",
    );
    let warning = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("cannot reach its OVSDB"))
            .count()
    };
    let warned = switchyard_tests::wait_for(DEADLINE, || warning(&controller.log()) >= 1);
    assert!(warned.is_some(), "no warning:\n{}", controller.log());
    let log = controller.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot reach its OVSDB"))
        .expect("the warning");
    assert!(
        line.contains("node-1") && line.contains("TLS") && line.contains("ssl:127.0.0.1:6640"),
        "the warning names the node, the target and TLS: {line}"
    );
    // The controller keeps retrying (each retry is logged at debug) but warns once.
    let retries = |log: &str| log.matches("OVSDB still not reachable").count();
    let retried = switchyard_tests::wait_for(DEADLINE, || retries(&controller.log()) >= 3);
    assert!(retried.is_some(), "no retries:\n{}", controller.log());
    assert_eq!(warning(&controller.log()), 1, "{}", controller.log());
    assert_eq!(
        ovs.vsctl(&["list-br"]).trim(),
        "",
        "nothing was configured on a switch that did not prove it is node-1"
    );
}

#[test]
fn a_switch_whose_certificate_names_another_node_is_refused_on_openflow() {
    switchyard_tests::skip_unless_root!();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "a");
    // OVSDB over the local socket (it creates br-int), OpenFlow over TLS with node-2's
    // certificate on node-1's switch: it presents node-1's datapath id, but cannot prove it.
    let ovs = sandbox_with_identity(&pki.issue("node-2"));
    let db = ovs.db_target();
    let controller =
        TlsController::start(&ovs, dir.path(), "node-1", &pki.issue("controller"), &db);
    let refused = switchyard_tests::wait_for(DEADLINE, || {
        controller
            .log()
            .contains("refusing a switch whose TLS certificate does not name node node-1")
    });
    assert!(refused.is_some(), "no refusal:\n{}", controller.log());
    assert!(
        !controller.log().contains("br-int connected"),
        "{}",
        controller.log()
    );
    let flows = ovs.ofctl("dump-flows", "br-int", &[]);
    assert_eq!(
        flows.lines().filter(|l| l.contains("actions=")).count(),
        0,
        "the refused switch got no flows:\n{flows}"
    );
}

#[test]
fn tls_targets_without_certificates_and_unreadable_certificates_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(&cluster, "").expect("cluster file");
    let d = dir.path().display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "controller".to_string(),
            "--cluster-file".into(),
            cluster.display().to_string(),
            "--openflow-target".into(),
            "ssl:127.0.0.1:6653".into(),
            "--cni-listen".into(),
            format!("unix:{d}/cni.sock"),
            "--admin-listen".into(),
            format!("unix:{d}/admin.sock"),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = Command::new(switchyard_tests::workspace_binary("switchyard"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run the controller");
        assert!(!out.status.success(), "{extra:?} must not start");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--openflow-listen", "pssl:0:127.0.0.1"]);
    assert!(
        e.contains("--openflow-listen") && e.contains("--switch-tls-ca"),
        "{e}"
    );
    let e = run(&["--ovsdb-template", "ssl:{internal_ip}:6640"]);
    assert!(
        e.contains("--ovsdb-template") && e.contains("--switch-tls-ca"),
        "{e}"
    );
    let e = run(&["--switch-tls-ca", "/nonexistent/ca.pem"]);
    assert!(e.contains("go together"), "{e}");
    let e = run(&[
        "--openflow-listen",
        "pssl:0:127.0.0.1",
        "--switch-tls-ca",
        "/nonexistent/ca.pem",
        "--switch-tls-cert",
        "/nonexistent/cert.pem",
        "--switch-tls-key",
        "/nonexistent/key.pem",
    ]);
    assert!(e.contains("/nonexistent/"), "names the file: {e}");
}
