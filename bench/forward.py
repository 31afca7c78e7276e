"""Forwarding rate: events/s delivered to a local no-op destination (HTTP/1.1 keep-alive), beside a handwritten
httpx forwarder loop measured in the same run.

Run: `python bench/forward.py [--events 10000] [--rounds 4] [--concurrency 64] [--processes 1]`.
Goal: >= 1.5x the handwritten loop and >= 2,000 events/s.
The destination is a raw asyncio server in a process of its own (it answers 200 with an empty body). The events are
stored first; `Deliverer.drain` then fans them out, claims, signs, sends and records every attempt, committed with
synchronous=FULL. The handwritten loop is what a person writes in an afternoon: read the stored events a page of
`--concurrency` at a time, sign each with the `standardwebhooks` library, POST them one after the other over one
keep-alive `httpx.AsyncClient`, and mark the page done (seq, status) in a SQLite table of its own, committed with
synchronous=FULL: the outcome as durable as the Deliverer's, which records what finished once per round.
Both sides deliver the same events to the same server; each is also shown with the CPU it used (this process,
its threads included) per event.
"""
import argparse, asyncio, json, multiprocessing as mp, os, resource, shutil, socket, sqlite3, statistics, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import httpx
from standardwebhooks import Webhook
from webhooks.records import NewEvent
from webhooks.sqlite import SqliteStore
from webhooks.forward import Deliverer

OK = b'HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n'

class NoOp(asyncio.Protocol):
    "Answers 200 to every request on the connection, keeping it open; counts requests."
    def connection_made(self, tr): self.tr, self.buf = tr, b''
    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b'\r\n\r\n')
            if end < 0: return
            head = self.buf[:end].lower()
            i = head.find(b'content-length:')
            n = int(head[i+15:head.find(b'\r\n', i) if head.find(b'\r\n', i) > 0 else None]) if i >= 0 else 0
            if len(self.buf) < end + 4 + n: return
            self.buf = self.buf[end + 4 + n:]
            self.tr.write(OK)

def serve(sock):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(NoOp, sock=sock)
        await srv.serve_forever()
    asyncio.run(main())

def fill(store, n, secret_box):
    t = store.open('bench', create=True)
    obj = {'id': 'in_1', 'url': 'https://example.test/' + 'x'*300}
    body = json.dumps({'id': 'x', 'type': 'invoice.paid', 'data': {'object': obj}})
    now = time.time()
    for i in range(0, n, 5000):
        t.log([NewEvent(f'evt_{j}', 'stripe', 'invoice.paid', body, None, f'stripe:evt_{j}', received_at=now)
               for j in range(i, min(i + 5000, n))])
    return t

async def handwritten(t, url, secret, n, db, page):
    "The peer: read the stored events, sign each with `standardwebhooks`, POST them one after the other, mark done."
    wh, sent = Webhook(secret), 0
    db.execute('CREATE TABLE IF NOT EXISTS forwarded (seq INTEGER PRIMARY KEY, status INTEGER, at REAL)')
    async with httpx.AsyncClient(timeout=10) as c:
        before = None
        while sent < n:
            evs = t.events(limit=page, before=before)
            if not evs: break
            done = []
            for e in evs:
                ts = int(time.time())
                sig = wh.sign(e.id, datetime.fromtimestamp(ts, timezone.utc), e.payload)
                r = await c.post(url, content=e.payload.encode(), headers={
                    'content-type': 'application/json', 'webhook-id': e.id, 'webhook-timestamp': str(ts),
                    'webhook-signature': sig})
                sent += r.status_code == 200; done.append((e.seq, r.status_code, time.time()))
            with db: db.executemany('INSERT OR REPLACE INTO forwarded VALUES (?, ?, ?)', done)
            before = evs[-1].seq
    return sent

def cpu():
    "CPU seconds used by this process and its finished children (`--processes` deliverers)."
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime

def timed(f):
    "(events/s, CPU µs an event) of `f()`, which delivers `n` events and returns n."
    t0, c0 = time.perf_counter(), cpu()
    n = f()
    return n / (time.perf_counter() - t0), (cpu() - c0) / n * 1e6

def run(n, concurrency, port, peer_first=False, procs=1):
    "One round on a fresh store: ((events/s, µs), the peer's (events/s, µs)), the peer measured first or second."
    root = Path(tempfile.mkdtemp(prefix='wh-forward-'))
    try:
        store = SqliteStore(root)
        t = store.open('bench', create=True)
        url = f'http://127.0.0.1:{port}/hooks'
        _, secret = t.add_destination('noop', url, concurrency=concurrency, allow_private=True)
        fill(store, n, None)
        db = sqlite3.connect(root/'peer.db', isolation_level=None)
        db.execute('PRAGMA journal_mode=WAL'); db.execute('PRAGMA synchronous=FULL')
        db.isolation_level = ''  # `with db:` commits each page
        def peer():
            sent = asyncio.run(handwritten(t, url, secret, n, db, concurrency))
            assert sent == n == db.execute('SELECT count(*) FROM forwarded WHERE status=200').fetchone()[0], sent
            return n
        def ours():
            if procs == 1: started = asyncio.run(_drain(Deliverer(store, batch=concurrency)))
            else:  # as `webhooks-serve --workers N` runs them: one deliverer a process, sharing the tenant's caps
                with mp.get_context('fork').Pool(procs) as pool:
                    started = sum(pool.map(_drain_in, [(root, concurrency)] * procs))
            counts = t.delivery_counts()['noop']
            assert counts == {'completed': n} and started == n, (counts, started)
            return n
        theirs = timed(peer) if peer_first else None
        mine = timed(ours)
        if theirs is None: theirs = timed(peer)
        db.close(); t.close(); store.close()
        return mine, theirs
    finally: shutil.rmtree(root, ignore_errors=True)

def _drain_in(args):
    "In a process of its own: drain the store at `root` with one `Deliverer`; deliveries started."
    root, concurrency = args
    return asyncio.run(_drain(Deliverer(SqliteStore(root), batch=concurrency)))

async def _drain(d):
    try: return await d.drain(['bench'], timeout=600)
    finally: await d.stop()

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--events', type=int, default=10_000)
    ap.add_argument('--concurrency', type=int, default=64)
    ap.add_argument('--rounds', type=int, default=4)
    ap.add_argument('--processes', type=int, default=1)
    a = ap.parse_args()
    sock = socket.socket(); sock.bind(('127.0.0.1', 0)); sock.listen(1024)
    p = mp.get_context('fork').Process(target=serve, args=(sock,), daemon=True); p.start()
    try:
        print(f'{a.events} events a round, {a.rounds} rounds, the order alternating (this machine is shared: '
              f'compare within a round); load average {" ".join(f"{x:.1f}" for x in os.getloadavg())}, '
              f'{os.cpu_count()} CPUs')
        print(f'{"round":>5s} {"webhooks Deliverer":>26s} {"handwritten loop":>26s} {"ratio":>7s}')
        res, cell = [], lambda r: f'{r[0]:8.0f} events/s {r[1]:4.0f} µs'
        for i in range(a.rounds):
            ours, peer = run(a.events, a.concurrency, sock.getsockname()[1], bool(i % 2), a.processes)
            res.append((ours, peer))
            print(f'{i+1:5d} {cell(ours):>26s} {cell(peer):>26s} {ours[0]/peer[0]:6.2f}x', flush=True)
        med = statistics.median
        o, q, x = med([o[0] for o, _ in res]), med([q[0] for _, q in res]), med([o[0]/q[0] for o, q in res])
        print(f'median: webhooks Deliverer ({a.processes} process(es), concurrency {a.concurrency}, every attempt '
              f'recorded) {o:.0f} events/s, {med([o[1] for o, _ in res]):.0f} µs CPU an event; handwritten '
              f'sequential httpx loop (outcomes recorded a page at a time) {q:.0f} events/s, '
              f'{med([q[1] for _, q in res]):.0f} µs CPU an event; ratio {x:.2f}x')
        print(f'goal >= 1.5x the handwritten loop: {"met" if x >= 1.5 else "NOT met"} ({x:.2f}x); '
              f'goal >= 2,000 events/s: {"met" if o >= 2000 else "NOT met"} ({o:.0f})')
    finally: p.terminate(); p.join()
