//! `yardctl ofctl` against real ovs-vswitchd, with ovs-ofctl as the reference: the same
//! corpus (tests/data/flows-corpus.txt, groups-corpus.txt) installed by each tool must
//! dump identically, our dumps of a switch ovs-ofctl programmed must equal ovs-ofctl's,
//! and a bundle with one bad flow must leave the switch untouched.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use switchyard_tests::{OvsSandbox, require_root};

/// The (flow line, ovs-ofctl dump line) pairs the openflow unit tests compare against.
#[path = "../../openflow/src/text/golden.rs"]
mod golden;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// The yardctl binary of this workspace, built (once per test process) so that the test
/// never runs a stale one. `CARGO_BIN_EXE_*` only covers this package's binaries.
fn yardctl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "switchyard", "--bin", "yardctl"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build for yardctl");
        assert!(status.success(), "building yardctl failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace().join("target"));
        let bin = target.join("debug").join("yardctl");
        assert!(bin.exists(), "no yardctl at {bin:?}");
        bin
    })
}

fn yardctl_output(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(yardctl_bin());
    cmd.arg("ofctl").args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn yardctl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for yardctl")
}

/// Runs `yardctl ofctl ARGS`, panicking with its stderr on failure; returns stdout.
fn yardctl(args: &[&str]) -> String {
    let out = yardctl_output(args, None);
    assert!(
        out.status.success(),
        "yardctl ofctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Flow or group lines of a dump (the lines ovs-ofctl indents), sorted.
fn entries(dump: &str) -> Vec<String> {
    let mut v: Vec<String> = dump
        .lines()
        .filter(|l| l.starts_with(' '))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// Asserts two sorted line lists are equal, reporting only the lines that differ.
fn assert_same(ours: &[String], theirs: &[String], what: &str) {
    let only_ours: Vec<&String> = ours.iter().filter(|l| !theirs.contains(l)).collect();
    let only_theirs: Vec<&String> = theirs.iter().filter(|l| !ours.contains(l)).collect();
    assert!(
        ours == theirs,
        "{what}: {} lines vs ovs-ofctl's {}\nonly ours:\n{}\nonly ovs-ofctl's:\n{}",
        ours.len(),
        theirs.len(),
        only_ours
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        only_theirs
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

/// Drops the `duration=...s, ` field, the only one that differs between two dumps.
fn without_duration(line: &str) -> String {
    match line.find("duration=") {
        Some(start) => {
            let end = line[start..]
                .find(", ")
                .map(|i| start + i + 2)
                .unwrap_or(line.len());
            format!("{}{}", &line[..start], &line[end..])
        }
        None => line.to_owned(),
    }
}

fn add_meter(ovs: &OvsSandbox, bridge: &str) {
    ovs.ofctl(
        "add-meter",
        bridge,
        &["meter=1,pktps,band=type=drop,rate=100"],
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn corpus_installed_by_yardctl_dumps_like_ovs_ofctl() {
    switchyard_tests::skip_unless_root!();
    require_root();
    let ovs = OvsSandbox::start();
    let flows = data("flows-corpus.txt");
    let groups = data("groups-corpus.txt");
    let reference = ovs.add_bridge("brref");
    let plain = ovs.add_bridge("brplain");
    let bundled = ovs.add_bridge("brbundle");
    for br in ["brref", "brplain", "brbundle"] {
        add_meter(&ovs, br);
    }
    ovs.ofctl("add-groups", "brref", &[path_str(&groups)]);
    ovs.ofctl("add-flows", "brref", &[path_str(&flows)]);
    let _ = reference;

    yardctl(&["add-groups", &plain, path_str(&groups)]);
    yardctl(&["add-flows", &plain, path_str(&flows)]);
    yardctl(&["--bundle", "add-groups", &bundled, path_str(&groups)]);
    yardctl(&["--bundle", "add-flows", &bundled, path_str(&flows)]);

    let want_flows = entries(&ovs.ofctl("dump-flows", "brref", &["--no-stats"]));
    let want_groups = entries(&ovs.ofctl("dump-groups", "brref", &[]));
    assert!(want_flows.len() > 100, "reference bridge has the corpus");
    for br in ["brplain", "brbundle"] {
        let got = entries(&ovs.ofctl("dump-flows", br, &["--no-stats"]));
        assert_eq!(
            got, want_flows,
            "flows on {br} differ from the ovs-ofctl bridge"
        );
        let got = entries(&ovs.ofctl("dump-groups", br, &[]));
        assert_eq!(
            got, want_groups,
            "groups on {br} differ from the ovs-ofctl bridge"
        );
    }
}

#[test]
fn yardctl_dumps_equal_ovs_ofctl_dumps() {
    switchyard_tests::skip_unless_root!();
    require_root();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    add_meter(&ovs, "br0");
    ovs.ofctl("add-groups", "br0", &[path_str(&data("groups-corpus.txt"))]);
    ovs.ofctl("add-flows", "br0", &[path_str(&data("flows-corpus.txt"))]);

    // --no-stats: byte for byte, in the switch's order.
    let ours = yardctl(&["dump-flows", &target, "--no-stats"]);
    let theirs = ovs.ofctl("dump-flows", "br0", &["--no-stats"]);
    assert_eq!(ours, theirs);

    // With statistics: equal but for durations and the reply headers' xids.
    let strip = |dump: &str| -> Vec<String> {
        let mut v: Vec<String> = dump
            .lines()
            .filter(|l| l.starts_with(' '))
            .map(without_duration)
            .collect();
        v.sort();
        v
    };
    assert_same(
        &strip(&yardctl(&["dump-flows", &target])),
        &strip(&ovs.ofctl("dump-flows", "br0", &[])),
        "dump-flows with statistics",
    );

    // Filters.
    for filter in [
        "table=30",
        "cookie=0x1234/-1",
        "table=10,tcp",
        "ip,nw_dst=10.96.0.0/16",
        "reg0=0x1/0xf",
    ] {
        let ours = yardctl(&["dump-flows", &target, filter, "--no-stats"]);
        let theirs = ovs.ofctl("dump-flows", "br0", &[filter, "--no-stats"]);
        assert_eq!(ours, theirs, "dump-flows {filter}");
        assert!(
            !entries(&theirs).is_empty(),
            "filter {filter} selects something"
        );
    }

    let ours = entries(&yardctl(&["dump-groups", &target]));
    let theirs = entries(&ovs.ofctl("dump-groups", "br0", &[]));
    assert_same(&ours, &theirs, "dump-groups");
}

#[test]
fn a_bundle_with_one_bad_flow_changes_nothing_and_names_the_line() {
    switchyard_tests::skip_unless_root!();
    require_root();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    ovs.ofctl("add-flow", "br0", &["table=5,priority=1,actions=drop"]);
    let before = ovs.ofctl("dump-flows", "br0", &["--no-stats"]);
    let dir = tempfile::tempdir().expect("tempdir");

    // A line the switch rejects (group 99 does not exist): the bundle is not committed.
    let file = dir.path().join("switch-rejects.txt");
    std::fs::write(
        &file,
        "table=1,priority=1,actions=output:1\n# comment\n\ntable=1,priority=2,actions=group:99\ntable=1,priority=3,actions=output:3\n",
    )
    .expect("write flows");
    let out = yardctl_output(&["--bundle", "add-flows", &target, path_str(&file)], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bundle with a bad flow must fail");
    assert!(stderr.contains(":4:"), "error names line 4: {stderr}");
    assert!(
        stderr.contains("OFPBAC_BAD_OUT_GROUP"),
        "error names the switch's reason: {stderr}"
    );
    assert_eq!(ovs.ofctl("dump-flows", "br0", &["--no-stats"]), before);

    // A line we cannot parse: nothing is sent at all.
    let file = dir.path().join("syntax.txt");
    std::fs::write(
        &file,
        "table=1,priority=1,actions=output:1\ntable=1,priority=2,ip,nw_dst=10.0.0.256,actions=drop\n",
    )
    .expect("write flows");
    let out = yardctl_output(&["--bundle", "add-flows", &target, path_str(&file)], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(":2:") && stderr.contains("nw_dst") && stderr.contains("10.0.0.256"),
        "error names line 2, the field and the value: {stderr}"
    );
    assert_eq!(ovs.ofctl("dump-flows", "br0", &["--no-stats"]), before);

    // Large files are parsed in parallel: the error still names the first bad line.
    let mut big = String::new();
    for i in 1..=20_000u32 {
        if i == 12_345 || i == 17_000 {
            big.push_str("table=2,tcp,tp_dst=70000,actions=drop\n");
        } else {
            big.push_str(&format!("table=2,priority=1,reg0={i},actions=drop\n"));
        }
    }
    let file = dir.path().join("big.txt");
    std::fs::write(&file, big).expect("write flows");
    let out = yardctl_output(&["--bundle", "add-flows", &target, path_str(&file)], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(":12345:") && stderr.contains("tp_dst"),
        "{stderr}"
    );
    assert_eq!(ovs.ofctl("dump-flows", "br0", &["--no-stats"]), before);
}

#[test]
fn add_flow_del_flows_and_groups_from_the_command_line() {
    switchyard_tests::skip_unless_root!();
    require_root();
    let ovs = OvsSandbox::start();
    let target = ovs.add_bridge("br0");
    ovs.ofctl("del-flows", "br0", &[]);

    yardctl(&["add-flow", &target, "table=3,priority=7,ip,actions=drop"]);
    let out = yardctl_output(
        &["add-flows", &target, "-"],
        Some(
            "table=4,cookie=0x10,tcp,tp_dst=80,actions=output:1\ntable=4,cookie=0x20,udp,actions=output:2\n",
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        entries(&ovs.ofctl("dump-flows", "br0", &["--no-stats"])),
        vec![
            " cookie=0x10, table=4, tcp,tp_dst=80 actions=output:1".to_owned(),
            " cookie=0x20, table=4, udp actions=output:2".to_owned(),
            " table=3, priority=7,ip actions=drop".to_owned(),
        ]
    );

    yardctl(&["del-flows", &target, "cookie=0x10/-1"]);
    assert_eq!(
        entries(&ovs.ofctl("dump-flows", "br0", &["--no-stats"])).len(),
        2
    );
    yardctl(&["--strict", "del-flows", &target, "table=3,priority=7,ip"]);
    assert_eq!(
        entries(&ovs.ofctl("dump-flows", "br0", &["--no-stats"])).len(),
        1
    );
    yardctl(&["del-flows", &target]);
    assert!(entries(&ovs.ofctl("dump-flows", "br0", &["--no-stats"])).is_empty());

    yardctl(&["add-groups", &target, path_str(&data("groups-corpus.txt"))]);
    assert!(!entries(&ovs.ofctl("dump-groups", "br0", &[])).is_empty());
    yardctl(&["del-groups", &target]);
    assert!(entries(&ovs.ofctl("dump-groups", "br0", &[])).is_empty());

    let out = yardctl_output(
        &["add-flow", &target, "tcp,tp_dst=99999,actions=drop"],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tp_dst") && stderr.contains("99999"),
        "{stderr}"
    );
}

/// The golden pairs the openflow unit tests check our printer against still describe what
/// this ovs-vswitchd does: each line installed alone dumps as recorded.
#[test]
fn golden_dump_lines_match_this_ovs() {
    switchyard_tests::skip_unless_root!();
    require_root();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    add_meter(&ovs, "br0");
    ovs.ofctl("add-groups", "br0", &[path_str(&data("groups-corpus.txt"))]);
    let mut stale = Vec::new();
    for (input, expected) in golden::FLOWS {
        ovs.ofctl("del-flows", "br0", &[]);
        ovs.ofctl("add-flow", "br0", &[input]);
        let got = entries(&ovs.ofctl("dump-flows", "br0", &["--no-stats"]));
        if got != vec![format!(" {expected}")] {
            stale.push(format!("{input}\n  recorded: {expected}\n  now: {got:?}"));
        }
    }
    ovs.ofctl("del-flows", "br0", &[]);
    for (input, expected) in golden::GROUPS {
        ovs.ofctl("del-groups", "br0", &[]);
        ovs.ofctl("add-group", "br0", &[input]);
        let got = entries(&ovs.ofctl("dump-groups", "br0", &[]));
        if got != vec![format!(" {expected}")] {
            stale.push(format!("{input}\n  recorded: {expected}\n  now: {got:?}"));
        }
    }
    assert!(
        stale.is_empty(),
        "openflow/src/text/golden.rs is stale:\n{}",
        stale.join("\n")
    );
}
