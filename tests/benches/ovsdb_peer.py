#!/usr/bin/python3
"""Peer for tests/benches/ovsdb_client.rs: the same OVSDB workloads through the
python-ovs IDL (Debian python3-openvswitch), timed the same way.

Usage:
  ovsdb_peer.py one-txn  TARGET SCHEMA N   N ports (Interface+Port) in one transaction
  ovsdb_peer.py many-txn TARGET SCHEMA N   N ports, one transaction each
  ovsdb_peer.py apply    TARGET SCHEMA N   prints "ready" once synced, waits for a line on
                                           stdin (the writer has then made N updates),
                                           and times applying them
Each prints one JSON object: {"seconds": WALL, "cpu": PROCESS_CPU}. Ports and interfaces are named
pyN; the bridge is br0. The IDL replicates the same tables and columns as the Rust side:
Bridge(name, ports), Port(name, interfaces, external_ids), Interface(name).
"""

import json
import sys
import time

import ovs.db.idl
import ovs.poller


class CountingIdl(ovs.db.idl.Idl):
    """Counts Port updates whose external_ids carry round=1 (the apply workload)."""

    def __init__(self, remote, helper):
        super().__init__(remote, helper)
        self.applied = 0
        self.port_names = 0

    def notify(self, event, row, updates=None):
        if row._table.name != "Port":
            return
        if event == ovs.db.idl.ROW_CREATE and row.name.startswith("py"):
            self.port_names += 1
        if event == ovs.db.idl.ROW_UPDATE and row.external_ids.get("round") == "1":
            self.applied += 1


def connect(target, schema):
    helper = ovs.db.idl.SchemaHelper(location=schema)
    helper.register_columns("Bridge", ["name", "ports"])
    helper.register_columns("Port", ["name", "interfaces", "external_ids"])
    helper.register_columns("Interface", ["name"])
    idl = CountingIdl(target, helper)
    run_until(idl, idl.has_ever_connected)
    return idl


def run_until(idl, done):
    while True:
        idl.run()
        if done():
            return
        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.block()


def bridge(idl):
    return next(r for r in idl.tables["Bridge"].rows.values() if r.name == "br0")


def add_ports(idl, txn, first, count):
    br = bridge(idl)
    for i in range(first, first + count):
        iface = txn.insert(idl.tables["Interface"])
        iface.name = "py%d" % i
        port = txn.insert(idl.tables["Port"])
        port.name = "py%d" % i
        port.interfaces = [iface]
        br.addvalue("ports", port.uuid)


def commit(txn):
    status = txn.commit_block()
    if status != ovs.db.idl.Transaction.SUCCESS:
        sys.exit("transaction failed: %s %s" % (status, txn.get_error()))


def main():
    mode, target, schema, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    idl = connect(target, schema)
    if mode == "one-txn":
        start, cpu = time.perf_counter(), time.process_time()
        txn = ovs.db.idl.Transaction(idl)
        add_ports(idl, txn, 0, n)
        commit(txn)
        run_until(idl, lambda: idl.port_names >= n)
    elif mode == "many-txn":
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            txn = ovs.db.idl.Transaction(idl)
            add_ports(idl, txn, i, 1)
            commit(txn)
        run_until(idl, lambda: idl.port_names >= n)
    elif mode == "apply":
        print("ready", flush=True)
        sys.stdin.readline()
        start, cpu = time.perf_counter(), time.process_time()
        run_until(idl, lambda: idl.applied >= n)
    else:
        sys.exit("unknown mode %s" % mode)
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "cpu": time.process_time() - cpu}), flush=True)


if __name__ == "__main__":
    main()
