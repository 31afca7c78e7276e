"""What only PostgreSQL has to prove: schemas as tenants, hostile names, dedupe and claims across stores (standing in for
hosts), LISTEN/NOTIFY, stale owners, and that both backends keep the same columns, records and type filters.
The behaviour every store must have runs on both backends in test_store, test_worker and test_engine (`store` fixture)."""
import asyncio, os, shutil, subprocess, sys, threading, time
from pathlib import Path
import pytest
from webhooks.store import NewEvent, Outcome, Rejection, TenantError, tenant_db, log_webhook_event

if os.environ.get('CI', '').lower() != 'true': pytest.importorskip('psycopg', reason='pip install -e ".[dev]"')
import psycopg
from webhooks.store import SqliteTenant
from webhooks.postgres import PgStore, glob_regex, schema_name
import webhooks.forward  # its `Tenant` methods (destinations), as a server loads them

def ev(i, source='stripe', type='invoice.paid', payload=None, at=None, **kw):
    return NewEvent(i, source, type, payload if payload is not None else f'{{"id":"{i}"}}', 'v1=sig', f'{source}:{i}',
                    received_at=at, **kw)

def schemas(url):
    with psycopg.connect(url) as c: return sorted(r[0] for r in c.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"))

@pytest.mark.parametrize('clock', ['now', '+30d'])
def test_notebook_lessons_run_against_a_server(pg_url, clock):
    "The `postgres`-flagged cells of nbs/05_postgres.ipynb, which `nbdev-test` alone skips; again 30 days ahead: none expires."
    nb = Path(__file__).parents[1]/'nbs'/'05_postgres.ipynb'
    ahead = []
    if clock != 'now':
        if not shutil.which('faketime'):
            if os.environ.get('CI', '').lower() == 'true': pytest.fail('faketime is missing: apt-get install faketime', pytrace=False)
            pytest.skip('faketime is missing: apt-get install faketime')
        ahead = ['faketime', '-f', clock]
    r = subprocess.run([*ahead, str(Path(sys.executable).parent/'nbdev-test'), '--flags', 'postgres', str(nb)], capture_output=True,
                       text=True, env={**os.environ, 'WEBHOOKS_TEST_DB': pg_url}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr

def test_a_schema_per_tenant(pg_url):
    s = PgStore(pg_url)
    try:
        acme, globex = s.open('acme', create=True), s.open('Globex-EU', create=True)
        for t in (acme, globex):
            t.add_source('stripe', 'stripe', f'whsec_{t.name}_0123456789abcdef0123')
            assert t.log([ev('evt_1')]) != [None]  # the same delivery id and key in each tenant: two events
        assert [e.id for e in acme.events()] == [e.id for e in globex.events()] == ['evt_1']
        assert acme.source('stripe').secrets != globex.source('stripe').secrets
        with psycopg.connect(pg_url, autocommit=True) as c:  # what an operator might have beside the tenants
            c.execute('CREATE SCHEMA wh_reporting; CREATE SCHEMA analytics')
        assert s.tenants() == ['Globex-EU', 'acme']
        assert set(schemas(pg_url)) >= {'wh_acme', 'wh_Globex-EU', 'wh_reporting', 'analytics', 'public'}
        with pytest.raises(TenantError, match='not marked'): s.open('reporting', create=True)  # someone else's: left alone
        with psycopg.connect(pg_url, autocommit=True) as c: assert c.execute("SELECT count(*) FROM pg_tables WHERE schemaname='wh_reporting'").fetchone()[0] == 0
        with psycopg.connect(pg_url, autocommit=True) as c: c.execute('DROP SCHEMA wh_acme CASCADE')  # one tenant dropped alone
        assert s.tenants() == ['Globex-EU']
        with pytest.raises(TenantError) as e: s.open('acme')
        assert e.value.code == 'unknown_tenant'
        assert len(globex.events()) == 1
    finally: s.close()

def test_a_long_tenant_name_keeps_its_own_schema(pg_url):
    s = PgStore(pg_url)
    try:
        a, b = 'x'*60 + 'aaaa', 'x'*60 + 'bbbb'  # PostgreSQL would cut both to the same 63 bytes
        assert schema_name(a) != schema_name(b) and max(len(schema_name(a)), len(schema_name(b))) <= 63
        s.open(a, create=True).log([ev('evt_1')]); s.open(b, create=True)
        assert s.tenants() == [a, b]
        assert [len(s.open(n).events()) for n in (a, b)] == [1, 0]
    finally: s.close()

@pytest.mark.parametrize('name', ['../x', 'a/b', '..', 'acme"; DROP SCHEMA public CASCADE; --', "acme'", 'x\x00', 'ca fé', '',
                                  'x'*65, 'a.b', 'wh_acme"."webhook_events'])
def test_bad_tenant_names_never_reach_the_server(name):
    s = PgStore('postgresql://nobody@127.0.0.1:1/nowhere')  # nothing listens there: any connection attempt would fail
    with pytest.raises(TenantError, match='invalid tenant name'): s.open(name, create=True)
    async def receive():
        async with s.receiving(name): pass
    with pytest.raises(TenantError, match='invalid tenant name'): asyncio.run(receive())

def test_create_races_make_one_tenant(pg_url):
    stores = [PgStore(pg_url) for _ in range(4)]
    barrier, errors = threading.Barrier(4), []
    def create(s):
        barrier.wait()
        try: s.open('acme', create=True)
        except Exception as e: errors.append(e)
    ts = [threading.Thread(target=create, args=(s,)) for s in stores]
    for t in ts: t.start()
    for t in ts: t.join()
    try:
        assert errors == [] and stores[0].tenants() == ['acme']
    finally:
        for s in stores: s.close()

def test_group_commits_of_two_stores_dedupe_atomically(pg_url):
    "Two stores (two receivers' pools, standing in for two hosts) race with the same keys, in opposite orders."
    PgStore(pg_url).open('acme', create=True)
    keys = [f'evt_{i:04d}' for i in range(300)]
    answers, barrier = {0: [], 1: []}, threading.Barrier(2)
    def receiver(n):
        s = PgStore(pg_url)
        async def main():
            async with s.receiving('acme') as inbox:
                barrier.wait()
                for lo in range(0, len(keys), 50):  # rounds of concurrent deliveries, each key delivered twice per receiver
                    chunk = keys[lo:lo+50] * 2
                    if n: chunk.reverse()
                    seqs = await asyncio.gather(*(inbox.submit(ev(k)) for k in chunk))
                    answers[n] += list(zip(chunk, seqs))
            await s.aclose()
        asyncio.run(main())
    ts = [threading.Thread(target=receiver, args=(n,)) for n in (0, 1)]
    for t in ts: t.start()
    for t in ts: t.join()
    new = {}
    for k, seq in answers[0] + answers[1]:
        if seq is not None: new.setdefault(k, []).append(seq)
    assert {k: len(v) for k, v in new.items()} == {k: 1 for k in keys}, 'each key is new for exactly one delivery'
    s = PgStore(pg_url)
    try:
        rows = s.open('acme').q('SELECT idempotency_key, count(*) n FROM webhook_events GROUP BY 1')
        assert {r['idempotency_key']: r['n'] for r in rows} == {f'stripe:{k}': 1 for k in keys}
        assert sorted(v[0] for v in new.values()) == sorted(r['seq'] for r in s.open('acme').q('SELECT seq FROM webhook_events'))
    finally: s.close()

def test_skip_locked_claims_of_four_workers_never_overlap(pg_url):
    s = PgStore(pg_url)
    s.open('acme', create=True).log([ev(f'evt_{i}') for i in range(2000)])
    claimed, barrier = [], threading.Barrier(4)
    def worker(n):
        own = PgStore(pg_url)
        t = own.open('acme'); t.owner = f'worker-{n}.internal:{100+n}'
        barrier.wait()
        while cs := t.claim(batch=25):
            claimed.extend(c.seq for c in cs)
            assert t.record([Outcome(c.seq, c.id, c.attempt, time.time(), time.time(), 'completed') for c in cs]) == {c.seq for c in cs}
        own.close()
    ts = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for th in ts: th.start()
    for th in ts: th.join()
    try:
        assert len(claimed) == len(set(claimed)) == 2000
        assert s.open('acme').q("SELECT status, attempts, count(*) n FROM webhook_events GROUP BY 1, 2") == [{'status': 'completed', 'attempts': 1, 'n': 2000}]
        assert s.open('acme').q("SELECT count(*) n FROM webhook_attempts")[0]['n'] == 2000
    finally: s.close()

def test_listen_wakes_a_worker_on_new_events_only(pg_url):
    s, writer = PgStore(pg_url), PgStore(pg_url)
    acme = writer.open('acme', create=True)
    async def main():
        woken = []
        task = asyncio.create_task(s.listen(woken.append))
        async def until(n):
            for _ in range(300):
                if len(woken) >= n: return
                await asyncio.sleep(0.01)
        await until(1)
        assert woken == [None]  # listening
        await asyncio.to_thread(acme.log, [ev('evt_1')])  # another store: another host's receiver
        await until(2)
        await asyncio.to_thread(acme.log, [ev('evt_1')])  # a duplicate: nothing new
        await asyncio.to_thread(acme.log, [ev('evt_2', status='processing')])  # run by its receiver: no worker needed
        await asyncio.sleep(0.3)
        task.cancel()
        return woken
    try: assert asyncio.run(main()) == [None, 'acme']
    finally: s.close(); writer.close()

def test_a_stale_owner_cannot_touch_a_reclaimed_event(pg_url):
    s = PgStore(pg_url)
    try:
        w1, w2 = s.open('acme', create=True), s.open('acme')
        w1.owner, w2.owner = 'worker-1.internal:812', 'worker-2.internal:377'
        w1.log([ev('evt_1')])
        now = time.time()
        (c1,) = w1.claim(lease=30, now=now - 60)   # its lease ran out 30 s ago
        (c2,) = w2.claim(lease=600, now=now)       # taken over: attempt 2
        assert (c2.seq, c2.attempt) == (c1.seq, 2)
        until = w2.q('SELECT lease_until FROM webhook_events')[0]['lease_until']
        w1.renew(lease=3600, lapse=[(c1.seq, 1), (c1.seq, 2)])
        w1.release([c1, c2])
        assert w1.record([Outcome(c1.seq, c1.id, 1, now, now, 'failed', 'RuntimeError: late'),
                          Outcome(c1.seq, c1.id, 2, now, now, 'completed')]) == set()
        row = w2.q('SELECT status, attempts, lease_owner, lease_until, error_message FROM webhook_events')[0]
        assert row == {'status': 'processing', 'attempts': 2, 'lease_owner': w2.owner, 'lease_until': until, 'error_message': None}
        assert [a.outcome for a in w2.attempts(c1.seq)] == ['lapsed']
        assert w2.record([Outcome(c2.seq, c2.id, 2, now, now, 'completed')]) == {c2.seq}
        assert [a.outcome for a in w2.attempts(c1.seq)] == ['lapsed', 'completed']
    finally: s.close()

def test_record_writes_history_only_for_the_attempt_it_applied(pg_url):
    "A stale outcome in the same batch as the current one of the same event gets no history row."
    s = PgStore(pg_url)
    try:
        t = s.open('acme', create=True)
        t.log([ev('evt_1')])
        now = time.time()
        t.claim(lease=1, now=now - 10); (c,) = t.claim(now=now)  # attempt 1 lapsed, attempt 2 is this process's again
        assert t.record([Outcome(c.seq, c.id, 1, now, now, 'completed'), Outcome(c.seq, c.id, 2, now, now, 'completed')]) == {c.seq}
        assert [(a.attempt, a.outcome) for a in t.attempts(c.seq)] == [(1, 'lapsed'), (2, 'completed')]
    finally: s.close()

def test_sources_changed_elsewhere_reach_a_receiving_store_at_once(pg_url):
    admin, rcv = PgStore(pg_url), PgStore(pg_url)
    acme = admin.open('acme', create=True)
    old = acme.add_source('stripe', 'stripe', 'whsec_old_0123456789abcdef0123456789')
    async def main():
        async with rcv.receiving('acme') as inbox: assert len(inbox.source('stripe').secrets) == 1
        await asyncio.sleep(0.2)  # the sources watch is listening
        await asyncio.to_thread(acme.add_source, 'stripe', 'stripe', 'whsec_new_0123456789abcdef0123456789')
        await asyncio.to_thread(acme.remove_secret, 'stripe', old.fingerprints[0])
        for _ in range(200):
            async with rcv.receiving('acme') as inbox:
                if inbox.source('stripe').secrets == ('whsec_new_0123456789abcdef0123456789',): return True
            await asyncio.sleep(0.01)
        return False
    try: assert asyncio.run(main()), 'the retired secret still verified on the other store'
    finally: rcv.close(); admin.close()

def test_durability_whatever_the_database_default(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(f'ALTER DATABASE "{c.info.dbname}" SET synchronous_commit = off')
    s = PgStore(pg_url)
    try:
        assert s.open('acme', create=True).q('SHOW synchronous_commit') == [{'synchronous_commit': 'on'}]
        async def receiving_setting():
            async with (await s._receiving_pool()).connection() as c:
                return (await (await c.execute('SHOW synchronous_commit')).fetchone())[0]
        assert asyncio.run(receiving_setting()) == 'on'
    finally: s.close()

def test_bodies_and_text_postgres_cannot_hold(pg_url):
    s = PgStore(pg_url)
    try:
        t = s.open('acme', create=True)
        t.log([ev('evt_bin', payload=b'\x1f\x8b\x08\x00\x00'), ev('evt_nul', payload=b'a=1\x00b=2'), ev('evt_\x00x')])
        got = {e.id: e.payload for e in t.events()}
        assert got['evt_bin'] == b'\x1f\x8b\x08\x00\x00' and got['evt_nul'] == 'a=1\x00b=2'
        assert 'evt_\ufffdx' in got  # text columns cannot hold NUL
        assert t.log([ev('evt_\x00x')]) == [None]  # and the delivery is still a duplicate
    finally: s.close()

def test_a_nul_in_an_error_and_whole_second_times_are_recorded(pg_url):
    "A handler error holding NUL is recorded (not a failed `record` that loses the outcome); int times mix with floats."
    s = PgStore(pg_url)
    try:
        t = s.open('acme', create=True)
        t.log([ev('evt_1', at=1795342447), ev('evt_2', at=1795342447.5)])
        c1, c2 = t.claim()
        now = int(time.time())
        outs = [Outcome(c1.seq, c1.id, 1, now, now, 'retry', 'ValueError: bad byte \x00 in input'),
                Outcome(c2.seq, c2.id, 1, now, time.time(), 'completed')]
        assert t.record(outs, retry_at=lambda o: int(o.finished) + 60) == {c1.seq, c2.seq}
        assert t.q('SELECT status, error_message, next_attempt_at FROM webhook_events ORDER BY seq') == [
            {'status': 'pending', 'error_message': 'ValueError: bad byte \ufffd in input', 'next_attempt_at': now + 60},
            {'status': 'completed', 'error_message': None, 'next_attempt_at': 0}]
        assert [a.outcome for a in t.attempts(c1.seq)] == ['retry']
    finally: s.close()

def test_same_columns_and_records_as_sqlite(pg_url, tmp_path):
    s = PgStore(pg_url)
    try:
        pg, lite = s.open('acme', create=True), tenant_db('acme', tmp_path)
        for table in ('webhook_events', 'webhook_attempts', 'webhook_sources', 'webhook_rejections', 'webhook_retired'):
            cols = [r['column_name'] for r in pg.q('SELECT column_name FROM information_schema.columns WHERE table_schema=%s '
                                                  'AND table_name=%s ORDER BY ordinal_position', (pg.schema, table))]
            assert cols == [c.name for c in lite.t[table].columns], table
        batch = [ev('evt_1', at=1795342447.25, headers='{"user-agent":"Stripe/1.0"}'), ev('evt_2', payload=b'\xff', at=1795342448.5),
                 ev('evt_1', at=1795342449.0)]
        lt = SqliteTenant(lite)
        assert [s is not None for s in pg.log(batch)] == [s is not None for s in lt.log(batch)] == [True, True, False]
        assert [e._replace(seq=None) for e in pg.events()] == [e._replace(seq=None) for e in lt.events()]
    finally: s.close()

PATTERNS = ['invoice.*', 'invoice.?aid', '*.paid', 'charge.[a-f]*', 'charge.[^a-f]*', '[]x]*', '*[*]*', 'a[', 'x\\y*', '*', '',
            'invoice.paid', '[a-]*', '*[.]*', 'a?c', '(x)*', 'x+y', '$*', '^*', '[^]]*', '*\n*']
SUBJECTS = ['invoice.paid', 'invoice.', 'invoices.paid', 'charge.refunded', 'charge.failed', 'charge.z', ']x', 'x]', 'a*b', 'a[',
            'x\\yz', '', 'INVOICE.PAID', 'abc', 'a-c', '-', '(x)', 'x+y', 'xxy', '$', '^', 'line1\nline2', 'évènement.créé']

def test_type_wildcards_match_as_sqlite_glob_does(pg_url):
    import apsw
    lite = apsw.Connection(':memory:')
    pairs = [(p, x) for p in PATTERNS for x in SUBJECTS]
    want = [bool(lite.execute('SELECT ? GLOB ?', (x, p)).fetchone()[0]) for p, x in pairs]
    with psycopg.connect(pg_url) as c:
        got = [r[0] for r in c.execute('SELECT x ~ p FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(x, p, n) ORDER BY n',
                                       ([x for _, x in pairs], [glob_regex(p) for p, _ in pairs]))]
    assert [(p, x) for (p, x), w, g in zip(pairs, want, got) if w != g] == []

def test_copy_sqlite_to_postgres_and_back_keeps_everything_once(pg_url, tmp_path):
    from webhooks.store import copy_tenant
    s = PgStore(pg_url)
    try:
        lite, pg, back = SqliteTenant(tenant_db('acme', tmp_path/'a')), s.open('acme', create=True), SqliteTenant(tenant_db('acme', tmp_path/'b'))
        lite.add_source('stripe', 'stripe', 'whsec_old_0123456789abcdef0123456789')
        lite.add_source('stripe', 'stripe', 'whsec_new_0123456789abcdef0123456789', max_body=65536)
        lite.log([ev(f'evt_{i}', at=1795342447.0 + i, headers='{"user-agent":"Stripe/1.0"}') for i in range(2500)]
                 + [ev('evt_bin', payload=b'\xff\xfe', at=1795345000.5)])
        (c,) = lite.claim(batch=1, now=1795346000.0)
        lite.record([Outcome(c.seq, c.id, 1, 1795346000.0, 1795346001.0, 'failed', 'ValueError: no customer')])
        lite.claim(batch=1, now=1795346002.0)  # one event is processing when the copy is made
        assert copy_tenant(lite, pg, page=1000) == dict(sources=2, events=2501, attempts=1, skipped=0)
        assert copy_tenant(lite, pg, page=1000) == dict(sources=0, events=0, attempts=0, skipped=2501)
        assert copy_tenant(pg, back, page=700) == dict(sources=2, events=2501, attempts=1, skipped=0)
        for t in (pg, back):
            assert t.sources() == lite.sources() and t.source('stripe') == lite.source('stripe')
            assert [e._replace(seq=None) for e in t.events(limit=3000) if e.id != 'evt_1'] == \
                   [e._replace(seq=None) for e in lite.events(limit=3000) if e.id != 'evt_1']
            assert t.events(id='evt_1')[0].status == 'pending'  # its lease was the old store's
            assert [a.outcome for a in t.attempts(t.find('evt_0'))] == ['failed']
    finally: s.close()

# ---------------------------------------------------------------- schema 4: the operator's tables, on PostgreSQL too

def v1_layout(tenant:str)->str:
    "Tenant `tenant`'s schema as layout 1 made it (no rejections, no retired secrets, no `last_matched`), marked version 1."
    import json, re
    from psycopg import sql
    from webhooks.postgres import PG_API_SCHEMA, PG_COMMIT_ORDER, PG_FORWARD_SCHEMA, PG_MIGRATIONS, PG_REJECTION_SCHEMA, PG_SCHEMA, pg_ddl
    from webhooks.sqlite import ORDER_INDEXES, QUEUE_INDEX
    from webhooks.store import STATUSES
    ddl = PG_SCHEMA.replace('\n' + PG_MIGRATIONS[9], '').replace(PG_FORWARD_SCHEMA, '').replace(PG_API_SCHEMA, '').replace(PG_COMMIT_ORDER, '')
    ddl = ddl.replace(pg_ddl(QUEUE_INDEX), '')
    ddl = re.sub(r'\n  xid xid8[^\n]*', '', ddl)  # the order columns before it go too, comma and all
    ddl = re.sub(r'\n  last_matched double precision,[^\n]*', '', ddl.replace(PG_REJECTION_SCHEMA, ''))
    ddl = re.sub(r'\n  (verify_token|url) text,[^\n]*', '', ddl)
    ddl = re.sub(r'\n  (paused boolean|rate_limit double|handler_rate double)[^\n]*', '', ddl)
    ddl = re.sub(r'\n  (order_key text|created double|turn double|order_by text|on_failure text|skip_stale integer)[^\n]*', '',
                 ddl.replace(pg_ddl(ORDER_INDEXES), '')).replace('  headers text, ' + ' '*22 + "-- the request's headers as a JSON", '  headers text  ' + ' '*22 + "-- the request's headers as a JSON").replace(", 'superseded'", '')
    ddl = ddl.replace("\n  WHERE status = 'pending' AND order_key IS NULL;", " WHERE status = 'pending';")
    assert 'order_key' not in ddl and 'superseded' not in ddl and 'skip_stale' not in ddl
    assert 'paused' not in ddl and 'handler_rate' not in ddl
    assert 'rejections' not in ddl and 'retired' not in ddl and 'last_matched' not in ddl and 'webhook_events_status' not in ddl
    assert 'verify_token' not in ddl and ' url ' not in ddl and 'webhook_tokens' not in ddl and 'payload_json' not in ddl and 'xid' not in ddl
    return sql.SQL(ddl).format(s=sql.Identifier(schema_name(tenant)), statuses=sql.SQL(', ').join(map(sql.Literal, STATUSES)),
                               mark=sql.Literal(json.dumps({'webhooks_tenant': tenant, 'schema_version': 1}))).as_string(None)

def layout(url, schema):
    "Columns (in order) and index definitions of `schema`'s tables, the schema's name taken out."
    with psycopg.connect(url) as c:
        cols = c.execute('SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema=%s '
                         'ORDER BY table_name, ordinal_position', (schema,)).fetchall()
        idx = c.execute('SELECT indexdef FROM pg_indexes WHERE schemaname=%s ORDER BY indexname', (schema,)).fetchall()
        mark = c.execute("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname=%s", (schema,)).fetchone()[0]
    return cols, [d.replace(f'"{schema}".', '').replace(f'{schema}.', '') for (d,) in idx], mark.replace(schema[3:], '')

def test_an_old_layout_schema_migrates_in_place_and_keeps_its_rows(pg_url):
    "Schemas made by layout 1 are brought up to date when opened (once, by racing stores) or first received for."
    from webhooks.postgres import PG_SCHEMA_VERSION
    from webhooks.signatures import fingerprint
    with psycopg.connect(pg_url, autocommit=True) as c:
        for t in ('acme', 'globex'):
            c.execute(v1_layout(t))
            s = schema_name(t)
            c.execute(f'''INSERT INTO "{s}".webhook_events (id, source, event_type, payload, idempotency_key, status, received_at)
                          VALUES ('evt_old', 'stripe', 'invoice.paid', '{{"id":"evt_old"}}', 'stripe:evt_old', 'failed', 1767225600)''')
            c.execute(f'''INSERT INTO "{s}".webhook_sources VALUES ('stripe', 'stripe', 'whsec_old_0123456789abcdef', %s, 300,
                          1767225000, NULL)''', (fingerprint('whsec_old_0123456789abcdef'),))
    stores = [PgStore(pg_url) for _ in range(4)]
    try:
        assert stores[0].tenants() == ['acme', 'globex']
        barrier, opened, errors = threading.Barrier(4), [], []
        def open_it(s):
            barrier.wait()
            try: opened.append(s.open('acme'))
            except Exception as e: errors.append(e)
        ts = [threading.Thread(target=open_it, args=(s,)) for s in stores]
        for th in ts: th.start()
        for th in ts: th.join()
        assert errors == [] and len(opened) == 4
        t = opened[0]
        fresh = stores[0].open('fresh', create=True)
        assert layout(pg_url, 'wh_acme') == layout(pg_url, 'wh_fresh'), 'a migrated schema is the one a new tenant gets'
        assert f'"schema_version": {PG_SCHEMA_VERSION}' in layout(pg_url, 'wh_acme')[2] and PG_SCHEMA_VERSION == 10
        (e,) = t.events()
        assert (e.id, e.payload, e.status, e.received_at) == ('evt_old', '{"id":"evt_old"}', 'failed', 1767225600)
        assert t.source('stripe') == ('stripe', ('whsec_old_0123456789abcdef',), 300, None, (), None, None, False, None, None, None)
        assert t.set_source('stripe', paused=True, handler_rate=2).handler_rate == 2.0  # the columns layout 4 added
        src = t.set_source('stripe', paused=False, order_by='data.object.id', on_failure='continue', skip_stale=True)
        assert (src.order_by, src.on_failure, src.skip_stale) == ('data.object.id', 'continue', True)  # layout 6's
        t.set_status('superseded', seq=e.seq)  # the widened CHECK admits it
        assert t.events()[0].status == 'superseded'
        t.set_status('failed', seq=e.seq)
        assert t.q('SELECT secret FROM webhook_sources')[0]['secret'].startswith('fernet:')  # layout 1 kept it as plaintext
        assert [(x.added_at, x.last_matched) for x in t.secrets('stripe')] == [(1767225000, None)]
        assert t.reject([Rejection(1767225700.5, 'stripe', '203.0.113.7', 'invalid_signature', 'no match', None, b'{}', 2)]) == 1
        assert t.replay('evt_old') == [e.seq]
        assert [x.id for x in t.events(search='id=evt_old')] == ['evt_old']  # layout 5's payload_json
        assert t.check_token(t.add_token('laptop')).name == 'laptop'  # and its tokens table
        t.add_destination('billing', 'http://127.0.0.1:9/hooks', allow_private=True)  # the tables layout 7 added
        t.log([NewEvent('evt_new', 'stripe', 'invoice.paid', '{}', None, 'stripe:evt_new')])
        assert t.fan_out() == 1 and t.deliveries()[0].destination == 'billing'
        del fresh
        async def receive():  # globex is first opened by a receiver: migrated there
            s = PgStore(pg_url)
            async with s.receiving('globex') as inbox:
                seq = await inbox.submit(ev('evt_new', at=1767226000.25, secret=fingerprint('whsec_old_0123456789abcdef')))
            await s.aclose()
            return seq
        assert asyncio.run(receive()) is not None
        g = stores[1].open('globex')
        assert [x.id for x in g.events()] == ['evt_new', 'evt_old']
        assert [x.last_matched for x in g.secrets('stripe')] == [1767226000.25]
        assert layout(pg_url, 'wh_globex')[:2] == layout(pg_url, 'wh_fresh')[:2]
    finally:
        for s in stores: s.close()

def test_operator_views_match_sqlite(pg_url, tmp_path):
    "Rejections, counts, secrets, stats, hourly buckets, retired secrets and the new filters: the same on both stores."
    from webhooks.signatures import fingerprint
    from webhooks.store import SqliteStore
    ps, ls = PgStore(pg_url), SqliteStore(tmp_path/'data')
    try:
        pg, lite = ps.open('acme', create=True), ls.open('acme', create=True)
        now = 1795442400.0 + 1234.5  # 20 minutes into an hour
        old, new = 'whsec_old_0123456789abcdef0123456789', 'whsec_new_0123456789abcdef0123456789'
        rej = [Rejection(now - 600*i, 'stripe' if i % 3 else 'paypal', f'203.0.113.{i}', code, f'diagnosis {i}',
                         '{"stripe-signature":"t=1795…"}' if i % 2 else None, bytes([i]) * (i % 5) or None, i * 100)
               for i, code in zip(range(40, 0, -1), ['invalid_signature', 'stale_timestamp', 'unknown_source', 'invalid_signature'] * 10)]
        for t in (pg, lite):
            t.add_source('stripe', 'stripe', old); t.add_source('stripe', 'stripe', new); t.add_source('github', 'github', 'gh-secret-0123456789')
            events = [ev(f'evt_{i}', type=['invoice.paid', 'charge.failed', 'customer.created'][i % 3], at=now - 900*i,
                         secret=fingerprint(old if i > 20 else new) if i % 4 else None) for i in range(60, 0, -1)]
            t.log(events[:30]); t.log(events[30:])
            cs = t.claim(batch=45, now=now)
            t.record([Outcome(c.seq, c.id, c.attempt, now - 1000*j, now - 1000*j + 1.5, ['completed', 'failed', 'ignored', 'retry'][j % 4],
                              None if j % 4 == 0 else 'ValueError: no customer') for j, c in enumerate(cs)], retry_at=lambda o: now + 60)
            assert t.reject(rej[:25], cap=20) == 25 and t.reject(rej[25:], cap=20) == 15
            t.remove_secret('stripe', fingerprint(old))
        same = lambda f: (f(pg), f(lite))
        ordered = lambda d: list(d.values()) == sorted(d.values(), reverse=True)
        for name, f in dict(
                rejections=lambda t: t.rejections(limit=100),
                page=lambda t: t.rejections(limit=5, before=t.rejections(limit=3)[-1].seq, code='invalid_signature'),
                recent=lambda t: t.rejections(since=now - 3000),
                counts=lambda t: (t.rejection_counts(), ordered(t.rejection_counts())),  # ties may come in either order
                counts_1h=lambda t: t.rejection_counts(since=now - 3600),
                secrets=lambda t: [(x.fingerprint, x.last_matched) for x in t.secrets('stripe')],
                github=lambda t: t.secrets('github')[0].last_matched,
                retired=lambda t: [sec for sec, _ in t.source('stripe').retired],
                stats=lambda t: t.stats(now=now),
                hourly=lambda t: t.hourly(now=now),
                hourly_72=lambda t: t.hourly(72, now=now + 7200),
                until=lambda t: [(e.id, e.status) for e in t.events(until=now - 30000, limit=100)],
                replay_until=lambda t: len(t.replay(until=now - 20000, dry_run=True)),
                count=lambda t: t.count(range(40_000, 0, -1)),  # past SQLite's slices of 10,000
                ).items():
            a, b = same(f)
            assert a == b, name
        # the equalities above are about something: every view holds rows
        assert pg.stats(now=now) == dict(counts={'pending': 26, 'processing': 0, 'completed': 12, 'failed': 11, 'unhandled': 11, 'superseded': 0},
                                         oldest_pending=now - 900*57, rejected_1h=6)  # the 4th claimed was retried
        h = pg.hourly(now=now)
        assert [sum(x[k] for x in h) for k in ('received', 'completed', 'failed', 'rejected')] == [60, 12, 11, 20]
        assert len(pg.rejections(limit=100)) == 20 and {type(r.body) for r in pg.rejections(limit=100)} == {bytes, type(None)}
        assert pg.secrets('stripe')[0].last_matched == now - 900  # the newest event verified by the new secret
        assert same(lambda t: t.prune(30, statuses=('completed', 'failed', 'unhandled'), now=now + 86400*30 - 3000)) == \
            (dict(emptied=34, deleted=34, rejections=15),) * 2
        for t in (pg, lite): t.set_status('unhandled', seq=t.events(status='pending', limit=1)[0].seq)
        assert same(lambda t: t.events(status='unhandled', limit=1)[0].processed_at is not None) == (True, True)
    finally: ps.close(); ls.close()

BAD_CALLS = [('events', dict(status='done')), ('events', dict(status=('failed', 'lost'))),
             ('replay', dict()), ('replay', dict(status='pending')), ('replay', dict(status='done')),
             ('replay', dict(failed=True, status='completed')), ('replay', dict(id='evt_1', status='failed')),
             ('replay', dict(id='evt_1', until=1795440000.0)), ('replay', dict(id='evt_nope')), ('replay', dict(id='evt_2')),
             ('prune', dict(older_than_days=30, statuses=('pending',))), ('prune', dict(older_than_days=-1)),
             ('set_status', dict(status='done', seq=1)), ('set_status', dict(status='completed', id='evt_nope')),
             ('set_status', dict(status='completed', seq=10**9)), ('find', dict(id='evt_dup')),
             ('remove_secret', dict(name='stripe', fingerprint='fp_0000000000')),
             ('add_source', dict(name='stripe', scheme='github', secret='gh-secret-0123456789'))]

def test_errors_are_the_sqlite_stores(pg_url, tmp_path):
    "Every refusal of a bad call is the same exception with the same message on both stores."
    from webhooks.store import SqliteStore
    ps, ls = PgStore(pg_url), SqliteStore(tmp_path/'data')
    try:
        pg, lite = ps.open('acme', create=True), ls.open('acme', create=True)
        for t in (pg, lite):
            t.add_source('stripe', 'stripe', 'whsec_0123456789abcdef0123456789')
            t.log([ev('evt_1', at=1795440000.5), ev('evt_2', at=1795440001.5), ev('evt_dup', at=1795440002.5),
                   ev('evt_dup', source='github', at=1795440003.5)])
            t.set_status('completed', seq=t.find('evt_2')); t.prune(0, now=1795440100.0)
        def refusal(t, method, kw):
            try: getattr(t, method)(**kw)
            except Exception as e: return type(e).__name__, str(e)
        got = [(m, kw, refusal(pg, m, kw), refusal(lite, m, kw)) for m, kw in BAD_CALLS]
        assert [g for g in got if g[2] != g[3]] == []
        assert all(g[2] is not None for g in got), [g for g in got if g[2] is None]
    finally: ps.close(); ls.close()

def test_admin_token_made_once_by_racing_stores(pg_url):
    stores = [PgStore(pg_url) for _ in range(4)]
    barrier, got = threading.Barrier(4), []
    def first_run(s):
        barrier.wait()
        got.append(s.admin_token())
    ts = [threading.Thread(target=first_run, args=(s,)) for s in stores]
    for t in ts: t.start()
    for t in ts: t.join()
    try:
        (token,) = {tok for tok, _ in got}
        assert token.startswith('adm_') and len(token) >= 36 and sorted(made for _, made in got) == [False, False, False, True]
        assert stores[0].admin_token() == (token, False) and PgStore(pg_url).admin_token() == (token, False)
        assert stores[0].tenants() == [] and 'webhooks' in schemas(pg_url)  # the store's own schema is no tenant
    finally:
        for s in stores: s.close()

def test_receiving_records_matches_retired_secrets_and_refusals(pg_url):
    "An inbox round sets `last_matched`; the cached sources carry retired secrets; refusals go in through the async pool."
    from webhooks.signatures import fingerprint
    admin, rcv = PgStore(pg_url), PgStore(pg_url)
    acme = admin.open('acme', create=True)
    old, new = 'whsec_old_0123456789abcdef0123456789', 'whsec_new_0123456789abcdef0123456789'
    acme.add_source('stripe', 'stripe', old); acme.add_source('stripe', 'stripe', new)
    forged = [Rejection(1795440000.0 + i, 'stripe', '203.0.113.7', 'invalid_signature', 'no match', '{"a":"b\x00"}', b'\x00\xff', 2)
              for i in range(3)]
    async def main():
        async with rcv.receiving('acme') as inbox:
            seqs = await asyncio.gather(*(inbox.submit(ev(f'evt_{i}', at=1795440000.0 + i, secret=fingerprint(old if i < 5 else new)))
                                          for i in range(8)), inbox.submit(ev('evt_7', at=1795440009.0, secret=fingerprint(new))))
        await asyncio.to_thread(acme.remove_secret, 'stripe', fingerprint(old))
        for _ in range(200):  # the sources watch reloads the cache
            async with rcv.receiving('acme') as inbox:
                if inbox.source('stripe').secrets == (new,): break
            await asyncio.sleep(0.01)
        keys = inbox.source('stripe')
        n = await rcv.reject('acme', forged)
        with pytest.raises(TenantError): await rcv.reject('nobody', forged)
        await rcv.aclose()
        return seqs, keys, n
    try:
        seqs, keys, n = asyncio.run(main())
        assert seqs[-1] is None and None not in seqs[:-1]
        assert [(x.fingerprint, x.last_matched) for x in acme.secrets('stripe')] == [(fingerprint(new), 1795440009.0)]  # duplicates too
        assert keys.secrets == (new,) and [s for s, _ in keys.retired] == [old] and keys == acme.source('stripe')
        assert n == 3 and [(r.received_at, r.body, r.headers) for r in acme.rejections()] == \
            [(1795440000.0 + i, b'\x00\xff', '{"a":"b\ufffd"}') for i in (2, 1, 0)]
    finally: rcv.close(); admin.close()

def test_a_delivery_signed_with_a_retired_secret_is_diagnosed_over_http(pg_url):
    "A real receiver on PostgreSQL: the retired secret is named in the refusal's diagnosis; the current one's use is recorded."
    import json, socket
    import httpx, uvicorn
    from webhooks.cli import serve_app
    from webhooks.signatures import fingerprint, sign
    s = PgStore(pg_url)
    acme = s.open('acme', create=True)
    old, new = 'whsec_old_0123456789abcdef0123456789', 'whsec_new_0123456789abcdef0123456789'
    acme.add_source('stripe', 'stripe', old); acme.add_source('stripe', 'stripe', new)
    acme.remove_secret('stripe', fingerprint(old))
    with socket.socket() as sock: sock.bind(('127.0.0.1', 0)); port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(serve_app(PgStore(pg_url), worker=False), host='127.0.0.1', port=port, log_level='warning'))
    th = threading.Thread(target=server.run, daemon=True); th.start()
    try:
        while not server.started: assert th.is_alive(); time.sleep(0.01)
        def post(i, secret):
            body = json.dumps({'id': f'evt_{i}', 'object': 'event', 'type': 'invoice.paid'}).encode()
            return httpx.post(f'http://127.0.0.1:{port}/webhooks/acme/stripe', content=body, timeout=10,
                              headers={'Content-Type': 'application/json', **sign('stripe', body, secret)})
        sent = time.time()
        assert post(1, old).status_code == 401 and post(2, new).status_code == 200
        while not acme.rejections(): assert time.time() - sent < 2, 'the refusal was not recorded'; time.sleep(0.02)
        (r,) = acme.rejections()
        assert r.code == 'invalid_signature' and r.diagnosis.startswith(
            f"signed with a secret retired on {time.strftime('%Y-%m-%d', time.gmtime())} ({fingerprint(old)})"), r.diagnosis
        (info,) = acme.secrets('stripe')
        assert info.fingerprint == fingerprint(new) and sent <= info.last_matched <= time.time()
    finally:
        server.should_exit = True; th.join(20); s.close()

def test_a_copy_into_postgres_wakes_listening_workers(pg_url, tmp_path):
    "Events imported `pending` are announced like new ones: a listening worker runs them now, not at its next poll."
    from webhooks.engine import copy_tenant
    lite = SqliteTenant(tenant_db('initech', tmp_path))
    lite.log([NewEvent('evt_c1', 'stripe', 'invoice.paid', '{}', None, 'stripe:evt_c1')])
    s = PgStore(pg_url)
    t = s.open('initech', create=True)
    async def main():
        woken, t0 = [], time.monotonic()
        listening = asyncio.create_task(s.listen(woken.append))
        while not woken and time.monotonic() - t0 < 10: await asyncio.sleep(0.01)  # callback(None): listening
        assert await asyncio.to_thread(copy_tenant, lite, t) == dict(sources=0, events=1, attempts=0, skipped=0)
        while 'initech' not in woken and time.monotonic() - t0 < 10: await asyncio.sleep(0.01)
        listening.cancel()
        return woken
    try: assert 'initech' in asyncio.run(main())
    finally: s.close(); lite.close()
