"The worker with real processes: SIGKILL mid-stream, retries, dead letters, the concurrency limit, replay."
import asyncio, json, os, signal, socket, subprocess, sys, threading, time
from pathlib import Path
import pytest
from webhooks.store import tenant_db, log_webhook_event
from webhooks.routes import add_source
from webhooks.worker import Worker, Handlers, replay

SECRET = 'whsec_crash_test_9d2f'

from helpers import free_port

def serve(where, port, handlers):
    "Start `webhooks-serve` on `where` (a folder, or a PostgreSQL URL) as its own process; wait until it answers."
    exe = Path(sys.executable).parent/'webhooks-serve'  # the installed console script, as a user runs it
    store = ['--db', where] if where.startswith('postgresql://') else ['--root', where]
    p = subprocess.Popen([str(exe), *store, '--port', str(port), '--handlers', str(handlers)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.1): return p
        except OSError: time.sleep(0.05)
    p.kill(); raise RuntimeError(p.stdout.read().decode())

SENDER = r'''
import sys, json, urllib.request, urllib.error
from webhooks.signatures import sign
url, secret, acked, n = sys.argv[1], sys.argv[2], open(sys.argv[3], 'a'), int(sys.argv[4])
for i in range(n):
    body = json.dumps({"id": f"evt_{i:05d}", "type": "order.paid", "data": {"n": i}}).encode()
    req = urllib.request.Request(url, data=body, method='POST', headers={'Content-Type': 'application/json', **sign('generic', body, secret)})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            if r.status == 200: acked.write(f"evt_{i:05d}\n"); acked.flush()
    except (urllib.error.URLError, ConnectionError, OSError): break
'''

HANDLERS = '''
import os, time
from webhooks.worker import Handlers
handlers = Handlers()
LOG = {log!r}
@handlers.on('order.*')
def paid(ev):
    with open(LOG, 'a') as f: f.write(f"start {{ev.id}} {{os.getpid()}}\\n")
    time.sleep(0.004)
    with open(LOG, 'a') as f: f.write(f"end {{ev.id}} {{os.getpid()}}\\n")
'''

def test_sigkill_mid_stream_loses_nothing_acknowledged(tmp_path, store, q, where):
    runs, acked = tmp_path/'runs.log', tmp_path/'acked.txt'
    add_source(store.open('shop', create=True), 'orders', 'generic', SECRET)
    hfile = tmp_path/'hooks.py'; hfile.write_text(HANDLERS.format(log=str(runs)))
    port = free_port()
    server = serve(where(store), port, hfile)
    sender = subprocess.Popen([sys.executable, '-c', SENDER, f'http://127.0.0.1:{port}/webhooks/shop/orders', SECRET, str(acked), '100000'])
    # kill once the sender has been acknowledged for a while and handlers are running
    deadline = time.time() + 30
    while time.time() < deadline and (not acked.exists() or len(acked.read_text().split()) < 300 or not runs.exists()): time.sleep(0.05)
    server.send_signal(signal.SIGKILL); server.wait()
    sender.wait(timeout=30)
    acks = acked.read_text().split()
    assert len(acks) >= 300
    db = store.open('shop')
    stored = {r['id'] for r in q(db, 'SELECT id FROM webhook_events')}
    assert set(acks) <= stored, 'an event answered 200 was not in the database after SIGKILL'
    assert q(db, "SELECT count(*) n FROM webhook_events WHERE status != 'completed'")[0]['n'] > 0, 'kill came too late to test recovery'

    server = serve(where(store), port, hfile)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and q(db, "SELECT count(*) n FROM webhook_events WHERE status != 'completed'")[0]['n']: time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM); server.wait(timeout=20)
    rows = {r['id']: r for r in q(db, 'SELECT id, status FROM webhook_events')}
    assert all(rows[a]['status'] == 'completed' for a in acks), 'an acknowledged event did not complete after restart'
    assert all(r['status'] == 'completed' for r in rows.values())
    ends = {}
    for line in runs.read_text().splitlines():
        kind, eid, pid = line.split()
        if kind == 'end': ends[eid] = ends.get(eid, 0) + 1
    assert set(ends) == set(rows), 'every stored event ran its handler to the end at least once'
    twice = {e for e, n in ends.items() if n > 1}
    lapsed = {r['webhook_id'] for r in q(db, "SELECT webhook_id FROM webhook_attempts WHERE outcome='lapsed'")}
    assert twice <= lapsed, f'completed twice without a lapsed attempt on record: {sorted(twice - lapsed)[:5]}'

def run(coro): return asyncio.run(coro)

def test_fails_twice_then_succeeds_and_dead_letter(store, q):
    db = store.open('billing', create=True)
    calls = []
    h = Handlers()
    @h.on('invoice.paid')
    def flaky(ev):
        calls.append(ev.attempt)
        if len(calls) < 3: raise ConnectionError('ledger down')
    @h.on('invoice.voided')
    async def broken(ev): raise ValueError(f'cannot void {ev.id}')
    log_webhook_event(db, 'evt_ok', 'stripe', 'invoice.paid', '{"id":"evt_ok"}', 's', 'stripe:evt_ok')
    log_webhook_event(db, 'evt_bad', 'stripe', 'invoice.voided', '{"id":"evt_bad"}', 's', 'stripe:evt_bad')
    w = Worker(store, h, max_attempts=3, backoff=0.01, max_backoff=0.05)
    async def until_done():
        for _ in range(400):
            await w.step()
            if not q(db, "SELECT count(*) n FROM webhook_events WHERE status IN ('pending','processing')")[0]['n']: return
            await asyncio.sleep(0.01)
    run(until_done())
    rows = {r['id']: r for r in q(db, 'SELECT * FROM webhook_events')}
    assert (rows['evt_ok']['status'], rows['evt_ok']['attempts']) == ('completed', 3)
    assert (rows['evt_bad']['status'], rows['evt_bad']['attempts']) == ('failed', 3)
    assert rows['evt_bad']['error_message'] == 'ValueError: cannot void evt_bad'
    hist = [(r['webhook_id'], r['attempt'], r['outcome']) for r in q(db, 'SELECT * FROM webhook_attempts ORDER BY seq')]
    assert [x for x in hist if x[0] == 'evt_ok'] == [('evt_ok', 1, 'retry'), ('evt_ok', 2, 'retry'), ('evt_ok', 3, 'completed')]
    assert [x for x in hist if x[0] == 'evt_bad'] == [('evt_bad', 1, 'retry'), ('evt_bad', 2, 'retry'), ('evt_bad', 3, 'failed')]

def test_backoff_grows_with_jitter(tmp_path):
    w = Worker(tmp_path, Handlers(), backoff=2.0, max_backoff=60)
    for attempt, base in [(1, 2), (2, 4), (3, 8), (6, 60), (10, 60)]:
        ds = [w._delay(attempt) for _ in range(200)]
        assert base*0.5 <= min(ds) and max(ds) <= base
        assert len(set(ds)) > 1

@pytest.mark.parametrize('kind', ['sync', 'async'])
def test_1000_events_3_tenants_concurrency_4(store, q, kind):
    names = ['t1', 't2', 't3']
    for i in range(1000):
        db = store.open(names[i % 3], create=True)
        log_webhook_event(db, f'e{i}', 'src', 'job.done', json.dumps({'id': f'e{i}'}), 's', f'src:e{i}')
        db.close()
    lock, state, seen = threading.Lock(), {'now': 0, 'peak': 0}, []
    h = Handlers()
    if kind == 'sync':
        @h.on('*')
        def handler(ev):
            with lock: state['now'] += 1; state['peak'] = max(state['peak'], state['now'])
            time.sleep(0.0005)
            with lock: state['now'] -= 1; seen.append((ev.tenant, ev.id))
    else:
        @h.on('*')
        async def handler(ev):
            state['now'] += 1; state['peak'] = max(state['peak'], state['now'])
            await asyncio.sleep(0.0005)
            state['now'] -= 1; seen.append((ev.tenant, ev.id))
    w = Worker(store, h, concurrency=4, batch=100)
    assert run(w.drain()) == 1000
    assert state['peak'] <= 4, f"{state['peak']} handlers ran at once"
    assert state['peak'] == 4, 'the limit should also be reached, or the test proves nothing'
    assert len(seen) == len(set(seen)) == 1000
    for t in names:
        assert q(store.open(t), "SELECT status, count(*) n FROM webhook_events GROUP BY status") == [{'status': 'completed', 'n': 334 if t == 't1' else 333}]

def test_replay_after_fix_keeps_history(store, q):
    db = store.open('shop', create=True)
    h, fixed = Handlers(), {'on': False}
    @h.on('order.paid')
    def handler(ev):
        if not fixed['on']: raise KeyError('customer')
    log_webhook_event(db, 'evt_1', 'shop', 'order.paid', '{"id":"evt_1"}', 's', 'shop:evt_1')
    w = Worker(store, h, max_attempts=1)
    run(w.drain())
    assert q(db, "SELECT status FROM webhook_events")[0]['status'] == 'failed'
    fixed['on'] = True
    assert replay(db, 'evt_1') == 1
    run(w.drain())
    assert q(db, "SELECT status, error_message FROM webhook_events")[0] == {'status': 'completed', 'error_message': None}
    assert [r['outcome'] for r in q(db, 'SELECT outcome FROM webhook_attempts ORDER BY seq')] == ['failed', 'completed']

def test_graceful_stop_leaves_nothing_processing(store, q):
    db = store.open('shop', create=True)
    for i in range(20): log_webhook_event(db, f'e{i}', 's', 'slow', '{}', 's', f's:e{i}')
    h = Handlers()
    @h.on('slow')
    async def slow(ev): await asyncio.sleep(0.05)
    async def main():
        w = Worker(store, h, concurrency=2, batch=5, poll=0.05)
        w.start()
        await asyncio.sleep(0.08)
        await w.stop(grace=5)
    run(main())
    assert q(db, "SELECT count(*) n FROM webhook_events WHERE status='processing'")[0]['n'] == 0
    done = q(db, "SELECT count(*) n FROM webhook_events WHERE status='completed'")[0]['n']
    assert 0 < done < 20

POISON_RUN = r'''
import asyncio, os, sys
from webhooks.worker import Worker, Handlers
root, log = sys.argv[1], sys.argv[2]
h = Handlers()
@h.on('render')
def render(ev):
    if ev['poison']: os._exit(9)  # the handler takes the whole process down, like an OOM kill
    with open(log, 'a') as f: f.write(ev.id + '\n')
asyncio.run(Worker(root, h, max_attempts=3, concurrency=1).drain())
'''

def test_poison_event_is_dead_lettered_and_its_batch_mates_complete(tmp_path, store, q, where):
    db = store.open('shop', create=True)
    for i in range(6):
        log_webhook_event(db, f'e{i}', 's', 'render', json.dumps({'poison': i == 2}), 's', f's:e{i}')
    log_file = tmp_path/'ran.txt'
    for run_no in range(12):  # restart the worker after every crash, as a supervisor would
        r = subprocess.run([sys.executable, '-c', POISON_RUN, where(store), str(log_file)], timeout=60)
        if r.returncode == 0: break
    assert r.returncode == 0, 'the worker kept dying: the poison event was never dead-lettered'
    rows = {x['id']: x for x in q(db, 'SELECT id, status, lapses, error_message FROM webhook_events')}
    assert rows['e2']['status'] == 'failed' and rows['e2']['lapses'] == 3
    assert 'stopped mid-run 3 times' in rows['e2']['error_message']
    assert all(rows[f'e{i}']['status'] == 'completed' for i in (0, 1, 3, 4, 5))
    assert set(log_file.read_text().split()) == {'e0', 'e1', 'e3', 'e4', 'e5'}

def test_stuck_plain_handler_does_not_hold_up_other_events_or_tenants(store, q):
    release = threading.Event()
    h = Handlers()
    @h.on('hang')
    def hang(ev): release.wait(10)
    @h.on('quick')
    def quick(ev): pass
    a, b = store.open('a', create=True), store.open('b', create=True)
    log_webhook_event(a, 'stuck', 's', 'hang', '{}', 's', 's:stuck')
    for i in range(20): log_webhook_event(a, f'qa{i}', 's', 'quick', '{}', 's', f's:qa{i}')
    for i in range(5): log_webhook_event(b, f'qb{i}', 's', 'quick', '{}', 's', f's:qb{i}')
    w = Worker(store, h, concurrency=2, timeout=0.3, flush=0.05)
    try:
        t0 = time.time(); run(w.step())
        assert time.time() - t0 < 5, 'the step waited for the stuck handler'
        assert q(a, "SELECT count(*) n FROM webhook_events WHERE status='completed'")[0]['n'] == 20
        assert q(b, "SELECT count(*) n FROM webhook_events WHERE status='completed'")[0]['n'] == 5
        stuck = q(a, "SELECT status, lease_owner, error_message FROM webhook_events WHERE id='stuck'")[0]
        assert stuck == {'status': 'pending', 'lease_owner': None, 'error_message': 'TimeoutError: handler ran longer than 0.3 s'}, \
            'a handler past its timeout is a failed attempt, retried later; its lease is not kept'
        assert (w.abandoned, w.stuck) == (1, 1)
    finally: release.set()

def test_async_handler_past_timeout_is_retried(store, q):
    h = Handlers()
    @h.on('slow')
    async def slow(ev): await asyncio.sleep(5)
    db = store.open('a', create=True)
    log_webhook_event(db, 'e', 's', 'slow', '{}', 's', 's:e')
    run(Worker(store, h, timeout=0.1, max_attempts=1).drain())
    assert q(db, 'SELECT status, error_message FROM webhook_events')[0] == {'status': 'failed', 'error_message': 'TimeoutError: handler ran longer than 0.1 s'}

def test_long_batch_keeps_its_leases(store, q):
    "Events queued behind slow handlers must not lapse under a live worker (another worker would run them too)."
    h, runs = Handlers(), []
    @h.on('work')
    async def work(ev): runs.append(ev.id); await asyncio.sleep(0.25)
    db = store.open('a', create=True)
    for i in range(8): log_webhook_event(db, f'e{i}', 's', 'work', '{}', 's', f's:e{i}')
    stop, lapses = threading.Event(), []
    def other_worker():  # what a second worker does before each claim
        own = store.open('a')
        while not stop.is_set():
            from webhooks.worker import reclaim
            lapses.append(reclaim(own)); time.sleep(0.05)
    th = threading.Thread(target=other_worker); th.start()
    try: run(Worker(store, h, concurrency=1, lease=0.6, flush=0.05).drain())
    finally: stop.set(); th.join()
    assert sum(lapses) == 0 and sorted(runs) == [f'e{i}' for i in range(8)]
    assert q(db, "SELECT count(*) n FROM webhook_attempts WHERE outcome='lapsed'")[0]['n'] == 0

def test_stop_gives_back_claims_that_never_started(store, q):
    db = store.open('shop', create=True)
    for i in range(30): log_webhook_event(db, f'e{i}', 's', 'slow', '{}', 's', f's:e{i}')
    h = Handlers()
    @h.on('slow')
    def slow(ev): time.sleep(0.02)
    async def main():
        w = Worker(store, h, concurrency=1, poll=0.05, flush=0.05)
        w.start(); await asyncio.sleep(0.15); await w.stop(grace=5)
    run(main())
    rows = q(db, 'SELECT status, attempts FROM webhook_events')
    assert {r['status'] for r in rows} <= {'completed', 'pending'}
    assert all(r['attempts'] == 0 for r in rows if r['status'] == 'pending'), 'an unstarted claim was counted as an attempt'
    assert 0 < sum(r['status'] == 'completed' for r in rows) < 30

def test_broken_tenant_does_not_starve_the_others(tmp_path, caplog):
    (tmp_path/'acme.db').write_bytes(b'this is not a database' * 100)
    z = tenant_db('zeta', tmp_path)
    for i in range(3): log_webhook_event(z, f'e{i}', 's', 't', '{}', 's', f's:e{i}')
    assert run(Worker(tmp_path, Handlers()).drain()) == 3
    assert z.q("SELECT count(*) n FROM webhook_events WHERE status='unhandled'")[0]['n'] == 3  # no handler: nothing ran
    assert 'tenant acme' in caplog.text  # logged once, with the tenant's name

def test_prune_refuses_unhandled_and_replay_asks_which_source(store, q):
    from webhooks.worker import prune
    db = store.open('shop', create=True)
    with pytest.raises(ValueError, match='only completed, failed, unhandled'): prune(db, 0, statuses=('pending',))
    log_webhook_event(db, 'evt_1', 'stripe', 't', '{}', 's', 'stripe:evt_1')
    log_webhook_event(db, 'evt_1', 'github', 't', '{}', 's', 'github:evt_1')
    q(db, "UPDATE webhook_events SET status='completed'")
    with pytest.raises(ValueError, match='several sources'): replay(db, 'evt_1')
    assert replay(db, 'evt_1', source='github') == 1
    assert q(db, "SELECT source, status FROM webhook_events ORDER BY source") == [{'source': 'github', 'status': 'pending'}, {'source': 'stripe', 'status': 'completed'}]
