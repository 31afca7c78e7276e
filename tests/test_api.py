"""The HTTP API: every route with admin, scoped, read-only, revoked and missing tokens, cross-tenant attempts, every
answer validated against the OpenAPI document, a schemathesis property run, and payload search on both backends."""
import json, shutil, tempfile
from pathlib import Path
import pytest
from jsonschema import Draft202012Validator
from starlette.applications import Starlette
from starlette.testclient import TestClient
from webhooks.api import OPS, install_api, openapi
from webhooks.records import NewEvent

ADMIN = 'adm_test_api_admin_token_0123456789'
DOC = openapi()

def validate(r, method:str, template:str):
    "Check answer `r` of `method template` against the document: its status is listed, its body fits that schema."
    responses = DOC['paths'][template][method.lower()]['responses']
    assert str(r.status_code) in responses, (template, r.status_code, r.text[:200])
    schema = responses[str(r.status_code)]['content']['application/json']['schema']
    full = {**schema, 'components': DOC['components']} if '$ref' not in schema else \
        {'$ref': schema['$ref'], 'components': DOC['components']}
    errors = list(Draft202012Validator(full).iter_errors(r.json()))
    assert not errors, (template, r.status_code, [e.message for e in errors][:3])
    return r

def body(i, cus, amount, etype):
    return json.dumps({'id': f'evt_{i}', 'type': etype,
                       'data': {'object': {'customer': cus, 'amount_paid': amount, 'lines': [{'price': f'price_{i}'}]}}})

def fill(store):
    "Tenants acme (events, a source, tokens) and globex; the tokens by role."
    acme = store.open('acme', create=True)
    acme.add_source('stripe', 'stripe', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')
    etype = lambda i: 'invoice.paid' if i % 2 else 'customer.created'
    evs = [NewEvent(f'evt_{i}', 'stripe', etype(i), body(i, f'cus_{i % 3}', i, etype(i)),
                    'sig', f'stripe:evt_{i}', 'failed' if i % 4 == 0 else 'completed', 1767225600.0 + i,
                    json.dumps({'content-type': 'application/json', 'stripe-signature': 't=1,v1=' + 'ab' * 32}))
           for i in range(1, 13)]
    evs.append(NewEvent('raw_1', 'stripe', 'form', b'\xff\xfeform=1', 'sig', 'stripe:raw_1', 'completed', 1767225700.0))
    evs.append(NewEvent('form_1', 'stripe', 'form', 'a=1&b=2', 'sig', 'stripe:form_1', 'completed', 1767225701.0))
    acme.log(evs, 10**9)
    toks = dict(admin=ADMIN, scoped=acme.add_token('laptop'), read_only=acme.add_token('ci', read_only=True))
    revoked = acme.add_token('old')
    acme.revoke_token('old')
    toks['revoked'] = revoked
    store.open('globex', create=True).close()
    acme.close()
    return toks

@pytest.fixture
def api(store):
    toks = fill(store)
    with TestClient(install_api(Starlette(), store, ADMIN)) as c: yield c, toks, store

def call(c, tok, method, template, params=None, json_body=None, **path):
    url = template.format(**path)
    h = {'Authorization': f'Bearer {tok}'} if tok else {}
    return validate(c.request(method, url, params=params, json=json_body, headers=h), method, template)

E = '/api/v1/tenants/{tenant}/events'
S = '/api/v1/tenants/{tenant}/sources'

def test_reads_by_every_kind_of_token(api):
    c, toks, _ = api
    reads = [(E, {}), (S, {}), ('/api/v1/tenants/{tenant}/rejections', {})]
    for template, params in reads:
        for who in ('admin', 'scoped', 'read_only'):
            assert call(c, toks[who], 'GET', template, params, tenant='acme').status_code == 200, (who, template)
        assert call(c, toks['revoked'], 'GET', template, tenant='acme').status_code == 401
        r = call(c, None, 'GET', template, tenant='acme')
        assert r.status_code == 401 and r.headers['www-authenticate'] == 'Bearer'
        for who in ('scoped', 'read_only'):  # another tenant, existing or not: the same 404
            a, b = (call(c, toks[who], 'GET', template, tenant=t) for t in ('globex', 'nobody'))
            assert a.status_code == b.status_code == 404 and a.json() == {**b.json(), 'message': a.json()['message']}
        assert call(c, toks['admin'], 'GET', template, tenant='globex').status_code == 200
        assert call(c, toks['admin'], 'GET', template, tenant='nobody').status_code == 404
    seq = call(c, toks['scoped'], 'GET', E, tenant='acme').json()['events'][0]['seq']
    for who, status in (('admin', 200), ('scoped', 200), ('read_only', 200), ('revoked', 401)):
        assert call(c, toks[who], 'GET', E + '/{seq}', tenant='acme', seq=seq).status_code == status
    assert call(c, toks['scoped'], 'GET', E + '/{seq}', tenant='globex', seq=seq).status_code == 404
    assert call(c, toks['scoped'], 'GET', E + '/{seq}', tenant='acme', seq=99999).status_code == 404
    assert call(c, toks['scoped'], 'GET', '/api/v1/tenants').json() == {'tenants': ['acme']}
    assert call(c, toks['admin'], 'GET', '/api/v1/tenants').json() == {'tenants': ['acme', 'globex']}
    assert call(c, toks['revoked'], 'GET', '/api/v1/tenants').status_code == 401

def test_tokens_only_in_the_header(api):
    c, toks, _ = api
    for k in ('token', 'access_token'):
        r = call(c, None, 'GET', E, params={k: toks['scoped']}, tenant='acme')
        assert r.status_code == 400 and r.json()['error'] == 'token_in_url'
    r = c.get('/api/v1/tenants/acme/events', headers={'Authorization': f'Basic {toks["scoped"]}'})
    assert r.status_code == 401

def test_last_used_is_noted(api):
    c, toks, store = api
    t = store.open('acme')
    try:
        assert {k.name: k.last_used for k in t.tokens()}['laptop'] is None
        call(c, toks['scoped'], 'GET', S, tenant='acme')
        assert {k.name: k.last_used for k in t.tokens()}['laptop'] is not None
    finally: t.close()

def test_writes(api):
    c, toks, store = api
    new = {'name': 'github', 'scheme': 'github', 'secret': 'gh-hook-secret-2f9c1e'}
    assert call(c, toks['read_only'], 'POST', S, json_body=new, tenant='acme').status_code == 403
    assert call(c, toks['revoked'], 'POST', S, json_body=new, tenant='acme').status_code == 401
    assert call(c, None, 'POST', S, json_body=new, tenant='acme').status_code == 401
    assert call(c, toks['scoped'], 'POST', S, json_body=new, tenant='globex').status_code == 404
    r = call(c, toks['scoped'], 'POST', S, json_body=new, tenant='acme')
    assert r.status_code == 201 and r.json()['scheme'] == 'github'
    assert call(c, toks['admin'], 'POST', S, json_body=new, tenant='acme').status_code == 409
    bad = call(c, toks['scoped'], 'POST', S, json_body={**new, 'name': 'x y'}, tenant='acme')
    assert bad.status_code == 400 and 'invalid source name' in bad.json()['message']
    one = S + '/{source}'
    r = call(c, toks['scoped'], 'POST', one + '/secrets', json_body={'secret': 'gh-hook-secret-7a41d0'},
             tenant='acme', source='github')
    old = r.json()['fingerprints'][1]
    assert len(r.json()['fingerprints']) == 2
    assert call(c, toks['read_only'], 'POST', one + '/pause', tenant='acme', source='github').status_code == 403
    assert call(c, toks['scoped'], 'POST', one + '/pause', tenant='acme', source='github').json()['paused'] is True
    assert call(c, toks['admin'], 'POST', one + '/resume', tenant='acme', source='github').json()['paused'] is False
    r = call(c, toks['scoped'], 'PUT', one + '/rates', json_body={'rate_limit': 50, 'handler_rate': 5},
             tenant='acme', source='github')
    assert (r.json()['rate_limit'], r.json()['handler_rate']) == (50, 5)
    assert call(c, toks['scoped'], 'POST', one + '/pause', tenant='acme', source='nope').status_code == 404
    r = call(c, toks['scoped'], 'DELETE', one + '/secrets/{fingerprint}', tenant='acme', source='github', fingerprint=old)
    assert r.json()['source']['fingerprints'] == [r.json()['source']['fingerprints'][0]] and old not in r.json()['source']['fingerprints']
    assert call(c, toks['read_only'], 'DELETE', one + '/secrets/{fingerprint}', tenant='acme', source='github',
                fingerprint='x').status_code == 403
    assert call(c, toks['scoped'], 'DELETE', one + '/secrets/{fingerprint}', tenant='acme', source='github',
                fingerprint='x').status_code == 404
    r = c.post('/api/v1/tenants/acme/sources', content=b'[1]', headers={'Authorization': f'Bearer {toks["scoped"]}',
                                                                          'content-type': 'application/json'})
    assert validate(r, 'POST', S).status_code == 400

def test_replay(api):
    c, toks, store = api
    R = '/api/v1/tenants/{tenant}/replay'
    n = call(c, toks['scoped'], 'POST', R, json_body={'status': 'failed', 'dry_run': True}, tenant='acme').json()
    assert n == {'count': 3, 'queued': []}
    assert call(c, toks['read_only'], 'POST', R, json_body={'status': 'failed', 'dry_run': True},
                tenant='acme').status_code == 403
    assert call(c, toks['scoped'], 'POST', R, json_body={'status': 'failed', 'count': 2},
                tenant='acme').json()['error'] == 'count_changed'
    assert call(c, toks['scoped'], 'POST', R, json_body={'status': 'failed'}, tenant='globex').status_code == 404
    r = call(c, toks['scoped'], 'POST', R, json_body={'status': 'failed', 'count': 3}, tenant='acme').json()
    assert r['count'] == 3 and len(r['queued']) == 3
    assert call(c, toks['scoped'], 'POST', R, json_body={}, tenant='acme').status_code == 400
    seq = r['queued'][0]
    assert call(c, toks['scoped'], 'POST', E + '/{seq}/replay', tenant='acme', seq=seq).status_code == 400  # pending
    done = call(c, toks['scoped'], 'GET', E, params={'status': 'completed', 'limit': 1}, tenant='acme').json()
    s = done['events'][0]['seq']
    assert call(c, toks['read_only'], 'POST', E + '/{seq}/replay', tenant='acme', seq=s).status_code == 403
    assert call(c, toks['admin'], 'POST', E + '/{seq}/replay', tenant='acme', seq=s).json() == {'queued': [s]}

def test_event_whole(api):
    c, toks, _ = api
    evs = call(c, toks['scoped'], 'GET', E, params={'limit': 500}, tenant='acme').json()['events']
    by_id = {e['id']: e['seq'] for e in evs}
    raw = call(c, toks['scoped'], 'GET', E + '/{seq}', tenant='acme', seq=by_id['raw_1']).json()
    assert raw['body_encoding'] == 'base64' and raw['body'] == '//5mb3JtPTE='
    e = call(c, toks['scoped'], 'GET', E + '/{seq}', tenant='acme', seq=by_id['evt_5']).json()
    assert e['body_encoding'] == 'text' and json.loads(e['body'])['data']['object']['amount_paid'] == 5
    assert e['headers']['stripe-signature'].endswith('…') and 'ab' * 32 not in json.dumps(e)

def test_filters_and_pages(api):
    c, toks, _ = api
    get = lambda **p: call(c, toks['scoped'], 'GET', E, params=p, tenant='acme')
    assert [e['id'] for e in get(type='invoice', limit=2).json()['events']] == ['evt_11', 'evt_9']
    seen, cur = [], None
    while True:
        p = get(limit=5, **({'cursor': cur} if cur else {})).json()
        seen += [e['seq'] for e in p['events']]
        if not (cur := p['next']): break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 14
    assert [e['id'] for e in get(id='evt_3').json()['events']] == ['evt_3']
    assert [e['id'] for e in get(since='1767225610', until='1767225612').json()['events']] == ['evt_11', 'evt_10']
    for bad in (dict(limit='0'), dict(limit='x'), dict(cursor='nope'), dict(status='done'), dict(since='soon'),
                dict(where='data.object.customer'), dict(where="x'=1")):
        r = get(**bad)
        assert r.status_code == 400 and r.json()['ok'] is False, bad

def test_payload_search(api):
    "`where=` on both backends: equality, prefix, numbers, array indexes, several terms ANDed; bodies that are not JSON never match nor fail."
    c, toks, _ = api
    ids = lambda *terms: [e['id'] for e in call(c, toks['scoped'], 'GET', E, params={'where': list(terms), 'limit': 500},
                                                 tenant='acme').json()['events']]
    assert ids('data.object.customer=cus_1') == ['evt_10', 'evt_7', 'evt_4', 'evt_1']
    assert ids('data.object.customer=cus_1', 'type=invoice.paid') == ['evt_7', 'evt_1']
    assert ids('data.object.amount_paid=12') == ['evt_12']
    assert ids('data.object.lines.0.price=price_3') == ['evt_3']
    assert len(ids('data.object.customer^=cus_')) == 12
    assert ids('data.object.customer^=cus_2', 'data.object.amount_paid^=1') == ['evt_11']
    assert ids('data.object.nothing=1') == [] and ids('a=1') == []

def test_search_in_the_store(store):
    "The engine's filter itself, with the other filters, on both backends."
    fill(store)
    t = store.open('acme')
    try:
        assert [e.id for e in t.events(search='data.object.customer=cus_2', status='completed', limit=50)] == \
            ['evt_11', 'evt_5', 'evt_2']
        assert [e.id for e in t.events(search=['data.object.customer=cus_2'], type='customer.created')] == ['evt_8', 'evt_2']
        with pytest.raises(ValueError, match='use path=value'): t.events(search='customer')
    finally: t.close()

def test_document_is_served_and_covers_the_routes(api):
    c, _, _ = api
    doc = c.get('/api/v1/openapi.json').json()
    assert doc['openapi'] == '3.1.0' and doc == json.loads(json.dumps(DOC))
    for op in OPS: assert op.method.lower() in doc['paths']['/api/v1' + op.path]
    assert 'text/event-stream' in doc['paths']['/api/v1/tenants/{tenant}/events/stream']['get']['responses']['200']['content']
    from jsonschema import Draft202012Validator as V
    for name, schema in doc['components']['schemas'].items(): V.check_schema(schema)

def test_serve_app_mounts_the_api(tmp_path):
    from webhooks.server import serve_app
    from webhooks.store import SqliteStore
    s = SqliteStore(tmp_path/'data')
    tok = s.open('acme', create=True).add_token('laptop')
    with TestClient(serve_app(s, worker=False, admin_token=ADMIN)) as c:
        assert c.get('/api/v1/tenants', headers={'Authorization': f'Bearer {tok}'}).json() == {'tenants': ['acme']}
        assert c.get('/api/v1/openapi.json').json()['openapi'] == '3.1.0'
    s.close()

# The property run: schemathesis generates requests from the document for every operation (the stream excepted: it is
# served by `webhooks.stream` and never ends) and checks every answer: no 5xx, a listed status, a listed content type,
# a body that fits its schema. Paths name tenant `acme` (random names only ever meet the 404 checked above).
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

_root = Path(tempfile.mkdtemp(prefix='wh-api-prop-'))
from webhooks.store import SqliteStore
_store = SqliteStore(_root)
_toks = fill(_store)
_app = install_api(Starlette(), _store, ADMIN)
schema = schemathesis.openapi.from_asgi('/api/v1/openapi.json', _app)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

@pytest.fixture(scope='module', autouse=True)
def _prop_store():
    yield
    _store.close(); shutil.rmtree(_root, ignore_errors=True)

@schema.exclude(path_regex='/stream$').parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_property_run(case):
    if 'tenant' in (case.path_parameters or {}): case.path_parameters['tenant'] = 'acme'
    for who in ('admin', 'scoped'):
        case.call_and_validate(headers={'Authorization': f'Bearer {_toks[who]}'}, checks=CHECKS)

def test_copy_carries_tokens(store, tmp_path):
    "`webhooks-copy` (copy_tenant) moves the tokens' hashes: a token keeps working in the new store, a revoked one doesn't."
    from webhooks.engine import copy_tenant
    from webhooks.store import SqliteStore
    lite = SqliteStore(tmp_path/'lite')
    src = lite.open('acme', create=True)
    keep, gone = src.add_token('laptop', now=1767225600.0), src.add_token('old')
    src.revoke_token('old')
    dst = store.open('acme', create=True)
    try:
        assert copy_tenant(src, dst) == dict(sources=0, events=0, attempts=0, skipped=0, tokens=1)
        assert dst.check_token(keep).name == 'laptop' and dst.check_token(gone) is None
        assert [(k.name, k.created_at) for k in dst.tokens()] == [('laptop', 1767225600.0)]
        assert copy_tenant(src, dst)['tokens'] == 0  # already there
    finally: src.close(); dst.close(); lite.close()

def test_token_and_where_commands(store, where):
    "`webhooks-token` and `webhooks-events --where`, run for real on both backends."
    import subprocess, sys
    bin_ = Path(sys.executable).parent
    flag = ['--db', where(store)] if hasattr(store, 'url') else ['--root', where(store)]
    run = lambda *a: subprocess.run([str(bin_/a[0]), *a[1:], *flag], capture_output=True, text=True, timeout=60)
    fill(store)
    p = run('webhooks-token', 'acme', '--create', '--name', 'relay', '--read-only')
    assert p.returncode == 0 and p.stdout.startswith('wht_acme.') and 'shown once' in p.stderr
    t = store.open('acme')
    try: assert t.check_token(p.stdout.strip()).read_only is True
    finally: t.close()
    listed = run('webhooks-token', 'acme', '--list').stdout
    assert 'acme/relay  read-only' in listed and p.stdout.strip() not in listed
    assert run('webhooks-token', 'acme', '--revoke', 'relay').stdout.strip() == 'acme/relay revoked'
    bad = run('webhooks-token', 'acme', '--revoke', 'relay')
    assert bad.returncode == 1 and "no token 'relay'" in bad.stderr
    assert run('webhooks-token', 'acme').returncode == 1
    p = run('webhooks-events', 'acme', '--where', 'data.object.customer=cus_2 type=customer.created', '--json')
    assert [json.loads(l)['id'] for l in p.stdout.splitlines()] == ['evt_8', 'evt_2']
    p = run('webhooks-events', 'acme', '--where', 'customer')
    assert p.returncode == 1 and 'use path=value' in p.stderr
