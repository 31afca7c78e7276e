"""Fixtures shared by the tests: a throwaway PostgreSQL server, and `store`, which runs a behaviour test once per backend.

The server is started once per session, in a folder of its own, by pytest-postgresql's executor through `pg_ctl_as_postgres.sh` (these machines run as root
and `pg_ctl` refuses root). Without PostgreSQL the postgres cases skip, naming the install command; with `CI=true` they fail.
"""
import contextlib, glob, itertools, os, shutil, tempfile
from pathlib import Path
import pytest
from webhooks.store import SqliteStore

PG_CTL = Path(__file__).parent/'pg_ctl_as_postgres.sh'
IN_CI = os.environ.get('CI', '').lower() == 'true'
INSTALL = 'apt-get install postgresql (server) and pip install -e ".[dev]" (psycopg, pytest-postgresql)'

try:
    from port_for import get_port
    from pytest_postgresql.executors import PostgreSQLExecutor
except ImportError: PostgreSQLExecutor = None

def no_postgres(why:str):
    "Skip the test, naming the install command; in CI (`CI=true`) fail it instead: there a missing server is a bug."
    if IN_CI: pytest.fail(f'{why}; CI must run the PostgreSQL tests: {INSTALL}', pytrace=False)
    pytest.skip(f'{why}: {INSTALL}')

def server_binaries()->list[str]:
    "Folders holding both `pg_ctl` and `initdb`."
    dirs = sorted(glob.glob('/usr/lib/postgresql/*/bin'), reverse=True)
    if shutil.which('pg_ctl'): dirs.append(str(Path(shutil.which('pg_ctl')).resolve().parent))
    return [d for d in dirs if os.access(f'{d}/pg_ctl', os.X_OK) and os.access(f'{d}/initdb', os.X_OK)]

@pytest.fixture(scope='session')
def pg_server():
    """The session's throwaway PostgreSQL server (a pytest-postgresql executor), stopped and removed at the end.

    Its data directory, log and socket live in a folder of its own (`tempfile.mkdtemp`), not under pytest's base temp:
    pytest keeps only the last three `pytest-N` folders and deletes older ones when a session starts, so a server whose
    data lived there died as soon as a few other pytest sessions started on the machine."""
    if PostgreSQLExecutor is None: no_postgres('psycopg or pytest-postgresql is not installed')
    if not server_binaries(): no_postgres('PostgreSQL server binaries (pg_ctl, initdb) not found')
    if not os.access(PG_CTL, os.X_OK): PG_CTL.chmod(0o755)  # a checkout that lost the executable bit
    home = Path(tempfile.mkdtemp(prefix='webhooks-pg-'))
    try:
        for tries in range(5):  # another session may take the same free port between our pick and the server's bind
            ex = PostgreSQLExecutor(executable=str(PG_CTL), host='127.0.0.1', port=get_port(None), datadir=str(home/'data'),
                                    unixsocketdir=str(home), logfile=str(home/'postgresql.log'), startparams='-w',
                                    dbname='tests', user='postgres')
            try: ex.start(); break
            except Exception:
                with contextlib.suppress(Exception): ex.stop()
                if tries == 4: raise
                shutil.rmtree(home/'data', ignore_errors=True)
        ex.wait_for_postgres()
        yield ex
        ex.stop()
    finally: shutil.rmtree(home, ignore_errors=True)

_dbs = itertools.count()

@pytest.fixture
def pg_url(pg_server):
    "URL of a fresh, empty database on the session's server, dropped after the test."
    import psycopg
    base = f'postgresql://{pg_server.user}@{pg_server.host}:{pg_server.port}'
    name = f'webhooks_test_{os.getpid()}_{next(_dbs)}'
    with psycopg.connect(f'{base}/postgres', autocommit=True) as c: c.execute(f'CREATE DATABASE "{name}"')
    yield f'{base}/{name}'
    with psycopg.connect(f'{base}/postgres', autocommit=True) as c: c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

@pytest.fixture(params=['sqlite', 'postgres'])
def store(request, tmp_path):
    "A fresh, empty `Store` of each backend: a `SqliteStore` in a temporary folder, a `PgStore` on a fresh database."
    if request.param == 'sqlite': s = SqliteStore(tmp_path/'data')
    else:
        from webhooks.postgres import PgStore
        s = PgStore(request.getfixturevalue('pg_url'))
    yield s
    s.close()

def where(store)->str:
    "What names `store` to another process or a command line: its folder (`--root`), or its PostgreSQL URL (`--db`)."
    return store.url if hasattr(store, 'url') else str(store.root)

def q(tenant, query:str, args=()):
    "Rows of `query` (SQLite syntax, `?` parameters) run on `tenant`'s own tables, as dicts, on either backend."
    if hasattr(tenant, 'db'): return tenant.db.q(query, args)
    return tenant.q(query.replace('?', '%s'), args)

@pytest.fixture(name='q')
def q_fixture(): return q

@pytest.fixture(name='where')
def where_fixture(): return where
