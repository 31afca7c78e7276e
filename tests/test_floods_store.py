"""The store's side of floods and faults, through the store API on both backends (`store` fixture) where both have it:
per-source flood controls (pause, rate limit, handler rate), one bad event in a group-commit round failing alone,
a tenant that cannot grow (SQLite: its `max_db_bytes` cap, and a whole filesystem full on a small tmpfs), and the
default tolerance. The receiver's 429/503 answers over HTTP are tested with the routes."""
import asyncio, errno, math, os, secrets, subprocess, time
from contextlib import closing
from pathlib import Path
import pytest
from webhooks.signatures import WebhookError
from webhooks.store import (NewEvent, Outcome, Rejection, SqliteStore, StoreFull, StoreUnavailable, MasterKeyError, master_key,
                            set_source, tenant_db)

STRIPE = 'whsec_floods_0123456789abcdef0123456789'

def ev(i, source='stripe', memo=''):
    "A Stripe-like delivery with id `evt_<i>` (any `i`, even a bad one), its body padded with `memo`."
    wid = f'evt_{i}'
    return NewEvent(wid, source, 'invoice.paid', f'{{"id":"{wid}","memo":"{memo}"}}', 't=1767225600,v1=5257a8', f'{source}:{wid}')

def run(store, main):
    "Run coroutine function `main` on a fresh loop; a PostgreSQL store's `asyncio` pool is closed on that loop after it."
    async def go():
        try: return await main()
        finally:
            if hasattr(store, 'aclose'): await store.aclose()
    return asyncio.run(go())

def flow(s): return (s.paused, s.rate_limit, s.handler_rate)  # a `Source`'s or `SourceKeys`' flood controls

def tenant_with_sources(store, name='acme', *sources):
    t = store.open(name, create=True)
    for s in sources or ('stripe',): t.add_source(s, 'stripe', STRIPE)
    return t

# ---------------------------------------------------------------- flood controls

def test_set_source_pauses_and_sets_rates_and_refuses_nonsense(store):
    t = tenant_with_sources(store)
    s = t.set_source('stripe', paused=True, rate_limit=50, handler_rate=2.5)
    assert (s.paused, s.rate_limit, s.handler_rate) == (True, 50.0, 2.5)
    assert flow(t.source('stripe')) == (True, 50.0, 2.5)
    assert t.set_source('stripe').paused is True                      # nothing given: nothing changes
    s = t.set_source('stripe', rate_limit=0)                          # 0: off, stored NULL; the rest kept
    assert (s.paused, s.rate_limit, s.handler_rate) == (True, None, 2.5)
    assert set_source(t, 'stripe', paused=False, handler_rate=0) == t.sources()[0]  # the module-level form
    assert t.sources()[0].paused is False and t.sources()[0].handler_rate is None
    for bad in (-1, -0.001, math.nan, math.inf, -math.inf, '5', True):
        with pytest.raises(ValueError, match='rate_limit must be'): t.set_source('stripe', rate_limit=bad)
        with pytest.raises(ValueError, match='handler_rate must be'): t.set_source('stripe', handler_rate=bad)
    with pytest.raises(ValueError, match='paused must be True or False'): t.set_source('stripe', paused='yes')
    with pytest.raises(KeyError, match="there is no source 'paypal'"): t.set_source('paypal', paused=True)
    assert t.sources()[0].rate_limit is None and t.sources()[0].paused is False  # the refusals changed nothing

def test_flood_settings_survive_a_rotation_and_go_with_the_last_secret(store):
    t = tenant_with_sources(store)
    old = t.sources()[0].fingerprints[0]
    t.set_source('stripe', paused=True, rate_limit=10, handler_rate=1)
    s = t.add_source('stripe', 'stripe', 'whsec_floods_rotated_0123456789abcdef')
    assert (len(s.fingerprints), s.paused, s.rate_limit, s.handler_rate) == (2, True, 10.0, 1.0)
    s = t.remove_secret('stripe', old)
    assert (s.paused, s.rate_limit, s.handler_rate) == (True, 10.0, 1.0)
    assert t.remove_secret('stripe', s.fingerprints[0]) is None       # the source is gone, and its settings with it
    s = t.add_source('stripe', 'stripe', STRIPE)
    assert (s.paused, s.rate_limit, s.handler_rate) == (False, None, None)

def test_a_paused_source_is_stored_but_never_claimed_until_resumed(store):
    t = tenant_with_sources(store, 'acme', 'stripe', 'github')
    t.log([ev(i) for i in range(5)] + [ev(f'gh{i}', 'github') for i in range(3)])
    t.set_source('stripe', paused=True)
    first = t.claim(batch=100)
    assert sorted(c.id for c in first) == ['evt_gh0', 'evt_gh1', 'evt_gh2']
    assert t.claim(batch=100) == []
    assert len(t.events(status='pending', source='stripe', limit=100)) == 5          # stored, waiting
    assert t.record([Outcome(c.seq, c.id, c.attempt, 1, 2, 'completed') for c in first]) == {c.seq for c in first}
    t.log([ev(f'gh{i}', 'github') for i in range(3, 5)])                              # other sources keep flowing
    assert sorted(c.id for c in t.claim(batch=100)) == ['evt_gh3', 'evt_gh4']
    t.set_source('stripe', paused=False)
    back = t.claim(batch=100)
    assert [c.id for c in back] == [f'evt_{i}' for i in range(5)] and {c.attempt for c in back} == {1}  # oldest first

def test_release_until_defers_without_counting_an_attempt(store):
    t = tenant_with_sources(store)
    t.log([ev(i) for i in range(4)])
    now = time.time()
    cs = t.claim(batch=4, now=now)
    t.release(cs[:2], until=now + 60)                                 # one time for both
    t.release(cs[2:], until=[now + 30, now + 90])                     # one per claim
    assert t.claim(now=now + 1) == []
    assert [(c.id, c.attempt) for c in t.claim(now=now + 30)] == [('evt_2', 1)]
    assert [c.id for c in t.claim(now=now + 60)] == ['evt_0', 'evt_1']
    assert [c.id for c in t.claim(now=now + 90)] == ['evt_3']
    with pytest.raises(ValueError, match='until has 1 times for 2 claims'): t.release(cs[:2], until=[now])
    plain = t.claim(now=now + 100)                                   # nothing left due
    assert plain == []

def test_the_receivers_cached_source_sees_a_pause_and_a_rate_at_once(store):
    "The receiver reads `source()` from a cache: a change made elsewhere (the CLI, the dashboard) must reach it."
    admin = tenant_with_sources(store)
    async def main():
        async with store.receiving('acme') as inbox: assert flow(inbox.source('stripe')) == (False, None, None)
        await asyncio.sleep(0.2)                                      # PostgreSQL: the sources watch is listening
        await asyncio.to_thread(admin.set_source, 'stripe', paused=True, rate_limit=25)
        for _ in range(300):
            async with store.receiving('acme') as inbox:
                if flow(inbox.source('stripe')) == (True, 25.0, None): return True
            await asyncio.sleep(0.01)
        return False
    assert run(store, main), 'the receiver still had the old settings'

def test_the_claim_query_stays_on_the_due_index(tmp_path):
    "A backlog must not be sorted whole at each claim (the planner, without statistics, preferred the status index)."
    t = SqliteStore(tmp_path).open('acme', create=True)
    plan = lambda q, args: ' | '.join(r[3] for r in t.c.execute('EXPLAIN QUERY PLAN ' + q, args))
    assert 'COVERING INDEX webhook_events_due' in plan(t.sql['claim'], (1, 'x', 1, 10))
    assert 'TEMP B-TREE' not in plan(t.sql['claim'], (1, 'x', 1, 10))
    assert 'INDEX webhook_events_suspect' in plan(t.sql['suspect'], (1,))

# ---------------------------------------------------------------- one bad event in a round

def deliver_all(store, tenant, events):
    "Submit `events` at once through `tenant`'s inbox; each one's seq, None, or the exception it got; and the rounds taken."
    async def main():
        async with store.receiving(tenant) as inbox:
            before = inbox.commit.rounds
            res = await asyncio.gather(*[inbox.submit(e) for e in events], return_exceptions=True)
            return res, inbox.commit.rounds - before
    return run(store, main)

def test_one_bad_event_never_fails_its_round(store):
    "31 good deliveries and one whose id holds a lone surrogate, in one round: the 31 commit, the bad one alone gets 400."
    t = tenant_with_sources(store)
    events = [ev(i) for i in range(31)]
    events.insert(17, ev('\ud800'))
    res, rounds = deliver_all(store, 'acme', events)
    bad = res.pop(17)
    assert isinstance(bad, WebhookError) and (bad.code, bad.status) == ('invalid_event', 400), bad
    assert 'surrogates not allowed' in bad.message
    assert rounds == 1 and all(isinstance(s, int) for s in res) and len(set(res)) == 31, res
    stored = {e.id for e in t.events(limit=100)}
    assert stored == {f'evt_{i}' for i in range(31)}
    res, _ = deliver_all(store, 'acme', [ev(i) for i in range(31)])  # and they were really committed: all duplicates now
    assert res == [None]*31

def test_several_bad_events_and_duplicates_in_one_round(store):
    "Bad events at both ends and a repeated key: every good one is answered as if the round had been clean."
    tenant_with_sources(store)
    events = [ev('\udfff')] + [ev(i) for i in range(10)] + [ev(3), ev('a\ud800b')] + [ev(i) for i in range(10, 20)] + [ev('\ud83d')]
    res, _ = deliver_all(store, 'acme', events)
    codes = [getattr(r, 'code', None) for r in res]
    assert [i for i, c in enumerate(codes) if c == 'invalid_event'] == [0, 12, 23]
    good = [r for i, r in enumerate(res) if i not in (0, 12, 23)]
    assert good[3] is not None and good[10] is None                  # the second evt_3 is a duplicate of the first
    assert sum(isinstance(r, int) for r in good) == 20

def deliver_to_tenants(store, names, bad=None):
    "8 deliveries to each tenant of `names`, all at once (`bad`: (tenant, i) of one with a lone surrogate in its id)."
    async def main():
        inboxes = {}
        for n in names:
            async with store.receiving(n) as inbox: inboxes[n] = inbox
        joint = getattr(store, 'joint', None)  # PostgreSQL: tenants' rounds written together
        before = joint.rounds if joint is not None else 0, sum(i.commit.rounds for i in inboxes.values())
        sends = [inboxes[n].submit(ev('\ud800' if (n, i) == bad else f'{n}-{i}')) for i in range(8) for n in names]
        res = await asyncio.gather(*sends, return_exceptions=True)
        return res, (joint.rounds - before[0] if joint is not None else None,
                     sum(i.commit.rounds for i in inboxes.values()) - before[1])
    return run(store, main)

def test_tenants_receiving_at_once_share_transactions(store):
    "On PostgreSQL the rounds of tenants receiving at once commit in fewer transactions than rounds: one WAL flush each."
    names = ['acme', 'globex', 'initech']
    for n in names: tenant_with_sources(store, n)
    res, (joint, rounds) = deliver_to_tenants(store, names)
    assert len(res) == 24 and all(isinstance(r, int) for r in res), res
    for n in names: assert {e.id for e in store.open(n).events(limit=100)} == {f'evt_{n}-{i}' for i in range(8)}
    if joint is not None: assert 1 <= joint < rounds, (joint, rounds)

def test_a_bad_event_fails_only_its_own_tenants_round(store):
    "A joint transaction that one tenant's bad event fails is written again tenant by tenant: the others commit."
    names = ['acme', 'globex', 'initech']
    for n in names: tenant_with_sources(store, n)
    res, _ = deliver_to_tenants(store, names, bad=('globex', 3))
    bad = [r for r in res if isinstance(r, Exception)]
    assert len(bad) == 1 and (bad[0].code, bad[0].status) == ('invalid_event', 400), res
    assert sum(isinstance(r, int) for r in res) == 23
    for n in names:
        want = {f'evt_{n}-{i}' for i in range(8)} - ({'evt_globex-3'} if n == 'globex' else set())
        assert {e.id for e in store.open(n).events(limit=100)} == want

def test_an_id_too_long_for_the_key_index_fails_alone(store):
    "PostgreSQL cannot index a key of ~10 KB of random text (SQLite can): either way the neighbours commit."
    t = tenant_with_sources(store)
    huge = secrets.token_urlsafe(7500)
    res, _ = deliver_all(store, 'acme', [ev(1), ev(huge), ev(2)])
    assert isinstance(res[0], int) and isinstance(res[2], int)
    assert isinstance(res[1], int) or getattr(res[1], 'code', None) == 'invalid_event', res[1]
    assert {'evt_1', 'evt_2'} <= {e.id for e in t.events()}

def test_a_store_failure_still_fails_the_whole_round_with_503(tmp_path):
    "Not about the data: a locked database is the store's problem, and nothing of the round is stored."
    store = SqliteStore(tmp_path, busy_timeout=0.2)
    t = tenant_with_sources(store)
    async def main():
        async with store.receiving('acme') as inbox:
            t.c.execute('BEGIN IMMEDIATE')                             # another writer holds the lock past busy_timeout
            try: res = await asyncio.gather(*[inbox.submit(ev(i)) for i in range(5)], return_exceptions=True)
            finally: t.c.execute('ROLLBACK')
            return res
    try: res = run(store, main)
    finally: store.close()
    assert all(isinstance(r, StoreUnavailable) and r.status == 503 and r.code == 'store_unavailable' for r in res), res
    assert t.events() == []

# ---------------------------------------------------------------- a full tenant (SQLite)

async def submit_until_full(inbox, start:int, memo:str, most:int=5000, at_once:int=4):
    "Submit rounds of `at_once` events until one fails; (the seqs acknowledged, the error)."
    acked = {}
    for i in range(start, start + most, at_once):
        res = await asyncio.gather(*[inbox.submit(ev(j, memo=memo)) for j in range(i, i + at_once)], return_exceptions=True)
        errs = [r for r in res if isinstance(r, BaseException)]
        acked.update({f'evt_{j}': r for j, r in zip(range(i, i + at_once), res) if isinstance(r, int)})
        if errs: return acked, errs
    raise AssertionError(f'{most} events went in without filling the tenant')

def rejection(i): return Rejection(time.time(), 'stripe', '203.0.113.7', 'invalid_signature', 'no match', '{}', b'x'*4096, 4096)

def test_a_capped_tenant_fills_refuses_with_store_full_and_recovers_by_itself(tmp_path):
    store = SqliteStore(tmp_path, max_db_bytes=256*1024)
    for name in ('tiny', 'roomy'): tenant_with_sources(store, name).close()
    memo = 'x'*1500
    async def main():
        async with store.receiving('tiny') as inbox:
            acked, errs = await submit_until_full(inbox, 0, memo)
            full = errs[0]
            assert isinstance(full, StoreFull) and isinstance(full, StoreUnavailable)
            assert (full.status, full.code, full.retry_after) == (503, 'store_full', 30) and isinstance(full.retry_after, int)
            assert all(isinstance(e, StoreFull) for e in errs)        # the whole round failed, nothing of it stored
            singles, errs = await submit_until_full(inbox, 50_000, memo, at_once=1)  # a smaller round may still fit, then not
            acked.update(singles)
            with pytest.raises(StoreFull): await inbox.submit(ev('one-more', memo=memo))   # still full: refused again
            with pytest.raises(StoreFull): await store.reject('tiny', [rejection(i) for i in range(8)])
            async with store.receiving('roomy') as other:             # another tenant is not affected
                assert isinstance(await other.submit(ev('roomy-1', memo=memo)), int)
            with closing(store.open('tiny')) as t:                    # nothing acknowledged was lost
                got = {e.id: e.seq for e in t.events(limit=10_000)}
                assert got == acked and 'evt_one-more' not in got
                cs = t.claim(batch=10_000)                            # the worker's connection is not capped: it works off
                assert len(t.record([Outcome(c.seq, c.id, c.attempt, 1, 2, 'completed') for c in cs])) == len(acked)
                # emptying a body frees room inside its page but SQLite keeps the page: rows must go for pages to be free
                assert t.prune(0, window=0)['deleted'] == len(acked) - 1  # the newest row stays: its seq is never reused
                assert t.c.execute('PRAGMA freelist_count').fetchone()[0] > 10
            assert store.inboxes['tiny'] is inbox and inbox.commit.task is None  # the same open tenant, no stuck round
            assert isinstance(await inbox.submit(ev('after-prune', memo=memo)), int)
            assert await store.reject('tiny', [rejection(0)]) == 1    # and the rejection recorder recovers too
            more, errs = await submit_until_full(inbox, 100_000, memo)  # full again...
            assert isinstance(errs[0], StoreFull)
            store.max_db_bytes = 4*1024*1024                         # ...until the cap is raised, in flight
            assert isinstance(await inbox.submit(ev('after-raise', memo=memo)), int)
            return acked, more
    try: acked, more = asyncio.run(main())
    finally: store.close()
    with closing(store.open('tiny')) as t:
        ids = {e.id for e in t.events(limit=10_000)}
    newest = max(acked, key=acked.get)  # the first fill's newest row outlived the prune
    assert set(more) | {'evt_after-prune', 'evt_after-raise', newest} == ids  # the first fill was pruned; all since is there
    assert (tmp_path/'tiny.db').stat().st_size <= 4*1024*1024

def test_max_db_bytes_is_checked():
    with pytest.raises(ValueError, match='max_db_bytes must be a positive number of bytes'): SqliteStore('x', max_db_bytes=0)
    with pytest.raises(ValueError, match='max_db_bytes must be a positive number of bytes'): SqliteStore('x', max_db_bytes='1MB')

@pytest.fixture
def small_fs(tmp_path):
    "A 4 MiB tmpfs, when this machine lets us mount one (root in a container often may not): skipped otherwise."
    where = tmp_path/'fs'
    where.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', str(where)], capture_output=True, text=True)
    if r.returncode != 0: pytest.skip(f'cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}')
    try: yield where
    finally: subprocess.run(['umount', '-l', str(where)], capture_output=True)

def fill_disk(path:Path)->int:
    "Write `path` until the filesystem has no space left; bytes written."
    n, chunk = 0, b'\0'*65536
    with open(path, 'wb', buffering=0) as f:
        while True:
            try: n += f.write(chunk)
            except OSError as e:
                assert e.errno in (errno.ENOSPC, errno.EDQUOT), e
                if len(chunk) == 1: return n
                chunk = chunk[:len(chunk)//2]

def test_a_full_filesystem_refuses_with_503_and_ingest_recovers_when_space_is_back(small_fs):
    store = SqliteStore(small_fs/'data')
    tenant_with_sources(store, 'acme').close()
    memo = 'y'*1500
    async def main():
        async with store.receiving('acme') as inbox:
            first = await inbox.submit(ev('before', memo=memo))
            filler = small_fs/'filler'
            fill_disk(filler)
            acked, errs = await submit_until_full(inbox, 0, memo)       # a few may still fit in the log's free pages
            assert all(isinstance(e, StoreUnavailable) and e.status == 503 for e in errs), errs
            full = errs[0]
            filler.unlink()                                             # space is back
            later = [await inbox.submit(ev(f'after-{i}', memo=memo)) for i in range(20)]
            assert all(isinstance(s, int) for s in later)
            return first, acked, full
    try: first, acked, full = asyncio.run(main())
    finally: store.close()
    with closing(store.open('acme')) as t: ids = {e.id for e in t.events(limit=10_000)}
    assert {'evt_before', *acked, *(f'evt_after-{i}' for i in range(20))} == ids  # everything acknowledged, nothing else
    assert isinstance(full, StoreFull), f'a full disk answered {type(full).__name__}: {full.message}'

# ---------------------------------------------------------------- the worker paces a source to its handler_rate

def test_the_worker_paces_a_source_to_its_handler_rate_and_leaves_others_alone(store):
    "30 events of a source capped at 20 runs/s take at least 0.5 s to start (a second's burst, then 20/s); another source's don't wait."
    from webhooks.worker import Handlers, Worker
    t = tenant_with_sources(store, 'acme', 'slow', 'fast')
    t.set_source('slow', handler_rate=20)
    t.log([ev(f's{i}', 'slow') for i in range(30)] + [ev(f'f{i}', 'fast') for i in range(30)])
    h, starts = Handlers(), {'slow': [], 'fast': []}
    @h.on('*')
    def handle(e): starts[e.source].append(time.monotonic())
    w = Worker(store, h, poll=0.02)
    async def main():
        t0 = time.monotonic()
        try:
            while len(starts['slow']) < 30 and time.monotonic() - t0 < 20: await w.step(); await asyncio.sleep(0.01)
        finally: await w.stop()
        return t0
    t0 = asyncio.run(main())
    assert len(starts['slow']) == 30 and len(starts['fast']) == 30
    assert max(starts['fast']) - t0 < 0.5                     # the fast source ran at once
    assert max(starts['slow']) - min(starts['slow']) >= 0.45  # the slow one: a burst of 20, then 10 more at 20/s
    assert {e.status for e in t.events(limit=100)} == {'completed'}
    assert max(e.attempts for e in t.events(limit=100)) == 1   # deferring is not an attempt
    t.close()
