"""Coverage-guided fuzzing (atheris / libFuzzer) of what a hostile sender controls: header values, bodies, timestamps.

Targets (pick one with --target):
  header    `signatures.header` over fuzzed header mappings, and every preset's signature-header parser
            (`_parse`, the one-step `_fast` match) and timestamp reader (`_seconds`/`_timestamp`).
  verify    `verify` for every preset: fuzzed body, signature, timestamp, id and extra headers; half the inputs start
            from a validly signed delivery and overwrite one piece, so the fuzzer reaches the signature check itself.
  pipeline  `process.accept` (verify → `parse_event`) + `redact` on validly signed fuzzed bodies, content types and
            headers, then the event is checked the way the store will take it (every text field encodable as UTF-8).
            With --asgi the request also goes through the ASGI app (`serve_app`, worker off) by a direct ASGI call.

Any exception that is not a `WebhookError` is a crash. By default a crash is recorded (its input saved under
bench/fuzz-crashes/, one file per distinct exception type + webhooks frame) and fuzzing goes on; --stop-on-crash lets
libFuzzer stop at the first one. A summary line (inputs, crashes by kind) is printed at exit.

Run:  python bench/fuzz.py --target verify -runs=1000000          (libFuzzer flags after ours; -seed=1 to repeat)
      bench/fuzz.dict (JSON escapes such as \ud800, header syntax) is used unless a -dict= is given.
"""
import atexit, base64, hashlib, json, os, sys, tempfile, time, traceback
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

with atheris.instrument_imports(include=['webhooks']):
    from webhooks import signatures as S
    from webhooks import process as P
    from webhooks.signatures import WebhookError, presets

NAMES = list(presets)
URL = 'https://example.com/webhooks/acme/src'
CRASHES = HERE/'fuzz-crashes'
state = dict(n=0, crashes={}, t0=time.time(), target='?')

# ---------------------------------------------------------------- keys per scheme (as tests/test_properties.py makes them)

def _keys(s)->tuple:
    if getattr(s, 'key', 'utf8') == 'public':
        from cryptography.hazmat.primitives import serialization as ser
        if s.algo == 'ed25519':
            from cryptography.hazmat.primitives.asymmetric import ed25519
            k = ed25519.Ed25519PrivateKey.from_private_bytes(b'\x01' * 32)
            return (k.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption()).hex(),
                    k.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw).hex())
        from cryptography.hazmat.primitives.asymmetric import ec
        k = ec.derive_private_key(123456789, ec.SECP256R1())
        return (k.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()).decode(),
                base64.b64encode(k.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)).decode())
    if getattr(s, 'key', 'utf8') == 'whsec':
        sec = 'whsec_' + base64.b64encode(b'fuzz-test-key-0123456789abcdefgh').decode()
        return sec, sec
    return 'fuzz-secret-0123456789abcdef', 'fuzz-secret-0123456789abcdef'

KEYS = {n: _keys(s) for n, s in presets.items()}

def url_for(s, body:bytes)->str:
    hb = getattr(s, 'body_hash', None)
    return f'{URL}?{hb}={hashlib.sha256(body).hexdigest()}' if hb else URL

def make(s, body:bytes, ts:int|None=None):
    "(body, headers, url) of a valid delivery, or None if this scheme cannot sign this body."
    sec = KEYS[s.name][0]
    try:
        if hasattr(S, 'signed'):
            b, h = S.signed(s, body, sec, timestamp=ts, url=url_for(s, body))
            return b, dict(h), url_for(s, b)
        return body, {'Content-Type': 'application/json', **S.sign(s, body, sec, timestamp=ts)}, URL
    except Exception: return None  # e.g. a body-signing scheme given a body that is not a JSON object

_verify_url = 'url' in S.verify.__code__.co_varnames

def vkw(url): return {'url': url} if _verify_url else {}

# ---------------------------------------------------------------- crash bookkeeping

def crash(data:bytes, e:BaseException):
    "Record a non-WebhookError exception: one saved input per (type, innermost webhooks frame)."
    tb = traceback.extract_tb(e.__traceback__)
    ours = [f for f in tb if '/webhooks/' in f.filename.replace(os.sep, '/')]
    where = f'{Path(ours[-1].filename).name}:{ours[-1].lineno} {ours[-1].name}' if ours else (f'{tb[-1].name}' if tb else '?')
    key = f'{type(e).__name__} at {where}'
    c = state['crashes'].setdefault(key, dict(count=0, msg=str(e)[:200], file=None))
    c['count'] += 1
    if c['file'] is None:
        CRASHES.mkdir(exist_ok=True)
        f = CRASHES/f"{state['target']}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        f.write_bytes(data); c['file'] = str(f.relative_to(HERE.parent))
        print(f'\n== CRASH {key}: {type(e).__name__}: {str(e)[:300]}\n   input saved to {f}', file=sys.stderr, flush=True)
    if STOP: raise e

@atexit.register
def summary():
    "One line: inputs so far, time, exec/s, distinct crashes with their saved inputs."
    el = time.time() - state['t0']
    n = state['n']
    kinds = '; '.join(f"{k} ×{v['count']} ({v['file']}): {v['msg']}" for k, v in state['crashes'].items()) or 'none'
    print(f"\nFUZZ SUMMARY target={state['target']} inputs={n} seconds={el:.0f} exec/s={n/max(el, 1e-9):.0f} "
          f"crash kinds={len(state['crashes'])} crashes={sum(v['count'] for v in state['crashes'].values())}: {kinds}",
          file=sys.stderr, flush=True)

def guarded(fn):
    def one(data:bytes):
        state['n'] += 1
        try: fn(data)
        except WebhookError: pass
        except Exception as e: crash(data, e)
        finally:  # libFuzzer ends the process without running atexit: the summary comes at the last run, and every 100k
            if state['n'] == state.get('runs') or state['n'] % 100_000 == 0: summary()
    return one

# ---------------------------------------------------------------- inputs

def text(fdp, n=80)->str:
    "A header-ish value: latin-1 text (what an HTTP server hands over), sometimes any unicode."
    if fdp.ConsumeBool(): return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, n)).decode('latin-1')
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, n))

def header_names(s)->list:
    return [h for h in (s.header, s.ts_header, s.id_header, s.type_header, 'Content-Type') if h]

# ---------------------------------------------------------------- target: header parsing

@guarded
def t_header(data:bytes):
    fdp = atheris.FuzzedDataProvider(data)
    s = presets[NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]]
    # header(): a mapping of fuzzed names and values, some bytes, some wrong types
    hd = {}
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        k = text(fdp, 30)
        kind = fdp.ConsumeIntInRange(0, 4)
        v = text(fdp) if kind < 2 else fdp.ConsumeBytes(20) if kind == 2 else fdp.ConsumeInt(4) if kind == 3 else None
        hd[k.encode('latin-1', 'replace') if fdp.ConsumeBool() else k] = v
    name = fdp.PickValueInList(header_names(s) + [text(fdp, 20)])
    S.header(hd, name)
    value = text(fdp, 300)
    if s.header and getattr(s, '_fast', None) is not None: s._fast.fullmatch(value)
    if s.header: S._parse(s, value)
    if s.timestamped:
        t = text(fdp, 60)
        if hasattr(S, '_seconds'): S._seconds(s, t)
        else: S._timestamp(s, {s.ts_header or 'x': t}, t)

# ---------------------------------------------------------------- target: verify, every preset

@guarded
def t_verify(data:bytes):
    fdp = atheris.FuzzedDataProvider(data)
    s = presets[NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]]
    mode = fdp.ConsumeIntInRange(0, 3)
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
    now = 1_760_000_000
    if mode == 0:  # everything fuzzed
        h = {n: text(fdp, 200) for n in header_names(s) if fdp.ConsumeBool()}
        url = text(fdp, 100) if fdp.ConsumeBool() else URL
    else:          # a valid delivery, then one piece overwritten (or none: it must verify)
        if fdp.ConsumeBool() and (getattr(s, 'sig_field', None) or getattr(s, 'ts_field', None)):
            try: body = json.dumps({'signature': {}, 'value': [{}], 'webhookTimestamp': None, **json.loads(body)}).encode()
            except Exception: body = b'{"signature":{},"value":[{}],"x":' + json.dumps(body.decode('latin-1')).encode() + b'}'
        made = make(s, body, now)
        if made is None: return
        body, h, url = made
        which = fdp.ConsumeIntInRange(0, 5)
        names = [n for n in header_names(s) if n in h]
        if which == 0 and names: h[fdp.PickValueInList(names)] = text(fdp, 300)
        elif which == 1 and body:
            i = fdp.ConsumeIntInRange(0, len(body) - 1)
            body = body[:i] + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3)) + body[i + 1:]
        elif which == 2: h[text(fdp, 30)] = text(fdp, 100)
        elif which == 3 and names: del h[fdp.PickValueInList(names)]
        elif which == 4: now += fdp.ConsumeIntInRange(-10**6, 10**6)
        elif which == 5 and names:  # a value one character off
            n = fdp.PickValueInList(names); v = h[n]
            if v:
                i = fdp.ConsumeIntInRange(0, len(v) - 1)
                h[n] = v[:i] + chr(fdp.ConsumeIntInRange(0, 255)) + v[i + 1:]
    secrets = [KEYS[s.name][1]] + ([text(fdp, 60)] if fdp.ConsumeBool() else [])
    S.verify(s, body, h, secrets, tolerance=fdp.ConsumeIntInRange(0, 10**6), now=now, **vkw(url))

# ---------------------------------------------------------------- target: the request pipeline

CTYPES = ['application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded',
          'application/octet-stream', 'multipart/form-data; boundary=x', 'application/cloudevents+json', '', 'JSON', None]

def storable(ev):
    "The event as the store takes it: every text field must encode as UTF-8 (apsw raises UnicodeEncodeError otherwise)."
    for f in ('id', 'source', 'type', 'payload', 'signature', 'key', 'headers'):
        v = getattr(ev, f, None)
        if isinstance(v, str): v.encode('utf-8')

APP = None

def asgi(method:str, path:str, headers:list, body:bytes):
    "One request through the app by a direct ASGI call: (status, content-type, body)."
    import asyncio
    global APP
    if APP is None:
        from webhooks.cli import serve_app
        from webhooks.store import SqliteStore
        root = Path(tempfile.mkdtemp(prefix='fuzz-'))/'data'
        t = SqliteStore(root).open('acme', create=True)
        for n in NAMES:
            try: t.add_source(n, n, KEYS[n][1])
            except Exception as e: print(f'asgi: no source {n}: {e}', file=sys.stderr)
        t.close()
        APP = (serve_app(root, worker=False), asyncio.new_event_loop())
    app, loop = APP
    scope = dict(type='http', asgi={'version': '3.0'}, http_version='1.1', method=method, scheme='http', path=path,
                 raw_path=path.encode('utf-8', 'surrogateescape'), query_string=b'', root_path='',
                 headers=headers, client=('127.0.0.1', 1234), server=('127.0.0.1', 80))
    msgs, out = [dict(type='http.request', body=body, more_body=False)], []
    async def receive(): return msgs.pop(0) if msgs else dict(type='http.disconnect')
    async def send(m): out.append(m)
    loop.run_until_complete(app(scope, receive, send))
    start = next(m for m in out if m['type'] == 'http.response.start')
    resp = b''.join(m.get('body', b'') for m in out if m['type'] == 'http.response.body')
    ct = dict(start['headers']).get(b'content-type', b'').decode()
    return start['status'], ct, resp

@guarded
def t_pipeline(data:bytes):
    fdp = atheris.FuzzedDataProvider(data)
    s = presets[NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]]
    if fdp.ConsumeBool(): raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 800))
    else:  # a JSON object whose id/type/fields are fuzzed values (strings may hold lone surrogates, written as \udXXX)
        def val(depth=0):
            k = fdp.ConsumeIntInRange(0, 6 if depth < 3 else 3)
            if k == 0: return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 40))
            if k == 1: return fdp.ConsumeInt(8)
            if k == 2: return fdp.ConsumeRegularFloat()
            if k == 3: return fdp.PickValueInList([None, True, False, '', 'x' * 10240])
            if k == 4: return [val(depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
            return {fdp.ConsumeUnicode(8): val(depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}
        obj = {f: val() for f in ('id', 'type', 'event_id', 'action', 'data') if fdp.ConsumeBool()}
        raw = json.dumps(obj, ensure_ascii=fdp.ConsumeBool(), allow_nan=True).encode('utf-8', 'surrogatepass')
    made = make(s, raw, None)
    if made is None: return
    body, h, url = made
    ct = fdp.PickValueInList(CTYPES)
    if ct is None: h.pop('Content-Type', None)
    else: h['Content-Type'] = ct
    for _ in range(fdp.ConsumeIntInRange(0, 3)): h[text(fdp, 30)] = text(fdp, 100)
    if s.id_header and fdp.ConsumeBool(): h[s.id_header] = text(fdp, 100)  # an id header the sender chose (it is not signed by all)
    if ASGI:
        hl = [(k.lower().encode('latin-1', 'replace'), v.encode('latin-1', 'replace')) for k, v in h.items()]
        method = fdp.PickValueInList(['POST'] * 6 + ['GET', 'OPTIONS', 'HEAD', 'TRACE', 'PROPFIND'])
        status, ctype, resp = asgi(method, f'/webhooks/acme/{s.name}', hl, body)
        # a refusal is JSON and never a 5xx; a 2xx may be a handshake's own reply (Discord's PING: 204, CloudEvents: 200 empty)
        if status >= 500 or status >= 400 and method != 'HEAD' and not ctype.startswith('application/json'):
            raise AssertionError(f'ASGI answer {status} {ctype}: {resp[:200]!r}')
        return
    kw = {'url': url} if 'url' in P.accept.__code__.co_varnames else {}
    d = P.accept(s, body, h, [KEYS[s.name][1]], 'src', **kw)
    storable(d.event)
    json.dumps(P.redact(h, s), ensure_ascii=False).encode('utf-8')
    P.redact(h, None)

TARGETS = dict(header=t_header, verify=t_verify, pipeline=t_pipeline)

def main():
    global STOP, ASGI
    args, ours = [], dict(target='verify', stop=False, asgi=False)
    it = iter(sys.argv[1:])
    for a in it:
        if a == '--target': ours['target'] = next(it)
        elif a.startswith('--target='): ours['target'] = a.split('=', 1)[1]
        elif a == '--stop-on-crash': ours['stop'] = True
        elif a == '--asgi': ours['asgi'] = True
        else:
            args.append(a)
            if a.startswith('-runs='): state['runs'] = int(a.split('=', 1)[1])
    STOP, ASGI = ours['stop'], ours['asgi']
    if not any(a.startswith('-dict=') for a in args): args.append(f'-dict={HERE/"fuzz.dict"}')
    state['target'] = ours['target'] + ('-asgi' if ASGI else '')
    atheris.Setup([sys.argv[0], *args], TARGETS[ours['target']])
    atheris.Fuzz()

STOP = ASGI = False
if __name__ == '__main__': main()
