#!/usr/bin/env bash
# Installs the Python readers the tests check outputs with (duckdb, pyarrow, openpyxl for the
# workbooks, sqlglot to parse each warehouse's DDL, deltalake to read the Delta tables) into
# .venv-ci (once) and prints that venv's
# python path on stdout, for the tests to read as ZEPHR_ETL_TEST_PYTHON. Everything else goes
# to stderr.
# .ci/run calls it as:   export ZEPHR_ETL_TEST_PYTHON="$(bash .ci/duckdb-setup.sh)"
# A failure (no python3, no network) prints nothing and exits 0: the tests then check the
# Parquet files with the Rust reader instead and say so.
set -uo pipefail
cd "$(dirname "$0")/.."
venv=.venv-ci
python="$PWD/$venv/bin/python"
{
  if ! "$python" -c 'import duckdb, pyarrow.dataset, openpyxl, sqlglot, deltalake' 2>/dev/null; then
    python3 -m venv "$venv" &&
      "$venv/bin/pip" install --quiet --disable-pip-version-check duckdb pyarrow openpyxl sqlglot deltalake
  fi
} >&2
# Without deltalake only the Delta tests go without their reader (they say SKIPPED).
if "$python" -c 'import duckdb, pyarrow.dataset, openpyxl, sqlglot' 2>/dev/null; then
  echo "$python"
else
  echo "duckdb-setup: DuckDB is not available; the tests fall back to the Rust Parquet reader" >&2
fi
exit 0
