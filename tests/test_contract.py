"""The contract table: every class of bad request and the answer it gets, over real HTTP, one test per row.

Every request goes out over a raw socket, exactly as written in the table (lying `Content-Length`, NUL bytes,
repeated headers, WebDAV verbs, stalled bodies: things httpx would normalise or refuse to send). For every row:
the answer is one of the row's expected (status, error code) pairs, never a 5xx, arrives within a bound, is JSON
`{"ok": false, "error": code, "message": …}` (no HTML, no traceback), and afterwards a good signed delivery still
gets 200 and is stored. Rows about names also check that no file appeared outside the root.

Rows marked `layer='http'` are refused by uvicorn's HTTP parser before the app sees them: their answer is uvicorn's
own `400 text/plain "Invalid HTTP request received."` and the connection is closed; for them only "4xx, closed, fast,
server still up" is asserted.

Two properties follow the table: one bad event in a group-commit round never fails its neighbours, and a stored
body the worker cannot parse never stalls the tenant's queue."""
import asyncio, gzip, json, os, re, secrets, socket, threading, time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from helpers import Server, parse_response as parse
from webhooks.cli import serve_app
from webhooks.routes import MAX_BODY
from webhooks.signatures import sign
from webhooks.store import NewEvent, SqliteStore, tenant_db

GENERIC = 'generic-secret-0123456789'
MODA = 'moda-secret-0123456789'
STRIPE = 'stripe-secret-0123456789'
TINY = 1000  # the `tiny` source's body limit
BOUND = 5.0  # seconds any row may take to be answered (stalling rows: STALL_BOUND)

# ---------------------------------------------------------------- raw requests

def event(eid=None, etype='test.event', **extra)->bytes:
    return json.dumps({'id': eid or 'evt_' + secrets.token_hex(8), 'type': etype, **extra}, separators=(',', ':')).encode()

def enc(v)->bytes: return v if isinstance(v, bytes) else str(v).encode('latin-1')

def req(path:str='/webhooks/acme/gen',   # request target, sent as is
        headers=(),                      # (name, value) pairs, repeats allowed; values str (latin-1) or raw bytes
        body:bytes=b'',                  # body bytes actually sent
        method:str='POST',
        cl:int|str|None|bool=True,       # True: the real length; None/False: no Content-Length; else that value
        close:bool=True,                 # Connection: close
        host:bool=True)->bytes:
    "One raw HTTP/1.1 request."
    p = path if isinstance(path, bytes) else path.encode('latin-1')
    out = [enc(method) + b' ' + p + b' HTTP/1.1']
    if host: out.append(b'Host: 127.0.0.1')
    for k, v in headers: out.append(enc(k) + b': ' + enc(v))
    if cl is True: out.append(b'Content-Length: %d' % len(body))
    elif cl not in (None, False): out.append(b'Content-Length: ' + enc(cl))
    if close: out.append(b'Connection: close')
    return b'\r\n'.join(out) + b'\r\n\r\n' + body

def signed(scheme:str, body:bytes, secret:str, ctype='application/json', **kw)->list:
    return ([('Content-Type', ctype)] if ctype else []) + list(sign(scheme, body, secret, **kw).items())

def good(path='/webhooks/acme/gen', scheme='generic', secret=GENERIC, body=None, ctype='application/json', **kw)->bytes:
    body = event() if body is None else body
    return req(path, signed(scheme, body, secret, ctype, **kw), body)

def replace(pairs:list, name:str, value)->list:
    "`pairs` with header `name`'s value replaced (None: removed)."
    out = [(k, v) for k, v in pairs if k.lower() != name.lower()]
    return out if value is None else out + [(name, value)]

def with_sig(scheme='generic', secret=GENERIC, sig=None, ts=None, body=None, extra=(), path=None, **kw)->bytes:
    "A delivery signed properly, then with its signature header (`sig`) and/or timestamp header (`ts`) replaced."
    body = event() if body is None else body
    h = signed(scheme, body, secret, **kw)
    from webhooks.signatures import presets
    s = presets[scheme]
    if sig is not None: h = replace(h, s.header, None if sig is False else sig)
    if ts is not None: h = replace(h, s.ts_header, None if ts is False else ts)
    return req(path or f'/webhooks/acme/{dict(generic="gen", moda="moda", stripe="stripe")[scheme]}', h + list(extra), body)

class Answer:
    def __init__(self, status:int|None, headers:dict, body:bytes, elapsed:float, closed:bool):
        self.status, self.headers, self.body, self.elapsed, self.closed = status, headers, body, elapsed, closed
    def __repr__(self): return f'Answer({self.status}, {self.headers.get("content-type")}, {self.body[:300]!r}, {self.elapsed:.2f}s)'

def send(port:int, data:bytes, timeout:float=BOUND, shut:bool=False)->Answer:
    "Send `data`, read until the server closes (or `timeout`): the first answer, if any."
    t0 = time.monotonic()
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
        try: s.sendall(data)
        except OSError: pass  # the server may answer and close before it read everything (413 on Content-Length)
        if shut: s.shutdown(socket.SHUT_WR)
        buf, closed = b'', False
        s.settimeout(0.2)
        while time.monotonic() - t0 < timeout:
            try: chunk = s.recv(65536)
            except socket.timeout: continue
            except ConnectionResetError: closed = True; break
            if not chunk: closed = True; break
            buf += chunk
    el = time.monotonic() - t0
    if not buf: return Answer(None, {}, b'', el, closed)
    return Answer(*parse(buf), el, closed)

# ---------------------------------------------------------------- the table

@dataclass
class Row:
    name:str                       # test id
    build:Callable[[], bytes]      # the raw request (built at run time: fresh ids and timestamps)
    expect:tuple                   # acceptable answers: (status, error code) pairs, code None for a 2xx
    layer:str = 'app'              # 'http': refused by the HTTP parser before the app (uvicorn's text/plain 400)
    stall:bool = False             # the client stops sending: the answer is due after the read timeout (or a close)
    names:bool = False             # check that no file appeared outside the root (or in the working directory)
    bug:str = ''                   # what is wrong today, shown when the row fails (see /tmp/helperB/report.md)

OK = ((200, None),)
R = []

# -- tenant and source names (the path) --------------------------------------------------------------
NOTEN = ((404, 'invalid_tenant'), (404, 'unknown_tenant'))
NOSRC = ((404, 'unknown_source'),)
for name, path in [('tenant-dotdot', '/webhooks/../gen'), ('tenant-dotdot-escape', '/webhooks/../../escape/gen'),
                   ('tenant-pct-2e2e', '/webhooks/%2e%2e/gen'), ('tenant-pct-2E2E-slash', '/webhooks/%2E%2E%2F%2E%2E%2Fescape/gen'),
                   ('tenant-backslash', '/webhooks/..%5cescape/gen'), ('tenant-pct-nul', '/webhooks/acme%00/gen'),
                   ('tenant-pct-unicode', '/webhooks/caf%C3%A9/gen'), ('tenant-pct-surrogate', '/webhooks/%ED%A0%80/gen'),
                   ('tenant-pct-ff', '/webhooks/%FF/gen'), ('tenant-10kb', '/webhooks/' + 'a'*10240 + '/gen'),
                   ('tenant-65', '/webhooks/' + 'a'*65 + '/gen'), ('tenant-empty', '/webhooks//gen'),
                   ('tenant-dot-db', '/webhooks/acme.db/gen'), ('tenant-abs', '/webhooks/%2Ftmp%2Fescape/gen')]:
    R.append(Row(name, lambda p=path: good(p), NOTEN, names=True))
for name, path in [('source-dotdot', '/webhooks/acme/..'), ('source-pct-2e2e', '/webhooks/acme/%2e%2e'),
                   ('source-pct-nul', '/webhooks/acme/gen%00'), ('source-pct-unicode', '/webhooks/acme/g%C3%A9n'),
                   ('source-pct-surrogate', '/webhooks/acme/%ED%A0%80'), ('source-10kb', '/webhooks/acme/' + 'g'*10240),
                   ('source-pct-slash', '/webhooks/acme/gen%2F..%2F..')]:  # %2F is decoded before routing: no route, 404
    R.append(Row(name, lambda p=path: good(p), NOSRC + ((404, 'unknown_tenant'),), names=True))
R.append(Row('path-extra-segment', lambda: good('/webhooks/acme/gen/..'), ((404, 'unknown_tenant'),), names=True))
R.append(Row('tenant-raw-nul', lambda: good(b'/webhooks/ac\x00me/gen'), ((400, None),), layer='http', names=True))
R.append(Row('tenant-raw-utf8', lambda: good('/webhooks/café/gen'.encode()), ((400, None),), layer='http', names=True))
R.append(Row('source-raw-nul', lambda: good(b'/webhooks/acme/g\x00en'), ((400, None),), layer='http', names=True))

# -- signature headers -----------------------------------------------------------------------------
MISSING, MALFORMED, MISMATCH = ((400, 'missing_header'),), ((400, 'malformed_signature'),), ((401, 'invalid_signature'),)
R += [
    Row('sig-missing', lambda: with_sig(sig=False), MISSING),
    Row('sig-empty', lambda: with_sig(sig=''), MALFORMED + MISSING),
    Row('sig-repeated-bad-first', lambda: (lambda b: req('/webhooks/acme/gen', [('Content-Type', 'application/json'),
        ('X-Webhook-Signature', 'sha256=' + '0'*64), *sign('generic', b, GENERIC).items()], b))(event()), MISMATCH),
    Row('sig-repeated-malformed-first', lambda: (lambda b: req('/webhooks/acme/gen', [('Content-Type', 'application/json'),
        ('X-Webhook-Signature', 'nonsense'), *sign('generic', b, GENERIC).items()], b))(event()), MALFORMED + MISMATCH),
    Row('sig-100kb', lambda: with_sig(sig='sha256=' + 'a'*100_000), MALFORMED),
    Row('sig-100kb-entries', lambda: with_sig('stripe', STRIPE, sig='t=1,' + ','.join(['v1=' + 'a'*64]*3000)), MALFORMED),
    Row('sig-non-ascii-latin1', lambda: with_sig(sig='sha256=' + 'é'*64), MALFORMED),
    Row('sig-non-ascii-utf8-bytes', lambda: with_sig(sig=('sha256=' + '☃'*22).encode()), MALFORMED),
    Row('sig-not-hex', lambda: with_sig(sig='sha256=' + 'zz'*32), MALFORMED),
    Row('sig-short', lambda: with_sig(sig='sha256=' + 'ab'*31), MALFORMED),
    Row('sig-wrong-prefix', lambda: with_sig(sig='md5=' + 'ab'*32), MALFORMED),
    Row('sig-wrong-secret', lambda: with_sig(secret=GENERIC + 'x'), MISMATCH),
    Row('sig-nul-byte', lambda: with_sig(sig=b'sha256=\x00' + b'a'*63), ((400, None),), layer='http'),
    Row('sig-stripe-no-v1', lambda: with_sig('stripe', STRIPE, sig=f't={int(time.time())}'), MALFORMED),
    Row('sig-stripe-garbage', lambda: with_sig('stripe', STRIPE, sig=',,,=,t=,v1=,'), MALFORMED + MISSING),
]

# -- timestamps (moda: a header; stripe: an entry in the signature header) ------------------------
def stripe_ts(ts:str)->bytes:
    body = event(); h = sign('stripe', body, STRIPE)
    v1 = h['Stripe-Signature'].split(',', 1)[1]
    return req('/webhooks/acme/stripe', [('Content-Type', 'application/json'), ('Stripe-Signature', f't={ts},{v1}')], body)

TS_BAD = ((400, 'malformed_signature'),)
R += [
    Row('ts-missing', lambda: with_sig('moda', MODA, ts=False), MISSING),
    Row('ts-non-numeric', lambda: with_sig('moda', MODA, ts='yesterday'), TS_BAD),
    Row('ts-float', lambda: with_sig('moda', MODA, ts=f'{time.time():.3f}'), TS_BAD),
    Row('ts-negative', lambda: with_sig('moda', MODA, ts='-1700000000'), TS_BAD),
    Row('ts-empty', lambda: with_sig('moda', MODA, ts=''), TS_BAD + MISSING),
    Row('ts-huge-digits', lambda: with_sig('moda', MODA, ts='9'*30), MISMATCH + ((401, 'future_timestamp'),)),
    Row('ts-huge-signed', lambda: with_sig('moda', MODA, timestamp=10**30), ((401, 'future_timestamp'),)),
    Row('ts-5000-digits', lambda: with_sig('moda', MODA, ts='1'*5000), TS_BAD),
    Row('ts-100kb', lambda: with_sig('moda', MODA, ts='1'*100_000), TS_BAD),
    Row('ts-far-future-signed', lambda: with_sig('moda', MODA, timestamp=int(time.time()) + 10*365*86400), ((401, 'future_timestamp'),)),
    Row('ts-stale-signed', lambda: with_sig('moda', MODA, timestamp=int(time.time()) - 3600), ((401, 'stale_timestamp'),)),
    Row('ts-zero-signed', lambda: with_sig('moda', MODA, timestamp=0), ((401, 'stale_timestamp'),)),
    Row('ts-unsigned-fresh', lambda: with_sig('moda', MODA, timestamp=int(time.time()) - 3600, ts=str(int(time.time()))), MISMATCH),
    Row('ts-non-ascii-digits', lambda: with_sig('moda', MODA, ts='١٢٣'.encode()), TS_BAD),
    Row('ts-repeated-bad-first', lambda: (lambda b: req('/webhooks/acme/moda', [('Content-Type', 'application/json'),
        ('X-Webhook-Timestamp', 'nope'), *sign('moda', b, MODA).items()], b))(event()), TS_BAD + MISMATCH),
    Row('ts-stripe-negative', lambda: stripe_ts('-5'), TS_BAD + MISSING),
    Row('ts-stripe-huge', lambda: stripe_ts('9'*40), TS_BAD + MISMATCH),
    Row('ts-stripe-missing', lambda: with_sig('stripe', STRIPE, sig='v1=' + 'a'*64), MISSING),
]

# -- bodies ----------------------------------------------------------------------------------------
def signed_body(body:bytes, ctype='application/json', path='/webhooks/acme/gen', **kw)->bytes:
    return req(path, signed('generic', body, GENERIC, ctype, **kw), body)

def chunked(body:bytes, ctype='application/json', path='/webhooks/acme/gen', n=4096)->bytes:
    h = signed('generic', body, GENERIC, ctype) + [('Transfer-Encoding', 'chunked')]
    parts = b''.join(b'%x\r\n' % len(body[i:i+n]) + body[i:i+n] + b'\r\n' for i in range(0, len(body), n))
    return req(path, h, parts + b'0\r\n\r\n', cl=None)

INVALID_JSON = ((400, 'invalid_json'),)
TOO_LARGE = ((413, 'body_too_large'),)
R += [
    Row('body-empty-json', lambda: signed_body(b''), INVALID_JSON),
    Row('body-empty-no-ctype', lambda: signed_body(b'', ctype=None), OK),
    Row('body-invalid-json', lambda: signed_body(b'{"id": "x", "type": '), INVALID_JSON),
    Row('body-single-quotes', lambda: signed_body(b"{'id': 'x'}"), INVALID_JSON),
    Row('body-nan', lambda: signed_body(b'{"id": "nan1", "v": NaN}'), OK + INVALID_JSON),
    Row('body-huge-int', lambda: signed_body(b'{"id": "bigint", "v": ' + b'9'*5000 + b'}'), INVALID_JSON + OK),
    Row('body-nested-100k-json', lambda: signed_body(b'['*100_000), INVALID_JSON),
    Row('body-nested-100k-objects', lambda: signed_body(b'{"a":'*100_000), INVALID_JSON),
    Row('body-nested-100k-no-ctype', lambda: signed_body(b'['*100_000, ctype=None), OK + INVALID_JSON),
    Row('body-non-utf8-json', lambda: signed_body(b'{"id":"x","v":"\xff\xfe"}'), ((400, 'invalid_body'),)),
    Row('body-non-utf8-octets', lambda: signed_body(b'\xff\xfe\x00\x01' * 10, ctype='application/octet-stream'), OK),
    Row('body-utf16-json', lambda: signed_body('{"id":"u16"}'.encode('utf-16')), ((400, 'invalid_body'),) + INVALID_JSON),
    Row('body-bom-json', lambda: signed_body(b'\xef\xbb\xbf' + event()), INVALID_JSON + OK),
    Row('body-over-default-limit-cl', lambda: req('/webhooks/acme/gen', signed('generic', b'x', GENERIC),
                                                 b'x' * 1000, cl=MAX_BODY + 1), TOO_LARGE),
    Row('body-over-source-limit', lambda: signed_body(event(pad='x' * TINY), path='/webhooks/acme/tiny'), TOO_LARGE),
    Row('body-over-source-limit-chunked', lambda: chunked(event(pad='x' * TINY), path='/webhooks/acme/tiny', n=100), TOO_LARGE),
    Row('body-over-default-limit-chunked', lambda: chunked(b'[' + b'0,' * (MAX_BODY // 2) + b'0]', n=65536), TOO_LARGE),
    Row('body-cl-1e12', lambda: req('/webhooks/acme/gen', signed('generic', b'{}', GENERIC), b'', cl=10**12), TOO_LARGE),
    Row('body-cl-expect-100', lambda: req('/webhooks/acme/gen', signed('generic', b'{}', GENERIC) + [('Expect', '100-continue')],
                                          b'', cl=5_000_000), TOO_LARGE),
    Row('body-json-array-form', lambda: signed_body(b'id=1&type=x', ctype='application/json'), INVALID_JSON),
    Row('body-form-garbage', lambda: signed_body(b'%%%&&&===\xff', ctype='application/x-www-form-urlencoded'), OK),
]

# -- Content-Length and framing ---------------------------------------------------------------------
def lying_cl(delta:int)->bytes:
    body = event()
    return req('/webhooks/acme/gen', signed('generic', body, GENERIC), body, cl=len(body) + delta)

R += [
    Row('cl-shorter-than-body', lambda: lying_cl(-10), MISMATCH + INVALID_JSON),
    Row('cl-zero-with-body', lambda: (lambda b: req('/webhooks/acme/gen', signed('generic', b, GENERIC), b, cl=0))(event()),
        MISMATCH + INVALID_JSON),
    Row('cl-longer-than-body', lambda: lying_cl(+100), ((408, 'request_timeout'),), stall=True,
        bug='a Content-Length longer than the body sent holds the request forever: read_body has no read timeout'),
    Row('cl-not-a-number', lambda: req('/webhooks/acme/gen', signed('generic', b'{}', GENERIC), b'{}', cl='12abc'), ((400, None),), layer='http'),
    Row('cl-negative', lambda: req('/webhooks/acme/gen', signed('generic', b'{}', GENERIC), b'{}', cl='-1'), ((400, None),), layer='http'),
    Row('cl-repeated-different', lambda: req('/webhooks/acme/gen', signed('generic', b'{}', GENERIC) + [('Content-Length', '3')],
                                             b'{} ', cl=2), ((400, None),), layer='http'),
    Row('cl-and-chunked', lambda: req('/webhooks/acme/gen', signed('generic', b'{}', GENERIC) + [('Transfer-Encoding', 'chunked')],
                                      b'2\r\n{}\r\n0\r\n\r\n', cl=2), ((400, None),), layer='http'),
    Row('chunk-size-garbage', lambda: req('/webhooks/acme/gen', signed('generic', b'{}', GENERIC) + [('Transfer-Encoding', 'chunked')],
                                          b'zz\r\n{}\r\n0\r\n\r\n', cl=None), ((400, None),), layer='http'),
    Row('body-stalls', lambda: lying_cl(0)[:-5], ((408, 'request_timeout'),), stall=True,
        bug='a body that stalls is never cut off: read_body awaits request.receive() with no timeout'),
    Row('chunked-stalls', lambda: chunked(event())[:-7], ((408, 'request_timeout'),), stall=True,
        bug='a chunked body that stalls is never cut off: read_body awaits request.receive() with no timeout'),
]

# -- Content-Encoding --------------------------------------------------------------------------------
def gz(body:bytes, ctype='application/json', enc_='gzip')->bytes:
    z = gzip.compress(body)
    return req('/webhooks/acme/gen', signed('generic', z, GENERIC, ctype) + [('Content-Encoding', enc_)], z)

ENCODING = ((415, 'unsupported_encoding'), (415, 'unsupported_media_type'), (415, 'unsupported_content_encoding'))
GZ_BUG = ('Content-Encoding is ignored: the compressed bytes are verified and stored as the body (or refused as a '
          'non-UTF-8 JSON body); the contract is 415, or inflate with a size cap')
R += [
    Row('gzip-json', lambda: gz(event()), ENCODING + ((200, None),), bug=GZ_BUG),
    Row('gzip-octets', lambda: gz(event(), ctype='application/octet-stream'), ENCODING, bug=GZ_BUG),
    Row('gzip-bomb', lambda: gz(b'\0' * 50_000_000, ctype='application/octet-stream'), ENCODING + TOO_LARGE, bug=GZ_BUG),
    Row('gzip-header-plain-body', lambda: (lambda b: req('/webhooks/acme/gen', signed('generic', b, GENERIC) +
        [('Content-Encoding', 'gzip')], b))(event()), ENCODING + ((400, 'invalid_body'),), bug=GZ_BUG),
    Row('br-json', lambda: gz(event(), enc_='br'), ENCODING, bug=GZ_BUG),
    Row('identity-encoding', lambda: (lambda b: req('/webhooks/acme/gen', signed('generic', b, GENERIC) +
        [('Content-Encoding', 'identity')], b))(event()), OK),
]

# -- ids and types in the payload -------------------------------------------------------------------
SURR = ('a JSON string holding an unpaired surrogate ("\\ud800") as the id or type reaches the store and fails the '
        'commit (UnicodeEncodeError in apsw) as a 503 store_unavailable, for the whole group-commit round')
R += [
    Row('id-number', lambda: signed_body(b'{"id": 12345, "type": "x"}'), OK),
    Row('id-float', lambda: signed_body(b'{"id": 1.5e300, "type": "x"}'), OK),
    Row('id-object', lambda: signed_body(b'{"id": {"a": 1}, "type": "x"}'), OK + ((400, 'invalid_id'),)),
    Row('id-list', lambda: signed_body(b'{"id": [1, 2], "type": "x"}'), OK + ((400, 'invalid_id'),)),
    Row('id-bool', lambda: signed_body(b'{"id": true, "type": "x"}'), OK + ((400, 'invalid_id'),)),
    Row('id-null', lambda: signed_body(b'{"id": null, "type": "x"}'), OK),
    Row('id-empty', lambda: signed_body(b'{"id": "", "type": "x"}'), OK),
    Row('id-10kb', lambda: signed_body(event('i' * 10240)), OK + ((400, 'invalid_id'),)),
    Row('id-nul', lambda: signed_body(b'{"id": "a\\u0000b", "type": "x"}'), OK + ((400, 'invalid_id'),)),
    Row('id-unpaired-surrogate', lambda: signed_body(b'{"id": "\\ud800", "type": "x"}'), OK + ((400, 'invalid_id'),), bug=SURR),
    Row('id-low-surrogate', lambda: signed_body(b'{"id": "x\\udfff", "type": "x"}'), OK + ((400, 'invalid_id'),), bug=SURR),
    Row('type-unpaired-surrogate', lambda: signed_body(b'{"id": "ts1", "type": "\\ud800"}'), OK + ((400, 'invalid_type'),), bug=SURR),
    Row('type-object', lambda: signed_body(b'{"id": "tobj", "type": {"a": 1}}'), OK),
    Row('type-10kb', lambda: signed_body(event(etype='t' * 10240)), OK + ((400, 'invalid_type'),)),
    Row('field-unpaired-surrogate', lambda: signed_body(b'{"id": "fs1", "type": "x", "v": "\\ud800"}'), OK),
    Row('idem-header-non-ascii', lambda: (lambda b: req('/webhooks/acme/gen', signed('generic', b, GENERIC, msg_id='k-é'), b))(event()), OK),
    Row('idem-header-10kb', lambda: (lambda b: req('/webhooks/acme/gen', signed('generic', b, GENERIC, msg_id='k' * 10240), b))(event()),
        OK + ((400, 'invalid_id'),)),
]

# -- methods ------------------------------------------------------------------------------------------
NOT_ALLOWED = ((405, 'method_not_allowed'),)
METHOD_BUG = ("methods outside routes._ALL_METHODS get Starlette's text/plain 405 (Allow lists GET, PUT, …), not the JSON "
              '405 the other methods get')
for m in ['GET', 'HEAD', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']:
    exp = NOT_ALLOWED + (((200, None),) if m == 'OPTIONS' else ())  # OPTIONS: a CloudEvents handshake may answer 200
    R.append(Row(f'method-{m}', lambda m=m: (lambda b: req('/webhooks/acme/gen', signed('generic', b, GENERIC), b, method=m))(event()), exp))
for m in ['TRACE', 'CONNECT', 'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'SEARCH', 'REPORT',
          'MKCALENDAR', 'PURGE', 'LINK', 'UNLINK']:
    R.append(Row(f'method-{m}', lambda m=m: req('/webhooks/acme/gen', [('Content-Type', 'application/xml')], b'<x/>', method=m),
                 NOT_ALLOWED, bug=METHOD_BUG))
R.append(Row('method-TRACE-unknown-tenant', lambda: req('/webhooks/ghost/gen', [], b'', method='TRACE'),
             NOT_ALLOWED + NOTEN, bug=METHOD_BUG))
R.append(Row('method-unknown-token', lambda: req('/webhooks/acme/gen', [], b'', method='FOO'), ((400, None),), layer='http'))
R.append(Row('method-lowercase-post', lambda: (lambda b: req('/webhooks/acme/gen', signed('generic', b, GENERIC), b, method='post'))(event()),
             ((400, None),), layer='http'))

ROWS = {r.name: r for r in R}
assert len(ROWS) == len(R), 'row names must be unique'

# ---------------------------------------------------------------- the server

def files_under(p:Path)->set: return {str(x.relative_to(p)) for x in p.rglob('*')}

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "A receiver on a fresh root, tenant `acme` with sources gen (generic), moda, stripe and tiny (generic, 1000-byte limit)."
    root = tmp_path_factory.mktemp('contract')/'data'
    st = SqliteStore(root)
    t = st.open('acme', create=True)
    t.add_source('gen', 'generic', GENERIC); t.add_source('moda', 'moda', MODA); t.add_source('stripe', 'stripe', STRIPE)
    t.add_source('tiny', 'generic', GENERIC, 300, TINY)
    t.close()
    app = serve_app(root)
    rcv = app.state.webhooks
    stall = 11.0  # with no way to shorten the read timeout, a fix's default (≤ 10 s) must be within this
    if hasattr(rcv, 'read_timeout'): rcv.read_timeout, stall = 1.0, 6.0
    with Server(app) as s:
        s.root, s.rcv, s.stall_bound = root, rcv, stall
        yield s

def stored(root:Path, id:str, tenant:str='acme')->list:
    t = SqliteStore(root).open(tenant)
    try: return t.db.q('SELECT id, payload, status FROM webhook_events WHERE id=?', (id,))
    finally: t.close()

def deliver_good(site)->str:
    "A good signed delivery: asserted 200 and stored; returns its id."
    eid = 'evt_good_' + secrets.token_hex(6)
    a = send(site.port, good(body=event(eid)))
    assert a.status == 200, f'a good delivery after the row was not accepted: {a!r}'
    assert json.loads(a.body) == {'ok': True, 'id': eid, 'duplicate': False}, a
    assert [r['id'] for r in stored(site.root, eid)] == [eid], 'the good delivery answered 200 but is not stored'
    return eid

def check_answer(row:Row, a:Answer, bound:float):
    why = f' [known bug: {row.bug}]' if row.bug else ''
    assert a.elapsed < bound, f'{row.name}: no answer within {bound} s (hang){why}: {a!r}'
    if row.stall and a.status is None:
        assert a.closed, f'{row.name}: neither answered nor closed within {bound} s{why}'
        return
    assert a.status is not None, f'{row.name}: connection closed without an answer{why}: {a!r}'
    assert a.status < 500, f'{row.name}: answered {a.status} (a 5xx){why}: {a.body[:300]!r}'
    if row.layer == 'http':
        assert a.status == 400 and a.closed, f'{row.name}: the HTTP parser should refuse it with 400 and close: {a!r}'
        return
    ct = a.headers.get('content-type', '')
    if row.name == 'method-OPTIONS' and a.status == 200 and a.body == b'':  # the CloudEvents handshake: 200, Allow, no body
        assert 'POST' in a.headers.get('allow', ''), a
        return
    assert ct.startswith('application/json'), f'{row.name}: answer is {ct!r}, not JSON{why}: {a!r}'
    assert b'Traceback' not in a.body and b'<html' not in a.body.lower(), f'{row.name}: traceback or HTML in the answer: {a!r}'
    if a.body == b'' and a.status in (405, 200) and row.name.startswith('method-'): got = (a.status, None if a.status < 300 else 'method_not_allowed')
    else:
        j = json.loads(a.body)
        if a.status < 300: assert j.get('ok') is True, j; got = (a.status, None)
        else:
            assert j.get('ok') is False and isinstance(j.get('message'), str) and j['message'].strip(), f'{row.name}: {j}'
            assert set(j) >= {'ok', 'error', 'message'}, j
            got = (a.status, j['error'])
    assert got in row.expect, f'{row.name}: answered {got}, expected one of {list(row.expect)}{why}: {a.body[:300]!r}'

@pytest.mark.parametrize('name', list(ROWS))
def test_contract_row(site, name):
    row = ROWS[name]
    top, cwd = site.root.parent, Path.cwd()
    before, before_cwd = files_under(top), set(os.listdir(cwd))
    data = row.build()
    if row.stall:
        bound = site.stall_bound
        res = {}
        th = threading.Thread(target=lambda: res.setdefault('a', send(site.port, data, timeout=bound + 2)))
        th.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        deliver_good(site)  # the stalled request holds no worker: another delivery goes through meanwhile
        assert time.monotonic() - t0 < 2, 'a good delivery waited behind a stalled request'
        th.join()
        check_answer(row, res['a'], bound)
    else:
        a = send(site.port, data, timeout=BOUND + 5)
        check_answer(row, a, BOUND)
        if a.status == 200 and row.layer == 'app' and not row.name.startswith('method-'):
            eid = json.loads(a.body)['id']
            assert stored(site.root, eid), f'{row.name}: answered 200 for {eid!r} but nothing is stored'
    deliver_good(site)
    if row.names:
        new = files_under(top) - before
        assert all(re.fullmatch(r'data/acme\.db(-wal|-shm|-lock)?', f) for f in new), f'{row.name}: files appeared: {new}'
        assert set(os.listdir(cwd)) == before_cwd, f'{row.name}: files appeared in the working directory'
        assert SqliteStore(site.root).tenants() == ['acme']

def test_table_covers_the_issue():
    "The classes of bad request issue 15 names each have at least one row."
    need = ['tenant-dotdot', 'tenant-pct-2e2e', 'tenant-raw-nul', 'tenant-pct-unicode', 'tenant-10kb', 'sig-missing',
            'sig-repeated-bad-first', 'sig-100kb', 'sig-non-ascii-latin1', 'sig-not-hex', 'ts-non-numeric', 'ts-negative',
            'ts-huge-signed', 'ts-far-future-signed', 'body-empty-json', 'body-invalid-json', 'body-nested-100k-json',
            'body-non-utf8-json', 'body-over-default-limit-cl', 'cl-shorter-than-body', 'cl-longer-than-body', 'gzip-json',
            'id-number', 'id-object', 'id-10kb', 'id-unpaired-surrogate', 'method-TRACE', 'method-PROPFIND', 'method-MKCOL',
            'body-stalls']
    assert not [n for n in need if n not in ROWS]

def test_server_still_answers_after_the_table(site):
    "After every row (and whatever order they ran in) the server answers, and a good delivery is stored."
    deliver_good(site)

# ---------------------------------------------------------------- slow clients at the HTTP layer (webhooks-serve)

HEADER_BOUND = float(os.environ.get('HEADER_TIMEOUT_BOUND', 11))

def test_stalled_headers_are_cut_off(tmp_path):
    """webhooks-serve closes (or answers 408 on) connections whose request headers stop coming (one sends nothing, one
    part of its headers), and serves other deliveries meanwhile."""
    from helpers import Serve
    root = tmp_path/'data'
    t = SqliteStore(root).open('acme', create=True); t.add_source('gen', 'generic', GENERIC); t.close()
    stalls = {'nothing': b'', 'part-of-headers': b'POST /webhooks/acme/gen HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Webhook-Sig'}
    with Serve('--root', root) as s:
        res = {}
        ths = [threading.Thread(target=lambda k=k, v=v: res.setdefault(k, send(s.port, v, timeout=HEADER_BOUND + 2))) for k, v in stalls.items()]
        for th in ths: th.start()
        time.sleep(0.3)
        assert send(s.port, good()).status == 200, 'a good delivery waited behind a stalled connection'
        for th in ths: th.join()
    for k, a in res.items():
        assert a.elapsed < HEADER_BOUND and (a.closed or a.status == 408), (
            f'{k}: a connection that stopped sending its headers was still open after {a.elapsed:.1f} s: uvicorn has no '
            'timeout for reading request headers (slowloris); webhooks-serve must arm one')

# ---------------------------------------------------------------- the access log

def test_path_cannot_forge_access_log_lines(tmp_path):
    "A CR/LF in the (percent-decoded) tenant or source name must not start a new line in webhooks-serve's access log."
    from helpers import Serve
    root = tmp_path/'data'
    t = SqliteStore(root).open('acme', create=True); t.add_source('gen', 'generic', GENERIC); t.close()
    with Serve('--root', root) as s:
        a = send(s.port, good('/webhooks/acme/x%0D%0AFORGED%20200%20new'))
        assert a.status == 404, a
        send(s.port, good())
        time.sleep(0.5)
    forged = [l for l in s.err.splitlines() if l.startswith('FORGED')]
    assert not forged, ('AccessLog.line writes the source name raw: a %0D%0A in the URL forges a log line: '
                        f'{forged}')

# ---------------------------------------------------------------- property: one bad event never fails its round

BAD_EVENTS = {'id-surrogate': b'{"id": "\\ud800", "type": "x"}', 'type-surrogate': b'{"id": "bad-type", "type": "\\udfff"}',
              'id-nul': b'{"id": "nul\\u0000id", "type": "x"}', 'id-10kb': event('b' * 10240)}

@pytest.mark.parametrize('bad', list(BAD_EVENTS))
def test_one_bad_event_never_fails_its_round(tmp_path, bad):
    """N good deliveries and one bad one are made to share one group-commit round (the tenant's write lock is held
    by another connection while they arrive, so they all wait in the same round); every good one must get 200 and
    be stored, whatever happens to the bad one."""
    import httpx
    root, n = tmp_path/'data', 30
    t = SqliteStore(root).open('acme', create=True); t.add_source('gen', 'generic', GENERIC); t.close()
    app = serve_app(root, worker=False, busy_timeout=30)
    rcv = app.state.webhooks
    with Server(app) as s:
        async def main():
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n + 2)) as c:
                post = lambda b: c.post(f'{s.url}/webhooks/acme/gen', content=b, headers=dict(signed('generic', b, GENERIC)))
                assert (await post(event('warm'))).status_code == 200  # the tenant is open for receiving
                lock = tenant_db('acme', root); lock.execute('BEGIN IMMEDIATE')
                try:
                    primer = asyncio.ensure_future(post(event('primer')))  # its round waits for the lock on a thread
                    inbox = rcv.store.inboxes['acme']
                    for _ in range(200):
                        if inbox.commit.task is not None and not inbox.commit.pending: break
                        await asyncio.sleep(0.01)
                    goods = [event(f'good{i}') for i in range(n)]
                    bodies = goods[:n//2] + [BAD_EVENTS[bad]] + goods[n//2:]
                    tasks = [asyncio.ensure_future(post(b)) for b in bodies]
                    for _ in range(500):  # until all n + 1 wait for the next round
                        if len(inbox.commit.pending) >= n + 1: break
                        await asyncio.sleep(0.01)
                    waiting = len(inbox.commit.pending)
                finally:
                    lock.execute('ROLLBACK'); lock.close()
                rs = await asyncio.gather(*tasks)
                assert (await primer).status_code == 200
                return waiting, rs
        waiting, rs = asyncio.run(main())
    # the bad one may be refused before it joins the round (the receiver checks ids up front) or inside it (the store's guard)
    assert waiting >= n, f'only {waiting} of {n + 1} deliveries shared the round: the test did not set up one round'
    good_rs = rs[:n//2] + rs[n//2 + 1:]
    bad_r = rs[n//2]
    failed = [(r.status_code, r.text[:200]) for r in good_rs if r.status_code != 200]
    assert not failed, (f'one bad event ({bad}: answered {bad_r.status_code} {bad_r.text[:200]}) failed {len(failed)} of its '
                        f'{n} neighbours in the group-commit round: {failed[:2]}')
    assert bad_r.status_code < 500, f'the bad event itself got a 5xx: {bad_r.status_code} {bad_r.text[:300]}'
    t = SqliteStore(root).open('acme')
    try: ids = {r['id'] for r in t.db.q('SELECT id FROM webhook_events')}
    finally: t.close()
    assert {f'good{i}' for i in range(n)} <= ids

# ---------------------------------------------------------------- property: a body the worker cannot parse never stalls the queue

POISON = {'nested-100k': '[' * 100_000, 'nested-objects-100k': '{"a":' * 100_000, 'not-json': 'not json at all',
          'non-utf8': b'\xff\xfe\x00garbage', 'json-list': '[1, 2, 3]', 'json-string': '"just a string"',
          'truncated': '{"id": "t", "type": ', 'huge-int': '{"v": ' + '9' * 5000 + '}'}

@pytest.mark.parametrize('where', ['first', 'middle', 'last'])
def test_unparseable_stored_body_never_stalls_the_queue(tmp_path, where):
    "Stored bodies a handler can't use, among good events: each bad one fails alone with its error, every good one completes."
    from webhooks.worker import Handlers, Worker
    st = SqliteStore(tmp_path/'data')
    t = st.open('acme', create=True)
    t.add_source('gen', 'generic', GENERIC)
    goods = [NewEvent(f'good{i}', 'gen', 'x', event(f'good{i}', 'x').decode(), None, f'gen:good{i}') for i in range(6)]
    bads = [NewEvent(f'bad-{k}', 'gen', 'x', v, None, f'gen:bad-{k}') for k, v in POISON.items()]
    evs = {'first': bads + goods, 'middle': goods[:3] + bads + goods[3:], 'last': goods + bads}[where]
    t.log(evs)
    h, ran = Handlers(), []
    @h.on('*')
    def handle(ev):
        assert isinstance(ev.payload, dict), f'payload is a {type(ev.payload).__name__}'
        ran.append(ev['id'])
    w = Worker(st, h, max_attempts=1, poll=0.05)
    async def main():
        try: return await asyncio.wait_for(w.drain(), 20)
        finally: await w.stop()
    t0 = time.monotonic()
    asyncio.run(main())
    took = time.monotonic() - t0
    rows = {e.id: e for e in t.events(limit=100)}
    t.close()
    stuck = {k: (e.status, e.error) for k, e in rows.items() if e.status not in ('completed', 'failed')}
    assert not stuck, (f'events left unfinished after the worker drained ({took:.1f} s): {stuck}; a stored body the worker '
                       'cannot parse (RecursionError from json.loads in worker._load) aborts run_batch for the whole tenant')
    assert sorted(ran) == sorted(f'good{i}' for i in range(6))
    assert all(rows[f'good{i}'].status == 'completed' for i in range(6))
    for k in POISON:
        e = rows[f'bad-{k}']
        assert e.status == 'failed' and e.error, (k, e.status, e.error)
