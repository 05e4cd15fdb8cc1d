//! The sandbox itself works: a bridge comes up, a flow goes in and reads back.

use switchyard_tests::OvsSandbox;

#[test]
fn sandbox_runs_a_bridge_that_takes_flows() {
    switchyard_tests::skip_unless_root!();
    let ovs = OvsSandbox::start();
    ovs.add_bridge("br0");
    ovs.ofctl("add-flow", "br0", &["table=3,priority=7,ip,actions=drop"]);
    let flows = ovs.ofctl("dump-flows", "br0", &["--no-stats"]);
    assert!(
        flows.contains("table=3, priority=7,ip actions=drop"),
        "flow not read back: {flows}"
    );
}
