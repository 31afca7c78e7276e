"""SIGKILL `webhooks-serve` at random moments under load, 20 times in a row on the same root, then run it once more.

Every id answered 200 must be in the database right after each kill, and must end `completed` after the final run;
no handler may run to completion twice for one attempt (a handler run again after a kill is a new attempt).
The handler appends `<id> <attempt> <pid>` to a file when it finishes (one `write` on an O_APPEND descriptor)."""
import json, os, random, signal, threading, time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from helpers import Serve
from webhooks.signatures import sign
from webhooks.store import SqliteStore

SECRET = 'kill-test-secret-0123456789'
KILLS = int(os.environ.get('KILLS', 20))
SENDERS = 4

HANDLERS = '''
import os, time
from webhooks.worker import Handlers
handlers = Handlers()
LOG = {log!r}
@handlers.on('*')
def done(ev):
    time.sleep(0.002)  # a little work, so kills land while handlers run
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try: os.write(fd, f"{{ev.id}} {{ev.attempt}} {{os.getpid()}}\\n".encode())
    finally: os.close(fd)
'''

class Load:
    "Sender threads posting signed events to whichever server is up; ids answered 200 are `acked`."
    def __init__(self):
        self.url, self.acked, self.stop, self.lock = None, set(), threading.Event(), threading.Lock()
        self.sent = 0
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(SENDERS)]
    def start(self):
        for t in self.threads: t.start()
        return self
    def run(self, k:int):
        n = 0
        with httpx.Client(timeout=5) as c:
            while not self.stop.is_set():
                url = self.url
                if url is None: time.sleep(0.01); continue
                eid = f'evt-{k}-{n:06d}'; n += 1
                body = json.dumps({'id': eid, 'type': 'order.paid', 'n': n}).encode()
                try: r = c.post(url, content=body, headers={'Content-Type': 'application/json', **sign('generic', body, SECRET)})
                except httpx.HTTPError: time.sleep(0.005); continue
                with self.lock: self.sent += 1
                if r.status_code == 200 and r.json().get('id') == eid:
                    with self.lock: self.acked.add(eid)
    def close(self):
        self.stop.set()
        for t in self.threads: t.join(10)

def rows(root:Path)->dict:
    t = SqliteStore(root).open('shop')
    try: return {r['id']: r for r in t.db.q('SELECT id, status, attempts, lapses, error_message FROM webhook_events')}
    finally: t.close()

def test_repeated_sigkill_loses_nothing_and_completes_everything(tmp_path):
    seed = int(os.environ.get('KILL_SEED', random.randrange(10**6)))
    rnd = random.Random(seed)
    root, runs = tmp_path/'data', tmp_path/'runs.log'
    t = SqliteStore(root).open('shop', create=True); t.add_source('orders', 'generic', SECRET); t.close()
    hooks = tmp_path/'kill_hooks.py'; hooks.write_text(HANDLERS.format(log=str(runs)))
    load, t0 = Load().start(), time.monotonic()
    try:
        for k in range(KILLS):
            s = Serve('--root', root, '--handlers', hooks)
            load.url = f'{s.url}/webhooks/shop/orders'
            time.sleep(rnd.uniform(0.05, 1.2))  # a random moment: mid-request, mid-commit, mid-handler, mid-record
            s.p.send_signal(signal.SIGKILL); s.p.wait(10)
            load.url = None
            with load.lock: acked = set(load.acked)
            have = rows(root)
            lost = acked - set(have)
            assert not lost, f'kill {k + 1} (seed {seed}): {len(lost)} ids answered 200 are not in the database: {sorted(lost)[:5]}'
    finally: load.close()
    killed_at = time.monotonic() - t0
    assert len(load.acked) > 200, f'too little load to mean anything: {len(load.acked)} acknowledged'
    # the final run: the worker finishes what the kills interrupted
    with Serve('--root', root, '--handlers', hooks) as s:
        last, moved = None, time.monotonic()
        while time.monotonic() - moved < 10:  # while the worker makes progress (and at most 10 s without any)
            left = sum(r['status'] in ('pending', 'processing') for r in rows(root).values())
            if not left: break
            if left != last: last, moved = left, time.monotonic()
            time.sleep(0.2)
    have = rows(root)
    assert set(load.acked) <= set(have)
    unfinished = {i: (r['status'], r['attempts'], r['lapses']) for i, r in have.items() if i in load.acked and r['status'] != 'completed'}
    dead = {i: r['error_message'] for i, r in have.items() if i in load.acked and r['status'] == 'failed'}
    ends = Counter()
    for line in runs.read_text().splitlines():
        eid, attempt, pid = line.split()
        ends[(eid, int(attempt))] += 1
    completed_ids = {e for e, _ in ends}
    never_ran = {i for i in dead if i not in completed_ids}
    assert not unfinished, (f'seed {seed}: {len(unfinished)} of {len(load.acked)} acknowledged events did not end completed after '
                            f'{KILLS} kills and a final run: {list(unfinished.items())[:5]}; dead-lettered: {len(dead)}, of which '
                            f'{len(never_ran)} never ran their handler to the end (e.g. {sorted(never_ran)[:3]}: '
                            f'{dead.get(next(iter(sorted(never_ran)), None), "")!r}) — a kill counts an attempt for every event '
                            'claimed in the batch, started or not')
    twice = {k: n for k, n in ends.items() if n > 1}
    assert not twice, f'seed {seed}: handlers completed twice for one attempt: {list(twice.items())[:5]}'
    assert completed_ids >= set(load.acked), 'an acknowledged event completed without its handler finishing'
    print(f'seed {seed}: {KILLS} kills in {killed_at:.1f} s, {load.sent} sent, {len(load.acked)} acknowledged, '
          f'{sum(ends.values())} handler completions for {len(completed_ids)} events')
