"""The receiver over real HTTP: uvicorn on a loopback port, `serve_app(root)`, real clients.

Every row of the response contract is asserted on status *and* the stable `error` code,
plus what ended up in the tenant database (rows, exact bytes). Requests a normal client
would rewrite (`..`, `%2e%2e`, `%2F` in the tenant) go out over a raw socket."""
import base64, json, os, re, secrets, socket, threading, time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

import stripe
from standardwebhooks.webhooks import Webhook as StdWebhook

from webhooks.cli import serve_app
from webhooks.routes import add_source, remove_secret, MAX_BODY
from webhooks.signatures import sign, fingerprint
from webhooks.store import tenant_db, tenants

GENERIC = 'generic-secret-0123456789'
MODA = 'moda-secret-0123456789'
STRIPE = 'whsec_stripe_test_0123456789abcdef'
STANDARD = 'whsec_' + base64.b64encode(b'standard-webhooks-test-key-32byt').decode()

# ---------------------------------------------------------------- servers and helpers

from helpers import Server, parse_response

def make_source(root, tenant, source, scheme, secret, **kw):
    db = root.open(tenant, create=True) if hasattr(root, 'receiving') else tenant_db(tenant, root)  # a folder, or a `Store`
    try: return add_source(db, source, scheme, secret, **kw)
    finally: db.close()

def rows(root, tenant, where='', args=()):
    db = root.open(tenant) if hasattr(root, 'receiving') else tenant_db(tenant, root, create=False)  # a `Store`'s tenant, or a file
    query = f'SELECT * FROM webhook_events {where} ORDER BY seq'
    try:
        if hasattr(getattr(db, 'store', None), 'url'):  # a PgTenant: the same rows, bodies as the store returns them
            from webhooks.postgres import stored_body
            return [{**r, 'payload': stored_body(r['payload'])} for r in db.q(query.replace('?', '%s'), args)]
        return (db.db if hasattr(db, 'db') else db).q(query, args)
    finally: db.close()

def expect(r, status, error=None):
    "Assert the contract's shape: JSON, right status, `ok`, stable `error` + human `message`, no traceback."
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers['content-type'].startswith('application/json'), r.headers
    assert 'Traceback' not in r.text
    j = r.json()
    if error is None: assert j['ok'] is True, j
    else:
        assert j['ok'] is False and j['error'] == error, j
        assert isinstance(j['message'], str) and j['message'].strip(), j
    return j

def event(eid=None, etype='test.event', **extra)->bytes:
    eid = eid or 'evt_' + secrets.token_hex(8)
    return json.dumps({'id': eid, 'type': etype, **extra}, separators=(',', ':')).encode()

def signed(scheme, body, secret, ctype='application/json', **kw)->dict:
    return {'Content-Type': ctype, **sign(scheme, body, secret, **kw)}

def raw_request(port, data:bytes)->tuple[int,dict,bytes]:
    "Send `data` as-is over a socket; (status, headers, body) of the answer (the request asks to close)."
    with socket.create_connection(('127.0.0.1', port), timeout=30) as s:
        s.sendall(data)
        buf = b''
        while chunk := s.recv(65536): buf += chunk
    return parse_response(buf)

def raw_post(port, path:str, body:bytes, headers:dict)->tuple[int,dict,bytes]:
    h = {'Host': f'127.0.0.1:{port}', 'Content-Length': str(len(body)), 'Connection': 'close', **headers}
    req = f'POST {path} HTTP/1.1\r\n' + ''.join(f'{k}: {v}\r\n' for k,v in h.items()) + '\r\n'
    return raw_request(port, req.encode('latin-1') + body)

def files_under(p:Path)->set:
    return {str(x.relative_to(p)) for x in p.rglob('*')}

# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return tmp_path_factory.mktemp('routes')/'data'

@pytest.fixture(scope='module')
def srv(root):
    make_source(root, 'acme', 'gen', 'generic', GENERIC)  # a tenant that exists before the server starts
    with Server(serve_app(root)) as s: yield s

@pytest.fixture(scope='module')
def client(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as c: yield c

@pytest.fixture
def served(store):
    "A receiver on each backend's fresh store (`store`), tenant `acme` with a `generic` source `gen`: (store, server)."
    make_source(store, 'acme', 'gen', 'generic', GENERIC)
    with Server(serve_app(store)) as s: yield store, s

@pytest.fixture
def gen(root):
    "A fresh tenant with a `generic` source `gen`; returns the tenant name."
    t = 't' + secrets.token_hex(5)
    make_source(root, t, 'gen', 'generic', GENERIC)
    return t

# ---------------------------------------------------------------- 200: new, duplicate, exact bytes

def test_new_event_is_stored_byte_for_byte(served):
    root, srv = served
    body = '{ "id" : "evt_exact",\t"type":"charge.succeeded", "name":"café ☕", "n": 1.50e0, "esc":"\\u00e9" }\n'.encode()
    j = expect(httpx.post(f'{srv.url}/webhooks/acme/gen', content=body, headers=signed('generic', body, GENERIC)), 200)
    assert j == {'ok': True, 'id': 'evt_exact', 'duplicate': False}
    rs = rows(root, 'acme')
    assert len(rs) == 1
    assert rs[0]['payload'].encode('utf-8') == body
    assert (rs[0]['id'], rs[0]['source'], rs[0]['event_type']) == ('evt_exact', 'gen', 'charge.succeeded')

def test_repeat_is_duplicate_and_not_stored_twice(client, root, gen):
    body = event('evt_twice')
    h = signed('generic', body, GENERIC)
    assert expect(client.post(f'/webhooks/{gen}/gen', content=body, headers=h), 200) == {'ok': True, 'id': 'evt_twice', 'duplicate': False}
    for _ in range(2):
        assert expect(client.post(f'/webhooks/{gen}/gen', content=body, headers=h), 200) == {'ok': True, 'id': 'evt_twice', 'duplicate': True}
    assert len(rows(root, gen)) == 1

def test_json_array_body_with_idempotency_key(client, root, gen):
    body = b'[ {"a": 1}, {"b": [2, 3]}, "x" ]'
    h = signed('generic', body, GENERIC, msg_id='arr-key-1')
    assert h['X-Idempotency-Key'] == 'arr-key-1'
    assert expect(client.post(f'/webhooks/{gen}/gen', content=body, headers=h), 200) == {'ok': True, 'id': 'arr-key-1', 'duplicate': False}
    assert expect(client.post(f'/webhooks/{gen}/gen', content=body, headers=h), 200)['duplicate'] is True
    rs = rows(root, gen)
    assert len(rs) == 1 and rs[0]['id'] == 'arr-key-1' and rs[0]['payload'].encode() == body

def test_form_encoded_body(client, root, gen):
    body = b'id=evt_form_1&type=form.submitted&amount=10%2C50&name=J%C3%BCrgen+M&empty='
    h = signed('generic', body, GENERIC, ctype='application/x-www-form-urlencoded')
    assert expect(client.post(f'/webhooks/{gen}/gen', content=body, headers=h), 200) == {'ok': True, 'id': 'evt_form_1', 'duplicate': False}
    rs = rows(root, gen)
    assert len(rs) == 1 and rs[0]['payload'].encode() == body and rs[0]['event_type'] == 'form.submitted'

# ---------------------------------------------------------------- real provider libraries

def test_stripe_library_signature_accepted(client, root):
    t = 'stripe' + secrets.token_hex(4)
    make_source(root, t, 'stripe', 'stripe', STRIPE)
    payload = '{\n  "id": "evt_1Stripe",\n  "object": "event",\n  "type": "payment_intent.succeeded"\n}'
    ts = int(time.time())
    hdr = stripe.WebhookSignature.generate_signature_header(payload, STRIPE, ts)  # stripe's own public signer
    stripe.WebhookSignature.verify_header(payload, hdr, STRIPE, 300)  # stripe itself agrees
    r = client.post(f'/webhooks/{t}/stripe', content=payload.encode(), headers={'Content-Type': 'application/json; charset=utf-8', 'Stripe-Signature': hdr})
    assert expect(r, 200) == {'ok': True, 'id': 'evt_1Stripe', 'duplicate': False}
    rs = rows(root, t)
    assert len(rs) == 1 and rs[0]['payload'] == payload and rs[0]['event_type'] == 'payment_intent.succeeded'
    # the same library with the wrong secret is refused
    bad = stripe.WebhookSignature.generate_signature_header(payload, STRIPE + 'x', ts)
    expect(client.post(f'/webhooks/{t}/stripe', content=payload.encode(), headers={'Content-Type': 'application/json', 'Stripe-Signature': bad}), 401, 'invalid_signature')

def test_standardwebhooks_library_signature_accepted(client, root):
    t = 'std' + secrets.token_hex(4)
    make_source(root, t, 'std', 'standard', STANDARD)
    payload, msg_id, now = '{"type":"invoice.paid","data":{"amount":42}}', 'msg_' + secrets.token_hex(6), datetime.now(timezone.utc)
    sig = StdWebhook(STANDARD).sign(msg_id, now, payload)
    h = {'Content-Type': 'application/json', 'webhook-id': msg_id, 'webhook-timestamp': str(int(now.timestamp())), 'webhook-signature': sig}
    StdWebhook(STANDARD).verify(payload, h)  # the library itself agrees
    assert expect(client.post(f'/webhooks/{t}/std', content=payload.encode(), headers=h), 200) == {'ok': True, 'id': msg_id, 'duplicate': False}
    assert expect(client.post(f'/webhooks/{t}/std', content=payload.encode(), headers=h), 200)['duplicate'] is True
    rs = rows(root, t)
    assert len(rs) == 1 and rs[0]['payload'] == payload and rs[0]['id'] == msg_id and rs[0]['event_type'] == 'invoice.paid'

# ---------------------------------------------------------------- 400

def test_missing_signature_header(client, root, gen):
    expect(client.post(f'/webhooks/{gen}/gen', content=event(), headers={'Content-Type': 'application/json'}), 400, 'missing_header')
    assert rows(root, gen) == []

@pytest.mark.parametrize('value', ['sha256=nothex', 'sha256=' + 'ab'*31, 'md5=' + 'ab'*32, '', 'sha256=' + 'zz'*32])
def test_malformed_signature(client, root, gen, value):
    r = client.post(f'/webhooks/{gen}/gen', content=event(), headers={'Content-Type': 'application/json', 'X-Webhook-Signature': value})
    expect(r, 400, 'malformed_signature')
    assert rows(root, gen) == []

def test_json_body_not_utf8_is_refused(client, root, gen):
    body = b'{"id":"evt_bin","type":"x","v":"\xff\xfe\xc3\x28"}'
    r = client.post(f'/webhooks/{gen}/gen', content=body, headers=signed('generic', body, GENERIC, ctype='application/json'))
    expect(r, 400, 'invalid_body')
    assert rows(root, gen) == []

@pytest.mark.parametrize('ctype', ['application/octet-stream', 'text/plain', 'application/x-www-form-urlencoded', None])
def test_body_not_utf8_is_stored_intact(client, root, gen, ctype):
    "A verified body that is not UTF-8 (and does not claim to be JSON) is accepted and stored byte for byte."
    body = b'{"id":"evt_bin","type":"x","v":"\xff\xfe\xc3\x28"}'
    h = signed('generic', body, GENERIC, ctype=ctype or 'x')
    if ctype is None: del h['Content-Type']
    r = client.post(f'/webhooks/{gen}/gen', content=body, headers=h)
    ok = expect(r, 200)
    assert ok['id'].startswith('sha256:') and ok['duplicate'] is False
    got = rows(root, gen)
    assert [g['payload'] for g in got] == [body]
    assert expect(client.post(f'/webhooks/{gen}/gen', content=body, headers=h), 200)['duplicate'] is True  # same bytes, same id

@pytest.mark.parametrize('body', [b'{"id": "evt_bad", "type": ', b'not json at all', b"{'id': 'single'}", b''])
def test_invalid_json_with_valid_signature(client, root, gen, body):
    expect(client.post(f'/webhooks/{gen}/gen', content=body, headers=signed('generic', body, GENERIC)), 400, 'invalid_json')
    assert rows(root, gen) == []

# ---------------------------------------------------------------- 401

@pytest.fixture
def moda(root):
    t = 'moda' + secrets.token_hex(4)
    make_source(root, t, 'moda', 'moda', MODA, tolerance=300)
    return t

def test_mismatch(client, root, gen):
    body = event()
    expect(client.post(f'/webhooks/{gen}/gen', content=body, headers=signed('generic', body, GENERIC + '-wrong')), 401, 'invalid_signature')
    h = signed('generic', body, GENERIC)
    expect(client.post(f'/webhooks/{gen}/gen', content=body + b' ', headers=h), 401, 'invalid_signature')  # body changed after signing
    assert rows(root, gen) == []

def test_moda_fresh_accepted_stale_and_future_refused(client, root, moda):
    now = int(time.time())
    ok = event()
    expect(client.post(f'/webhooks/{moda}/moda', content=ok, headers=signed('moda', ok, MODA, timestamp=now)), 200)
    stale, future = event(), event()
    expect(client.post(f'/webhooks/{moda}/moda', content=stale, headers=signed('moda', stale, MODA, timestamp=now - 3600)), 401, 'stale_timestamp')
    expect(client.post(f'/webhooks/{moda}/moda', content=future, headers=signed('moda', future, MODA, timestamp=now + 3600)), 401, 'future_timestamp')
    assert [r['payload'].encode() for r in rows(root, moda)] == [ok]

def test_moda_timestamp_is_signed(client, root, moda):
    "Moving a valid signature to a fresh timestamp is a mismatch, not an acceptance."
    body = event()
    h = signed('moda', body, MODA, timestamp=int(time.time()) - 3600)
    h['X-Webhook-Timestamp'] = str(int(time.time()))
    expect(client.post(f'/webhooks/{moda}/moda', content=body, headers=h), 401, 'invalid_signature')
    assert rows(root, moda) == []

# ---------------------------------------------------------------- 404

def test_unknown_tenant_creates_no_file(client, root):
    before = files_under(root.parent)
    body = event()
    expect(client.post('/webhooks/ghost/gen', content=body, headers=signed('generic', body, GENERIC)), 404, 'unknown_tenant')
    assert not (root/'ghost.db').exists() and 'ghost' not in tenants(root)
    assert not [f for f in files_under(root.parent) - before if 'ghost' in f]

def test_unknown_source(client, root, gen):
    body = event()
    expect(client.post(f'/webhooks/{gen}/nosuch', content=body, headers=signed('generic', body, GENERIC)), 404, 'unknown_source')
    assert rows(root, gen) == []

TRAVERSALS = ['/webhooks/../gen', '/webhooks/%2e%2e/gen', '/webhooks/%2E%2E/gen', '/webhooks/../../escape/gen',
              '/webhooks/..%2F..%2Fescape/gen', '/webhooks/%2e%2e%2f%2e%2e%2fescape/gen', '/webhooks/a%2Fb/gen',
              '/webhooks/a/b/gen', '/webhooks/..%5cescape/gen', '/webhooks/%00/gen', '/webhooks/.%2e/gen',
              '/webhooks/acme%2F..%2F..%2Fescape/gen', '/webhooks//gen']

@pytest.mark.parametrize('path', TRAVERSALS)
def test_tenant_traversal_is_404_and_touches_no_file(srv, root, path):
    top = root.parent  # everything the test run owns: root and its parent
    before_top, before_cwd = files_under(top), set(os.listdir('.'))
    known = set(tenants(root))
    body = event()
    status, hdrs, raw = raw_post(srv.port, path, body, signed('generic', body, GENERIC))
    assert status == 404, (status, raw)
    assert hdrs['content-type'].startswith('application/json') and b'Traceback' not in raw
    j = json.loads(raw)
    assert j['ok'] is False and j['error'] in ('unknown_tenant', 'invalid_tenant') and j['message'], j
    new = files_under(top) - before_top
    # only WAL/SHM files of tenants that already existed may come and go (the worker opens them)
    assert all(re.fullmatch(r'data/([A-Za-z0-9_-]+)\.db-(wal|shm)', f) and re.fullmatch(r'data/([A-Za-z0-9_-]+)\.db-(wal|shm)', f)[1] in known
               for f in new), new
    assert set(tenants(root)) == known
    assert set(os.listdir('.')) == before_cwd
    assert not (top/'escape.db').exists() and not (top.parent/'escape.db').exists()

# ---------------------------------------------------------------- 405

@pytest.mark.parametrize('method', ['GET', 'PUT', 'DELETE', 'PATCH'])
def test_other_methods_405(client, root, gen, method):
    body = event()
    r = client.request(method, f'/webhooks/{gen}/gen', content=body if method != 'GET' else None, headers=signed('generic', body, GENERIC))
    expect(r, 405, 'method_not_allowed')
    assert r.headers.get('allow') == 'POST'
    assert rows(root, gen) == []

# ---------------------------------------------------------------- 413

def _big(size:int, eid:str)->bytes:
    "A valid JSON event of exactly `size` bytes."
    head = f'{{"id":"{eid}","type":"big","pad":"'.encode()
    return head + b'x' * (size - len(head) - 2) + b'"}'

def test_default_limit_is_one_mib(client, root, gen):
    assert MAX_BODY == 1024*1024
    at = _big(MAX_BODY, 'evt_at_limit')
    assert len(at) == MAX_BODY and json.loads(at)
    expect(client.post(f'/webhooks/{gen}/gen', content=at, headers=signed('generic', at, GENERIC)), 200)
    assert [r['id'] for r in rows(root, gen)] == ['evt_at_limit']

def test_over_default_limit_with_content_length(srv, root, gen):
    "Refused on the declared length: the client does not even have to send the body."
    over = _big(MAX_BODY + 1, 'evt_over_cl')
    h = {'Host': f'127.0.0.1:{srv.port}', 'Content-Length': str(len(over)), 'Connection': 'close', **signed('generic', over, GENERIC)}
    head = f'POST /webhooks/{gen}/gen HTTP/1.1\r\n' + ''.join(f'{k}: {v}\r\n' for k,v in h.items()) + '\r\n'
    status, hdrs, raw = raw_request(srv.port, head.encode())
    assert status == 413 and json.loads(raw)['error'] == 'body_too_large', raw
    assert rows(root, gen) == []

def test_over_default_limit_with_content_length_httpx(client, root, gen):
    over = _big(MAX_BODY + 1, 'evt_over_cl2')
    try: r = client.post(f'/webhooks/{gen}/gen', content=over, headers=signed('generic', over, GENERIC))
    except httpx.TransportError: r = None  # the server may close before the client finished sending; then it stored nothing either
    if r is not None: expect(r, 413, 'body_too_large')
    assert rows(root, gen) == []

def _chunks(body:bytes, n:int=4096):
    for i in range(0, len(body), n): yield body[i:i+n]

def test_over_default_limit_chunked(client, root, gen):
    over = _big(MAX_BODY + 1, 'evt_over_chunked')
    r = client.post(f'/webhooks/{gen}/gen', content=_chunks(over, 65536), headers=signed('generic', over, GENERIC))
    assert 'content-length' not in {k.lower() for k in r.request.headers} and r.request.headers['transfer-encoding'] == 'chunked'
    expect(r, 413, 'body_too_large')
    assert rows(root, gen) == []

@pytest.fixture(scope='module')
def small_root(tmp_path_factory):
    return tmp_path_factory.mktemp('small')/'data'

@pytest.fixture(scope='module')
def small(small_root):
    make_source(small_root, 'tiny', 'gen', 'generic', GENERIC)
    with Server(serve_app(small_root, max_body=200)) as s, httpx.Client(base_url=s.url, timeout=30) as c: yield s, c

def test_custom_max_body(small, small_root):
    _, small = small
    at, over = _big(200, 'evt_200'), _big(201, 'evt_201')
    expect(small.post('/webhooks/tiny/gen', content=at, headers=signed('generic', at, GENERIC)), 200)
    expect(small.post('/webhooks/tiny/gen', content=over, headers=signed('generic', over, GENERIC)), 413, 'body_too_large')
    r = small.post('/webhooks/tiny/gen', content=_chunks(over, 50), headers=signed('generic', over, GENERIC))
    assert 'content-length' not in {k.lower() for k in r.request.headers}
    expect(r, 413, 'body_too_large')
    # chunked and under the limit is fine
    ok = _big(150, 'evt_150_chunked')
    expect(small.post('/webhooks/tiny/gen', content=_chunks(ok, 40), headers=signed('generic', ok, GENERIC)), 200)
    assert [r['id'] for r in rows(small_root, 'tiny')] == ['evt_200', 'evt_150_chunked']

def test_custom_max_body_lying_content_length(small, small_root):
    "A Content-Length under the limit followed by more bytes than it declared can't sneak a big body in."
    port = small[0].port
    over = _big(1000, 'evt_liar')
    h = {'Host': f'127.0.0.1:{port}', 'Content-Length': '100', 'Connection': 'close', **signed('generic', over, GENERIC)}
    head = 'POST /webhooks/tiny/gen HTTP/1.1\r\n' + ''.join(f'{k}: {v}\r\n' for k,v in h.items()) + '\r\n'
    status, _, raw = raw_request(port, head.encode() + over)
    assert status == 401 and json.loads(raw)['error'] == 'invalid_signature', raw  # only the declared 100 bytes are the body
    assert 'evt_liar' not in [r['id'] for r in rows(small_root, 'tiny')]

# ---------------------------------------------------------------- rotation

def test_rotation_over_http(served):
    root, srv = served
    client, t = httpx.Client(base_url=srv.url, timeout=30), 'rot' + secrets.token_hex(4)
    old, new = 'old-secret-aaaaaaaa', 'new-secret-bbbbbbbb'
    make_source(root, t, 'gen', 'generic', old)
    src = make_source(root, t, 'gen', 'generic', new)
    assert set(src.fingerprints) == {fingerprint(old), fingerprint(new)}
    post = lambda body, secret: client.post(f'/webhooks/{t}/gen', content=body, headers=signed('generic', body, secret))
    a, b = event('evt_rot_old'), event('evt_rot_new')
    assert expect(post(a, old), 200)['duplicate'] is False
    assert expect(post(b, new), 200)['duplicate'] is False
    db = root.open(t)
    try: assert remove_secret(db, 'gen', fingerprint(old)).fingerprints == (fingerprint(new),)
    finally: db.close()
    c, d = event('evt_rot_old2'), event('evt_rot_new2')
    for _ in range(200):  # PostgreSQL: the receiver hears of the removal by a notification (SQLite reads it at once)
        if not hasattr(root, 'url') or root.inboxes[t].source('gen').secrets == (new,): break
        time.sleep(0.01)
    expect(post(c, old), 401, 'invalid_signature')          # no restart: the running receiver sees the removal
    assert expect(post(d, new), 200)['duplicate'] is False
    assert [r['id'] for r in rows(root, t)] == ['evt_rot_old', 'evt_rot_new', 'evt_rot_new2']
    client.close()

# ---------------------------------------------------------------- concurrency

def test_fifty_concurrent_deliveries_of_one_event(served):
    (root, srv), gen = served, 'acme'
    body = event('evt_race50')
    h = signed('generic', body, GENERIC)
    n = 50
    barrier, results, errors = threading.Barrier(n), [None]*n, []
    with httpx.Client(base_url=srv.url, timeout=60, limits=httpx.Limits(max_connections=n, max_keepalive_connections=n)) as c:
        def deliver(i):
            try:
                barrier.wait(); c.get('/')  # phase 1: open n connections at once, so phase 2 releases requests, not handshakes
                barrier.wait(); results[i] = c.post(f'/webhooks/{gen}/gen', content=body, headers=h)
            except Exception as e: errors.append(e)
        ts = [threading.Thread(target=deliver, args=(i,)) for i in range(n)]
        for t in ts: t.start()
        for t in ts: t.join()
    assert errors == []
    js = [expect(r, 200) for r in results]
    assert all(j['id'] == 'evt_race50' for j in js)
    assert sum(j['duplicate'] is False for j in js) == 1
    assert sum(j['duplicate'] is True for j in js) == n - 1
    rs = rows(root, gen)
    assert len(rs) == 1 and rs[0]['payload'].encode() == body

# ---------------------------------------------------------------- 503

@pytest.fixture
def locked_srv(tmp_path):
    root = tmp_path/'data'
    make_source(root, 'busy', 'gen', 'generic', GENERIC)
    with Server(serve_app(root, busy_timeout=0.2)) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        yield root, c

def _lock(root, tenant):
    db = tenant_db(tenant, root)
    db.execute('BEGIN IMMEDIATE')
    return db

def test_store_unavailable_then_accepted(locked_srv):
    root, c = locked_srv
    warm = event('evt_warm')  # the receiver has this tenant open already
    expect(c.post('/webhooks/busy/gen', content=warm, headers=signed('generic', warm, GENERIC)), 200)
    body = event('evt_locked')
    h = signed('generic', body, GENERIC)
    lock = _lock(root, 'busy')
    try:
        expect(c.post('/webhooks/busy/gen', content=body, headers=h), 503, 'store_unavailable')
        expect(c.post('/webhooks/busy/gen', content=body, headers=h), 503, 'store_unavailable')
    finally:
        lock.execute('ROLLBACK'); lock.close()
    assert expect(c.post('/webhooks/busy/gen', content=body, headers=h), 200) == {'ok': True, 'id': 'evt_locked', 'duplicate': False}
    assert expect(c.post('/webhooks/busy/gen', content=body, headers=h), 200)['duplicate'] is True
    assert [r['id'] for r in rows(root, 'busy')] == ['evt_warm', 'evt_locked']

def test_store_unavailable_on_first_delivery_to_a_tenant(locked_srv):
    "The lock is already held when the receiver first opens the tenant (e.g. right after a restart)."
    root, c = locked_srv
    body = event('evt_cold')
    h = signed('generic', body, GENERIC)
    lock = _lock(root, 'busy')
    try: expect(c.post('/webhooks/busy/gen', content=body, headers=h), 503, 'store_unavailable')
    finally:
        lock.execute('ROLLBACK'); lock.close()
    assert expect(c.post('/webhooks/busy/gen', content=body, headers=h), 200) == {'ok': True, 'id': 'evt_cold', 'duplicate': False}
    assert [r['id'] for r in rows(root, 'busy')] == ['evt_cold']

# ---------------------------------------------------------------- the reference API, eviction, custom schemes

def reference_app(root, handler, **kw):
    from fasthtml.common import FastHTML
    from webhooks.routes import handle_webhook_request
    app = FastHTML(sess_cls=None, secret_key='x')
    @app.post('/hooks/{tenant}/{source}')
    async def hook(request, tenant:str, source:str):
        db = tenant_db(tenant, root)
        return await handle_webhook_request(request, db, source, handler, secret='ref_s3cret', **kw)
    return app

def test_handle_webhook_request_inline_answers_json_and_records_by_source(tmp_path):
    def handler(ev):
        if ev['type'] == 'bad': raise ValueError('cannot book')
    with Server(reference_app(tmp_path, handler)) as s:
        ok = httpx.post(f'{s.url}/hooks/shop/a', content=(b := event('evt_1')), headers=signed('generic', b, 'ref_s3cret'))
        assert expect(ok, 200) == {'ok': True, 'id': 'evt_1', 'duplicate': False, 'status': 'completed'}
        bad = httpx.post(f'{s.url}/hooks/shop/b', content=(b := event('evt_1', 'bad')), headers=signed('generic', b, 'ref_s3cret'))
        assert expect(bad, 200) == {'ok': True, 'id': 'evt_1', 'duplicate': False, 'status': 'failed', 'error': 'ValueError: cannot book'}
        again = httpx.post(f'{s.url}/hooks/shop/a', content=(b := event('evt_1')), headers=signed('generic', b, 'ref_s3cret'))
        assert expect(again, 200)['duplicate'] is True
    got = {(r['source'], r['id']): r['status'] for r in rows(tmp_path, 'shop')}
    assert got == {('a', 'evt_1'): 'completed', ('b', 'evt_1'): 'failed'}, 'one source\'s outcome overwrote the other\'s'

def test_handle_webhook_request_background_is_not_run_twice_by_a_worker(tmp_path):
    from webhooks.worker import Worker, Handlers
    import asyncio
    runs = []
    async def handler(ev): runs.append(ev['id']); await asyncio.sleep(0.05)
    with Server(reference_app(tmp_path, handler, run_in_background=True)) as s:
        for i in range(20):
            b = event(f'evt_{i}'); expect(httpx.post(f'{s.url}/hooks/shop/a', content=b, headers=signed('generic', b, 'ref_s3cret')), 200)
        worker_runs = []
        h = Handlers(); h.on('*')(lambda ev: worker_runs.append(ev.id))
        asyncio.run(Worker(tmp_path, h).drain())  # a worker sweeping while background tasks run must leave their events alone
        deadline = time.time() + 10
        while len(runs) < 20 and time.time() < deadline: time.sleep(0.05)
    assert sorted(runs) == sorted(f'evt_{i}' for i in range(20)) and worker_runs == []

def test_eviction_never_closes_a_tenant_under_a_request(tmp_path):
    for t in ('t1', 't2', 't3'): make_source(tmp_path, t, 'src', 'generic', 'k-secret-0123')
    with Server(serve_app(tmp_path, worker=False, max_open=1)) as s:
        results = []
        def send(t, i):
            b = event(f'evt_{t}_{i}')
            results.append(httpx.post(f'{s.url}/webhooks/{t}/src', content=b, headers=signed('generic', b, 'k-secret-0123'), timeout=30).status_code)
        ths = [threading.Thread(target=send, args=(t, i)) for i in range(15) for t in ('t1', 't2', 't3')]
        for th in ths: th.start()
        for th in ths: th.join()
    assert results.count(200) == 45, sorted(set(results))
    assert sum(len(rows(tmp_path, t)) for t in ('t1', 't2', 't3')) == 45

def test_scheme_unknown_to_this_process_answers_json(tmp_path):
    db = tenant_db('shop', tmp_path)
    db.execute("INSERT INTO webhook_sources (name, scheme, secret, fingerprint, tolerance, added_at) VALUES ('acme', 'acme-v2', 'k', 'fp_x', 300, 0)")
    db.close()
    with Server(serve_app(tmp_path, worker=False)) as s:
        b = event()
        expect(httpx.post(f'{s.url}/webhooks/shop/acme', content=b, headers=signed('generic', b, 'k')), 500, 'unknown_scheme')
