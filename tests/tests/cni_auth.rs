//! Who may attach what, against the real controller and real OVS (one node, the cluster
//! file as the source, the real `switchyard-cni` run in the node's namespace):
//!
//! - the takeover rule: an ADD for a pod attached with another, running container is
//!   refused and the running pod keeps its traffic; once that container's veth and netns
//!   are gone without a DEL (a crash), the new container's ADD takes the pod over;
//! - an ADD naming an interface or a netns that does not exist leaves nothing behind; one
//!   whose caller vouches for a missing interface is answered, reported by CHECK, and
//!   leaves nothing after its DEL;
//! - the unix socket: mode 0600, and a peer of another uid (65534) is refused;
//! - mutual TLS (`ssl:`): the right node's certificate is accepted, another node's
//!   certificate, a certificate from another CA and no certificate are refused;
//!
//! and every refusal leaves the running pods pinging each other.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_cni::api::{self, PodRef, Reply, Request};
use switchyard_tests::Netns;
use switchyard_tests::cni_node::{CniNode, NODE, ShimOutput};
use switchyard_tests::pki::Pki;

fn expect_ok(out: &ShimOutput, what: &str) -> Value {
    assert!(
        out.success,
        "{what}: {} (stderr: {})",
        out.stdout, out.stderr
    );
    if out.stdout.trim().is_empty() {
        Value::Null
    } else {
        out.json()
    }
}

/// The refusal's JSON, after checking its code.
fn expect_code(out: &ShimOutput, code: u64, what: &str) -> Value {
    assert_eq!(
        out.code(),
        Some(code),
        "{what}: {} (stderr: {})",
        out.stdout,
        out.stderr
    );
    out.json()
}

fn details(err: &Value) -> String {
    err["details"].as_str().unwrap_or_default().to_owned()
}

fn pod_ip(result: &Value) -> String {
    let address = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    address.split('/').next().unwrap_or_default().to_owned()
}

/// `from` gets an answer to a ping of `ip` (a few tries: the first may go to ARP).
fn pings(from: &Netns, ip: &str) -> bool {
    (0..5).any(|_| {
        from.exec_output(&["ping", "-c", "1", "-W", "1", ip])
            .status
            .success()
    })
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    assert!(
        switchyard_tests::wait_for(Duration::from_secs(15), &mut done).is_some(),
        "never happened: {what}"
    );
}

/// Two attached pods that ping each other: (netns, address) of each.
struct Running {
    a: (Netns, String),
    b: (Netns, String),
}

impl Running {
    fn start(node: &CniNode, a: (&str, &str), b: (&str, &str)) -> Running {
        let mut pods = Vec::new();
        for (pod, container) in [a, b] {
            let netns = node.pod_netns();
            let path = netns.path().display().to_string();
            let out = node.shim_run("ADD", pod, container, &path, &[]);
            let ip = pod_ip(&expect_ok(&out, &format!("ADD {pod}")));
            pods.push((netns, ip));
        }
        let b = pods.pop().unwrap_or_else(|| unreachable!());
        let a = pods.pop().unwrap_or_else(|| unreachable!());
        let running = Running { a, b };
        running.assert_pinging("at the start");
        running
    }

    fn assert_pinging(&self, when: &str) {
        assert!(pings(&self.a.0, &self.b.1), "{when}: a cannot ping b");
        assert!(pings(&self.b.0, &self.a.1), "{when}: b cannot ping a");
    }
}

#[test]
fn cni_add_over_a_running_container_is_refused_and_over_a_dead_one_takes_over() {
    switchyard_tests::skip_unless_root!();
    let node = CniNode::start(&[("default", "web-0"), ("default", "peer")]);
    let mut running = Running::start(
        &node,
        ("default/web-0", "c-old"),
        ("default/peer", "c-peer"),
    );
    let old_iface = api::host_iface_name("c-old", "eth0");
    let ports_before = node.ports();

    // A second sandbox for the running pod: refused, naming the running container.
    let second = node.pod_netns();
    let second_path = second.path().display().to_string();
    let out = node.shim_run("ADD", "default/web-0", "c-new", &second_path, &[]);
    let err = expect_code(&out, 118, "ADD over a running container");
    assert!(details(&err).contains("c-old"), "{err}");
    // Nothing of the running pod changed; the refused sandbox's veth is gone.
    assert_eq!(node.ports(), ports_before);
    assert!(
        !node
            .veths()
            .contains(&api::host_iface_name("c-new", "eth0"))
    );
    running.assert_pinging("after the refused ADD");
    let check = node.shim_run(
        "CHECK",
        "default/web-0",
        "c-old",
        &running.a.0.path().display().to_string(),
        &[],
    );
    expect_ok(&check, "CHECK of the running container");

    // The old sandbox dies without a DEL (a node or runtime crash): its netns, and the
    // veth with it, are gone. The new container's ADD (retried as kubelet does) takes over.
    let old_ip = running.a.1.clone();
    let old = std::mem::replace(&mut running.a, (second, old_ip.clone()));
    drop(old);
    let mut last = None;
    eventually(
        "the new container's ADD succeeds once the old one is dead",
        || {
            let out = node.shim_run("ADD", "default/web-0", "c-new", &second_path, &[]);
            let done = out.success;
            last = Some(out);
            done
        },
    );
    let result = last.map(|o| o.json()).unwrap_or_default();
    assert_eq!(pod_ip(&result), old_ip, "the pod keeps its address");
    running.assert_pinging("after the takeover");
    eventually("the dead container's port leaves br-int", || {
        !node.ports().contains(&old_iface)
    });
    assert!(
        node.ports()
            .contains(&api::host_iface_name("c-new", "eth0"))
    );
}

/// A shim vouches for its veth (`host_ifindex`: it has just created it in the node's
/// namespace), and on a node where vswitchd already holds a shim's veth the controller
/// answers such an ADD without waiting for vswitchd to number the port. A caller that
/// vouches for an interface that does not exist therefore gets its ADD; then CHECK
/// reports the pod, the controller logs vswitchd's refusal, and DEL leaves nothing.
#[test]
fn a_vouched_add_of_a_missing_interface_is_undone_by_the_controller() {
    switchyard_tests::skip_unless_root!();
    let node = CniNode::start(&[
        ("default", "web-0"),
        ("default", "peer"),
        ("default", "ghost"),
    ]);
    let running = Running::start(&node, ("default/web-0", "c-w"), ("default/peer", "c-p"));
    let ports = node.ports();
    let flows = node
        .ovs
        .ofctl("dump-flows", "br-int", &["--no-stats"])
        .lines()
        .count();
    let ghost = PodRef {
        namespace: "default".into(),
        pod: "ghost".into(),
        container_id: "c-ghost".into(),
        netns: "/run/netns/none".into(),
        ifname: "eth0".into(),
        host_iface: api::host_iface_name("c-ghost", "eth0"),
        pod_mac: None,
        node: Some(NODE.into()),
        host_ifindex: Some(999_999),
    };
    let call = |request: Request| {
        api::call(&node.cni_target(), &request, Duration::from_secs(20)).expect("a reply")
    };
    let reply = call(Request::Add(ghost.clone()));
    assert!(matches!(reply, Reply::Ok(Some(_))), "{reply:?}");
    let err = refusal(call(Request::Check(ghost.clone())));
    assert!(matches!(err.code, 110 | 114), "{err:?}");
    eventually("the controller logs vswitchd's refusal", || {
        node.controller_log()
            .contains("vswitchd could not add the host interface the shim vouched for")
    });
    // Undone without a DEL: no port or flow of the ghost stays.
    eventually("no port or flow of the ghost stays, before any DEL", || {
        node.ports() == ports
            && node
                .ovs
                .ofctl("dump-flows", "br-int", &["--no-stats"])
                .lines()
                .count()
                == flows
    });
    let err = refusal(call(Request::Check(ghost.clone())));
    assert!(
        matches!(err.code, 110 | 114),
        "CHECK after the undo: {err:?}"
    );
    // The runtime's DEL still succeeds (idempotent) and changes nothing.
    assert_eq!(call(Request::Del(ghost.clone())), Reply::Ok(None));
    eventually("still nothing of the ghost after the DEL", || {
        node.ports() == ports
            && node
                .ovs
                .ofctl("dump-flows", "br-int", &["--no-stats"])
                .lines()
                .count()
                == flows
    });
    running.assert_pinging("after the vouched ghost");
}

/// One raw pod-attach request over the node's unix socket.
fn raw_add(node: &CniNode, pod: &str, container: &str, host_iface: &str) -> Reply {
    let request = Request::Add(PodRef {
        namespace: "default".into(),
        pod: pod.into(),
        container_id: container.into(),
        netns: "/run/netns/none".into(),
        ifname: "eth0".into(),
        host_iface: host_iface.into(),
        pod_mac: None,
        node: Some(NODE.into()),
        host_ifindex: None,
    });
    api::call(&node.cni_target(), &request, Duration::from_secs(20)).expect("a reply")
}

fn refusal(reply: Reply) -> api::ErrorReply {
    match reply {
        Reply::Error(e) => e,
        Reply::Ok(net) => panic!("expected a refusal, got {net:?}"),
    }
}

#[test]
fn cni_add_of_a_missing_interface_or_netns_leaves_nothing_behind() {
    switchyard_tests::skip_unless_root!();
    let node = CniNode::start(&[
        ("default", "web-0"),
        ("default", "peer"),
        ("default", "ghost"),
    ]);
    let running = Running::start(&node, ("default/web-0", "c-w"), ("default/peer", "c-p"));
    let ports = node.ports();
    let veths = node.veths();
    let flows = node
        .ovs
        .ofctl("dump-flows", "br-int", &["--no-stats"])
        .lines()
        .count();

    // A veth name of the right form that does not exist on the node.
    let ghost = api::host_iface_name("c-ghost", "eth0");
    let err = refusal(raw_add(&node, "ghost", "c-ghost", &ghost));
    assert_eq!(err.code, 119, "{err:?}");
    assert!(err.details.contains(&ghost), "{err:?}");
    // Any other host interface (the node's own, another pod's veth) is not a pod's.
    let err = refusal(raw_add(&node, "ghost", "c-ghost", &ports[0]));
    assert_eq!(err.code, 113, "{err:?}");
    let err = refusal(raw_add(&node, "ghost", "c-ghost", "lo"));
    assert_eq!(err.code, 113, "{err:?}");
    // A netns that does not exist: the shim fails before it makes anything.
    let out = node.shim_run(
        "ADD",
        "default/ghost",
        "c-ghost2",
        "/run/netns/switchyard-no-such",
        &[],
    );
    expect_code(&out, 100, "ADD into a missing netns");

    eventually("no port, veth or flow of the ghost stays", || {
        node.ports() == ports
            && node.veths() == veths
            && node
                .ovs
                .ofctl("dump-flows", "br-int", &["--no-stats"])
                .lines()
                .count()
                == flows
    });
    assert!(
        node.vsctl(&["--columns=name", "list", "Interface"])
            .lines()
            .all(|l| !l.contains(&ghost))
    );
    // The controller holds no attachment for it.
    let check = Request::Check(PodRef {
        namespace: "default".into(),
        pod: "ghost".into(),
        container_id: "c-ghost".into(),
        netns: String::new(),
        ifname: "eth0".into(),
        host_iface: ghost.clone(),
        pod_mac: None,
        node: None,
        host_ifindex: None,
    });
    let err =
        refusal(api::call(&node.cni_target(), &check, Duration::from_secs(10)).expect("a reply"));
    assert!(err.details.contains("no attachment"), "{err:?}");
    running.assert_pinging("after the failed ADDs");
    // And the pod can still be attached for real.
    let pod = node.pod_netns();
    let out = node.shim_run(
        "ADD",
        "default/ghost",
        "c-ghost",
        &pod.path().display().to_string(),
        &[],
    );
    let ip = pod_ip(&expect_ok(&out, "a real ADD of the pod"));
    assert!(
        pings(&running.a.0, &ip),
        "the pod attached after the failures is reachable"
    );
}

#[test]
fn cni_unix_socket_is_private_and_refuses_other_uids() {
    switchyard_tests::skip_unless_root!();
    let node = CniNode::start(&[("default", "web-0"), ("default", "peer")]);
    let running = Running::start(&node, ("default/web-0", "c-w"), ("default/peer", "c-p"));
    let socket = node.dir().join("cni.sock");
    let mode = std::fs::metadata(&socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let netns = running.a.0.path().display().to_string();

    // The file mode keeps uid 65534 out.
    let out = node.shim_run_wrapped(&nobody, "DEL", "default/web-0", "c-w", &netns, &[]);
    assert!(!out.success, "DEL as uid 65534 must fail: {}", out.stdout);
    assert!(out.stdout.contains("Permission denied"), "{}", out.stdout);
    // With the mode opened by mistake, the peer's uid (SO_PEERCRED) still keeps it out.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = node.shim_run_wrapped(&nobody, "DEL", "default/web-0", "c-w", &netns, &[]);
    let err = expect_code(&out, 117, "DEL as uid 65534");
    assert!(details(&err).contains("uid 65534"), "{err}");
    let out = node.shim_run_wrapped(&nobody, "STATUS", "", "", "", &[]);
    assert!(
        !out.success && out.stdout.contains("uid 65534"),
        "{}",
        out.stdout
    );
    assert_eq!(node.ports().len(), 2, "{:?}", node.ports());
    running.assert_pinging("after uid 65534 was refused");
    // Root is served.
    let out = node.shim_run("CHECK", "default/web-0", "c-w", &netns, &[]);
    expect_ok(&out, "CHECK as root");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn tls_conf(identity: &switchyard_tests::pki::Identity) -> Value {
    json!({
        "ca": identity.ca, "cert": identity.cert, "key": identity.key,
        "serverName": "switchyard-controller",
    })
}

#[test]
fn cni_over_tls_serves_only_the_node_its_certificate_names() {
    switchyard_tests::skip_unless_root!();
    let pki_dir = tempfile::tempdir().expect("a directory");
    let pki = Pki::new(pki_dir.path(), "cni");
    let other_ca = Pki::new(pki_dir.path(), "other");
    let controller = pki.issue("switchyard-controller");
    let ours = pki.issue(NODE);
    let node_2 = pki.issue("node-2");
    let stranger = other_ca.issue(NODE);
    let listen = format!("ssl:127.0.0.1:{}", free_port());
    let s = |p: &std::path::Path| p.display().to_string();
    let node = CniNode::start_listening(
        &[
            ("default", "web-0"),
            ("default", "peer"),
            ("default", "web-2"),
        ],
        &listen,
        &[
            "--cni-tls-ca",
            &s(&controller.ca),
            "--cni-tls-cert",
            &s(&controller.cert),
            "--cni-tls-key",
            &s(&controller.key),
        ],
        &[("tls", tls_conf(&ours))],
    );
    // The right node's certificate: accepted (the node started on it, and these attach).
    let running = Running::start(&node, ("default/web-0", "c-w"), ("default/peer", "c-p"));
    let ports = node.ports();
    let netns = running.a.0.path().display().to_string();
    let pod = node.pod_netns();
    let pod_path = pod.path().display().to_string();

    // node-2's certificate, saying it is node-2: the pods are on cni-node. (The shim's
    // ADD undoes its own veth; DEL and GC go raw, as the shim would also remove local
    // veths, which on a real node-2 are not cni-node's.)
    let as_node_2 = [("tls", tls_conf(&node_2)), ("nodeName", json!("node-2"))];
    let out = node.shim_run("ADD", "default/web-2", "c-2", &pod_path, &as_node_2);
    let err = expect_code(&out, 117, "ADD with node-2's certificate");
    assert!(
        details(&err).contains("node-2") && details(&err).contains(NODE),
        "{err}"
    );
    let target = &listen;
    let in_node = node.ovs.netns.name();
    let del = |claim: &str| {
        Request::Del(PodRef {
            namespace: "default".into(),
            pod: "web-0".into(),
            container_id: "c-w".into(),
            netns: String::new(),
            ifname: "eth0".into(),
            host_iface: api::host_iface_name("c-w", "eth0"),
            pod_mac: None,
            node: Some(claim.into()),
            host_ifindex: None,
        })
    };
    let err = refusal(tls_call(in_node, target, &node_2, true, del("node-2")).expect("a reply"));
    assert_eq!(err.code, 117, "{err:?}");
    assert!(
        err.details.contains("node-2") && err.details.contains(NODE),
        "{err:?}"
    );
    // node-2's certificate, claiming to be cni-node.
    let out = node.shim_run(
        "ADD",
        "default/web-2",
        "c-2",
        &pod_path,
        &[("tls", tls_conf(&node_2))],
    );
    let err = expect_code(&out, 117, "ADD with node-2's certificate claiming cni-node");
    assert!(details(&err).contains("does not name"), "{err}");
    let err = refusal(tls_call(in_node, target, &node_2, true, del(NODE)).expect("a reply"));
    assert_eq!(err.code, 117, "{err:?}");
    let gc = Request::Gc {
        node: NODE.into(),
        valid: vec![],
    };
    let err = refusal(tls_call(in_node, target, &node_2, true, gc).expect("a reply"));
    assert_eq!(
        err.code, 117,
        "GC of cni-node with node-2's certificate: {err:?}"
    );
    // A certificate from another CA: the handshake fails.
    let out = node.shim_run(
        "ADD",
        "default/web-2",
        "c-2",
        &pod_path,
        &[("tls", tls_conf(&stranger))],
    );
    assert!(
        !out.success,
        "ADD with a certificate from another CA: {}",
        out.stdout
    );
    assert!(tls_call(in_node, target, &stranger, true, del(NODE)).is_err());
    // Plaintext against the TLS listener: no answer.
    let plain = listen.replace("ssl:", "tcp:");
    let out = node.shim_run(
        "DEL",
        "default/web-0",
        "c-none",
        "",
        &[("controller", json!(plain))],
    );
    assert!(!out.success, "a plaintext DEL must fail: {}", out.stdout);
    // No certificate at all: the controller ends the handshake, nothing is served.
    assert!(
        tls_call(in_node, target, &ours, false, del(NODE)).is_err(),
        "a TLS client without a certificate was served"
    );

    assert_eq!(node.ports(), ports, "refusals change no port");
    running.assert_pinging("after every refusal");
    let out = node.shim_run("CHECK", "default/web-0", "c-w", &netns, &[]);
    expect_ok(&out, "CHECK with the right certificate");
    // The right certificate attaches the pod the others could not.
    let out = node.shim_run("ADD", "default/web-2", "c-2", &pod_path, &[]);
    let ip = pod_ip(&expect_ok(&out, "ADD of web-2 with cni-node's certificate"));
    assert!(pings(&running.b.0, &ip));
}

/// One request over TLS from inside namespace `netns` (a thread that enters it): with
/// `identity`'s certificate, or with none (trusting `identity`'s CA all the same).
/// `Err` when the exchange failed (refused handshake, closed connection).
fn tls_call(
    netns: &str,
    target: &str,
    identity: &switchyard_tests::pki::Identity,
    present_certificate: bool,
    request: Request,
) -> Result<Reply, String> {
    let path = format!("/run/netns/{netns}");
    let target = target.to_owned();
    let id = identity.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| e.to_string())?;
        if present_certificate {
            let tls = api::ClientTls::new(&id.files(), Some("switchyard-controller".into()))
                .map_err(|e| e.to_string())?;
            api::call_with(&target, Some(&tls), &request, Duration::from_secs(10))
                .map_err(|e| e.to_string())
        } else {
            no_certificate_call(&target["ssl:".len()..], &id.ca, &request)
        }
    })
    .join()
    .unwrap_or_else(|_| Err("the thread panicked".into()))
}

/// A TLS client that trusts the controller (the test PKI's CA) but presents no
/// certificate.
fn no_certificate_call(
    addr: &str,
    ca: &std::path::Path,
    request: &Request,
) -> Result<Reply, String> {
    use switchyard_tls::rustls;
    use switchyard_tls::rustls_pki_types::CertificateDer;
    use switchyard_tls::rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = switchyard_tls::server_name("switchyard-controller").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    tls.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    tls.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    serde_json::from_str(reply.trim()).map_err(|e| format!("{e}: {reply:?}"))
}

#[test]
fn cni_tls_flags_and_an_ssl_listener_go_together() {
    let dir = tempfile::tempdir().expect("a directory");
    let d = dir.path().display().to_string();
    let start = |cni: &[&str]| {
        let out = std::process::Command::new(switchyard_tests::workspace_binary("switchyard"))
            .arg("controller")
            .args(["--cluster-file", &format!("{d}/none.yaml")])
            .args(["--openflow-listen", &format!("punix:{d}/ofp.sock")])
            .args(["--openflow-target", &format!("unix:{d}/ofp.sock")])
            .args(["--admin-listen", &format!("unix:{d}/admin.sock")])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(cni)
            .output()
            .expect("run the controller");
        assert!(!out.status.success(), "{cni:?} must be refused at start");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = start(&["--cni-listen", "ssl:127.0.0.1:16999"]);
    assert!(err.contains("--cni-tls-ca"), "{err}");
    let unix = format!("unix:{d}/cni.sock");
    let err = start(&[
        "--cni-listen",
        &unix,
        "--cni-tls-ca",
        "/x",
        "--cni-tls-cert",
        "/y",
        "--cni-tls-key",
        "/z",
    ]);
    assert!(err.contains("is not ssl:"), "{err}");
    let err = start(&["--cni-listen", &unix, "--cni-tls-ca", "/x"]);
    assert!(err.contains("go together"), "{err}");
}
