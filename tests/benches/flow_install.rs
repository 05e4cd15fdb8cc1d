//! Flow installation: `yardctl ofctl add-flows` against `ovs-ofctl -O OpenFlow13
//! add-flows`, the reference C client, on the same machine in the same run.
//!
//! 100,000 distinct flows shaped like a pod pipeline (several tables; matches on
//! registers, IPv4, TCP and conntrack state; actions load, resubmit, ct, set_field,
//! output) are written to one file. Each tool installs it on its own fresh bridge, once as
//! one atomic bundle (`--bundle`) and once streamed with a barrier at the end. Times are
//! wall clock for the whole command (parse + send + switch work), as an operator sees
//! them. Before timing the result is checked: both bridges must hold the same flows.
//!
//! Run with `cargo bench -p switchyard-tests --bench flow_install` (root: it starts OVS in a
//! network namespace). `FLOW_INSTALL_N=N` changes the number of flows,
//! `FLOW_INSTALL_ROUNDS=R` the number of rounds (median reported, default 3).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_tests::{OvsSandbox, require_root};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds the release yardctl (benchmarks measure optimised code) and returns its path.
fn yardctl_release() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "switchyard",
            "--bin",
            "yardctl",
        ])
        .current_dir(workspace())
        .status()
        .expect("run cargo build --release for yardctl");
    assert!(status.success(), "building yardctl failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"));
    target.join("release").join("yardctl")
}

/// `n` distinct flows over tables 0, 10, 20, 30, 40 (a fifth of them each).
fn generate(n: usize) -> String {
    let mut s = String::with_capacity(n * 110);
    for i in 0..n {
        let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let port = 1 + (i % 200);
        let _ = match i % 5 {
            0 => writeln!(
                s,
                "table=0,priority=100,in_port={port},reg0=0x{i:x},actions=load:0x{:x}->NXM_NX_REG1[0..15],resubmit(,10)",
                i & 0xffff
            ),
            1 => writeln!(
                s,
                "table=10,priority=200,ip,reg1=0x{:x},nw_src={ip},actions=load:0x1->NXM_NX_REG2[0],resubmit(,20)",
                i & 0xffff
            ),
            2 => writeln!(
                s,
                "table=20,priority=150,tcp,nw_dst={ip},tp_dst={},actions=ct(commit,zone={},table=30)",
                80 + (i % 1000),
                i % 65000
            ),
            3 => writeln!(
                s,
                "table=30,priority=100,ct_state=+est+trk,ip,nw_src={ip},actions=set_field:0x{i:x}->reg3,resubmit(,40)"
            ),
            _ => writeln!(
                s,
                "table=40,priority=100,ip,reg3=0x{i:x},nw_dst={ip},actions=mod_dl_dst:0a:58:0a:f4:00:{:02x},output:{port}",
                i & 255
            ),
        };
    }
    s
}

fn timed(what: &str, program: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {program:?}: {e}"));
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn flow_count(ovs: &OvsSandbox, bridge: &str) -> usize {
    ovs.ofctl("dump-flows", bridge, &["--no-stats"])
        .lines()
        .filter(|l| l.starts_with(' '))
        .count()
}

fn main() {
    require_root();
    let n: usize = std::env::var("FLOW_INSTALL_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let yardctl = yardctl_release();
    let ovs_ofctl = PathBuf::from("ovs-ofctl");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("flows.txt");
    std::fs::write(&file, generate(n)).expect("write flow file");
    let file = file.to_str().expect("utf-8 path").to_owned();

    let rounds: usize = std::env::var("FLOW_INSTALL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let ovs = OvsSandbox::start();
    println!(
        "flow_install: {n} flows, {rounds} rounds per tool and mode (median shown), {}",
        ovs_version()
    );
    let mut summary = Vec::new();
    for bundle in [true, false] {
        let mode = if bundle { "--bundle" } else { "streamed" };
        let mut ours_t = Vec::new();
        let mut theirs_t = Vec::new();
        for round in 0..rounds {
            // Fresh, empty bridges every round; the tools take turns going first so that
            // neither always runs on the warmer (or busier) machine.
            let ours_br = format!("by{round}{}", u8::from(bundle));
            let ref_br = format!("bo{round}{}", u8::from(bundle));
            let ours_target = ovs.add_bridge(&ours_br);
            let ref_target = ovs.add_bridge(&ref_br);
            ovs.ofctl("del-flows", &ours_br, &[]);
            ovs.ofctl("del-flows", &ref_br, &[]);

            let mut ref_args = vec!["-O", "OpenFlow13"];
            let mut our_args = vec!["ofctl"];
            if bundle {
                ref_args.push("--bundle");
                our_args.push("--bundle");
            }
            ref_args.extend(["add-flows", ref_target.as_str(), file.as_str()]);
            our_args.extend(["add-flows", ours_target.as_str(), file.as_str()]);

            if round % 2 == 0 {
                theirs_t.push(timed("ovs-ofctl add-flows", &ovs_ofctl, &ref_args));
                ours_t.push(timed("yardctl ofctl add-flows", &yardctl, &our_args));
            } else {
                ours_t.push(timed("yardctl ofctl add-flows", &yardctl, &our_args));
                theirs_t.push(timed("ovs-ofctl add-flows", &ovs_ofctl, &ref_args));
            }
            assert_eq!(
                flow_count(&ovs, &ref_br),
                n,
                "ovs-ofctl installed every flow"
            );
            assert_eq!(
                flow_count(&ovs, &ours_br),
                n,
                "yardctl installed every flow"
            );
            println!(
                "  {mode} round {round}: yardctl {:.3} s, ovs-ofctl {:.3} s",
                ours_t[round].as_secs_f64(),
                theirs_t[round].as_secs_f64()
            );
            ovs.vsctl(&["del-br", &ours_br]);
            ovs.vsctl(&["del-br", &ref_br]);
        }
        let ours = median(&mut ours_t);
        let theirs = median(&mut theirs_t);
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        summary.push(format!(
            "flow_install {mode:>8}: yardctl {:>7.3} s   ovs-ofctl {:>7.3} s   ratio {ratio:.2}x ({} the 0.8x target)",
            ours.as_secs_f64(),
            theirs.as_secs_f64(),
            if ratio <= 0.8 { "meets" } else { "misses" }
        ));
    }
    for line in summary {
        println!("{line}");
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ovs_version() -> String {
    Command::new("ovs-ofctl")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "ovs-ofctl (unknown version)".into())
}
