"""The dashboard's pages at a million stored events: server-side render time (goal < 100 ms), measured over HTTP; and
payload search (`where=`) at a million events on both backends (goal < 500 ms for a search bounded to a day).

Run: `python bench/dashboard.py [--events 1000000] [--repeat 20] [--skip-pages] [--skip-postgres]`
Fills tenant `big` (SQLite, /tmp/wh-dash-root) with --events events of mixed statuses, types and sources (one
INSERT … SELECT, so the fill takes seconds, not an hour), serves `webhooks-serve`'s app with uvicorn on 127.0.0.1, logs in
with the admin token, then times each page `--repeat` times and prints median and worst (ms, client-side, on loopback).

Payload search: events are 0.5 s apart (a day holds 172,800 of them) and each body names one of 5,000 customers, so a
customer has ~35 events in a day and 200 in all. Each search is timed through the store API (`Tenant.events(search=…,
limit=51)`, the call the API, the CLI and the events page make), and once end to end through `/api/v1`; the query plan
is printed. Then the same searches with the field declared (`Tenant.index_payload`: an expression index). PostgreSQL
runs on a throwaway server (bench/pg.py's, in /tmp/wh-pg-dash-bench on port 54331), filled with the same rows.
"""
import argparse, os, re, shutil, socket, statistics, subprocess, sys, time
from pathlib import Path
import httpx
SEARCH = 'data.object.customer=cus_42'

ROOT, TOKEN = Path('/tmp/wh-dash-root'), 'adm_bench_dashboard_token_0123'

def fill(n:int):
    from webhooks.store import SqliteStore, tenant_db
    shutil.rmtree(ROOT, ignore_errors=True)
    t = SqliteStore(ROOT).open('big', create=True)
    t.add_source('stripe', 'stripe', 'whsec_bench_0123456789'); t.add_source('github', 'github', 'gh_bench_0123456789')
    now = time.time()
    t.c.execute('''WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?)
      INSERT INTO webhook_events (id, source, event_type, payload, signature, idempotency_key, status, attempts, error_message,
                                  received_at, processed_at, headers)
      SELECT 'evt_' || i, CASE WHEN i % 3 THEN 'stripe' ELSE 'github' END,
             CASE i % 4 WHEN 0 THEN 'invoice.paid' WHEN 1 THEN 'invoice.sent' WHEN 2 THEN 'customer.created' ELSE 'push' END,
             '{"id":"evt_' || i || '","type":"invoice.paid","data":{"object":{"customer":"cus_' || (i % 5000)
             || '","amount":' || i || '}}}', 't=…,v1=…',
             'src:evt_' || i,
             CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 7 = 0 THEN 'unhandled' ELSE 'completed' END,
             1, CASE WHEN i % 50 = 0 THEN 'ConnectionError: crm down' END,
             ? - (? - i) * 0.5, ? - (? - i) * 0.5 + 0.1, '{"content-type":"application/json"}'
      FROM n''', (n, now, n, now, n))
    t.close()

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def timed(f, repeat:int)->tuple[float,float,object]:
    "Median and worst ms of `repeat` calls of `f`, and its last result."
    times = []
    for _ in range(repeat):
        s = time.perf_counter(); res = f(); times.append((time.perf_counter() - s) * 1000)
    return statistics.median(times), max(times), res

SEARCHES = [('a customer, bounded to the last day', dict(search=SEARCH), 86400, 500),
            ('a customer prefix (^=), the last day', dict(search='data.object.customer^=cus_420'), 86400, 500),
            ('a customer and a type, the last day', dict(search=SEARCH, type='invoice.'), 86400, 500),
            ('a customer, all events (no time bound)', dict(search=SEARCH), None, None)]

def search_bench(t, label:str, plan, repeat:int):
    "Time `SEARCHES` on tenant `t` (newest event now), before and after `index_payload`; print plans."
    now = time.time()
    for declared in (False, True):
        if declared:
            s = time.perf_counter(); name = t.index_payload('data.object.customer')
            print(f'  {label}: index_payload(data.object.customer) -> {name} in {time.perf_counter() - s:.1f} s')
            if label == 'PostgreSQL':  # its planner knows an expression's values only once the table is analysed
                with t.txn() as c: c.execute(f'ANALYZE {t.t}webhook_events')
        for what, kw, span, goal in SEARCHES:
            since = now - span if span else None
            med, worst, rows = timed(lambda: t.events(limit=51, since=since, **kw), repeat)
            verdict = '' if goal is None else f'(goal < {goal} ms)' if med < goal else f'OVER the {goal} ms goal'
            print(f'  {label:10s} {"declared" if declared else "generic":8s} {what:42s} {med:8.1f} {worst:8.1f} '
                  f'{len(rows):3d} rows {verdict}', flush=True)
        w, args = t.where(since=now - 86400, search=SEARCH)
        q = f'SELECT seq FROM {t.t}webhook_events WHERE {w} ORDER BY seq DESC LIMIT 51'
        print(f'  plan ({label}, {"declared" if declared else "generic"}, a customer, the last day):')
        for line in plan(q, args): print('    ' + line)

def sqlite_search(repeat:int):
    from webhooks.store import SqliteStore
    t = SqliteStore(ROOT).open('big')
    plan = lambda q, args: [r[-1] for r in t.c.execute('EXPLAIN QUERY PLAN ' + q, args)]
    try: search_bench(t, 'SQLite', plan, repeat)
    finally: t.close()

def pg_search(n:int, repeat:int):
    import pg  # bench/pg.py's throwaway server, in a folder and on a port of its own (not pg.py's: both may run)
    from webhooks.postgres import PgStore
    pg.DATA, pg.PGPORT = Path('/tmp/wh-pg-dash-bench'), 54331
    pg.BASE = f'postgresql://postgres@127.0.0.1:{pg.PGPORT}'
    b = pg.start_postgres()
    try:
        store = PgStore(pg.fresh_db('dash'))
        t = store.open('big', create=True)
        s0, now = time.time(), time.time()
        with t.txn() as c:
            c.execute(f"""INSERT INTO {t.t}webhook_events (id, source, event_type, payload, signature, idempotency_key,
              status, attempts, error_message, received_at, processed_at, headers)
            SELECT 'evt_' || i, CASE WHEN mod(i, 3) <> 0 THEN 'stripe' ELSE 'github' END,
              CASE mod(i, 4) WHEN 0 THEN 'invoice.paid' WHEN 1 THEN 'invoice.sent' WHEN 2 THEN 'customer.created' ELSE 'push' END,
              convert_to('{{"id":"evt_' || i || '","type":"invoice.paid","data":{{"object":{{"customer":"cus_' || mod(i, 5000)
                         || '","amount":' || i || '}}}}}}', 'UTF8'), 't=…,v1=…', 'src:evt_' || i,
              CASE WHEN mod(i, 50) = 0 THEN 'failed' WHEN mod(i, 7) = 0 THEN 'unhandled' ELSE 'completed' END, 1, NULL,
              %s - (%s - i) * 0.5, %s - (%s - i) * 0.5 + 0.1, '{{"content-type":"application/json"}}'
            FROM generate_series(1, %s) AS i""", (now, n, now, n, n))
        with t.txn() as c: c.execute(f'ANALYZE {t.t}webhook_events')
        print(f'  PostgreSQL: filled {n:,} events in {time.time() - s0:.1f} s', flush=True)
        def plan(q, args):
            with t.reading() as c: return [r[0] for r in c.execute('EXPLAIN ANALYZE ' + q, args).fetchall()]
        search_bench(t, 'PostgreSQL', plan, repeat)
        store.close()
    finally: pg.stop_postgres(b)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--events', type=int, default=1_000_000); ap.add_argument('--repeat', type=int, default=20)
    ap.add_argument('--skip-pages', action='store_true'); ap.add_argument('--skip-postgres', action='store_true')
    a = ap.parse_args()
    t0 = time.time(); fill(a.events); print(f'filled {a.events:,} events in {time.time()-t0:.1f} s', flush=True)
    if not a.skip_pages: pages(a)
    print(f'\npayload search at {a.events:,} events: {"backend":10s} {"index":8s} {"search":42s} {"median ms":>8s} '
          f'{"worst":>8s}')
    sqlite_search(max(3, a.repeat // 4))
    if not a.skip_postgres: pg_search(a.events, max(3, a.repeat // 4))

def pages(a):
    port = free_port()
    code = ("import uvicorn; from webhooks.cli import serve_app; "
            f"uvicorn.run(serve_app({str(ROOT)!r}, worker=False, admin_token={TOKEN!r}), host='127.0.0.1', port={port}, log_level='warning')")
    srv = subprocess.Popen([sys.executable, '-c', code])
    try:
        base = f'http://127.0.0.1:{port}'
        for _ in range(200):
            try: httpx.get(base + '/healthz', timeout=1); break
            except httpx.HTTPError: time.sleep(0.05)
        c = httpx.Client(base_url=base, timeout=30)
        csrf = re.search(r'<input type="hidden" value="([^"]+)" name="csrf"', c.get('/admin/login').text)[1]
        r = c.post('/admin/login', data={'token': TOKEN, 'csrf': csrf})
        assert r.status_code in (200, 303) and 'webhooks_admin' in c.cookies, r.text[:200]
        mid = a.events // 2
        pages = [('overview', '/admin/'), ('events, first page', '/admin/events?tenant=big'),
                 ('events, failed invoice.* of the last 2 h', '/admin/events?tenant=big&status=failed&type=invoice.*&since=2h'),
                 ('events, a page deep in history', f'/admin/events?tenant=big&before={mid}'),
                 ('events, by id', f'/admin/events?tenant=big&id=evt_{mid}'),
                 ('event detail', f'/admin/events/big/{mid}'), ('rejected', '/admin/rejected?tenant=big'),
                 ('sources', '/admin/sources?tenant=big'),
                 ('events, payload search of the last day', f'/admin/events?tenant=big&where={SEARCH}&since=1d')]
        print(f'{"page":44s} {"median ms":>10s} {"worst ms":>9s}')
        for label, path in pages:
            times = []
            for _ in range(a.repeat):
                s = time.perf_counter(); r = c.get(path); times.append((time.perf_counter() - s) * 1000)
                assert r.status_code == 200, (path, r.status_code, r.text[:200])
            med = statistics.median(times)
            print(f'{label:44s} {med:10.1f} {max(times):9.1f}  {"(goal < 100 ms)" if med < 100 else "OVER the 100 ms goal"}', flush=True)
        api = lambda: httpx.get(f'{base}/api/v1/tenants/big/events', params={'where': SEARCH, 'since': '1d'},
                                headers={'Authorization': f'Bearer {TOKEN}'}, timeout=30)
        med, worst, r = timed(api, a.repeat)
        assert r.status_code == 200, r.text[:200]
        print(f'{"API: /api/v1 events?where=…&since=1d":44s} {med:10.1f} {worst:9.1f}  {len(r.json()["events"])} events', flush=True)
    finally:
        srv.terminate(); srv.wait(10)

if __name__ == '__main__': main()
