"""Ordering keys (issue 22): events of one key run one at a time, in the provider's creation order, on both backends.

A property test drives 2-4 concurrent workers over random arrival orders, handler failures and delays; two
`webhooks-worker` processes share one PostgreSQL database while one is SIGKILLed mid-run; a real Stripe-signed
sequence delivered in reverse order over HTTP reaches its handlers in creation order."""
import asyncio, itertools, json, os, signal, subprocess, time
import httpx, stripe
from hypothesis import HealthCheck, given, settings, strategies as st
from webhooks.server import serve_app
from webhooks.store import NewEvent, Outcome
from webhooks.worker import Handlers, Worker

from helpers import BIN, Server, stop_all
STRIPE = 'whsec_order_test_0123456789abcdef'
AT = 1_767_225_600  # 2026-01-01 00:00 UTC: the provider's clock for `created`
FINAL = ('completed', 'failed', 'superseded')
_names = itertools.count()

def invoice(i:int, obj:str, created:int, type:str='invoice.updated')->str:
    "A Stripe event body about invoice `obj`, created at `AT + created`."
    return json.dumps({'id': f'evt_{i:04d}', 'object': 'event', 'type': type, 'created': AT + created,
                       'data': {'object': {'id': obj, 'object': 'invoice'}}})

def stripe_event(i:int, obj:str, created:int)->NewEvent:
    wid = f'evt_{i:04d}'
    return NewEvent(wid, 'stripe', 'invoice.updated', invoice(i, obj, created), 't=1,v1=…', f'stripe:{wid}')

def ordered_tenant(store, **settings):
    "A fresh tenant whose `stripe` source orders its events by invoice."
    t = store.open(f'ord{next(_names)}', create=True)
    t.add_source('stripe', 'stripe', STRIPE)
    t.set_source('stripe', order_by='data.object.id', **settings)
    return t

def statuses(t)->dict:
    return {e.id: e for e in t.events(limit=10_000)}

# ---------------------------------------------------------------- the property

@settings(max_examples=int(os.environ.get('ORDER_EXAMPLES', 15)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_arrivals_failures_and_workers_keep_each_key_in_order(store, data):
    n = data.draw(st.integers(2, 18), label='events')
    nkeys = data.draw(st.integers(1, 4), label='keys')
    keys = data.draw(st.lists(st.integers(0, nkeys - 1), min_size=n, max_size=n), label='key of each')
    created = data.draw(st.permutations(range(n)), label='creation order')
    arrival = data.draw(st.permutations(range(n)), label='arrival order')
    late = data.draw(st.integers(0, n - 1), label='events arriving while workers run')
    fails = data.draw(st.lists(st.sampled_from([0, 0, 0, 1, 2, 3]), min_size=n, max_size=n), label='failed attempts')
    delays = data.draw(st.lists(st.sampled_from([0, 0, 0.001, 0.004]), min_size=n, max_size=n), label='delays')
    nworkers = data.draw(st.integers(2, 4), label='workers')
    on_failure = data.draw(st.sampled_from(['hold', 'continue']), label='on_failure')
    skip_stale = data.draw(st.booleans(), label='skip_stale')
    t = ordered_tenant(store, on_failure=on_failure, skip_stale=skip_stale)
    evs = [stripe_event(i, f'in_{keys[i]}', created[i]) for i in range(n)]
    first, second = [evs[i] for i in arrival[:n - late]], [evs[i] for i in arrival[n - late:]]
    running, overlaps, starts, stored, runs = set(), [], {}, {}, {}  # runs: key -> [(start, end)] of its handler runs
    h = Handlers()
    @h.on('invoice.*')
    async def handle(ev):
        if ev.key in running: overlaps.append((ev.key, ev.id))
        running.add(ev.key)
        t0 = starts.setdefault(ev.id, time.monotonic()) if ev.attempt == 1 else time.monotonic()
        i = int(ev.id[4:])
        assert (ev.key, ev.created) == (f'in_{keys[i]}', AT + created[i])
        try: await asyncio.sleep(delays[i])
        finally: running.discard(ev.key); runs.setdefault(ev.key, []).append((t0, time.monotonic()))
        if ev.attempt <= fails[i]: raise RuntimeError(f'planned failure {ev.attempt} of {fails[i]}')
    def log(batch):
        t.log(batch)
        for e in batch: stored[e.id] = time.monotonic()
    async def main():
        ws = [Worker(store, h, concurrency=3, batch=8, max_attempts=3, backoff=0.002, max_backoff=0.01)
              for _ in range(nworkers)]
        deadline = time.monotonic() + 60
        def done(): return len(second) == 0 or second[0].id in stored
        async def loop(w):
            while True:
                if await w.step([t.name]): continue
                if done() and all(e.status in FINAL for e in statuses(t).values()): return
                assert time.monotonic() < deadline, {e.id: e.status for e in statuses(t).values()}
                await asyncio.sleep(0.002)
        async def arrive_late():
            while not starts and time.monotonic() < deadline: await asyncio.sleep(0.001)
            if second: log(second)
        log(first); runs[None] = [(0.0, time.monotonic())]  # the workers start now
        await asyncio.gather(arrive_late(), *(loop(w) for w in ws))
        for w in ws: await w.stop(1)
    asyncio.run(main())
    assert overlaps == [], 'two events of one key ran at once'
    rows = statuses(t)
    assert all(e.status in FINAL for e in rows.values())
    for e in rows.values():
        i = int(e.id[4:])
        if e.status == 'superseded':  # only with --skip-stale, and only behind a newer completed event of its key
            assert skip_stale and 'superseded by evt_' in e.note, e
            newer = rows[e.note.split()[2]]
            j = int(newer.id[4:])
            assert newer.status == 'completed' and keys[j] == keys[i] and created[j] > created[i]
        elif e.status == 'failed': assert fails[i] >= 3, e
        else: assert e.status == 'completed' and fails[i] < 3, e
    if on_failure == 'hold':  # provider order among the events stored when a key's next event was chosen
        def chosen(i):  # when the worker chose `i` to run next: the end of its key's run before it, or the start
            before = [e for s, e in runs[f'in_{keys[i]}'] if e <= starts[f'evt_{i:04d}']]
            return max(before, default=runs[None][0][1])
        for a, b in itertools.permutations(range(n), 2):
            ia, ib = f'evt_{a:04d}', f'evt_{b:04d}'
            if keys[a] != keys[b] or ia not in starts or ib not in starts or created[b] > created[a]: continue
            if stored[ib] < chosen(a): assert starts[ib] < starts[ia], (ib, 'created first, stored in time', ia)
    t.close()

# ---------------------------------------------------------------- rules, one at a time

def test_a_failing_event_holds_its_key_and_continue_lets_it_move_on(store):
    for mode, expect in (('hold', ['in_A:1']), ('continue', ['in_A:2'])):
        t = ordered_tenant(store, on_failure=mode)
        t.log([stripe_event(1, 'in_A', 10), stripe_event(2, 'in_A', 20), stripe_event(3, 'in_B', 5)])
        now = time.time()
        a, b = t.claim(now=now)
        assert [(c.id, c.key) for c in (a, b)] == [('evt_0001', 'in_A'), ('evt_0003', 'in_B')]
        assert t.claim(now=now) == []  # in_A runs; in_B has nothing more
        assert t.waiting(t.find('evt_0002')) == 'waiting behind evt_0001 (running, attempt 1 of 5)'
        t.record([Outcome(a.seq, a.id, 1, now, now, 'retry', 'RuntimeError: CRM down'),
                  Outcome(b.seq, b.id, 1, now, now, 'completed')], retry_at=lambda o: now + 60)
        got = [f'{c.key}:{c.id[-1]}' for c in t.claim(now=now + 1)]
        assert got == ([] if mode == 'hold' else ['in_A:2'])
        if mode == 'hold':
            assert [(x.key, x.id, x.attempts, x.waiting) for x in t.held()] == [('in_A', 'evt_0001', 1, 1)]
            assert t.waiting(t.find('evt_0002')) == 'waiting behind evt_0001 (failed, attempt 1 of 5)'
            assert [f'{c.key}:{c.id[-1]}' for c in t.claim(now=now + 61)] == expect  # its retry, before the next
        else: assert t.held() == []
        t.close()

def test_a_claim_takes_runs_of_keys_in_line_order_up_to_the_first_event_outside_its_window(store):
    t = ordered_tenant(store)
    t.log([stripe_event(1, 'in_A', 20), stripe_event(2, 'in_A', 10), stripe_event(3, 'in_A', 30), stripe_event(4, 'in_B', 5)])
    now = time.time()
    first = t.claim(batch=1, now=now, chains=True)  # its window, evt_0001, is not the first of in_A's line: heads instead
    assert [c.id for c in first] == ['evt_0002']
    t.release(first)  # given back, its attempt not counted
    got = t.claim(batch=2, now=now, chains=True)  # window evt_0001-2: in_A's line up to evt_0003, outside it
    assert [(c.id, c.key, c.attempt) for c in got] == [('evt_0002', 'in_A', 1), ('evt_0001', 'in_A', 1)]
    assert [c.id for c in t.claim(batch=10, now=now, chains=True)] == ['evt_0004']  # in_A runs: only in_B's
    t.close()

def test_a_late_arrival_after_the_claim_is_seen_with_the_claims_mark(store):
    "The check between waves may skip its probes by what the claim saw (`mark`), but never past a delivery since."
    t = ordered_tenant(store)
    t.log([stripe_event(i, 'in_A', 10 * i) for i in range(1, 4)] + [stripe_event(9, 'in_B', 5)])
    got = t.claim(batch=10, chains=True)
    later, mark = [c for c in got if c.id in ('evt_0002', 'evt_0003')], t.mark
    assert len(later) == 2 and t.overtaken(later, mark) == t.overtaken(later) == set()  # nothing new: nothing to yield
    t.log([stripe_event(4, 'in_A', 15)])  # created between evt_0001 and evt_0002, delivered now
    assert t.overtaken(later, mark) == {c.seq for c in later}  # both now wait behind it
    t.close()

def test_a_flood_of_one_key_hides_no_key_behind_it(store):
    "10,000 events of one invoice, then one event each of five others: while the flood's run holds its key, the heads pass finds the five."
    t = ordered_tenant(store)
    for i in range(0, 10_000, 5000): t.log([stripe_event(j, 'in_flood', j) for j in range(i, i + 5000)])
    t.log([stripe_event(10_000 + k, f'in_{k}', k) for k in range(5)])
    now, got = time.time(), []
    for _ in range(3):  # the flood's run first; the others within the next claims, never after the flood has drained
        got += t.claim(batch=1000, now=now, chains=True)
        if {c.key for c in got} >= {f'in_{k}' for k in range(5)}: break
    assert {c.key for c in got} == {'in_flood', *(f'in_{k}' for k in range(5))}
    flood = [c.id for c in got if c.key == 'in_flood']
    assert flood == [f'evt_{j:04d}' for j in range(len(flood))] and len(flood) <= 16  # one run of it, in its order
    t.close()

def test_a_worker_runs_a_keys_run_in_turn_and_gives_back_the_rest_after_a_failure(store):
    t = ordered_tenant(store)
    t.log([stripe_event(i, 'in_A', i) for i in range(1, 5)] + [stripe_event(9, 'in_B', 1)])
    seen, h = [], Handlers()
    @h.on('*')
    def handle(ev):
        seen.append(ev.id)
        if ev.id == 'evt_0002': raise RuntimeError('CRM down')
    w = Worker(store, h, concurrency=4, backoff=60)
    assert asyncio.run(w.step([t.name])) == 3
    assert sorted(seen) == ['evt_0001', 'evt_0002', 'evt_0009'] and seen.index('evt_0001') < seen.index('evt_0002')
    rows = statuses(t)
    assert [(rows[f'evt_000{i}'].status, rows[f'evt_000{i}'].attempts) for i in (1, 2, 3, 4, 9)] == [
        ('completed', 1), ('pending', 1), ('pending', 0), ('pending', 0), ('completed', 1)]  # 3 and 4 given back unstarted
    assert t.claim() == []  # in_A is held by evt_0002's retry, due in a minute
    t.close()

def test_skip_stale_supersedes_only_older_events_and_a_replay_takes_its_place_again(store):
    t = ordered_tenant(store, skip_stale=True)
    t.log([stripe_event(1, 'in_A', 30)])
    (c,) = t.claim()
    t.record([Outcome(c.seq, c.id, 1, 1, 2, 'completed')])
    t.log([stripe_event(2, 'in_A', 10), stripe_event(3, 'in_A', 40)])  # a late, older one, and a newer one
    assert [x.id for x in t.claim()] == ['evt_0003']  # the older one is superseded at its claim, not run
    old = t.events(id='evt_0002')[0]
    assert old.status == 'superseded' and old.attempts == 0
    assert old.note == 'superseded by evt_0001 (created 20 s later, already completed)'
    t.set_source('stripe', skip_stale=False)
    t.replay('evt_0002')  # replayed: back in its place, first of its key's line once evt_0003 is done
    assert t.waiting(t.find('evt_0002')) == 'waiting behind evt_0003 (running, attempt 1 of 5)'
    t.log([stripe_event(4, 'in_A', 35)])
    (c3,) = [x for x in t.events(id='evt_0003')]
    t.record([Outcome(c3.seq, c3.id, 1, 1, 2, 'completed')])
    assert [x.id for x in t.claim()] == ['evt_0002']
    t.close()

def test_unordered_sources_and_events_without_a_key_run_in_parallel(store):
    t = ordered_tenant(store)
    t.add_source('gh', 'github', 'github-secret-0123456789')
    t.log([NewEvent('gh_1', 'gh', 'push', '{}', None, 'gh:gh_1'), NewEvent('gh_2', 'gh', 'push', '{}', None, 'gh:gh_2'),
           NewEvent('evt_x', 'stripe', 'ping', '{"id":"evt_x"}', None, 'stripe:evt_x'),  # no invoice: no key
           stripe_event(1, 'in_A', 1), stripe_event(2, 'in_A', 2)])
    got = t.claim()
    assert sorted((c.id, c.key) for c in got) == [('evt_0001', 'in_A'), ('evt_x', None), ('gh_1', None), ('gh_2', None)]
    assert all(c.created is not None for c in got)  # unordered: when it was received
    t.close()

# ---------------------------------------------------------------- a real Stripe sequence, over HTTP

def test_stripe_signed_sequence_delivered_in_reverse_reaches_handlers_in_creation_order(store):
    t = ordered_tenant(store)
    t.close()
    name = t.name
    steps = ['invoice.created', 'invoice.finalized', 'invoice.payment_failed', 'invoice.payment_succeeded',
             'invoice.paid']
    bodies = [invoice(i, obj, i * 7 + (obj == 'in_B'), typ) for obj in ('in_A', 'in_B')
              for i, typ in enumerate(steps, 1 if obj == 'in_A' else 11)]
    with Server(serve_app(store, worker=False)) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for body in reversed(bodies):
            hdr = stripe.WebhookSignature.generate_signature_header(body, STRIPE, int(time.time()))
            r = c.post(f'/webhooks/{name}/stripe', content=body.encode(),
                       headers={'Content-Type': 'application/json', 'Stripe-Signature': hdr})
            assert r.status_code == 200 and r.json()['duplicate'] is False, r.text
    seen = []
    h = Handlers()
    @h.on('invoice.*')
    def handle(ev): seen.append((ev.key, ev.type, ev.created))
    asyncio.run(Worker(store, h, concurrency=4).drain([name]))
    for obj in ('in_A', 'in_B'):
        mine = [x for x in seen if x[0] == obj]
        assert [typ for _, typ, _ in mine] == steps, mine  # arrival was the reverse
        assert [cr for *_, cr in mine] == sorted(cr for *_, cr in mine)

# ---------------------------------------------------------------- two worker processes, one SIGKILLed

HOOKS = '''import os, time
from webhooks.worker import on
LOG = os.environ['ORDER_LOG']
def note(*words):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (' '.join(map(str, words)) + '\\n').encode()); os.close(fd)
@on('invoice.*')
def work(ev):
    note('start', ev.key, ev.id, os.getpid(), repr(time.time()))
    time.sleep(0.05)
    note('end', ev.key, ev.id, os.getpid(), repr(time.time()))
'''

def test_two_worker_processes_one_killed_never_run_a_key_twice_at_once(pg_url, tmp_path, q):
    from webhooks.postgres import PgStore
    store = PgStore(pg_url)
    t = ordered_tenant(store)
    keys, per = 40, 6  # more keys than a worker runs at once
    # each key's newest event is stored first
    evs = [stripe_event(k * per + j, f'in_{k}', per - j) for k in range(keys) for j in range(per)]
    (tmp_path/'hooks.py').write_text(HOOKS)
    log = tmp_path/'runs.log'
    env = {**os.environ, 'ORDER_LOG': str(log)}
    cmd = [str(BIN/'webhooks-worker'), '--db', pg_url, '--handlers', str(tmp_path/'hooks.py'), '--concurrency', '3']
    start = lambda: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    procs = [start(), start()]
    try:
        for p in procs: assert 'processing' in p.stdout.readline()  # both up before the events arrive
        t.log(evs)
        deadline = time.monotonic() + 60
        def running(pid):  # runs of `pid` started and not ended, per the handlers' log
            lines = log.read_text().splitlines() if log.exists() else []
            return {l.split()[2] for l in lines if l.startswith('start') and l.split()[3] == str(pid)} - \
                   {l.split()[2] for l in lines if l.startswith('end') and l.split()[3] == str(pid)}
        victim = None  # the worker with a run going (the first to claim may hold every key's run: 6 events < a batch)
        while not (log.exists() and log.read_text().count('end') >= 10 and
                   (victim := next((p for p in procs if running(p.pid)), None))):
            assert time.monotonic() < deadline, (log.exists() and log.read_text()[-500:], [p.poll() for p in procs])
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL); victim.wait()
        killed_at = time.time()
        while q(t, "SELECT count(*) n FROM webhook_events WHERE status != 'completed'")[0]['n']:
            assert time.monotonic() < deadline + 60, q(t, 'SELECT status, count(*) n FROM webhook_events GROUP BY 1')
            time.sleep(0.05)
    finally:
        stop_all(procs)
    runs, open_ = {}, {}
    for line in log.read_text().splitlines():
        what, key, eid, pid, at = line.split()
        if what == 'start': open_[(eid, pid)] = float(at)
        else: runs.setdefault(key, []).append((open_.pop((eid, pid)), float(at), eid, pid))
    cut = [(eid, pid, at) for (eid, pid), at in open_.items()]
    assert cut and all(pid == str(victim.pid) for _, pid, _ in cut), 'the kill cut no run short'
    for eid, pid, at in cut:  # a run the kill cut short lasted until the kill
        runs.setdefault(f'in_{int(eid[4:]) // per}', []).append((at, killed_at, eid, pid))
    for key, rs in runs.items():
        rs.sort()
        for (s0, e0, id0, _), (s1, e1, id1, _) in zip(rs, rs[1:]):
            assert s1 >= e0, f'{key}: {id1} started while {id0} ran'
        order = [eid for _, _, eid, _ in rs]
        order = [x for i, x in enumerate(order) if i == 0 or order[i - 1] != x]  # a cut run is run again at once
        k = int(key[3:])
        assert order == [f'evt_{k * per + j:04d}' for j in reversed(range(per))], (key, order)  # creation order
    hist = q(t, "SELECT count(*) n FROM webhook_attempts WHERE outcome='lapsed'")[0]['n']
    assert hist >= len(cut)  # every claim of the killed worker (running or not yet started) was taken over
    store.close()

# ---------------------------------------------------------------- the dashboard

def test_dashboard_sets_ordering_and_shows_held_keys_and_what_an_event_waits_behind(store):
    from fasthtml.common import FastHTML
    from starlette.testclient import TestClient
    from webhooks.dashboard import install_dashboard
    from test_sessions import TOKEN, csrf_in, logged_in
    app = FastHTML(sess_cls=None, secret_key='tests-only')
    install_dashboard(app, store, token=TOKEN)
    t = ordered_tenant(store)
    c = logged_in(TestClient(app))
    form = lambda **kw: {'csrf': csrf_in(c.get(f'/admin/sources?tenant={t.name}').text), 'name': 'stripe', **kw}
    r = c.post(f'/admin/sources/{t.name}/order', data=form(order_by='data..id', on_failure='hold', skip_stale='false'))
    assert r.status_code == 400 and 'dotted payload path' in r.text and t.sources()[0].order_by == 'data.object.id'
    r = c.post(f'/admin/sources/{t.name}/order',
               data=form(order_by='data.object.id', on_failure='hold', skip_stale='true'))
    assert r.status_code == 200 and 'Ordering set' in r.text and 'one at a time per' in r.text
    assert (t.sources()[0].on_failure, t.sources()[0].skip_stale) == ('hold', True)
    t.log([stripe_event(1, 'in_A', 10), stripe_event(2, 'in_A', 20)])
    (a,) = t.claim()
    t.record([Outcome(a.seq, a.id, 1, 1, 2, 'retry', 'RuntimeError: CRM down')], retry_at=lambda o: time.time() + 600)
    page = c.get('/admin/').text
    assert 'Held keys' in page and 'stripe/in_A' in page and 'held by' in page and '1 waiting' in page
    page = c.get(f'/admin/events/{t.name}/{t.find("evt_0002")}').text
    assert 'waiting behind evt_0001 (failed, attempt 1 of 5)' in page
    r = c.post(f'/admin/sources/{t.name}/order', data=form(order_by='', on_failure='continue', skip_stale='false'))
    assert r.status_code == 200 and t.sources()[0].order_by is None
    t.close()

def test_skip_stale_counts_earlier_completions_and_a_copy_carries_the_order(store, tmp_path):
    from webhooks.store import SqliteStore, copy_tenant
    t = ordered_tenant(store)  # skip_stale off while evt_0001 completes
    t.log([stripe_event(1, 'in_A', 30), stripe_event(2, 'in_A', 40)])
    (c,) = t.claim()
    t.record([Outcome(c.seq, c.id, 1, 1, 2, 'completed')])
    t.set_source('stripe', skip_stale=True)  # what completed before counts
    t.log([stripe_event(3, 'in_A', 10)])
    assert [x.id for x in t.claim()] == ['evt_0002'] and t.events(id='evt_0003')[0].status == 'superseded'
    dst = SqliteStore(tmp_path/'copy').open(t.name, create=True)
    copy_tenant(t, dst)
    assert (dst.sources()[0].order_by, dst.sources()[0].skip_stale) == ('data.object.id', True)
    assert dst.events(id='evt_0003')[0].status == 'superseded'
    (c2,) = dst.claim()  # evt_0002 arrives pending (its lease was the old store's), its key and time intact
    assert (c2.id, c2.key, c2.created) == ('evt_0002', 'in_A', AT + 40)
    dst.log([stripe_event(4, 'in_A', 20)])  # older than evt_0001, completed in the old store
    dst.record([Outcome(c2.seq, c2.id, c2.attempt, 1, 2, 'completed')])
    assert dst.claim() == [] and dst.events(id='evt_0004')[0].note.startswith('superseded by evt_0002')
    t.close(); dst.close()

# ---------------------------------------------------------------- the command line

def test_cli_sets_ordering_and_lists_held_keys(tmp_path):
    from webhooks.store import SqliteStore
    run = lambda *a: subprocess.run([str(BIN/a[0]), *a[1:], '--root', str(tmp_path)], capture_output=True, text=True)
    r = run('webhooks-source', 'acme', 'stripe', '--scheme', 'stripe', '--secret', STRIPE, '--order-by', 'data.object.id')
    assert r.returncode == 0 and 'order-by=data.object.id  on-failure=hold' in r.stdout, r.stderr
    r = run('webhooks-source', 'acme', 'stripe', '--on-failure', 'later')
    assert r.returncode != 0 and "--on-failure must be 'hold' or 'continue'" in r.stderr
    r = run('webhooks-source', 'acme', 'stripe', '--skip-stale')
    assert r.returncode == 0 and 'skip-stale' in r.stdout
    assert run('webhooks-events', 'acme', '--held').stdout.strip() == 'no held keys in acme'
    t = SqliteStore(tmp_path).open('acme')
    t.log([stripe_event(1, 'in_A', 10), stripe_event(2, 'in_A', 20)])
    (a,) = t.claim()
    t.record([Outcome(a.seq, a.id, 1, 1, 2, 'retry', 'RuntimeError: CRM down')], retry_at=lambda o: time.time() + 600)
    t.close()
    out = run('webhooks-events', 'acme', '--held').stdout
    assert out.startswith('stripe  key=in_A  held by evt_0001 (failed, attempt 1;') and '1 waiting' in out, out
    assert json.loads(run('webhooks-events', 'acme', '--held', '--json').stdout)['waiting'] == 1
    r = run('webhooks-source', 'acme', 'stripe', '--order-by', '')
    assert r.returncode == 0 and 'order-by' not in r.stdout
