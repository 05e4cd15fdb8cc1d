//! Flow monitors against a real ovs-vswitchd (userspace datapath, in its own network
//! namespace `fm-...`, sockets and database in a temporary directory): changes an
//! operator makes with `ovs-ofctl` arrive on the connection's event channel in full;
//! changes the connection makes itself (without NXFMF_OWN) only as one abbreviated
//! update per flow-mod, naming its xid. Skips (with a message) unless run as root with Open
//! vSwitch installed. Everything started is stopped by PID from its pidfile.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use openflow::message::flow_monitor::flags;
use openflow::*;

static SEQ: AtomicU32 = AtomicU32::new(0);

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    if euid.as_deref() != Some("0") {
        return Some("not root (network namespaces and ovs-vswitchd need it)".into());
    }
    if !Path::new("/usr/sbin/ovs-vswitchd").exists() || !Path::new(SCHEMA).exists() {
        return Some("Open vSwitch is not installed (no /usr/sbin/ovs-vswitchd)".into());
    }
    for tool in ["ovsdb-server", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl", "ip"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// ovsdb-server + ovs-vswitchd in namespace `fm-<pid>-<n>`, state in a temp dir.
struct Sandbox {
    netns: String,
    dir: PathBuf,
}

impl Sandbox {
    fn start() -> Sandbox {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("fm-monitor-{id}"));
        std::fs::create_dir(&dir).expect("create a fresh sandbox directory");
        let netns = format!("fm-{id}");
        run("ip", &["netns", "add", &netns]);
        let sb = Sandbox { netns, dir };
        sb.exec(&["ip", "link", "set", "lo", "up"]);
        let d = sb.d();
        run("ovsdb-tool", &["create", &format!("{d}/conf.db"), SCHEMA]);
        sb.exec(&[
            "ovsdb-server",
            "--detach",
            "--no-chdir",
            &format!("--pidfile={d}/ovsdb-server.pid"),
            &format!("--log-file={d}/ovsdb-server.log"),
            &format!("--remote=punix:{d}/db.sock"),
            &format!("--unixctl={d}/ovsdb-server.ctl"),
            &format!("{d}/conf.db"),
        ]);
        sb.vsctl(&["--no-wait", "init"]);
        sb.exec(&[
            "ovs-vswitchd",
            "--detach",
            "--no-chdir",
            &format!("--pidfile={d}/ovs-vswitchd.pid"),
            &format!("--log-file={d}/ovs-vswitchd.log"),
            &format!("--unixctl={d}/ovs-vswitchd.ctl"),
            &format!("unix:{d}/db.sock"),
        ]);
        sb.vsctl(&[
            "--timeout=20",
            "wait-until",
            "Open_vSwitch",
            ".",
            "cur_cfg>=0",
        ]);
        sb
    }

    fn d(&self) -> String {
        self.dir.to_str().expect("utf-8 temp dir").to_owned()
    }

    /// Runs a command in the namespace with OVS's directories pointed at the sandbox.
    fn exec(&self, argv: &[&str]) {
        let d = self.d();
        let env = [
            format!("OVS_RUNDIR={d}"),
            format!("OVS_LOGDIR={d}"),
            format!("OVS_DBDIR={d}"),
            format!("OVS_SYSCONFDIR={d}"),
        ];
        let mut args = vec!["netns", "exec", self.netns.as_str(), "env"];
        args.extend(env.iter().map(String::as_str));
        args.extend_from_slice(argv);
        run("ip", &args);
    }

    fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}/db.sock", self.d());
        let mut all = vec![db.as_str()];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    fn add_bridge(&self, br: &str) -> String {
        self.vsctl(&[
            "add-br",
            br,
            "--",
            "set",
            "Bridge",
            br,
            "datapath_type=netdev",
            "protocols=OpenFlow10,OpenFlow13",
        ]);
        let sock = self.dir.join(format!("{br}.mgmt"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "no management socket {sock:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        format!("unix:{}", sock.display())
    }

    /// `ovs-ofctl -O OpenFlow13 CMD unix:DIR/BR.mgmt ARGS`: another connection.
    fn ofctl(&self, cmd: &str, br: &str, args: &[&str]) -> String {
        let target = format!("unix:{}/{br}.mgmt", self.d());
        let mut all = vec!["-O", "OpenFlow13", cmd, target.as_str()];
        all.extend_from_slice(args);
        run("ovs-ofctl", &all)
    }

    fn stop(&self, daemon: &str) {
        let Ok(text) = std::fs::read_to_string(self.dir.join(format!("{daemon}.pid"))) else {
            return;
        };
        let pid = text.trim();
        if pid.parse::<u32>().is_err() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", pid]).output();
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while proc_dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if proc_dir.exists() {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop("ovs-vswitchd");
        self.stop("ovsdb-server");
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip_dst(addr: Ipv4Addr, prefix: u8) -> Match {
    Match::new()
        .with(MatchField::u16(Field::EthType, 0x0800))
        .unwrap()
        .with(MatchField::ipv4_prefix(Field::Ipv4Dst, addr, prefix))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_changes_are_reported_and_our_own_are_not() {
    if let Some(why) = cannot_run() {
        eprintln!("skipping operator_changes_are_reported_and_our_own_are_not: {why}");
        return;
    }
    let sb = Sandbox::start();
    let target = sb.add_bridge("br0");
    let conn = Connection::connect(&target).await.expect("connect");
    let mut events = conn.take_events().unwrap();

    let req = FlowMonitorRequest::all(
        7,
        flags::ADD | flags::DELETE | flags::MODIFY | flags::ACTIONS,
    );
    let initial = conn.monitor_flows(req).await.expect("monitor accepted");
    assert_eq!(initial, vec![], "no NXFMF_INITIAL: nothing in the reply");

    // Our own add and delete: without NXFMF_OWN, OVS reports each only as an abbreviated
    // update carrying the flow-mod's xid, never in full.
    let own = FlowMod::add(
        5,
        10,
        ip_dst(Ipv4Addr::new(10, 5, 0, 0), 16),
        vec![Instruction::ApplyActions(vec![Action::output(1)])],
    )
    .with_cookie(0x5);
    let own_add = conn.send(&own.into()).expect("send own flow");
    conn.barrier().await.expect("own flow added");

    // The operator's add, modify, delete (another connection).
    sb.ofctl(
        "add-flow",
        "br0",
        &["table=3,priority=77,cookie=0xabc,ip,nw_dst=10.1.0.0/16,actions=output:2"],
    );
    sb.ofctl(
        "mod-flows",
        "br0",
        &["table=3,ip,nw_dst=10.1.0.0/16,actions=output:3"],
    );
    sb.ofctl("del-flows", "br0", &["table=3,ip,nw_dst=10.1.0.0/16"]);

    let own_del = conn
        .send(&FlowMod::delete(5, Match::new()).into())
        .expect("send own delete");
    conn.barrier().await.expect("own flow deleted");
    // A marker: once its update arrives, everything before it has been reported.
    sb.ofctl(
        "add-flow",
        "br0",
        &["table=9,priority=1,cookie=0x9,actions=drop"],
    );

    let mut updates = Vec::new();
    let mut abbrev = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    'collect: loop {
        let msg = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the marker's update within 20 s")
            .expect("event channel open");
        if let Message::MultipartReply(MultipartReply {
            body: MultipartReplyBody::FlowMonitor(v),
            ..
        }) = msg
        {
            for u in v {
                let f = match u {
                    FlowUpdate::Full(f) => f,
                    FlowUpdate::Abbrev { xid } => {
                        abbrev.push(xid);
                        continue;
                    }
                };
                if f.table_id == 9 {
                    assert_eq!((f.event, f.cookie), (FlowUpdateEvent::Added, 0x9));
                    break 'collect;
                }
                updates.push(f);
            }
        }
    }
    let full = |event, reason, port: u32| FlowUpdateFull {
        event,
        reason,
        priority: 77,
        idle_timeout: 0,
        hard_timeout: 0,
        table_id: 3,
        cookie: 0xabc,
        match_: ip_dst(Ipv4Addr::new(10, 1, 0, 0), 16),
        instructions: vec![Instruction::ApplyActions(vec![Action::output(port)])],
    };
    assert_eq!(
        updates,
        vec![
            full(FlowUpdateEvent::Added, 0, 2),
            full(FlowUpdateEvent::Modified, 0, 3),
            // OFPRR_DELETE, with the actions the flow had.
            full(FlowUpdateEvent::Deleted, 2, 3),
        ],
        "exactly the operator's three changes in full, none of ours (table 5)"
    );
    assert_eq!(
        abbrev,
        vec![own_add, own_del],
        "our own changes only as abbreviated updates"
    );

    // Cancelling stops the reports; an unknown id is the switch's error.
    conn.cancel_flow_monitor(7).await.expect("cancel");
    let err = conn.cancel_flow_monitor(7).await.unwrap_err();
    assert!(matches!(err, Error::Switch(_)), "{err}");
    sb.ofctl(
        "add-flow",
        "br0",
        &["table=9,priority=2,cookie=0x10,actions=drop"],
    );
    conn.barrier().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(m) = events.try_recv() {
        assert!(
            !matches!(
                m,
                Message::MultipartReply(MultipartReply {
                    body: MultipartReplyBody::FlowMonitor(_),
                    ..
                })
            ),
            "update after cancel: {m:?}"
        );
    }
}
