"""Durable ingest, side by side with the reference receivers, in one run on one machine.

Run: `python bench/ingest.py [--seconds 8] [--rss-events 1000000] [--skip-rss]`
Needs wrk and redis-server (apt-get install -y wrk redis-server); makes the peers' venv (/tmp/wh-peers) once, as
../shared/bench/peers.sh does. Every receiver is one uvicorn worker on 127.0.0.1 loaded by wrk (1 thread, 32
connections) with the same fresh, pre-signed, distinct Moda-style deliveries (../shared/bench/gen_requests.py).

Prints: the main table (req/s, p50, p99, non-2xx) for every reference receiver and ours, with the target ratios;
then 100 tenants vs 1; 1 KiB vs 64 KiB bodies; RSS of the server before and after --rss-events events.
Absolute numbers drift between runs and machines (this one is a shared 2-vCPU VM); ratios within a run hold better.
"""
import argparse, os, re, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = (HERE/'..'/'..'/'shared'/'bench').resolve()
PY = sys.executable
PEERS_PY = '/tmp/wh-peers/bin/python'
PORT = 8765

def sh(cmd, **kw): return subprocess.run(cmd, shell=True, check=True, **kw)

def setup():
    for tool in ('wrk', 'redis-server'):
        if not shutil.which(tool): sys.exit(f'{tool} missing: apt-get install -y wrk redis-server')
    if not os.path.exists(PEERS_PY):
        sh(f'python3 -m venv /tmp/wh-peers && {PEERS_PY} -m pip install -q fastapi "uvicorn[standard]" redis starlette python-fasthtml')
    if subprocess.run('redis-cli ping', shell=True, capture_output=True).returncode:
        sh('redis-server --port 6379 --save "" --appendonly no --daemonize yes >/dev/null')

def gen(n, path, pad=400):
    "Fresh signed deliveries: their timestamps must be inside the receivers' 300 s window."
    sh(f'{PEERS_PY} {SHARED}/gen_requests.py {n} {path} whsec_bench {pad}')

def parse(line):
    m = dict(re.findall(r'(\w+)=([\d.]+)', line))
    return {k: float(v) for k, v in m.items()}

def run_sh(label, py, appdir, app, seconds, reqs, **env):
    "One receiver under ../shared/bench/run.sh, exactly as the reference receivers are measured."
    e = {**os.environ, 'REQS': reqs, **{k: str(v) for k, v in env.items()}}
    out = subprocess.run([f'{SHARED}/run.sh', label, py, str(appdir), app, str(seconds)], env=e, capture_output=True, text=True).stdout
    line = next((l for l in out.splitlines() if 'rps=' in l), None)
    if line is None: print(f'{label}: no result\n{out}'); return None
    return parse(line)

class Server:
    "Our receiver (bench/app.py) in its own uvicorn process, for the runs run.sh can't express."
    def __init__(self, **env):
        self.p = subprocess.Popen([PY, '-m', 'uvicorn', 'app:app', '--host', '127.0.0.1', '--port', str(PORT), '--log-level', 'warning', '--no-access-log'],
                                  cwd=HERE, env={**os.environ, **{k: str(v) for k, v in env.items()}}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                with socket.create_connection(('127.0.0.1', PORT), timeout=0.1): return
            except OSError: time.sleep(0.05)
        raise RuntimeError('server did not start')
    def rss_mib(self): return int(subprocess.run(['ps', '-o', 'rss=', '-p', str(self.p.pid)], capture_output=True, text=True).stdout) / 1024
    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try: self.p.wait(20)
        except subprocess.TimeoutExpired: self.p.kill()

def wrk(script, seconds, reqs, conns=32, **env):
    e = {**os.environ, 'REQS': reqs, 'NTHREADS': '1', 'WPATH': '/webhooks/bench/moda', **{k: str(v) for k, v in env.items()}}
    out = subprocess.run(['wrk', '-t1', f'-c{conns}', f'-d{seconds}s', '-s', str(script), f'http://127.0.0.1:{PORT}'], env=e, capture_output=True, text=True).stdout
    line = next((l for l in out.splitlines() if l.startswith('RESULT')), None)
    return parse(line) if line else None

def row(label, r, note=''):
    if r is None: return print(f'{label:34s} (no result)')
    print(f"{label:34s} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {int(r['non2xx']):7d} {int(r['errors']):6d}  {note}")

def header(title):
    print(f'\n{title}\n{"receiver":34s} {"req/s":>8s} {"p50 ms":>8s} {"p99 ms":>8s} {"non2xx":>7s} {"errors":>6s}')

def stored_events(root='/tmp/wh-bench-root'):
    import apsw
    n = 0
    for f in Path(root).glob('*.db'):
        c = apsw.Connection(str(f), flags=apsw.SQLITE_OPEN_READONLY)
        n += c.execute('SELECT count(*) FROM webhook_events').fetchone()[0]; c.close()
    return n

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=int, default=8)
    ap.add_argument('--rss-events', type=int, default=1_000_000)
    ap.add_argument('--skip-rss', action='store_true')
    a = ap.parse_args()
    setup()
    reqs = '/tmp/wh-ingest-reqs.tsv'
    t0 = time.time()
    print(f'Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; wrk 1 thread, 32 connections, {a.seconds} s per receiver; ~470-byte bodies')

    # --- main table: every reference receiver, then ours, on the same fresh deliveries
    gen(200_000, reqs)
    P = SHARED/'peers'
    res = {}
    header('Main table (same deliveries, same run)')
    for label, app, env in [('bare-starlette', 'bare_starlette:app', {}), ('fasthtml-raw-route', 'fasthtml_rawroute:app', {}),
                            ('fasthtml-app.post-route', 'bare_fasthtml:app', {}),
                            ('handwritten-sqlite-NORMAL', 'handwritten_sqlite:app', {'SYNC': 'NORMAL'}),
                            ('handwritten-sqlite-FULL', 'handwritten_sqlite:app', {'SYNC': 'FULL'}),
                            ('seed-fastapi-redis', 'seed_fastapi_redis:app', {})]:
        for f in Path('/tmp').glob('hw_bench.db*'): f.unlink()
        if 'redis' in label: subprocess.run('redis-cli flushall', shell=True, capture_output=True)
        res[label] = run_sh(label, PEERS_PY, P, app, a.seconds, reqs, **env); row(label, res[label])
    res['webhooks (receiver only)'] = run_sh('webhooks-receiver', PY, HERE, 'app:app', a.seconds, reqs, BENCH_WORKER=0)
    row('webhooks (receiver only)', res['webhooks (receiver only)'], 'verify + dedupe + FULL commit before 200')
    res['webhooks-serve (with worker)'] = run_sh('webhooks-serve', PY, HERE, 'app:app', a.seconds, reqs, BENCH_WORKER=1)
    row('webhooks-serve (with worker)', res['webhooks-serve (with worker)'], 'the same, worker draining in-process')

    ours = res['webhooks (receiver only)']
    print('\nTargets (durable receiver = webhooks receiver only):')
    for peer, target in [('handwritten-sqlite-FULL', 4.0), ('seed-fastapi-redis', 3.0), ('handwritten-sqlite-NORMAL', 1.2), ('fasthtml-raw-route', 0.55)]:
        if ours and res.get(peer):
            r = ours['rps'] / res[peer]['rps']
            print(f'  vs {peer:28s} {r:5.2f}x  (target >= {target}x)  {"met" if r >= target else "NOT met"}')
    if ours: print(f"  p99 {ours['p99_ms']:.1f} ms  (target <= 10 ms)  {'met' if ours['p99_ms'] <= 10 else 'NOT met'}")

    # --- 100 tenants at once vs one tenant
    gen(200_000, reqs)
    header('Tenants: one vs 100 receiving at once (receiver only)')
    s = Server(BENCH_WORKER=0); one = wrk(SHARED/'replay.lua', a.seconds, reqs); s.stop(); row('1 tenant', one)
    s = Server(BENCH_WORKER=0, BENCH_TENANTS=100); hundred = wrk(HERE/'tenants.lua', a.seconds, reqs, TENANTS=100); s.stop(); row('100 tenants', hundred)
    if one and hundred: print(f"  100 tenants / 1 tenant: {hundred['rps']/one['rps']:.2f}x  (target: within 20 %, >= 0.80x)")

    # --- body sizes
    header('Body size (receiver only; handwritten FULL alongside)')
    for label, pad, n in [('1 KiB', 900, 150_000), ('64 KiB', 65_000, 4_000)]:
        gen(n, reqs, pad)
        s = Server(BENCH_WORKER=0); r = wrk(SHARED/'replay.lua', a.seconds, reqs); s.stop(); row(f'webhooks {label}', r, '' if n > 100_000 else f'(file holds {n} deliveries; a longer run repeats them as duplicates)')
        for f in Path('/tmp').glob('hw_bench.db*'): f.unlink()
        row(f'handwritten-FULL {label}', run_sh(f'hw-FULL-{label}', PEERS_PY, P, 'handwritten_sqlite:app', a.seconds, reqs, SYNC='FULL'))

    # --- memory after many events
    if not a.skip_rss:
        n = a.rss_events
        print(f'\nMemory: RSS of webhooks-serve (receiver + worker) before and after {n:,} distinct events')
        gen(n + n//4, reqs, 100)
        s = Server(BENCH_WORKER=1, BENCH_TOLERANCE=7200)
        warm = wrk(SHARED/'replay.lua', 3, reqs)  # warm-up: caches, first tenant open, worker started
        before, before_n = s.rss_mib(), stored_events()
        est = max(warm['rps'], 500) if warm else 2000
        secs = int((n - before_n) / est * 1.2) + 5  # generous: the file holds n + n/4 distinct deliveries
        print(f'  warm-up: {before_n:,} events stored, RSS {before:.1f} MiB; loading ~{secs} s ...', flush=True)
        r = wrk(SHARED/'replay.lua', secs, reqs)
        after, after_n = s.rss_mib(), stored_events()
        s.stop()
        row('  load', r)
        print(f'  events stored {after_n:,}; RSS before {before:.1f} MiB, after {after:.1f} MiB, growth {after-before:+.1f} MiB (target < 50 MiB)')
    print(f'\ntotal {time.time()-t0:.0f} s')

if __name__ == '__main__': main()
