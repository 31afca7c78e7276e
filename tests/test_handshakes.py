"""Every handshake over real HTTP, shaped like the provider's request: answered as the provider expects, never stored as an
event, refused when forged (or sent to a source whose scheme has no such handshake)."""
import base64, hashlib, hmac, json, time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519

from helpers import Server
from webhooks.cli import serve_app
from webhooks.signatures import sign, signed
from webhooks.store import SqliteStore

SECRET = 'handshake-secret-0123456789'
ED = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(3, 35)))
ED_PUB = ED.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw).hex()

@pytest.fixture(scope='module')
def srv(tmp_path_factory):
    store = SqliteStore(tmp_path_factory.mktemp('handshakes')/'data')
    t = store.open('acme', create=True)
    for name in ['slack', 'zoom', 'dropbox', 'x', 'twitch', 'graph', 'generic']: t.add_source(name, name, SECRET)
    t.add_source('meta', 'meta', SECRET, verify_token='meta-verify-7c1e')
    t.add_source('meta-unset', 'meta', SECRET)
    t.add_source('discord', 'discord', ED_PUB)
    t.close()
    with Server(serve_app(store)) as s:
        with httpx.Client(base_url=s.url + '/webhooks/acme', timeout=30) as c: yield c, store

def stored(store)->int:
    t = store.open('acme')
    try: return len(t.events(limit=1000))
    finally: t.close()

def text_answer(r, body:str):
    assert (r.status_code, r.text) == (200, body), r.text
    assert r.headers['content-type'].startswith('text/plain') and r.headers['x-content-type-options'] == 'nosniff'

def refused(r, status, code):
    assert (r.status_code, r.json()['error']) == (status, code), r.text

def test_slack_url_verification(srv):
    c, store = srv
    n = stored(store)
    body = json.dumps({'token': 'Jhj5dZrVaK7ZwHHjRyZWjbDl', 'challenge': '3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P',
                       'type': 'url_verification'}).encode()
    text_answer(c.post('/slack', content=body, headers={**sign('slack', body, SECRET), 'Content-Type': 'application/json'}),
                '3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P')
    refused(c.post('/slack', content=body, headers={'Content-Type': 'application/json'}), 400, 'missing_header')
    refused(c.post('/slack', content=body, headers={**sign('slack', body, 'forged-secret-000'), 'Content-Type': 'application/json'}),
            401, 'invalid_signature')
    assert stored(store) == n

def test_meta_subscribe(srv):
    c, store = srv
    q = {'hub.mode': 'subscribe', 'hub.verify_token': 'meta-verify-7c1e', 'hub.challenge': '1158201444'}
    text_answer(c.get('/meta', params=q), '1158201444')
    refused(c.get('/meta', params={**q, 'hub.verify_token': 'meta-verify-7c1f'}), 403, 'invalid_verify_token')
    refused(c.get('/meta-unset', params=q), 403, 'no_verify_token')
    refused(c.get('/generic', params=q), 405, 'method_not_allowed')  # only a Meta source answers it
    body = b'{"object":"page","entry":[{"id":"1","time":1}]}'
    r = c.post('/meta', content=body, headers={**sign('meta', body, SECRET), 'Content-Type': 'application/json'})
    assert r.status_code == 200 and r.json()['duplicate'] is False  # the events that follow are signed deliveries

def test_graph_validation_and_client_state(srv):
    c, store = srv
    n = stored(store)
    r = c.post('/graph', params={'validationToken': 'Validation: Token 42 <x>'}, headers={'Content-Type': 'text/plain'})
    text_answer(r, 'Validation: Token 42 <x>')
    assert stored(store) == n
    note = json.dumps({'value': [{'subscriptionId': 's1', 'changeType': 'created', 'clientState': SECRET, 'resource': 'me/events/1'}]}).encode()
    assert c.post('/graph', content=note, headers={'Content-Type': 'application/json'}).status_code == 200
    forged = note.replace(SECRET.encode(), b'guessed-client-state')
    refused(c.post('/graph', content=forged, headers={'Content-Type': 'application/json'}), 401, 'invalid_signature')
    # a validationToken sent to another scheme's source is just an unsigned delivery
    refused(c.post('/generic', params={'validationToken': 'x'}, content=b'{}', headers={'Content-Type': 'application/json'}), 400, 'missing_header')

def test_zoom_url_validation(srv):
    c, store = srv
    n = stored(store)
    body = json.dumps({'payload': {'plainToken': 'qgg8vlvZRS6UYooatFL8Aw'}, 'event_ts': 1654503849680, 'event': 'endpoint.url_validation'}).encode()
    r = c.post('/zoom', content=body, headers={**sign('zoom', body, SECRET), 'Content-Type': 'application/json'})
    assert r.status_code == 200 and r.headers['content-type'].startswith('application/json'), r.text
    assert r.json() == {'plainToken': 'qgg8vlvZRS6UYooatFL8Aw',
                        'encryptedToken': hmac.new(SECRET.encode(), b'qgg8vlvZRS6UYooatFL8Aw', hashlib.sha256).hexdigest()}
    refused(c.post('/zoom', content=body, headers={**sign('zoom', body, 'forged-secret-000'), 'Content-Type': 'application/json'}),
            401, 'invalid_signature')
    assert stored(store) == n

def test_dropbox_challenge(srv):
    c, _ = srv
    text_answer(c.get('/dropbox', params={'challenge': '<script>alert(1)</script>'}), '<script>alert(1)</script>')
    refused(c.get('/slack', params={'challenge': 'x'}), 405, 'method_not_allowed')

def test_x_crc(srv):
    c, _ = srv
    r = c.get('/x', params={'crc_token': 'crc-challenge-123'})
    assert r.status_code == 200 and r.headers['content-type'].startswith('application/json')
    want = base64.b64encode(hmac.new(SECRET.encode(), b'crc-challenge-123', hashlib.sha256).digest()).decode()
    assert r.json() == {'response_token': 'sha256=' + want}
    refused(c.get('/generic', params={'crc_token': 'x'}), 405, 'method_not_allowed')

def test_twitch_callback_verification(srv):
    c, store = srv
    n = stored(store)
    body = json.dumps({'challenge': 'pogchamp-kappa-360noscope-vohiyo', 'subscription': {'id': 'f1c2a387', 'type': 'channel.follow',
                       'status': 'webhook_callback_verification_pending'}}).encode()
    h = {**sign('twitch', body, SECRET, msg_id='e76c6bd4-55c9-4987-8304-da1588d8988b', event_type='channel.follow'),
         'Twitch-Eventsub-Message-Type': 'webhook_callback_verification', 'Content-Type': 'application/json'}
    text_answer(c.post('/twitch', content=body, headers=h), 'pogchamp-kappa-360noscope-vohiyo')
    forged = {**h, **sign('twitch', body, 'forged-secret-000', msg_id='e76c6bd4-55c9-4987-8304-da1588d8988b')}
    refused(c.post('/twitch', content=body, headers=forged), 401, 'invalid_signature')
    assert stored(store) == n

def test_discord_ping(srv):
    c, store = srv
    n = stored(store)
    seed = bytes(range(3, 35)).hex()
    ping = b'{"type":1,"id":"1","application_id":"2","token":"t","version":1}'
    r = c.post('/discord', content=ping, headers={**sign('discord', ping, seed), 'Content-Type': 'application/json'})
    assert (r.status_code, r.json()) == (200, {'type': 1}), r.text
    events_ping = b'{"version":1,"application_id":"2","type":0}'
    assert c.post('/discord', content=events_ping, headers={**sign('discord', events_ping, seed), 'Content-Type': 'application/json'}).status_code == 204
    other = bytes(range(4, 36)).hex()  # Discord checks endpoints with a bad signature too: it must get 401
    refused(c.post('/discord', content=ping, headers={**sign('discord', ping, other), 'Content-Type': 'application/json'}), 401, 'invalid_signature')
    assert stored(store) == n

def test_cloudevents_options_on_every_source(srv):
    c, _ = srv
    for src in ['generic', 'slack', 'discord']:
        r = c.options('/' + src, headers={'WebHook-Request-Origin': 'eventemitter.example.com', 'WebHook-Request-Rate': '120'})
        assert r.status_code == 200, r.text
        assert r.headers['webhook-allowed-origin'] == 'eventemitter.example.com' and r.headers['webhook-allowed-rate'] == '*'
    refused(c.options('/nosuch', headers={'WebHook-Request-Origin': 'eventemitter.example.com'}), 404, 'unknown_source')
