use super::*;
use openflow::{Action, Bucket, Field, GroupType, MatchField};

fn flow(table: Table, priority: u16, cookie: u64, port: u32, out: u32) -> Flow {
    Flow {
        table,
        priority,
        cookie,
        match_: Match::new()
            .with(MatchField::u32(Field::InPort, port))
            .unwrap(),
        instructions: vec![Instruction::ApplyActions(vec![Action::output(out)])],
    }
}

fn group(id: u32, out: u32) -> GroupDesc {
    GroupDesc {
        group_type: GroupType::Select,
        group_id: id,
        buckets: vec![Bucket {
            weight: 1,
            watch_port: port::ANY,
            watch_group: port::GROUP_ANY,
            actions: vec![Action::output(out)],
        }],
    }
}

fn owner(n: &str) -> Owner {
    Owner::RemoteNode(n.into())
}

/// Plans, then records the plan as done; returns the plan.
fn realise(desired: &Desired, installed: &mut Installed, dirty: Dirty) -> Plan {
    let mut dirty = dirty;
    let p = plan(desired, installed, &mut dirty);
    commit(desired, installed, dirty);
    p
}

#[test]
fn an_unchanged_switch_needs_no_change() {
    let mut desired = Desired::default();
    let mut dirty = Dirty::default();
    desired
        .set(
            &owner("a"),
            vec![flow(Table::Classifier, 10, 1, 1, 2)].into(),
            &mut dirty,
        )
        .expect("fits one message");
    let mut installed = Installed::default();
    assert_eq!(realise(&desired, &mut installed, dirty).changes.len(), 1);
    // The same owner set again, and a full look: nothing to send.
    let mut dirty = Dirty::default();
    desired
        .set(
            &owner("a"),
            vec![flow(Table::Classifier, 10, 1, 1, 2)].into(),
            &mut dirty,
        )
        .expect("fits one message");
    assert!(plan(&desired, &installed, &mut dirty).is_empty());
    assert!(plan(&desired, &installed, &mut Dirty::everything()).is_empty());
}

#[test]
fn only_the_dirty_owner_is_looked_at_and_only_what_differs_changes() {
    let mut desired = Desired::default();
    let mut installed = Installed::default();
    let mut dirty = Dirty::default();
    desired
        .set(
            &owner("a"),
            vec![
                flow(Table::Classifier, 10, 1, 1, 2),
                flow(Table::Classifier, 10, 1, 3, 4),
            ]
            .into(),
            &mut dirty,
        )
        .expect("fits one message");
    desired
        .set(
            &owner("b"),
            vec![flow(Table::Output, 0, 2, 9, 9)].into(),
            &mut dirty,
        )
        .expect("fits one message");
    realise(&desired, &mut installed, dirty);

    // Owner a: one flow retargeted (modify), one gone (delete), one new (add).
    let mut dirty = Dirty::default();
    desired
        .set(
            &owner("a"),
            vec![
                flow(Table::Classifier, 10, 1, 1, 5),
                flow(Table::L3Forwarding, 10, 1, 7, 8),
            ]
            .into(),
            &mut dirty,
        )
        .expect("fits one message");
    let p = realise(&desired, &mut installed, dirty);
    assert_eq!(
        p.summary(),
        "flows +1 ~1 -1 groups +0 ~0 -0 meters +0 ~0 -0"
    );
    assert!(
        matches!(p.changes[0], Change::DeleteFlow(_)),
        "deletes first"
    );
    assert_eq!(p.tables(), vec!["Classifier", "L3Forwarding"]);
    // A cookie change is a re-add (a modify cannot change the cookie).
    let mut dirty = Dirty::default();
    desired
        .set(
            &owner("b"),
            vec![flow(Table::Output, 0, 3, 9, 9)].into(),
            &mut dirty,
        )
        .expect("fits one message");
    let p = realise(&desired, &mut installed, dirty);
    assert!(matches!(&p.changes[..], [Change::AddFlow(_)]));
    assert_eq!(installed.flow_count(), 3);
}

#[test]
fn groups_go_in_before_the_flows_that_use_them_and_out_after() {
    let mut desired = Desired::default();
    let mut installed = Installed::default();
    let mut dirty = Dirty::default();
    desired
        .set(
            &owner("svc"),
            Parts {
                flows: vec![flow(Table::ServiceLb, 10, 1, 1, 2)],
                groups: vec![group(5, 2)],
                ..Parts::default()
            },
            &mut dirty,
        )
        .expect("fits one message");
    let p = realise(&desired, &mut installed, dirty);
    assert!(matches!(
        &p.changes[..],
        [Change::AddGroup(5), Change::AddFlow(_)]
    ));
    let mut dirty = Dirty::default();
    desired.remove(&owner("svc"), &mut dirty);
    let p = realise(&desired, &mut installed, dirty);
    assert!(matches!(
        &p.changes[..],
        [Change::DeleteFlow(_), Change::DeleteGroup(5)]
    ));
    assert!(
        matches!(p.messages[1], Message::GroupMod(ref g) if g.command == GroupModCommand::Delete)
    );
}

#[test]
fn foreign_changes_are_put_right_and_our_own_deletions_cost_nothing() {
    let mut desired = Desired::default();
    let mut installed = Installed::default();
    let mut dirty = Dirty::default();
    let ours = flow(Table::Classifier, 10, 1, 1, 2);
    desired
        .set(&owner("a"), vec![ours.clone()].into(), &mut dirty)
        .expect("fits one message");
    realise(&desired, &mut installed, dirty);
    let key = |f: &Flow| FlowKey::new(f.table.id(), f.priority, &f.match_);

    // Someone deleted our flow: its owner is named, computed again, and the flow re-added.
    let mut dirty = Dirty::default();
    let again = installed.foreign_change(key(&ours), true, &desired, &mut dirty);
    assert_eq!(again, Some(owner("a")));
    desired
        .set(&owner("a"), vec![ours.clone()].into(), &mut dirty)
        .expect("fits one message");
    let p = realise(&desired, &mut installed, dirty);
    assert!(matches!(&p.changes[..], [Change::AddFlow(_)]));
    // Someone modified it in place: re-added (we no longer know what it does).
    let mut dirty = Dirty::default();
    let again = installed.foreign_change(key(&ours), false, &desired, &mut dirty);
    desired
        .set(&again.unwrap(), vec![ours.clone()].into(), &mut dirty)
        .expect("fits one message");
    assert!(matches!(
        &realise(&desired, &mut installed, dirty).changes[..],
        [Change::AddFlow(_)]
    ));
    // Someone added a flow nobody wants: deleted.
    let intruder = flow(Table::Classifier, 65000, 0, 1, 0);
    let mut dirty = Dirty::default();
    assert_eq!(
        installed.foreign_change(key(&intruder), false, &desired, &mut dirty),
        None
    );
    assert!(matches!(
        &realise(&desired, &mut installed, dirty).changes[..],
        [Change::DeleteFlow(_)]
    ));
    // The FLOW_REMOVED of our own deletion: nothing to do.
    let mut dirty = Dirty::default();
    installed.foreign_change(key(&intruder), true, &desired, &mut dirty);
    assert!(dirty.is_empty());
}

#[test]
fn a_switch_read_back_is_diffed_whole() {
    let mut desired = Desired::default();
    let mut dirty = Dirty::default();
    let keep = flow(Table::Classifier, 10, 1, 1, 2);
    desired
        .set(&owner("a"), vec![keep.clone()].into(), &mut dirty)
        .expect("fits one message");
    let stats = |f: &Flow| FlowStats {
        table_id: f.table.id(),
        priority: f.priority,
        cookie: f.cookie,
        match_: f.match_.clone(),
        instructions: f.instructions.clone(),
        duration_sec: 0,
        duration_nsec: 0,
        idle_timeout: 0,
        hard_timeout: 0,
        flags: 0,
        packet_count: 0,
        byte_count: 0,
    };
    let stale = flow(Table::Output, 5, 1, 9, 9);
    let installed = Installed::from_switch(vec![stats(&keep), stats(&stale)], vec![group(3, 1)]);
    let p = plan(&desired, &installed, &mut Dirty::everything());
    assert!(
        matches!(&p.changes[..], [Change::DeleteFlow(k), Change::DeleteGroup(3)] if k.table_id() == Table::Output.id()),
        "{:?}",
        p.changes
    );
}

/// A flow whose conjunctions (one per policy rule selecting an address) outgrow one OpenFlow
/// message would fail every bundle it is in: its owner is left out, the error names the
/// flow, what the owner had goes, and the other owners' changes are planned as usual.
#[test]
fn an_owner_whose_flow_does_not_fit_one_message_is_left_out_and_the_rest_goes_on() {
    let conjunctions = |n: u32| -> Flow {
        let mut f = flow(Table::EgressRule, 100, 7, 3, 1);
        f.instructions = vec![Instruction::ApplyActions(
            (0..n)
                .map(|id| Action::Conjunction {
                    id,
                    clause: 1,
                    n_clauses: 2,
                })
                .collect(),
        )];
        f
    };
    let mut desired = Desired::default();
    let mut installed = Installed::default();
    let mut dirty = Dirty::default();
    desired
        .set(&owner("big"), vec![conjunctions(10)].into(), &mut dirty)
        .expect("10 conjunctions fit");
    desired
        .set(
            &owner("b"),
            vec![flow(Table::Classifier, 10, 1, 1, 2)].into(),
            &mut dirty,
        )
        .expect("fits");
    realise(&desired, &mut installed, dirty);
    assert_eq!(installed.flow_count(), 2);

    // 5000 conjunctions: 80,000 bytes of actions.
    let mut dirty = Dirty::default();
    let e = desired
        .set(&owner("big"), vec![conjunctions(5000)].into(), &mut dirty)
        .expect_err("too long");
    assert_eq!(e.what, "a flow in table EgressRule at priority 100");
    assert!(e.length > MAX_BUNDLED_MESSAGE, "{e}");
    // 4093: the instructions still encode (65,496 bytes), the flow_mod does not fit.
    let e = desired
        .set(
            &owner("big"),
            vec![conjunctions(4093)].into(),
            &mut Dirty::default(),
        )
        .expect_err("too long");
    assert_eq!(e.length, FLOW_MOD_HEAD + 16 + 8 + 4093 * 16, "{e}");
    assert!(
        e.to_string().contains("more than one OpenFlow message"),
        "{e}"
    );
    desired
        .set(
            &owner("b"),
            vec![flow(Table::Classifier, 10, 1, 1, 5)].into(),
            &mut dirty,
        )
        .expect("fits");
    let p = realise(&desired, &mut installed, dirty);
    assert_eq!(
        desired.flow_count(),
        1,
        "the owner's old flow is not desired"
    );
    assert!(
        p.changes
            .iter()
            .any(|c| matches!(c, Change::DeleteFlow(k) if k.table_id() == Table::EgressRule.id())),
        "{:?}",
        p.changes
    );
    assert!(
        p.changes.iter().any(|c| matches!(c, Change::ModifyFlow(_))),
        "the other owner's change goes on: {:?}",
        p.changes
    );
    // Every message planned fits a bundle.
    for m in p.messages {
        let mut b = BytesMut::new();
        m.encode(1, &mut b).expect("encodes");
        assert!(b.len() <= MAX_BUNDLED_MESSAGE);
    }

    // A group of too many buckets: likewise.
    let mut g = group(9, 1);
    g.buckets = (0..7000).map(|_| g.buckets[0].clone()).collect();
    let mut dirty = Dirty::default();
    let parts = Parts {
        groups: vec![g],
        ..Parts::default()
    };
    let e = desired
        .set(&owner("g"), parts, &mut dirty)
        .expect_err("too long");
    assert_eq!(e.what, "group 9 (7000 buckets)");
    assert_eq!(desired.group_count(), 0);
}

#[test]
fn a_refused_message_is_blamed_on_the_owner_that_wanted_it_and_deletions_on_nobody() {
    let mut desired = Desired::default();
    let mut installed = Installed::default();
    let mut dirty = Dirty::default();
    for (name, port, group_id) in [("svc-a", 1, 5), ("svc-b", 2, 6)] {
        desired
            .set(
                &owner(name),
                Parts {
                    flows: vec![flow(Table::ServiceLb, 10, 1, port, 9)],
                    groups: vec![group(group_id, 9)],
                    ..Parts::default()
                },
                &mut dirty,
            )
            .expect("fits one message");
    }
    let p = realise(&desired, &mut installed, dirty);
    let blamed: Vec<Option<Owner>> = p
        .changes
        .iter()
        .map(|c| desired.owner_of_change(c).cloned())
        .collect();
    // Groups by id, then flows in pipeline order (same table and priority: either order).
    assert_eq!(blamed[..2], [Some(owner("svc-a")), Some(owner("svc-b"))]);
    let mut flows_blamed = blamed[2..].to_vec();
    flows_blamed.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(flows_blamed, [Some(owner("svc-a")), Some(owner("svc-b"))]);
    let mut dirty = Dirty::default();
    desired.remove(&owner("svc-a"), &mut dirty);
    let p = realise(&desired, &mut installed, dirty);
    assert!(!p.changes.is_empty());
    assert!(
        p.changes
            .iter()
            .all(|c| desired.owner_of_change(c).is_none())
    );
}
