"""Worker drain rate: events/s from `pending` to `completed` with a no-op handler, one process.

Run: `python bench/drain.py [--events 50000] [--tenants 1]`. Target: >= 20,000 events/s.
Events are stored first (in large batches), then one `Worker` drains them; the time covers claiming, running the
handler, recording the outcome and the attempt history, all committed with synchronous=FULL.
"""
import argparse, asyncio, json, shutil, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from webhooks.store import tenant_db, store_events
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

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--events', type=int, default=50_000); ap.add_argument('--tenants', type=int, default=1)
    a = ap.parse_args()
    print(f'{"worker (concurrency 4)":44s} {"events":>8s} {"seconds":>8s} {"events/s":>10s}   target >= 20,000/s')
    for batch in (256, 1000):
        run(f'sync no-op handler, batch {batch}', noop, a.events, a.tenants, concurrency=4, batch=batch)
        run(f'async no-op handler, batch {batch}', anoop, a.events, a.tenants, concurrency=4, batch=batch)
    run('no handler (recorded as unhandled + note)', None, a.events, a.tenants, final='unhandled', concurrency=4, batch=1000)
