#!/usr/bin/env bash
# Benchmark of issue 23: zephr-etl straight into PostgreSQL against psql loading the
# postgres-dialect CSVs of the same export, in one run of this script.
#
# Usage (from anywhere; no arguments):  benches/postgres.sh
# Options, by environment:
#   USERS=200000     users in the generated export (--grants --attributes --seed 1)
#   PG_BIN=          PostgreSQL's bin folder (default: ZEPHR_ETL_TEST_PG_BIN, else the newest
#                    /usr/lib/postgresql/N/bin)
#   PORT=55433       the throwaway cluster's port on 127.0.0.1
#   BIN=             the zephr-etl binary (default: a release build of this checkout)
#
# What it does: builds the release binary; generates benches/data/export-$USERS.json (kept;
# benches/data/ is git-ignored); converts it once into postgres-dialect CSVs (timed too: the
# peer's first step); starts a throwaway cluster (initdb, default settings, fsync on); then
# times, with /usr/bin/time -v (wall clock and peak RSS of the client process):
#   (a) zephr-etl convert -o postgresql://.../?schema=tool            (create: empty tables)
#   (b) zephr-etl convert -o postgresql://.../?schema=tool --merge    (the same export again)
#   (c) psql -1: the same tables (schema --dialect postgres, the same key and indexes), then
#       \copy of the three CSVs                                         (create)
#   (d) psql -1 of `zephr-etl load-sql --dialect postgres --merge`: \copy into staging tables
#       and the same merge, statement by statement                      (merge)
# and prints a Markdown table with the ratios. psql's RSS is the client's only; the server's
# work is in both tools' wall clock.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
USERS=${USERS:-200000}
PORT=${PORT:-55433}
DATA=benches/data
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=$TARGET/release/zephr-etl
fi
if [ -z "${PG_BIN:-}" ]; then
    PG_BIN=${ZEPHR_ETL_TEST_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
fi
[ -x /usr/bin/time ] || { echo "benches/postgres.sh needs /usr/bin/time (GNU time)" >&2; exit 1; }
mkdir -p "$DATA"
EXPORT=$DATA/export-$USERS.json
[ -s "$EXPORT" ] || "$BIN" generate --users "$USERS" --grants --attributes --seed 1 -o "$EXPORT"

WORK=$(mktemp -d)
AS=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$WORK"
    AS=(runuser -u postgres --)
fi
cleanup() {
    "${AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
"${AS[@]}" "$PG_BIN/initdb" -D "$WORK/data" -U postgres -A trust -E UTF8 --no-locale >/dev/null
"${AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w \
    -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null
export PGOPTIONS="-c client_min_messages=warning"
PSQL=("$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1)
URL="postgresql://postgres@127.0.0.1:$PORT/postgres"

RESULTS=$WORK/results.tsv
: >"$RESULTS"
# timed NAME COMMAND...: runs it under /usr/bin/time -v; records wall seconds and peak RSS (MB).
timed() {
    local name=$1
    shift
    sync
    /usr/bin/time -v -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/stderr.txt" ||
        { cat "$WORK/stderr.txt" >&2; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {
        n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$WORK/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$WORK/time.txt")
    printf '%s\t%s\t%s\n' "$name" "$wall" "$rss" >>"$RESULTS"
    printf '%-44s %8.2f s %6s MB\n' "$name" "$wall" "$rss" >&2
}

CSV=$WORK/csv
timed "convert to postgres CSV (peer's step 1)" \
    "$BIN" convert -q "$EXPORT" -o "$CSV" --format csv --csv-dialect postgres
timed "zephr-etl -o postgresql:// (create)" "$BIN" convert -q "$EXPORT" -o "$URL?schema=tool"
timed "zephr-etl -o postgresql:// --merge" "$BIN" convert -q "$EXPORT" -o "$URL?schema=tool" --merge

# The peer: the same tables, key and indexes, then \copy of each CSV, in one transaction.
{
    echo "CREATE SCHEMA peer; SET search_path = peer;"
    "$BIN" schema --dialect postgres
    echo "ALTER TABLE users ADD PRIMARY KEY (user_id);"
    echo "CREATE INDEX grants_user_id_idx ON grants (user_id);"
    echo "CREATE INDEX attributes_user_id_idx ON attributes (user_id);"
    for table in users grants attributes; do
        echo "\\copy $table FROM '$CSV/$table.csv' WITH (FORMAT csv, HEADER)"
    done
} >"$WORK/create.sql"
timed "psql \\copy of the CSVs (create)" "${PSQL[@]}" -1 -f "$WORK/create.sql"
"$BIN" load-sql --dialect postgres --merge --schema peer "$CSV/manifest.json" >"$WORK/merge.sql"
timed "psql load-sql --merge of the CSVs" "${PSQL[@]}" -f "$WORK/merge.sql"

# Both sides hold the same rows.
for table in users grants attributes; do
    tool=$("${PSQL[@]}" -tAc "SELECT count(*) FROM tool.$table")
    peer=$("${PSQL[@]}" -tAc "SELECT count(*) FROM peer.$table")
    [ "$tool" = "$peer" ] || { echo "$table: tool $tool rows, peer $peer" >&2; exit 1; }
done
users=$("${PSQL[@]}" -tAc "SELECT count(*) FROM tool.users")

awk -F'\t' -v users="$users" -v cpus="$(nproc)" -v export_mb="$(du -m "$EXPORT" | cut -f1)" '
    { name[NR] = $1; wall[NR] = $2; rss[NR] = $3 }
    END {
        printf "\n%d users (%s MB export), %s CPUs, PostgreSQL default settings\n\n", users, export_mb, cpus
        print "| step | wall s | peak RSS MB |"
        print "|---|---:|---:|"
        for (i = 1; i <= NR; i++) printf "| %s | %.2f | %d |\n", name[i], wall[i], rss[i]
        printf "\ncreate: zephr-etl %.2f s vs convert + \\copy %.2f s (ratio %.2f; \\copy alone %.2f s)\n",
            wall[2], wall[1] + wall[4], wall[2] / (wall[1] + wall[4]), wall[4]
        printf "merge:  zephr-etl %.2f s vs convert + load-sql --merge %.2f s (ratio %.2f)\n",
            wall[3], wall[1] + wall[5], wall[3] / (wall[1] + wall[5])
    }' "$RESULTS"
