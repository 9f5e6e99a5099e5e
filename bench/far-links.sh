#!/usr/bin/env bash
# Far links (issue 18): a night's transfer over a satellite or 4G link, with each congestion
# controller quinn offers on the sending side. Does the relay use >= 80 % of its cap, and never
# more than the cap + 5 % over any second?
#
# Two network namespaces, ncl-srv (the controller's side, `xfer_bench serve --cc CC`) and ncl-cli
# (the relay's side, `xfer_bench fetch --rate-mbit CAP`, the relay's own pacer); the veth between
# them shaped by tbf to CAP both ways; the round trip and the random loss added by `xfer_bench
# delay-proxy` in ncl-cli (netem is not available). Links (LINKS, "name:rtt_ms:loss_permille"):
#   satellite  600 ms, 0.1 % loss        4g  80 ms, 1 % loss
# For each link and each controller in CCS, one fetch of a fresh store; the sender's port counter is
# sampled every 0.1 s (sysfs, in its namespace). Reported: payload (chunk bytes / wall time) and wire (tc, IP + UDP + QUIC,
# while sending) as a share of the cap, and the highest 1-second wire rate over the cap.
#   sudo bench/far-links.sh                      # SIZE=48M CAP_MBIT=10 CCS="cubic newreno bbr"
# Needs python3, ip, tc (tbf) and ../shared/bench/gen-vm-image.py. Uses 10.78.0.0/24 and UDP
# ports 47300-47301 inside the namespaces only.
set -euo pipefail
[[ $EUID -eq 0 ]] || { echo "far-links.sh: run as root (namespaces, tc)" >&2; exit 1; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE=${SIZE:-48M}
CAP_MBIT=${CAP_MBIT:-10}
CCS=${CCS:-cubic newreno bbr}
# PACER= (empty) leaves the relay's own pacer out: the link and the sender alone.
PACER=${PACER-1}
# FETCH_ARGS: more options for `xfer_bench fetch`, e.g. "--batch 1 --in-flight 30" (unpaced only).
FETCH_ARGS=${FETCH_ARGS:-}
LINKS=${LINKS:-satellite:600:1 4g:80:10}
WORK=$(mktemp -d /var/tmp/nightcast-far.XXXXXX)
S=ncl-srv C=ncl-cli
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    ip netns del $S 2>/dev/null || true; ip netns del $C 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns del $S 2>/dev/null || true; ip netns del $C 2>/dev/null || true

(cd "$ROOT" && cargo build --release -q -p image-tools --example xfer_bench)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/xfer_bench
python3 "$ROOT/../shared/bench/gen-vm-image.py" "$WORK/img" --size "$SIZE" --seed 3 >&2
"$BIN" prepare --dir "$WORK/d" --image "$WORK/img" >/dev/null
rm -f "$WORK/img"

ip netns add $S; ip netns add $C
ip -n $S link add ncl-s type veth peer name ncl-c netns $C
ip -n $S addr add 10.78.0.1/24 dev ncl-s; ip -n $C addr add 10.78.0.2/24 dev ncl-c
for ns in $S $C; do ip -n $ns link set lo up; done
ip -n $S link set ncl-s up; ip -n $C link set ncl-c up
for x in "$S ncl-s" "$C ncl-c"; do
    set -- $x
    ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "${CAP_MBIT}mbit" burst 32kbit latency 400ms
done
tc_sent() { ip netns exec $S tc -s qdisc show dev ncl-s | awk '/Sent/ { print $2; exit }'; }

# bg NS OUT CMD...: starts CMD in NS, waits for its "listening" line; sets BG.
bg() {
    local ns=$1 out=$2; shift 2
    ip netns exec "$ns" "$@" >"$out" 2>"$out.err" </dev/null &
    BG=$!; PIDS+=("$BG")
    for _ in $(seq 100); do grep -q '^listening' "$out" && return; sleep 0.1; done
    echo "far-links.sh: $* did not start: $(cat "$out.err")" >&2; exit 1
}

echo "leg cc rtt_ms loss_permille wall_s bytes tc_bytes max1s_bytes steady_bytes_per_s" >"$WORK/rows"
for link in $LINKS; do
    IFS=: read -r name rtt loss <<<"$link"
    for cc in $CCS; do
        bg $S "$WORK/srv.out" "$BIN" serve --dir "$WORK/d" --listen 10.78.0.1:47300 --cc "$cc"
        srv=$BG
        bg $C "$WORK/proxy.out" "$BIN" delay-proxy --listen 127.0.0.1:47301 --to 10.78.0.1:47300 \
            --delay-ms $((rtt / 2)) --loss-permille "$loss"
        proxy=$BG
        t0=$(tc_sent)
        # The sender's port counter, read in its namespace every 0.1 s by one process (a
        # command per sample lags under load and shifts bytes between samples).
        ip netns exec $S python3 -c '
import sys, time
while True:
    with open("/sys/class/net/ncl-s/statistics/tx_bytes") as f:
        b = f.read().strip()
    print(time.time(), b, flush=True)
    time.sleep(0.1)' >"$WORK/samples" &
        sampler=$!
        json=$(ip netns exec $C "$BIN" fetch --dir "$WORK/d" --connect 127.0.0.1:47301 \
            --out "$WORK/store-$name-$cc" ${PACER:+--rate-mbit "$CAP_MBIT"} $FETCH_ARGS)
        kill $sampler; wait $sampler 2>/dev/null || true
        t1=$(tc_sent)
        kill $srv $proxy; wait $srv $proxy 2>/dev/null || true
        rm -rf "$WORK/store-$name-$cc"
        python3 - "$name" "$cc" "$rtt" "$loss" "$json" $((t1 - t0)) "$WORK/samples" >>"$WORK/rows" <<'PY'
import json, sys
name, cc, rtt, loss, js, tcb, samples = sys.argv[1:]
r = json.loads(js)
pts = [tuple(map(float, l.split())) for l in open(samples) if len(l.split()) == 2]
# The highest rate over any two consecutive samples at least a second apart.
best = 0.0
for i in range(len(pts)):
    for j in range(i + 1, len(pts)):
        if pts[j][0] - pts[i][0] >= 1.0:
            best = max(best, (pts[j][1] - pts[i][1]) / (pts[j][0] - pts[i][0]))
            break
# After BBR's start-up: the wire rate from 10 s in to the end (a night's transfer is hours long).
late = [p for p in pts if p[0] - pts[0][0] >= 10.0]
steady = (late[-1][1] - late[0][1]) / (late[-1][0] - late[0][0]) if len(late) > 2 else 0.0
print(name, cc, rtt, loss, r["wall_s"], r["bytes"], tcb, best, steady)
PY
        echo "far-links.sh: $name $cc done" >&2
    done
done
python3 - "$CAP_MBIT" "$SIZE" "$WORK/rows" <<'PY'
import os, sys
cap, size, rows = float(sys.argv[1]), sys.argv[2], sys.argv[3]
lines = [l.split() for l in open(rows)][1:]
print(f"Far links: {size} image, cap {cap:g} Mbit/s (tbf both ways = the cap), relay pacer at the cap, "
      f"load average {os.getloadavg()[0]:.1f}\n")
print("| link | RTT ms | loss % | sender's controller | wall s | payload / cap | wire / cap | wire / cap after 10 s | max 1 s wire / cap |")
print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
for name, cc, rtt, loss, wall, b, tcb, best, steady in lines:
    wall, b, tcb, best, steady = float(wall), int(b), int(tcb), float(best), float(steady)
    pay = b * 8 / wall / 1e6 / cap
    wire = tcb * 8 / wall / 1e6 / cap
    print(f"| {name} | {rtt} | {int(loss) / 10:g} | {cc} | {wall:.1f} | {pay:.3f} | {wire:.3f} | {steady * 8 / 1e6 / cap:.3f} | {best * 8 / 1e6 / cap:.3f} |")
PY
