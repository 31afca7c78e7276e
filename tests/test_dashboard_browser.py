"""The dashboard in a real browser: Playwright driving Debian's Chromium against uvicorn on 127.0.0.1.

One server for the module (receiver + worker + dashboard over a fresh SQLite store, tenant `acme`
with a Stripe source), one Chromium, one logged-in page. Each test checks what it shows against
the store itself, so the tests do not depend on each other's order. Screenshots of the main pages
go to docs/screenshots/ (shown in nbs/14_dashboard.ipynb and the README).

Without Chromium or Playwright the module is skipped (apt-get install chromium; pip install -e ".[dev]"),
except with CI=true, where that is a failure."""
import tempfile
import inspect, json, os, re, secrets, time
from contextlib import closing
from types import SimpleNamespace
from pathlib import Path

import httpx
import pytest

CHROMIUM = '/usr/bin/chromium'
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--no-first-run']
SHOTS = Path(__file__).resolve().parent.parent/'docs'/'screenshots'  # rewritten only with WEBHOOKS_SCREENSHOTS=1
TMP_SHOTS = Path(tempfile.gettempdir())/'webhooks-screenshots'    # otherwise: a test run leaves the checkout as it was

def _browser_missing():
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return 'Playwright is not installed: pip install -e ".[dev]"'
    if not Path(CHROMIUM).exists(): return f'no Chromium at {CHROMIUM}: apt-get install -y chromium'

if (why := _browser_missing()):
    if os.environ.get('CI') == 'true': pytest.fail(f'{why} (CI=true: the browser tests must run, not skip)', pytrace=False)
    pytest.skip(why, allow_module_level=True)

from playwright.sync_api import expect, sync_playwright
from fasthtml.common import FastHTML
from webhooks.dashboard import install_dashboard
from webhooks.routes import install_webhooks
from webhooks.signatures import fingerprint, sign
from webhooks.store import SqliteStore
from webhooks.worker import Alerts, Handlers, install_worker

TOKEN = 'wh-admin-' + secrets.token_hex(12)
STRIPE = 'whsec_browser_' + secrets.token_hex(12)
LEDGER = {'up': False}
NEEDS = ('stats', 'hourly', 'rejections', 'rejection_counts', 'secrets')  # store methods beyond the engine's

# ---------------------------------------------------------------- server, data, browser

from helpers import Server

def deliver(url, etype, secret=STRIPE, source='stripe', extra=None, **kw):
    body = json.dumps({'id': 'evt_' + secrets.token_hex(8), 'object': 'event', 'type': etype,
                       'data': {'object': {'id': 'in_' + secrets.token_hex(4), 'amount_due': 4200}}}).encode()
    h = {'Content-Type': 'application/json', **sign('stripe', body, secret, **kw), **(extra or {})}
    return httpx.post(f'{url}/webhooks/acme/{source}', content=body, headers=h, timeout=10)

def settled(store, timeout=10.0):
    "Wait until tenant acme has no pending or processing event."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with closing(store.open('acme')) as t:
            if not t.events(status=('pending', 'processing'), limit=1): return
        time.sleep(0.05)
    raise AssertionError('the worker did not finish in time')

def pg_database(request):
    "A fresh PostgreSQL database on the session's throwaway server (see conftest.py), dropped at the end of the module."
    import psycopg
    srv = request.getfixturevalue('pg_server')
    base, name = f'postgresql://{srv.user}@{srv.host}:{srv.port}', f'webhooks_dash_{os.getpid()}'
    with psycopg.connect(f'{base}/postgres', autocommit=True) as c: c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'); c.execute(f'CREATE DATABASE "{name}"')
    def drop():
        with psycopg.connect(f'{base}/postgres', autocommit=True) as c: c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    request.addfinalizer(drop)
    return f'{base}/{name}'

@pytest.fixture(scope='module', params=['sqlite', 'postgres'])
def site(request, tmp_path_factory):
    """The server and its store (each backend in turn), with 3 paid invoices, 2 failed dunnings (dead letters),
    3 unhandled customers, 55 completed charges (more than a page), and one delivery carrying credentials in headers."""
    if request.param == 'sqlite': store = SqliteStore(tmp_path_factory.mktemp('dash')/'data')
    else:
        from webhooks.postgres import PgStore
        store = PgStore(pg_database(request))
    with closing(store.open('acme', create=True)) as t:
        missing = [m for m in NEEDS if not callable(getattr(t, m, None))]
        missing += [] if 'until' in inspect.signature(t.events).parameters else ['events(until=)']
        if missing: pytest.fail(f'{type(t).__name__} lacks {", ".join(missing)}: the dashboard reads through them', pytrace=False)
        t.add_source('stripe', 'stripe', STRIPE)
    h = Handlers()
    h.on('invoice.paid')(lambda ev: 'booked')
    h.on('charge.*')(lambda ev: 'ok')
    @h.on('invoice.payment_failed')
    def dun(ev):
        if not LEDGER['up']: raise ConnectionError('ledger API timed out after 10 s')
    app = FastHTML(sess_cls=None, secret_key='tests')
    rcv = install_webhooks(app, store)
    install_worker(app, receiver=rcv, handlers=h, max_attempts=1, poll=0.2, alerts=Alerts())
    install_dashboard(app, store, token=TOKEN)
    with Server(app) as srv:
        for etype, n in (('charge.succeeded', 55), ('invoice.paid', 3), ('invoice.payment_failed', 2), ('customer.created', 3)):
            for _ in range(n): assert deliver(srv.url, etype).status_code == 200
        r = deliver(srv.url, 'invoice.paid', extra={'Authorization': 'Bearer sk_live_do_not_store', 'Cookie': 'session=do-not-store'})
        assert r.status_code == 200
        with closing(store.open('acme')) as t: marked = t.find(r.json()['id'])
        settled(store)
        yield SimpleNamespace(url=srv.url, store=store, marked=marked, screenshots=request.param == 'sqlite')
    store.close()

@pytest.fixture(scope='module')
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()

def login(page, url, token=TOKEN):
    page.fill('input[name=token]', token)
    page.click('button:has-text("Log in")')

@pytest.fixture(scope='module')
def admin(site, browser):
    "A page logged in to the dashboard."
    srv = site
    ctx = browser.new_context(viewport={'width': 1280, 'height': 860})
    page = ctx.new_page()
    page.goto(f'{srv.url}/admin/login')
    login(page, srv.url)
    expect(page).to_have_url(f'{srv.url}/admin/')
    yield page
    ctx.close()

def shot(site, page, name):
    "Save a screenshot of `page` as docs/screenshots/<name>.png (from the SQLite run)."
    if not site.screenshots: return
    where = SHOTS if os.environ.get('WEBHOOKS_SCREENSHOTS') == '1' else TMP_SHOTS
    where.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(where/f'{name}.png'), full_page=True)

def events(store, **kw):
    with closing(store.open('acme')) as t: return t.events(limit=1000, **kw)

# ---------------------------------------------------------------- login

def test_login_redirects_and_shows_no_data_before(site, browser):
    srv, store = site, site.store
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f'{srv.url}/admin/events?tenant=acme&status=failed')
    expect(page).to_have_url(re.compile(r'/admin/login\?next='))
    assert 'evt_' not in page.content() and 'acme' not in page.inner_text('body')
    login(page, srv.url, token='wh-admin-wrong-guess-0000')
    expect(page.locator('.msg.error')).to_have_text('Wrong token.')
    shot(site, page, 'login')
    login(page, srv.url)
    expect(page).to_have_url(f'{srv.url}/admin/events?tenant=acme&status=failed')  # lands where it was going
    expect(page.locator('table.events tbody tr')).to_have_count(len(events(store, status='failed')))
    cookie, = [c for c in ctx.cookies() if c['name'] == 'webhooks_admin']
    assert cookie['httpOnly'] and cookie['sameSite'] == 'Lax' and cookie['path'] == '/admin'
    page.click('button:has-text("Log out")')
    expect(page).to_have_url(f'{srv.url}/admin/login')
    page.goto(f'{srv.url}/admin/')
    expect(page).to_have_url(re.compile(r'/admin/login'))
    ctx.close()

# ---------------------------------------------------------------- overview, events, detail

def test_overview_counts_and_chart(site, admin):
    srv, store = site, site.store
    admin.goto(f'{srv.url}/admin/')
    card = admin.locator('section.card', has=admin.locator('h2', has_text='acme'))
    with closing(store.open('acme')) as t: counts = t.stats()['counts']
    for status in ('completed', 'failed', 'unhandled'):
        expect(card.locator('.num', has=admin.locator('small', has_text=re.compile(f'^{status}$'))).locator('strong')
               ).to_have_text(str(counts[status]))
    expect(card.locator('svg.chart polyline')).to_have_count(4)
    expect(card.locator('.legend')).to_contain_text(f'received {sum(counts.values())}')
    expect(card.locator('ul.alerts li', has_text='dead_letter').first).to_contain_text('ledger API timed out')  # the worker's alerts
    shot(site, admin, 'overview')

def test_filters(site, admin):
    srv, store = site, site.store
    admin.goto(f'{srv.url}/admin/events?tenant=acme')
    everything, rows = events(store), admin.locator('table.events tbody tr')
    expect(rows).to_have_count(50)                                               # a page, newest first
    first = rows.locator('td:nth-child(3)').all_inner_texts()
    assert first == [e.id for e in everything[:50]]
    admin.click('text=older →')                                                  # the next page: before=<last seq shown>
    expect(admin).to_have_url(re.compile(f'before={everything[49].seq}'))
    assert rows.locator('td:nth-child(3)').all_inner_texts() == [e.id for e in everything[50:100]]
    admin.fill('input[name=type]', 'invoice.')
    admin.select_option('select[name=status]', 'failed')
    admin.click('button:has-text("Filter")')
    expect(admin).to_have_url(re.compile(r'status=failed'))
    want = events(store, status='failed', type='invoice.')
    assert want
    expect(rows).to_have_count(len(want))
    expect(rows.first).to_contain_text('ledger API timed out')
    shot(site, admin, 'events')
    admin.fill('input[name=type]', 'customer.*')               # a wildcard
    admin.select_option('select[name=status]', '')
    admin.click('button:has-text("Filter")')
    expect(rows).to_have_count(len(events(store, type='customer.*')))

def test_detail_redacts_headers(site, admin):
    srv, store = site, site.store
    e = events(store, seqs=[site.marked])[0]   # delivered with Authorization and Cookie headers
    admin.goto(f'{srv.url}/admin/events/acme/{e.seq}')
    headers = admin.locator('table.headers')
    sig = headers.locator('tr', has=admin.locator('th', has_text='stripe-signature')).locator('td code')
    expect(sig).to_have_text(re.compile(r'^t=\d+…$'))                        # masked after its first characters
    text = admin.content()
    assert 'sk_live_do_not_store' not in text and 'do-not-store' not in text  # Authorization and Cookie never stored
    assert STRIPE not in text and 'v1=' not in text
    expect(admin.locator('pre.json')).to_contain_text(f'"id": "{e.id}"')
    expect(admin.locator('table.timeline tbody tr')).to_have_count(1)

def test_replay_adds_an_attempt(site, admin):
    srv, store = site, site.store
    e = events(store, status='failed', type='invoice.payment_failed')[0]
    admin.goto(f'{srv.url}/admin/events/acme/{e.seq}')
    expect(admin.locator('table.timeline tbody tr')).to_have_count(1)
    LEDGER['up'] = True
    try:
        admin.click('button:has-text("Replay")')
        expect(admin.locator('.msg')).to_contain_text('Queued for replay')
        deadline = time.monotonic() + 30  # a replay is found at the worker's next poll
        while admin.locator('table.timeline tbody tr').count() < 2 and time.monotonic() < deadline:
            time.sleep(0.1); admin.reload()
    finally: LEDGER['up'] = False
    outcomes = admin.locator('table.timeline tbody tr td:nth-child(4)').all_inner_texts()
    assert outcomes == ['failed', 'completed'], outcomes
    expect(admin.locator('table.facts')).to_contain_text('completed')
    shot(site, admin, 'event')

def test_bulk_replay(site, admin):
    srv, store = site, site.store
    n = len(events(store, status='unhandled'))
    assert n >= 3
    admin.goto(f'{srv.url}/admin/events?tenant=acme&status=unhandled')
    admin.click('text=Replay all matching…')
    expect(admin.locator('main')).to_contain_text(f'{n} events of acme with status unhandled')
    admin.click(f'button:has-text("Replay {n} events")')
    expect(admin).to_have_url(re.compile(r'/admin/replay/[\w-]+$'))
    expect(admin.locator('.progress')).to_contain_text(f'{n} of {n} done.', timeout=15_000)  # the page reloads itself
    shot(site, admin, 'replay')
    with closing(store.open('acme')) as t:                                      # each ran a second time
        assert [len(t.attempts(e.seq)) for e in events(store, status='unhandled')] == [2] * n

# ---------------------------------------------------------------- rejected, sources

def test_rejected_after_forged_stale_and_unknown_source(site, admin):
    srv, store = site, site.store
    assert deliver(srv.url, 'invoice.paid', secret='whsec_forged_' + secrets.token_hex(8)).status_code == 401
    assert deliver(srv.url, 'invoice.paid', timestamp=int(time.time()) - 1000).status_code == 401
    assert deliver(srv.url, 'invoice.paid', source='strpie').status_code == 404
    admin.goto(f'{srv.url}/admin/rejected?tenant=acme')
    reasons = admin.locator('table.reasons')
    deadline = time.monotonic() + 1.0   # recorded off the request path, but within a second
    while not all(c in reasons.inner_text() for c in ('invalid_signature', 'stale_timestamp', 'unknown_source')):
        assert time.monotonic() < deadline, reasons.inner_text()
        time.sleep(0.1); admin.reload()
    rows = admin.locator('table.rejections tbody tr')
    stale = rows.filter(has=admin.locator('code', has_text='stale_timestamp')).first
    expect(stale).to_contain_text(re.compile(r'tolerance 300 s'))
    expect(stale).to_contain_text('127.0.0.1')
    stale.locator('summary', has_text='headers and body').click()
    expect(stale.locator('table.headers')).to_contain_text('stripe-signature')
    expect(stale.locator('pre.json')).to_contain_text('"object": "event"')
    shot(site, admin, 'rejected')

def test_rotation_and_signed_test_event(site, admin):
    srv, store = site, site.store
    new = 'whsec_rotated_' + secrets.token_hex(12)
    admin.goto(f'{srv.url}/admin/sources?tenant=acme')
    card = admin.locator('#source-stripe')
    expect(card.locator('table.secrets tbody tr')).to_have_count(1)
    card.locator('form[action$="/add"] input[name=secret]').fill(new)
    card.locator('button:has-text("Add secret")').click()
    expect(admin.locator('.msg')).to_contain_text('Secret added')
    expect(card.locator('table.secrets tbody tr')).to_have_count(2)
    expect(card.locator('table.secrets')).to_contain_text(fingerprint(new))
    assert deliver(srv.url, 'invoice.paid').status_code == 200                # old and new both verify
    assert deliver(srv.url, 'invoice.paid', secret=new).status_code == 200
    card.locator('form[action$="/test"] input[name=secret]').fill(new)
    card.locator('form[action$="/test"] input[name=event]').fill('invoice.paid')
    card.locator('button:has-text("Send a signed test event")').click()
    expect(admin.locator('.msg')).to_contain_text('200')
    expect(admin.locator('.msg pre')).to_contain_text('"duplicate":false')
    shot(site, admin, 'sources')
    old = card.locator('table.secrets tbody tr', has=admin.locator('code', has_text=fingerprint(STRIPE)))
    old.locator('button:has-text("Retire")').click()
    expect(admin.locator('.msg')).to_contain_text('Secret retired')
    expect(card.locator('table.secrets tbody tr')).to_have_count(1)
    assert deliver(srv.url, 'invoice.paid').status_code == 401                # the retired secret no longer verifies
    assert deliver(srv.url, 'invoice.paid', secret=new).status_code == 200

def test_pause_and_resume_a_source(site, admin):
    "Pause shows 'paused' and holds what arrives (stored, not handled); Resume clears it and the held event runs; rates show."
    from webhooks.store import NewEvent
    srv, store = site, site.store
    admin.goto(f'{srv.url}/admin/sources?tenant=acme')
    card = admin.locator('#source-stripe')
    expect(card.locator('p.about .st-paused')).to_have_count(0)
    card.locator('button:has-text("Pause")').click()
    expect(admin.locator('.msg')).to_contain_text('Source paused')
    expect(card.locator('p.about .st-paused')).to_have_text('paused')
    expect(card.locator('button:has-text("Resume")')).to_have_count(1)
    with closing(store.open('acme')) as t:
        assert t.sources()[0].paused is True
        (seq,) = t.log([NewEvent('evt_held_' + secrets.token_hex(4), 'stripe', 'invoice.paid', '{}', 'v1=…', 'stripe:held-' + secrets.token_hex(4))])
    time.sleep(1.0)                                                           # five of the worker's polls
    assert events(store, seqs=[seq])[0].status == 'pending'                  # stored, held
    card.locator('button:has-text("Resume")').click()
    expect(admin.locator('.msg')).to_contain_text('Source resumed')
    expect(card.locator('p.about .st-paused')).to_have_count(0)
    settled(store)
    assert events(store, seqs=[seq])[0].status == 'completed'
    card.locator('input[name=rate_limit]').fill('40')
    card.locator('input[name=handler_rate]').fill('2.5')
    card.locator('button:has-text("Set rates")').click()
    expect(admin.locator('.msg')).to_contain_text('Rates set')
    expect(card.locator('p.about')).to_contain_text('at most 40 deliveries/s')
    expect(card.locator('p.about')).to_contain_text('handlers at most 2.5/s')
    with closing(store.open('acme')) as t: assert (t.sources()[0].rate_limit, t.sources()[0].handler_rate) == (40.0, 2.5)
    card.locator('input[name=rate_limit]').fill('')                          # empty: no limit
    card.locator('input[name=handler_rate]').fill('')
    card.locator('button:has-text("Set rates")').click()
    expect(card.locator('p.about')).not_to_contain_text('at most')
    with closing(store.open('acme')) as t: assert (t.sources()[0].rate_limit, t.sources()[0].handler_rate) == (None, None)

# ---------------------------------------------------------------- CSRF

def test_post_without_csrf_token_is_refused(site, admin):
    srv, store = site, site.store
    e = events(store, status=('completed', 'failed', 'unhandled'))[0]
    cookie, = [c['value'] for c in admin.context.cookies() if c['name'] == 'webhooks_admin']
    with httpx.Client(base_url=srv.url, headers={'Cookie': f'webhooks_admin={cookie}'}, timeout=10) as c:
        assert c.get(f'/admin/events/acme/{e.seq}').status_code == 200            # the session is good
        for data in ({}, {'csrf': 'forged-' + secrets.token_urlsafe(8)}):
            r = c.post(f'/admin/events/acme/{e.seq}/replay', data=data)
            assert r.status_code == 403, r.text
            r = c.post('/admin/sources/acme/retire', data={**data, 'name': 'stripe', 'fingerprint': 'fp_0'})
            assert r.status_code == 403, r.text
    assert events(store, seqs=[e.seq])[0].note == e.note                         # nothing was queued
    r = httpx.post(f'{srv.url}/admin/events/acme/{e.seq}/replay', data={}, follow_redirects=False)  # no session at all
    assert (r.status_code, r.headers['location']) == (303, '/admin/login')
