"Databases in use keep working: a tenant file written by an older webhooks (schema v2 to v11; PostgreSQL layout 8) opens, migrates in place to today's and loses nothing."
import apsw, re, time
from webhooks.sqlite import FORWARD_DDL, FORWARD_TRIGGER, LINE_INDEXES, ORDER_INDEXES, QUEUE_INDEX, TOKENS_DDL
import webhooks.forward  # its `Tenant` methods
from webhooks.store import REJECTION_SCHEMA, SCHEMA, SCHEMA_VERSION, SqliteStore, SqliteTenant, tenant_db, NewEvent, Outcome
from webhooks.signatures import fingerprint

V6_DUE = "CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events(next_attempt_at, seq, source) WHERE status = 'pending';"
V5_DUE = "CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events(next_attempt_at) WHERE status = 'pending';"

def v6_schema()->str:
    "Today's schema as version 6 had it: no API tokens, no ordering keys."
    s = v7_schema()
    assert TOKENS_DDL in s
    return s.replace(TOKENS_DDL, '')

def v7_schema()->str:
    "Today's schema as version 7 had it: API tokens, but no ordering keys, no `superseded`, the due index over every pending event."
    s = re.sub(r"\n  (order_key TEXT|created REAL|turn REAL|order_by TEXT|on_failure TEXT|skip_stale INTEGER)[^\n]*", '',
               v8_schema().replace(ORDER_INDEXES, '')).replace('  headers TEXT, ' + ' '*22 + "-- the request's headers as a JSON", '  headers TEXT  ' + ' '*22 + "-- the request's headers as a JSON").replace(", 'superseded'", '')
    s, n = re.subn(r"CREATE INDEX IF NOT EXISTS webhook_events_due ON [^\n]*\n[^\n]*", V6_DUE, s)
    assert n == 1 and 'order_key' not in s and 'superseded' not in s and 'skip_stale' not in s
    return s

def v8_schema()->str:
    "Today's schema as version 8 had it: no forwarding tables, no fan-out trigger."
    s = v9_schema().replace(FORWARD_DDL, '').replace(FORWARD_TRIGGER, '')
    assert 'webhook_destinations' not in s and 'webhook_fanout' not in s
    return s

def v11_schema()->str:
    "Today's schema as version 11 had it: no `late`, no `webhook_events_aside`, the line of unfinished events only."
    assert LINE_INDEXES in SCHEMA
    return SCHEMA.replace(LINE_INDEXES, '')

def v10_schema()->str:
    "Today's schema as version 10 had it: no index of the due keyed events in arrival order."
    assert QUEUE_INDEX in v11_schema()
    return v11_schema().replace(QUEUE_INDEX, '')

def as_v11(c):
    "Take a today's tenant file back to version 11's indexes and columns (its rows stay)."
    c.execute('DROP INDEX webhook_events_aside; DROP INDEX webhook_events_line;' + ORDER_INDEXES.split('CREATE TABLE')[0]
              + 'ALTER TABLE webhook_events DROP COLUMN late; PRAGMA user_version=11')

def v9_schema()->str:
    "Today's schema as version 9 had it: no `xid` on events."
    s = re.sub(r"\n  xid INTEGER[^\n]*", '', v10_schema()).replace('  turn REAL,  ', '  turn REAL   ', 1)
    assert 'xid' not in s and '  turn REAL   ' in s
    return s

def v5_schema()->str:
    "Today's schema as version 5 had it: no flood controls on sources, the due index on `next_attempt_at` alone."
    s = re.sub(r"\n  (paused INTEGER|rate_limit REAL|handler_rate REAL)[^\n]*", '', v6_schema())
    s, n = re.subn(r"CREATE INDEX IF NOT EXISTS webhook_events_due ON [^\n]*", V5_DUE, s)
    assert n == 1 and 'paused' not in s and 'handler_rate' not in s
    return s

def v4_schema()->str:
    "Today's schema as version 4 had it: no `verify_token`, no `url` on sources."
    s = re.sub(r"\n  verify_token TEXT,[^\n]*", '', v5_schema())
    s = re.sub(r"\n  url TEXT,[^\n]*", '', s)
    assert 'verify_token' not in s and '  url ' not in s
    return s

def v2_schema()->str:
    "Today's schema as version 2 had it: no `headers`, no `max_body`, four statuses, no rejections."
    s = v4_schema().replace('\n'.join(REJECTION_SCHEMA), '')
    s = re.sub(r"\n  last_matched REAL,[^\n]*", '', s)
    s = s.replace(",\n  headers TEXT                        -- the request's headers as a JSON object, secrets redacted", '')
    s = re.sub(r"\n  max_body INTEGER,[^\n]*", '', s)
    s = s.replace(", 'unhandled'", '')
    assert 'headers' not in s and 'max_body' not in s and 'unhandled' not in s and 'rejections' not in s
    return s

def test_v2_database_migrates_in_place(tmp_path):
    c = apsw.Connection(str(tmp_path/'old.db'))
    c.execute(v2_schema())
    c.execute("""INSERT INTO webhook_events (id, source, event_type, payload, idempotency_key, received_at)
                 VALUES ('evt_old', 'stripe', 'invoice.paid', '{"id":"evt_old"}', 'stripe:evt_old', 1767225600)""")
    c.execute("INSERT INTO webhook_sources VALUES ('stripe', 'stripe', 'whsec_old_0123', 'fp_1', 300, 0)")
    c.execute('PRAGMA user_version=2'); c.close()
    db = tenant_db('old', tmp_path, create=False)
    assert db.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 12
    assert {'webhook_rejections', 'webhook_retired'} <= set(db.table_names())
    assert db.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    t = SqliteTenant(db)
    assert t.source('stripe').secrets == ('whsec_old_0123',) and t.source('stripe').max_body is None
    assert db.execute('SELECT secret FROM webhook_sources').fetchone()[0].startswith('fernet:')
    (e,) = t.events()
    assert (e.id, e.payload, e.status, e.headers) == ('evt_old', '{"id":"evt_old"}', 'pending', None)
    (c1,) = t.claim()
    assert t.record([Outcome(c1.seq, c1.id, c1.attempt, 1, 2, 'ignored')]) == {c1.seq}   # 'unhandled' passes the widened CHECK
    assert t.events()[0].status == 'unhandled'
    t.log([NewEvent('evt_new', 'stripe', 'x', b'\xff', None, 'stripe:evt_new', headers='{"a":"b"}')])
    assert t.events(id='evt_new')[0].payload == b'\xff' and t.events(id='evt_new')[0].headers == '{"a":"b"}'
    try: db.execute("UPDATE webhook_events SET status='bogus'"); raise AssertionError('CHECK no longer holds')
    except apsw.ConstraintError: pass
    db.close()
    db2 = tenant_db('old', tmp_path, create=False)  # a second open does not migrate again
    assert db2.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION
    assert SqliteTenant(db2).secrets('stripe')[0].last_matched is None

def test_v4_database_gains_verify_token_and_url_and_encrypts_its_secrets(tmp_path):
    "v4 → v5: two columns on `webhook_sources`, the plaintext secrets (current and retired) encrypted, nothing else touched."
    old, new = 'whsec_v4_old_0123456789abcdef', 'whsec_v4_new_0123456789abcdef'
    c = apsw.Connection(str(tmp_path/'acme.db'))
    c.execute(v4_schema())
    c.execute("INSERT INTO webhook_sources (name, scheme, secret, fingerprint, tolerance, added_at, max_body, last_matched) "
              "VALUES ('stripe', 'stripe', ?, ?, 600, 1767225000, 65536, 1767225100)", (new, fingerprint(new)))
    c.execute("INSERT INTO webhook_retired VALUES ('stripe', ?, ?, 9e9)", (fingerprint(old), old))
    c.execute("""INSERT INTO webhook_events (id, source, event_type, payload, idempotency_key, received_at)
                 VALUES ('evt_v4', 'stripe', 'invoice.paid', '{"id":"evt_v4"}', 'stripe:evt_v4', 1767225600)""")
    c.execute('PRAGMA user_version=4'); c.close()
    t = SqliteStore(tmp_path).open('acme')
    assert t.c.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION
    cols = [r[1] for r in t.c.execute('PRAGMA table_info(webhook_sources)')]
    assert cols[-8:] == ['verify_token', 'url', 'paused', 'rate_limit', 'handler_rate', 'order_by', 'on_failure', 'skip_stale']
    assert cols == [r[1] for r in SqliteStore(tmp_path/'fresh').open('x', create=True).c.execute('PRAGMA table_info(webhook_sources)')]
    assert t.source('stripe') == ('stripe', (new,), 600, 65536, ((old, 9e9),), None, None, False, None, None, None)
    (src,) = t.sources()
    assert (src.url, src.verify_token, src.fingerprints) == (None, False, (fingerprint(new),))
    assert [(x.added_at, x.last_matched) for x in t.secrets('stripe')] == [(1767225000, 1767225100)]
    stored = t.c.execute('SELECT secret FROM webhook_sources UNION ALL SELECT secret FROM webhook_retired').fetchall()
    assert [s[:7] for (s,) in stored] == ['fernet:', 'fernet:']
    assert t.events()[0].payload == '{"id":"evt_v4"}'
    assert (tmp_path/'.master-key').stat().st_mode & 0o777 == 0o600
    t.close()
    for f in tmp_path.glob('acme.db*'): assert new.encode() not in f.read_bytes() and old.encode() not in f.read_bytes(), f

def test_v5_database_gains_flood_controls_and_a_due_index_that_holds_the_source(tmp_path):
    "v5 → v6: `paused`, `rate_limit`, `handler_rate` on sources (unpaused, no limits), the due index rebuilt; rows untouched."
    fresh = SqliteStore(tmp_path/'fresh').open('x', create=True)
    c = apsw.Connection(str(tmp_path/'acme.db'))
    c.execute(v5_schema())
    c.execute("INSERT INTO webhook_sources (name, scheme, secret, fingerprint, tolerance, added_at) "
              "VALUES ('stripe', 'stripe', 'whsec_v5_0123456789abcdef', ?, 120, 1767225000)", (fingerprint('whsec_v5_0123456789abcdef'),))
    c.executemany("""INSERT INTO webhook_events (id, source, event_type, payload, idempotency_key, received_at)
                     VALUES (?, ?, 'invoice.paid', '{}', ?, 1767225600)""", [('evt_a', 'stripe', 'stripe:evt_a'), ('gh_1', 'github', 'github:gh_1')])
    c.execute('PRAGMA user_version=5'); c.close()
    t = SqliteStore(tmp_path).open('acme')
    assert t.c.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION
    cols = lambda tt, table: [r[1:] for r in tt.c.execute(f'PRAGMA table_info({table})')]
    assert cols(t, 'webhook_sources') == cols(fresh, 'webhook_sources')
    index = lambda tt: tt.c.execute("SELECT sql FROM sqlite_schema WHERE name='webhook_events_due'").fetchone()[0]
    assert index(t) == index(fresh) and '(next_attempt_at, seq, source' in index(t)
    (src,) = t.sources()
    assert (src.tolerance, src.paused, src.rate_limit, src.handler_rate) == (120, False, None, None)
    t.set_source('stripe', paused=True)
    assert [x.id for x in t.claim()] == ['gh_1']  # stripe's event is held
    t.set_source('stripe', paused=False)
    assert [x.id for x in t.claim()] == ['evt_a']
    assert t.c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'

def test_v6_database_gains_api_tokens_and_payload_search(tmp_path):
    "v6 → today: the `webhook_tokens` table (empty); events untouched and searchable by payload."
    c = apsw.Connection(str(tmp_path/'acme.db'))
    c.execute(v6_schema())
    c.execute("""INSERT INTO webhook_events (id, source, event_type, payload, idempotency_key, received_at)
                 VALUES ('evt_a', 'stripe', 'invoice.paid', '{"data":{"object":{"customer":"cus_9"}}}', 'stripe:evt_a', 1767225600)""")
    c.execute('PRAGMA user_version=6'); c.close()
    t = SqliteStore(tmp_path).open('acme')
    assert t.c.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 12
    assert t.tokens() == []
    tok = t.add_token('laptop', read_only=True)
    assert t.check_token(tok).read_only is True
    assert [e.id for e in t.events(search='data.object.customer=cus_9')] == ['evt_a']
    assert t.c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'

def test_v7_database_gains_ordering_keys_in_place(tmp_path):
    "v7 → v8: ordering columns and settings, the keyed indexes, `webhook_keys`, the status `superseded`; rows untouched."
    fresh = SqliteStore(tmp_path/'fresh').open('x', create=True)
    c = apsw.Connection(str(tmp_path/'acme.db'))
    c.execute(v7_schema())
    c.execute("INSERT INTO webhook_sources (name, scheme, secret, fingerprint, tolerance, added_at, paused) "
              "VALUES ('stripe', 'stripe', 'whsec_v6_0123456789abcdef', ?, 300, 1767225000, 0)", (fingerprint('whsec_v6_0123456789abcdef'),))
    c.executemany("""INSERT INTO webhook_events (id, source, event_type, payload, idempotency_key, status, received_at)
                     VALUES (?, 'stripe', 'invoice.paid', '{}', ?, ?, 1767225600)""",
                  [('evt_done', 'stripe:evt_done', 'completed'), ('evt_queued', 'stripe:evt_queued', 'pending')])
    c.execute('PRAGMA user_version=7'); c.close()
    t = SqliteStore(tmp_path).open('acme')
    assert t.c.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 12
    cols = lambda tt, table: [r[1:] for r in tt.c.execute(f'PRAGMA table_info({table})')]
    for table in ('webhook_events', 'webhook_sources', 'webhook_keys'): assert cols(t, table) == cols(fresh, table), table
    idx = lambda tt: sorted(tt.c.execute("SELECT name, sql FROM sqlite_schema WHERE type='index' AND sql IS NOT NULL"))
    assert idx(t) == idx(fresh)
    assert [(e.id, e.status) for e in t.events()] == [('evt_queued', 'pending'), ('evt_done', 'completed')]
    (src,) = t.sources()
    assert (src.order_by, src.on_failure, src.skip_stale) == (None, 'hold', False)
    (q,) = t.claim()  # stored before: unordered, claimed as before
    assert (q.id, q.key, q.created) == ('evt_queued', None, 1767225600)
    t.set_source('stripe', order_by='data.object.id', skip_stale=True)
    body = lambda i, at: f'{{"id":"evt_{i}","created":{at},"data":{{"object":{{"id":"in_1"}}}}}}'
    t.log([NewEvent(f'evt_{i}', 'stripe', 'invoice.paid', body(i, at), None, f'stripe:evt_{i}') for i, at in ((2, 20), (1, 10))])
    assert [(x.id, x.key, x.created) for x in t.claim()] == [('evt_1', 'in_1', 10)]
    t.set_status('superseded', id='evt_done')  # the widened CHECK admits it
    try: t.c.execute("UPDATE webhook_events SET status='bogus'"); raise AssertionError('CHECK no longer holds')
    except apsw.ConstraintError: pass
    assert t.c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'

def test_v8_database_gains_forwarding(tmp_path):
    "v8 → v9: forwarding's tables and the fan-out trigger; events and sources untouched, events stored later fanned out."
    fresh = SqliteStore(tmp_path/'fresh').open('x', create=True)
    c = apsw.Connection(str(tmp_path/'acme.db'))
    c.execute(v8_schema())
    c.execute("""INSERT INTO webhook_events (id, source, event_type, payload, idempotency_key, received_at)
                 VALUES ('evt_v6', 'stripe', 'invoice.paid', '{"id":"evt_v6"}', 'stripe:evt_v6', 1767225600)""")
    c.execute('PRAGMA user_version=8'); c.close()
    t = SqliteStore(tmp_path).open('acme')
    assert t.c.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 12
    objects = lambda tt: tt.c.execute("""SELECT type, name, sql FROM sqlite_schema WHERE name LIKE '%destination%'
        OR name LIKE '%deliver%' OR name LIKE '%fanout%' ORDER BY name""").fetchall()
    assert objects(t) == objects(fresh) and len(objects(t)) == 10
    t.add_destination('billing', 'http://127.0.0.1:9/hooks', allow_private=True)
    t.log([NewEvent('evt_v7', 'stripe', 'invoice.paid', '{"id":"evt_v7"}', None, 'stripe:evt_v7')])
    assert t.fan_out() == 1  # the event stored before the migration had no destination to go to
    assert [t.events(seqs=[d.event_seq])[0].id for d in t.deliveries()] == ['evt_v7']
    assert t.events(id='evt_v6')[0].payload == '{"id":"evt_v6"}'
    assert t.c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'

def test_v9_database_gains_xid_and_streams_in_seq_order(tmp_path):
    "v9 → v10: `xid` on events (0: SQLite's commits are serial), the columns a fresh tenant has; a stream reads every old row."
    from webhooks.engine import Cursor
    fresh = SqliteStore(tmp_path/'fresh').open('x', create=True)
    c = apsw.Connection(str(tmp_path/'acme.db'))
    c.execute(v9_schema())
    c.executemany("""INSERT INTO webhook_events (id, source, event_type, payload, idempotency_key, received_at)
                     VALUES (?, 'stripe', 'invoice.paid', '{}', ?, ?)""", [(f'evt_{i}', f'stripe:evt_{i}', 1767225600 + i) for i in range(3)])
    c.execute('PRAGMA user_version=9'); c.close()
    t = SqliteStore(tmp_path).open('acme')
    assert t.c.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 12
    cols = lambda tt: [r[1:] for r in tt.c.execute('PRAGMA table_info(webhook_events)')]
    assert cols(t) == cols(fresh) and [c[0] for c in cols(t)[-2:]] == ['xid', 'late']
    assert [(e.id, e.cursor) for e in t.committed(Cursor(0, 0))] == [('evt_0', (0, 1)), ('evt_1', (0, 2)), ('evt_2', (0, 3))]
    assert t.start(1767225601) == Cursor(0, 1) and t.head() == Cursor(0, 3)
    t.log([NewEvent('evt_new', 'stripe', 'invoice.paid', '{}', None, 'stripe:evt_new')])
    assert [e.id for e in t.committed(Cursor(0, 3))] == ['evt_new']
    assert t.c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'

def test_postgres_layout_7_gains_the_commit_order(pg_url):
    "Layout 7 → 8: `xid` (the migrating transaction's id for old rows) and its index, as a fresh schema has them; old rows stream first."
    import json, psycopg
    from psycopg import sql
    from webhooks.engine import Cursor
    from webhooks.postgres import PG_COMMIT_ORDER, PG_MIGRATIONS, PG_SCHEMA, PgStore, pg_ddl, schema_name
    ddl = re.sub(r"\n  xid xid8[^\n]*", '', PG_SCHEMA.replace('\n' + PG_MIGRATIONS[9], '').replace(PG_COMMIT_ORDER, '').replace(pg_ddl(QUEUE_INDEX), '')).replace('  turn double precision,  ', '  turn double precision   ', 1)
    assert 'xid' not in ddl
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(sql.SQL(ddl).format(s=sql.Identifier(schema_name('acme')),
                                      mark=sql.Literal(json.dumps({'webhooks_tenant': 'acme', 'schema_version': 7}))))
        for i in range(3):
            c.execute("""INSERT INTO wh_acme.webhook_events (id, source, event_type, payload, idempotency_key, received_at)
                         VALUES (%s, 'stripe', 'invoice.paid', '{}', %s, %s)""", (f'evt_{i}', f'stripe:evt_{i}', 1767225600 + i))
    s = PgStore(pg_url)
    try:
        t, fresh = s.open('acme'), s.open('fresh', create=True)
        layout = lambda tt: (tt.q("SELECT column_name, data_type, column_default FROM information_schema.columns "
                                  "WHERE table_schema=%s AND table_name='webhook_events' ORDER BY ordinal_position", (tt.schema,)),
                             [r['indexdef'].replace(tt.schema, 'S') for r in tt.q('SELECT indexdef FROM pg_indexes WHERE schemaname=%s '
                                                                                  'ORDER BY indexname', (tt.schema,))])
        assert layout(t) == layout(fresh) and [c['data_type'] for c in layout(t)[0][-2:]] == ['xid8', 'integer']
        assert 'webhook_events_commit_order' in str(layout(t)[1])
        def after(c, n):  # readable once no older transaction runs on the server (autovacuum's ANALYZE has one too)
            deadline = time.monotonic() + 20
            while len(got := t.committed(c)) < n and time.monotonic() < deadline: time.sleep(0.02)
            return got
        old = after(Cursor(0, 0), 3)
        assert [e.id for e in old] == ['evt_0', 'evt_1', 'evt_2'] and len({e.cursor.xid for e in old}) == 1
        t.log([NewEvent('evt_new', 'stripe', 'invoice.paid', '{}', None, 'stripe:evt_new')])
        (new,) = after(old[-1].cursor, 1)
        assert new.id == 'evt_new' and new.cursor.xid > old[-1].cursor.xid and t.head() == new.cursor
    finally: s.close()

def test_v10_database_gains_the_queue_of_keyed_events_in_place(tmp_path):
    "v10 → v11: the index of due keyed events in arrival order (claims take runs of keys through it); rows untouched."
    fresh = SqliteStore(tmp_path/'fresh').open('x', create=True)
    t = SqliteStore(tmp_path).open('acme', create=True)
    t.add_source('stripe', 'stripe', 'whsec_v10_0123456789abcdef'); t.set_source('stripe', order_by='data.object.id')
    body = lambda i, at: f'{{"id":"evt_{i}","created":{at},"data":{{"object":{{"id":"in_1"}}}}}}'
    t.log([NewEvent(f'evt_{i}', 'stripe', 'invoice.paid', body(i, at), None, f'stripe:evt_{i}') for i, at in ((2, 20), (1, 10))])
    as_v11(t.c); t.c.execute('DROP INDEX webhook_events_queue; PRAGMA user_version=10'); t.close()
    t = SqliteStore(tmp_path).open('acme')
    assert t.c.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 12
    idx = lambda tt: sorted(tt.c.execute("SELECT name, sql FROM sqlite_schema WHERE type='index' AND sql IS NOT NULL"))
    assert idx(t) == idx(fresh)
    assert [(x.id, x.key, x.created) for x in t.claim(chains=True)] == [('evt_1', 'in_1', 10), ('evt_2', 'in_1', 20)]
    assert t.c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'

def test_v11_database_gains_late_marks_and_the_aside_index_in_place(tmp_path):
    "v11 → v12: `late` on each unfinished keyed event that arrived after one of its key it goes before, the line of every keyed event, the aside index."
    fresh = SqliteStore(tmp_path/'fresh').open('x', create=True)
    t = SqliteStore(tmp_path).open('acme', create=True)
    t.add_source('stripe', 'stripe', 'whsec_v11_0123456789abcdef'); t.set_source('stripe', order_by='data.object.id')
    body = lambda i, at, k: f'{{"id":"evt_{i}","created":{at},"data":{{"object":{{"id":"{k}"}}}}}}'
    arrivals = ((3, 30, 'in_1'), (1, 10, 'in_1'), (2, 20, 'in_1'), (4, 5, 'in_2'))  # evt_1 and evt_2 arrive late
    t.log([NewEvent(f'evt_{i}', 'stripe', 'invoice.paid', body(i, at, k), None, f'stripe:evt_{i}') for i, at, k in arrivals])
    late = lambda: dict(t.c.execute('SELECT id, late FROM webhook_events ORDER BY seq'))
    assert late() == {'evt_3': 0, 'evt_1': 1, 'evt_2': 1, 'evt_4': 0}  # as today's receiver marks them
    as_v11(t.c); t.close()
    t = SqliteStore(tmp_path).open('acme')
    assert t.c.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 12
    idx = lambda tt: sorted(tt.c.execute("SELECT name, sql FROM sqlite_schema WHERE type='index' AND sql IS NOT NULL"))
    assert idx(t) == idx(fresh)
    assert late() == {'evt_3': 0, 'evt_1': 1, 'evt_2': 1, 'evt_4': 0}
    got = t.claim(chains=True)
    assert [x.id for x in got if x.key == 'in_1'] == ['evt_1', 'evt_2', 'evt_3'] and 'evt_4' in {x.id for x in got}
    assert t.c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
