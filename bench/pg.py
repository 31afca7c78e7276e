"""PostgreSQL, side by side in one run: ingest against a handwritten Starlette + psycopg receiver, and worker drain.

Run: `python bench/pg.py [--seconds 8] [--runs 5] [--drain 20000] [--skip-ingest] [--skip-drain]`
Needs wrk (apt-get install -y wrk) and PostgreSQL's server binaries (apt-get install -y postgresql). Starts a throwaway
server as the `postgres` user in /tmp/wh-pg-bench (port 54329; fsync and synchronous_commit on: a committed event is on
disk before its 200), with a fresh database for every measurement.

1. Ingest: `webhooks-serve --db …`'s app (bench/app.py with BENCH_DB, receiver only: `--no-worker`) and
   bench/pg_peer.py (verify, INSERT … ON CONFLICT DO NOTHING, one transaction per request), each one uvicorn worker
   under ../shared/bench/run.sh, wrk 1 thread × 32 connections, the same fresh pre-signed deliveries. Prints req/s, p50,
   p99 and the ratio (goal: ≥ 2× the peer's throughput, p99 ≤ 25 ms, in every one of --runs runs); and ours again with
   100 tenants (bench/tenants.lua spreads the deliveries; goal: ≥ 0.9× one tenant).
2. Drain: 1, 2 and 4 `webhooks-worker --db …` processes with a no-op handler, listening; --drain events committed in
   one transaction (so they all become visible, and the clock starts, at one moment); events/s from that commit to the
   moment none is pending or processing. Completion is polled with two index-backed EXISTS probes, not count(*): a
   count scans the whole table every 50 ms on the same two cores it measures. The count is checked once at the end.
Absolute numbers drift on this shared 2-vCPU VM; compare within a run.
"""
import argparse, glob, os, re, shutil, socket, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = (HERE/'..'/'..'/'shared'/'bench').resolve()
PY, BIN = sys.executable, Path(sys.executable).parent
DATA, PGPORT = Path('/tmp/wh-pg-bench'), 54329
BASE = f'postgresql://postgres@127.0.0.1:{PGPORT}'

def as_pg(*cmd, **kw):
    "Run a server binary as the postgres user (pg_ctl refuses root)."
    pre = ['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []
    return subprocess.run(pre + [str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)

def start_postgres():
    bins = sorted(glob.glob('/usr/lib/postgresql/*/bin'), reverse=True)
    if not bins: sys.exit('PostgreSQL server binaries missing: apt-get install -y postgresql')
    b = Path(bins[0])
    subprocess.run(['runuser', '-u', 'postgres', '--', str(b/'pg_ctl'), '-D', str(DATA/'data'), 'stop', '-m', 'immediate'],
                   capture_output=True)
    shutil.rmtree(DATA, ignore_errors=True); DATA.mkdir(parents=True)
    if os.geteuid() == 0: shutil.chown(DATA, 'postgres', 'postgres')
    as_pg(b/'initdb', '-D', DATA/'data', '-U', 'postgres', '--auth=trust', '-E', 'UTF8')
    opts = f'-p {PGPORT} -k {DATA} -c listen_addresses=127.0.0.1 -c max_connections=200 -c synchronous_commit=on -c fsync=on'
    as_pg(b/'pg_ctl', '-D', DATA/'data', '-o', opts, '-l', DATA/'log', '-w', 'start')
    return b

def stop_postgres(b): as_pg(b/'pg_ctl', '-D', DATA/'data', 'stop', '-m', 'fast')

def fresh_db(name:str)->str:
    import psycopg
    with psycopg.connect(f'{BASE}/postgres', autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)'); c.execute(f'CREATE DATABASE {name}')
    return f'{BASE}/{name}'

def run_sh(label, app, seconds, reqs, **env):
    e = {**os.environ, 'REQS': reqs, **{k: str(v) for k, v in env.items()}}
    out = subprocess.run([f'{SHARED}/run.sh', label, PY, str(HERE), app, str(seconds)], env=e, capture_output=True, text=True).stdout
    line = next((l for l in out.splitlines() if 'rps=' in l), None)
    if line is None: print(f'{label}: no result\n{out}'); return None
    print(line, flush=True)
    return {k: float(v) for k, v in (kv.split('=') for kv in line.split() if '=' in kv and kv.split('=')[1].replace('.', '').isdigit())}

def wrk_tenants(seconds:int, reqs:str, tenants:int, **env)->dict|None:
    "bench/app.py (receiver only) with `tenants` tenants in PostgreSQL, loaded through bench/tenants.lua."
    port = int(os.environ.get('PORT', '8765'))
    srv = subprocess.Popen([PY, '-m', 'uvicorn', 'app:app', '--host', '127.0.0.1', '--port', str(port), '--log-level',
                            'warning', '--no-access-log'], cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, 'BENCH_TENANTS': str(tenants), **{k: str(v) for k, v in env.items()}})
    try:
        for _ in range(600):
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=0.1): break
            except OSError: time.sleep(0.1)
        out = subprocess.run(['wrk', '-t1', '-c32', f'-d{seconds}s', '-s', str(HERE/'tenants.lua'), f'http://127.0.0.1:{port}'],
                             env={**os.environ, 'REQS': reqs, 'TENANTS': str(tenants)}, capture_output=True, text=True).stdout
    finally:
        srv.terminate(); srv.wait(30)
    m = re.search(r'RESULT (.*)', out)
    return {k: float(v) for k, v in re.findall(r'(\w+)=([\d.]+)', m[1])} if m else None

def ingest(seconds:int, runs:int):
    if not shutil.which('wrk'): sys.exit('wrk missing: apt-get install -y wrk')
    reqs = '/tmp/wh-pg-reqs.tsv'
    print(f'== ingest: 32 connections, one uvicorn worker each, durable commit before the 200, {runs} runs', flush=True)
    rows = []
    for k in range(runs):
        res = {}
        for label, app, db in [('starlette+psycopg (peer)', 'pg_peer:app', 'wh_peer'), ('webhooks-serve --db', 'app:app', 'wh_ours')]:
            subprocess.run([PY, f'{SHARED}/gen_requests.py', '200000', reqs, 'whsec_bench', '400'], check=True)
            res[label] = run_sh(label, app, seconds, reqs, BENCH_DB=fresh_db(db), BENCH_WORKER=0)
        subprocess.run([PY, f'{SHARED}/gen_requests.py', '200000', reqs, 'whsec_bench', '400'], check=True)
        res['100'] = r = wrk_tenants(seconds, reqs, 100, BENCH_DB=fresh_db('wh_ours100'), BENCH_WORKER=0)
        if r: print(f"{'webhooks-serve --db, 100 tenants':28s} rps={r['rps']:.0f} p50_ms={r['p50_ms']} p99_ms={r['p99_ms']} "
                    f"non2xx={int(r['non2xx'])} errors={int(r['errors'])}", flush=True)
        ours, peer, t100 = res['webhooks-serve --db'], res['starlette+psycopg (peer)'], res['100']
        if ours and peer and t100:
            rows.append((ours['rps'] / peer['rps'], ours['p99_ms'], t100['rps'] / ours['rps']))
            print(f"run {k + 1}: {rows[-1][0]:.2f}x the peer's req/s (goal >= 2x), p99 {ours['p99_ms']:g} ms (goal <= 25 ms) "
                  f"vs the peer's {peer['p99_ms']:g} ms; 100 tenants {rows[-1][2]:.2f}x one (goal >= 0.9x)", flush=True)
    ok = len(rows) == runs and all(x >= 2 and p <= 25 for x, p, _ in rows)
    print(f"PostgreSQL vs the handwritten psycopg receiver: {', '.join(f'{x:.2f}x' for x, _, _ in rows)}; p99 "
          f"{', '.join(f'{p:g}' for _, p, _ in rows)} ms: {'met' if ok else 'NOT met'} (>= 2x, p99 <= 25 ms in every run)")
    ok = len(rows) == runs and all(t >= 0.9 for _, _, t in rows)
    print(f"PostgreSQL 100 tenants / 1 tenant: {', '.join(f'{t:.2f}x' for _, _, t in rows)}: {'met' if ok else 'NOT met'} "
          "(>= 0.9x in every run)", flush=True)
    return rows

HANDLER = "from webhooks.worker import on\n@on('*')\ndef noop(ev): pass\n"

def drain(n:int, procs:int)->float:
    "events/s for `procs` worker processes draining `n` pending events of one tenant."
    from webhooks.postgres import PgStore
    from webhooks.store import NewEvent
    url = fresh_db('wh_drain')
    st = PgStore(url); t = st.open('drain', create=True)
    hooks = DATA/'noop_hooks.py'; hooks.write_text(HANDLER)
    ws = [subprocess.Popen([str(BIN/'webhooks-worker'), '--db', url, '--handlers', str(hooks), '--concurrency', '4'],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(procs)]
    for w in ws: w.stdout.readline()  # its banner: started and listening
    body = '{"id":"x","type":"task.succeeded","data":{"id":"tsk","result":{"canvas_url":"https://example.test/c/1"}}}'
    evs = [NewEvent(f'evt_{i}', 'moda', 'task.succeeded', body, None, f'moda:evt_{i}') for i in range(n)]
    t.log(evs)  # one commit: logged in slices, the workers drained the first while the clock waited for the last
    t0 = time.perf_counter()
    busy = ("SELECT EXISTS (SELECT FROM webhook_events WHERE status = 'pending') "
            "OR EXISTS (SELECT FROM webhook_events WHERE status = 'processing') AS busy")
    while t.q(busy)[0]['busy']: time.sleep(0.05)
    dt = time.perf_counter() - t0
    done = t.q("SELECT count(*) AS n FROM webhook_events WHERE status = 'completed'")[0]['n']
    if done != n: sys.exit(f'drain: {done} of {n} events completed')
    for w in ws: w.terminate()
    for w in ws: w.wait(20)
    st.close()
    return n / dt

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=int, default=8); ap.add_argument('--drain', type=int, default=20000)
    ap.add_argument('--runs', type=int, default=5, help='ingest runs (peer, ours, ours with 100 tenants)')
    ap.add_argument('--skip-ingest', action='store_true'); ap.add_argument('--skip-drain', action='store_true')
    a = ap.parse_args()
    b = start_postgres()
    try:
        if not a.skip_ingest: ingest(a.seconds, a.runs)
        if not a.skip_drain:
            print(f'== drain: {a.drain} pending events, no-op handler, concurrency 4 per process', flush=True)
            for k in (1, 2, 4): print(f'{k} worker process(es): {drain(a.drain, k):,.0f} events/s', flush=True)
    finally: stop_postgres(b)

if __name__ == '__main__': main()
