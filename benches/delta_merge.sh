#!/usr/bin/env bash
# Benchmark of issue 22: merging a 20,000-user incremental export into Delta tables of
# 1,000,000 users (a local folder), against converting the same 20,000 users plainly.
#
# Usage (from anywhere):  benches/delta_merge.sh
# Options, by environment:
#   BASE=1000000   users in the tables before the merge
#   RUN=20000      users in the incremental export: RUN/2 that the tables hold (the first
#                  RUN/2 users of the base export: `generate` with the same seed gives the same
#                  first users) and RUN/2 new ones (another seed)
#   BIN=           the zephr-etl binary (default: target/release/zephr-etl, built here)
#
# Each step is timed (wall clock) and its peak RSS taken by /usr/bin/time when present. The
# generated exports go to benches/data/ (git-ignored) and are kept for later runs; the tables
# go to a temporary folder, removed at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BASE=${BASE:-1000000}
RUN=${RUN:-20000}
HALF=$((RUN / 2))
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/zephr-etl"
fi
mkdir -p benches/data
base_json="benches/data/export-$BASE-s1.json"
old_json="benches/data/export-$HALF-s1.json"
new_json="benches/data/export-$HALF-s2.json"
[ -s "$base_json" ] || "$BIN" generate --users "$BASE" --seed 1 --grants --attributes -o "$base_json"
[ -s "$old_json" ] || "$BIN" generate --users "$HALF" --seed 1 --grants --attributes -o "$old_json"
[ -s "$new_json" ] || "$BIN" generate --users "$HALF" --seed 2 --grants --attributes -o "$new_json"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs a step; prints "name  seconds  peak-RSS-MB".
measure() {
  local name=$1
  shift
  sync
  local start end rss=""
  start=$(date +%s.%N)
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "%M" -o "$work/rss" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    rss=$(awk '{printf "%.0f", $1 / 1024}' "$work/rss")
  else
    "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    rss="n/a"
  fi
  end=$(date +%s.%N)
  printf '%-44s %8.2f s %8s MB\n' "$name" "$(echo "$end - $start" | bc)" "$rss"
}

echo "zephr-etl $("$BIN" --version | cut -d' ' -f2), $(nproc) cores, base $BASE users, run $RUN users ($HALF already in the tables)"
measure "create Delta tables of $BASE users" \
  "$BIN" convert "$base_json" -o "$work/tables" --format delta --quiet
measure "plain convert of the $RUN users (csv+parquet)" \
  "$BIN" convert "$old_json" "$new_json" -o "$work/plain" --quiet
measure "plain convert of the $RUN users (parquet)" \
  "$BIN" convert "$old_json" "$new_json" -o "$work/plain-parquet" --format parquet --quiet
measure "merge the $RUN users into the tables" \
  "$BIN" convert "$old_json" "$new_json" -o "$work/tables" --format delta --merge --quiet
measure "merge the same $RUN users again" \
  "$BIN" convert "$old_json" "$new_json" -o "$work/tables" --format delta --merge --quiet
du -sh "$work/tables"/users "$work/tables"/grants "$work/tables"/attributes | sed 's/^/table size: /'
