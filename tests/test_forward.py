"""Forwarding against real HTTP servers on 127.0.0.1, on both backends: answers of every kind, fan-out with filters,
caps measured at the destination, the SSRF guard end to end, and a worker killed mid-delivery."""
import asyncio, json, os, signal, subprocess, threading, time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import pytest
from standardwebhooks import Webhook
from webhooks.records import NewEvent
from webhooks.forward import Deliverer, UnsafeURL
from webhooks.worker import Alerts
from helpers import BIN

class Destination:
    """A service on 127.0.0.1 receiving forwarded events: verifies each with `standardwebhooks` against its secret, and
    answers per path: /ok 200, /flaky 500 the first time per event then 200, /hang never, /gone 410, /slow after
    `slow` seconds, /fail 500 always. Records (path, event id, time, verified) and the most requests it had at once."""
    def __init__(self, slow:float=0.3):
        self.secrets, self.got, self.seen, self.slow, self.lock = {}, [], Counter(), slow, threading.Lock()
        self.now = self.peak = 0
        self.release = threading.Event()
        me = self
        class H(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def log_message(self, *a): pass
            def do_POST(self): me.handle(self)
        self.srv = ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.srv.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.srv.server_address[1]}'
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def handle(self, r):
        body = r.rfile.read(int(r.headers['content-length']))
        path = r.path.split('?')[0]
        try: Webhook(self.secrets[path]).verify(body, dict(r.headers)); ok = True
        except Exception: ok = False
        eid = json.loads(body)['id']
        with self.lock:
            self.now += 1; self.peak = max(self.peak, self.now)
            self.seen[(path, eid)] += 1; first = self.seen[(path, eid)] == 1
            self.got.append((path, eid, time.time(), ok, dict(r.headers)))
        try:
            if path == '/hang': self.release.wait(30); status = 200
            elif path == '/slow': time.sleep(self.slow); status = 200
            else: status = {'/ok': 200, '/gone': 410, '/fail': 500, '/flaky': 500 if first else 200}[path]
            status = status if ok else 400
            out = b'{"received":true}' if status == 200 else b'nope'
            r.send_response(status); r.send_header('content-length', str(len(out))); r.end_headers(); r.wfile.write(out)
        finally:
            with self.lock: self.now -= 1

    def ids(self, path:str)->list: return [e for p, e, *_ in self.got if p == path]
    def close(self): self.release.set(); self.srv.shutdown()

@pytest.fixture
def dest():
    d = Destination()
    yield d
    d.close()

def add(t, dest, name, path, **kw):
    d, secret = t.add_destination(name, dest.url + path, allow_private=True, **kw)
    dest.secrets[path] = secret
    return d

def events(t, n, source='stripe', type='invoice.paid', live=True, start=0, headers=None):
    t.log([NewEvent(f'evt_{i}', source, type, json.dumps({'id': f'evt_{i}', 'data': {'livemode': live}}), None,
                    f'{source}:evt_{i}', headers=headers) for i in range(start, start + n)])

def run_until(store, cond, timeout=20.0, deliverers=1, **kw):
    "Run `deliverers` Deliverers on `store` until `cond()` holds (or fail after `timeout` s); their alerts."
    got = []
    async def main():
        ds = [Deliverer(store, alerts=Alerts(hook=got.append), poll=0.05, **kw) for _ in range(deliverers)]
        for d in ds: d.start()
        deadline = time.monotonic() + timeout
        try:
            while not await asyncio.to_thread(cond):
                assert time.monotonic() < deadline, 'timed out waiting for the deliveries'
                await asyncio.sleep(0.02)
        finally:
            for d in ds: await d.stop(grace=1)
        await asyncio.sleep(0.05)  # the alert hooks' tasks
    asyncio.run(main())
    return got

def statuses(t, name): return Counter(d.status for d in t.deliveries(destination=name, limit=10_000))

def test_200_signed_and_recorded(store, dest):
    t = store.open('acme', create=True)
    add(t, dest, 'ok', '/ok')
    events(t, 3, headers='{"content-type":"application/json","x-provider":"stripe"}')
    run_until(store, lambda: statuses(t, 'ok') == {'completed': 3})
    assert sorted(dest.ids('/ok')) == ['evt_0', 'evt_1', 'evt_2'] and all(ok for *_, ok, _ in dest.got)
    h = dest.got[0][4]
    assert h['webhook-id'].startswith('evt_') and 'x-provider' not in h  # provider headers only with pass_headers
    (d,) = t.deliveries(destination='ok', event_seq=t.find('evt_1'))
    (a,) = t.delivery_attempts([d.seq])
    assert (a.status_code, a.outcome, a.answer) == (200, 'delivered', b'{"received":true}')
    assert {e.status for e in t.events()} == {'pending'}  # the events' own handler status is not touched
    t.close()

def test_pass_headers_and_exact_body(store, dest):
    t = store.open('acme', create=True)
    add(t, dest, 'ok', '/ok', pass_headers=True)
    body = '{"id": "evt_x",   "data": {"livemode": true}}'  # spacing kept: the exact bytes go on
    t.log([NewEvent('evt_x', 'stripe', 'invoice.paid', body, None, 'stripe:evt_x',
                    headers='{"content-type":"application/json","x-provider":"stripe","host":"example.com"}')])
    run_until(store, lambda: statuses(t, 'ok') == {'completed': 1})
    (_, _, _, ok, h), = dest.got
    assert ok and h['x-provider'] == 'stripe' and h['Host'].startswith('127.0.0.1')
    t.close()

def test_500_then_200_is_retried_with_backoff(store, dest):
    t = store.open('acme', create=True)
    add(t, dest, 'flaky', '/flaky')
    events(t, 2)
    run_until(store, lambda: statuses(t, 'flaky') == {'completed': 2}, backoff=0.05)
    assert Counter(dest.ids('/flaky')) == {'evt_0': 2, 'evt_1': 2}
    for d in t.deliveries(destination='flaky'):
        got = [(a.status_code, a.outcome) for a in t.delivery_attempts([d.seq])]
        assert got == [(500, 'retry'), (200, 'delivered')]
    assert t.destination('flaky').failures == 0  # a success resets the breaker's count
    t.close()

def test_a_destination_that_hangs_times_out_and_dead_letters(store, dest):
    t = store.open('acme', create=True)
    add(t, dest, 'hang', '/hang', timeout=0.3, max_attempts=2)
    events(t, 1)
    run_until(store, lambda: statuses(t, 'hang') == {'failed': 1}, backoff=0.05)
    (d,) = t.deliveries(destination='hang')
    assert [(a.status_code, a.outcome, a.error) for a in t.delivery_attempts([d.seq])] == \
        [(None, 'retry', 'no answer within 0.3 s'), (None, 'failed', 'no answer within 0.3 s')]
    assert d.error == 'no answer within 0.3 s' and t.events()[0].status == 'pending'
    t.close()

def test_410_disables_the_destination_and_alerts(store, dest):
    t = store.open('acme', create=True)
    add(t, dest, 'gone', '/gone', concurrency=1)
    events(t, 3)
    alerts = run_until(store, lambda: t.destination('gone').state == 'disabled' and statuses(t, 'gone')['failed'] == 1)
    assert len(dest.ids('/gone')) == 1 and statuses(t, 'gone') == {'failed': 1, 'pending': 2}  # the rest wait
    assert [a['kind'] for a in alerts if a['kind'].startswith('destination')] == ['destination_disabled']
    assert '410 Gone' in t.destination('gone').reason
    t.set_destination('gone', 'resume', url=dest.url + '/ok'); dest.secrets['/ok'] = dest.secrets['/gone']
    run_until(store, lambda: statuses(t, 'gone') == {'failed': 1, 'completed': 2})
    t.close()

def test_a_slow_destination_gets_its_deliveries_within_its_concurrency(store, dest):
    t = store.open('acme', create=True)
    add(t, dest, 'slow', '/slow', concurrency=2, timeout=5)
    events(t, 6)
    run_until(store, lambda: statuses(t, 'slow') == {'completed': 6})
    assert sorted(dest.ids('/slow')) == [f'evt_{i}' for i in range(6)] and dest.peak == 2
    t.close()

def test_circuit_breaker_pauses_alerts_and_resumes_after_the_cool_down(store, dest):
    t = store.open('acme', create=True)
    add(t, dest, 'fail', '/fail', concurrency=1, max_attempts=100)
    events(t, 1)
    alerts = run_until(store, lambda: t.destination('fail').state == 'paused', backoff=0.01, breaker=3, cool_down=3)
    d = t.destination('fail')
    assert d.failures == 3 and 'consecutive' in d.reason and len(dest.got) == 3
    assert [a['kind'] for a in alerts] == ['destination_paused'] and alerts[0]['destination'] == 'fail'
    run_until(store, lambda: len(dest.got) >= 6, backoff=0.01, breaker=3, cool_down=3)  # cool-down over: again
    t.close()

def test_fan_out_to_three_destinations_with_different_filters(store, dest):
    t = store.open('acme', create=True)
    add(t, dest, 'billing', '/ok', source='stripe', type='invoice.*', where='data.livemode=true')
    add(t, dest, 'all', '/slow')
    add(t, dest, 'ci', '/flaky', source='github', type='push')
    dest.slow = 0
    events(t, 2, live=True); events(t, 1, live=False, start=2)
    events(t, 1, type='customer.created', start=3); events(t, 2, source='github', type='push', start=10)
    run_until(store, lambda: sum(statuses(t, n)['completed'] for n in ('billing', 'all', 'ci')) == 10, backoff=0.05)
    assert sorted(dest.ids('/ok')) == ['evt_0', 'evt_1']
    assert sorted(dest.ids('/slow')) == ['evt_0', 'evt_1', 'evt_10', 'evt_11', 'evt_2', 'evt_3']
    assert Counter(dest.ids('/flaky')) == {'evt_10': 2, 'evt_11': 2}
    assert all(ok for *_, ok, _ in dest.got)
    t.close()

def test_deliver_again(store, dest):
    t = store.open('acme', create=True)
    add(t, dest, 'ok', '/ok')
    events(t, 1)
    run_until(store, lambda: statuses(t, 'ok') == {'completed': 1})
    assert t.deliver_again(t.find('evt_0'), 'ok') and not t.deliver_again(t.find('evt_0'), 'ok')
    run_until(store, lambda: statuses(t, 'ok') == {'completed': 1} and len(dest.got) == 2)
    assert dest.ids('/ok') == ['evt_0', 'evt_0']
    t.close()

def test_rate_and_concurrency_caps_hold_across_deliverers(store, dest):
    "Two deliverers (two claimers, as two processes or hosts would be) share one destination's caps."
    t = store.open('acme', create=True)
    add(t, dest, 'ok', '/ok', rate=10, concurrency=2)
    events(t, 30)
    run_until(store, lambda: statuses(t, 'ok') == {'completed': 30}, deliverers=2, timeout=30)
    times = sorted(at for _, _, at, *_ in dest.got)
    assert len(times) == 30 and dest.peak <= 2
    # a bucket of 10 tokens refilled at 10/s: 30 deliveries take at least 2 s, and a 1.5 s window at the destination
    # holds at most the bucket and what 1.5 s refill (+0.2 s: claim to arrival), 10 + 17
    assert times[-1] - times[0] >= 1.8, times[-1] - times[0]
    assert max(sum(1 for x in times if s <= x < s + 1.5) for s in times) <= 27
    t.close()

def test_ssrf_guard_refuses_loopback_at_add_and_at_delivery(store, dest, monkeypatch, q):
    monkeypatch.delenv('WEBHOOKS_ALLOW_PRIVATE', raising=False)
    t = store.open('acme', create=True)
    for url in (dest.url + '/ok', dest.url.replace('127.0.0.1', 'localhost') + '/ok'):
        with pytest.raises(UnsafeURL) as e: t.add_destination('internal', url)
        assert e.value.reason == 'loopback'
    add(t, dest, 'internal', '/ok')
    q(t, 'UPDATE webhook_destinations SET allow_private=0')  # as if the guard's allowance were taken away
    events(t, 1)
    run_until(store, lambda: statuses(t, 'internal') == {'failed': 1}, backoff=0.01)
    atts = t.delivery_attempts([t.deliveries(destination='internal')[0].seq])
    assert dest.got == [] and all(a.error.startswith('refused by the SSRF guard: loopback') for a in atts)
    t.close()

def test_an_event_stored_before_any_fan_out_is_not_lost(store, dest):
    "The fan-out marker commits with the event: a process gone before fanning out leaves it for the next one."
    t = store.open('acme', create=True)
    add(t, dest, 'ok', '/ok')
    events(t, 5)  # stored; no deliverer ran yet (as if the process died right after the commit)
    assert t.deliveries() == []
    run_until(store, lambda: statuses(t, 'ok') == {'completed': 5})
    assert sorted(dest.ids('/ok')) == [f'evt_{i}' for i in range(5)]
    t.close()

def worker(store, where):
    flag = '--db' if hasattr(store, 'url') else '--root'
    return subprocess.Popen([str(BIN/'webhooks-worker'), flag, where(store)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, 'WEBHOOKS_ALLOW_PRIVATE': ''})

def test_sigkill_mid_delivery_loses_nothing_and_repeats_no_2xx(store, dest, where):
    t = store.open('acme', create=True)
    add(t, dest, 'ok', '/ok'); add(t, dest, 'slow', '/slow', concurrency=4)
    dest.slow = 0.4
    events(t, 20)
    p = worker(store, where)
    deadline = time.monotonic() + 30
    while len(dest.ids('/slow')) < 6:
        assert time.monotonic() < deadline and p.poll() is None, 'the worker did not start delivering'
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    done = {(d.destination, d.event_seq) for d in t.deliveries(status='completed', limit=10_000)}
    before = Counter(dest.seen)
    assert 0 < len(done) < 40
    p = worker(store, where)
    try:
        deadline = time.monotonic() + 60
        while statuses(t, 'ok') != {'completed': 20} or statuses(t, 'slow') != {'completed': 20}:
            assert time.monotonic() < deadline and p.poll() is None, (statuses(t, 'ok'), statuses(t, 'slow'))
            time.sleep(0.05)
    finally: p.terminate(); p.wait(20)
    path = {'ok': '/ok', 'slow': '/slow'}
    ids = {s: e.id for e in t.events(limit=100) for s in [e.seq]}
    for name in path:  # every matching event reached every destination at least once
        assert set(dest.ids(path[name])) == {f'evt_{i}' for i in range(20)}
    for name, seq in done:  # what was recorded as delivered before the kill was never sent again
        assert dest.seen[(path[name], ids[seq])] == before[(path[name], ids[seq])] == 1
    assert all(ok for *_, ok, _ in dest.got)
    t.close()

def test_webhooks_copy_carries_destinations_and_deliveries(store, dest, where, tmp_path):
    t = store.open('acme', create=True)
    add(t, dest, 'ok', '/ok'); add(t, dest, 'later', '/slow', where='data.livemode=false')
    events(t, 3)
    run_until(store, lambda: statuses(t, 'ok') == {'completed': 3})
    events(t, 1, start=3)  # stored, not yet fanned out: the copy fans it out
    out = subprocess.run([str(BIN/'webhooks-copy'), '--from', where(store), '--to', str(tmp_path/'copy')],
                         capture_output=True, text=True, check=True).stdout
    assert 'acme: 2 destination(s), 3 deliveries copied' in out, out
    from webhooks.sqlite import SqliteStore
    other = SqliteStore(tmp_path/'copy'); c = other.open('acme')
    assert [d.name for d in c.destinations()] == ['later', 'ok'] and c.destination_secret('ok') == dest.secrets['/ok']
    assert statuses(c, 'ok') == {'completed': 3}
    d = c.deliveries(destination='ok', event_seq=c.find('evt_1'))[0]
    assert [a.status_code for a in c.delivery_attempts([d.seq])] == [200]
    run_until(other, lambda: statuses(c, 'ok') == {'completed': 4})
    assert sorted(dest.ids('/ok')) == ['evt_0', 'evt_1', 'evt_2', 'evt_3']  # nothing sent twice
    c.close(); other.close(); t.close()

def test_a_hanging_destination_holds_up_no_other(store, dest):
    t = store.open('acme', create=True)
    add(t, dest, 'hang', '/hang', timeout=60, concurrency=4)
    add(t, dest, 'ok', '/ok')
    events(t, 8)
    run_until(store, lambda: statuses(t, 'ok') == {'completed': 8} and len(dest.ids('/hang')) == 4)
    assert statuses(t, 'hang')['completed'] == 0  # its four are still hanging while the others all went through
    t.close()
