"Servers the tests run: an app in a thread (`Server`) and `webhooks-serve` as its own process (`Serve`), on free ports."
import os, signal, socket, subprocess, sys, threading, time
from pathlib import Path
import httpx, uvicorn

BIN = Path(sys.executable).parent  # the installed console scripts, as a user runs them

def stop_all(procs:list, grace:float=20):
    "SIGTERM every process still running, then wait for each to end (SIGKILL after `grace` seconds)."
    for p in procs:
        if p.poll() is None: p.send_signal(signal.SIGTERM)
    for p in procs:
        try: p.communicate(timeout=grace)
        except subprocess.TimeoutExpired: p.kill(); p.communicate()

def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

class Server:
    "Run `app` with uvicorn on 127.0.0.1 in a background thread (lifespan included)."
    def __init__(self, app):
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=self.port, log_level='warning'))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline: raise RuntimeError('uvicorn did not start')
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)

class Serve:
    "`webhooks-serve` in a subprocess, up once it has printed its banner and answers; its stderr is `err` after exit."
    def __init__(self, *args, cwd=None, env=None):
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.p = subprocess.Popen([str(BIN/'webhooks-serve'), '--port', str(self.port), *map(str, args)], cwd=cwd,
                                  env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, deadline = '', time.monotonic() + 30
        while 'Worker:' not in self.out:
            line = self.p.stdout.readline()
            if not line or time.monotonic() > deadline: raise AssertionError(f'webhooks-serve did not start: {self.out}{self.p.stderr.read()}')
            self.out += line
        while time.monotonic() < deadline:
            try: httpx.get(self.url + '/healthz', timeout=1); break
            except httpx.HTTPError: time.sleep(0.05)

    def __enter__(self): return self

    def __exit__(self, *a):
        self.p.send_signal(signal.SIGINT)
        try: self.err = self.p.communicate(timeout=20)[1]
        except subprocess.TimeoutExpired: self.p.kill(); self.err = self.p.communicate()[1]
        lines = self.err.splitlines()  # the only traceback allowed is a handler's, in the log line saying it failed
        for i, l in enumerate(lines):
            if l.startswith('Traceback'): assert i and 'webhooks.worker: handler for' in lines[i-1], self.err

def parse_response(buf:bytes)->tuple[int,dict,bytes]:
    "(status, lower-case headers, body) of a raw HTTP/1.1 answer: de-chunked, or cut to its Content-Length."
    head, _, body = buf.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    status = int(lines[0].split()[1])
    hd = {k.strip().lower(): v.strip() for k, _, v in (l.partition(':') for l in lines[1:])}
    if hd.get('transfer-encoding') == 'chunked':
        out, rest = b'', body
        while True:
            size, _, rest = rest.partition(b'\r\n'); n = int(size, 16)
            if not n: break
            out, rest = out + rest[:n], rest[n+2:]
        body = out
    elif 'content-length' in hd: body = body[:int(hd['content-length'])]
    return status, hd, body
