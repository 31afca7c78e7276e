"""What an operator sees of a running `webhooks-serve`: refused deliveries on record with a diagnosis (within a second,
never slowing the 4xx), a log line per request (text or JSON, no secrets), handler failures with their traceback,
Prometheus metrics behind the admin token, and unauthenticated health checks."""
import json, re, subprocess, time
import httpx, pytest
from webhooks.signatures import sign
from webhooks.store import SqliteStore

from helpers import BIN, Serve
SECRET = 'whsec_ops_test_0123456789'

@pytest.fixture
def root(tmp_path):
    r = tmp_path/'data'
    t = SqliteStore(r).open('acme', create=True)
    t.add_source('stripe', 'stripe', SECRET); t.close()
    return r

def post(url, body, headers): return httpx.post(url, content=body, headers={'Content-Type': 'application/json', **headers}, timeout=10)

def test_refusals_recorded_with_diagnosis_within_a_second(root):
    body = json.dumps({'id': 'evt_forged', 'type': 'invoice.paid'}).encode()
    with Serve('--root', root) as s:
        u = f'{s.url}/webhooks/acme'
        sent = time.time()
        assert post(f'{u}/stripe', body, sign('stripe', body, 'whsec_not_the_right_one_01')).status_code == 401        # forged
        assert post(f'{u}/stripe', body, sign('stripe', body, SECRET, timestamp=time.time() - 412)).status_code == 401  # stale
        assert post(f'{u}/paypal', body, sign('stripe', body, SECRET)).status_code == 404                              # unknown source
        assert post(f'{u}/stripe', body, {'X-Hub-Signature-256': 'sha256=' + '0' * 64}).status_code == 400          # wrong scheme
        t = SqliteStore(root).open('acme')
        while len(t.rejections()) < 4 and time.time() - sent < 1.0: time.sleep(0.02)
        got = {r.code: r for r in t.rejections()}
        assert time.time() - sent < 1.0 and len(got) == 4, got
    d = {c: r.diagnosis for c, r in got.items()}
    assert d['invalid_signature'].startswith("no signature matches the source's 1 secret(s)"), d
    assert re.fullmatch(r"timestamp 41[2-3] s old, tolerance 300 s: the sender's clock, or a replay of an old delivery", d['stale_timestamp']), d
    assert d['unknown_source'].startswith("tenant 'acme' has no source 'paypal'"), d
    assert d['missing_header'] == "no `Stripe-Signature` header: is this source's scheme (stripe) right? (it carries X-Hub-Signature-256: a github delivery?)"
    r = got['invalid_signature']
    assert r.remote == '127.0.0.1' and r.body == body and r.size == len(body) and r.source == 'stripe'
    h = json.loads(r.headers)
    assert h['stripe-signature'].endswith('…') and len(h['stripe-signature']) <= 13 and SECRET not in r.headers

def test_rejections_are_capped_and_pruned(root, tmp_path):
    from webhooks.store import Rejection
    t = SqliteStore(root).open('acme')
    old = time.time() - 40 * 86400
    t.reject([Rejection(old + i, 'stripe', None, 'invalid_signature', 'x', None, None, 0) for i in range(30)], cap=20)
    assert len(t.rejections(limit=100)) == 20
    p = subprocess.run([str(BIN/'webhooks-prune'), '--days', '30', '--root', str(root)], capture_output=True, text=True)
    assert p.returncode == 0 and '20 refused deliveries' in p.stdout, p.stdout + p.stderr
    assert t.rejections() == []

def test_log_lines_text_and_json_without_secrets(root, tmp_path):
    body = json.dumps({'id': 'evt_logged', 'type': 'invoice.paid'}).encode()
    (tmp_path/'hooks.py').write_text("from webhooks.worker import on\n@on('invoice.*')\ndef paid(ev): raise KeyError('customer')\n")
    with Serve('--root', root, '--log-format', 'json', '--handlers', tmp_path/'hooks.py') as s:
        assert post(f'{s.url}/webhooks/acme/stripe', body, sign('stripe', body, SECRET)).status_code == 200
        assert post(f'{s.url}/webhooks/acme/stripe', body, sign('stripe', body, 'whsec_wrong_0123456789')).status_code == 401
        time.sleep(0.5)
    lines = [json.loads(l) for l in s.err.splitlines() if l.startswith('{')]
    ok = next(l for l in lines if l.get('code') == 'new')
    assert (ok['tenant'], ok['source'], ok['status'], ok['event_id']) == ('acme', 'stripe', 200, 'evt_logged') and ok['ms'] > 0
    assert any(l.get('code') == 'invalid_signature' and l['status'] == 401 for l in lines)
    fail = next(l for l in lines if l['logger'] == 'webhooks.worker')
    assert 'KeyError' in fail['traceback'] and fail['event_id'] == 'evt_logged'
    assert SECRET not in s.err and 'v1=' not in s.err  # no secret, no signature value
    with Serve('--root', root) as s:
        post(f'{s.url}/webhooks/acme/stripe', body, sign('stripe', body, SECRET))
        time.sleep(0.2)
    assert re.search(r'INFO webhooks: acme/stripe 200 duplicate evt_logged \d+\.\dms', s.err), s.err

def test_metrics_need_the_admin_token_health_checks_do_not(root):
    body = json.dumps({'id': 'evt_m1', 'type': 'invoice.paid'}).encode()
    with Serve('--root', root, env={'WEBHOOKS_ADMIN_TOKEN': ''}) as s:
        token = re.search(r'admin token.*\n\s+(adm_\S+)', s.out)[1]
        post(f'{s.url}/webhooks/acme/stripe', body, sign('stripe', body, SECRET))
        post(f'{s.url}/webhooks/acme/stripe', body, sign('stripe', body, SECRET))
        post(f'{s.url}/webhooks/nobody/stripe', body, sign('stripe', body, SECRET))
        assert httpx.get(f'{s.url}/healthz').json() == {'ok': True}
        assert httpx.get(f'{s.url}/readyz').json() == {'ok': True}
        r = httpx.get(f'{s.url}/metrics')
        assert r.status_code == 401 and r.json()['error'] == 'unauthorized'
        assert httpx.get(f'{s.url}/metrics', headers={'Authorization': 'Bearer adm_wrong'}).status_code == 401
        m = httpx.get(f'{s.url}/metrics', headers={'Authorization': f'Bearer {token}'}).text
    assert 'webhooks_received_total{tenant="acme"} 1.0' in m and 'webhooks_duplicates_total{tenant="acme"} 1.0' in m
    assert 'webhooks_rejected_total{code="unknown_tenant",tenant="-"} 1.0' in m
    assert re.search(r'webhooks_ingest_seconds_count \d', m) and 'webhooks_queue_lag_seconds{tenant="acme"}' in m
    with Serve('--root', root) as s2: assert 'Created the admin token' not in s2.out and token not in s2.out  # once only
    assert (root/'.admin-token').stat().st_mode & 0o777 == 0o600

def test_dead_letter_alert_is_posted(root, tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    got = []
    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers['content-length']))))
            self.send_response(204); self.end_headers()
        def log_message(self, *a): pass
    srv = HTTPServer(('127.0.0.1', 0), H); threading.Thread(target=srv.serve_forever, daemon=True).start()
    (tmp_path/'hooks.py').write_text("from webhooks.worker import on\n@on('*')\ndef boom(ev): raise RuntimeError('crm down')\n")
    t = SqliteStore(root).open('acme')
    from webhooks.store import NewEvent
    seq, = t.log([NewEvent('evt_dead', 'stripe', 'invoice.paid', '{}', None, 'stripe:evt_dead')])
    t.c.execute('UPDATE webhook_events SET attempts=4 WHERE seq=?', (seq,))  # its last attempt comes next
    try:
        with Serve('--root', root, '--handlers', tmp_path/'hooks.py', '--alert-url', f'http://127.0.0.1:{srv.server_port}/alert') as s:
            deadline = time.monotonic() + 15
            while not got and time.monotonic() < deadline: time.sleep(0.05)
    finally: srv.shutdown()
    a = got[0]
    assert (a['kind'], a['tenant'], a['event_id']) == ('dead_letter', 'acme', 'evt_dead') and 'RuntimeError: crm down' in a['error'], a
    assert 'alert dead_letter on acme' in s.err

def test_lag_and_refusal_burst_alerts(root):
    import asyncio
    from webhooks.store import NewEvent, Rejection
    from webhooks.worker import Alerts
    t = SqliteStore(root).open('acme')
    t.log([NewEvent('evt_old', 'stripe', 'x', '{}', None, 'stripe:evt_old', received_at=time.time() - 900)])
    t.reject([Rejection(time.time(), 'stripe', None, 'invalid_signature', 'x', None, None, 0)] * 3)
    seen = []
    al = Alerts(hook=seen.append, lag=600, rejections=3, per_tenant={'quiet': {'lag': 10**9}})
    async def go():
        await al.check(SqliteStore(root)); await al.check(SqliteStore(root))  # the second round repeats nothing
        await asyncio.sleep(0.05)
    asyncio.run(go())
    assert sorted(a['kind'] for a in seen) == ['queue_lag', 'rejections'], seen
    lag = next(a for a in seen if a['kind'] == 'queue_lag')
    assert lag['tenant'] == 'acme' and lag['lag'] > 890 and 'limit 600 s' in lag['message']
