"Databases in use keep working: a tenant file written by an older webhooks (schema v2) opens, migrates in place to today's and loses nothing."
import apsw, re
from webhooks.store import REJECTION_SCHEMA, SCHEMA, SCHEMA_VERSION, SqliteTenant, tenant_db, NewEvent, Outcome

def v2_schema()->str:
    "Today's schema as version 2 had it: no `headers`, no `max_body`, four statuses, no rejections."
    s = SCHEMA.replace('\n'.join(REJECTION_SCHEMA), '')
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
    assert db.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION == 4
    assert {'webhook_rejections', 'webhook_retired'} <= set(db.table_names())
    assert db.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    t = SqliteTenant(db)
    assert t.source('stripe').secrets == ('whsec_old_0123',) and t.source('stripe').max_body is None
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
    assert db2.execute('PRAGMA user_version').fetchone()[0] == 4
    assert SqliteTenant(db2).secrets('stripe')[0].last_matched is None
