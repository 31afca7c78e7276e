"""Durable ingest as shipped, side by side with the reference receivers, in one run on one machine (issue 25).

Run: `python bench/ingest.py [--seconds 8] [--rounds 2] [--only main,tenants,workers]`
Needs wrk and redis-server (apt-get install -y wrk redis-server); makes the peers' venv (/tmp/wh-peers) once, as
../shared/bench/peers.sh does. Every receiver serves 127.0.0.1 and is loaded by wrk (1 thread, 32 connections) with
fresh, pre-signed, distinct Moda-style deliveries (../shared/bench/gen_requests.py; made again before they get near the
receivers' 300 s window).

Rows:
- the peers under ../shared/bench/run.sh: FastHTML's raw route (the ceiling), the handwritten SQLite receiver that
  fsyncs each request (FULL) and the seed's FastAPI + Redis;
- `webhooks (receiver alone)`: bench/app.py with BENCH_WORKER=0 under run.sh, the figure published before issue 25;
- `webhooks-serve` exactly as a user runs it (`webhooks-serve --root …`: its default worker, dashboard mounted, a log
  line per request to stderr, here a file), with no handlers (events end `unhandled`) and with a no-op handler
  (`--handlers`), and again with `--worker-in-process` when `webhooks-serve --help` offers it;
- 100 tenants (bench/tenants.lua spreads the deliveries over `bench0`…`bench99`) against one, as shipped;
- `--workers 2` against `--workers 1`, one tenant and 100, as shipped.
Every configuration runs `--rounds` times, interleaved; a row shows its best round (the rounds are printed as they
run). Each goal of issue 25 is marked met or NOT met. Absolute numbers drift between runs on this shared 2-vCPU VM
(wrk, the server and whatever else runs share the two cores); ratios within a run hold better.
"""
import argparse, os, re, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = (HERE/'..'/'..'/'shared'/'bench').resolve()
PY, BIN = sys.executable, Path(sys.executable).parent
PEERS_PY = '/tmp/wh-peers/bin/python'
PORT = int(os.environ.get('PORT', '8765'))
TOKEN = 'adm_bench_ingest_0123456789'
NOOP = "from webhooks.worker import on\n@on('*')\ndef noop(ev): pass\n"

def sh(cmd, **kw): return subprocess.run(cmd, shell=True, check=True, **kw)

def setup():
    for tool in ('wrk', 'redis-server'):
        if not shutil.which(tool): sys.exit(f'{tool} missing: apt-get install -y wrk redis-server')
    if not os.path.exists(PEERS_PY):
        sh(f'python3 -m venv /tmp/wh-peers && {PEERS_PY} -m pip install -q fastapi "uvicorn[standard]" redis starlette '
           'python-fasthtml')
    if subprocess.run('redis-cli ping', shell=True, capture_output=True).returncode:
        sh('redis-server --port 6379 --save "" --appendonly no --daemonize yes >/dev/null')

class Deliveries:
    "A file of fresh signed deliveries, made again when its timestamps get near the receivers' 300 s window."
    def __init__(self, path:Path, n:int=200_000): self.path, self.n, self.made = path, n, 0.0
    def fresh(self)->str:
        if time.time() - self.made > 150:
            sh(f'{PEERS_PY} {SHARED}/gen_requests.py {self.n} {self.path} whsec_bench 400'); self.made = time.time()
        return str(self.path)

def parse(line:str)->dict: return {k: float(v) for k, v in re.findall(r'(\w+)=([\d.]+)', line)}

def run_sh(label, py, appdir, app, seconds, reqs, **env)->dict|None:
    "One receiver under ../shared/bench/run.sh, exactly as the reference receivers are measured."
    e = {**os.environ, 'REQS': reqs, 'PORT': str(PORT), **{k: str(v) for k, v in env.items()}}
    out = subprocess.run([f'{SHARED}/run.sh', label, py, str(appdir), app, str(seconds)], env=e, capture_output=True,
                         text=True).stdout
    line = next((l for l in out.splitlines() if 'rps=' in l), None)
    if line is None: print(f'  {label}: no result\n{out}'); return None
    return parse(line)

def wrk(seconds:int, reqs:str, tenants:int=1)->dict|None:
    env = {**os.environ, 'REQS': reqs, 'NTHREADS': '1', 'WPATH': '/webhooks/bench/moda', 'TENANTS': str(tenants)}
    script = SHARED/'replay.lua' if tenants == 1 else HERE/'tenants.lua'
    out = subprocess.run(['wrk', '-t1', '-c32', f'-d{seconds}s', '-s', str(script), f'http://127.0.0.1:{PORT}'],
                         env=env, capture_output=True, text=True).stdout
    line = next((l for l in out.splitlines() if l.startswith('RESULT')), None)
    return parse(line) if line else None

def make_root(tmp:Path, tenants:int)->Path:
    from webhooks.store import SqliteStore
    root = tmp/f'root-{time.monotonic_ns()}'
    st = SqliteStore(root)
    for name in (['bench'] if tenants == 1 else [f'bench{i}' for i in range(tenants)]):
        t = st.open(name, create=True); t.add_source('moda', 'moda', 'whsec_bench'); t.close()
    st.close()
    return root

def children(pid:int)->list[str]:
    try: return Path(f'/proc/{pid}/task/{pid}/children').read_text().split()
    except OSError: return []

def serve(root:Path, args:list, log)->subprocess.Popen:
    "`webhooks-serve --root root *args` on PORT, once it answers (and every process it forks has started)."
    p = subprocess.Popen([str(BIN/'webhooks-serve'), '--root', str(root), '--port', str(PORT), *args], stdout=log,
                         stderr=log, env={**os.environ, 'WEBHOOKS_ADMIN_TOKEN': TOKEN})
    n = int(args[args.index('--workers') + 1]) if '--workers' in args else 1
    deadline, seen = time.monotonic() + 60, 0.0
    while time.monotonic() < deadline:
        if p.poll() is not None: raise SystemExit(f'webhooks-serve {" ".join(args)} exited; see {log.name}')
        try:
            with socket.create_connection(('127.0.0.1', PORT), timeout=0.2): pass
            if n == 1 or len(children(p.pid)) >= n:
                seen = seen or time.monotonic()
                if time.monotonic() - seen > 1.5: return p  # every process has had time to open its sockets and loop
        except OSError: pass
        time.sleep(0.1)
    p.kill(); raise SystemExit(f'webhooks-serve {" ".join(args)} did not start')

def stop(p:subprocess.Popen):
    p.send_signal(signal.SIGTERM)
    try: p.wait(60)
    except subprocess.TimeoutExpired: p.kill(); p.wait()

def shipped(args:list, seconds:int, reqs:str, tmp:Path, tenants:int=1)->dict|None:
    "`webhooks-serve` with `args` on a fresh root of `tenants` tenants, loaded by wrk."
    root = make_root(tmp, tenants)
    with open(tmp/'serve.log', 'a') as log:
        log.write(f'\n=== webhooks-serve {" ".join(args)} ({tenants} tenants)\n'); log.flush()
        p = serve(root, args, log)
        try: r = wrk(seconds, reqs, tenants)
        finally: stop(p)
    shutil.rmtree(root, ignore_errors=True)
    return r

def line(label:str, r:dict|None, note:str=''):
    if r is None: return print(f'{label:46s} (no result)')
    print(f"{label:46s} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {int(r['non2xx']):7d} {int(r['errors']):6d}  "
          f"{note}", flush=True)

def header(title:str):
    print(f'\n{title}\n{"receiver":46s} {"req/s":>8s} {"p50 ms":>8s} {"p99 ms":>8s} {"non2xx":>7s} {"errors":>6s}',
          flush=True)

def goal(text:str, ok:bool|None):
    print(f'  {"met    " if ok else "NOT met" if ok is not None else "n/a    "}  {text}', flush=True)

def ratio(a, b): return a['rps'] / b['rps'] if a and b else float('nan')

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=int, default=8)
    ap.add_argument('--rounds', type=int, default=2, help='runs of every configuration, interleaved; rows show the best')
    ap.add_argument('--only', default='main,tenants,workers', help='sections to run (comma-separated)')
    a = ap.parse_args()
    parts = set(a.only.split(','))
    setup()
    tmp = Path(tempfile.mkdtemp(prefix='wh-ingest-'))
    hooks = tmp/'noop_hooks.py'; hooks.write_text(NOOP)
    reqs = Deliveries(tmp/'reqs.tsv')
    inproc = '--worker-in-process' in subprocess.run([str(BIN/'webhooks-serve'), '--help'], capture_output=True,
                                                     text=True).stdout
    P = SHARED/'peers'
    def peer(label, app, **env):
        def run():
            for f in Path('/tmp').glob('hw_bench.db*'): f.unlink()
            if 'redis' in app: subprocess.run('redis-cli flushall', shell=True, capture_output=True)
            return run_sh(label, PEERS_PY, P, app, a.seconds, reqs.fresh(), **env)
        return run
    alone = lambda: run_sh('webhooks-receiver', PY, HERE, 'app:app', a.seconds, reqs.fresh(), BENCH_WORKER=0)
    ws = lambda *args, tenants=1: lambda: shipped(list(args), a.seconds, reqs.fresh(), tmp, tenants)
    configs = {}  # key -> (section, label, run)
    if 'main' in parts:
        configs.update({
            'raw': ('main', 'fasthtml-raw-route (ceiling)', peer('fasthtml-raw-route', 'fasthtml_rawroute:app')),
            'full': ('main', 'handwritten-sqlite-FULL', peer('handwritten-sqlite-FULL', 'handwritten_sqlite:app', SYNC='FULL')),
            'seed': ('main', 'seed-fastapi-redis', peer('seed-fastapi-redis', 'seed_fastapi_redis:app')),
            'alone': ('main', 'webhooks, receiver alone (bench/app.py)', alone)})
    if parts & {'main', 'tenants', 'workers'}:
        configs['shipped'] = ('main', 'webhooks-serve (as shipped), no handlers', ws())
    if 'main' in parts:
        configs['noop'] = ('main', 'webhooks-serve (as shipped), no-op handler', ws('--handlers', str(hooks)))
        if inproc:
            configs['inproc'] = ('main', 'webhooks-serve --worker-in-process, no handlers', ws('--worker-in-process'))
            configs['inproc_noop'] = ('main', 'webhooks-serve --worker-in-process, no-op handler',
                                      ws('--worker-in-process', '--handlers', str(hooks)))
    if parts & {'tenants', 'workers'}:
        configs['t100'] = ('tenants', 'webhooks-serve, 100 tenants', ws(tenants=100))
    if 'workers' in parts:
        configs['w2'] = ('workers', 'webhooks-serve --workers 2, 1 tenant', ws('--workers', '2'))
        configs['w2_100'] = ('workers', 'webhooks-serve --workers 2, 100 tenants', ws('--workers', '2', tenants=100))
    print(f'Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; wrk 1 thread, 32 connections, {a.seconds} s a run, '
          f'{a.rounds} round(s); ~470-byte bodies; durable (synchronous=FULL) commit before every 200; '
          f'--worker-in-process {"offered" if inproc else "not offered"} by this webhooks-serve', flush=True)
    t0, best, runs = time.time(), {}, {}
    for rnd in range(a.rounds):
        for key, (_, label, run) in configs.items():
            load = os.getloadavg()[0]
            r = run()
            runs.setdefault(key, []).append(r)
            print(f'  round {rnd + 1}: {label:48s} ' + (f"{r['rps']:6.0f} req/s  p99 {r['p99_ms']:6.2f} ms  "
                  f"non-2xx {int(r['non2xx'])}" if r else 'no result') + f'  (load average before: {load:.1f})', flush=True)
            if r and (key not in best or r['rps'] > best[key]['rps']): best[key] = r
    g = best.get
    if 'main' in parts:
        header('Main table: as shipped beside the receiver alone and the peers (best round of each)')
        for key in ('raw', 'full', 'seed', 'alone', 'shipped', 'noop', 'inproc', 'inproc_noop'):
            if key in configs: line(configs[key][1], g(key))
        print('Goals:')
        for key in ('shipped', 'noop', 'inproc', 'inproc_noop'):
            if key not in configs: continue
            r, x = g(key), ratio(g(key), g('alone'))
            goal(f'{configs[key][1]}: {x:.2f}x the receiver alone (>= 0.9x), p99 {r["p99_ms"] if r else float("nan"):.1f} ms'
                 f' (<= 20 ms)', bool(r) and x >= 0.9 and r['p99_ms'] <= 20)
        s = g('shipped')
        for peer_key, target in (('full', 2.0), ('seed', 2.0), ('raw', 0.4)):
            x = ratio(s, g(peer_key))
            goal(f'as shipped {x:.2f}x {configs[peer_key][1]} (>= {target}x'
                 f'{"; stretch 0.5x: " + ("met" if x >= 0.5 else "not met") if peer_key == "raw" else ""})', x >= target)
        x = ratio(g('noop'), s)
        goal(f'a no-op handler costs the same order as none: {x:.2f}x the handler-less req/s (>= 0.5x)', x >= 0.5)
    if 't100' in best and s:
        header('Tenants: one vs 100 receiving at once, as shipped')
        line('webhooks-serve, 1 tenant', s); line(configs['t100'][1], g('t100'))
        x = ratio(g('t100'), s)
        goal(f'100 tenants {x:.2f}x one tenant (>= 0.8x on SQLite)', x >= 0.8)
    if 'workers' in parts:
        header('--workers: processes sharing the port (and the tenant files), as shipped')
        line('webhooks-serve --workers 1, 1 tenant', s); line(configs['w2'][1], g('w2'))
        line('webhooks-serve --workers 1, 100 tenants', g('t100')); line(configs['w2_100'][1], g('w2_100'))
        x, r = ratio(g('w2'), s), g('w2')
        goal(f'--workers 2, 1 tenant: {x:.2f}x --workers 1 (>= 1.0x), p99 {r["p99_ms"] if r else float("nan"):.1f} ms '
             f'(<= 25 ms)', bool(r) and x >= 1.0 and r['p99_ms'] <= 25)
        x = ratio(g('w2_100'), g('t100'))
        goal(f'--workers 2, 100 tenants: {x:.2f}x --workers 1 (>= 1.3x)', x >= 1.3)
    print(f'\n(best of {a.rounds} round(s) per row; webhooks-serve logs in {tmp}/serve.log)  total {time.time()-t0:.0f} s')
    (tmp/'reqs.tsv').unlink(missing_ok=True)

if __name__ == '__main__': main()
