"""Fail loudly when an installed dependency does not satisfy what pyproject.toml declares (e.g. resolved below its lower bound).

Run by .ci/run right after `pip install -e ".[dev]"`: checks `[project].dependencies` and the `dev` and `postgres` extras
against the versions installed in the running interpreter, and prints each one, so a CI log shows what the run used."""
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from packaging.requirements import Requirement

try: import tomllib
except ImportError: import tomli as tomllib  # Python 3.10

proj = tomllib.loads((Path(__file__).resolve().parent.parent/'pyproject.toml').read_text())['project']
reqs = [*proj['dependencies'], *proj['optional-dependencies']['dev'], *proj['optional-dependencies']['postgres']]
bad, seen = [], set()
for line in reqs:
    r = Requirement(line)
    if r.name in seen or (r.marker and not r.marker.evaluate()): continue
    seen.add(r.name)
    try: v = version(r.name)
    except PackageNotFoundError: bad.append(f'{r.name} is not installed (pyproject.toml wants {line!r})'); continue
    ok = r.specifier.contains(v, prereleases=True)
    print(f'  {"ok " if ok else "BAD"} {r.name:28} {v:14} {str(r.specifier) or "(any)"}')
    if not ok: bad.append(f'{r.name} {v} does not satisfy {line!r}')
if bad: sys.exit('dependencies out of bounds:\n  ' + '\n  '.join(bad))
print(f'{len(seen)} declared dependencies installed within their bounds')
