"""The two lost-update bugs of the engine, each with the test that failed before its fix.

1. Worker bookkeeping keyed by `seq` alone collided across tenants (seqs repeat across tenant databases), and a batch could
   stop early while coroutine handlers it had started were still running: a handler that completed was left `processing`,
   its lease cut, and run again.
2. `process_webhook` recorded outcomes by webhook id: the same id from two sources of one tenant is two events, and one
   handler's failure marked both failed.
"""
import asyncio, collections, hashlib, hmac, time
import pytest
from webhooks.store import log_webhook_event, update_webhook_status
from webhooks.worker import Worker, Handlers, claim_batch
from webhooks.process import process_webhook, aprocess_webhook

def test_concurrent_batches_of_two_tenants_with_the_same_seqs(store, q):
    "Every event completes with one handler run per attempt; only the genuinely stuck one needs a second attempt."
    runs = collections.Counter()
    h = Handlers()
    @h.on('report.render')
    def render(ev):  # plain, and in tenant b on its first attempt slower than the timeout
        runs[(ev.tenant, ev.id, ev.attempt)] += 1
        time.sleep(2.0 if (ev.tenant, ev.id, ev.attempt) == ('b', 'e0', 1) else 0.02)
    @h.on('task.notify')
    async def notify(ev):  # async, slow-ish but well inside the timeout
        runs[(ev.tenant, ev.id, ev.attempt)] += 1
        await asyncio.sleep(0.25)
    a, b = store.open('a', create=True), store.open('b', create=True)
    for i in range(12): log_webhook_event(a, f'n{i}', 's', 'task.notify', '{}', 'sig', f's:n{i}')
    for i in range(3): log_webhook_event(a, f'r{i}', 's', 'report.render', '{}', 'sig', f's:r{i}')
    log_webhook_event(b, 'e0', 's', 'report.render', '{}', 'sig', 's:e0')
    for i in range(1, 4): log_webhook_event(b, f'e{i}', 's', 'task.notify', '{}', 'sig', f's:e{i}')
    assert {r['seq'] for r in q(a, 'SELECT seq FROM webhook_events')} >= {r['seq'] for r in q(b, 'SELECT seq FROM webhook_events')}

    w = Worker(store, h, concurrency=4, timeout=0.5, lease=1.0, flush=0.05, backoff=0)
    async def main():
        w._sem = asyncio.Semaphore(w.concurrency)
        ca, cb = claim_batch(a, lease=1.0), claim_batch(b, lease=1.0)
        await asyncio.gather(w.run_batch('b', cb), w.run_batch('a', ca))  # b's stuck handler starts first
        deadline = time.time() + 20
        while time.time() < deadline:
            await w.step()
            left = sum(q(db, "SELECT count(*) n FROM webhook_events WHERE status != 'completed'")[0]['n'] for db in (a, b))
            if not left and not w.stuck: break
            await asyncio.sleep(0.05)
        await w.step()  # record what the stuck handler's late finish came to (it must be dropped: its claim is gone)
    asyncio.run(main())

    for name, db in (('a', a), ('b', b)):
        for ev in q(db, 'SELECT seq, id, status, attempts FROM webhook_events'):
            assert ev['status'] == 'completed', (name, ev)
            tried = {k[2]: n for k, n in runs.items() if k[:2] == (name, ev['id'])}
            assert tried == {i: 1 for i in range(1, ev['attempts'] + 1)}, f'{name}/{ev["id"]}: handler runs per attempt {tried}'
            hist = q(db, 'SELECT attempt, outcome FROM webhook_attempts WHERE event_seq=? ORDER BY seq', (ev['seq'],))
            assert [r['attempt'] for r in hist] == list(range(1, ev['attempts'] + 1)), f'{name}/{ev["id"]}: one attempts row per run {hist}'
            assert [r['outcome'] for r in hist].count('completed') == 1
            if (name, ev['id']) != ('b', 'e0'):
                assert ev['attempts'] == 1, f'{name}/{ev["id"]} completed but was run again: {hist}'
    # past its timeout the first run is filed as a retry at once (its thread abandoned); its late finish is dropped
    assert [r['outcome'] for r in q(b, "SELECT outcome FROM webhook_attempts WHERE webhook_id='e0' ORDER BY seq")] == ['retry', 'completed']

SECRET = 'whsec_7d1f0c4a9b'
def sig(raw): return 'sha256=' + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()

@pytest.mark.parametrize('variant', ['sync', 'async'])
def test_outcome_recorded_on_the_event_that_ran_not_by_delivery_id(store, q, variant):
    db = store.open('acme', create=True)
    raw = b'{"id":"evt_1QJ3","type":"invoice.paid","data":{"object":{"id":"in_1QJ3"}}}'
    def book(ev): return 'booked'
    def crm_down(ev): raise ConnectionError('crm.example.com timed out after 10s')
    def call(source, handler):
        args = (db, 'evt_1QJ3', source, 'invoice.paid', None, sig(raw), f'{source}:evt_1QJ3', raw, handler, SECRET)
        return process_webhook(*args) if variant == 'sync' else asyncio.run(aprocess_webhook(*args))
    assert call('billing', book)['status'] == 'completed'
    assert call('crm', crm_down)['status'] == 'failed'
    got = {r['source']: (r['status'], r['error_message']) for r in q(db, "SELECT source, status, error_message FROM webhook_events")}
    assert got == {'billing': ('completed', None), 'crm': ('failed', 'ConnectionError: crm.example.com timed out after 10s')}

def test_update_webhook_status_refuses_an_ambiguous_id(store, q):
    db = store.open('acme', create=True)
    for source in ('billing', 'crm'): log_webhook_event(db, 'evt_1', source, 't', '{}', 's', f'{source}:evt_1')
    with pytest.raises(ValueError, match='several sources'): update_webhook_status(db, 'evt_1', 'failed', 'boom')
    assert update_webhook_status(db, 'evt_1', 'failed', 'boom', source='crm') == 1
    assert {r['source']: r['status'] for r in q(db, 'SELECT source, status FROM webhook_events')} == {'billing': 'pending', 'crm': 'failed'}
