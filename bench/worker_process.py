"""Ingest of `webhooks-serve` with its worker in a process of its own (the default) beside the worker in the
receiver's process (`--worker-in-process`) and the receiver alone (`--no-worker`), in one run on one machine.

Run: `python bench/worker_process.py [--seconds 8] [--rounds 2]`
Needs wrk. Each server is `webhooks-serve` on 127.0.0.1 (one receiver process; its request log to /dev/null) with a
no-op handler for every event, loaded by wrk (1 thread, 32 connections) with fresh, pre-signed, distinct Moda-style
deliveries (../shared/bench/gen_requests.py and replay.lua, as bench/ingest.py uses them). The rounds alternate the
modes, so drift on a shared machine falls on all of them alike.

Prints req/s, p50, p99 and non-2xx per mode and round, and how many of the stored events the worker had handled when
the load stopped (a worker that keeps up handles nearly all of them while the receiver takes them).
"""
import argparse, os, re, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = (HERE/'..'/'..'/'shared'/'bench').resolve()
BIN = Path(sys.executable).parent
HOOKS = "from webhooks.worker import on\n@on('*')\ndef noop(ev): pass\n"
MODES = [('worker in its own process (default)', []), ('worker in process (--worker-in-process)', ['--worker-in-process']),
         ('receiver only (--no-worker)', ['--no-worker'])]

def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def site(folder:Path)->Path:
    "A fresh tenant `bench` with a Moda source (secret whsec_bench, as gen_requests.py signs), and the no-op handler."
    root = folder/'data'
    shutil.rmtree(folder, ignore_errors=True); folder.mkdir(parents=True)
    subprocess.run([BIN/'webhooks-source', 'bench', 'moda', '--scheme', 'moda', '--secret', 'whsec_bench', '--root', root],
                   check=True, capture_output=True)
    (folder/'bench_hooks.py').write_text(HOOKS)
    return root

def counts(root:Path)->tuple[int,int]:
    "(events stored, events the worker has handled) in tenant `bench`."
    from webhooks.store import SqliteStore
    t = SqliteStore(root).open('bench')
    try:
        rows = {r['status']: r['n'] for r in t.db.q('SELECT status, count(*) n FROM webhook_events GROUP BY status')}
    finally: t.close()
    return sum(rows.values()), rows.get('completed', 0)

def measure(folder:Path, flags:list, seconds:int, reqs:str)->dict:
    root, port = site(folder), free_port()
    p = subprocess.Popen([BIN/'webhooks-serve', '--root', root, '--port', str(port), '--no-dashboard',
                          '--handlers', folder/'bench_hooks.py', *flags], cwd=folder, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env={**os.environ, 'WEBHOOKS_ADMIN_TOKEN': 'b' * 32})
    try:
        while 'Worker:' not in p.stdout.readline(): pass
        for _ in range(200):
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=0.1): break
            except OSError: time.sleep(0.05)
        env = {**os.environ, 'REQS': reqs, 'NTHREADS': '1', 'WPATH': '/webhooks/bench/moda'}
        out = subprocess.run(['wrk', '-t1', '-c32', f'-d{seconds}s', '-s', str(SHARED/'replay.lua'),
                              f'http://127.0.0.1:{port}'], env=env, capture_output=True, text=True).stdout
        stored, handled = counts(root)
    finally:
        p.send_signal(signal.SIGINT); p.wait(60)
    line = next((l for l in out.splitlines() if l.startswith('RESULT')), '')
    r = {k: float(v) for k, v in re.findall(r'(\w+)=([\d.]+)', line)}
    return dict(r, stored=stored, handled=handled)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=int, default=8)
    ap.add_argument('--rounds', type=int, default=2)
    a = ap.parse_args()
    if not shutil.which('wrk'): sys.exit('wrk missing: apt-get install -y wrk')
    work = Path(tempfile.mkdtemp(prefix='wh-worker-process-'))
    try:
        reqs = str(work/'reqs.tsv')
        print(f'Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; wrk 1 thread, 32 connections, {a.seconds} s '
              'per run; ~470-byte bodies; a no-op handler for every event')
        print(f'\n{"webhooks-serve":42s} {"req/s":>8s} {"p50 ms":>8s} {"p99 ms":>8s} {"non2xx":>7s} '
              f'{"handled/stored at the end":>26s}')
        best = {}
        for rnd in range(a.rounds):
            for label, flags in MODES:
                subprocess.run([sys.executable, SHARED/'gen_requests.py', '200000', reqs, 'whsec_bench', '400'],
                               check=True)  # fresh: timestamps inside the 300 s window, ids never seen
                r = measure(work/'site', flags, a.seconds, reqs)
                if 'rps' not in r: print(f'{label:42s} (no result)'); continue
                best[label] = max(best.get(label, 0), r['rps'])
                drained = f"{r['handled']:,}/{r['stored']:,}" if '--no-worker' not in flags else '-'
                print(f"{label:42s} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {int(r['non2xx']):7d} "
                      f'{drained:>26s}')
        own, inproc = best.get(MODES[0][0]), best.get(MODES[1][0])
        if own and inproc: print(f'\nbest of {a.rounds}: worker in its own process / in process: {own/inproc:.2f}x')
    finally: shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__': main()
