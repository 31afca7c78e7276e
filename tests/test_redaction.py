"""One redaction policy for every view of stored data (issue 27, items 2-4). Every preset signs a delivery that is sent
over the real app to a source of every scheme (its own included, so it is stored as an event) and to an unknown source
name; then no secret and no signature value may appear on any dashboard page, in `webhooks-events` (text and `--json`)
or in the logs. Run on SQLite and on PostgreSQL."""
import hashlib, json, logging, os, re, secrets, subprocess, time
from contextlib import closing

import pytest
from starlette.testclient import TestClient

from conftest import where
from helpers import BIN
from test_presets_http import KEYS, SECRET, body_for
from webhooks.cli import _detail, event_json
from webhooks.process import BODY_SECRETS, SECRET_HEADERS, SIGNATURE_HEADERS, redact, redact_body
from webhooks.server import serve_app
from webhooks.signatures import presets, signed
from webhooks.store import NewEvent

TOKEN = 'wh-admin-redaction-test-token-0123456789'
csrf_in = lambda html: re.search(r'value="([^"]+)" name="csrf"', html)[1]

def test_policy_is_read_from_the_presets():
    "Every preset's signature header is masked, every secret-carrying header dropped, every body sig_field known."
    for s in presets.values():
        if s.header: assert s.header.lower() in (SECRET_HEADERS if s.algo == 'token' else SIGNATURE_HEADERS), s.name
        for h in s.secret_headers: assert h.lower() in SECRET_HEADERS
        if s.sig_field: assert {p.split('.')[-1] for p in s.sig_field.split('|')} <= BODY_SECRETS
    hd = redact({'Authorization': 'Bearer x', 'X-Api-Key': 'k', 'X-Hub-Signature': 'sha1=' + 'ab'*20,
                 'X-Gitlab-Token': 'tok', 'X-Acme-Password': 'hunter2', 'I-Twilio-Idempotency-Token': 'id-1'})
    assert hd == {'x-hub-signature': 'sha1=abababa…', 'x-acme-password': '…', 'i-twilio-idempotency-token': 'id-1'}
    assert redact(hd) == hd  # shown again (an older row, a second view): nothing more, nothing less
    body = '{"value":[{"clientState":"s3cret","id":1}],"signature":{"signature":"abc","token":"t"}}'
    assert redact_body(body) == '{"value":[{"clientState":"…","id":1}],"signature":{"signature":"…","token":"t"}}'

def walk(c, name, sources):
    "Send one signed delivery of preset `name` to each of `sources`: ([statuses], {values that must never be shown})."
    s, key = presets[name], KEYS.get(name, (SECRET,))[0]
    hidden, codes = {SECRET, key}, []
    for src in sources:
        url = f'http://testserver/webhooks/acme/{src}'
        body = body_for(name)
        if s.body_hash: url += '?bodySHA256=' + hashlib.sha256(body).hexdigest()
        b, h = signed(name, body, key, url=url)
        if s.header: hidden |= {h[s.header], *re.findall(r'[A-Za-z0-9+/=_-]{16,}', h[s.header])}
        if name == 'mailgun': hidden.add(json.loads(b)['signature']['signature'])
        codes.append(c.post(url, content=b, headers=h).status_code)
    return codes, hidden

def pages(c, first):
    "The rejected page and every older page it links to."
    url = first
    while url:
        r = c.get(url); assert r.status_code == 200, r.text
        yield r.text
        m = re.search(r'href="([^"]*before=\d+[^"]*)"', r.text)
        url = m[1].replace('&amp;', '&') if m else None

def test_no_secret_or_signature_is_shown(store, caplog):
    t0 = time.monotonic()
    caplog.set_level(logging.DEBUG, logger='webhooks')
    with closing(store.open('acme', create=True)) as t:
        for name in presets: t.add_source(name, name, KEYS.get(name, (SECRET, SECRET))[1])
    targets = [*presets, 'no-such-source']
    hidden, refused, stored = set(), 0, 0
    with TestClient(serve_app(store, worker=False, admin_token=TOKEN)) as c:
        for name in presets:
            codes, h = walk(c, name, targets)
            hidden |= h
            refused += sum(400 <= x < 500 and x not in (405, 429) for x in codes)
            stored += sum(x == 200 for x in codes)
            assert codes[targets.index(name)] == 200, (name, codes)
        with closing(store.open('acme')) as t:
            deadline = time.monotonic() + 30  # refusals are recorded off the request's path
            while sum(t.rejection_counts().values()) < refused and time.monotonic() < deadline: time.sleep(0.05)
            assert sum(t.rejection_counts().values()) == refused
            events = t.events(limit=10_000)
            assert len(events) == stored >= len(presets)
            details = [t.detail(e.seq) for e in events]
        c.post('/admin/login', data={'csrf': csrf_in(c.get('/admin/login').text), 'token': TOKEN})
        shown = {'rejected': list(pages(c, '/admin/rejected?tenant=acme'))}
        shown['events'] = [c.get(f'/admin/events/acme/{e.seq}').text for e in events]
        assert all('Attempts' in p for p in shown['events']) and len(shown['rejected']) > refused // 50
    assert sum(p.count('<tr') for p in shown['rejected']) >= refused
    graph = next(e for e, _ in details if e.source == 'graph')
    assert SECRET in graph.payload  # the stored bytes stay exact ...
    assert 'secret fields masked' in shown['events'][events.index(graph)]  # ... the page says what it masked
    shown['cli-detail'] = [_detail(e, h) for e, h in details]
    shown['cli-detail-json'] = [json.dumps(event_json(e, h), ensure_ascii=False) for e, h in details]
    db = ['--db', where(store)] if hasattr(store, 'url') else ['--root', where(store)]
    for mode in ([], ['--json']):
        p = subprocess.run([str(BIN/'webhooks-events'), 'acme', '--payload', '--limit', '1000', *db, *mode],
                           capture_output=True, text=True, timeout=60, env={**os.environ, 'WEBHOOKS_DB': ''})
        assert p.returncode == 0 and p.stdout.count('\n') >= stored, p.stderr
        shown['cli' + ''.join(mode)] = [p.stdout, p.stderr]
    shown['logs'] = [caplog.text]
    hidden = {v for v in hidden if len(v) >= 8}
    leaks = [(where_, v[:20]) for where_, texts in shown.items() for v in hidden for x in texts if v in x]
    assert not leaks, leaks[:10]
    print(f'{len(presets)} presets x {len(targets)} sources: {stored} stored, {refused} refused, '
          f'{len(hidden)} values hidden, {time.monotonic() - t0:.1f} s')

def test_rows_stored_by_older_versions_are_shown_under_the_policy(store):
    "Headers stored before the policy (a whole legacy signature, a GitLab token) are redacted again when shown."
    sig, tok = 'sha1=' + secrets.token_hex(20), 'gl-' + secrets.token_hex(12)
    old = json.dumps({'x-hub-signature': sig, 'x-gitlab-token': tok[:12] + '…', 'authorization': 'Bearer ' + tok})
    body = json.dumps({'value': [{'clientState': tok, 'changeType': 'created'}]})
    with closing(store.open('acme', create=True)) as t:
        t.add_source('hooks', 'generic', SECRET)
        [seq] = t.log([store_event(body, old)])
        e, h = t.detail(seq)
    assert e.headers == old and e.payload == body  # stored as it was
    with TestClient(serve_app(store, worker=False, admin_token=TOKEN)) as c:
        c.post('/admin/login', data={'csrf': csrf_in(c.get('/admin/login').text), 'token': TOKEN})
        page = c.get(f'/admin/events/acme/{seq}').text
    for shown in (page, _detail(e, h), json.dumps(event_json(e, h))):
        assert sig[:12] in shown and sig not in shown and tok[:12] not in shown and 'Bearer' not in shown

def store_event(body, headers):
    return NewEvent('evt-old-1', 'hooks', 'test.event', body, None, 'hooks:evt-old-1', headers=headers)
