#!/usr/bin/env bash
# Installs moto's standalone S3 server and pyarrow into .venv-ci (once) and prints that venv's
# python path on stdout, for the object-store tests to read as ZEPHR_ETL_TEST_S3_PYTHON. They
# start `python -m moto.server -H 127.0.0.1 -p PORT` themselves, one server per test binary,
# on a free loopback port; no traffic leaves the machine. Everything else goes to stderr.
# .ci/run calls it as:   export ZEPHR_ETL_TEST_S3_PYTHON="$(bash .ci/s3-setup.sh)"
# A failure (no python3, no network) prints nothing and exits 0: the tests then print a
# visible skip line instead of passing silently.
set -uo pipefail
cd "$(dirname "$0")/.."
venv=.venv-ci
python="$PWD/$venv/bin/python"
check='import moto.server, pyarrow.fs, flask_cors'
{
  if ! "$python" -c "$check" 2>/dev/null; then
    { [ -x "$python" ] || python3 -m venv "$venv"; } &&
      "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' pyarrow
  fi
} >&2
if "$python" -c "$check" 2>/dev/null; then
  echo "$python"
else
  echo "s3-setup: moto's S3 server is not available; the object-store tests will say they were skipped" >&2
fi
exit 0
