"""The reference for the PostgreSQL ingest bench: what a careful user writes by hand with Starlette + psycopg 3.
Verify the Moda-style signature, INSERT … ON CONFLICT DO NOTHING on the event id, commit that one request in its own
transaction (synchronous_commit on: durable before the answer), ack. An async pool of PEER_POOL connections (default 32,
one per wrk connection, so it never waits for a connection).  env: BENCH_DB (URL), MODA_WEBHOOK_SECRET."""
import hashlib, hmac, json, os, time
from contextlib import asynccontextmanager
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

SECRET = os.environ.get('MODA_WEBHOOK_SECRET', 'whsec_bench').encode()
pool = AsyncConnectionPool(os.environ['BENCH_DB'], min_size=4, max_size=int(os.environ.get('PEER_POOL', '32')), open=False,
                           kwargs=dict(autocommit=False))

@asynccontextmanager
async def lifespan(app):
    await pool.open()
    async with pool.connection() as c:
        await c.execute('''CREATE TABLE IF NOT EXISTS peer_events (id TEXT PRIMARY KEY, type TEXT, body TEXT NOT NULL,
                           status TEXT NOT NULL DEFAULT 'pending', received DOUBLE PRECISION NOT NULL)''')
        await c.execute('TRUNCATE peer_events'); await c.commit()
    yield
    await pool.close()

async def hook(req):
    body = await req.body()
    ts, sig = req.headers.get('x-webhook-timestamp'), req.headers.get('x-webhook-signature', '')
    if not ts or not sig: return JSONResponse({'error': 'missing headers'}, 400)
    try: skew = abs(time.time() - int(ts))
    except ValueError: return JSONResponse({'error': 'bad timestamp'}, 401)
    if skew > 300: return JSONResponse({'error': 'stale'}, 401)
    exp = hmac.new(SECRET, ts.encode() + b'.' + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(exp, sig.removeprefix('v1=')): return JSONResponse({'error': 'bad signature'}, 401)
    ev = json.loads(body)
    async with pool.connection() as c:  # commits on leaving the block: one transaction, one WAL flush per request
        cur = await c.execute('INSERT INTO peer_events (id, type, body, received) VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING',
                              (ev['id'], ev.get('type'), body.decode(), time.time()))
    return JSONResponse({'ok': True, 'duplicate': cur.rowcount == 0})

async def index(req): return JSONResponse({'ok': True})
app = Starlette(routes=[Route('/', index), Route('/webhooks/{tenant}/{source}', hook, methods=['POST'])], lifespan=lifespan)
