#!/usr/bin/env bash
# Peak RSS against the memory bound (issues 15 and 20, SPEC section 5): the reader, the batches
# in flight and the writers together hold at most about 4 x --max-item-bytes plus a fixed
# budget, whatever --threads is.
#
# Usage: benches/memory_bound.sh [BIN]        (BIN defaults to target/release/zephr-etl)
# Options, by environment:
#   SHAPES="16x60 400x2"   the exports to run, each ITEMSxMB: ITEMS items of MB megabytes (each
#                  under the default 64 MiB --max-item-bytes). The default checks both ends:
#                  a few huge items (one per batch) and many 2 MB ones (several per batch, so
#                  that every worker thread holds batches of its own)
#   ITEMS, ITEM_MB one shape instead of SHAPES (both must be given)
#   THREADS="1 2 8 16"   the --threads values to run
#   FORMATS="csv,parquet csv"   the --format values to run (each with every THREADS value)
#   FIXED_MB=128      the fixed budget on top of 4 x --max-item-bytes
#   STRICT=0          1: exit non-zero when a run is over the bound
#
# Each export is generated on the fly into benches/data/ (git-ignored): ITEMS users, each with
# one attribute of MB megabytes of text, which lands whole in one cell of the attributes table
# and so passes through every stage (framer, flattening, CSV and Parquet writers). Each run is
# `convert` under /usr/bin/time; the table gives its peak RSS.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${1:-target/release/zephr-etl}
if [[ -n ${ITEMS:-} && -n ${ITEM_MB:-} ]]; then
    SHAPES="${ITEMS}x${ITEM_MB}"
fi
SHAPES=${SHAPES:-16x60 400x2}
THREADS=${THREADS:-1 2 8 16}
FORMATS=${FORMATS:-csv,parquet csv}
FIXED_MB=${FIXED_MB:-128}
STRICT=${STRICT:-0}
DATA=benches/data
MAX_ITEM_BYTES=$((64 << 20))
BOUND_KIB=$(((4 * MAX_ITEM_BYTES + FIXED_MB * 1000000) / 1024))

mkdir -p "$DATA"
# The export of ITEMS items of ITEM_MB MB, made once.
input_of() {
    local items=$1 mb=$2 input=$DATA/big-items-$1-x-$2MB.ndjson
    if [[ ! -s $input ]]; then
        printf '== generating %s\n' "$input" >&2
        python3 - "$input.tmp" "$items" "$mb" <<'PY'
import sys
path, items, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blob = "x" * (mb * 1_000_000 - 80)
with open(path, "w") as f:
    for i in range(items):
        f.write('{"user":{"user_id":"u%d","attributes":{"blob":"%s"}},"seq-no":%d}\n' % (i, blob, i))
PY
        mv "$input.tmp" "$input"
    fi
    printf '%s' "$input"
}

over=0
printf '%-10s %-12s %-8s %12s %12s  %s\n' shape format threads 'peak RSS MB' 'bound MB' verdict
for shape in $SHAPES; do
    input=$(input_of "${shape%x*}" "${shape#*x}")
    for f in $FORMATS; do
        for t in $THREADS; do
            out=$DATA/out-memory-$t
            rm -rf "$out"
            /usr/bin/time -f '%M' -o "$DATA/memory.time" "$BIN" convert "$input" -o "$out" \
                --quiet --format "$f" --threads "$t" >/dev/null
            rss=$(tail -n1 "$DATA/memory.time")
            verdict=ok
            if ((rss > BOUND_KIB)); then
                verdict=OVER
                over=1
            fi
            printf '%-10s %-12s %-8s %12.0f %12.0f  %s\n' "${shape}MB" "$f" "$t" \
                "$(awk -v k="$rss" 'BEGIN { print k * 1024 / 1e6 }')" \
                "$(awk -v k="$BOUND_KIB" 'BEGIN { print k * 1024 / 1e6 }')" "$verdict"
            rm -rf "$out"
        done
    done
done
if ((over && STRICT)); then
    exit 1
fi
