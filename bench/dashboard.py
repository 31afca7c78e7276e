"""The dashboard's pages at a million stored events: server-side render time (goal < 100 ms), measured over HTTP.

Run: `python bench/dashboard.py [--events 1000000] [--repeat 20]`
Fills tenant `big` (SQLite, /tmp/wh-dash-root) with --events events of mixed statuses, types and sources (one
INSERT … SELECT, so the fill takes seconds, not an hour), serves `webhooks-serve`'s app with uvicorn on 127.0.0.1, logs in
with the admin token, then times each page `--repeat` times and prints median and worst (ms, client-side, on loopback).
"""
import argparse, os, re, shutil, socket, statistics, subprocess, sys, time
from pathlib import Path
import httpx

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
             '{"id":"evt_' || i || '","type":"invoice.paid","data":{"object":{"amount":' || i || '}}}', 't=…,v1=…',
             'src:evt_' || i,
             CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 7 = 0 THEN 'unhandled' ELSE 'completed' END,
             1, CASE WHEN i % 50 = 0 THEN 'ConnectionError: crm down' END,
             ? - (? - i) * 0.5, ? - (? - i) * 0.5 + 0.1, '{"content-type":"application/json"}'
      FROM n''', (n, now, n, now, n))
    t.close()

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--events', type=int, default=1_000_000); ap.add_argument('--repeat', type=int, default=20)
    a = ap.parse_args()
    t0 = time.time(); fill(a.events); print(f'filled {a.events:,} events in {time.time()-t0:.1f} s', flush=True)
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
                 ('sources', '/admin/sources?tenant=big')]
        print(f'{"page":44s} {"median ms":>10s} {"worst ms":>9s}')
        for label, path in pages:
            times = []
            for _ in range(a.repeat):
                s = time.perf_counter(); r = c.get(path); times.append((time.perf_counter() - s) * 1000)
                assert r.status_code == 200, (path, r.status_code, r.text[:200])
            med = statistics.median(times)
            print(f'{label:44s} {med:10.1f} {max(times):9.1f}  {"(goal < 100 ms)" if med < 100 else "OVER the 100 ms goal"}', flush=True)
    finally:
        srv.terminate(); srv.wait(10)

if __name__ == '__main__': main()
