#!/usr/bin/env bash
# Installs PostgreSQL's server binaries (Debian package `postgresql`) when they are missing and
# prints the folder that holds initdb, pg_ctl and psql on stdout, for the tests to read as
# ZEPHR_ETL_TEST_PG_BIN. Everything else goes to stderr.
# .ci/run calls it as:   export ZEPHR_ETL_TEST_PG_BIN="$(bash .ci/postgres-setup.sh)"
# The tests start their own throwaway cluster (initdb into a temp dir, pg_ctl on 127.0.0.1 and
# a random port; as the `postgres` user when run as root). A failure (no apt, no network)
# prints nothing and exits 0: the PostgreSQL test then says SKIPPED.
set -uo pipefail
find_bin() {
  local dir
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  # Debian keeps the server binaries out of the PATH, one folder per major version.
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
    return 0
  fi
  return 1
}
if ! bin="$(find_bin)"; then
  {
    if command -v apt-get >/dev/null 2>&1; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq || true
      apt-get install -y -qq --no-install-recommends postgresql || true
    fi
  } >&2
  bin="$(find_bin)" || bin=""
fi
if [ -n "$bin" ]; then
  echo "$bin"
else
  echo "postgres-setup: PostgreSQL is not available; the PostgreSQL loading test is skipped" >&2
fi
exit 0
