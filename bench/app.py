"""The project's receiver as the shared load kit expects it: `webhooks-serve`'s app with tenant(s) `bench*`, a `moda` source, secret `whsec_bench`.

env: BENCH_ROOT (default /tmp/wh-bench-root, wiped at start), BENCH_TENANTS (default 1: tenant `bench`; N>1: also `bench0`…`bench{N-1}`),
     BENCH_TOLERANCE (seconds, default 300: long runs replay pre-signed requests older than that),
     BENCH_WORKER (1: run the background worker in the same process, as `webhooks-serve` does; 0: receiver only),
     BENCH_DB (a postgresql:// URL: the tenants live there instead of BENCH_ROOT), BENCH_POOL (its pool size),
     BENCH_LOG (text|json: log a line per request to stderr, as `webhooks-serve` does)."""
import os, shutil
from pathlib import Path
from webhooks.cli import serve_app, setup_logging
from webhooks.routes import add_source
from webhooks.store import as_store, tenant_db

n = int(os.environ.get('BENCH_TENANTS', '1'))
names = ['bench'] + ([f'bench{i}' for i in range(n)] if n > 1 else [])
tol = int(os.environ.get('BENCH_TOLERANCE', '300'))
worker = os.environ.get('BENCH_WORKER', '1') == '1'
if url := os.environ.get('BENCH_DB'):  # PostgreSQL (bench/pg.py has made the database fresh)
    store = as_store(url, pool_size=int(os.environ.get('BENCH_POOL', '8')))
    for t in names: store.open(t, create=True).add_source('moda', 'moda', 'whsec_bench', tol)
    app = serve_app(store, worker=worker)
else:
    root = Path(os.environ.get('BENCH_ROOT', '/tmp/wh-bench-root'))
    shutil.rmtree(root, ignore_errors=True)
    for t in names:
        db = tenant_db(t, root); add_source(db, 'moda', 'moda', 'whsec_bench', tol); db.close()
    app = serve_app(root, worker=worker, writers=int(os.environ.get('BENCH_WRITERS', '8')))

if fmt := os.environ.get('BENCH_LOG'):  # as webhooks-serve does
    from webhooks.ops import AccessLog
    setup_logging(fmt); app.state.webhooks.access = AccessLog(fmt)
