//! Golden data captured from the real peer: each corpus line (tests/data/*-corpus.txt)
//! installed alone with `ovs-ofctl -O OpenFlow13 add-flow` / `add-group` on ovs-vswitchd
//! 3.1, then read back with `dump-flows --no-stats` / `dump-groups`. The end-to-end test
//! `golden_dump_lines_match_this_ovs` (tests/tests/ofctl_interop.rs) re-checks every pair
//! against the installed OVS, so this file cannot silently go stale.

/// (add-flow line, the line `ovs-ofctl -O OpenFlow13 dump-flows --no-stats` printed for it)
/// captured from ovs-vswitchd 3.1 one flow at a time.
pub(super) const FLOWS: &[(&str, &str)] = &[
    (
        "table=0,priority=100,in_port=1,actions=load:0x1->NXM_NX_REG0[0..15],resubmit(,10)",
        "priority=100,in_port=1 actions=load:0x1->NXM_NX_REG0[0..15],resubmit(,10)",
    ),
    (
        "table=0,priority=90,in_port=2,dl_src=00:11:22:33:44:55,actions=set_field:0x2->reg0,goto_table:10",
        "priority=90,in_port=2,dl_src=00:11:22:33:44:55 actions=set_field:0x2->reg0,goto_table:10",
    ),
    (
        "table=0,priority=80,in_port=LOCAL,actions=set_field:0x3->reg0,goto_table:10",
        "priority=80,in_port=LOCAL actions=set_field:0x3->reg0,goto_table:10",
    ),
    ("table=0,priority=0,actions=drop", "priority=0 actions=drop"),
    (
        "table=0,cookie=0x1000000000000001,priority=70,dl_type=0x88cc,actions=CONTROLLER:128",
        "cookie=0x1000000000000001, priority=70,dl_type=0x88cc actions=CONTROLLER:128",
    ),
    (
        "table=10,priority=200,ip,in_port=3,dl_src=0a:58:0a:f4:00:05,nw_src=10.244.0.5,actions=goto_table:20",
        "table=10, priority=200,ip,in_port=3,dl_src=0a:58:0a:f4:00:05,nw_src=10.244.0.5 actions=goto_table:20",
    ),
    (
        "table=10,priority=200,arp,in_port=3,arp_spa=10.244.0.5,arp_sha=0a:58:0a:f4:00:05,actions=goto_table:20",
        "table=10, priority=200,arp,in_port=3,arp_spa=10.244.0.5,arp_sha=0a:58:0a:f4:00:05 actions=goto_table:20",
    ),
    (
        "table=10,priority=199,arp,arp_op=1,arp_tpa=10.0.0.0/8,arp_tha=00:00:00:00:00:00,actions=NORMAL",
        "table=10, priority=199,arp,arp_tpa=10.0.0.0/8,arp_op=1,arp_tha=00:00:00:00:00:00 actions=NORMAL",
    ),
    (
        "table=10,priority=190,ip,nw_src=10.0.0.0/24,nw_dst=10.1.0.0/255.255.0.0,actions=output:5",
        "table=10, priority=190,ip,nw_src=10.0.0.0/24,nw_dst=10.1.0.0/16 actions=output:5",
    ),
    (
        "table=10,priority=190,tcp,tp_dst=80,actions=output:6",
        "table=10, priority=190,tcp,tp_dst=80 actions=output:6",
    ),
    (
        "table=10,priority=190,tcp,tcp_src=1000,tcp_dst=0x1000/0xf000,actions=output:6",
        "table=10, priority=190,tcp,tp_src=1000,tp_dst=0x1000/0xf000 actions=output:6",
    ),
    (
        "table=10,priority=190,udp,tp_src=53,actions=IN_PORT",
        "table=10, priority=190,udp,tp_src=53 actions=IN_PORT",
    ),
    (
        "table=10,priority=190,udp,nw_dst=224.0.0.0/4,udp_dst=5000,actions=set_field:1234->udp_dst,output:1",
        "table=10, priority=190,udp,nw_dst=224.0.0.0/4,tp_dst=5000 actions=set_field:1234->udp_dst,output:1",
    ),
    (
        "table=10,priority=190,sctp,sctp_dst=9,actions=drop",
        "table=10, priority=190,sctp,tp_dst=9 actions=drop",
    ),
    (
        "table=10,priority=190,icmp,icmp_type=8,icmp_code=0,actions=LOCAL",
        "table=10, priority=190,icmp,icmp_type=8,icmp_code=0 actions=LOCAL",
    ),
    (
        "table=10,priority=185,ip,nw_proto=47,actions=FLOOD",
        "table=10, priority=185,ip,nw_proto=47 actions=FLOOD",
    ),
    (
        "table=10,priority=185,ip,nw_src=1.2.3.4/255.255.0.255,actions=ALL",
        "table=10, priority=185,ip,nw_src=1.2.0.4/255.255.0.255 actions=ALL",
    ),
    (
        "table=10,cookie=0x1234,priority=180,ipv6,ipv6_src=fd00::1,ipv6_dst=fd00::/64,actions=CONTROLLER:65535",
        "cookie=0x1234, table=10, priority=180,ipv6,ipv6_src=fd00::1,ipv6_dst=fd00::/64 actions=CONTROLLER:65535",
    ),
    (
        "table=10,priority=180,ipv6,ipv6_src=fd00::/ffff:0:ffff::,ipv6_label=0x12345,actions=drop",
        "table=10, priority=180,ipv6,ipv6_src=fd00::/ffff:0:ffff::,ipv6_label=0x12345 actions=drop",
    ),
    (
        "table=10,priority=180,tcp6,tp_src=443,actions=controller(reason=no_match,max_len=128,id=5,userdata=01.02)",
        "table=10, priority=180,tcp6,tp_src=443 actions=controller(reason=no_match,max_len=128,id=5,userdata=01.02)",
    ),
    (
        "table=10,priority=180,udp6,udp_src=53,actions=controller(pause)",
        "table=10, priority=180,udp6,tp_src=53 actions=controller(pause)",
    ),
    (
        "table=10,priority=180,icmp6,icmp_type=135,nd_target=fd00::1,actions=controller(reason=invalid_ttl)",
        "table=10, priority=180,icmp6,icmp_type=135,nd_target=fd00::1 actions=controller(reason=invalid_ttl)",
    ),
    (
        "table=10,priority=180,ipv6,actions=set_field:fd00::1->ipv6_dst,output:1",
        "table=10, priority=180,ipv6 actions=set_field:fd00::1->ipv6_dst,output:1",
    ),
    (
        "table=10,priority=170,dl_dst=ff:ff:ff:ff:ff:ff,actions=FLOOD",
        "table=10, priority=170,dl_dst=ff:ff:ff:ff:ff:ff actions=FLOOD",
    ),
    (
        "table=10,priority=170,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=output:1,output:2,output:3",
        "table=10, priority=170,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:1,output:2,output:3",
    ),
    (
        "table=10,priority=170,eth_src=00:00:00:00:00:01/ff:ff:ff:00:00:00,actions=drop",
        "table=10, priority=170,dl_src=00:00:00:00:00:00/ff:ff:ff:00:00:00 actions=drop",
    ),
    (
        "table=10,priority=160,dl_vlan=10,actions=pop_vlan,output:3",
        "table=10, priority=160,dl_vlan=10 actions=pop_vlan,output:3",
    ),
    (
        "table=10,priority=160,dl_vlan=5,dl_vlan_pcp=3,actions=drop",
        "table=10, priority=160,dl_vlan=5,dl_vlan_pcp=3 actions=drop",
    ),
    (
        "table=10,priority=160,vlan_tci=0x1000/0x1000,actions=drop",
        "table=10, priority=160,vlan_tci=0x1000/0x1000 actions=drop",
    ),
    (
        "table=10,priority=160,vlan_tci=0,actions=mod_vlan_vid:7,output:2",
        "table=10, priority=160,vlan_tci=0x0000/0x1fff actions=push_vlan:0x8100,set_field:4103->vlan_vid,output:2",
    ),
    (
        "table=10,priority=160,vlan_vid=0x1005,actions=drop",
        "table=10, priority=160,dl_vlan=5 actions=drop",
    ),
    (
        "table=10,priority=150,ip,nw_tos=16,actions=push_vlan:0x8100,set_field:4106->vlan_vid,output:4",
        "table=10, priority=150,ip,nw_tos=16 actions=push_vlan:0x8100,set_field:4106->vlan_vid,output:4",
    ),
    (
        "table=10,priority=150,ip,nw_ecn=1,actions=mod_nw_tos:8,output:4",
        "table=10, priority=150,ip,nw_ecn=1 actions=set_field:2->ip_dscp,output:4",
    ),
    (
        "table=10,priority=150,ip,ip_dscp=10,actions=set_field:46->ip_dscp,set_field:1->nw_ecn,output:4",
        "table=10, priority=150,ip,nw_tos=40 actions=set_field:46->ip_dscp,set_field:1->nw_ecn,output:4",
    ),
    (
        "table=10,priority=150,ip,nw_ttl=1,actions=resubmit(5,81)",
        "table=10, priority=150,ip,nw_ttl=1 actions=resubmit(5,81)",
    ),
    (
        "table=10,priority=150,ip,nw_frag=later,actions=drop",
        "table=10, priority=150,ip,nw_frag=later actions=drop",
    ),
    (
        "table=10,priority=150,ip,nw_frag=yes,actions=drop",
        "table=10, priority=150,ip,nw_frag=yes actions=drop",
    ),
    (
        "table=10,priority=150,ip,nw_frag=first,actions=drop",
        "table=10, priority=150,ip,nw_frag=first actions=drop",
    ),
    (
        "table=10,priority=150,ip,nw_frag=no,actions=drop",
        "table=10, priority=150,ip,nw_frag=no actions=drop",
    ),
    (
        "table=10,priority=150,ip,nw_frag=not_later,actions=drop",
        "table=10, priority=150,ip,nw_frag=not_later actions=drop",
    ),
    (
        "table=10,priority=140,tcp,tcp_flags=+syn-ack,actions=drop",
        "table=10, priority=140,tcp,tcp_flags=+syn-ack actions=drop",
    ),
    (
        "table=10,priority=140,tcp,tcp_flags=0x2/0x2,actions=drop",
        "table=10, priority=140,tcp,tcp_flags=+syn actions=drop",
    ),
    (
        "table=10,priority=140,tcp,tcp_flags=+fin+syn,actions=drop",
        "table=10, priority=140,tcp,tcp_flags=+fin+syn actions=drop",
    ),
    (
        "table=20,priority=100,ip,actions=ct(table=30,zone=NXM_NX_REG0[0..15])",
        "table=20, priority=100,ip actions=ct(table=30,zone=NXM_NX_REG0[0..15])",
    ),
    (
        "table=20,priority=90,ipv6,actions=ct(table=30,zone=1)",
        "table=20, priority=90,ipv6 actions=ct(table=30,zone=1)",
    ),
    (
        "table=30,priority=100,ct_state=+trk+est-inv,ip,actions=resubmit(,40)",
        "table=30, priority=100,ct_state=+est-inv+trk,ip actions=resubmit(,40)",
    ),
    (
        "table=30,priority=100,ct_state=-new+trk+inv,actions=drop",
        "table=30, priority=100,ct_state=-new+inv+trk actions=drop",
    ),
    (
        "table=30,priority=99,ct_state=-trk,actions=drop",
        "table=30, priority=99,ct_state=-trk actions=drop",
    ),
    (
        "table=30,priority=98,ct_state=+trk+snat+dnat+rpl+rel,actions=drop",
        "table=30, priority=98,ct_state=+rel+rpl+trk+snat+dnat actions=drop",
    ),
    (
        "table=30,priority=97,ct_state=0,actions=drop",
        "table=30, priority=97,ct_state=0 actions=drop",
    ),
    (
        "table=30,priority=96,ct_state=trk|new,actions=drop",
        "table=30, priority=96,ct_state=new|trk actions=drop",
    ),
    (
        "table=30,priority=50,ct_state=+new+trk,ip,actions=ct(commit,zone=5,table=40,nat(src=10.0.0.1-10.0.0.10:1000-2000,random))",
        "table=30, priority=50,ct_state=+new+trk,ip actions=ct(commit,table=40,zone=5,nat(src=10.0.0.1-10.0.0.10:1000-2000,random))",
    ),
    (
        "table=30,priority=50,ct_state=+new+trk,tcp,nw_dst=10.96.0.10,tp_dst=53,actions=ct(commit,table=41,zone=10,nat(dst=10.244.1.5:53)),ct_clear",
        "table=30, priority=50,ct_state=+new+trk,tcp,nw_dst=10.96.0.10,tp_dst=53 actions=ct(commit,table=41,zone=10,nat(dst=10.244.1.5:53)),ct_clear",
    ),
    (
        "table=30,priority=49,ct_state=+new+trk,tcp,nw_dst=10.96.0.11,actions=ct(commit,nat(dst=10.0.0.1:80,persistent,hash))",
        "table=30, priority=49,ct_state=+new+trk,tcp,nw_dst=10.96.0.11 actions=ct(commit,nat(dst=10.0.0.1:80,persistent,hash))",
    ),
    (
        "table=30,priority=49,ct_state=+new+trk,tcp,nw_dst=10.96.0.12,actions=ct(commit,nat(src=10.0.0.1))",
        "table=30, priority=49,ct_state=+new+trk,tcp,nw_dst=10.96.0.12 actions=ct(commit,nat(src=10.0.0.1))",
    ),
    (
        "table=30,priority=49,ct_state=+new+trk,tcp,nw_dst=10.96.0.13,actions=ct(nat)",
        "table=30, priority=49,ct_state=+new+trk,tcp,nw_dst=10.96.0.13 actions=ct(nat)",
    ),
    (
        "table=30,priority=49,ct_state=+new+trk,tcp,nw_dst=10.96.0.14,actions=ct(table=1,zone=1,nat)",
        "table=30, priority=49,ct_state=+new+trk,tcp,nw_dst=10.96.0.14 actions=ct(table=1,zone=1,nat)",
    ),
    (
        "table=30,priority=48,ct_state=+new+trk,ip,actions=ct(commit,force,zone=1)",
        "table=30, priority=48,ct_state=+new+trk,ip actions=ct(commit,force,zone=1)",
    ),
    (
        "table=30,priority=40,ct_mark=0x1/0x1,ip,actions=ct(commit,exec(set_field:0x1->ct_mark,load:0x5->NXM_NX_CT_LABEL[0..31]))",
        "table=30, priority=40,ct_mark=0x1/0x1,ip actions=ct(commit,exec(set_field:0x1->ct_mark,load:0x5->NXM_NX_CT_LABEL[0..31]))",
    ),
    (
        "table=30,priority=39,ct_mark=0x2,ip,actions=ct(commit,exec(set_field:0xf/0xff->ct_mark,set_field:0x1->ct_label))",
        "table=30, priority=39,ct_mark=0x2,ip actions=ct(commit,exec(load:0xf->NXM_NX_CT_MARK[0..7],set_field:0x1->ct_label))",
    ),
    (
        "table=30,priority=38,ct_mark=0x3,ip,actions=ct(commit,exec(set_field:0x3->ct_mark,move:NXM_NX_REG6[0]->NXM_NX_CT_MARK[2]))",
        "table=30, priority=38,ct_mark=0x3,ip actions=ct(commit,exec(set_field:0x3->ct_mark,move:NXM_NX_REG6[0]->NXM_NX_CT_MARK[2]))",
    ),
    (
        "table=31,priority=100,ct_state=+trk-inv,ct_zone=5,ct_label=0x1/0x1,ct_nw_src=10.0.0.1,ip,actions=output:1",
        "table=31, priority=100,ct_state=-inv+trk,ct_zone=5,ct_label=0x1/0x1,ct_nw_src=10.0.0.1,ip actions=output:1",
    ),
    (
        "table=31,priority=100,ct_zone=16,ct_mark=0x10,actions=drop",
        "table=31, priority=100,ct_zone=16,ct_mark=0x10 actions=drop",
    ),
    (
        "table=31,priority=100,ct_label=0x1000000000000000000000000000000,actions=drop",
        "table=31, priority=100,ct_label=0x1000000000000000000000000000000 actions=drop",
    ),
    (
        "table=40,priority=100,reg0=0x1/0xf,reg1=0x5,actions=group:1",
        "table=40, priority=100,reg0=0x1/0xf,reg1=0x5 actions=group:1",
    ),
    (
        "table=40,priority=100,reg2=0x10,metadata=0x5/0xff,actions=write_metadata:0x1/0xff,goto_table:50",
        "table=40, priority=100,reg2=0x10,metadata=0x5/0xff actions=write_metadata:0x1/0xff,goto_table:50",
    ),
    (
        "table=40,priority=90,reg0=0,reg7=0xffffffff,actions=group:2",
        "table=40, priority=90,reg0=0,reg7=0xffffffff actions=group:2",
    ),
    (
        "table=40,priority=90,metadata=0,actions=write_metadata:0x5,goto_table:50",
        "table=40, priority=90,metadata=0 actions=write_metadata:0x5,goto_table:50",
    ),
    (
        "table=40,priority=80,xreg1=0x5,actions=group:3",
        "table=40, priority=80,reg2=0,reg3=0x5 actions=group:3",
    ),
    (
        "table=40,priority=80,xxreg0=0x5,actions=group:4",
        "table=40, priority=80,reg0=0,reg1=0,reg2=0,reg3=0x5 actions=group:4",
    ),
    (
        "table=40,priority=80,pkt_mark=0x5,actions=group:5",
        "table=40, priority=80,pkt_mark=0x5 actions=group:5",
    ),
    (
        "table=40,priority=79,reg3=0x1/0x1,ip,nw_dst=10.0.0.1,actions=set_field:aa:bb:cc:dd:ee:ff->eth_dst,set_field:10.0.0.2->ip_dst,output:1",
        "table=40, priority=79,ip,reg3=0x1/0x1,nw_dst=10.0.0.1 actions=set_field:aa:bb:cc:dd:ee:ff->eth_dst,set_field:10.0.0.2->ip_dst,output:1",
    ),
    (
        "table=50,priority=200,conj_id=100,ip,actions=load:0x64->NXM_NX_REG5[],resubmit(,60)",
        "table=50, priority=200,conj_id=100,ip actions=load:0x64->NXM_NX_REG5[],resubmit(,60)",
    ),
    (
        "table=41,priority=200,udp,reg5=0x10,actions=multipath(symmetric_l3l4+udp,16,modulo_n,3,0,reg7[0..15]),goto_table:42",
        "table=41, priority=200,udp,reg5=0x10 actions=multipath(symmetric_l3l4+udp,16,modulo_n,3,0,NXM_NX_REG7[0..15]),goto_table:42",
    ),
    (
        "table=41,priority=200,tcp,actions=multipath(symmetric_l3l4,7,hrw,12,0,NXM_NX_REG7[])",
        "table=41, priority=200,tcp actions=multipath(symmetric_l3l4,7,hrw,12,0,NXM_NX_REG7[])",
    ),
    (
        "table=50,priority=200,ip,nw_src=10.244.0.5,actions=conjunction(100,1/2)",
        "table=50, priority=200,ip,nw_src=10.244.0.5 actions=conjunction(100,1/2)",
    ),
    (
        "table=50,priority=200,tcp,tp_dst=8080,actions=conjunction(100,2/2),conjunction(101,2/3)",
        "table=50, priority=200,tcp,tp_dst=8080 actions=conjunction(100,2/2),conjunction(101,2/3)",
    ),
    (
        "table=60,priority=100,ip,nw_dst=10.244.1.0/24,actions=set_field:192.168.1.2->tun_dst,set_field:0x10->tun_id,output:10",
        "table=60, priority=100,ip,nw_dst=10.244.1.0/24 actions=set_field:192.168.1.2->tun_dst,set_field:0x10->tun_id,output:10",
    ),
    (
        "table=60,priority=100,tun_id=0x10,tun_src=192.168.1.2,actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:aa:bb:cc:dd:ee:ff,output:NXM_NX_REG1[]",
        "table=60, priority=100,tun_id=0x10,tun_src=192.168.1.2 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:aa:bb:cc:dd:ee:ff->eth_src,output:NXM_NX_REG1[]",
    ),
    (
        "table=60,priority=101,ip,tun_id=0x10,actions=dec_ttl,output:NXM_NX_REG1[0..15]",
        "table=60, priority=101,ip,tun_id=0x10 actions=dec_ttl,output:NXM_NX_REG1[0..15]",
    ),
    (
        "table=60,priority=99,tun_id=0,actions=drop",
        "table=60, priority=99,tun_id=0 actions=drop",
    ),
    (
        "table=60,priority=99,tun_id=0x5/0xff,actions=drop",
        "table=60, priority=99,tun_id=0x5/0xff actions=drop",
    ),
    (
        "table=60,priority=98,tun_dst=10.0.0.0/8,tun_flags=+oam,actions=drop",
        "table=60, priority=98,tun_dst=10.0.0.0/8,tun_flags=+oam actions=drop",
    ),
    (
        "table=60,priority=98,tun_ipv6_dst=fd00::1,actions=drop",
        "table=60, priority=98,tun_ipv6_dst=fd00::1 actions=drop",
    ),
    (
        "table=60,priority=90,ip,actions=meter:1,mod_nw_ttl:10,note:01.02.03,output:2",
        "table=60, priority=90,ip actions=meter:1,mod_nw_ttl:10,note:01.02.03.00.00.00,output:2",
    ),
    (
        "table=60,priority=89,ip,actions=note:aa,note:01.02.03.04.05.06.07,output:2",
        "table=60, priority=89,ip actions=note:aa.00.00.00.00.00,note:01.02.03.04.05.06.07.00.00.00.00.00.00.00,output:2",
    ),
    (
        "table=60,priority=88,tcp,actions=mod_nw_src:1.2.3.4,mod_tp_dst:5,set_field:80->tcp_src,set_field:10->nw_ttl",
        "table=60, priority=88,tcp actions=set_field:1.2.3.4->ip_src,set_field:5->tcp_dst,set_field:80->tcp_src,set_field:10->nw_ttl",
    ),
    (
        "table=60,priority=87,udp,actions=mod_nw_dst:1.2.3.4,mod_tp_src:5",
        "table=60, priority=87,udp actions=set_field:1.2.3.4->ip_dst,set_field:5->udp_src",
    ),
    (
        "table=60,priority=86,actions=set_field:0x5/0xf->reg3,set_field:0x10->metadata,load:0->NXM_OF_IN_PORT[]",
        "table=60, priority=86 actions=load:0x5->NXM_NX_REG3[0..3],set_field:0x10->metadata,load:0->NXM_OF_IN_PORT[]",
    ),
    (
        "table=60,priority=85,actions=set_field:0x1234->tun_id,set_field:1.2.3.4->tun_src,set_tunnel:0x5",
        "table=60, priority=85 actions=set_field:0x1234->tun_id,set_field:1.2.3.4->tun_src,set_field:0x5->tun_id",
    ),
    (
        "table=60,priority=84,actions=set_field:00:00:00:00:00:01->eth_src,set_field:0x1->pkt_mark,mod_dl_dst:00:00:00:00:00:05",
        "table=60, priority=84 actions=set_field:00:00:00:00:00:01->eth_src,set_field:0x1->pkt_mark,set_field:00:00:00:00:00:05->eth_dst",
    ),
    (
        "table=60,priority=83,actions=load:0xffff->NXM_NX_REG0[16..31],load:0->NXM_NX_REG1[],load:0x1->NXM_NX_REG2[5]",
        "table=60, priority=83 actions=load:0xffff->NXM_NX_REG0[16..31],load:0->NXM_NX_REG1[],load:0x1->NXM_NX_REG2[5]",
    ),
    (
        "table=60,priority=82,actions=move:NXM_NX_REG0[0..15]->NXM_NX_REG1[16..31],move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG2[]",
        "table=60, priority=82 actions=move:NXM_NX_REG0[0..15]->NXM_NX_REG1[16..31],move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG2[]",
    ),
    (
        "table=60,priority=81,ip,actions=move:NXM_OF_IP_SRC[]->NXM_OF_IP_DST[],move:reg0[]->reg1[]",
        "table=60, priority=81,ip actions=move:NXM_OF_IP_SRC[]->NXM_OF_IP_DST[],move:NXM_NX_REG0[]->NXM_NX_REG1[]",
    ),
    (
        "table=60,priority=80,actions=load:0x1->OXM_OF_PKT_REG0[],load:0xaabbccddeeff->NXM_OF_ETH_DST[],load:0x5->OXM_OF_METADATA[]",
        "table=60, priority=80 actions=load:0x1->OXM_OF_PKT_REG0[],load:0xaabbccddeeff->NXM_OF_ETH_DST[],load:0x5->OXM_OF_METADATA[]",
    ),
    (
        "table=60,priority=79,actions=set_field:0x1->tun_flags,push_vlan:0x88a8,set_queue:5,output:1",
        "table=60, priority=79 actions=set_field:oam->tun_flags,push_vlan:0x88a8,set_queue:5,output:1",
    ),
    (
        "table=60,priority=78,actions=clear_actions",
        "table=60, priority=78 actions=clear_actions",
    ),
    (
        "table=60,priority=77,actions=write_actions(output:1,set_field:0x1->reg0)",
        "table=60, priority=77 actions=write_actions(output:1,set_field:0x1->reg0)",
    ),
    (
        "table=60,priority=76,ct_state=+trk-inv,ip,actions=resubmit:5,resubmit(,5),resubmit(3,),resubmit(,5,ct)",
        "table=60, priority=76,ct_state=-inv+trk,ip actions=resubmit:5,resubmit(,5),resubmit:3,resubmit(,5,ct)",
    ),
    (
        "table=60,priority=75,actions=output:CONTROLLER,controller,controller:100,controller(reason=action)",
        "table=60, priority=75 actions=CONTROLLER:65535,CONTROLLER:65535,CONTROLLER:100,CONTROLLER:65535",
    ),
    (
        "table=60,priority=74,actions=controller(max_len=200,meter_id=1),controller(userdata=00.01.02.03.04.05.06.07.08)",
        "table=60, priority=74 actions=controller(max_len=200,meter_id=1),controller(userdata=00.01.02.03.04.05.06.07.08)",
    ),
    (
        "table=70,priority=100,actions=learn(table=71,hard_timeout=60,priority=100,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_OF_IN_PORT[]->NXM_NX_REG1[0..15]),resubmit(,80)",
        "table=70, priority=100 actions=learn(table=71,hard_timeout=60,priority=100,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:NXM_OF_IN_PORT[]->NXM_NX_REG1[0..15]),resubmit(,80)",
    ),
    (
        "table=70,priority=99,actions=learn(table=10,idle_timeout=10,priority=5,cookie=0x5,in_port=1,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])",
        "table=70, priority=99 actions=learn(table=10,idle_timeout=10,priority=5,cookie=0x5,in_port=1,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])",
    ),
    (
        "table=70,priority=98,ip,actions=learn(table=10,dl_type=0x800,NXM_OF_IP_SRC[]=NXM_OF_IP_DST[],load:0x1->NXM_NX_REG0[0..7],fin_idle_timeout=5,fin_hard_timeout=10,send_flow_rem,delete_learned)",
        "table=70, priority=98,ip actions=learn(table=10,fin_idle_timeout=5,fin_hard_timeout=10,send_flow_rem,delete_learned,eth_type=0x800,NXM_OF_IP_SRC[]=NXM_OF_IP_DST[],load:0x1->NXM_NX_REG0[0..7])",
    ),
    (
        "table=70,priority=97,tcp,actions=learn(table=11,eth_type=0x800,nw_proto=6,ip_src=10.0.0.1,NXM_OF_TCP_DST[]=NXM_OF_TCP_SRC[],NXM_NX_REG3[0..7])",
        "table=70, priority=97,tcp actions=learn(table=11,eth_type=0x800,nw_proto=6,ip_src=10.0.0.1,NXM_OF_TCP_DST[]=NXM_OF_TCP_SRC[],NXM_NX_REG3[0..7])",
    ),
    (
        "table=70,priority=100,idle_timeout=30,hard_timeout=60,send_flow_rem,tcp,tcp_flags=+syn-ack,actions=drop",
        "table=70, idle_timeout=30, hard_timeout=60, send_flow_rem priority=100,tcp,tcp_flags=+syn-ack actions=drop",
    ),
    (
        "table=71,priority=100,check_overlap,reset_counts,no_packet_counts,no_byte_counts,actions=drop",
        "table=71, check_overlap reset_counts no_packet_counts no_byte_counts priority=100 actions=drop",
    ),
    (
        "table=72,priority=100,idle_timeout=5,actions=drop",
        "table=72, idle_timeout=5, priority=100 actions=drop",
    ),
    (
        "table=200,priority=32768,actions=drop",
        "table=200, actions=drop",
    ),
    (
        "table=72,priority=1,NXM_NX_REG0[0..3]=5,actions=drop",
        "table=72, priority=1,reg0=0x5/0xf actions=drop",
    ),
];

/// (add-group line, the `dump-groups` line), same capture.
pub(super) const GROUPS: &[(&str, &str)] = &[
    (
        "group_id=1,type=select,bucket=weight:100,actions=set_field:10.244.1.5->ip_dst,output:1,bucket=weight:50,actions=output:2",
        "group_id=1,type=select,bucket=weight:100,actions=set_field:10.244.1.5->ip_dst,output:1,bucket=weight:50,actions=output:2",
    ),
    (
        "group_id=2,type=all,bucket=actions=output:1,bucket=actions=output:2,bucket=actions=output:3",
        "group_id=2,type=all,bucket=actions=output:1,bucket=actions=output:2,bucket=actions=output:3",
    ),
    (
        "group_id=3,type=indirect,bucket=actions=load:0x1->NXM_NX_REG1[],resubmit(,70)",
        "group_id=3,type=indirect,bucket=actions=load:0x1->NXM_NX_REG1[],resubmit(,70)",
    ),
    (
        "group_id=4,type=ff,bucket=watch_port:1,actions=output:1,bucket=watch_port:2,actions=output:2,bucket=watch_group:2,actions=group:2",
        "group_id=4,type=ff,bucket=watch_port:1,actions=output:1,bucket=watch_port:2,actions=output:2,bucket=watch_group:2,actions=group:2",
    ),
    (
        "group_id=5,type=select,bucket=weight:10,actions=ct(commit,table=41,zone=5,nat(dst=10.244.2.3:8080))",
        "group_id=5,type=select,bucket=weight:10,actions=ct(commit,table=41,zone=5,nat(dst=10.244.2.3:8080))",
    ),
    (
        "group_id=6,type=select,bucket=actions=drop",
        "group_id=6,type=select,bucket=actions=drop",
    ),
    ("group_id=7,type=all", "group_id=7,type=all"),
    (
        "group_id=8,type=select,bucket=weight:0,actions=output:1,bucket=output:2,pop_vlan",
        "group_id=8,type=select,bucket=weight:0,actions=output:1,bucket=actions=output:2,pop_vlan",
    ),
    (
        "group_id=9 type=all bucket=actions=output:1,output:2 bucket=actions=output:3",
        "group_id=9,type=all,bucket=actions=output:1,output:2,bucket=actions=output:3",
    ),
    (
        "group_id=4294967040,type=indirect,bucket=actions=ct_clear,set_field:0x1->reg2",
        "group_id=4294967040,type=indirect,bucket=actions=ct_clear,set_field:0x1->reg2",
    ),
];
