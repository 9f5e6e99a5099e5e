#!/usr/bin/env bash
# What the controller's second compression pass costs the work beside it (issue 18): foreground
# work (`zstd -3 -T0` of the Debian test master, a stand-in for serving and imports) timed alone,
# beside a `nightcast-image tighten --threads 2` pass at nice 0, and beside one at nice 19 (the
# priority the controller gives its pass). Each pass works on a fresh import of the same image.
#   bench/tighten-priority.sh            # ROUNDS=6; IMG= another raw image
# Needs the Debian test master (built by the workstation tests into target/nightcast-guest/) and a
# debug build. Prints one line per run, then the medians and their ratios to "alone".
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMG=${IMG:-$(ls "$ROOT"/target/nightcast-guest/debian-*.raw | head -1)}
B=$ROOT/target/debug/nightcast-image
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
$B keygen --out k.key >/dev/null
fg() { /usr/bin/time -f "%e" zstd -q -3 -T0 -c "$IMG" 2>&1 >/dev/null | tail -1; }
fresh() { rm -rf store; $B build --store store --key k.key --name debian --version 1 "$IMG" -o m >/dev/null; }
beside() {  # $1: nice level of the pass
    fresh
    nice -n "$1" "$B" tighten --store store --threads 2 >/dev/null 2>&1 &
    local pass=$!
    sleep 2
    fg
    kill $pass; wait $pass 2>/dev/null || true
}
for _ in $(seq "${ROUNDS:-6}"); do
    echo "alone $(fg)"
    echo "nice0 $(beside 0)"
    echo "nice19 $(beside 19)"
done | tee runs.txt
python3 - runs.txt <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    runs.setdefault(k, []).append(float(v))
alone = statistics.median(runs["alone"])
for k in ("alone", "nice0", "nice19"):
    m = statistics.median(runs[k])
    print(f"{k}: median {m:.2f} s over {len(runs[k])} runs, {m / alone:.2f}x alone")
PY
