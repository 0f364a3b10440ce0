#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the backend tests and print the exports to eval:
#   eval "$(bash .ci/postgres.sh)"   # sets MARKOV_TEST_POSTGRES_URL (and ..._STOP to shut it
#                                    # down and remove its directory)
# Uses Debian's postgresql package (installs it when missing and we are root). initdb refuses to
# run as root, so as root the cluster belongs to the `postgres` system user.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [[ -z "$bindir" ]]; then
  if [[ "$(id -u)" != 0 ]]; then log "PostgreSQL is not installed (apt-get install postgresql)"; exit 1; fi
  log "installing postgresql"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi

if [[ "$(id -u)" == 0 ]]; then
  owner=postgres
  as_owner() { runuser -u postgres -- "$@"; }
else
  owner="$(id -un)"
  as_owner() { "$@"; }
fi

dir="$(mktemp -d /tmp/markov-pg.XXXXXX)"
chown "$owner" "$dir"
chmod 700 "$dir"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
  -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >&2 || { cat "$dir/server.log" >&2; exit 1; }
as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres markov_test >&2

log "cluster in $dir on 127.0.0.1:$port"
echo "export MARKOV_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$port/markov_test"
if [[ "$(id -u)" == 0 ]]; then
  stop="runuser -u postgres -- $bindir/pg_ctl -D $dir/data -m immediate stop"
else
  stop="$bindir/pg_ctl -D $dir/data -m immediate stop"
fi
# Stopping also removes the cluster's directory (tens of MB), so runs leave nothing in /tmp.
echo "export MARKOV_TEST_POSTGRES_STOP='$stop >/dev/null; rm -rf $dir'"
