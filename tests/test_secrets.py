"""Secrets at rest, on both backends (`store`): stored encrypted under the master key, never left as plaintext in any file
(SQLite) or table (PostgreSQL), plaintext from older stores encrypted on open, a missing or wrong key a clear error, and
each stored value decrypted once per process however often the receiver reloads its sources."""
import asyncio, os, stat, threading
from pathlib import Path
import pytest
from cryptography.fernet import Fernet
from webhooks.signatures import fingerprint, sign, verify
from webhooks.store import (MASTER_KEY_ENV, MasterKeyError, NewEvent, SqliteStore, SqliteTenant, copy_tenant, master_key,
                            tenant_db)

STRIPE_OLD, STRIPE_NEW = 'whsec_rest_old_5Jq2Lr8Tz0Wc4Nb6', 'whsec_rest_new_9Kp3Ms7Yx1Vd5Qe2'
GITHUB = 'gh_rest_s3cret_Hq8Zt2Pw'
META, META_TOKEN = 'a3f9c2e17b5d4e6f8a9b0c1d2e3f4a5b', 'vt_rest_8fK2pQx7LmN3'
TWILIO = 'f1e2d3c4b5a697887766554433221100'
BODY = b'{"id":"evt_rest_1","object":"event","type":"invoice.paid"}'

@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch, tmp_path):
    "Every test starts without `WEBHOOKS_MASTER_KEY`, in `tmp_path`: a `PgStore`'s default key file is then `tmp_path/data/.master-key`."
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)

def key_file(store)->Path:
    "The key file a store uses: `<root>/.master-key` for SQLite, `data/.master-key` (in the test's folder) for PostgreSQL."
    return store.root/'.master-key' if hasattr(store, 'root') else Path(store.key_file).resolve()

def stored(q, t)->list[str]:
    "Every stored secret and verify token of tenant `t`, as the tables hold them."
    rows = q(t, 'SELECT secret, verify_token FROM webhook_sources') + q(t, 'SELECT secret, NULL AS verify_token FROM webhook_retired')
    return [v for r in rows for v in (r['secret'], r['verify_token']) if v is not None]

def configure(t)->list[str]:
    "Sources with rotated, retired and current secrets, a verify token, a URL, and a public key; every secret value used."
    t.add_source('stripe', 'stripe', STRIPE_OLD)
    t.add_source('stripe', 'stripe', STRIPE_NEW)
    t.remove_secret('stripe', fingerprint(STRIPE_OLD))            # retired: kept (encrypted) to diagnose late deliveries
    t.add_source('github', 'github', GITHUB, max_body=65536)
    t.add_source('whatsapp', 'meta', META, verify_token=META_TOKEN)
    t.add_source('sms', 'twilio', TWILIO, url='https://hooks.acme.example/webhooks/acme/sms')
    return [STRIPE_OLD, STRIPE_NEW, GITHUB, META, META_TOKEN, TWILIO]

def test_secrets_round_trip_encrypted(store, q):
    t = store.open('acme', create=True)
    configure(t)
    assert stored(q, t) and all(v.startswith('fernet:') for v in stored(q, t))
    keys = t.source('stripe')
    assert keys.secrets == (STRIPE_NEW,) and [s for s, _ in keys.retired] == [STRIPE_OLD]
    assert verify('stripe', BODY, sign('stripe', BODY, STRIPE_NEW), keys.secrets).index == 0
    assert t.source('whatsapp').verify_token == META_TOKEN and t.source('github').verify_token is None
    assert t.source('sms').url == 'https://hooks.acme.example/webhooks/acme/sms'
    by = {s.name: s for s in t.sources()}
    assert by['whatsapp'].verify_token is True and by['sms'].verify_token is False and by['sms'].url.endswith('/sms')
    assert by['stripe'].fingerprints == (fingerprint(STRIPE_NEW),)  # computed from the plaintext, as before
    assert [x.fingerprint for x in t.secrets('github')] == [fingerprint(GITHUB)]
    for v in [STRIPE_NEW, META_TOKEN, GITHUB]: assert v not in repr(t.sources())
    mode = key_file(store).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    t.close()

def test_a_rotation_keeps_the_token_and_url_and_settings_change_alone(store):
    t = store.open('acme', create=True)
    t.add_source('whatsapp', 'meta', META, verify_token=META_TOKEN, url='https://a.example/wa')
    t.add_source('whatsapp', 'meta', 'b4e0d3f28c6e5f7a9b0c1d2e3f4a5b6c')   # rotation: nothing else given
    k = t.source('whatsapp'); assert (k.verify_token, k.url) == (META_TOKEN, 'https://a.example/wa')
    t.add_source('whatsapp', 'meta', None, verify_token='vt_rotated_Qw3', tolerance=120)  # settings only
    k = t.source('whatsapp')
    assert (k.verify_token, k.url, k.tolerance, len(k.secrets)) == ('vt_rotated_Qw3', 'https://a.example/wa', 120, 2)
    with pytest.raises(ValueError, match="there is no source 'instagram' yet"): t.add_source('instagram', 'meta', None)
    for bad in ['ftp://a.example/x', 'https://', '/webhooks/acme/sms', 'https://a.example/x#frag', 'https://a.example/ x',
                'https://a.example/' + 'x'*2048]:
        with pytest.raises(ValueError, match='url must be an absolute http'): t.add_source('whatsapp', 'meta', None, url=bad)
    for bad in ['', ' vt', 'vt\n', 'x'*257]:
        with pytest.raises(ValueError, match='verify_token must be'): t.add_source('whatsapp', 'meta', None, verify_token=bad)
    t.close()

def test_no_plaintext_in_any_file_or_table(store, q, tmp_path):
    "Every secret and token, current, rotated, retired, and one an older store wrote as plaintext, is nowhere in the clear."
    t = store.open('acme', create=True)
    used = configure(t)
    legacy = 'whsec_legacy_plain_Zr4Tq8Mn2Kx6'
    q(t, f"INSERT INTO webhook_sources (name, scheme, secret, fingerprint, tolerance, added_at) "
         f"VALUES ('legacy', 'stripe', '{legacy}', '{fingerprint(legacy)}', 300, 1767225600)")  # as webhooks 0.x wrote it
    used.append(legacy)
    t.close()
    t = store.open('acme')  # encrypts the plaintext row
    assert t.source('legacy').secrets == (legacy,)
    async def receive():  # a receiver reloads and matches keys too
        async with store.receiving('acme') as inbox:
            assert inbox.source('stripe').secrets == (STRIPE_NEW,)
            await inbox.submit(NewEvent('evt_rest_1', 'stripe', 'invoice.paid', BODY.decode(), 't=…', 'stripe:evt_rest_1',
                                        secret=fingerprint(STRIPE_NEW)))
        if hasattr(store, 'aclose'): await store.aclose()  # the asyncio pool and sources watch end with their loop
    asyncio.run(receive())
    values = stored(q, t)
    assert len(values) == 7 and all(v.startswith('fernet:') for v in values)  # 5 secrets + 1 retired + 1 token
    if hasattr(store, 'root'):
        t.close(); store.close()
        files = [p for p in Path(store.root).rglob('*') if p.is_file()]
        assert {p.name for p in files} >= {'acme.db', '.master-key'}
        for p in files:
            data = p.read_bytes()
            for v in used: assert v.encode() not in data, (v, p.name)
    else:
        dump = '\n'.join(str(r) for table in ('webhook_sources', 'webhook_retired', 'webhook_events', 'webhook_rejections')
                         for r in q(t, f'SELECT {table}::text AS row FROM {table}'))
        assert 'fernet:' in dump
        for v in used: assert v not in dump, v
        t.close(); store.close()

def test_plaintext_of_an_older_store_is_encrypted_on_open_and_still_verifies(store, q):
    t = store.open('acme', create=True)
    q(t, f"INSERT INTO webhook_sources (name, scheme, secret, fingerprint, tolerance, added_at, verify_token) "
         f"VALUES ('whatsapp', 'meta', '{META}', '{fingerprint(META)}', 300, 1767225600, '{META_TOKEN}')")
    q(t, f"INSERT INTO webhook_retired (name, fingerprint, secret, retired_at) VALUES ('whatsapp', 'fp_x', '{STRIPE_OLD}', 9e9)")
    assert t.source('whatsapp').secrets == (META,)  # read as it is until then
    t.close()
    t = store.open('acme')
    assert all(v.startswith('fernet:') for v in stored(q, t)) and len(stored(q, t)) == 3
    k = t.source('whatsapp')
    assert (k.secrets, k.verify_token, k.retired[0][0]) == ((META,), META_TOKEN, STRIPE_OLD)
    assert verify('meta', BODY, sign('meta', BODY, META), k.secrets).index == 0
    again = stored(q, store.open('acme'))
    assert again == stored(q, t)  # idempotent: a second open changes nothing
    t.close()

def test_wrong_or_missing_key_is_a_clear_error(store, q):
    t = store.open('acme', create=True)
    configure(t)
    before = stored(q, t)
    t.close(); store.close()
    kf = key_file(store)
    good = kf.read_text()
    kf.write_text(Fernet.generate_key().decode() + '\n')
    s2 = type(store)(store.root) if hasattr(store, 'root') else type(store)(store.url)
    t = s2.open('acme')
    with pytest.raises(MasterKeyError, match=f'cannot be decrypted with the key file {kf}: it is not the master key'): t.source('stripe')
    with pytest.raises(MasterKeyError, match='not the master key'): t.add_source('stripe', 'stripe', 'whsec_another_0123456789')
    assert stored(q, t) == before  # nothing written under the wrong key
    assert [s.name for s in t.sources()] == ['github', 'sms', 'stripe', 'whatsapp']  # fingerprints need no key
    kf.unlink()
    s3 = type(s2)(store.root) if hasattr(store, 'root') else type(s2)(store.url)
    t = s3.open('acme')
    with pytest.raises(MasterKeyError, match=f'there is no master key: set WEBHOOKS_MASTER_KEY or restore the key file {kf}') as e:
        t.add_source('stripe', 'stripe', 'whsec_another_0123456789')
    assert e.value.status == 503 and e.value.code == 'master_key' and not kf.exists()  # no new key that opens nothing
    kf.write_text(good)
    assert type(s3)(store.root if hasattr(store, 'root') else store.url).open('acme').source('stripe').secrets == (STRIPE_NEW,)
    for s in (s2, s3): s.close()

def test_key_from_the_environment(store, q, monkeypatch):
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(MASTER_KEY_ENV, key)
    t = store.open('acme', create=True)
    t.add_source('github', 'github', GITHUB)
    assert not key_file(store).exists()
    assert Fernet(key).decrypt(stored(q, t)[0][len('fernet:'):].encode()).decode() == GITHUB
    monkeypatch.setenv(MASTER_KEY_ENV, 'not-a-fernet-key')
    fresh = type(store)(store.root) if hasattr(store, 'root') else type(store)(store.url)
    with pytest.raises(MasterKeyError, match='WEBHOOKS_MASTER_KEY is not a Fernet key'): fresh.open('acme').source('github')
    fresh.close()

def test_fernet_runs_once_per_stored_value_however_often_keys_reload(store, monkeypatch):
    t = store.open('acme', create=True)
    configure(t)
    calls = []
    real = Fernet.decrypt
    monkeypatch.setattr(Fernet, 'decrypt', lambda self, token, *a: calls.append(token) or real(self, token, *a))
    fresh = type(store)(store.root) if hasattr(store, 'root') else type(store)(store.url)  # a new process, as far as keys go
    r = fresh.open('acme')
    for _ in range(20):
        r.source('stripe')
        if hasattr(r, '_version'): r._version = None  # as after another connection's commit
    async def receive():
        for i in range(5):
            async with fresh.receiving('acme') as inbox:
                assert inbox.source('whatsapp').verify_token == META_TOKEN
                await inbox.submit(NewEvent(f'evt_{i}', 'github', 'push', '{}', None, f'github:evt_{i}', secret=fingerprint(GITHUB)))
                if hasattr(inbox, 'reload'): await inbox.reload()
        if hasattr(fresh, 'aclose'): await fresh.aclose()
    asyncio.run(receive())
    assert len(calls) == len(set(calls)) <= 6  # 5 secrets and 1 retired one, at most once each
    fresh.close(); t.close()

def test_copy_between_stores_with_different_keys(store, q, tmp_path):
    "A tenant copied to a store with another master key arrives encrypted under that key, and verifies there."
    src = SqliteStore(tmp_path/'old')
    a = src.open('acme', create=True)
    configure(a)
    a.log([NewEvent('evt_1', 'stripe', 'invoice.paid', BODY.decode(), 't=…', 'stripe:evt_1')])
    b = store.open('acme', create=True)
    assert copy_tenant(a, b) == dict(sources=4, events=1, attempts=0, skipped=0)  # current secrets (retired ones stay)
    assert key_file(store).read_text() != (tmp_path/'old'/'.master-key').read_text()
    assert b.source('stripe').secrets == (STRIPE_NEW,) and b.source('whatsapp').verify_token == META_TOKEN
    assert b.source('sms').url == a.source('sms').url and b.sources() == a.sources()
    mine = master_key(key_file(store))
    assert {mine.decrypt(v) for v in stored(q, b)} == {STRIPE_NEW, GITHUB, META, META_TOKEN, TWILIO}
    assert copy_tenant(b, SqliteStore(tmp_path/'back').open('acme', create=True))['sources'] == 4
    assert SqliteStore(tmp_path/'back').open('acme').source('whatsapp') == a.source('whatsapp')
    a.close(); b.close(); src.close()

def test_racing_first_uses_make_one_key_file(tmp_path):
    "Eight threads racing to create the key file end with one key: what any of them encrypts, every other one decrypts."
    p, got, barrier = tmp_path/'keys'/'.master-key', [], threading.Barrier(8)
    def first_use():
        barrier.wait()
        got.append(master_key(p, create=True))
    ts = [threading.Thread(target=first_use) for _ in range(8)]
    for th in ts: th.start()
    for th in ts: th.join()
    assert len(got) == 8
    sealed = [k.encrypt(f'secret-{i}') for i, k in enumerate(got)]
    assert all(k.decrypt(v) == f'secret-{i}' for k in got for i, v in enumerate(sealed))
    assert [x.name for x in p.parent.iterdir()] == ['.master-key'] and stat.S_IMODE(p.stat().st_mode) == 0o600

def test_a_key_file_that_is_not_a_key(tmp_path):
    (tmp_path/'.master-key').write_text('hunter2\n')
    t = SqliteTenant(tenant_db('acme', tmp_path))
    with pytest.raises(MasterKeyError, match=f'the key file {tmp_path}/.master-key is not a Fernet key'): t.add_source('github', 'github', GITHUB)
    assert t.sources() == []
