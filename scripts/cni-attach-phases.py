#!/usr/bin/env python3
# Summarises the logs `cni_attach` keeps with CNI_ATTACH_LOGS=DIR (BENCHMARKS.md, "Pod attach
# (CNI)"): medians of the shim's phases (shim-timing.log), the peer's wall times, and the
# controller's ADD phases (`CNI ADD phases` at debug). Usage: scripts/cni-attach-phases.py DIR
import re, sys, statistics as st
d = sys.argv[1]
def med(xs): return st.median(xs) if xs else float('nan')
shim = [l for l in open(f'{d}/shim-timing.log') if l.strip()]
rows = []
for l in shim:
    kv = dict(re.findall(r'(\w+)=([\d.]+)', l))
    cmd = 'ADD' if ' ADD ' in l else 'DEL'
    rows.append((cmd, int(kv['pod']), {k: float(v) for k, v in kv.items() if k not in ('round', 'pod')}))
n = max(r[1] for r in rows) + 1
for cmd in ('ADD', 'DEL'):
    for name, lo, hi in (('all', 0, n), ('pods 1-10', 0, 10), (f'pods {n-9}-{n}', n - 10, n)):
        sel = [r[2] for r in rows if r[0] == cmd and lo <= r[1] < hi]
        if not sel: continue
        keys = [k for k in sel[0] if k != 'wall_ms']
        out = {'wall': med([s['wall_ms'] for s in sel])}
        for k in keys: out[k] = med([s.get(k, 0) for s in sel])
        out['outside(exec+exit)'] = med([s['wall_ms'] - s['total_ms'] for s in sel])
        print(f'{cmd} {name} (n={len(sel)}): ' + ' '.join(f'{k}={v:.2f}' for k, v in out.items()))
try:
    peer = [l for l in open(f'{d}/peer-timing.log') if l.strip()]
    for cmd in ('ADD', 'DEL'):
        for name, lo, hi in (('all', 0, n), ('pods 1-10', 0, 10), (f'pods {n-9}-{n}', n - 10, n)):
            xs = [float(re.search(r'wall_ms=([\d.]+)', l).group(1)) for l in peer
                  if f' {cmd} ' in l and lo <= int(re.search(r'pod=(\d+)', l).group(1)) < hi]
            print(f'peer {cmd} {name}: wall p50={med(xs):.2f}')
except FileNotFoundError:
    pass
# controller: CNI ADD phases lines (debug)
ctl = open(f'{d}/controller.log', errors='replace').read().splitlines()
ph = []
for l in ctl:
    if 'CNI ADD phases' in l:
        c = re.search(r'container=r(\d+)([sc])(\d+)', l)
        a = re.search(r'attach_ms=([\d.]+)', l); f = re.search(r'flows_ms=Some\(([\d.]+)\)', l); p = re.search(r'port_ms=Some\(([\d.]+)\)', l)
        ph.append((c.group(2) if c else '?', int(c.group(3)) if c else -1, float(a.group(1)) if a else 0, float(f.group(1)) if f else 0, float(p.group(1)) if p else 0))
def show(label, sel):
    print(f'{label} (n={len(sel)}): attach={med([x[2] for x in sel]):.2f} flows={med([x[3] for x in sel]):.2f} port={med([x[4] for x in sel]):.2f}')
if ph:
    show('controller concurrent ADD', [x for x in ph if x[0] == 'c'])
    for name, lo, hi in (('all', 0, n), ('pods 1-10', 0, 10), (f'pods {n-9}-{n}', n - 10, n)):
        show(f'controller sequential ADD {name}', [x for x in ph if x[0] == 's' and lo <= x[1] < hi])
for pat, key in (('flows realised', 'took_ms'), ('OVSDB updated', 'took_ms'), ('seen in the replica', 'seen_ms')):
    xs = [float(m.group(1)) for l in ctl if pat in l for m in [re.search(key + r'=(\d+)', l)] if m]
    if xs: print(f'{pat}: n={len(xs)} p50={med(xs):.1f} ms max={max(xs):.1f}')
