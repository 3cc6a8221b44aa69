#!/usr/bin/env bash
# Installs Azurite (npm package `azurite`, Microsoft's Azure Storage emulator) into .ci-node
# (once) and prints the path of its blob server, azurite-blob, on stdout, for the Azure tests
# to read as ZEPHR_ETL_TEST_AZURITE_BIN. They start `azurite-blob --blobHost 127.0.0.1
# --blobPort PORT --inMemoryPersistence --disableTelemetry` themselves, one server per test
# binary, on a free loopback port; no traffic leaves the machine. Everything else goes to
# stderr.
# .ci/run calls it as:   export ZEPHR_ETL_TEST_AZURITE_BIN="$(bash .ci/azure-setup.sh)"
# A failure (no node or npm, no network) prints nothing and exits 0: the tests then print a
# visible skip line instead of passing silently.
set -uo pipefail
cd "$(dirname "$0")/.."
prefix="$PWD/.ci-node"
bin="$prefix/node_modules/.bin/azurite-blob"
{
  if ! [ -x "$bin" ] && command -v npm >/dev/null 2>&1; then
    mkdir -p "$prefix" &&
      npm install --prefix "$prefix" --no-audit --no-fund --no-save --silent azurite
  fi
} >&2
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
else
  echo "azure-setup: Azurite is not available; the az:// tests will say they were skipped" >&2
fi
exit 0
