"""Worker drain rate: events/s from `pending` to `completed` with a no-op handler, one process.

Run: `python bench/drain.py [--events 50000] [--tenants 1]`. Target: >= 20,000 events/s.
Events are stored first (in large batches), then one `Worker` drains them; the time covers claiming, running the
handler, recording the outcome and the attempt history, all committed with synchronous=FULL.

`python bench/drain.py --ordering [--events 20000] [--hot 2000] [--rounds 5] [--backend sqlite|postgres|both]`:
ordering keys (issue 22), side by side on each backend: the same Stripe events drained unordered, ordered by
`data.object.id` over 1,000 distinct keys (goal: >= 0.8x the unordered rate), and one hot key (strictly serial: one
event of it at a time), alternated `--rounds` times after a warm-up pair; the ratio is the median of the rounds'
ratios, each of two runs back to back (a shared machine drifts, and this one's fsyncs vary from round to round); then
the keyed claim's query plans on the 1,000-key backlog (EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN ANALYZE, rolled back).
PostgreSQL runs on a throwaway server of its own (a temporary folder, a free port).
"""
import argparse, asyncio, contextlib, io, json, random, shutil, socket, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from webhooks.store import SqliteStore, tenant_db, store_events
from webhooks.worker import Worker, Handlers

def fill(root, tenants, n):
    body = json.dumps({'id': 'x', 'type': 'task.succeeded', 'data': {'result': {'canvas_url': 'https://example.test/c/' + 'x'*300}}})
    per = n // tenants
    for t in range(tenants):
        db = tenant_db(f't{t}', root)
        for i in range(0, per, 5000):
            store_events(db, [(f'e{t}-{j}', 'moda', 'task.succeeded', body, 'v1=…', f'moda:e{t}-{j}', 'pending', time.time()) for j in range(i, min(i+5000, per))])
        db.close()
    return per * tenants

def run(label, handler, n, tenants, final='completed', **kw):
    root = Path(tempfile.mkdtemp(prefix='wh-drain-'))
    try:
        total = fill(root, tenants, n)
        h = Handlers()
        if handler is not None: h.on('*')(handler)
        w = Worker(root, h, **kw)
        t = time.perf_counter(); done = asyncio.run(w.drain()); dt = time.perf_counter() - t
        left = sum(tenant_db(f't{i}', root).q("SELECT count(*) n FROM webhook_events WHERE status != ?", [final])[0]['n']
                   for i in range(tenants))
        assert done == total and left == 0, (done, total, left)
        print(f'{label:44s} {total:8d} {dt:8.2f} {total/dt:10.0f}')
    finally: shutil.rmtree(root, ignore_errors=True)

def noop(ev): pass
async def anoop(ev): pass

def stripe_events(n, keys, seed=7):
    "`n` Stripe invoice events over `keys` invoices, created in order, arriving out of order within windows of 50."
    from webhooks.store import NewEvent
    rnd = random.Random(seed)
    evs = [NewEvent(f'evt_{i}', 'stripe', 'invoice.updated', json.dumps({'id': f'evt_{i}', 'type': 'invoice.updated',
           'created': 1767225600 + i, 'data': {'object': {'id': f'in_{rnd.randrange(keys)}', 'object': 'invoice'}}}),
           't=1,v1=…', f'stripe:evt_{i}') for i in range(n)]
    for i in range(0, n, 50):  # providers deliver mostly in order, a few at a time out of it
        w = evs[i:i+50]; rnd.shuffle(w); evs[i:i+50] = w
    return evs

class _Back(Exception): "Raised to roll back the claims EXPLAIN ANALYZE made."

def claim_plans(t, sqlite):
    "The keyed claim's statements' plans on a backlog: runs of keys (`claim_chains`), then heads (`claim_keyed`)."
    now, out = time.time(), []
    try:
        with t.txn() as h:
            for q in [q for q in ('claim_chains', 'claim_keyed') if q in t.sql]:  # (an older webhooks: heads)
                out.append(f'-- {q}')
                if sqlite:  # the heads pass sweeps a stretch of the queue: here all of it
                    sweep = (-1.0, 0, float('inf'), 2**62) if t.sql[q].count('?') == 8 else ()
                    rows = t.all(h, 'EXPLAIN QUERY PLAN ' + t.sql[q], (now + 60, 'plan', now, *sweep, 1000))
                    depth = {0: 0}
                    for r in rows:
                        depth[r[0]] = depth.get(r[1], 0) + 1
                        out.append('  ' * depth[r[0]] + r[3])
                else:
                    out += [r[0] for r in t.all(h, 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) ' + t.sql[q],
                                                (now + 60, 'plan', now, 1000))]
            raise _Back
    except _Back: pass
    return out

def drain_ordering(store, label, n, keys, order_by, plans=False):
    "events/s of one `Worker` (concurrency 4, batch 1000) draining `n` events of a fresh tenant."
    name = f'o{time.monotonic_ns()}'
    t = store.open(name, create=True)
    t.add_source('stripe', 'stripe', 'whsec_bench_0123456789abcdef')
    if order_by: t.set_source('stripe', order_by=order_by)
    evs = stripe_events(n, keys)
    for i in range(0, n, 5000): t.log(evs[i:i+5000])
    if not isinstance(store, SqliteStore):  # statistics, as autovacuum takes them once a backlog arrives
        with t.txn() as h: h.execute(f'ANALYZE {t.schema}.webhook_events')
    if plans:
        plans.extend(claim_plans(t, isinstance(store, SqliteStore)))
    h = Handlers(); h.on('*')(noop)
    w = Worker(store, h, concurrency=4, batch=1000)
    t0 = time.perf_counter(); done = asyncio.run(w.drain([name])); dt = time.perf_counter() - t0
    asyncio.run(w.stop(1))
    left = t.stats()['counts']
    assert done == n and left['completed'] == n, (done, left)
    t.close()
    print(f'{label:52s} {n:8d} {dt:8.2f} {n/dt:10.0f}', flush=True)
    return n / dt

def ordering(backend, store, n, hot, rounds=3):
    "Unordered and ordered drains alternated `rounds` times (a shared machine drifts): the median of the pairs' ratios."
    print(f'== {backend}: ordering keys, one Worker (concurrency 4, batch 1000), no-op handler; {rounds} rounds, '
          'unordered and ordered alternated', flush=True)
    print(f'{"":52s} {"events":>8s} {"seconds":>8s} {"events/s":>10s}')
    plain, keyed, serial, plans = [], [], [], ['']
    with contextlib.redirect_stdout(io.StringIO()):  # a pair not counted: the first drains of a process run colder
        for order in (None, 'data.object.id'): drain_ordering(store, 'warm-up', n // 10, 1000, order)
    for i in range(rounds):
        plain.append(drain_ordering(store, 'unordered (the same events)', n, 1000, None))
        keyed.append(drain_ordering(store, 'ordered by data.object.id, 1,000 keys', n, 1000, 'data.object.id',
                                    plans if i == 0 else False))
        serial.append(drain_ordering(store, 'ordered, one hot key (strictly serial)', hot, 1, 'data.object.id'))
    med, ratios = statistics.median, [k / p for k, p in zip(keyed, plain)]
    r, pairs = med(ratios), ' '.join(f'{x:.2f}' for x in ratios)  # each round's pair ran back to back: drift cancels
    print(f'median: unordered {med(plain):,.0f}/s, ordered over 1,000 keys {med(keyed):,.0f}/s; ratio {r:.2f}x, '
          f'the median of the rounds\' (goal >= 0.8x: {"met" if r >= 0.8 else "NOT met"}; round by round {pairs}); '
          f'one hot key {med(serial):,.0f}/s, one event of it at a time', flush=True)
    print(f'the keyed claim, planned on the 1,000-key backlog of {n:,} events:', *plans[1:], sep='\n  ', flush=True)

def with_postgres(f):
    "Run `f(store)` on a throwaway PostgreSQL server in a folder of its own, on a free port."
    import pg
    from webhooks.postgres import PgStore
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); pg.PGPORT = s.getsockname()[1]
    pg.DATA, pg.BASE = Path(tempfile.mkdtemp(prefix='wh-order-pg-')), f'postgresql://postgres@127.0.0.1:{pg.PGPORT}'
    b = pg.start_postgres()
    try:
        store = PgStore(pg.fresh_db('wh_order'))
        try: f(store)
        finally: store.close()
    finally: pg.stop_postgres(b); shutil.rmtree(pg.DATA, ignore_errors=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--events', type=int, default=50_000); ap.add_argument('--tenants', type=int, default=1)
    ap.add_argument('--ordering', action='store_true'); ap.add_argument('--hot', type=int, default=2000)
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--backend', default='both', choices=['sqlite', 'postgres', 'both'])
    a = ap.parse_args()
    if a.ordering:
        n = a.events if a.events != 50_000 else 20_000
        if a.backend in ('sqlite', 'both'):
            root = Path(tempfile.mkdtemp(prefix='wh-order-'))
            try: ordering('sqlite', SqliteStore(root), n, a.hot, a.rounds)
            finally: shutil.rmtree(root, ignore_errors=True)
        if a.backend in ('postgres', 'both'):
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            with_postgres(lambda store: ordering('postgres', store, n, a.hot, a.rounds))
        sys.exit(0)
    print(f'{"worker (concurrency 4)":44s} {"events":>8s} {"seconds":>8s} {"events/s":>10s}   target >= 20,000/s')
    for batch in (256, 1000):
        run(f'sync no-op handler, batch {batch}', noop, a.events, a.tenants, concurrency=4, batch=batch)
        run(f'async no-op handler, batch {batch}', anoop, a.events, a.tenants, concurrency=4, batch=batch)
    run('no handler (recorded as unhandled + note)', None, a.events, a.tenants, final='unhandled', concurrency=4, batch=1000)
