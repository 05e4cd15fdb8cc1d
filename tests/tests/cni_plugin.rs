//! The `switchyard-cni` executable, run the way a container runtime runs it: inside a
//! node network namespace the test created (`ip netns exec NODE switchyard-cni`), with
//! `CNI_*` variables and the configuration on stdin. Assertions are on what a runtime and an
//! operator see: the JSON on stdout, the exit status, and `ip`/`ethtool` in the namespaces.
//!
//! The binary: `cargo test` builds only the library of `switchyard-cni` for this package, so
//! the first test to need the executable runs `cargo build -p switchyard-cni --bin
//! switchyard-cni` (a no-op when it is up to date) and uses `target/debug/switchyard-cni`
//! (or `$CARGO_TARGET_DIR/debug/...`).
//!
//! The controller side is played by a small in-test responder speaking the pod-attach
//! protocol (`switchyard_cni::api`): it is the API boundary, like a list/watch server for a
//! Kubernetes client. The real controller's ADD is the end-to-end tests' business.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use switchyard_cni::api::{self, Request};
use switchyard_tests::{Netns, OvsSandbox, run_output};

fn shim_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest.join("../target"));
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "switchyard-cni", "--bin", "switchyard-cni"])
                .current_dir(&manifest)
                .status()
                .expect("run cargo build -p switchyard-cni");
            assert!(status.success(), "cargo build -p switchyard-cni failed");
            let binary = target.join("debug/switchyard-cni");
            assert!(binary.exists(), "no binary at {binary:?} after cargo build");
            binary
        })
        .clone()
}

/// What the shim printed and how it exited.
struct ShimRun {
    success: bool,
    stdout: String,
    stderr: String,
}

impl ShimRun {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Asserts a CNI error with `code` and returns the error object.
    fn expect_error(&self, code: u64) -> Value {
        assert!(
            !self.success,
            "expected failure, got success: {}",
            self.stdout
        );
        let err = self.json();
        assert_eq!(
            err["code"], code,
            "wrong code in {err} (stderr: {})",
            self.stderr
        );
        for field in ["cniVersion", "msg", "details"] {
            assert!(err[field].is_string(), "error lacks {field}: {err}");
        }
        err
    }

    fn expect_success(&self) {
        assert!(
            self.success,
            "expected success, got {} (stderr: {})",
            self.stdout, self.stderr
        );
    }
}

/// Runs the shim inside `node` with exactly the given `CNI_*` variables.
fn shim(node: &Netns, vars: &[(&str, &str)], stdin: &str) -> ShimRun {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", node.name()])
        .arg(shim_binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(vars.iter().copied());
    let mut child = cmd.spawn().expect("spawn the shim");
    if let Some(mut input) = child.stdin.take() {
        // The shim may exit before reading (VERSION); a broken pipe is not a test failure.
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait for the shim");
    ShimRun {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn conf(controller: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "switchyard",
        "type": "switchyard-cni",
        "controller": controller,
        "timeoutSeconds": 10,
    })
    .to_string()
}

/// An address nothing listens on.
fn dead_controller() -> String {
    let dir = std::env::temp_dir().join(format!("switchyard-cni-none-{}", std::process::id()));
    format!("unix:{}/cni.sock", dir.display())
}

const ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0";

/// Names of the interfaces in `ns` other than `lo`.
fn links(ns: &Netns) -> Vec<String> {
    let out = ns.exec(&["ip", "-j", "link", "show"]);
    let links: Value = serde_json::from_str(&out).expect("ip -j link");
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .filter(|n| n != "lo")
        .collect()
}

/// A stand-in controller on a Unix socket: answers each request with `answer(request)` (a raw
/// line, so tests can also send garbage) and records what it got.
struct Responder {
    _dir: tempfile::TempDir,
    address: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Responder {
    fn start(answer: impl Fn(&Request) -> String + Send + 'static) -> Responder {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-cni-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("cni.sock");
        let listener = UnixListener::bind(&path).expect("bind responder socket");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut line = String::new();
                let Ok(reader) = conn.try_clone() else {
                    continue;
                };
                if BufReader::new(reader).read_line(&mut line).is_err() {
                    continue;
                }
                let request: Request = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("shim sent a bad request ({e}): {line:?}"));
                let reply = answer(&request);
                if let Ok(mut seen) = seen.lock() {
                    seen.push(request);
                }
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        Responder {
            address: format!("unix:{}", path.display()),
            _dir: dir,
            requests,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn pod_network(last_octet: u8, userspace: bool) -> api::PodNetwork {
    api::PodNetwork {
        address: format!("10.244.1.{last_octet}/24").parse().unwrap(),
        mac: format!("0a:58:0a:f4:01:{last_octet:02x}"),
        gateway: "10.244.1.1".parse().unwrap(),
        mtu: 1400,
        routes: vec![
            api::Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.244.1.1".parse().unwrap()),
            },
            api::Route {
                dst: "198.51.100.0/24".parse().unwrap(),
                gw: None,
            },
        ],
        userspace_datapath: userspace,
    }
}

fn ok_line(net: Option<api::PodNetwork>) -> String {
    let mut line = serde_json::to_string(&api::Reply::Ok(net)).unwrap();
    line.push('\n');
    line
}

fn add_vars<'a>(container: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", ARGS),
    ]
}

fn with_command<'a>(vars: &[(&'a str, &'a str)], command: &'a str) -> Vec<(&'a str, &'a str)> {
    vars.iter()
        .map(|&(k, v)| {
            if k == "CNI_COMMAND" {
                (k, command)
            } else {
                (k, v)
            }
        })
        .collect()
}

#[test]
fn cni_version_lists_supported_versions() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let out = shim(
        &node,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.1.0"}"#,
    );
    out.expect_success();
    let json = out.json();
    assert_eq!(json["cniVersion"], "1.1.0");
    assert_eq!(
        json["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn cni_malformed_stdin_is_a_decode_error() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let pod = Netns::new("pod");
    let path = pod.path();
    let vars = add_vars("c1", path.to_str().unwrap());
    let err = shim(&node, &vars, "{\"cniVersion\": ").expect_error(6);
    assert_eq!(err["msg"], "malformed network configuration");
    let err = shim(&node, &vars, "").expect_error(6);
    assert!(
        err["details"].as_str().unwrap().contains("stdin is empty"),
        "{err}"
    );
    let err = shim(&node, &vars, "[1,2]").expect_error(6);
    assert!(
        err["details"].as_str().unwrap().contains("JSON object"),
        "{err}"
    );
    // Valid JSON, but not a configuration we can use: invalid network config (7), naming the field.
    let err = shim(
        &node,
        &vars,
        r#"{"cniVersion":"1.1.0","name":"n","type":"switchyard-cni"}"#,
    )
    .expect_error(7);
    assert!(
        err["details"].as_str().unwrap().contains("controller"),
        "{err}"
    );
    let err = shim(&node, &vars, &conf("http://controller")).expect_error(7);
    assert!(
        err["details"].as_str().unwrap().contains("unix:PATH"),
        "{err}"
    );
    assert!(
        links(&node).is_empty(),
        "a failed ADD left {:?}",
        links(&node)
    );
}

#[test]
fn cni_missing_variables_are_named() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let pod = Netns::new("pod");
    let path = pod.path();
    let vars = add_vars("c1", path.to_str().unwrap());
    for missing in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let without: Vec<_> = vars
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let err = shim(&node, &without, &conf(&dead_controller())).expect_error(4);
        assert!(
            err["details"].as_str().unwrap().contains(missing),
            "{missing}: {err}"
        );
    }
    let mut bad_ifname = vars.clone();
    bad_ifname[3] = ("CNI_IFNAME", "this-name-is-too-long");
    let err = shim(&node, &bad_ifname, &conf(&dead_controller())).expect_error(4);
    assert!(
        err["details"].as_str().unwrap().contains("CNI_IFNAME"),
        "{err}"
    );
    let mut no_pod = vars.clone();
    no_pod[4] = ("CNI_ARGS", "K8S_POD_NAMESPACE=default");
    let err = shim(&node, &no_pod, &conf(&dead_controller())).expect_error(4);
    assert!(
        err["details"].as_str().unwrap().contains("K8S_POD_NAME"),
        "{err}"
    );
    let err = shim(&node, &[("CNI_COMMAND", "FROB")], "{}").expect_error(4);
    assert!(err["details"].as_str().unwrap().contains("FROB"), "{err}");
}

#[test]
fn cni_unsupported_version_is_incompatible() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let pod = Netns::new("pod");
    let path = pod.path();
    let vars = add_vars("c1", path.to_str().unwrap());
    let err = shim(
        &node,
        &vars,
        &conf(&dead_controller()).replace("1.1.0", "0.2.0"),
    )
    .expect_error(1);
    assert!(err["details"].as_str().unwrap().contains("0.2.0"), "{err}");
    // GC and STATUS exist since 1.1.0 only.
    let err = shim(
        &node,
        &[("CNI_COMMAND", "STATUS")],
        &conf(&dead_controller()).replace("1.1.0", "1.0.0"),
    )
    .expect_error(1);
    assert!(err["details"].as_str().unwrap().contains("1.1.0"), "{err}");
}

#[test]
fn cni_add_into_a_missing_netns_fails_and_leaves_nothing() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let vars = add_vars("c1", "/run/netns/switchyard-no-such-ns");
    let err = shim(&node, &vars, &conf(&dead_controller())).expect_error(100);
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains("/run/netns/switchyard-no-such-ns"),
        "{err}"
    );
    assert!(links(&node).is_empty(), "left behind: {:?}", links(&node));
}

#[test]
fn cni_add_with_unreachable_controller_fails_and_leaves_nothing() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let pod = Netns::new("pod");
    let path = pod.path();
    let vars = add_vars("c1", path.to_str().unwrap());
    let err = shim(&node, &vars, &conf(&dead_controller())).expect_error(11);
    assert_eq!(err["msg"], "controller unreachable");
    assert!(
        err["details"].as_str().unwrap().contains("cni.sock"),
        "{err}"
    );
    assert!(links(&node).is_empty(), "node kept {:?}", links(&node));
    assert!(links(&pod).is_empty(), "pod kept {:?}", links(&pod));
}

#[test]
fn cni_del_succeeds_when_everything_is_already_gone() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let controller = Responder::start(|_| ok_line(None));
    let vars = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/switchyard-no-such-ns"),
        ("CNI_IFNAME", "eth0"),
    ];
    let out = shim(&node, &vars, &conf(&controller.address));
    out.expect_success();
    assert_eq!(out.stdout, "", "DEL prints nothing on success");
    // Without CNI_NETNS too (CNI SPEC.md allows it on DEL).
    shim(
        &node,
        &vars[..2]
            .iter()
            .chain(&vars[3..])
            .copied()
            .collect::<Vec<_>>(),
        &conf(&controller.address),
    )
    .expect_success();
}

#[test]
fn cni_del_that_cannot_reach_the_controller_fails_so_the_runtime_retries() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let pod = Netns::new("pod");
    let path = pod.path();
    let vars = add_vars("gone1", path.to_str().unwrap());
    let controller = Responder::start(|req| match req {
        Request::Add(_) => ok_line(Some(pod_network(8, false))),
        _ => ok_line(None),
    });
    let address = controller.address.clone();
    shim(&node, &vars, &conf(&address)).expect_success();
    assert_eq!(links(&pod), vec!["eth0".to_owned()]);
    drop(controller);
    // The controller never heard of this DEL: try again later (11), but the veth is gone.
    let err = shim(&node, &with_command(&vars, "DEL"), &conf(&address)).expect_error(11);
    assert!(
        err["details"].as_str().unwrap().contains("cni.sock"),
        "{err}"
    );
    assert!(links(&node).is_empty(), "node kept {:?}", links(&node));
    assert!(links(&pod).is_empty(), "pod kept {:?}", links(&pod));
    // The runtime's retry succeeds once the controller is back.
    let back = Responder::start(|_| ok_line(None));
    shim(&node, &with_command(&vars, "DEL"), &conf(&back.address)).expect_success();
    assert!(matches!(back.requests()[..], [Request::Del(_)]));
}

#[test]
fn cni_status_without_controller_is_plugin_not_available() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let err = shim(
        &node,
        &[("CNI_COMMAND", "STATUS")],
        &conf(&dead_controller()),
    )
    .expect_error(50);
    assert_eq!(err["msg"], "plugin not available");
    let ready = Responder::start(|_| ok_line(None));
    let out = shim(&node, &[("CNI_COMMAND", "STATUS")], &conf(&ready.address));
    out.expect_success();
    assert!(matches!(ready.requests()[..], [Request::Status { .. }]));
    let busy = Responder::start(|_| {
        "{\"error\":{\"code\":11,\"msg\":\"not synced\",\"details\":\"node not in cluster state\"}}\n"
            .into()
    });
    let err = shim(&node, &[("CNI_COMMAND", "STATUS")], &conf(&busy.address)).expect_error(50);
    assert!(
        err["details"].as_str().unwrap().contains("not synced"),
        "{err}"
    );
}

#[test]
fn cni_gc_removes_only_stale_veths_of_ours() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let keep = api::host_iface_name("keep1", "eth0");
    let stale = api::host_iface_name("stale1", "eth0");
    for (name, peer) in [
        (&keep, "p1"),
        (&stale, "p2"),
        (&"vethother".to_owned(), "p3"),
    ] {
        node.exec(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
        ]);
    }
    let controller = Responder::start(|_| ok_line(None));
    let mut gc = serde_json::from_str::<Value>(&conf(&controller.address)).unwrap();
    gc["nodeName"] = "node-7".into();
    gc["cni.dev/valid-attachments"] = serde_json::json!([
        {"containerID": "keep1", "ifname": "eth0"},
        {"containerID": "other", "ifname": "net1"},
    ]);
    let out = shim(&node, &[("CNI_COMMAND", "GC")], &gc.to_string());
    out.expect_success();
    let left = links(&node);
    assert!(left.contains(&keep), "valid attachment removed: {left:?}");
    assert!(!left.contains(&stale), "stale veth kept: {left:?}");
    assert!(
        left.contains(&"vethother".to_owned()),
        "foreign veth removed: {left:?}"
    );
    // The controller is told which node and what to keep.
    let Some(Request::Gc { node: asked, valid }) = controller.requests().pop() else {
        panic!("controller got {:?}", controller.requests())
    };
    assert_eq!(asked, "node-7");
    assert_eq!(valid.len(), 2);
    assert_eq!(valid[0].container_id, "keep1");
    // GC without the list is an invalid configuration, not a wipe.
    shim(&node, &[("CNI_COMMAND", "GC")], &conf(&controller.address)).expect_error(7);
    assert!(links(&node).contains(&keep));
    // A GC the controller did not hear of fails (the runtime retries it).
    gc["controller"] = dead_controller().into();
    shim(&node, &[("CNI_COMMAND", "GC")], &gc.to_string()).expect_error(11);
}

/// Reads `ethtool -k` in `ns` and returns the `tx-checksumming` line.
fn tx_checksumming(ns: &Netns, iface: &str) -> String {
    ns.exec(&["ethtool", "-k", iface])
        .lines()
        .find(|l| l.starts_with("tx-checksumming:"))
        .unwrap_or("tx-checksumming: (missing)")
        .to_owned()
}

#[test]
fn cni_add_configures_both_veth_ends_as_the_controller_says() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let pod = Netns::new("pod");
    let path = pod.path();
    let path = path.to_str().unwrap();
    let net = pod_network(5, true);
    let reply = net.clone();
    let controller = Responder::start(move |req| match req {
        Request::Add(_) | Request::Check(_) => ok_line(Some(reply.clone())),
        _ => ok_line(None),
    });
    let vars = add_vars("c0ffee", path);
    let out = shim(&node, &vars, &conf(&controller.address));
    out.expect_success();
    let host = api::host_iface_name("c0ffee", "eth0");

    // The result a runtime stores.
    let result = out.json();
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(result["interfaces"][0]["name"], host.as_str());
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(result["interfaces"][1]["mac"], "0a:58:0a:f4:01:05");
    assert_eq!(result["interfaces"][1]["sandbox"], path);
    assert_eq!(result["ips"][0]["address"], "10.244.1.5/24");
    assert_eq!(result["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(result["dns"], serde_json::json!({}));

    // What the controller was told.
    let requests = controller.requests();
    let Some(Request::Add(pod_ref)) = requests.first() else {
        panic!("controller got {requests:?}")
    };
    assert_eq!(
        (
            pod_ref.namespace.as_str(),
            pod_ref.pod.as_str(),
            pod_ref.host_iface.as_str()
        ),
        ("default", "web-0", host.as_str())
    );
    assert_eq!(pod_ref.netns, path);

    // The pod end, as `ip` shows it.
    let link = pod.exec(&["ip", "-j", "link", "show", "eth0"]);
    let link: Value = serde_json::from_str(&link).unwrap();
    assert_eq!(link[0]["address"], "0a:58:0a:f4:01:05");
    assert_eq!(link[0]["mtu"], 1400);
    assert_eq!(link[0]["operstate"], "UP");
    let addr = pod.exec(&["ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains("inet 10.244.1.5/24"), "{addr}");
    let routes = pod.exec(&["ip", "route", "show"]);
    assert!(
        routes.contains("default via 10.244.1.1 dev eth0"),
        "{routes}"
    );
    assert!(routes.contains("198.51.100.0/24 dev eth0"), "{routes}");
    assert_eq!(tx_checksumming(&pod, "eth0"), "tx-checksumming: off");

    // The host end.
    let link = node.exec(&["ip", "-j", "link", "show", &host]);
    let link: Value = serde_json::from_str(&link).unwrap();
    assert_eq!(link[0]["mtu"], 1400);
    assert!(
        link[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"),
        "{link}"
    );
    assert_eq!(tx_checksumming(&node, &host), "tx-checksumming: off");
    // No IPv6 on the host end (an OVS port, not an IP interface): no link-local address, so
    // no per-port routes that ovs-vswitchd would re-read at every change (where the kernel
    // has IPv6 at all).
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        let sysctl = format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6");
        assert_eq!(node.exec(&["cat", &sysctl]).trim(), "1");
        let v6 = node.exec(&["ip", "-6", "-o", "addr", "show", "dev", &host]);
        assert!(v6.trim().is_empty(), "host end has IPv6 addresses: {v6}");
    }

    // CHECK agrees, then notices a changed MAC.
    let mut check = with_command(&vars, "CHECK");
    let mut with_prev = serde_json::from_str::<Value>(&conf(&controller.address)).unwrap();
    with_prev["prevResult"] = result.clone();
    shim(&node, &check, &with_prev.to_string()).expect_success();
    pod.exec(&["ip", "link", "set", "eth0", "address", "0a:58:0a:f4:01:99"]);
    let err = shim(&node, &check, &with_prev.to_string()).expect_error(103);
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains("0a:58:0a:f4:01:99"),
        "{err}"
    );

    // DEL removes both ends and tells the controller.
    check = with_command(&vars, "DEL");
    shim(&node, &check, &conf(&controller.address)).expect_success();
    assert!(links(&node).is_empty(), "node kept {:?}", links(&node));
    assert!(links(&pod).is_empty(), "pod kept {:?}", links(&pod));
    assert!(
        matches!(controller.requests().last(), Some(Request::Del(p)) if p.container_id == "c0ffee"),
        "{:?}",
        controller.requests()
    );
    // And a second DEL is fine.
    shim(&node, &check, &conf(&controller.address)).expect_success();
}

#[test]
fn cni_add_replaces_a_leftover_host_veth_of_the_same_attachment() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let pod = Netns::new("pod");
    let path = pod.path();
    let host = api::host_iface_name("retry1", "eth0");
    node.exec(&[
        "ip", "link", "add", &host, "type", "veth", "peer", "name", "stale0",
    ]);
    let controller = Responder::start(|req| match req {
        Request::Add(_) => ok_line(Some(pod_network(9, false))),
        _ => ok_line(None),
    });
    shim(
        &node,
        &add_vars("retry1", path.to_str().unwrap()),
        &conf(&controller.address),
    )
    .expect_success();
    assert_eq!(
        links(&node),
        vec![host],
        "the leftover's peer must be gone with it"
    );
    assert_eq!(links(&pod), vec!["eth0".to_owned()]);
    // Without the userspace datapath, offload is left as the kernel set it.
    assert_eq!(tx_checksumming(&pod, "eth0"), "tx-checksumming: on");
}

#[test]
fn cni_add_for_an_unknown_pod_fails_with_the_controllers_error_and_undoes() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let pod = Netns::new("pod");
    let path = pod.path();
    let controller = Responder::start(|req| match req {
        Request::Add(p) => format!(
            "{{\"error\":{{\"code\":110,\"msg\":\"unknown pod\",\"details\":\"{}/{} is not in the cluster state\"}}}}\n",
            p.namespace, p.pod
        ),
        _ => ok_line(None),
    });
    let err = shim(
        &node,
        &add_vars("c1", path.to_str().unwrap()),
        &conf(&controller.address),
    )
    .expect_error(110);
    assert_eq!(err["msg"], "unknown pod");
    assert!(
        err["details"].as_str().unwrap().contains("default/web-0"),
        "{err}"
    );
    assert!(links(&node).is_empty(), "node kept {:?}", links(&node));
    assert!(links(&pod).is_empty(), "pod kept {:?}", links(&pod));
    assert!(
        matches!(
            controller.requests()[..],
            [Request::Add(_), Request::Del(_)]
        ),
        "{:?}",
        controller.requests()
    );
}

#[test]
fn cni_add_with_a_misbehaving_controller_fails_and_undoes() {
    switchyard_tests::skip_unless_root!();
    let node = Netns::new("nod");
    let pod = Netns::new("pod");
    let path = pod.path();
    let vars = add_vars("c1", path.to_str().unwrap());
    for (answer, expect) in [
        ("this is not json\n", "invalid reply"),
        ("{\"ok\":{\"address\"", "closed the connection"),
        ("{\"ok\":null}\n", "without a pod network"),
    ] {
        let controller = Responder::start(move |_| answer.to_owned());
        let err = shim(&node, &vars, &conf(&controller.address)).expect_error(102);
        assert!(
            err["details"].as_str().unwrap().contains(expect),
            "{expect}: {err}"
        );
        assert!(links(&node).is_empty(), "node kept {:?}", links(&node));
        assert!(links(&pod).is_empty(), "pod kept {:?}", links(&pod));
    }
    // A MAC the kernel cannot take is the controller's fault, and still undone.
    let mut bad = pod_network(7, false);
    bad.mac = "not-a-mac".into();
    let controller = Responder::start(move |_| ok_line(Some(bad.clone())));
    let err = shim(&node, &vars, &conf(&controller.address)).expect_error(102);
    assert!(
        err["details"].as_str().unwrap().contains("not-a-mac"),
        "{err}"
    );
    assert!(links(&node).is_empty(), "node kept {:?}", links(&node));
}

/// A process the test started (`ip netns exec` execs it in place, so this is its PID), killed
/// by that PID if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Two pods attached by the shim to a real userspace OVS bridge (the responder plays the
/// controller's part of `ovs-vsctl add-port`): a TCP exchange crosses it, which the
/// userspace datapath only allows once tx checksum offload is off on the veths (with
/// `userspace_datapath: false` in the reply, the same test's connect times out: seen on OVS
/// 3.1).
#[test]
fn cni_attached_pods_talk_tcp_through_userspace_ovs() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br-int");
    ovs.ofctl("add-flow", "br-int", &["actions=NORMAL"]);
    let db = ovs.db_target();
    let controller = Responder::start(move |req| match req {
        Request::Add(p) => {
            let octet = if p.container_id == "podA" { 10 } else { 11 };
            run_output(
                "ovs-vsctl",
                &[
                    &format!("--db={db}"),
                    "--may-exist",
                    "add-port",
                    "br-int",
                    &p.host_iface,
                ],
            );
            ok_line(Some(pod_network(octet, true)))
        }
        _ => ok_line(None),
    });
    let pod_a = Netns::new("pda");
    let pod_b = Netns::new("pdb");
    for (id, pod) in [("podA", &pod_a), ("podB", &pod_b)] {
        let path = pod.path();
        shim(
            &ovs.netns,
            &add_vars(id, path.to_str().unwrap()),
            &conf(&controller.address),
        )
        .expect_success();
    }
    let server = Command::new("ip")
        .args(["netns", "exec", pod_b.name(), "python3", "-c"])
        .arg(
            "import socket\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('10.244.1.11', 7777)); s.listen(1); print('listening', flush=True)\n\
             c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()\n",
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the TCP server in pod B");
    let mut server = KillOnDrop(server);
    let mut ready = String::new();
    if let Some(out) = server.0.stdout.take() {
        BufReader::new(out)
            .read_line(&mut ready)
            .expect("server output");
    }
    assert_eq!(ready.trim(), "listening");
    let reply = pod_a.exec(&[
        "python3",
        "-c",
        "import socket\n\
         s = socket.create_connection(('10.244.1.11', 7777), timeout=10)\n\
         s.sendall(b'through ovs'); print(s.recv(100).decode())\n",
    ]);
    let _ = server.0.wait();
    assert_eq!(reply.trim(), "THROUGH OVS");
    let ports = ovs.vsctl(&["list-ports", "br-int"]);
    assert!(
        ports.contains(&api::host_iface_name("podA", "eth0")),
        "{ports}"
    );
}

// ---- Against the real controller: one node, its own OVS, the cluster file as the source.

use std::time::{Duration, Instant};
use switchyard_tests::cni_node::{CniNode, ShimOutput};

fn pod_ip(result: &Value) -> std::net::Ipv4Addr {
    let address = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    address
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("bad address in {result}"))
}

fn expect_ok(out: &ShimOutput, what: &str) {
    assert!(
        out.success,
        "{what}: {} (stderr: {})",
        out.stdout, out.stderr
    );
}

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

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    assert!(
        switchyard_tests::wait_for(Duration::from_secs(10), &mut done).is_some(),
        "never happened: {what}"
    );
}

#[test]
fn cni_add_again_for_the_same_container_changes_nothing_and_check_agrees() {
    switchyard_tests::skip_unless_root!();
    let node = CniNode::start(&[("default", "web-0")]);
    let pod = node.pod_netns();
    let netns = pod.path().display().to_string();
    let first = node.shim_run("ADD", "default/web-0", "c-idem", &netns, &[]);
    expect_ok(&first, "first ADD");
    let index_before = pod.exec(&["cat", "/sys/class/net/eth0/ifindex"]);
    let second = node.shim_run("ADD", "default/web-0", "c-idem", &netns, &[]);
    expect_ok(&second, "second ADD");
    assert_eq!(
        first.json(),
        second.json(),
        "ADD again must give the same result"
    );
    assert_eq!(
        pod.exec(&["cat", "/sys/class/net/eth0/ifindex"]),
        index_before,
        "ADD again must keep the pod's interface"
    );
    let host = api::host_iface_name("c-idem", "eth0");
    assert_eq!(node.ports(), vec![host.clone()]);
    assert_eq!(node.veths(), vec![host.clone()]);
    let ip = pod_ip(&first.json());
    assert_eq!(
        node.flows_with_cookie(switchyard::ids::pod_cookie(ip))
            .len(),
        7
    );
    // The port was created at the number its flows use already.
    let ofport = node.vsctl(&["get", "Interface", &host, "ofport"]);
    let requested = node.vsctl(&["get", "Interface", &host, "ofport_request"]);
    assert_eq!(ofport.trim(), requested.trim());
    let prev = [("prevResult", first.json())];
    expect_ok(
        &node.shim_run("CHECK", "default/web-0", "c-idem", &netns, &prev),
        "CHECK",
    );
}

#[test]
fn cni_check_reports_a_missing_address_port_or_switch() {
    switchyard_tests::skip_unless_root!();
    let node = CniNode::start(&[("default", "web-0")]);
    let pod = node.pod_netns();
    let netns = pod.path().display().to_string();
    let add = node.shim_run("ADD", "default/web-0", "c-check", &netns, &[]);
    expect_ok(&add, "ADD");
    let prev = [("prevResult", add.json())];
    let check = || node.shim_run("CHECK", "default/web-0", "c-check", &netns, &prev);
    expect_ok(&check(), "CHECK of a healthy pod");

    // The address.
    let address = add.json()["ips"][0]["address"].as_str().unwrap().to_owned();
    pod.exec(&["ip", "addr", "del", &address, "dev", "eth0"]);
    let err = expect_code(&check(), 103, "CHECK without the address");
    assert!(
        err["details"].as_str().unwrap().contains("missing"),
        "{err}"
    );
    // ADD again repairs it.
    expect_ok(
        &node.shim_run("ADD", "default/web-0", "c-check", &netns, &[]),
        "ADD again",
    );
    expect_ok(&check(), "CHECK after ADD again");

    // The port: its veth is gone, so vswitchd cannot have it on br-int.
    let host = api::host_iface_name("c-check", "eth0");
    node.ovs.netns.exec(&["ip", "link", "del", &host]);
    let mut last = None;
    eventually("CHECK notices the port vswitchd lost", || {
        let out = check();
        let failed = out.code() == Some(114);
        last = Some(out);
        failed
    });
    let err = last.unwrap().json();
    assert!(err["details"].as_str().unwrap().contains(&host), "{err}");

    // The switch: with vswitchd gone nothing holds the pod's flows.
    expect_ok(
        &node.shim_run("ADD", "default/web-0", "c-check", &netns, &[]),
        "ADD after the veth was lost",
    );
    expect_ok(&check(), "CHECK after the re-ADD");
    node.ovs.stop_vswitchd();
    let mut last = None;
    eventually("CHECK notices the switch is gone", || {
        let out = check();
        let failed = out.code() == Some(114);
        last = Some(out);
        failed
    });
    let err = last.unwrap().json();
    assert!(err["details"].as_str().unwrap().contains("br-int"), "{err}");
}

#[test]
fn cni_del_is_idempotent_and_removes_port_flows_and_veth() {
    switchyard_tests::skip_unless_root!();
    let node = CniNode::start(&[("default", "web-0"), ("default", "web-1")]);
    let pod = node.pod_netns();
    let netns = pod.path().display().to_string();
    let add = node.shim_run("ADD", "default/web-0", "c-del", &netns, &[]);
    expect_ok(&add, "ADD");
    let cookie = switchyard::ids::pod_cookie(pod_ip(&add.json()));
    for round in 0..2 {
        let out = node.shim_run("DEL", "default/web-0", "c-del", &netns, &[]);
        expect_ok(&out, &format!("DEL #{round}"));
        assert!(node.ports().is_empty(), "ports: {:?}", node.ports());
        assert!(node.veths().is_empty(), "veths: {:?}", node.veths());
    }
    eventually("the pod's flows are gone", || {
        node.flows_with_cookie(cookie).is_empty()
    });
    // A DEL without the pod's identity (no CNI_ARGS) still finds it by container id.
    let pod1 = node.pod_netns();
    let netns1 = pod1.path().display().to_string();
    expect_ok(
        &node.shim_run("ADD", "default/web-1", "c-del1", &netns1, &[]),
        "ADD web-1",
    );
    expect_ok(
        &node.shim_run("DEL", "", "c-del1", "", &[]),
        "DEL without CNI_ARGS",
    );
    assert!(node.ports().is_empty(), "ports: {:?}", node.ports());
}

#[test]
fn cni_del_the_controller_missed_fails_and_its_retry_removes_the_port() {
    switchyard_tests::skip_unless_root!();
    let mut node = CniNode::start(&[("default", "web-0")]);
    let pod = node.pod_netns();
    let netns = pod.path().display().to_string();
    expect_ok(
        &node.shim_run("ADD", "default/web-0", "c-miss", &netns, &[]),
        "ADD",
    );
    node.stop_controller();
    let out = node.shim_run("DEL", "default/web-0", "c-miss", &netns, &[]);
    expect_code(&out, 11, "DEL with the controller down");
    assert!(node.veths().is_empty(), "the veth goes anyway");
    // The attachment survives in OVSDB, so a restarted controller takes it back ...
    node.start_controller();
    assert_eq!(node.ports().len(), 1);
    // ... until the runtime's retry of the DEL reaches it.
    expect_ok(
        &node.shim_run("DEL", "default/web-0", "c-miss", &netns, &[]),
        "DEL retried",
    );
    assert!(node.ports().is_empty(), "ports: {:?}", node.ports());
}

#[test]
fn cni_gc_removes_every_attachment_of_the_node_the_runtime_does_not_list() {
    switchyard_tests::skip_unless_root!();
    let node = CniNode::start(&[
        ("default", "keep"),
        ("default", "leak"),
        ("default", "stale"),
    ]);
    let mut netns = Vec::new();
    for (pod, container) in [("keep", "c-keep"), ("leak", "c-leak"), ("stale", "c-stale")] {
        let ns = node.pod_netns();
        let out = node.shim_run(
            "ADD",
            &format!("default/{pod}"),
            container,
            &ns.path().display().to_string(),
            &[],
        );
        expect_ok(&out, pod);
        netns.push(ns);
    }
    // "leak" lost its veth without a DEL reaching the controller.
    node.ovs
        .netns
        .exec(&["ip", "link", "del", &api::host_iface_name("c-leak", "eth0")]);
    let valid = serde_json::json!([{"containerID": "c-keep", "ifname": "eth0"}]);
    let out = node.shim_run("GC", "", "", "", &[("cni.dev/valid-attachments", valid)]);
    expect_ok(&out, "GC");
    let keep = api::host_iface_name("c-keep", "eth0");
    assert_eq!(node.ports(), vec![keep.clone()]);
    assert_eq!(node.veths(), vec![keep]);
    // GC for a node the controller does not know is an error naming it.
    let out = node.shim_run(
        "GC",
        "",
        "",
        "",
        &[
            ("cni.dev/valid-attachments", serde_json::json!([])),
            ("nodeName", "no-such-node".into()),
        ],
    );
    let err = expect_code(&out, 116, "GC for an unknown node");
    assert!(
        err["details"].as_str().unwrap().contains("no-such-node"),
        "{err}"
    );
    assert_eq!(
        node.ports().len(),
        1,
        "an unknown node's GC touches nothing"
    );
}

#[test]
fn cni_add_for_a_pod_the_source_lacks_fails_fast_and_leaves_nothing() {
    switchyard_tests::skip_unless_root!();
    let node = CniNode::start(&[("default", "web-0")]);
    let pod = node.pod_netns();
    let netns = pod.path().display().to_string();
    let started = Instant::now();
    let out = node.shim_run("ADD", "default/nobody", "c-none", &netns, &[]);
    let took = started.elapsed();
    let err = expect_code(&out, 110, "ADD of an unknown pod");
    assert!(
        err["details"].as_str().unwrap().contains("default/nobody"),
        "{err}"
    );
    // The controller's timeout is 10 s; the source's answer is immediate.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(node.veths().is_empty() && node.ports().is_empty());
}
