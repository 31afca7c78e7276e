"Races and path safety for the per-tenant store: what a documentation page can't show (the races on every backend: `store`)."
import os, threading, time
from pathlib import Path
import pytest
from webhooks.store import as_store, tenant_db, log_webhook_event, check_idempotency, store_events, TenantError, NewEvent, Outcome

def test_eight_threads_log_one_key_once(store, q):
    store.open('race', create=True).close()
    n, barrier, results, errors = 8, threading.Barrier(8), [], []
    def deliver(i):
        db = store.open('race')  # each thread its own tenant (its own connection), as apsw requires
        try:
            barrier.wait()
            results.append(log_webhook_event(db, 'evt_race', 'stripe', 'charge.succeeded', '{"id":"evt_race"}', f'sig{i}', 'stripe:evt_race'))
        except Exception as e: errors.append(e)
        finally: db.close()
    ts = [threading.Thread(target=deliver, args=(i,)) for i in range(n)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert errors == []
    assert sorted(results) == [False]*7 + [True]
    db = store.open('race')
    assert q(db, "SELECT count(*) n FROM webhook_events WHERE idempotency_key='stripe:evt_race'")[0]['n'] == 1

def test_many_rounds_of_races(store, q):
    "Repeat the race with fresh keys so a lucky interleaving can't pass by chance."
    store.open('race', create=True).close()
    firsts = {}
    def deliver(i, keys, barrier):
        db = store.open('race')
        barrier.wait()
        for k in keys:
            if log_webhook_event(db, k, 'src', 't', '{}', 's', k): firsts[k] = firsts.get(k, 0) + 1
        db.close()
    keys = [f'k{j}' for j in range(200)]
    barrier = threading.Barrier(8)
    ts = [threading.Thread(target=deliver, args=(i, keys, barrier)) for i in range(8)]
    for t in ts: t.start()
    for t in ts: t.join()
    assert firsts == {k: 1 for k in keys}
    assert q(store.open('race'), 'SELECT count(*) n FROM webhook_events')[0]['n'] == 200

def test_batch_dedupes_inside_itself(store):
    db = store.open('batch', create=True)
    ev = lambda k: ('id-'+k, 'src', 't', '{}', 's', k, 'pending', 1.0e9)
    assert store_events(db, [ev('a'), ev('b'), ev('a')]) == [True, True, False]
    assert store_events(db, [ev('b'), ev('c')]) == [False, True]

def test_bad_status_in_batch_writes_nothing(store, q):
    db = store.open('batch', create=True)
    good, bad = ('i1', 's', 't', '{}', 'x', 'k1', 'pending', 1.0e9), ('i2', 's', 't', '{}', 'x', 'k2', 'done', 1.0e9)
    with pytest.raises(ValueError, match='unknown status'): store_events(db, [good, bad])
    assert q(db, 'SELECT count(*) n FROM webhook_events')[0]['n'] == 0

@pytest.mark.parametrize('name', ['../x', 'a/b', '..', '%2e%2e', '/etc/passwd', 'a\\b', 'x\x00', 'ca fé', '', 'x'*65])
def test_bad_tenant_names_touch_no_file(tmp_path, name, monkeypatch):
    root = tmp_path/'root'
    monkeypatch.chdir(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob('*'))
    with pytest.raises(TenantError, match='invalid tenant name'): tenant_db(name, root)
    with pytest.raises(TenantError): tenant_db(name, root, create=False)
    assert sorted(str(p) for p in tmp_path.rglob('*')) == before
    assert not root.exists()

def test_unknown_tenant_without_create(tmp_path):
    with pytest.raises(TenantError, match='unknown tenant') as e: tenant_db('ghost', tmp_path, create=False)
    assert e.value.reason == 'unknown_tenant'
    assert list(tmp_path.iterdir()) == []

def test_acknowledged_event_survives_reopen(store, where):
    db = store.open('durable', create=True)
    assert log_webhook_event(db, 'e1', 's', 't', '{"a":1}', 'sig', 'k1')
    db.close(); store.close()
    again = as_store(where(store))
    db2 = again.open('durable')
    assert check_idempotency(db2, 'k1')
    assert db2.events()[0].payload == '{"a":1}'
    db2.close(); again.close()

def test_a_master_key_error_names_its_file_to_the_operator_and_no_path_to_a_client(tmp_path, monkeypatch):
    "`message` is for logs and the command line; `public_message` is what the receiver may send over HTTP."
    from webhooks.store import MASTER_KEY_ENV, MasterKeyError, master_key
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    sealed = master_key(tmp_path/'.master-key', create=True).encrypt('whsec_0123456789abcdef')
    (tmp_path/'other.key').write_text('bm90IGEgZmVybmV0IGtleQ==')
    for bad in (lambda: master_key(tmp_path/'lost'/'.master-key', sealed=sealed),   # missing
                lambda: master_key(tmp_path/'other.key')):                            # malformed
        with pytest.raises(MasterKeyError) as e: bad()
        assert str(tmp_path) in e.value.message and (e.value.status, e.value.code) == (503, 'master_key')
        assert str(tmp_path) not in e.value.public_message and '/' not in e.value.public_message

@pytest.mark.parametrize('scheme,window', [('paddle', 5), ('linear', 60), ('hubspot', 300), ('twitch', 600), ('mailgun', 900),
                                           ('stripe', 300), ('github', 300)])
def test_a_new_source_gets_its_providers_tolerance_and_a_rotation_keeps_its_own(store, q, scheme, window):
    "tolerance=None: the scheme's documented window (`Scheme.tolerance`), else 300; on a rotation or a settings change, the source's."
    t = store.open('acme', create=True)
    assert t.add_source('src', scheme, 'whsec_first_0123456789abcdef0123456789').tolerance == window
    assert t.source('src').tolerance == window
    assert t.add_source('src', scheme, 'whsec_second_0123456789abcdef012345678').tolerance == window  # kept
    assert t.add_source('src', scheme, None, tolerance=42).tolerance == 42                          # asked for
    assert t.add_source('src', scheme, 'whsec_third_0123456789abcdef0123456789').tolerance == 42     # a rotation keeps it
    assert t.add_source('src', scheme, None, url='https://hooks.example.com/acme/src').tolerance == 42
    assert {r['tolerance'] for r in q(t, 'SELECT tolerance FROM webhook_sources')} == {42}           # stored, NOT NULL
    with pytest.raises(ValueError, match='tolerance must be a non-negative'): t.add_source('src', scheme, None, tolerance=-1)

def test_type_filter_takes_exact_types_dotted_prefixes_and_wildcards(store):
    "`type='invoice'` picks every invoice.… event (not invoiceitem.…), as 'invoice.' and 'invoice.*' do; replay filters alike."
    t = store.open('acme', create=True)
    types = ['invoice.paid', 'invoice.payment.failed', 'invoice', 'invoiceitem.created', 'charge.failed']
    for i, ty in enumerate(types): log_webhook_event(t, f'evt_{i}', 'stripe', ty, '{}', 'sig', f'stripe:evt_{i}')
    got = lambda ty: sorted(e.type for e in t.events(type=ty))
    assert got('invoice') == ['invoice', 'invoice.paid', 'invoice.payment.failed']
    assert got('invoice.') == got('invoice.*') == ['invoice.paid', 'invoice.payment.failed']
    assert got('invoice.paid') == ['invoice.paid'] and got('invoice.pa') == [] and got('invoiceitem') == ['invoiceitem.created']
    for e in t.events(): t.set_status('failed', seq=e.seq)
    assert len(t.replay(status='failed', type='invoice', dry_run=True)) == 3
    t.close()

def test_detail_reads_status_and_attempts_from_one_snapshot(store):
    "While a worker records outcomes, an event read with its attempts never shows the outcome without its status (or back)."
    t = store.open('acme', create=True)
    seqs = t.log([NewEvent(f'evt_{i}', 'stripe', 'invoice.paid', '{}', None, f'stripe:evt_{i}') for i in range(150)])
    claims, done, seen, errors, at = t.claim(batch=150), threading.Event(), [], [], [0]
    reading = threading.Event()
    assert len(claims) == 150
    def worker():
        w = store.open('acme')
        try:
            reading.wait(10)
            for i, c in enumerate(claims):
                at[0] = i  # the reader watches the event being recorded now
                w.record([Outcome(c.seq, c.id, c.attempt, time.time(), time.time(), 'completed')])
        finally: done.set(); w.close()
    def reader():
        r = store.open('acme')
        try:
            while not done.is_set():
                e, atts = r.detail(claims[at[0]].seq)
                seen.append((e.status, [a.outcome for a in atts])); reading.set()
        except Exception as x: errors.append(x)
        finally: r.close()
    ths = [threading.Thread(target=worker), threading.Thread(target=reader)]
    for th in ths: th.start()
    for th in ths: th.join()
    ok = [('processing', []), ('completed', ['completed'])]
    assert errors == [] and seen
    assert all(x in ok for x in seen), [x for x in seen if x not in ok][:3]
    assert t.detail(seqs[0])[0].status == 'completed' and t.detail(10**9) is None
    t.close()

def test_two_inboxes_of_one_file_in_one_loop_take_turns(tmp_path):
    "An evicted tenant's inbox may still commit while its successor starts a round: the write turn is per inbox, not per thread."
    import asyncio
    from webhooks.sqlite import SqliteInbox, Writers
    tenant_db('shop', tmp_path).close()
    async def both():
        w = Writers(2)
        old, new = SqliteInbox('shop', tmp_path, w), SqliteInbox('shop', tmp_path, w)
        try:
            ev = lambda i: NewEvent(f'evt_{i}', 'src', 'a.b', '{}', None, f'src:evt_{i}')
            return await asyncio.gather(*[x.submit(ev(f'{i}_{j}')) for i in range(20) for j, x in enumerate((old, new))],
                                        return_exceptions=True)
        finally: old.close(); new.close(); w.shutdown()
    got = asyncio.run(both())
    assert all(isinstance(s, int) for s in got), [repr(s) for s in got if not isinstance(s, int)][:3]
    assert len(set(got)) == 40
