"""Dashboard sessions live in the store (issue 27, items 1, 5, 6): logout ends a session everywhere, "log out all" and a
new admin token end every one, tokens are never taken from a URL, and forwarded headers count only from named proxies."""
import re, time
import httpx, pytest
from fasthtml.common import FastHTML
from starlette.testclient import TestClient
from webhooks.dashboard import install_dashboard
from webhooks.store import SqliteStore
from helpers import Serve

TOKEN = 'adm_tests-0123456789abcdef'

def csrf_in(html:str)->str: return re.search(r'value="([^"]+)" name="csrf"', html)[1]

def dashboard(store, token=TOKEN)->TestClient:
    app = FastHTML(sess_cls=None, secret_key='tests-only')
    install_dashboard(app, store, token=token)
    return TestClient(app)

def logged_in(c:TestClient, token=TOKEN)->TestClient:
    r = c.post('/admin/login', data={'csrf': csrf_in(c.get('/admin/login').text), 'token': token})
    assert r.status_code == 200 and r.url.path == '/admin/', r.text
    return c

def same_store(store):
    "Another store object over the same storage: another process's view of it."
    if isinstance(store, SqliteStore): return SqliteStore(store.root)
    from webhooks.postgres import PgStore
    return PgStore(store.url)

def opens(c:TestClient, cookie:str)->bool:
    "Does `cookie` open the overview (rather than redirect to the login form)?"
    c.cookies.clear(); c.cookies.set('webhooks_admin', cookie)
    return c.get('/admin/', follow_redirects=False).status_code == 200

def test_store_sessions(store):
    sid = store.new_session(TOKEN, 3600, now=1000.0)
    assert store.session_ok(sid, TOKEN, now=1001.0)
    assert not store.session_ok(sid, TOKEN, now=4600.0)                        # expired
    assert not store.session_ok(sid, 'adm_rotated-0123456789abcd', now=1001.0)  # made with another token
    assert not store.session_ok(sid + 'x', TOKEN, now=1001.0) and not store.session_ok(None, TOKEN)
    other = same_store(store)
    try:
        assert other.session_ok(sid, TOKEN, now=1001.0)
        assert other.end_session(sid) and not store.session_ok(sid, TOKEN, now=1001.0)
        assert not other.end_session(sid)
        a, b = store.new_session(TOKEN, 3600), store.new_session(TOKEN, 3600)
        assert other.end_sessions() == 2 and not store.session_ok(a, TOKEN) and not store.session_ok(b, TOKEN)
    finally: other.close()
    assert store.tenants() == []  # the sessions' storage is no tenant

def test_copied_cookie_refused_after_logout(store):
    c = logged_in(dashboard(store))
    copy = c.cookies['webhooks_admin']
    other = same_store(store)
    try:
        elsewhere = dashboard(other)  # another process serving the same store
        assert opens(elsewhere, copy)
        r = c.post('/admin/logout', data={'csrf': csrf_in(c.get('/admin/').text)}, follow_redirects=False)
        assert r.status_code == 303
        assert not opens(dashboard(store), copy) and not opens(elsewhere, copy)
    finally: other.close()

def test_log_out_all_sessions(store):
    one, two = logged_in(dashboard(store)), logged_in(dashboard(store))
    cookies = [one.cookies['webhooks_admin'], two.cookies['webhooks_admin']]
    page = one.get('/admin/').text
    assert 'Log out all sessions' in page and 'action="/admin/logout-all"' in page
    assert one.post('/admin/logout-all', data={}, follow_redirects=False).status_code == 403  # CSRF still needed
    assert opens(dashboard(store), cookies[1])
    r = one.post('/admin/logout-all', data={'csrf': csrf_in(page)}, follow_redirects=False)
    assert (r.status_code, r.headers['location']) == (303, '/admin/login')
    assert not any(opens(dashboard(store), k) for k in cookies)
    assert logged_in(dashboard(store))  # and one logs in again as before

def test_new_admin_token_ends_every_session(store):
    c = logged_in(dashboard(store))
    copy = c.cookies['webhooks_admin']
    assert opens(dashboard(store), copy)
    new = 'adm_rotated-0123456789abcd'
    assert not opens(dashboard(store, token=new), copy)
    assert logged_in(dashboard(store, token=new), token=new)
    # the store's own rule, whatever the cookie's signature: a session made with the old token is not live
    sid = store.new_session(TOKEN, 3600)
    assert store.session_ok(sid, TOKEN) and not store.session_ok(sid, new)

def test_tokens_in_the_url_refused(tmp_path):
    store = SqliteStore(tmp_path/'data')
    c = dashboard(store)
    csrf = csrf_in(c.get('/admin/login').text)
    r = c.post(f'/admin/login?token={TOKEN}', data={'csrf': csrf}, follow_redirects=False)
    assert r.status_code == 400 and 'set-cookie' not in r.headers and TOKEN not in r.text
    r = c.post(f'/admin/login?csrf={csrf}', data={'token': TOKEN}, follow_redirects=False)
    assert r.status_code == 400 and 'set-cookie' not in r.headers
    assert c.get(f'/admin/login?token={TOKEN}').status_code == 400
    logged_in(c)
    csrf = csrf_in(c.get('/admin/').text)
    r = c.post(f'/admin/logout-all?csrf={csrf}', data={}, follow_redirects=False)  # FastHTML would merge it into the form
    assert r.status_code == 400
    assert c.get('/admin/', follow_redirects=False).status_code == 200  # nothing happened
    assert c.get(f'/admin/events?token={TOKEN}').status_code == 400
    store.close()

# ---------------------------------------------------------------- forwarded headers, through webhooks-serve

def login(s:Serve, **headers)->httpx.Client:
    c = httpx.Client(base_url=s.url, headers=headers)
    r = c.post('/admin/login', data={'csrf': csrf_in(c.get('/admin/login').text), 'token': TOKEN})
    assert r.status_code == 303, r.text
    return c

def remotes(s:Serve, forged:str)->str:
    "The Rejected page after a forged delivery that claims to come from `forged`."
    r = httpx.post(f'{s.url}/webhooks/demo/demo', content=b'{}', headers={'X-Forwarded-For': forged,
                                                                          'Content-Type': 'application/json'})
    assert r.status_code in (400, 401), r.text
    c, deadline = login(s), time.monotonic() + 10
    while time.monotonic() < deadline:
        page = c.get('/admin/rejected?tenant=demo').text
        if f'<td>{forged}</td>' in page or '<td>127.0.0.1</td>' in page: return page  # the remote address column
        time.sleep(0.1)
    return page

def guesses(s:Serve)->list:
    "Six wrong tokens, each from a different forged address: the statuses and the last answer's text."
    out = []
    for i in range(6):
        c = httpx.Client(base_url=s.url, headers={'X-Forwarded-For': f'198.51.100.{i}'})
        r = c.post('/admin/login', data={'csrf': csrf_in(c.get('/admin/login').text), 'token': f'guess-{i}'})
        out.append(r.status_code)
    return out, r.text

ENV = {'WEBHOOKS_ADMIN_TOKEN': TOKEN, 'WEBHOOK_SECRET': 'whsec_tests_demo_0123456789'}

def test_forwarded_headers_ignored_by_default(tmp_path):
    with Serve('--root', tmp_path/'data', env=ENV) as s:
        page = remotes(s, '203.0.113.7')
        assert '<td>203.0.113.7</td>' not in page and '<td>127.0.0.1</td>' in page
        codes, text = guesses(s)
        assert codes == [401]*5 + [429] and 'Too many wrong tokens from 127.0.0.1' in text
    assert TOKEN not in s.err

def test_forwarded_headers_from_a_named_proxy(tmp_path):
    with Serve('--root', tmp_path/'data', '--forwarded-allow-ips', '127.0.0.1', env=ENV) as s:
        assert '<td>203.0.113.7</td>' in remotes(s, '203.0.113.7')
        codes, _ = guesses(s)
        assert codes == [401]*6  # each forged address has its own count: the operator said this proxy tells the truth

def test_token_in_url_not_logged(tmp_path):
    with Serve('--root', tmp_path/'data', env=ENV) as s:
        c = httpx.Client(base_url=s.url)
        csrf = csrf_in(c.get('/admin/login').text)
        r = c.post(f'/admin/login?token={TOKEN}', data={'csrf': csrf})
        assert r.status_code == 400 and TOKEN not in r.text
    assert TOKEN not in s.err and TOKEN not in s.out
