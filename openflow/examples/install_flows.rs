//! Installs N flows on a bridge in one atomic bundle and reads them back, printing how
//! long each step took.
//!
//! ```text
//! cargo run --release -p openflow --example install_flows -- unix:/path/br0.mgmt 100000
//! ovs-ofctl -O OpenFlow13 dump-aggregate unix:/path/br0.mgmt table=50
//! ```

use std::net::Ipv4Addr;
use std::time::Instant;

use openflow::*;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let target = args
        .next()
        .unwrap_or_else(|| "unix:/var/run/openvswitch/br0.mgmt".into());
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);

    let conn = Connection::connect(&target).await?;
    println!(
        "connected to {target}, datapath {:016x}",
        conn.datapath_id()
    );

    let flows: Vec<Message> = (0..n)
        .map(|i| {
            let m = Match::new()
                .with(MatchField::u16(Field::EthType, 0x0800))?
                .with(MatchField::ipv4(
                    Field::Ipv4Dst,
                    Ipv4Addr::from(0x0a00_0000 + i),
                ))?;
            Ok(FlowMod::add(
                50,
                100,
                m,
                vec![Instruction::ApplyActions(vec![
                    Action::load(Subfield::whole(Field::Reg(1)), u64::from(i % 100 + 1)),
                    Action::resubmit_table(60),
                ])],
            )
            .with_cookie(0xf10)
            .into())
        })
        .collect::<Result<_>>()?;

    let start = Instant::now();
    conn.bundle(flows).await?;
    println!(
        "bundle of {n} flows committed in {:.3} s",
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let dumped = conn
        .dump_flows(FlowStatsRequest::table(50).with_cookie(0xf10, u64::MAX))
        .await?;
    println!(
        "dumped {} flows back in {:.3} s",
        dumped.len(),
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    conn.apply(&[FlowMod::delete_by_cookie(0xf10, u64::MAX).into()])
        .await?;
    println!(
        "deleted them by cookie in {:.3} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
