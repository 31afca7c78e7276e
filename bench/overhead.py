"""What storing headers, recording refusals and logging a line per request cost at ingest: the receiver as it was before
those (commit fb65c01, checked out into /tmp/wh-before) against today's, in one run, alternating (before, now, before,
now) so the VM's drift shows. Run: `python bench/overhead.py [--seconds 8] [--before fb65c01]`
Each: one uvicorn worker, receiver only, wrk 1 thread × 32 connections, the same fresh pre-signed Moda deliveries
(../shared/bench/run.sh); today's logs one line per request to a file (BENCH_LOG=text), as `webhooks-serve` does.
A last row sends 1 forged delivery in 10 (refused, recorded with its diagnosis) to today's receiver."""
import argparse, os, subprocess, sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = (HERE/'..'/'..'/'shared'/'bench').resolve()
PY = sys.executable

def run(label, appdir, seconds, reqs, **env):
    e = {**os.environ, 'REQS': reqs, 'BENCH_WORKER': '0', **{k: str(v) for k, v in env.items()}}
    out = subprocess.run([f'{SHARED}/run.sh', label, PY, str(appdir), 'app:app', str(seconds)], env=e, capture_output=True, text=True).stdout
    line = next((l for l in out.splitlines() if 'rps=' in l), None)
    print(line or f'{label}: no result\n{out}', flush=True)
    return float(line.split('rps=')[1].split()[0]) if line else None

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=int, default=8); ap.add_argument('--before', default='fb65c01')
    a = ap.parse_args()
    old = Path('/tmp/wh-before')
    if not old.exists(): subprocess.run(['git', '-C', str(HERE.parent), 'worktree', 'add', '--detach', str(old), a.before], check=True)
    reqs = '/tmp/wh-overhead-reqs.tsv'
    res = {'before': [], 'now': []}
    for i in range(2):
        for label in ('before', 'now'):
            subprocess.run([PY, f'{SHARED}/gen_requests.py', '200000', reqs, 'whsec_bench', '400'], check=True)
            env = dict(PYTHONPATH=str(old)) if label == 'before' else dict(BENCH_LOG='text')
            res[label].append(run(f'{label} #{i+1}', old/'bench' if label == 'before' else HERE, a.seconds, reqs, **env))
    b, n = sum(res['before'])/2, sum(res['now'])/2
    print(f'mean req/s: before {b:.0f}, now {n:.0f}: now/before {n/b:.3f} (goal: within 10 %, >= 0.90)')
    # one delivery in ten forged: refused with 401, recorded off the request path
    subprocess.run([PY, f'{SHARED}/gen_requests.py', '200000', reqs, 'whsec_bench', '400'], check=True)
    lines = Path(reqs).read_text().splitlines()
    Path(reqs).write_text('\n'.join(l if i % 10 else l.replace('\t', '\t0', 1) for i, l in enumerate(lines)) + '\n')
    run('now, 10 % forged', HERE, a.seconds, reqs, BENCH_LOG='text')

if __name__ == '__main__': main()
