#!/usr/bin/env bash
# Whole-master transfer benchmark: how close does the chunk exchange (QUIC, mutual TLS, every chunk
# verified by the client) get to the link it runs on, and how much CPU does it cost per GB?
#
# In one run, between two processes (`xfer_bench serve` and `xfer_bench fetch`, from
# image-tools/examples/xfer_bench.rs), each fetch into a fresh store on disk (under WORK) and,
# for a) and b), once more into a fresh store on tmpfs (/dev/shm), which takes the disk's file
# creation cost out and leaves network, TLS and verification:
#   a) loopback      127.0.0.1, no shaping (what the two processes manage on this machine's cores)
#   b) lan-1gbit     a veth pair between network namespaces ncb-srv (10.77.0.1) and ncb-cli
#                    (10.77.0.2), both directions shaped with `tc ... tbf rate 1gbit`
#   c) wan-20mbit    the same veth shaped to 20 Mbit/s, with 40 ms round trip added by
#                    `xfer_bench delay-proxy` in ncb-cli (20 ms each way; netem is not available),
#                    on a smaller image; run twice: unlimited, and with the app's own token bucket
#                    at 18 Mbit/s (--rate-mbit 18), to see how close it holds that rate (and once
#                    more at 10 Mbit/s)
# and prints a markdown table: bytes, wall time, MB/s, the fraction of the shaped rate carried as
# stored chunk bytes (app) and as bytes the sender's tbf qdisc counted (`tc -s qdisc`: IP + UDP +
# QUIC headers, ACKs and retransmissions included), and CPU seconds per GB of stored bytes, for the
# fetching process (getrusage-equivalent, from /proc/self/stat) and for the server (its
# /proc/<pid>/stat before and after the fetch). Wall time runs from connect to the fetched store
# being durable (hello, manifest and its signature check included). For shaped legs the sender's
# tc counter is also sampled every 0.2 s: "wire Mbit/s" is its rate between the first and the last
# sample that moved, i.e. what the link carried while the server was sending (this shows whether
# --rate-mbit slows the link or only the reader).
#
# Run as root (namespaces, tc) from anywhere:
#   sudo bench/xfer.sh
#   SIZE=512M WAN_SIZE=64M bench/xfer.sh      # quicker
# Environment: SIZE (1G) image for a) and b); WAN_SIZE (128M) image for c); WORK
# (/var/tmp/nightcast-xfer) scratch directory, removed at the end unless KEEP=1; LAN_RATE (1gbit),
# WAN_RATE_MBIT (20), WAN_RTT_MS (40), APP_RATE_MBIT (18), APP_RATE2_MBIT (10, a second
# app-limited WAN run well below the link, where a limit that binds on the wire shows; 0 skips
# it); REPEAT (1) runs of each leg;
# FETCH_ARGS extra arguments for every fetch (e.g. "--in-flight 16"); TMPFS_LEGS (1), 0 to skip
# the tmpfs runs. Fetched stores are kept until the end of the run, so that deleting one does not
# slow the next (ext4 without a journal skips recently deleted inodes when allocating new ones).
# Needs: cargo, python3, ip, tc (tbf). Uses UDP ports 47100-47200 and 10.77.0.0/24 inside the
# namespaces only. Other load on the machine skews every number: the load average is printed.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    echo "xfer.sh: run as root (it creates network namespaces and tc qdiscs)" >&2
    exit 1
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE=${SIZE:-1G}
WAN_SIZE=${WAN_SIZE:-128M}
WORK=${WORK:-/var/tmp/nightcast-xfer}
LAN_RATE=${LAN_RATE:-1gbit}
WAN_RATE_MBIT=${WAN_RATE_MBIT:-20}
WAN_RTT_MS=${WAN_RTT_MS:-40}
APP_RATE_MBIT=${APP_RATE_MBIT:-18}
APP_RATE2_MBIT=${APP_RATE2_MBIT:-10}
REPEAT=${REPEAT:-1}
FETCH_ARGS=${FETCH_ARGS:-}
KEEP=${KEEP:-0}
TMPFS_LEGS=${TMPFS_LEGS:-1}
TMPFS=/dev/shm/ncb-xfer-$$
NS_SRV=ncb-srv
NS_CLI=ncb-cli
DEV_SRV=ncb-veth-s
DEV_CLI=ncb-veth-c
SRV_IP=10.77.0.1
CLI_IP=10.77.0.2

log() { echo "xfer.sh: $*" >&2; }

# tc rate spec -> Mbit/s (number).
rate_mbit() {
    python3 -c 'import re,sys
m=re.fullmatch(r"([0-9.]+)([kmg]?)bit",sys.argv[1].lower())
assert m, "rate like 1gbit or 20mbit"
print(float(m.group(1))*{"":1e-6,"k":1e-3,"m":1,"g":1e3}[m.group(2)])' "$1"
}
LAN_RATE_MBIT=$(rate_mbit "$LAN_RATE")

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$NS_SRV" 2>/dev/null || true
    ip netns del "$NS_CLI" 2>/dev/null || true
    rm -rf "$TMPFS"
    if [[ $KEEP != 1 ]]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# Stale namespaces from an interrupted run (deleting them deletes their veth ends).
ip netns del "$NS_SRV" 2>/dev/null || true
ip netns del "$NS_CLI" 2>/dev/null || true

log "building"
(cd "$ROOT" && cargo build --release -q -p image-tools --example xfer_bench)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/xfer_bench
[[ -x $BIN ]] || { log "no $BIN"; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

log "generating images ($SIZE, $WAN_SIZE)"
python3 "$ROOT/../shared/bench/gen-vm-image.py" "$WORK/lan.img" --size "$SIZE" >&2
python3 "$ROOT/../shared/bench/gen-vm-image.py" "$WORK/wan.img" --size "$WAN_SIZE" --seed 2 >&2
log "importing"
"$BIN" prepare --dir "$WORK/lan" --image "$WORK/lan.img" >"$WORK/lan.prepare.json"
"$BIN" prepare --dir "$WORK/wan" --image "$WORK/wan.img" >"$WORK/wan.prepare.json"
rm -f "$WORK/lan.img" "$WORK/wan.img"

# CPU ticks (user + system, 1/100 s) of a process so far.
proc_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# "Sent N bytes" of the root qdisc on DEV in NS.
tc_sent() {
    ip netns exec "$1" tc -s qdisc show dev "$2" | awk '/Sent/ { print $2; exit }'
}

# Samples the sender's tc counter into FILE every 0.2 s ("seconds bytes" lines) until killed.
tc_sampler() {
    while :; do
        echo "$(date +%s.%N) $(tc_sent "$NS_SRV" "$DEV_SRV")"
        sleep 0.2
    done >"$1"
}

# start_bg NAME NS CMD...: starts CMD (in NS unless NS is "-"), waits for its "listening" line,
# and sets BG_PID (`ip netns exec` execs the command, so this is the command's own pid).
start_bg() {
    local name=$1 ns=$2
    shift 2
    local out=$WORK/$name.out
    if [[ $ns == - ]]; then
        "$@" >"$out" 2>"$WORK/$name.err" </dev/null &
    else
        ip netns exec "$ns" "$@" >"$out" 2>"$WORK/$name.err" </dev/null &
    fi
    BG_PID=$!
    PIDS+=("$BG_PID")
    local i
    for i in $(seq 100); do
        if grep -q '^listening ' "$out"; then
            log "$name: $(cat "$out") (pid $BG_PID)"
            return
        fi
        if ! kill -0 "$BG_PID" 2>/dev/null; then
            log "$name died: $(cat "$WORK/$name.err")"
            exit 1
        fi
        sleep 0.1
    done
    log "$name did not start"
    exit 1
}

stop_bg() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# record NAME SHAPED SERVER_TICKS TC_BYTES LOAD FETCH_JSON SAMPLES OUTBASE: one result line.
record() {
    python3 - "$@" >>"$RESULTS" <<'PY'
import json, os, sys
name, shaped, sticks, tcb, load, fetch, samples, outbase = sys.argv[1:]
r = json.loads(fetch)
r.update(leg=name, shaped_mbit=float(shaped), server_cpu_s=int(sticks) / 100, tc_bytes=int(tcb),
         load=load, store="tmpfs" if outbase.startswith("/dev/shm") else "disk", wire_mbit=None)
if os.path.exists(samples):
    pts = [tuple(map(float, l.split())) for l in open(samples) if len(l.split()) == 2]
    moved = [i for i in range(1, len(pts)) if pts[i][1] > pts[i - 1][1]]
    # Between the first and the last sample that moved (partial intervals at both ends left out).
    if len(moved) >= 3:
        a, b = pts[moved[0]], pts[moved[-1]]
        if b[0] > a[0]:
            r["wire_mbit"] = (b[1] - a[1]) * 8 / (b[0] - a[0]) / 1e6
print(json.dumps(r))
PY
}

# leg NAME DATASET SERVER_PID FETCH_NS CONNECT SHAPED_MBIT OUTBASE [FETCH ARGS...]
# FETCH_NS "-" runs the fetch here; SHAPED_MBIT 0 means no shaping (and no tc counters); OUTBASE
# is where the fetched store goes (a directory on disk, or on tmpfs).
leg() {
    local name=$1 data=$2 spid=$3 ns=$4 connect=$5 shaped=$6 outbase=$7
    shift 7
    local run
    for run in $(seq "$REPEAT"); do
        local out=$outbase/out-$name-$run samples=$WORK/samples-$name-$run-${outbase//\//_}
        local load s0 s1 t0=0 t1=0 json sampler=
        mkdir -p "$outbase"
        sync
        load=$(cut -d' ' -f1-3 /proc/loadavg)
        s0=$(proc_ticks "$spid")
        if [[ $shaped != 0 ]]; then
            t0=$(tc_sent "$NS_SRV" "$DEV_SRV")
            tc_sampler "$samples" &
            sampler=$!
        fi
        log "$name, store in $outbase (run $run, load $load)"
        local cmd=("$BIN" fetch --dir "$WORK/$data" --connect "$connect" --out "$out" "$@")
        # shellcheck disable=SC2206 # FETCH_ARGS is a list of words
        cmd+=($FETCH_ARGS)
        if [[ $ns == - ]]; then
            json=$("${cmd[@]}")
        else
            json=$(ip netns exec "$ns" "${cmd[@]}")
        fi
        s1=$(proc_ticks "$spid")
        if [[ $shaped != 0 ]]; then
            t1=$(tc_sent "$NS_SRV" "$DEV_SRV")
            sleep 0.3 # a last sample after the end
            kill "$sampler"
            wait "$sampler" 2>/dev/null || true
        fi
        log "  $json"
        record "$name" "$shaped" "$((s1 - s0))" "$((t1 - t0))" "$load" "$json" "$samples" "$outbase"
    done
}

# a) loopback
start_bg serve-lo - "$BIN" serve --dir "$WORK/lan" --listen 127.0.0.1:47100
SPID=$BG_PID
leg loopback lan "$SPID" - 127.0.0.1:47100 0 "$WORK"
if [[ $TMPFS_LEGS == 1 ]]; then
    leg loopback lan "$SPID" - 127.0.0.1:47100 0 "$TMPFS"
    rm -rf "$TMPFS" # /dev/shm is memory
fi
stop_bg "$SPID"

# Namespaces and the veth pair.
ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
ip link add "$DEV_SRV" type veth peer name "$DEV_CLI"
ip link set "$DEV_SRV" netns "$NS_SRV"
ip link set "$DEV_CLI" netns "$NS_CLI"
ip -n "$NS_SRV" addr add "$SRV_IP/24" dev "$DEV_SRV"
ip -n "$NS_CLI" addr add "$CLI_IP/24" dev "$DEV_CLI"
for ns in "$NS_SRV" "$NS_CLI"; do
    ip -n "$ns" link set lo up
done
ip -n "$NS_SRV" link set "$DEV_SRV" up
ip -n "$NS_CLI" link set "$DEV_CLI" up

# shape RATE BURST: tbf on the egress of both ends (data one way, acknowledgements the other).
shape() {
    ip netns exec "$NS_SRV" tc qdisc replace dev "$DEV_SRV" root tbf rate "$1" burst "$2" latency 50ms
    ip netns exec "$NS_CLI" tc qdisc replace dev "$DEV_CLI" root tbf rate "$1" burst "$2" latency 50ms
}

# b) 1 Gbit/s LAN
shape "$LAN_RATE" 1mb
start_bg serve-lan "$NS_SRV" "$BIN" serve --dir "$WORK/lan" --listen "$SRV_IP:47101"
SPID=$BG_PID
leg "lan-$LAN_RATE" lan "$SPID" "$NS_CLI" "$SRV_IP:47101" "$LAN_RATE_MBIT" "$WORK"
if [[ $TMPFS_LEGS == 1 ]]; then
    leg "lan-$LAN_RATE" lan "$SPID" "$NS_CLI" "$SRV_IP:47101" "$LAN_RATE_MBIT" "$TMPFS"
    rm -rf "$TMPFS"
fi
stop_bg "$SPID"

# c) 20 Mbit/s, 40 ms WAN (the delay proxy sits in the client's namespace, after the bottleneck)
shape "${WAN_RATE_MBIT}mbit" 64kb
start_bg serve-wan "$NS_SRV" "$BIN" serve --dir "$WORK/wan" --listen "$SRV_IP:47102"
SPID=$BG_PID
start_bg proxy "$NS_CLI" "$BIN" delay-proxy --listen 127.0.0.1:47200 --to "$SRV_IP:47102" \
    --delay-ms "$((WAN_RTT_MS / 2))"
PROXY=$BG_PID
WAN="wan-${WAN_RATE_MBIT}mbit-${WAN_RTT_MS}ms"
leg "$WAN" wan "$SPID" "$NS_CLI" 127.0.0.1:47200 "$WAN_RATE_MBIT" "$WORK"
leg "$WAN-app$APP_RATE_MBIT" wan "$SPID" "$NS_CLI" 127.0.0.1:47200 "$WAN_RATE_MBIT" "$WORK" \
    --rate-mbit "$APP_RATE_MBIT"
if [[ $APP_RATE2_MBIT != 0 ]]; then
    leg "$WAN-app$APP_RATE2_MBIT" wan "$SPID" "$NS_CLI" 127.0.0.1:47200 "$WAN_RATE_MBIT" "$WORK" \
        --rate-mbit "$APP_RATE2_MBIT"
fi
stop_bg "$PROXY"
stop_bg "$SPID"

python3 - "$RESULTS" "$(cut -d' ' -f1-3 /proc/loadavg)" "$WORK" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
work = sys.argv[3]
print()
for d in ("lan", "wan"):
    p = json.load(open(f"{work}/{d}.prepare.json"))
    print(f"{d} master: {p['image_bytes'] / 2**20:.0f} MiB image, {p['new_chunks']} chunks, "
          f"{p['stored_bytes']} stored bytes")
print()
print("| leg | store | stored bytes | wall s | MB/s | Mbit/s (app) | fraction of shaped rate "
      "(app bytes) | fraction (tc bytes) | wire Mbit/s while sending (tc) | CPU s/GB client "
      "| CPU s/GB server | load avg |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
notes = []
for r in rows:
    b, w, shaped = r["bytes"], r["wall_s"], r["shaped_mbit"]
    gb = b / 1e9
    mbit = b * 8 / w / 1e6
    app = f"{mbit / shaped:.3f}" if shaped else "-"
    tc = f"{r['tc_bytes'] * 8 / w / 1e6 / shaped:.3f}" if shaped else "-"
    wire = f"{r['wire_mbit']:.1f}" if r.get("wire_mbit") else "-"
    cli = (r["user_s"] + r["sys_s"]) / gb
    srv = r["server_cpu_s"] / gb
    print(f"| {r['leg']} | {r['store']} | {b} | {w:.2f} | {b / w / 1e6:.1f} | {mbit:.1f} | {app} "
          f"| {tc} | {wire} | {cli:.2f} ({r['user_s']:.2f}u+{r['sys_s']:.2f}s) | {srv:.2f} "
          f"| {r['load']} |")
    if r.get("rate_mbit"):
        app_limit = r["rate_mbit"]
        notes.append(f"{r['leg']}: {mbit:.2f} Mbit/s of stored bytes = {mbit / app_limit:.3f} of the "
                     f"--rate-mbit {app_limit:g} limit (the limit counts stored bytes + 38 per "
                     f"chunk); the link meanwhile carried {wire} Mbit/s while the server sent")
print()
for n in notes:
    print(n)
print(f"load average at the end: {sys.argv[2]} (2 cores here; other work on the machine skews "
      "these numbers)")
PY
