"""Riding out outages: a PostgreSQL server stopped and started under load, the worker's backends killed, a tenant file
write-locked by another process, and handlers that raise, exit their process or never return.

Each test bounds its loops in count and time and checks what the issue promises: every delivery answered 200 is stored
exactly once and reaches a terminal status; a handler never runs twice for one event unless its process died; the
receiver stores again, and the worker claims again, within 2 s of the database's return; during an outage deliveries get
a JSON 503 with `Retry-After`, within the request's own bound (never past 15 s). Recovery times are printed (`-s`).

The PostgreSQL tests run a server of their own (the session's shared one stays up for the other tests), started by
pytest-postgresql's executor as conftest does, stopped with `pg_ctl stop -m fast|immediate` and started again."""
import asyncio, collections, contextlib, json, os, shutil, signal, subprocess, sys, tempfile, threading, time
from pathlib import Path

import httpx
import pytest

from conftest import PG_CTL, PostgreSQLExecutor, no_postgres, q, server_binaries
from helpers import Serve
from test_cli import run
from webhooks.signatures import sign
from webhooks.store import SqliteStore, log_webhook_event
from webhooks.worker import Handlers, Worker

SECRET = 'outage-secret-0123456789'
TOKEN = 'outage-admin-token-0123456789'
TERMINAL = {'completed', 'failed', 'unhandled'}
BOUND = 2.0      # seconds after the database's return by which the receiver stores and the worker claims again
REQUEST_MAX = 15 # seconds a delivery may take to be answered, outage or not

HOOKS = '''
import asyncio, os, threading, time
from webhooks.worker import on
LOG = {log!r}
def ran(ev):  # one line per handler run: id, process, attempt, start time
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try: os.write(fd, f"{{ev.id}} {{os.getpid()}} {{ev.attempt}} {{time.time():.3f}}\\n".encode())
    finally: os.close(fd)
@on('order.paid')
def paid(ev): ran(ev)
@on('order.flaky')
def flaky(ev):
    ran(ev)
    if ev.attempt == 1: raise ConnectionError('the CRM timed out')
@on('order.crash')
def crash(ev): ran(ev); os._exit(1)
@on('order.hang')
def hang(ev):
    ran(ev)
    if ev.attempt == 1: threading.Event().wait()  # never returns
@on('order.ahang')
async def ahang(ev):
    ran(ev)
    if ev.attempt == 1: await asyncio.sleep(3600)
'''

class Service(Serve):
    "`Serve` with its stderr read as it comes (a full pipe would block the service's writers), `err` at exit."
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.p.stderr.readline, '')), daemon=True)
        self.reader.start()
    def __exit__(self, *exc):
        self.p.send_signal(signal.SIGINT)
        try: self.p.wait(30)
        except subprocess.TimeoutExpired: self.p.kill(); self.p.wait()
        self.reader.join(10)
        self.err = ''.join(self.lines)
        tracebacks = [i for i, l in enumerate(self.lines) if l.startswith('Traceback')]
        assert all(i and 'webhooks.worker: handler for' in self.lines[i-1] for i in tracebacks), self.err

def delivery(eid:str, type:str='order.paid')->tuple[bytes,dict]:
    body = json.dumps({'id': eid, 'type': type, 'amount': 4900}).encode()
    return body, {'Content-Type': 'application/json', **sign('generic', body, SECRET)}

def site_for(tmp_path:Path)->Path:
    "A folder with the handler module (its log: handled.log); the tests' processes run in it."
    (tmp_path/'outage_hooks.py').write_text(HOOKS.format(log=str(tmp_path/'handled.log')))
    return tmp_path

def handled(site:Path)->list[tuple]:
    "(id, pid, attempt, start time) of every handler run so far."
    log = site/'handled.log'
    rows = [l.split() for l in (log.read_text().splitlines() if log.exists() else [])]
    return [(i, int(p), int(a), float(t)) for i, p, a, t in rows]

class Sender:
    "Threads posting signed deliveries with fresh ids until stopped; every answer (or error) kept with its times."
    def __init__(self, url:str, threads:int=6, every:float=0.03, types=lambda n: 'order.paid'):
        self.url, self.every, self.types = url, every, types
        self.answers, self.n, self.lock, self.stopped = [], 0, threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]
    def _run(self, k:int):
        with httpx.Client(timeout=30) as c:
            while not self.stopped.is_set():
                with self.lock: self.n += 1; eid = f'evt_{k}_{self.n:06d}'
                body, h = delivery(eid, self.types(self.n))
                t0 = time.time()
                try:
                    r = c.post(self.url, content=body, headers=h)
                    got = dict(status=r.status_code, json=r.json(), retry_after=r.headers.get('retry-after'))
                except httpx.HTTPError as e: got = dict(status=None, error=repr(e))
                self.answers.append(dict(id=eid, t0=t0, t1=time.time(), **got))
                self.stopped.wait(self.every)
    def __enter__(self):
        for t in self.threads: t.start()
        return self
    def __exit__(self, *exc):
        self.stopped.set()
        for t in self.threads: t.join(40)
    def ok(self)->list[str]: return [a['id'] for a in self.answers if a['status'] == 200]
    def first_ok_after(self, t:float)->float:
        "Seconds from `t` to the first 200 answered after it."
        return min(a['t1'] for a in self.answers if a['status'] == 200 and a['t1'] >= t) - t

def wait_for(cond, timeout:float, what:str, every:float=0.1):
    "Wait until `cond()` is true, at most `timeout` seconds."
    deadline = time.monotonic() + timeout
    while not (v := cond()):
        assert time.monotonic() < deadline, f'{what}: not within {timeout:g} s'
        time.sleep(every)
    return v

def check_refusals(s:Sender):
    "Every answer came within the bound; every refusal is a JSON 503 with Retry-After; no connection failed."
    assert not [a for a in s.answers if a['status'] is None], [a for a in s.answers if a['status'] is None][:3]
    slowest = max(a['t1'] - a['t0'] for a in s.answers)
    assert slowest < REQUEST_MAX, f'a delivery took {slowest:.1f} s to be answered'
    refused = [a for a in s.answers if a['status'] != 200]
    assert {a['status'] for a in refused} <= {503}, {a['status'] for a in refused}
    for a in refused: assert a['json']['error'] == 'store_unavailable' and int(a['retry_after']) > 0, a
    return len(refused), slowest

def check_stored(rows:list[dict], ok:list[str], runs:list[tuple], died:set=frozenset(), retried:set=frozenset()):
    "Every id answered 200 is stored once and terminal; a handler ran again only after a retry or its process died."
    by = collections.Counter(r['id'] for r in rows)
    assert all(by[i] == 1 for i in ok), [(i, by[i]) for i in ok if by[i] != 1][:5]
    status = {r['id']: r['status'] for r in rows}
    assert all(status[i] in TERMINAL for i in ok), [(i, status[i]) for i in ok if status[i] not in TERMINAL][:5]
    per = collections.defaultdict(list)
    for i, pid, attempt, t in sorted(runs, key=lambda r: (r[0], r[2])): per[i].append(pid)
    again = {i: pids for i, pids in per.items() if len(pids) > 1 and i not in retried and not set(pids[:-1]) <= died}
    assert not again, f'outcomes run again although their process lived: {list(again.items())[:5]}'

# ---------------------------------------------------------------- a PostgreSQL server of our own, stopped and started

@pytest.fixture(scope='module')
def own_pg():
    "A PostgreSQL server for this module alone: `stop(mode)` and `start()` it at will."
    if PostgreSQLExecutor is None: no_postgres('psycopg or pytest-postgresql is not installed')
    if not server_binaries(): no_postgres('PostgreSQL server binaries (pg_ctl, initdb) not found')
    from port_for import get_port
    home = Path(tempfile.mkdtemp(prefix='webhooks-outage-pg-'))
    try:
        ex = PostgreSQLExecutor(executable=str(PG_CTL), host='127.0.0.1', port=get_port(None), datadir=str(home/'data'),
                                unixsocketdir=str(home), logfile=str(home/'postgresql.log'), startparams='-w',
                                dbname='tests', user='postgres')
        ex.start(); ex.wait_for_postgres()
        ctl = lambda *a: subprocess.run([str(PG_CTL), *a], check=True, capture_output=True, timeout=90)
        ex.stop_as = lambda mode: ctl('stop', '-D', str(home/'data'), '-m', mode, '-w')
        def start_again()->float:
            "Start the server; when it first accepted a connection (pg_ctl's own -w answers up to a tick later)."
            import psycopg
            p, deadline = subprocess.Popen(ex.command_parts, stdout=subprocess.DEVNULL), time.monotonic() + 90
            while True:
                try: psycopg.connect(f'{ex.base}/postgres', connect_timeout=2).close(); back = time.time(); break
                except psycopg.OperationalError:
                    assert time.monotonic() < deadline, 'PostgreSQL did not start again'
                    time.sleep(0.01)
            assert p.wait(90) == 0
            return back
        ex.base, ex.start_again = f'postgresql://postgres@127.0.0.1:{ex.port}', start_again
        yield ex
        with contextlib.suppress(Exception): ex.start_again()  # up, so the executor stops it as it started it
        with contextlib.suppress(Exception): ex.stop()
    finally: shutil.rmtree(home, ignore_errors=True)

@pytest.fixture
def own_db(own_pg, request):
    "A fresh database on `own_pg` (the server up), dropped afterwards."
    import psycopg
    with contextlib.suppress(Exception): own_pg.start_again()  # a test that failed mid-outage left it stopped
    name = f'outage_{os.getpid()}_{request.node.name}'.translate(str.maketrans('[]-', '___')).lower()[:60]
    with psycopg.connect(f'{own_pg.base}/postgres', autocommit=True) as c: c.execute(f'CREATE DATABASE "{name}"')
    yield f'{own_pg.base}/{name}'
    with psycopg.connect(f'{own_pg.base}/postgres', autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

def pg_rows(url:str)->list[dict]:
    from webhooks.postgres import PgStore
    s = PgStore(url)
    try:
        t = s.open('acme')
        return q(t, 'SELECT id, status FROM webhook_events')
    finally: s.close()

@pytest.mark.parametrize('mode', ['fast', 'immediate'])
@pytest.mark.parametrize('outage', [5, 60])
def test_postgres_outage(own_pg, own_db, tmp_path, mode, outage):
    "webhooks-serve on PostgreSQL, the server stopped for `outage` s under load: 503s meanwhile, back within 2 s."
    site, keys = site_for(tmp_path), tmp_path/'keys'
    assert run('webhooks-source', 'acme', 'gen', '--scheme', 'generic', '--secret', SECRET, '--db', own_db,
               '--root', keys).returncode == 0
    with Service('--db', own_db, '--root', keys, '--handlers', 'outage_hooks', cwd=site,
               env={'WEBHOOKS_ADMIN_TOKEN': TOKEN}) as srv:
        with Sender(f'{srv.url}/webhooks/acme/gen') as s:
            wait_for(lambda: len(s.ok()) >= 20 and handled(site), 20, 'deliveries before the outage')
            own_pg.stop_as(mode)
            down = time.time()
            time.sleep(outage)  # the outage itself: its length is what the test is about
            back = own_pg.start_again()
            wait_for(lambda: any(a['status'] == 200 and a['t1'] >= back for a in s.answers), 30,
                     'a delivery stored again')
            wait_for(lambda: any(t >= back for *_, t in handled(site)), 30, 'the worker handling again')
            wait_for(lambda: len([a for a in s.answers if a['t0'] > back + 3]) >= 20, 30, 'deliveries after the return')
        stored = wait_for(lambda: (r := pg_rows(own_db)) and all(x['status'] in TERMINAL for x in r) and r, 60,
                          'every stored event terminal')  # the service still runs: its worker handles the last ones
    ok = s.ok()
    refused, slowest = check_refusals(s)
    receiver, worker = s.first_ok_after(back), min(t for *_, t in handled(site) if t >= back) - back
    print(f'\nPostgreSQL stopped -m {mode} for {outage} s: receiver stored again {receiver:.2f} s and the worker '
          f'claimed again {worker:.2f} s after its return; {refused} deliveries refused meanwhile (slowest answer '
          f'{slowest:.1f} s), {len(ok)} stored')
    assert refused > 0 and all(down - 1 <= a['t1'] <= back + BOUND for a in s.answers if a['status'] == 503)
    check_stored(stored, ok, handled(site))
    assert receiver <= BOUND, f'the receiver stored again only {receiver:.2f} s after the database returned'
    assert worker <= BOUND, f'the worker claimed again only {worker:.2f} s after the database returned'

def test_killed_worker_backends_lose_no_outcome(pg_server, pg_url):
    "The worker's connections killed (pg_terminate_backend) again and again mid-run: every outcome recorded once."
    import psycopg
    from webhooks.postgres import PgStore
    h, runs = Handlers(), collections.Counter()
    @h.on('order.paid')
    def paid(ev): runs[(ev.id, ev.attempt)] += 1; time.sleep(0.03)
    setup = PgStore(pg_url)
    t = setup.open('acme', create=True)
    for i in range(400): log_webhook_event(t, f'evt_{i:04d}', 'gen', 'order.paid', '{}', 's', f'gen:evt_{i:04d}')
    app = 'webhooks-outage-worker'
    w = Worker(PgStore(f'{pg_url}?application_name={app}'), h, concurrency=4, batch=50, flush=0.05, poll=0.1)
    killed = []
    def kill():
        with psycopg.connect(pg_url, autocommit=True) as c:
            return c.execute('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s',
                             (app,)).fetchall()
    async def main():
        w.start()
        for _ in range(30):  # bounded: 30 rounds of killing every backend the worker holds
            killed.extend(await asyncio.to_thread(kill)); await asyncio.sleep(0.1)
        deadline = time.monotonic() + 60
        while (left := q(t, "SELECT count(*) n FROM webhook_events WHERE status NOT IN ('completed')")[0]['n']):
            assert time.monotonic() < deadline, f'{left} events never reached a terminal status'
            await asyncio.sleep(0.1)
        await w.stop()
    try:
        asyncio.run(main())
        lapsed = q(t, "SELECT count(*) n FROM webhook_attempts WHERE outcome='lapsed'")[0]['n']
    finally: setup.close(); w.store.close()
    print(f'\n{len(killed)} worker backends killed; {sum(runs.values())} handler runs for 400 events')
    assert len(killed) >= 6
    assert sorted(i for i, _ in runs) == sorted(f'evt_{i:04d}' for i in range(400)), 'an event ran twice or never'
    assert set(runs.values()) == {1} and lapsed == 0

# ---------------------------------------------------------------- SQLite: a tenant file locked by another process

LOCKER = '''
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('BEGIN EXCLUSIVE')
print('locked', flush=True)
time.sleep(float(sys.argv[2]))
c.execute('COMMIT')
print('free', time.time(), flush=True)
'''

def test_sqlite_tenant_locked_by_another_process(tmp_path):
    "A tenant file write-locked for 10 s: deliveries wait out the busy timeout and get a JSON 503; all resumes after."
    site, root = site_for(tmp_path), tmp_path/'data'
    t = SqliteStore(root).open('acme', create=True); t.add_source('gen', 'generic', SECRET); t.close()
    with Service('--root', root, '--handlers', 'outage_hooks', cwd=site) as srv:
        with Sender(f'{srv.url}/webhooks/acme/gen') as s:
            wait_for(lambda: len(s.ok()) >= 20 and handled(site), 20, 'deliveries before the lock')
            locker = subprocess.Popen([sys.executable, '-c', LOCKER, str(root/'acme.db'), '10'],
                                      stdout=subprocess.PIPE, text=True)
            assert locker.stdout.readline().strip() == 'locked'
            locked = time.time()
            free = float(locker.stdout.readline().split()[1])  # the moment it committed
            assert locker.wait(30) == 0
            wait_for(lambda: any(a['status'] == 200 and a['t1'] >= free for a in s.answers), 30,
                     'a delivery stored again')
            wait_for(lambda: any(t >= free for *_, t in handled(site)), 30, 'the worker handling again')
            wait_for(lambda: len([a for a in s.answers if a['t0'] > free + 2]) >= 20, 30, 'deliveries after the lock')
        db = SqliteStore(root).open('acme')  # the service still runs: its worker handles what was stored last
        try:
            rows = wait_for(lambda: (r := q(db, 'SELECT id, status FROM webhook_events')) and
                            all(x['status'] in TERMINAL for x in r) and r, 60, 'every stored event terminal')
        finally: db.close()
    ok = s.ok()
    refused, slowest = check_refusals(s)
    receiver, worker = s.first_ok_after(free), min(t for *_, t in handled(site) if t >= free) - free
    print(f'\nSQLite tenant locked 10 s: {refused} deliveries refused (slowest answer {slowest:.1f} s); stored again '
          f'{receiver:.2f} s and handled again {worker:.2f} s after the lock went')
    assert refused > 0 and all(locked - 1 <= a['t0'] <= free for a in s.answers if a['status'] == 503)
    check_stored(rows, ok, handled(site))
    assert receiver <= BOUND and worker <= BOUND

# ---------------------------------------------------------------- handlers that raise, exit, or never return

def metric(url:str, name:str)->float:
    text = httpx.get(f'{url}/metrics', headers={'Authorization': f'Bearer {TOKEN}'}).text
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name))

def test_handlers_that_raise_or_hang_are_retried_and_free_their_slot(tmp_path):
    "Under webhooks-serve --timeout 1: a handler that raises, one that hangs (plain) and one that sleeps (async)."
    site, root = site_for(tmp_path), tmp_path/'data'
    t = SqliteStore(root).open('acme', create=True); t.add_source('gen', 'generic', SECRET); t.close()
    odd = {5: 'order.flaky', 9: 'order.hang', 13: 'order.ahang', 17: 'order.hang', 21: 'order.ahang', 25: 'order.flaky'}
    with Service('--root', root, '--handlers', 'outage_hooks', '--timeout', 1, cwd=site,
               env={'WEBHOOKS_ADMIN_TOKEN': TOKEN}) as srv:
        kinds = lambda n: odd.get(n, 'order.paid')
        with Sender(f'{srv.url}/webhooks/acme/gen', threads=1, every=0.02, types=kinds) as s:
            wait_for(lambda: s.n > 120, 30, 'deliveries')
        ok = s.ok()
        db = SqliteStore(root).open('acme')
        try:
            rows = wait_for(lambda: (r := q(db, 'SELECT id, status, attempts, error_message FROM webhook_events')) and
                            all(x['status'] in TERMINAL for x in r) and r, 60, 'every stored event terminal')
            hist = q(db, 'SELECT webhook_id, attempt, outcome, error FROM webhook_attempts ORDER BY seq')
        finally: db.close()
        abandoned = wait_for(lambda: (m := metric(srv.url, 'webhooks_handler_threads_abandoned_total')) >= 2 and m, 10,
                             'the abandoned threads counted in /metrics')
    check_refusals(s)
    assert len(ok) == len(s.answers)  # nothing refused: the handlers never touched the receiver
    odd_ids = {a['id']: odd[int(a['id'].rsplit('_', 1)[1])] for a in s.answers if int(a['id'].rsplit('_', 1)[1]) in odd}
    check_stored(rows, ok, handled(site), retried=set(odd_ids))
    by = {r['id']: r for r in rows}
    for eid, kind in odd_ids.items():
        assert by[eid]['status'] == 'completed' and by[eid]['attempts'] == 2, (eid, kind, by[eid])
        first = [h for h in hist if h['webhook_id'] == eid][0]
        want = 'ConnectionError' if kind == 'order.flaky' else 'TimeoutError: handler ran longer than 1 s'
        assert first['outcome'] == 'retry' and first['error'].startswith(want), (eid, first)
    assert abandoned == 2  # the two plain handlers that hung; the async ones were cancelled

def test_hung_plain_handlers_never_stall_the_worker(tmp_path):
    "The issue's case: concurrency 2, timeout 0.5 s, handlers that never return: later events still run, hung ones end."
    release, h, done = threading.Event(), Handlers(), []
    @h.on('hang')
    def hang(ev): release.wait(60)
    @h.on('quick')
    def quick(ev): done.append(ev.id)
    root = tmp_path/'data'
    t = SqliteStore(root).open('acme', create=True)
    for i in range(4): log_webhook_event(t, f'hang{i}', 's', 'hang', '{}', 's', f's:hang{i}')
    for i in range(60): log_webhook_event(t, f'quick{i}', 's', 'quick', '{}', 's', f's:quick{i}')
    w = Worker(root, h, concurrency=2, timeout=0.5, max_attempts=3, backoff=0.05, flush=0.05, poll=0.05, max_stuck=100)
    async def main():
        w.start()
        deadline = time.monotonic() + 30
        while q(t, "SELECT count(*) n FROM webhook_events WHERE status NOT IN ('completed', 'failed')")[0]['n']:
            assert time.monotonic() < deadline, q(t, 'SELECT id, status, attempts FROM webhook_events WHERE status '
                                                    "NOT IN ('completed', 'failed')")
            await asyncio.sleep(0.05)
        await w.stop()
    try: asyncio.run(main())
    finally: release.set(); t.close()
    t = SqliteStore(root).open('acme')
    rows = {r['id']: r for r in q(t, 'SELECT id, status, attempts, error_message FROM webhook_events')}
    t.close()
    assert sorted(done) == sorted(f'quick{i}' for i in range(60))
    for i in range(4):
        assert rows[f'hang{i}'] == dict(id=f'hang{i}', status='failed', attempts=3,
                                        error_message='TimeoutError: handler ran longer than 0.5 s')
    assert w.abandoned == 12

def test_stuck_threads_past_the_limit_stop_the_worker(tmp_path):
    "Past `max_stuck` abandoned threads the worker stops itself (`exhausted`), for its process to be started afresh."
    release, h = threading.Event(), Handlers()
    @h.on('hang')
    def hang(ev): release.wait(60)
    root = tmp_path/'data'
    t = SqliteStore(root).open('acme', create=True)
    for i in range(3): log_webhook_event(t, f'hang{i}', 's', 'hang', '{}', 's', f's:hang{i}')
    w = Worker(root, h, concurrency=3, timeout=0.2, flush=0.05, poll=0.05, max_stuck=2)
    async def main():
        await asyncio.wait_for(w.start(), 20)  # run() returns by itself
        await w.stop()
    try: asyncio.run(main())
    finally: release.set()
    assert w.exhausted and w.abandoned == 3
    assert {r['status'] for r in q(t, 'SELECT status FROM webhook_events')} == {'pending'}  # retried by the next one
    t.close()

def test_a_handler_that_exits_its_process_never_takes_the_receiver_down(tmp_path):
    "os._exit(1) in a handler, under webhooks-serve's default: every delivery answered, the poison event dead-lettered."
    site, root = site_for(tmp_path), tmp_path/'data'
    t = SqliteStore(root).open('acme', create=True); t.add_source('gen', 'generic', SECRET); t.close()
    with Service('--root', root, '--handlers', 'outage_hooks', cwd=site) as srv:
        kinds = lambda n: 'order.crash' if n == 10 else 'order.paid'
        with Sender(f'{srv.url}/webhooks/acme/gen', threads=4, types=kinds) as s:
            wait_for(lambda: sum(1 for i, *_ in handled(site) if i.endswith('_000010')) >= 5 and len(s.answers) > 400,
                     60, 'the poison event run five times')
        db = SqliteStore(root).open('acme')
        try:
            rows = wait_for(lambda: (r := q(db, 'SELECT id, status, lapses, error_message FROM webhook_events')) and
                            all(x['status'] in TERMINAL for x in r) and r, 60, 'every stored event terminal')
        finally: db.close()
    ok = s.ok()
    assert len(ok) == len(s.answers), [a for a in s.answers if a['status'] != 200][:3]  # no connection error, no 503
    runs = handled(site)
    crashed = {pid for i, pid, *_ in runs if i.endswith('_000010')}
    check_stored(rows, ok, runs, died=crashed)
    poison = [r for r in rows if r['id'].endswith('_000010')][0]
    assert poison['status'] == 'failed' and 'stopped mid-run 5 times' in poison['error_message'], poison
    assert all(r['status'] == 'completed' for r in rows if r is not poison)
    assert srv.err.count('starting it again') >= 5

def test_a_claim_whose_answer_was_lost_is_taken_over_while_the_worker_stays_busy(tmp_path):
    """A claim committed whose answer never reached the worker (the connection died after COMMIT): its event is
    `processing` under this live process. The worker renews only the leases it knows it holds, so that lease lapses and
    the event is taken over within a few leases, even while the worker's own batches never stop (it used to be renewed
    with them)."""
    h, ran, slow = Handlers(), [], 0.2
    @h.on('report.render')
    def render(ev): time.sleep(slow)
    @h.on('invoice.paid')
    def paid(ev): ran.append(ev.id)
    root = tmp_path/'data'
    t = SqliteStore(root).open('acme', create=True)
    log_webhook_event(t, 'evt_lost', 's', 'invoice.paid', '{}', 's', 's:evt_lost')
    (lost,) = t.claim(batch=1, lease=1.0)  # committed by this process, as the worker would; the worker never hears of it
    assert lost.id == 'evt_lost'
    w = Worker(root, h, concurrency=1, lease=1.0, timeout=5, flush=0.05, poll=0.05)
    async def main():
        w.start()
        t0, n = time.monotonic(), 0
        while 'evt_lost' not in ran:  # a new slow event every 0.1 s: the worker is never idle
            assert time.monotonic() - t0 < 15, q(t, "SELECT status, lease_until FROM webhook_events WHERE id='evt_lost'")
            log_webhook_event(t, f'evt_r{n}', 's', 'report.render', '{}', 's', f's:evt_r{n}'); n += 1
            await asyncio.sleep(0.1)
        busy = q(t, "SELECT count(*) n FROM webhook_events WHERE status IN ('pending', 'processing')")[0]['n']
        await w.stop()
        return time.monotonic() - t0, busy
    try: took, backlog = asyncio.run(main())
    finally: t.close()
    print(f'a lost claim was taken over in {took:.1f} s (lease 1 s), {backlog} events still queued behind the busy worker')
    assert backlog > 0 and ran == ['evt_lost']
