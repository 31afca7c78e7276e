"""`webhooks-listen` against a real `webhooks-serve` and a real local app, on both backends; the stream's route; and the
commit-order rule on PostgreSQL under concurrent transactions.

Every process and port is this test's own (free ports, temporary folders); waits are on conditions with deadlines."""
import json, os, signal, subprocess, threading, time
from pathlib import Path
import httpx, pytest, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from helpers import BIN, Server, free_port
from webhooks.engine import Cursor, cursor_text
from webhooks.records import NewEvent
from webhooks.signatures import sign

ADMIN = 'adm_listen_test_0123456789abcdef'
STRIPE = 'whsec_listen_0123456789abcdefghij'
LOCAL = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'

def until(cond, what:str, timeout:float=60):
    "Wait for `cond()` to be true, or fail saying `what` did not happen."
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline: raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.02)

class Serve:
    "`webhooks-serve` on a port of our choosing (a restart comes back on the same one), its store given by `where`."
    def __init__(self, where, port:int):
        flag = '--db' if where.startswith('postgres') else '--root'
        self.url = f'http://127.0.0.1:{port}'
        self.p = subprocess.Popen([str(BIN/'webhooks-serve'), flag, where, '--port', str(port), '--no-worker'],
                                  env={**os.environ, 'WEBHOOKS_ADMIN_TOKEN': ADMIN}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        def up():
            if self.p.poll() is not None: raise AssertionError(f'webhooks-serve ended: {self.p.stderr.read()}')
            try: return httpx.get(self.url + '/healthz', timeout=1).status_code == 200
            except httpx.HTTPError: return False
        until(up, 'webhooks-serve to answer')

    def stop(self):
        "SIGINT, as Ctrl-C: it must stop even with a relay's stream open."
        self.p.send_signal(signal.SIGINT)
        try: self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill(); self.p.wait()
            raise AssertionError('webhooks-serve did not stop within 20 s with a stream open')

class LocalApp:
    "The developer's app on 127.0.0.1: records each request's (body, headers); answers `status(body)`."
    def __init__(self, port:int|None=None, status=lambda body: 200):
        self.port, self.got, self.status = port or free_port(), [], status
        self.url = f'http://127.0.0.1:{self.port}/webhooks/acme/stripe'
    async def hook(self, request):
        body = await request.body()
        self.got.append((body, dict(request.headers)))
        return Response(b'ok', self.status(body))
    def start(self):
        app = Starlette(routes=[Route('/webhooks/acme/stripe', self.hook, methods=['POST'])])
        self.server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=self.port, log_level='warning'))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        until(lambda: self.server.started, 'the local app to start', 20)
        return self
    def stop(self):
        self.server.should_exit = True; self.thread.join(20)
    def ids(self)->list[str]: return [json.loads(b)['id'] for b, _ in self.got]

class Listen:
    "`webhooks-listen` in a subprocess, its stdout lines collected."
    def __init__(self, server:str, local:str, cursor:Path, *flags):
        self.p = subprocess.Popen([str(BIN/'webhooks-listen'), server, '--tenant', 'acme', '--token', ADMIN,
                                   '--forward-to', local, '--cursor', str(cursor), *flags],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.p.stdout.readline, '')), daemon=True)
        self.reader.start()
        until(lambda: cursor.exists(), 'the relay to connect and keep the stream\'s cursor', 30)
    def kill(self): self.p.kill(); self.p.wait()
    def stop(self)->str:
        "Ctrl-C; its stderr."
        self.p.send_signal(signal.SIGINT)
        self.p.wait(timeout=20); self.reader.join(10)  # every line it printed is in `lines` now
        err = self.p.stderr.read()
        assert self.p.returncode == 0 and 'Traceback' not in err, err
        return err

def post(server:str, i:str, typ:str='invoice.paid'):
    "A Stripe delivery of event `i` to tenant acme, signed as Stripe signs."
    body = json.dumps({'id': i, 'object': 'event', 'type': typ, 'data': {'object': {'amount': 1999}}}).encode()
    r = httpx.post(f'{server}/webhooks/acme/stripe', content=body, timeout=10,
                   headers={**sign('stripe', body, STRIPE), 'Content-Type': 'application/json'})
    assert r.status_code == 200, r.text

@pytest.fixture
def served(store, where):
    "A store with tenant acme and its Stripe source, served by `webhooks-serve` on a port of its own."
    store.open('acme', create=True).add_source('stripe', 'stripe', STRIPE)
    port = free_port()
    s = Serve(where(store), port)
    yield s, where(store), port
    if s.p.poll() is None: s.stop()

def test_a_relay_killed_while_50_events_arrive_delivers_all_once_in_order(served, tmp_path):
    import stripe
    server, where, port = served
    app = LocalApp().start()
    try:
        cursor = tmp_path/'acme.cursor'
        relay = Listen(server.url, app.url, cursor)
        start = cursor.read_text()
        post(server.url, 'evt_warm')
        until(lambda: app.ids() == ['evt_warm'] and cursor.read_text() != start, 'the live event, and its cursor kept')
        relay.kill()  # (killed between the app's 2xx and the cursor's write, the relay would send that event again)
        for i in range(50): post(server.url, f'evt_{i}')
        relay = Listen(server.url, app.url, tmp_path/'acme.cursor')
        post(server.url, 'evt_end')
        until(lambda: 'evt_end' in app.ids(), 'the events sent while the relay was off, then a live one')
        assert app.ids() == ['evt_warm', *(f'evt_{i}' for i in range(50)), 'evt_end']
        for body, hd in app.got:  # the provider's own library accepts the relayed bytes and signature
            stripe.WebhookSignature.verify_header(body.decode(), hd['stripe-signature'], STRIPE, tolerance=300)
            assert 'authorization' not in hd and hd['content-type'] == 'application/json'
        assert 'stopped after 51 delivered' in relay.stop()
        assert sum('evt_' in l and '-> 200' in l for l in relay.lines) == 51  # this run's: 50 + evt_end
    finally: app.stop()

def test_a_server_restarted_mid_flow_loses_nothing_and_repeats_nothing(served, tmp_path):
    server, where, port = served
    app = LocalApp().start()
    try:
        relay = Listen(server.url, app.url, tmp_path/'acme.cursor')
        for i in range(20): post(server.url, f'evt_{i}')
        until(lambda: len(app.got) >= 3, 'the first events')
        server.stop()  # the stream is cut mid-flow
        server = Serve(where, port)
        for i in range(20, 40): post(server.url, f'evt_{i}')
        post(server.url, 'evt_end')
        until(lambda: 'evt_end' in app.ids(), 'every event, the server restarted')
        assert app.ids() == [*(f'evt_{i}' for i in range(40)), 'evt_end']
        relay.stop()
        assert any('reconnecting in' in l for l in relay.lines) and any('connected again' in l for l in relay.lines)
    finally:
        app.stop()
        if server.p.poll() is None: server.stop()

def test_a_local_app_that_is_down_is_retried_then_delivered_signed_afresh(served, tmp_path):
    from standardwebhooks import Webhook
    server, where, port = served
    app = LocalApp()  # not started: the developer's app is down
    relay = Listen(server.url, app.url, tmp_path/'acme.cursor', '--sign-with', LOCAL, '--scheme', 'standard',
                   '--type', 'invoice.*')
    for i in range(3): post(server.url, f'evt_{i}')
    post(server.url, 'cus_1', 'customer.created')  # not an invoice event: not relayed
    until(lambda: sum('ConnectError' in l for l in relay.lines) >= 3, 'tries against the app that is down')
    app.start()
    try:
        until(lambda: len(app.got) >= 3, 'the events, once the app is up')
        post(server.url, 'evt_end')
        until(lambda: 'evt_end' in app.ids(), 'a live event')
        assert app.ids() == ['evt_0', 'evt_1', 'evt_2', 'evt_end']
        for body, hd in app.got: assert Webhook(LOCAL).verify(body, hd)['type'] == 'invoice.paid'
        relay.stop()
        assert [l.split()[1] for l in relay.lines if '-> 200' in l] == ['invoice.paid']*4
    finally: app.stop()

def test_max_attempts_gives_up_says_so_and_moves_on(served, tmp_path):
    server, where, port = served
    app = LocalApp(status=lambda body: 500 if b'evt_bad' in body else 204).start()
    try:
        relay = Listen(server.url, app.url, tmp_path/'acme.cursor', '--max-attempts', '2')
        post(server.url, 'evt_bad'); post(server.url, 'evt_ok')
        until(lambda: 'evt_ok' in app.ids(), 'the event after the one given up')
        assert app.ids() == ['evt_bad', 'evt_bad', 'evt_ok']
        relay.stop()
        assert any('evt_bad: gave up after 2 tries' in l for l in relay.lines)
    finally: app.stop()

def test_since_starts_further_back_than_the_cursor(served, tmp_path):
    server, where, port = served
    for i in range(3): post(server.url, f'evt_{i}')
    app = LocalApp().start()
    try:
        relay = Listen(server.url, app.url, tmp_path/'acme.cursor')  # a first start: only what commits from now on
        post(server.url, 'evt_live')
        until(lambda: app.ids() == ['evt_live'], 'the live event')
        relay.stop()
        relay = Listen(server.url, app.url, tmp_path/'acme.cursor', '--since', '1h')
        until(lambda: len(app.got) == 5, 'the hour again')
        assert app.ids() == ['evt_live', 'evt_0', 'evt_1', 'evt_2', 'evt_live']
        relay.stop()
    finally: app.stop()

def test_refusals_end_the_relay_with_one_line(served, tmp_path):
    server, where, port = served
    p = subprocess.run([str(BIN/'webhooks-listen'), server.url, '--tenant', 'acme', '--token', 'wrong-token-0123456789',
                        '--forward-to', 'http://127.0.0.1:9/x', '--cursor', str(tmp_path/'c')],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and p.stderr.strip().endswith(
        'the server refused the stream (401): this token is not valid here'), p.stderr

# ---------------------------------------------------------------- the route, in a server of its own

def stream_lines(url:str, n:int, **params)->list[str]:
    "The first `n` non-blank lines of a stream."
    out = []
    with httpx.stream('GET', url, params=params, headers={'Authorization': f'Bearer {ADMIN}'}, timeout=10) as r:
        assert r.status_code == 200 and r.headers['content-type'].startswith('text/event-stream')
        for line in r.iter_lines():
            if line: out.append(line)
            if len(out) == n: return out

def test_the_route_sends_the_past_then_live_events_then_heartbeats(store):
    from fasthtml.common import FastHTML
    from webhooks.stream import install_stream
    t = store.open('acme', create=True)
    t.log([NewEvent(f'evt_{i}', 'stripe', 'invoice.paid', b'\xff\x00' + bytes([i]), None, f'stripe:evt_{i}', 'pending',
                    1767225600 + i, '{"user-agent":"Stripe/1.0"}') for i in range(3)])
    app = FastHTML(sess_cls=None, secret_key='x' * 32)
    install_stream(app, store, admin_token=ADMIN, heartbeat=0.3, poll=0.05)
    with Server(app) as s:
        url = f'{s.url}/api/v1/tenants/acme/events/stream'
        lines = stream_lines(url, 10, after=cursor_text(Cursor(0, 0)))
        assert lines[0] == 'event: ready'
        data = [json.loads(l[6:]) for l in lines if l.startswith('data: ') and '"body"' in l]
        assert [d['id'] for d in data] == ['evt_0', 'evt_1', 'evt_2'] and data[1]['headers'] == {'user-agent': 'Stripe/1.0'}
        import base64
        assert base64.b64decode(data[2]['body']) == b'\xff\x00\x02'  # the exact bytes, not UTF-8
        assert lines[-1] == ': heartbeat'
        ids = [l[4:] for l in lines if l.startswith('id: ')]
        assert stream_lines(url, 5, after=ids[2])[3:] == lines[7:9]  # after the second event: the third
        assert stream_lines(url, 4, after=ids[3])[3] == ': heartbeat'  # nothing after the last: a heartbeat
        refused = lambda **kw: httpx.get(url, **kw, timeout=10)
        assert refused().status_code == 401 and refused().headers['www-authenticate'] == 'Bearer'
        assert refused(params={'token': ADMIN}).json()['error'] == 'token_in_url'
        hd = {'Authorization': f'Bearer {ADMIN}'}
        assert refused(params={'after': 'nonsense'}, headers=hd).json()['error'] == 'invalid_query'
        assert httpx.get(f'{s.url}/api/v1/tenants/nobody/events/stream', headers=hd).status_code == 404

# ---------------------------------------------------------------- PostgreSQL: commit order under concurrent transactions

def test_postgres_never_lets_a_reader_pass_an_event_still_in_flight(pg_url):
    "`seq` 2 commits while `seq` 1 is still in flight: a naive `seq > cursor` reader takes 2 and loses 1 forever."
    import psycopg
    from webhooks.postgres import PgStore
    s = PgStore(pg_url)
    try:
        t = s.open('acme', create=True)
        ins = (f'INSERT INTO {t.t}webhook_events (id, source, event_type, payload, idempotency_key, received_at) '
               "VALUES (%s, 'stripe', 'invoice.paid', '{}', %s, 1767225600) RETURNING seq")
        with psycopg.connect(pg_url) as slow, psycopg.connect(pg_url, autocommit=True) as fast:
            (s1,) = slow.execute(ins, ('evt_slow', 'stripe:evt_slow')).fetchone()   # in flight
            (s2,) = fast.execute(ins, ('evt_fast', 'stripe:evt_fast')).fetchone()   # committed
            assert s1 < s2
            naive = [r['id'] for r in t.q('SELECT id FROM webhook_events WHERE seq > 0 ORDER BY seq')]
            assert naive == ['evt_fast']  # a reader keeping `seq` as its cursor would now be past evt_slow
            assert t.committed(Cursor(0, 0)) == [] and t.head() == Cursor(0, 0)
            slow.commit()
        # readable once no older transaction is running anywhere on the server (autovacuum's ANALYZE has one too)
        until(lambda: len(t.committed(Cursor(0, 0))) == 2, 'both events to be readable', 20)
        got = t.committed(Cursor(0, 0))
        assert [e.id for e in got] == ['evt_slow', 'evt_fast'] and t.head() == got[-1].cursor
    finally: s.close()

def test_postgres_readers_see_every_event_of_racing_transactions_exactly_once(pg_url):
    "Eight writers commit in random order, each after a random pause; a reader following cursors sees each event once."
    import random, psycopg
    from webhooks.postgres import PgStore
    s = PgStore(pg_url)
    try:
        t = s.open('acme', create=True)
        ins = (f'INSERT INTO {t.t}webhook_events (id, source, event_type, payload, idempotency_key, received_at) '
               "VALUES (%s, 'stripe', 'invoice.paid', '{}', %s, 1767225600)")
        def writer(w):
            rnd = random.Random(w)
            with psycopg.connect(pg_url) as c:
                for i in range(25):
                    c.execute(ins, (f'evt_{w}_{i}', f'stripe:evt_{w}_{i}'))
                    time.sleep(rnd.random() * 0.004)  # the commit comes later; others commit meanwhile
                    c.commit()
        ws = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for th in ws: th.start()
        seen, cur = [], Cursor(0, 0)
        while any(th.is_alive() for th in ws) or len(seen) < 200:
            page = t.committed(cur, 7)
            seen += [e.id for e in page]
            if page: cur = page[-1].cursor
            assert len(seen) <= 200
        for th in ws: th.join()
        assert sorted(seen) == sorted(f'evt_{w}_{i}' for w in range(8) for i in range(25)) and t.committed(cur) == []
        for w in range(8): assert [x for x in seen if x.startswith(f'evt_{w}_')] == [f'evt_{w}_{i}' for i in range(25)]
    finally: s.close()

def test_the_stream_takes_the_apis_tokens_and_refuses_the_rest(served, store):
    "Scoped tokens (read-only too) open their own tenant's stream; other tenants', revoked, wrong and missing ones don't."
    server, where, port = served
    acme = store.open('acme')
    scoped, reader, gone = acme.add_token('laptop'), acme.add_token('ci', read_only=True), acme.add_token('old')
    assert acme.revoke_token('old')
    beta = store.open('beta', create=True).add_token('beta-laptop')
    def opened(token:str|None, tenant:str='acme')->tuple[int, str]:
        "The stream's status, and its first message's event name (or the refusal's error code)."
        hd = {} if token is None else {'Authorization': f'Bearer {token}'}
        with httpx.stream('GET', f'{server.url}/api/v1/tenants/{tenant}/events/stream', headers=hd, timeout=10) as r:
            if r.status_code != 200: return r.status_code, json.loads(r.read())['error']
            for line in r.iter_lines():  # the first message comes at once: `ready`, with the starting cursor
                if line.startswith('event:'): return 200, line.split(':', 1)[1].strip()
    assert opened(ADMIN) == opened(scoped) == opened(reader) == (200, 'ready')
    assert opened(ADMIN, 'beta') == (200, 'ready')
    assert opened(beta) == (404, 'unknown_tenant')  # another tenant's token: acme is as unknown as a missing name
    assert opened(scoped, 'beta') == opened(scoped, 'nosuch') == (404, 'unknown_tenant')
    assert opened(gone)[0] == opened('wht_acme.wrong-token-0123456789')[0] == opened(None)[0] == 401
