#!/usr/bin/env bash
# pg_ctl for pytest-postgresql on machines that run as root: pg_ctl and postgres refuse to run as root, so run the
# real pg_ctl as the `postgres` user, giving that user the folder pytest-postgresql made for the data directory.
set -euo pipefail
real=${WEBHOOKS_PG_CTL:-}
if [ -z "$real" ]; then
  real=$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$real" ] || real=$(command -v pg_ctl || true)
fi
[ -x "$real" ] || { echo "pg_ctl not found: apt-get install postgresql" >&2; exit 127; }
[ "$(id -u)" = 0 ] || exec "$real" "$@"
id postgres >/dev/null 2>&1 || { echo "no postgres user: apt-get install postgresql" >&2; exit 1; }
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    -D|--pgdata)
      parent=$(dirname "${args[$((i + 1))]}")  # pytest's temporary folder: the data directory and the log file go in it
      chown postgres: "$parent"
      d=$parent  # pytest's folders are 0700: let postgres pass through them (x only, no listing)
      while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done ;;
  esac
done
cd /  # postgres may not be able to enter the caller's working directory
exec runuser -u postgres -- "$real" "$@"
