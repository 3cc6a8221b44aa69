#!/usr/bin/env bash
# Peak RSS against the memory bound (issue 15, SPEC section 5): the reader, the batches in
# flight and the writers together hold at most about 4 x --max-item-bytes plus a fixed budget,
# whatever --threads is.
#
# Usage: benches/memory_bound.sh [BIN]        (BIN defaults to target/release/zephr-etl)
# Options, by environment:
#   ITEMS=16          items in the export
#   ITEM_MB=60        size of each item in MB (each under the default 64 MiB --max-item-bytes)
#   THREADS="1 2 8"   the --threads values to run
#   FORMATS="csv,parquet csv"   the --format values to run (each with every THREADS value)
#   FIXED_MB=128      the fixed budget on top of 4 x --max-item-bytes
#   STRICT=0          1: exit non-zero when a run is over the bound
#
# The export is generated on the fly into benches/data/ (git-ignored): ITEMS users, each with
# one attribute of ITEM_MB MB of text, which lands whole in one cell of the attributes table
# and so passes through every stage (framer, flattening, CSV and Parquet writers). Each run is
# `convert` to CSV and Parquet under /usr/bin/time; the table gives its peak RSS.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${1:-target/release/zephr-etl}
ITEMS=${ITEMS:-16}
ITEM_MB=${ITEM_MB:-60}
THREADS=${THREADS:-1 2 8}
FORMATS=${FORMATS:-csv,parquet csv}
FIXED_MB=${FIXED_MB:-128}
STRICT=${STRICT:-0}
DATA=benches/data
INPUT=$DATA/big-items-$ITEMS-x-${ITEM_MB}MB.ndjson
MAX_ITEM_BYTES=$((64 << 20))
BOUND_KIB=$(((4 * MAX_ITEM_BYTES + FIXED_MB * 1000000) / 1024))

mkdir -p "$DATA"
if [[ ! -s $INPUT ]]; then
    printf '== generating %s\n' "$INPUT" >&2
    python3 - "$INPUT.tmp" "$ITEMS" "$ITEM_MB" <<'PY'
import sys
path, items, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blob = "x" * (mb * 1_000_000 - 80)
with open(path, "w") as f:
    for i in range(items):
        f.write('{"user":{"user_id":"u%d","attributes":{"blob":"%s"}},"seq-no":%d}\n' % (i, blob, i))
PY
    mv "$INPUT.tmp" "$INPUT"
fi

over=0
printf '%-12s %-8s %12s %12s  %s\n' format threads 'peak RSS MB' 'bound MB' verdict
for f in $FORMATS; do
    for t in $THREADS; do
        out=$DATA/out-memory-$t
        rm -rf "$out"
        /usr/bin/time -f '%M' -o "$DATA/memory.time" "$BIN" convert "$INPUT" -o "$out" \
            --quiet --format "$f" --threads "$t" >/dev/null
        rss=$(tail -n1 "$DATA/memory.time")
        verdict=ok
        if ((rss > BOUND_KIB)); then
            verdict=OVER
            over=1
        fi
        printf '%-12s %-8s %12.0f %12.0f  %s\n' "$f" "$t" \
            "$(awk -v k="$rss" 'BEGIN { print k * 1024 / 1e6 }')" \
            "$(awk -v k="$BOUND_KIB" 'BEGIN { print k * 1024 / 1e6 }')" "$verdict"
        rm -rf "$out"
    done
done
if ((over && STRICT)); then
    exit 1
fi
