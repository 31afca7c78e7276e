"""Slow clients over raw sockets against `webhooks-serve --header-timeout 1`: connections whose request headers stop
coming (half a request line, all but the blank line, a keep-alive connection idle after its answer, or one that starts
a second request and stalls) are closed within about the timeout, while deliveries on other connections get 200; a
few hundred such connections hold no descriptors once their time is up; a body that stalls is answered 408 after
`--read-timeout`."""
import inspect, json, os, socket, time
from pathlib import Path

import httpx
import pytest

from helpers import Serve
from webhooks.signatures import sign
from webhooks.store import SqliteStore

SECRET = 'slow-secret-0123456789'
BOUND = 2.5  # seconds: --header-timeout 1, plus scheduling slack on a shared machine

@pytest.fixture(scope='module')
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp('slow')/'data'
    t = SqliteStore(r).open('acme', create=True); t.add_source('gen', 'generic', SECRET); t.close()
    return r

@pytest.fixture(scope='module', params=[1, 2], ids=['one-process', 'two-processes'])
def server(root, request):
    with Serve('--root', root, '--header-timeout', 1, '--read-timeout', 1, '--workers', request.param, '--no-worker') as s: yield s

def delivery(eid:str)->tuple[bytes,dict]:
    body = json.dumps({'id': eid, 'type': 'order.paid'}).encode()
    return body, {'Content-Type': 'application/json', **sign('generic', body, SECRET)}

def raw(eid:str, keep_alive=True)->bytes:
    body, h = delivery(eid)
    head = ''.join(f'{k}: {v}\r\n' for k, v in h.items()) + ('' if keep_alive else 'Connection: close\r\n')
    return f'POST /webhooks/acme/gen HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: {len(body)}\r\n\r\n'.encode() + body

def closed_within(c:socket.socket, limit:float)->tuple[float,bytes]:
    "(seconds until the server closed `c`, what it sent meanwhile); fails if still open after `limit`."
    c.settimeout(limit); got, t0 = b'', time.monotonic()
    try:
        while (chunk := c.recv(4096)): got += chunk
    except socket.timeout: raise AssertionError(f'still open after {limit} s; got {got[:200]!r}') from None
    except ConnectionResetError: pass
    return time.monotonic() - t0, got

def good(s, eid:str):
    body, h = delivery(eid)
    r = httpx.post(f'{s.url}/webhooks/acme/gen', content=body, headers=h, timeout=5)
    assert (r.status_code, r.json()['id']) == (200, eid), r.text

STALLS = {'half-request-line': b'POST /webhooks/acme/g',
          'headers-without-the-blank-line': raw('evt_never').split(b'\r\n\r\n')[0] + b'\r\n',
          'nothing-at-all': b''}

@pytest.mark.parametrize('stall', list(STALLS))
def test_stalled_headers_are_closed(server, stall):
    with socket.create_connection(('127.0.0.1', server.port)) as c:
        c.sendall(STALLS[stall])
        t0 = time.monotonic()
        good(server, f'evt_meanwhile_{stall}_{os.getpid()}')  # another connection is served meanwhile
        assert time.monotonic() - t0 < 0.9, 'a delivery waited behind a stalled connection'
        took, got = closed_within(c, BOUND)
    assert got == b'' and 0.5 < took < BOUND, (took, got)

def test_trickling_bytes_do_not_reset_the_clock(server):
    "A byte every 0.3 s keeps no connection open past the timeout: the clock bounds the whole header, not the gaps."
    data = raw('evt_trickle')
    with socket.create_connection(('127.0.0.1', server.port)) as c:
        t0 = time.monotonic()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for b in data[:40]:
                c.sendall(bytes([b])); time.sleep(0.3)
                if time.monotonic() - t0 > BOUND: break
        took = time.monotonic() - t0
    assert took < BOUND, took

def test_keep_alive_connection_idle_after_its_answer_is_closed(server):
    with socket.create_connection(('127.0.0.1', server.port)) as c:
        c.sendall(raw('evt_ka_idle'))
        c.settimeout(5); got = b''
        while b'"duplicate"' not in got: got += c.recv(4096)
        assert got.startswith(b'HTTP/1.1 200'), got
        took, rest = closed_within(c, BOUND)  # uvicorn's own keep-alive timeout is 5 s: this is the header clock
    assert rest == b'' and took < BOUND

def test_keep_alive_second_request_that_stalls_is_closed(server):
    with socket.create_connection(('127.0.0.1', server.port)) as c:
        c.sendall(raw('evt_ka_first'))
        c.settimeout(5); got = b''
        while b'"duplicate"' not in got: got += c.recv(4096)
        c.sendall(b'POST /webhooks/acme/gen HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty')
        took, rest = closed_within(c, BOUND)
    assert rest == b'' and took < BOUND

def test_a_normal_keep_alive_client_is_not_cut_off(server):
    "Requests that arrive whole, one after another on one connection, are all answered."
    with httpx.Client(base_url=server.url, timeout=5) as cl:
        for i in range(5):
            body, h = delivery(f'evt_ka_many_{i}')
            assert cl.post('/webhooks/acme/gen', content=body, headers=h).status_code == 200
            time.sleep(0.3)

def open_fds(pids)->int: return sum(len(os.listdir(f'/proc/{p}/fd')) for p in pids)

@pytest.mark.skipif(not Path('/proc/self/fd').exists(), reason='reads /proc (Linux)')
def test_hundreds_of_slow_connections_are_let_go(server):
    pids = [server.p.pid] + [int(x) for x in Path(f'/proc/{server.p.pid}/task/{server.p.pid}/children').read_text().split()]
    before = open_fds(pids)
    conns = []
    for _ in range(300):
        c = socket.create_connection(('127.0.0.1', server.port)); c.sendall(b'POST /webhooks/acme/gen HTTP/1.1\r\nHost: x\r\n'); conns.append(c)
    time.sleep(0.3)
    assert open_fds(pids) >= before + 250  # they are held now...
    good(server, f'evt_amid_slow_{os.getpid()}')
    deadline = time.monotonic() + 3 * BOUND
    while open_fds(pids) > before + 5:
        assert time.monotonic() < deadline, f'{open_fds(pids) - before} descriptors still held'
        time.sleep(0.1)
    for c in conns: c.close()                      # ...and let go once their time is up

def test_a_stalled_body_is_answered_408(server):
    import webhooks.routes
    if 'read_timeout' not in inspect.getsource(webhooks.routes): pytest.skip('the receiver has no read_timeout yet')
    data = raw('evt_stalled_body', keep_alive=False)
    with socket.create_connection(('127.0.0.1', server.port)) as c:
        c.sendall(data[:-10])  # all but the last 10 bytes of the body
        took, got = closed_within(c, BOUND + 1)
    assert got.startswith(b'HTTP/1.1 408'), got
    assert 0.5 < took < BOUND + 1
