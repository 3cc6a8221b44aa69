#!/usr/bin/env bash
# A/B of two revisions end to end: builds each revision's release binary and converts the
# same export with both and with DuckDB, interleaved (DuckDB, A, B, DuckDB, A, B, ...), so
# that a noisy machine disturbs all three alike. Prints one line per run and the medians.
#
# Usage:  benches/ab.sh REV_A REV_B          (for example: benches/ab.sh bdca70c 3cc8a33)
# Options, by environment: USERS=200000 (the export benches/compare.sh generates; run it once
# first, it also makes the DuckDB venv benches/.venv), ROUNDS=7.
# Builds go to benches/data/ab/ (git-ignored), one target folder shared by both revisions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -eq 2 ] || { sed -n 2,9p "$0" >&2; exit 2; }
USERS=${USERS:-200000}
ROUNDS=${ROUNDS:-7}
EXPORT=benches/data/export-$USERS.json
PY=benches/.venv/bin/python
AB=benches/data/ab
[ -f "$EXPORT" ] && [ -x "$PY" ] || {
  echo "missing $EXPORT or $PY: run USERS=$USERS benches/compare.sh once first" >&2
  exit 2
}
mkdir -p "$AB"
for rev in "$1" "$2"; do
  rm -rf "$AB/src"; mkdir -p "$AB/src"
  # -m: the files get the time of extraction, not of the commit. Cargo rebuilds what is newer
  # than its last build, so with the commit's times the second revision could pass for built.
  git archive "$rev" | tar -x -m -C "$AB/src"
  (cd "$AB/src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --bin zephr-etl -q)
  cp "$AB/target/release/zephr-etl" "$AB/zephr-etl-$rev"
done
if ! git diff --quiet "$1" "$2" -- src Cargo.toml Cargo.lock build.rs 2>/dev/null &&
  cmp -s "$AB/zephr-etl-$1" "$AB/zephr-etl-$2"; then
  echo "the two revisions' sources differ but their binaries are identical: not a comparison" >&2
  exit 1
fi
: >"$AB/times.tsv"
for round in $(seq "$ROUNDS"); do
  for tool in duckdb "$1" "$2"; do
    rm -rf "$AB/out"; mkdir -p "$AB/out"; sync
    if [ "$tool" = duckdb ]; then
      cmd=("$PY" benches/duckdb_run.py "$EXPORT" "$AB/out/d")
    else
      cmd=("$AB/zephr-etl-$tool" convert "$EXPORT" -o "$AB/out/z" --quiet)
    fi
    start=$(date +%s.%N)
    /usr/bin/time -f "%M %U %S" -o "$AB/time" "${cmd[@]}" >/dev/null
    end=$(date +%s.%N)
    printf '%s\t%s\t%s\t%s\n' "$round" "$tool" "$(echo "$end - $start" | bc)" "$(cat "$AB/time")" |
      tee -a "$AB/times.tsv"
  done
done
python3 - "$AB/times.tsv" "$1" "$2" <<'PY'
import statistics as st, sys
rows = [l.split("\t") for l in open(sys.argv[1])]
wall = {}
for rnd, tool, secs, rest in rows:
    wall.setdefault(tool, {})[rnd] = float(secs)
a, b = sys.argv[2], sys.argv[3]
for tool in ("duckdb", a, b):
    print(f"{tool}: median {st.median(wall[tool].values()):.3f} s")
for tool in (a, b):
    ratios = [wall["duckdb"][r] / wall[tool][r] for r in wall[tool]]
    print(f"{tool}: DuckDB time / its time, per round: median {st.median(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f})")
per = [wall[b][r] / wall[a][r] for r in wall[a]]
print(f"{b} / {a} wall time, per round: median {st.median(per):.3f} ({min(per):.3f}-{max(per):.3f})")
PY
