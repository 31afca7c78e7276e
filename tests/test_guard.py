"""The SSRF guard: verdicts as a function of the address (no packet sent), `check_url` over a fake resolver, and
`guarded_client` against real servers on 127.0.0.1 that must see no connection when the guard refuses."""
import asyncio, datetime, socket, ssl, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
import httpcore, httpx, pytest
from hypothesis import given, settings, strategies as st
import webhooks.guard as guard
from webhooks.guard import UnsafeURL, address_verdict, check_url, guarded_client

@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    "A net under the guard: if it ever let a non-loopback address through, the test fails before a packet is sent."
    def check(host):
        a = ip_address(host)  # the guard hands httpcore addresses, never names
        assert (getattr(a, 'ipv4_mapped', None) or a).is_loopback, f'a test tried to connect to {host}'
    for cls in (httpcore.AnyIOBackend, httpcore.SyncBackend):
        real = cls.connect_tcp
        if cls is httpcore.AnyIOBackend:
            async def connect(self, host, *a, real=real, **kw): check(host); return await real(self, host, *a, **kw)
        else:
            def connect(self, host, *a, real=real, **kw): check(host); return real(self, host, *a, **kw)
        monkeypatch.setattr(cls, 'connect_tcp', connect)

# ---- verdicts, as a function of the address alone
TABLE = {
    None: ['8.8.8.8', '1.1.1.1', '93.184.215.14', '2606:4700:4700::1111', '2a00:1450:4001:80b::200e',
           '::ffff:8.8.8.8', '64:ff9b::808:808', '100.63.255.255', '100.128.0.0', '172.15.255.255', '172.32.0.0',
           '192.167.255.255', '11.0.0.0', '169.253.255.255', '198.17.255.255', '198.20.0.0'],
    'loopback': ['127.0.0.1', '127.255.255.254', '::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '64:ff9b::7f00:1',
                 '::127.0.0.1', '2002:7f00:1::1', '2001:0:4136:e378:8000:63bf:80ff:fffe'],
    'private': ['10.0.0.1', '10.255.255.255', '172.16.0.1', '172.31.255.255', '192.168.0.1', 'fc00::1', 'fd12:3456::7',
                'fec0::1', '::ffff:10.1.2.3', '::ffff:192.168.1.1', '64:ff9b::a00:1', '2002:c0a8:101::1'],
    'link-local': ['169.254.0.1', '169.254.255.255', 'fe80::1', 'fe80::1%1', 'febf::1', '::ffff:169.254.1.1'],
    'carrier-grade-nat': ['100.64.0.0', '100.127.255.255', '::ffff:100.64.1.1'],
    'multicast': ['224.0.0.1', '239.255.255.250', 'ff02::1', 'ff05::1:3', '::ffff:224.0.0.251'],
    'unspecified': ['0.0.0.0', '::', '::ffff:0.0.0.0'],
    'documentation': ['192.0.2.1', '198.51.100.7', '203.0.113.255', '2001:db8::1', '3fff::1'],
    'benchmarking': ['198.18.0.1', '198.19.255.255', '2001:2::1'],
    'reserved': ['0.1.2.3', '240.0.0.1', '255.255.255.255', '192.0.0.8', '100::1', '2001::1', '2002:808:808::1',
                 '::8.8.8.8', '4000::1', '64:ff9b:1::1'],
    'cloud-metadata': ['169.254.169.254', '169.254.170.2', '169.254.170.23', 'fd00:ec2::254', 'fd00:ec2::23',
                       '100.100.100.200', '192.0.0.192', '::ffff:169.254.169.254', '::ffff:a9fe:a9fe',
                       '64:ff9b::a9fe:a9fe', '2002:a9fe:a9fe::1', '::169.254.169.254'],
}

@pytest.mark.parametrize('addr,verdict', [(a, v) for v, addrs in TABLE.items() for a in addrs])
def test_verdict_table(addr, verdict):
    assert address_verdict(addr) == verdict
    assert address_verdict(ip_address(addr.split('%')[0])) == verdict  # an `ipaddress` object: the same verdict

def test_verdict_takes_integers_and_refuses_garbage():
    assert address_verdict(0x7f000001) == 'loopback' and address_verdict(0x08080808) is None
    with pytest.raises(ValueError): address_verdict('localhost')

SPECIAL = [ip_network(n) for nets in guard.ADDRESS_CLASSES.values() for n in nets] + [
    ip_network(n) for n in ('::ffff:0:0/96', '64:ff9b::/96', '2002::/16', '2001::/32', '2000::/3')]

def in_net(n): return st.integers(int(n.network_address), int(n.broadcast_address)).map(type(n.network_address))
def addresses(version, bits, cls):
    "Any address of `version`, half of them drawn inside the special ranges so every class is visited."
    special = st.sampled_from([n for n in SPECIAL if n.version == version]).flatmap(in_net)
    return st.one_of(st.integers(0, 2**bits-1).map(cls), special)
v4, v6 = addresses(4, 32, IPv4Address), addresses(6, 128, IPv6Address)

def agrees_with_ipaddress(a, v):
    "The verdict `v` of a plain address `a` against what `ipaddress` says of it."
    if a.is_loopback: assert v == 'loopback'
    if a.is_unspecified: assert v == 'unspecified'
    if a.is_multicast: assert v == 'multicast'
    if a.is_link_local: assert v in ('link-local', 'cloud-metadata')
    if a.is_private or a.is_reserved or not a.is_global: assert v is not None
    if v is None: assert a.is_global and not (a.is_private or a.is_reserved or a.is_multicast or a.is_link_local)

@settings(max_examples=3000, deadline=None)
@given(v4)
def test_ipv4_verdicts_agree_with_ipaddress(a):
    v = address_verdict(a)
    agrees_with_ipaddress(a, v)
    if a in ip_network('100.64.0.0/10'): assert v in ('carrier-grade-nat', 'cloud-metadata')
    for form in (f'::ffff:{a}', f'64:ff9b::{a}'): assert address_verdict(form) == v  # translated: the same address
    for form in (IPv6Address((0x2002 << 112) | (int(a) << 80)), IPv6Address(int(a)) if int(a) > 1 else None):
        if form is not None: assert address_verdict(form) == (v or 'reserved')  # 6to4, IPv4-compatible
    teredo = IPv6Address((0x20010000 << 96) | (int(IPv4Address('65.54.227.120')) << 64) | (int(a) ^ 0xffffffff))
    assert address_verdict(teredo) == (v or 'reserved')

@settings(max_examples=3000, deadline=None)
@given(v6)
def test_ipv6_verdicts_agree_with_ipaddress(a):
    v = address_verdict(a)
    inner = guard.embedded_ipv4(a)
    if not inner: agrees_with_ipaddress(a, v)
    if any(address_verdict(i) for i in inner): assert v is not None
    if a.is_site_local: assert v == 'private'
    if a in ip_network('fc00::/7'): assert v in ('private', 'cloud-metadata')

# ---- check_url, over a fake resolver: nothing is sent anywhere
@pytest.fixture
def answers(monkeypatch):
    "Make `guard.resolve` answer from a dict name -> addresses (or a callable), recording each question."
    table, asked, real = {}, [], guard.resolve
    def fake(host, port):
        asked.append(host)
        if host not in table: ip_address(host); return real(host, port)  # address literals only: no DNS query
        a = table[host]
        if isinstance(a, Exception): raise a
        return list(a() if callable(a) else a)
    monkeypatch.setattr(guard, 'resolve', fake)
    monkeypatch.delenv('WEBHOOKS_ALLOW_PRIVATE', raising=False)
    table['asked'] = asked
    return table

def test_check_url_refuses_a_public_name_resolving_to_private_addresses(answers):
    answers['hooks.example.com'] = ['93.184.215.14', '10.0.0.5']
    with pytest.raises(UnsafeURL) as e: check_url('https://hooks.example.com/in')
    assert (e.value.reason, e.value.address, e.value.url) == ('private', '10.0.0.5', 'https://hooks.example.com/in')
    msg = str(e.value)
    assert 'hooks.example.com resolves to 10.0.0.5, a private address' in msg and 'WEBHOOKS_ALLOW_PRIVATE=1' in msg
    assert check_url('https://hooks.example.com/in', allow_private=True) == ['93.184.215.14', '10.0.0.5']

@pytest.mark.parametrize('addr,reason', [
    ('127.0.0.1', 'loopback'), ('::1', 'loopback'), ('::ffff:127.0.0.1', 'loopback'),
    ('169.254.169.254', 'cloud-metadata'), ('fd00:ec2::254', 'cloud-metadata'), ('100.100.100.200', 'cloud-metadata'),
    ('100.64.3.4', 'carrier-grade-nat'), ('fe80::1%2', 'link-local'), ('64:ff9b::a00:1', 'private')])
def test_check_url_refuses_each_class_behind_a_name(answers, addr, reason):
    answers['billing.example.net'] = ['2606:4700::1111', addr]
    with pytest.raises(UnsafeURL) as e: check_url('https://billing.example.net/hooks')
    assert e.value.reason == reason

def test_allow_private_lifts_all_but_cloud_metadata(answers, monkeypatch):
    answers['internal.corp'] = ['10.1.2.3', '127.0.0.1']
    answers['meta.corp'] = ['169.254.169.254']
    with pytest.raises(UnsafeURL): check_url('http://internal.corp/')
    assert check_url('http://internal.corp/', allow_private=True) == ['10.1.2.3', '127.0.0.1']
    monkeypatch.setenv('WEBHOOKS_ALLOW_PRIVATE', '1')
    assert check_url('http://internal.corp/') == ['10.1.2.3', '127.0.0.1']
    for allow in (False, True):
        with pytest.raises(UnsafeURL, match='never allowed') as e: check_url('http://meta.corp/', allow_private=allow)
        assert e.value.reason == 'cloud-metadata'
    monkeypatch.setenv('WEBHOOKS_ALLOW_PRIVATE', '0')
    with pytest.raises(UnsafeURL): check_url('http://internal.corp/')

@pytest.mark.parametrize('url,reason', [('ftp://files.example.com/x', 'scheme'), ('file:///etc/passwd', 'scheme'),
    ('gopher://127.0.0.1:6379/_', 'scheme'), ('http:///path', 'no-host'),
    ('https://user:pw@hooks.example.com/', 'credentials'),
    ('http://[::1', 'invalid-url'), ('http://gone.example.com/', 'unresolvable')])
def test_check_url_refuses_bad_urls(answers, url, reason):
    answers['hooks.example.com'] = ['93.184.215.14']
    answers['gone.example.com'] = socket.gaierror(socket.EAI_NONAME, 'Name or service not known')
    with pytest.raises(UnsafeURL) as e: check_url(url)
    assert e.value.reason == reason and 'pw' not in str(e.value) and 'pw' not in (e.value.url or '')

def test_check_url_asks_the_resolver_for_the_host_httpx_requests(answers):
    answers['xn--bcher-kva.example'] = ['93.184.215.14']
    assert check_url('https://Bücher.example/') == ['93.184.215.14']
    assert answers['asked'] == ['xn--bcher-kva.example']

def test_real_resolver_refuses_loopback_spellings(monkeypatch):
    monkeypatch.delenv('WEBHOOKS_ALLOW_PRIVATE', raising=False)
    for url in ('http://localhost/', 'http://127.1/', 'http://0x7f000001/', 'http://2130706433/', 'http://[::1]/',
                'http://[::ffff:127.0.0.1]/', 'http://0/'):
        with pytest.raises(UnsafeURL) as e: check_url(url)
        assert e.value.reason in ('loopback', 'unspecified'), url

# ---- guarded_client against real servers on 127.0.0.1
class Recorder(ThreadingHTTPServer):
    "A local HTTP server counting accepted connections and recording (path, Host) of each request."
    daemon_threads = True
    def __init__(self, answer=204, location=None, host='127.0.0.1'):
        self.connections, self.requests, self.answer, self.location = 0, [], answer, location
        self.address_family = socket.AF_INET6 if ':' in host else socket.AF_INET
        super().__init__((host, 0), Handler)
    def get_request(self):
        r = super().get_request(); self.connections += 1; return r

class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive, so pooled connections can be counted
    def do_POST(self):
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        self.server.requests.append((self.path, self.headers['Host']))
        self.send_response(self.server.answer)
        if self.server.location: self.send_header('Location', self.server.location)
        self.send_header('Content-Length', '0'); self.end_headers()
    def log_message(self, *a): pass

@pytest.fixture(params=['127.0.0.1'])
def server(request):
    s = Recorder(host=request.param); t = threading.Thread(target=s.serve_forever, daemon=True); t.start()
    yield s
    s.shutdown(); s.server_close()

def post(url, **kw):
    async def go():
        async with guarded_client(timeout=5, **kw) as c: return await c.post(url, json={'id': 'evt_1'})
    return asyncio.run(go())

@pytest.mark.parametrize('host', ['localhost', '127.0.0.1', '127.0.0.2', '[::ffff:127.0.0.1]', '0x7f.1'])
def test_loopback_refused_with_allow_off_and_no_connection_made(server, monkeypatch, host):
    monkeypatch.delenv('WEBHOOKS_ALLOW_PRIVATE', raising=False)
    with pytest.raises(UnsafeURL) as e: post(f'http://{host}:{server.server_port}/hooks')
    assert e.value.reason == 'loopback' and e.value.address.endswith(('127.0.0.1', '127.0.0.2'))
    assert (server.connections, server.requests) == (0, [])

@pytest.mark.parametrize('server', ['::1'], indirect=True)
@pytest.mark.parametrize('host', ['localhost', '[::1]', '[0:0:0:0:0:0:0:1]'])
def test_ipv6_loopback_refused_with_allow_off(server, monkeypatch, answers, host):
    answers['localhost'] = ['::1']
    with pytest.raises(UnsafeURL) as e: post(f'http://{host}:{server.server_port}/hooks')
    assert (e.value.reason, e.value.address, server.connections) == ('loopback', '::1', 0)
    assert post(f'http://{host}:{server.server_port}/hooks', allow_private=True).status_code == 204

def test_allowed_per_call_and_by_environment(server, monkeypatch):
    monkeypatch.delenv('WEBHOOKS_ALLOW_PRIVATE', raising=False)
    url = f'http://localhost:{server.server_port}/hooks'
    assert post(url, allow_private=True).status_code == 204
    monkeypatch.setenv('WEBHOOKS_ALLOW_PRIVATE', '1')
    assert post(url).status_code == 204
    assert server.requests == [('/hooks', f'localhost:{server.server_port}')] * 2

def test_connects_to_the_checked_address_keeping_the_host(server, answers):
    "`billing.test` exists only in the fake resolver: a success proves the socket went to the address checked."
    answers['billing.test'] = ['127.0.0.1']
    assert post(f'http://billing.test:{server.server_port}/hooks', allow_private=True).status_code == 204
    assert server.requests == [('/hooks', f'billing.test:{server.server_port}')]
    assert answers['asked'] == ['billing.test']

def test_dns_rebinding_refused_at_connect_time(server, answers):
    "The name answers a public address to `check_url`, then 127.0.0.1 when the client connects."
    replies = iter([['93.184.215.14'], ['127.0.0.1']])
    answers['rebind.test'] = lambda: next(replies)
    url = f'http://rebind.test:{server.server_port}/hooks'
    assert check_url(url) == ['93.184.215.14']
    with pytest.raises(UnsafeURL) as e: post(url)
    assert (e.value.reason, e.value.address) == ('loopback', '127.0.0.1')
    assert answers['asked'] == ['rebind.test', 'rebind.test']
    assert (server.connections, server.requests) == (0, [])

def test_every_address_checked_before_any_connection(server, answers):
    answers['mixed.test'] = ['127.0.0.1', '169.254.169.254']
    with pytest.raises(UnsafeURL) as e: post(f'http://mixed.test:{server.server_port}/hooks', allow_private=True)
    assert e.value.reason == 'cloud-metadata' and server.connections == 0

def test_falls_back_to_the_next_checked_address(server, answers):
    dead = Recorder(); port = server.server_port
    answers['two.test'] = ['127.0.0.3', '127.0.0.1']  # nothing listens on 127.0.0.3:port
    assert post(f'http://two.test:{port}/hooks', allow_private=True).status_code == 204
    assert server.requests == [('/hooks', f'two.test:{port}')]
    dead.server_close()

def test_sync_client_has_the_same_guard(server, answers):
    replies = iter([['93.184.215.14'], ['127.0.0.1']])
    answers['rebind.test'] = lambda: next(replies)
    answers['billing.test'] = ['127.0.0.1']
    url = f'http://rebind.test:{server.server_port}/hooks'
    assert check_url(url) == ['93.184.215.14']
    with guarded_client(sync=True, timeout=5) as c:
        assert isinstance(c, httpx.Client)
        with pytest.raises(UnsafeURL) as e: c.post(url, json={})
        assert (e.value.reason, server.connections) == ('loopback', 0)
    with guarded_client(allow_private=True, sync=True, timeout=5) as c:
        r = c.post(f'http://billing.test:{server.server_port}/hooks', json={})
    assert r.status_code == 204 and server.requests == [('/hooks', f'billing.test:{server.server_port}')]
    server.answer, server.location = 302, 'http://169.254.169.254/'
    with guarded_client(allow_private=True, sync=True, timeout=5) as c:
        assert c.post(f'http://127.0.0.1:{server.server_port}/old', json={}).status_code == 302
        with pytest.raises(UnsafeURL, match='cloud-metadata'):
            c.post(f'http://127.0.0.1:{server.server_port}/old', json={}, follow_redirects=True)

def test_redirect_answered_not_followed(server, monkeypatch):
    server.answer, server.location = 302, 'http://169.254.169.254/latest/meta-data/iam/'
    r = post(f'http://127.0.0.1:{server.server_port}/hooks', allow_private=True)
    assert (r.status_code, r.headers['location']) == (302, server.location) and len(server.requests) == 1

def test_redirect_hops_are_checked_even_when_a_caller_follows(server):
    server.answer, server.location = 307, 'http://169.254.169.254/latest/meta-data/iam/'
    async def go():
        async with guarded_client(allow_private=True, timeout=5) as c:
            return await c.post(f'http://127.0.0.1:{server.server_port}/hooks', json={}, follow_redirects=True)
    with pytest.raises(UnsafeURL) as e: asyncio.run(go())
    assert e.value.reason == 'cloud-metadata' and server.connections == 1

def test_unresolvable_and_slow_names_are_transient_errors(answers):
    answers['gone.test'] = socket.gaierror(socket.EAI_NONAME, 'Name or service not known')
    with pytest.raises(httpx.ConnectError): post('http://gone.test/hooks')
    release = threading.Event()
    answers['slow.test'] = lambda: release.wait(10) and ['127.0.0.1']
    async def go():
        async with guarded_client(allow_private=True, timeout=httpx.Timeout(5, connect=0.2)) as c:
            return await c.post('http://slow.test/hooks')
    try:
        with pytest.raises(httpx.ConnectTimeout): asyncio.run(go())
    finally: release.set()

def test_guarded_client_refuses_what_would_bypass_it():
    for kw in ({'proxy': 'http://127.0.0.1:3128'}, {'transport': httpx.AsyncHTTPTransport()},
               {'follow_redirects': True}, {'mounts': {}}):
        with pytest.raises(TypeError, match='bypass'): guarded_client(**kw)

def test_proxies_from_the_environment_are_not_used(server, monkeypatch):
    "A proxy would choose the address itself: `HTTP_PROXY` must not route around the guard."
    for var in ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'all_proxy'):
        monkeypatch.setenv(var, f'http://127.0.0.1:{server.server_port}')
    monkeypatch.delenv('NO_PROXY', raising=False); monkeypatch.delenv('no_proxy', raising=False)
    with pytest.raises(UnsafeURL): post(f'http://127.0.0.2:{server.server_port}/hooks')
    with pytest.raises(UnsafeURL): post('http://169.254.169.254/latest/meta-data/', allow_private=True)
    assert (server.connections, server.requests) == (0, [])

def test_client_options_still_apply(server):
    async def go():
        async with guarded_client(allow_private=True, headers={'user-agent': 'webhooks-forward'}, timeout=5,
                                  limits=httpx.Limits(max_connections=1)) as c:
            return [await c.post(f'http://127.0.0.1:{server.server_port}/hooks', content=b'{}') for _ in range(3)]
    assert [r.status_code for r in asyncio.run(go())] == [204] * 3
    assert server.connections == 1  # keep-alive: one checked connection, three requests

# ---- TLS: the socket goes to the checked address, the certificate is verified against the name
def certificate(name:str):
    "A CA and a certificate it signed for `name`, as PEM bytes (ca, cert, key)."
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now, pem = datetime.datetime.now(datetime.timezone.utc), serialization.Encoding.PEM
    def make(subject, issuer, key, sign_key, ca):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(hours=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca: b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return b.sign(sign_key, hashes.SHA256())
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = make('guard test CA', 'guard test CA', ca_key, ca_key, True)
    leaf = make(name, 'guard test CA', key, ca_key, False)
    return (ca.public_bytes(pem), leaf.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

def test_tls_verifies_the_name_while_connecting_to_the_checked_address(answers, tmp_path):
    ca, cert, key = certificate('billing.test')
    (tmp_path/'cert.pem').write_bytes(cert); (tmp_path/'key.pem').write_bytes(key)
    srv, snis = Recorder(), []
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path/'cert.pem', tmp_path/'key.pem')
    server_ctx.sni_callback = lambda sock, name, ctx: snis.append(name)
    srv.socket = server_ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        answers['billing.test'] = ['127.0.0.1']
        trust = ssl.create_default_context(cadata=ca.decode())
        r = post(f'https://billing.test:{srv.server_port}/hooks', allow_private=True, verify=trust)
        assert r.status_code == 204
        assert snis == ['billing.test'] and srv.requests == [('/hooks', f'billing.test:{srv.server_port}')]
        with pytest.raises(httpx.ConnectError, match='CERTIFICATE_VERIFY_FAILED|match'):  # same server, by address
            post(f'https://127.0.0.1:{srv.server_port}/hooks', allow_private=True, verify=trust)
        assert len(srv.requests) == 1
    finally: srv.shutdown(); srv.server_close()
