"""Soak: `webhooks-serve` (receiver + worker, durable commits) under sustained load at half its measured maximum for
10 minutes, with `webhooks-prune` every minute. Prints the server's RSS at the start and end (goal: growth < 50 MiB)
and each minute's throughput and p99 (goal: last minute's p99 <= 1.5x the first's).

Run: `python bench/soak.py [--minutes 10] [--connections 32]` (needs wrk: `apt-get install wrk`). Each minute replays
fresh pre-signed Moda deliveries (../shared/bench/gen_requests.py: new ids, a current timestamp) through wrk, one thread,
each connection pacing itself (wrk's `delay()`) so the offered rate is half the maximum measured first. A no-op handler
runs every event, so the worker drains as the receiver fills; the prune drops bodies of events completed more than a
minute ago and the keys past the dedupe window.
"""
import argparse, os, re, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = (HERE/'..'/'..'/'shared'/'bench').resolve()
BIN = Path(sys.executable).parent

LUA = r'''
-- replay.lua's pre-signed deliveries, each connection waiting DELAY_MS between requests
local counter = 0
function setup(thread) thread:set("tid", counter); counter = counter + 1 end
function init(args)
  reqs = {}
  for line in io.lines(os.getenv("REQS")) do
    local ts, sig, eid, body = line:match("([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)")
    reqs[#reqs + 1] = wrk.format("POST", os.getenv("WPATH"), {["Content-Type"] = "application/json",
      ["X-Webhook-Timestamp"] = ts, ["X-Webhook-Signature"] = "v1=" .. sig, ["X-Idempotency-Key"] = eid}, body)
  end
  idx = 0
end
function request() idx = idx + 1; if idx > #reqs then idx = 1 end; return reqs[idx] end
function delay() return tonumber(os.getenv("DELAY_MS") or "0") end
function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f non2xx=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
'''

HANDLERS = '''from webhooks.worker import on
@on('*')
def noop(ev): pass
'''

def rss_mib(pid:int)->float:
    "Resident set size of `pid` and its children (the server is one process), in MiB."
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024
    return float('nan')

def wrk(url:str, reqs:Path, lua:Path, seconds:int, conns:int, delay_ms:float)->dict:
    env = {**os.environ, 'REQS': str(reqs), 'WPATH': '/webhooks/bench/moda', 'DELAY_MS': f'{delay_ms:.1f}'}
    out = subprocess.run(['wrk', '-t1', f'-c{conns}', f'-d{seconds}s', '-s', str(lua), url], env=env,
                         capture_output=True, text=True).stdout
    m = re.search(r'RESULT rps=(\S+) p50_ms=(\S+) p99_ms=(\S+) non2xx=(\d+) errors=(\d+)', out)
    if not m: raise SystemExit(f'wrk gave no result:\n{out}')
    return dict(rps=float(m[1]), p50=float(m[2]), p99=float(m[3]), non2xx=int(m[4]), errors=int(m[5]))

def fresh(reqs:Path, n:int):
    subprocess.run([sys.executable, str(SHARED/'gen_requests.py'), str(n), str(reqs), 'whsec_bench', '400'], check=True)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--minutes', type=int, default=10); ap.add_argument('--connections', type=int, default=32)
    ap.add_argument('--port', type=int, default=8799)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='wh-soak-'))
    root, lua, reqs = tmp/'data', tmp/'soak.lua', tmp/'reqs.tsv'
    lua.write_text(LUA); (tmp/'soak_handlers.py').write_text(HANDLERS)
    subprocess.run([str(BIN/'webhooks-source'), 'bench', 'moda', '--scheme', 'moda', '--secret', 'whsec_bench', '--root', str(root)],
                   check=True, capture_output=True)
    log = open(tmp/'serve.log', 'w')
    srv = subprocess.Popen([str(BIN/'webhooks-serve'), '--root', str(root), '--port', str(a.port), '--handlers', 'soak_handlers',
                            '--no-dashboard'], cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, 'WEBHOOKS_ADMIN_TOKEN': 'adm_soak_0123456789'})
    url = f'http://127.0.0.1:{a.port}'
    try:
        for _ in range(100):
            if subprocess.run(['curl', '-s', '-o', '/dev/null', url + '/healthz']).returncode == 0: break
            time.sleep(0.1)
        fresh(reqs, 100_000)
        peak = wrk(url, reqs, lua, 10, a.connections, 0)
        target = peak['rps'] / 2
        delay = a.connections * 1000 / target  # each connection's pause; the answer's own time slows it a little more
        print(f'maximum: {peak["rps"]:.0f} req/s (p99 {peak["p99"]:.1f} ms); soaking at ~{target:.0f} req/s '
              f'({a.connections} connections, {delay:.1f} ms apart) for {a.minutes} min, prune every minute', flush=True)
        rss0 = rss_mib(srv.pid)
        print(f'RSS at start: {rss0:.1f} MiB\n{"minute":>6} {"req/s":>7} {"p50 ms":>7} {"p99 ms":>7} {"non2xx":>6} {"RSS MiB":>8} {"prune s":>7}', flush=True)
        rows = []
        for minute in range(1, a.minutes + 1):
            fresh(reqs, int(target * 70))
            r = wrk(url, reqs, lua, 60, a.connections, delay)
            t0 = time.perf_counter()
            subprocess.run([str(BIN/'webhooks-prune'), '--root', str(root), '--days', str(60 / 86400)], check=True, capture_output=True)
            pr = time.perf_counter() - t0
            r['rss'] = rss_mib(srv.pid); rows.append(r)
            print(f'{minute:>6} {r["rps"]:>7.0f} {r["p50"]:>7.2f} {r["p99"]:>7.2f} {r["non2xx"]:>6} {r["rss"]:>8.1f} {pr:>7.2f}', flush=True)
        growth, ratio = rows[-1]['rss'] - rss0, rows[-1]['p99'] / rows[0]['p99']
        print(f'RSS: {rss0:.1f} -> {rows[-1]["rss"]:.1f} MiB, growth {growth:+.1f} MiB (goal < 50: {"ok" if growth < 50 else "OVER"})')
        print(f'p99: first minute {rows[0]["p99"]:.2f} ms, last {rows[-1]["p99"]:.2f} ms, ratio {ratio:.2f} (goal <= 1.5: {"ok" if ratio <= 1.5 else "OVER"})')
        print(f'non-2xx answers in all: {sum(r["non2xx"] for r in rows)}, socket errors: {sum(r["errors"] for r in rows)}')
    finally:
        srv.terminate()
        try: srv.wait(30)
        except subprocess.TimeoutExpired: srv.kill()

if __name__ == '__main__': main()
