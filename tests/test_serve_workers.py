"""`webhooks-serve --workers N`: N processes on one port, sharing the tenant files.

Concurrent signed deliveries (and the same deliveries again, racing) over fresh connections: every delivery answered
200 is stored exactly once, the duplicates are answered as such, and both processes served requests (seen from the
kernel's side: which process holds each accepted connection, from /proc). The worker runs in one process and is woken
by deliveries any process received. A child killed with SIGKILL is started again and the log says so; SIGINT stops
everything cleanly; a parent killed with SIGKILL leaves no child serving the port."""
import json, os, re, signal, socket, subprocess, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from helpers import BIN, Serve, free_port
from webhooks.signatures import sign
from webhooks.store import SqliteStore

SECRET = 'workers-secret-0123456789'
HANDLERS = '''
import os
from webhooks.worker import on
LOG = {log!r}
@on('*')
def done(ev):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try: os.write(fd, f"{{ev.id}} {{os.getpid()}}\\n".encode())
    finally: os.close(fd)
'''

pytestmark = pytest.mark.skipif(not Path('/proc/self/task').exists(), reason='reads /proc (Linux)')

@pytest.fixture
def site(tmp_path):
    root = tmp_path/'data'
    t = SqliteStore(root).open('acme', create=True); t.add_source('gen', 'generic', SECRET); t.close()
    (tmp_path/'pid_hooks.py').write_text(HANDLERS.format(log=str(tmp_path/'handled.log')))
    return tmp_path

def delivery(eid:str)->tuple[bytes,dict]:
    body = json.dumps({'id': eid, 'type': 'order.paid', 'amount': 4900}).encode()
    return body, {'Content-Type': 'application/json', **sign('generic', body, SECRET)}

def children(pid:int)->list[int]:
    return [int(x) for x in Path(f'/proc/{pid}/task/{pid}/children').read_text().split()]

def stored(root:Path)->list[str]:
    t = SqliteStore(root).open('acme')
    try: return [r['id'] for r in t.db.q('SELECT id FROM webhook_events')]
    finally: t.close()

def server_pids(port:int, client_ports:set, pids:list[int])->dict:
    "client port -> pid of the server process holding the accepted end of that connection."
    owner = {}
    for pid in pids:
        for fd in os.listdir(f'/proc/{pid}/fd'):
            try: link = os.readlink(f'/proc/{pid}/fd/{fd}')
            except OSError: continue
            if m := re.fullmatch(r'socket:\[(\d+)\]', link): owner[int(m[1])] = pid
    found = {}
    for line in Path('/proc/net/tcp').read_text().splitlines()[1:]:
        f = line.split()
        local, remote, inode = int(f[1].split(':')[1], 16), int(f[2].split(':')[1], 16), int(f[9])
        if local == port and remote in client_ports and inode in owner: found[remote] = owner[inode]
    return found

def keep_alive_delivery(port:int, eid:str)->socket.socket:
    "A delivery on a raw keep-alive connection, answered 200; the connection is left open."
    body, h = delivery(eid)
    c = socket.create_connection(('127.0.0.1', port))
    head = ''.join(f'{k}: {v}\r\n' for k, v in h.items())
    c.sendall(f'POST /webhooks/acme/gen HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: {len(body)}\r\n\r\n'.encode() + body)
    got = b''
    while b'\r\n\r\n' not in got or not got.rstrip().endswith(b'}'): got += c.recv(4096)
    assert got.startswith(b'HTTP/1.1 200'), got
    return c

def test_two_processes_store_every_delivery_once(site):
    root = site/'data'
    with Serve('--root', root, '--workers', 2, '--handlers', 'pid_hooks', '--log-format', 'json', cwd=site) as s:
        assert 'Processes: 2, sharing the port and the tenant files' in s.out and 'Worker: running in a process of its own' in s.out
        kids = sorted(children(s.p.pid))
        assert len(kids) == 3, kids  # two receivers, then the worker's process
        receivers, worker_pid = kids[:2], kids[2]
        assert os.listdir(f'/proc/{s.p.pid}/task') == [str(s.p.pid)]  # the parent forks with no thread but its own
        ids = [f'evt_w{i:04d}' for i in range(300)]
        def post(eid):  # a fresh connection each: the kernel picks a process for each
            body, h = delivery(eid)
            r = httpx.post(f'{s.url}/webhooks/acme/gen', content=body, headers=h, timeout=30)
            return eid, r.status_code, r.json()
        with ThreadPoolExecutor(16) as ex: answers = list(ex.map(post, ids + ids[:100]))  # the first 100 twice, racing
        assert {st for _, st, _ in answers} == {200}, [a for a in answers if a[1] != 200][:5]
        dup = {}
        for eid, _, j in answers: dup.setdefault(eid, []).append(j['duplicate'])
        for eid, v in dup.items(): assert sorted(v) == ([False, True] if int(eid[5:]) < 100 else [False]), (eid, v)
        conns, by = [], {}
        try:
            while set(by.values()) != set(receivers) and len(conns) < 96:  # the kernel's choice: usually both within a few
                conns += [keep_alive_delivery(s.port, f'evt_ka{len(conns) + i:02d}') for i in range(8)]
                by = server_pids(s.port, {c.getsockname()[1] for c in conns}, receivers)
                assert len(by) == len(conns), (by, len(conns))  # each connection held by one of the two
            assert set(by.values()) == set(receivers), f'{len(conns)} connections, all served by one process: {by}'
        finally:
            for c in conns: c.close()
        want = set(ids) | {f'evt_ka{i:02d}' for i in range(len(conns))}
        assert sorted(stored(root)) == sorted(want)  # each once
        deadline = time.monotonic() + 20
        while len((site/'handled.log').read_text().splitlines() if (site/'handled.log').exists() else []) < len(want):
            assert time.monotonic() < deadline, 'the worker did not process every event'
            time.sleep(0.1)
    handled = [l.split() for l in (site/'handled.log').read_text().splitlines()]
    assert sorted(eid for eid, _ in handled) == sorted(want)        # each handled once
    assert {int(pid) for _, pid in handled} == {worker_pid}         # by the one worker, in its own process
    assert s.p.returncode == 0 and not any(Path(f'/proc/{k}').exists() for k in kids)
    log = [json.loads(l) for l in s.err.splitlines()]  # both processes wrote to one pipe: still a JSON object a line
    answered = [l for l in log if l.get('tenant') == 'acme' and l.get('status') == 200]
    assert len(answered) == len(answers) + len(conns), (len(answered), len(answers) + len(conns))

def test_two_processes_on_postgresql(pg_url, tmp_path):
    from test_cli import run
    keys = tmp_path/'keys'
    assert run('webhooks-source', 'acme', 'gen', '--scheme', 'generic', '--secret', SECRET, '--db', pg_url, '--root', keys).returncode == 0
    with Serve('--db', pg_url, '--root', keys, '--workers', 2, '--no-worker') as s:
        assert os.listdir(f'/proc/{s.p.pid}/task') == [str(s.p.pid)]  # the parent forks with no thread but its own
        ids = [f'evt_pg{i:03d}' for i in range(120)]
        def post(eid):
            body, h = delivery(eid)
            return httpx.post(f'{s.url}/webhooks/acme/gen', content=body, headers=h, timeout=30).status_code
        with ThreadPoolExecutor(12) as ex: assert set(ex.map(post, ids + ids[:40])) == {200}
    got = run('webhooks-events', 'acme', '--json', '--limit', 1000, '--db', pg_url, '--root', keys).stdout
    assert sorted(json.loads(l)['id'] for l in got.splitlines()) == sorted(ids)
    assert s.p.returncode == 0

def test_the_worker_is_woken_by_every_process(site):
    "A delivery to the process without the worker is handled at once, not at the worker's next poll (2 s)."
    with Serve('--root', site/'data', '--workers', 2, '--handlers', 'pid_hooks', cwd=site) as s:
        log = site/'handled.log'
        for i in range(8):  # fresh connections: some reach process 1
            body, h = delivery(f'evt_wake{i}')
            assert httpx.post(f'{s.url}/webhooks/acme/gen', content=body, headers=h).status_code == 200
            t0 = time.monotonic()
            while f'evt_wake{i} ' not in (log.read_text() if log.exists() else ''):
                assert time.monotonic() - t0 < 1.5, f'evt_wake{i} waited for the poll'
                time.sleep(0.01)

def test_a_child_that_dies_is_restarted(site):
    with Serve('--root', site/'data', '--workers', 2, cwd=site) as s:
        kids = children(s.p.pid)
        os.kill(kids[1], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (now := children(s.p.pid)) == kids or len(now) < 3:  # two receivers and the worker's process
            assert time.monotonic() < deadline, now
            time.sleep(0.1)
        assert kids[0] in now and kids[1] not in now
        for i in range(20):  # every delivery still answered, whichever process takes it
            body, h = delivery(f'evt_after{i}')
            assert httpx.post(f'{s.url}/webhooks/acme/gen', content=body, headers=h).status_code == 200
    assert f'process 1 (pid {kids[1]}) was killed by SIGKILL; starting it again' in s.err, s.err
    assert re.search(r'process 1 started \(pid \d+\)', s.err.split('starting it again', 1)[1])
    assert s.p.returncode == 0

@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_stop_every_process(site, sig):
    port = free_port()
    p = subprocess.Popen([str(BIN/'webhooks-serve'), '--root', str(site/'data'), '--port', str(port), '--workers', '2'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _until(p, 'Worker:')
        deadline = time.monotonic() + 20
        while len(children(p.pid)) < 2 or not _answers(port): assert time.monotonic() < deadline; time.sleep(0.05)
        kids = children(p.pid)
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 0 and 'Traceback' not in err, err
    assert not any(Path(f'/proc/{k}').exists() for k in kids)
    assert 'starting it again' not in err  # children stopped on purpose are not restarted

def test_a_killed_parent_leaves_no_child_serving(site):
    port = free_port()
    p = subprocess.Popen([str(BIN/'webhooks-serve'), '--root', str(site/'data'), '--port', str(port), '--workers', '2'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while len(children(p.pid)) < 2 or not _answers(port): assert time.monotonic() < deadline; time.sleep(0.05)
    kids = children(p.pid)
    p.kill(); p.wait()
    deadline = time.monotonic() + 20
    while any(Path(f'/proc/{k}').exists() and 'Z' not in _state(k) for k in kids):
        assert time.monotonic() < deadline, 'a child outlived its parent'
        time.sleep(0.1)
    assert not _answers(port)

def test_workers_flag_mistakes(site):
    from test_cli import refused, run
    refused(run('webhooks-serve', '--root', site/'data', '--workers', 0), '--workers must be at least 1')

def _until(p, word:str)->str:
    out = ''
    while word not in out:
        line = p.stdout.readline()
        if not line: raise AssertionError(out + p.stderr.read())
        out += line
    return out

def _answers(port:int)->bool:
    try: return httpx.get(f'http://127.0.0.1:{port}/healthz', timeout=1).status_code == 200
    except httpx.HTTPError: return False

def _state(pid:int)->str:
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError: return 'Z'
