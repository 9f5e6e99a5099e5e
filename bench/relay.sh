#!/usr/bin/env bash
# Relay benchmark (issue 5): does a night's transfer use the site's WAN cap without exceeding it,
# and how much memory does the relay need to serve a room of NUCs at once?
#
# Real processes in three network namespaces:
#   ncr-ctl  the controller (`nightcast-controller serve`), 10.79.0.1
#   ncr-rly  the relay (`nightcast-relay run`), 10.79.0.2 on the WAN veth, 10.79.1.1 on the LAN veth
#   ncr-lan  the NUCs: N agents in one process (relay/examples/lan_agents.rs), 10.79.1.2
# The WAN veth (ncr-ctl <-> ncr-rly) is shaped by `tc ... tbf` on both ends, and 40 ms of round
# trip are added by `xfer_bench delay-proxy` (image-tools/examples/xfer_bench.rs) in ncr-rly, after
# the bottleneck (netem is not available): the relay's `controller` is the proxy, 127.0.0.1:47300.
# The controller runs the admin API in ncr-ctl; the site has the window 00:00-23:59 (UTC) and the
# cap CAP_MBIT, one master `demo 1` scheduled, and both processes run on the same test clock
# (NIGHTCAST_CLOCK, speed 1, 2030-01-07 12:00 UTC at the start) so the window is open all along.
#
# 1) WAN legs, one per entry of WAN_LINKS ("cap" = the link shaped to the site cap itself, as the
#    issue asks; a rate such as 100mbit = a faster line than the cap, which only the relay's own
#    pacing keeps under the cap). Each leg starts a relay with an empty cache (same enrolment) and
#    times the night's transfer: from the last status.json sample (every SAMPLE_S s) with no chunk
#    fetched to the first one saying the master is complete. Meanwhile the controller-side tc
#    qdisc's "Sent" bytes (controller -> relay: IP + UDP + QUIC headers, acknowledgements and
#    retransmissions included) are sampled every SAMPLE_S s; reported: the average rate on the wire
#    and as chunk payload (the relay's `fetched_bytes`), each as a fraction of the cap, and the
#    highest rate over any 1-second and 2-second interval of consecutive samples (the "never above
#    the cap by more than 5 %" check), plus the relay's peak RSS (VmHWM) and CPU seconds.
# 2) LAN: the cache of the last WAN leg's relay (it now holds the master) serves N=1 then N=AGENTS
#    agents fetching the whole master at once, each with its own QUIC connection into its own fresh
#    store (on tmpfs by default, AGENT_STORES=disk for WORK), over the LAN veth shaped to LAN_RATE.
#    Each run gets a fresh relay process (a long-lived one keeps the memory of its last peak), whose
#    VmHWM is reset (`echo 5 > /proc/PID/clear_refs`) once it is ready, so the peak RSS reported is
#    that run's; its RSS is also sampled every 0.1 s. Reported: time until the last agent is done,
#    ratio to the single agent, relay peak RSS, relay CPU s, agents' CPU s.
# It prints markdown tables (and appends them to OUT if set).
#
# Run as root from anywhere (builds the binaries it needs first unless NO_BUILD=1; then TREE, if
# set, labels the binaries' tree in the tables):
#   sudo bench/relay.sh
#   IMAGE_SIZE=256M AGENTS=5 WAN_LINKS=cap bench/relay.sh      # quicker
# Environment: IMAGE_SIZE (768M: about 200 MB stored, 90 s at 20 Mbit/s) for
# ../shared/bench/gen-vm-image.py; CAP_MBIT (20) the site cap; WAN_LINKS ("cap 100mbit");
# WAN_RTT_MS (40); AGENTS (20); LAN_RATE (1gbit); AGENT_STORES (tmpfs | disk); SAMPLE_S (0.5);
# WORK (/var/tmp/nightcast-relay-bench) removed at the end unless KEEP=1; OUT (none) a file the
# tables are appended to; LAN_RUNS ("1 $AGENTS") the LAN runs, each N[:IN_FLIGHT[:BATCH[:ARENAS]]]:
# N agents at once, each keeping IN_FLIGHT requests of BATCH chunk ids in flight (default 8 x 64),
# the relay run with MALLOC_ARENA_MAX=ARENAS (e.g. "1 20 20:1:16 20:8:64:1", to see what the
# relay's memory follows). Needs python3, ip, tc (tbf). Uses 10.79.0.0/24, 10.79.1.0/24 and UDP
# ports 4433, 4434, 47300 inside the namespaces only. The whole run takes about 5 minutes here;
# other load on the machine skews every number, so the load average is printed.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    echo "relay.sh: run as root (it creates network namespaces and tc qdiscs)" >&2
    exit 1
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE_SIZE=${IMAGE_SIZE:-768M}
CAP_MBIT=${CAP_MBIT:-20}
WAN_LINKS=${WAN_LINKS:-cap 100mbit}
WAN_RTT_MS=${WAN_RTT_MS:-40}
AGENTS=${AGENTS:-20}
LAN_RATE=${LAN_RATE:-1gbit}
AGENT_STORES=${AGENT_STORES:-tmpfs}
LAN_RUNS=${LAN_RUNS:-1 $AGENTS}
SAMPLE_S=${SAMPLE_S:-0.5}
WORK=${WORK:-/var/tmp/nightcast-relay-bench}
KEEP=${KEEP:-0}
OUT=${OUT:-}
NO_BUILD=${NO_BUILD:-0}
NS_CTL=ncr-ctl
NS_RLY=ncr-rly
NS_LAN=ncr-lan
WAN_C=ncr-wan-c # in ncr-ctl
WAN_R=ncr-wan-r # in ncr-rly
LAN_R=ncr-lan-r # in ncr-rly
LAN_A=ncr-lan-a # in ncr-lan
CTL_IP=10.79.0.1
RLY_WAN_IP=10.79.0.2
RLY_LAN_IP=10.79.1.1
LAN_IP=10.79.1.2
PROXY=127.0.0.1:47300
if [[ $AGENT_STORES == tmpfs ]]; then
    STORES=/dev/shm/ncr-agents-$$
else
    STORES=$WORK/agent-stores
fi

log() { echo "relay.sh: $*" >&2; }

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$NS_CTL" 2>/dev/null || true
    ip netns del "$NS_RLY" 2>/dev/null || true
    ip netns del "$NS_LAN" 2>/dev/null || true
    rm -rf "/dev/shm/ncr-agents-$$"
    if [[ $KEEP != 1 ]]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# Stale namespaces from an interrupted run (deleting them deletes their veth ends).
for ns in "$NS_CTL" "$NS_RLY" "$NS_LAN"; do
    ip netns del "$ns" 2>/dev/null || true
done

# The tree the binaries come from: read just before building (another checkout's commits during
# the run must not change the label); with NO_BUILD=1 the binaries' tree is unknown, so say so.
tree_rev() {
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || rev="$rev-dirty"
    echo "$rev"
}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [[ $NO_BUILD != 1 ]]; then
    TREE=$(tree_rev)
    log "building (tree $TREE)"
    (cd "$ROOT" && cargo build --release -q -p nightcast -p nightcast-controller -p nightcast-relay \
        -p image-tools --bins)
    (cd "$ROOT" && cargo build --release -q -p nightcast-relay --example lan_agents \
        -p image-tools --example xfer_bench)
else
    TREE="${TREE:-prebuilt (NO_BUILD=1), HEAD at start $(tree_rev)}"
fi
for b in nightcast nightcast-controller nightcast-relay nightcast-image examples/lan_agents \
    examples/xfer_bench; do
    [[ -x $TARGET/$b ]] || { log "no $TARGET/$b (build it, or drop NO_BUILD=1)"; exit 1; }
done
# Copies, so that a rebuild of the tree during the run changes nothing.
rm -rf "$WORK"
mkdir -p "$WORK/bin"
for b in nightcast nightcast-controller nightcast-relay nightcast-image examples/lan_agents \
    examples/xfer_bench; do
    cp "$TARGET/$b" "$WORK/bin/"
done
BIN=$WORK/bin
mkdir -p "$STORES"

# The master.
log "generating a $IMAGE_SIZE image"
python3 "$ROOT/../shared/bench/gen-vm-image.py" "$WORK/master.img" --size "$IMAGE_SIZE" --seed 5 >&2
CTL=$WORK/ctl
"$BIN/nightcast-controller" init --data "$CTL" >/dev/null
"$BIN/nightcast-image" build --store "$CTL/store" --key "$CTL/signing.key" --name demo \
    --version 1 "$WORK/master.img" -o "$WORK/demo-1.manifest" >/dev/null
"$BIN/nightcast-controller" master-add --data "$CTL" "$WORK/demo-1.manifest" >/dev/null
"$BIN/nightcast-image" inspect --json "$WORK/demo-1.manifest" >"$WORK/inspect.json"
rm -f "$WORK/master.img"

# Namespaces and the two veth pairs.
for ns in "$NS_CTL" "$NS_RLY" "$NS_LAN"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
ip link add "$WAN_C" type veth peer name "$WAN_R"
ip link set "$WAN_C" netns "$NS_CTL"
ip link set "$WAN_R" netns "$NS_RLY"
ip link add "$LAN_R" type veth peer name "$LAN_A"
ip link set "$LAN_R" netns "$NS_RLY"
ip link set "$LAN_A" netns "$NS_LAN"
ip -n "$NS_CTL" addr add "$CTL_IP/24" dev "$WAN_C"
ip -n "$NS_RLY" addr add "$RLY_WAN_IP/24" dev "$WAN_R"
ip -n "$NS_RLY" addr add "$RLY_LAN_IP/24" dev "$LAN_R"
ip -n "$NS_LAN" addr add "$LAN_IP/24" dev "$LAN_A"
ip -n "$NS_CTL" link set "$WAN_C" up
ip -n "$NS_RLY" link set "$WAN_R" up
ip -n "$NS_RLY" link set "$LAN_R" up
ip -n "$NS_LAN" link set "$LAN_A" up

# tc rate spec -> Mbit/s.
rate_mbit() {
    python3 -c 'import re,sys
m=re.fullmatch(r"([0-9.]+)([kmg]?)bit",sys.argv[1].lower())
assert m, "rate like 1gbit or 20mbit"
print(float(m.group(1))*{"":1e-6,"k":1e-3,"m":1,"g":1e3}[m.group(2)])' "$1"
}

# shape NS1 DEV1 NS2 DEV2 RATE BURST: tbf on the egress of both ends.
shape() {
    tc -n "$1" qdisc replace dev "$2" root tbf rate "$5" burst "$6" latency 50ms
    tc -n "$3" qdisc replace dev "$4" root tbf rate "$5" burst "$6" latency 50ms
}

# "Sent N bytes" of the root qdisc of DEV in NS.
tc_sent() {
    tc -n "$1" -s qdisc show dev "$2" | awk '/Sent/ { print $2; exit }'
}

# CPU ticks (user + system, 1/100 s) of a process so far.
proc_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# VmHWM / VmRSS of a process, in KiB.
vm() {
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}

# start_bg NAME NS PATTERN CMD...: starts CMD in NS, waits for a stdout line matching PATTERN, sets
# BG_PID (`ip netns exec` execs the command, so this is the command's own pid).
start_bg() {
    local name=$1 ns=$2 pattern=$3
    shift 3
    local out=$WORK/$name.out
    ip netns exec "$ns" "$@" >"$out" 2>"$WORK/$name.err" </dev/null &
    BG_PID=$!
    PIDS+=("$BG_PID")
    local i
    for i in $(seq 300); do
        if grep -q "$pattern" "$out"; then
            log "$name: $(head -c 300 "$out" | tr '\n' ' ')(pid $BG_PID)"
            return
        fi
        if ! kill -0 "$BG_PID" 2>/dev/null; then
            log "$name died: $(tail -20 "$WORK/$name.err")"
            exit 1
        fi
        sleep 0.1
    done
    log "$name did not start: $(tail -20 "$WORK/$name.err")"
    exit 1
}

stop_bg() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# One clock for the controller and every relay: 2030-01-07 12:00 UTC now, real speed.
CLOCK="start=2030-01-07T12:00:00Z speed=1 since=$(date +%s.%N)"
export NIGHTCAST_CLOCK=$CLOCK
start_bg controller "$NS_CTL" '^admin API on' "$BIN/nightcast-controller" serve --data "$CTL" \
    --listen 0.0.0.0:4433 --api 127.0.0.1:8644
CTL_PID=$BG_PID

admin() {
    ip netns exec "$NS_CTL" "$BIN/nightcast" --api http://127.0.0.1:8644 \
        --token-file "$CTL/admin.token" "$@"
}
admin site add lyon --tz UTC --windows 00:00-23:59 --cap-mbit "$CAP_MBIT" >/dev/null
admin room add lyon salle-1 >/dev/null
printf 'site,room,master,version,start,end\nlyon,salle-1,demo,1,2030-01-08 08:00,2030-01-08 17:00\n' \
    >"$WORK/term.csv"
admin calendar import "$WORK/term.csv" >/dev/null

log "enrolling the relay and $AGENTS agents"
shape "$NS_CTL" "$WAN_C" "$NS_RLY" "$WAN_R" "${CAP_MBIT}mbit" 64kb
TOKEN=$(admin enroll --role relay --site lyon)
ip netns exec "$NS_RLY" "$BIN/nightcast-relay" enroll --controller "$CTL_IP:4433" --token "$TOKEN" \
    --node-id relay-1 --data "$WORK/relay-enrolled" >/dev/null
: >"$WORK/agent-tokens"
for _ in $(seq "$AGENTS"); do
    admin enroll --role agent --site lyon >>"$WORK/agent-tokens"
done
ip netns exec "$NS_CTL" "$BIN/lan_agents" enroll --controller 127.0.0.1:4433 \
    --tokens "$WORK/agent-tokens" --out "$WORK/agents" >&2

start_bg proxy "$NS_RLY" '^listening ' "$BIN/xfer_bench" delay-proxy --listen "$PROXY" \
    --to "$CTL_IP:4433" --delay-ms "$((WAN_RTT_MS / 2))"

# Samples, every SAMPLE_S s until killed: monotonic seconds, controller-side tc bytes (down),
# relay-side tc bytes (up), the relay's fetched_bytes, wan_bytes_open, and 1 once complete.
sampler() {
    exec python3 - "$@" <<'PY'
import json, re, subprocess, sys, time
out, ns_c, dev_c, ns_r, dev_r, status, every = sys.argv[1:]
every = float(every)
def sent(ns, dev):
    t = subprocess.run(["tc", "-n", ns, "-s", "qdisc", "show", "dev", dev],
                       capture_output=True, text=True).stdout
    m = re.search(r"Sent (\d+) bytes", t)
    return int(m.group(1)) if m else -1
with open(out, "w", buffering=1) as f:
    nxt = time.monotonic()
    while True:
        down = sent(ns_c, dev_c)
        t = time.monotonic()
        up = sent(ns_r, dev_r)
        try:
            s = json.load(open(status))
            fetched, wan = s["fetched_bytes"], s["wan_bytes_open"]
            done = int(bool(s["masters"]) and all(m["complete"] for m in s["masters"]))
        except (OSError, ValueError, KeyError):
            fetched, wan, done = 0, 0, 0
        f.write(f"{t:.4f} {down} {up} {fetched} {wan} {done}\n")
        nxt += every
        time.sleep(max(0.0, nxt - time.monotonic()))
PY
}

# Writes the relay's config for data directory $1.
relay_config() {
    cat >"$1.toml" <<EOF
controller = "$PROXY"
data = "$1"
listen = "$RLY_LAN_IP:4434"
quota = "50 GiB"
[wake_on_lan]
enabled = false
EOF
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
RELAY_PID=
RELAY_DATA=
LEG=0
for link in $WAN_LINKS; do
    LEG=$((LEG + 1))
    if [[ $link == cap ]]; then
        rate="${CAP_MBIT}mbit"
    else
        rate=$link
    fi
    link_mbit=$(rate_mbit "$rate")
    burst=64kb
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 50 else 1)" "$link_mbit"; then
        burst=256kb
    fi
    shape "$NS_CTL" "$WAN_C" "$NS_RLY" "$WAN_R" "$rate" "$burst"
    if [[ -n $RELAY_PID ]]; then
        stop_bg "$RELAY_PID"
        rm -rf "$RELAY_DATA"
    fi
    RELAY_DATA=$WORK/relay-$LEG
    cp -a "$WORK/relay-enrolled" "$RELAY_DATA"
    relay_config "$RELAY_DATA"
    SAMPLES=$WORK/samples-$LEG
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    log "WAN leg $LEG: link $rate, cap $CAP_MBIT Mbit/s, ${WAN_RTT_MS} ms (load $load)"
    sync
    sampler "$SAMPLES" "$NS_CTL" "$WAN_C" "$NS_RLY" "$WAN_R" "$RELAY_DATA/status.json" "$SAMPLE_S" &
    SAMPLER=$!
    PIDS+=("$SAMPLER")
    sleep 1
    RUST_LOG=info start_bg "relay-$LEG" "$NS_RLY" '^serving the LAN on' "$BIN/nightcast-relay" run \
        --config "$RELAY_DATA.toml"
    RELAY_PID=$BG_PID
    # Wait for the master (at most 4x the time the cap allows, and 2 minutes more).
    stored=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["unique_stored_bytes"])' \
        "$WORK/inspect.json")
    limit=$(python3 -c "print(int($stored * 8 / ($CAP_MBIT * 1e6) * 4 + 120))")
    for _ in $(seq $((limit * 2))); do
        if [[ -s $SAMPLES ]] && [[ $(tail -1 "$SAMPLES" | cut -d' ' -f6) == 1 ]]; then
            break
        fi
        if ! kill -0 "$RELAY_PID" 2>/dev/null; then
            log "the relay died: $(tail -20 "$WORK/relay-$LEG.err")"
            exit 1
        fi
        sleep 0.5
    done
    [[ $(tail -1 "$SAMPLES" | cut -d' ' -f6) == 1 ]] || {
        log "the master was not complete after ${limit} s: $(tail -5 "$WORK/relay-$LEG.err")"
        exit 1
    }
    sleep 2 # a few samples after the end
    stop_bg "$SAMPLER"
    python3 - "$RESULTS" "$LEG" "$rate" "$link_mbit" "$CAP_MBIT" "$WAN_RTT_MS" "$SAMPLES" \
        "$(vm "$RELAY_PID" VmHWM)" "$(proc_ticks "$RELAY_PID")" "$load" "$WORK/inspect.json" <<'PY'
import json, sys
res, leg, rate, link_mbit, cap, rtt, samples, hwm, ticks, load, inspect = sys.argv[1:]
rows = [list(map(float, l.split())) for l in open(samples) if len(l.split()) == 6]
t = [r[0] for r in rows]; down = [r[1] for r in rows]; up = [r[2] for r in rows]
fetched = [r[3] for r in rows]; wan = [r[4] for r in rows]; done = [r[5] for r in rows]
end = next(i for i in range(len(rows)) if done[i] == 1)
first = next(i for i in range(len(rows)) if fetched[i] > 0)
start = max(first - 1, 0)
cap = float(cap)
dur = t[end] - t[start]
# Rates over consecutive samples spanning about W seconds, within the transfer (start..end).
def max_rate(w):
    best = 0.0
    for i in range(start, end + 1):
        j = i
        while j < len(t) - 1 and t[j] - t[i] < w - 1e-3:
            j += 1
        if j > i and t[j] - t[i] >= w * 0.9:
            best = max(best, (down[j] - down[i]) * 8 / (t[j] - t[i]) / 1e6)
    return best
def windows_over(w, limit):
    n = over = 0
    for i in range(start, end + 1):
        j = i
        while j < len(t) - 1 and t[j] - t[i] < w - 1e-3:
            j += 1
        if j > i and t[j] - t[i] >= w * 0.9:
            n += 1
            over += (down[j] - down[i]) * 8 / (t[j] - t[i]) / 1e6 > limit
    return over, n
over1, n1 = windows_over(1.0, cap * 1.05)
json.dump(dict(
    part="wan", leg=int(leg), link=rate, link_mbit=float(link_mbit), cap_mbit=cap, rtt_ms=int(rtt),
    stored=json.load(open(inspect))["summary"]["unique_stored_bytes"],
    fetched=int(fetched[end]), transfer_s=dur, sample_s=(t[-1] - t[0]) / max(len(t) - 1, 1),
    wire_bytes=int(down[end] - down[start]), up_bytes=int(up[end] - up[start]),
    relay_wan_bytes=int(wan[end]),
    max1=max_rate(1.0), max2=max_rate(2.0), max05=max_rate(0.5), over1=over1, n1=n1,
    relay_hwm_kib=int(hwm), relay_cpu_s=int(ticks) / 100, load=load), open(res, "a"))
open(res, "a").write("\n")
PY
    log "  $(tail -1 "$RESULTS")"
done

# 2) LAN: the last relay's cache serves N agents at once; a fresh relay process for each run.
shape "$NS_RLY" "$LAN_R" "$NS_LAN" "$LAN_A" "$LAN_RATE" 1mb
LAN_RUN=0
# lan_run N [IN_FLIGHT [BATCH [ARENAS]]]
lan_run() {
    local n=$1 in_flight=${2:-} batch=${3:-} arenas=${4:-}
    LAN_RUN=$((LAN_RUN + 1))
    local run=$WORK/lan-$LAN_RUN args=()
    [[ -n $in_flight ]] && args+=(--in-flight "$in_flight")
    [[ -n $batch ]] && args+=(--batch "$batch")
    stop_bg "$RELAY_PID"
    if [[ -n $arenas ]]; then
        MALLOC_ARENA_MAX=$arenas RUST_LOG=info start_bg "relay-lan-$LAN_RUN" "$NS_RLY" \
            '^serving the LAN on' "$BIN/nightcast-relay" run --config "$RELAY_DATA.toml"
    else
        RUST_LOG=info start_bg "relay-lan-$LAN_RUN" "$NS_RLY" '^serving the LAN on' \
            "$BIN/nightcast-relay" run --config "$RELAY_DATA.toml"
    fi
    RELAY_PID=$BG_PID
    local i
    for i in $(seq 100); do
        if python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["masters"] and all(m["complete"] for m in s["masters"]) else 1)' \
            "$RELAY_DATA/status.json" 2>/dev/null; then
            break
        fi
        sleep 0.2
    done
    rm -rf "$STORES"
    mkdir -p "$STORES"
    sync
    echo 5 >"/proc/$RELAY_PID/clear_refs" # VmHWM := VmRSS now (forget the start-up)
    local rss0 hwm c0 c1 load json
    rss0=$(vm "$RELAY_PID" VmRSS)
    c0=$(proc_ticks "$RELAY_PID")
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    (while :; do vm "$RELAY_PID" VmRSS; sleep 0.1; done) >"$run.rss" &
    local rss_sampler=$!
    log "LAN run $LAN_RUN: $n agent(s) at once ${args[*]} ${arenas:+MALLOC_ARENA_MAX=$arenas }(load $load)"
    json=$(ip netns exec "$NS_LAN" "$BIN/lan_agents" fetch --relay "$RLY_LAN_IP:4434" \
        --agents "$WORK/agents" --n "$n" --master demo --version 1 --stores "$STORES" "${args[@]}")
    c1=$(proc_ticks "$RELAY_PID")
    hwm=$(vm "$RELAY_PID" VmHWM)
    kill "$rss_sampler"
    wait "$rss_sampler" 2>/dev/null || true
    python3 - "$RESULTS" "$n" "$rss0" "$hwm" "$((c1 - c0))" "$load" "$run.rss" "$arenas" \
        "$json" <<'PY'
import json, sys
res, n, rss0, hwm, ticks, load, rssf, arenas, out = sys.argv[1:]
r = json.loads(out)
samples = [int(l) for l in open(rssf) if l.strip().isdigit()]
with open(res, "a") as f:
    f.write(json.dumps(dict(part="lan", n=int(n), rss0_kib=int(rss0), hwm_kib=int(hwm),
                            rss_max_sampled_kib=max(samples, default=0),
                            relay_cpu_s=int(ticks) / 100, load=load, arenas=arenas,
                            **{k: v for k, v in r.items() if k != "per_agent"},
                            per_agent=r["per_agent"])) + "\n")
PY
    log "  all done in $(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["last_done_s"], 2))' "$json") s, relay VmHWM $hwm KiB"
    rm -rf "$STORES"
}
for spec in $LAN_RUNS; do
    IFS=: read -r n in_flight batch arenas <<<"$spec"
    lan_run "$n" "$in_flight" "$batch" "$arenas"
done
stop_bg "$RELAY_PID"
RELAY_PID=

python3 - "$RESULTS" "$(cut -d' ' -f1-3 /proc/loadavg)" "$LAN_RATE" "$AGENT_STORES" \
    "$TREE" \
    "$(nproc)" <<'PY' | tee -a ${OUT:-/dev/null}
import json, sys, time
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
load_end, lan_rate, stores, tree, cores = sys.argv[2:]
wan = [r for r in rows if r["part"] == "wan"]
lan = [r for r in rows if r["part"] == "lan"]
mib = lambda kib: kib / 1024
print(f"### Relay: a night's WAN transfer and serving the LAN "
      f"({time.strftime('%Y-%m-%d %H:%M')}, {cores} cores, tree {tree})")
print()
if wan:
    w0 = wan[0]
    print(f"Master `demo 1`: {w0['stored']:,} stored bytes (`nightcast-image inspect`: unique "
          f"chunks); site cap {w0['cap_mbit']:g} Mbit/s, RTT {w0['rtt_ms']} ms; tc sampled every "
          f"{w0['sample_s']:.2f} s on the controller's side (controller -> relay).")
    print()
    print("| WAN link (tbf) | cap Mbit/s | stored bytes | chunk bytes fetched | transfer s "
          "| wire Mbit/s (tc) | wire / cap | payload Mbit/s | payload / cap | max 1 s Mbit/s "
          "| max 1 s / cap | max 2 s / cap | 1-s windows > cap +5 % | relay -> ctl Mbit/s "
          "| relay peak RSS MiB | relay CPU s | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in wan:
        d, cap = r["transfer_s"], r["cap_mbit"]
        wire = r["wire_bytes"] * 8 / d / 1e6
        pay = r["fetched"] * 8 / d / 1e6
        upm = r["up_bytes"] * 8 / d / 1e6
        link = f"{r['link']} (= cap)" if abs(r["link_mbit"] - cap) < 1e-9 else r["link"]
        print(f"| {link} | {cap:g} | {r['stored']:,} | {r['fetched']:,} | {d:.1f} | {wire:.2f} "
              f"| {wire / cap:.3f} | {pay:.2f} | {pay / cap:.3f} | {r['max1']:.2f} "
              f"| {r['max1'] / cap:.3f} | {r['max2'] / cap:.3f} | {r['over1']} of {r['n1']} "
              f"| {upm:.2f} | {mib(r['relay_hwm_kib']):.1f} | {r['relay_cpu_s']:.1f} | {r['load']} |")
    print()
if lan:
    one = next((r for r in lan if r["n"] == 1), None)
    print(f"LAN: the relay's cache holds the master; agents in one process in another namespace, "
          f"veth shaped to {lan_rate} (tbf), agent stores on {stores}; a fresh relay process for each run, its VmHWM reset once it is ready.")
    print()
    print("| agents at once | requests in flight x ids each | relay MALLOC_ARENA_MAX | bytes each | all done s | first / median done s | ratio to 1 agent "
          "| aggregate Mbit/s | relay peak RSS MiB (VmHWM) | relay RSS before MiB | relay CPU s "
          "| agents' CPU s (one process) | load avg |")
    print("|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for r in lan:
        ratio = r["last_done_s"] / one["last_done_s"] if one else float("nan")
        each = r["bytes"] // max(r["n"], 1)
        print(f"| {r['n']} | {r['in_flight']} x {r['batch']} | {r.get('arenas') or 'default'} | {each:,} | {r['last_done_s']:.2f} "
              f"| {r['first_done_s']:.2f} / {r['median_done_s']:.2f} | {ratio:.2f} | {r['mbit_per_s']:.0f} "
              f"| {mib(r['hwm_kib']):.1f} | {mib(r['rss0_kib']):.1f} | {r['relay_cpu_s']:.1f} "
              f"| {r['user_s'] + r['sys_s']:.1f} | {r['load']} |")
    print()
print("Targets:")
for r in wan:
    d, cap = r["transfer_s"], r["cap_mbit"]
    wire = r["wire_bytes"] * 8 / d / 1e6 / cap
    ok1 = "met" if wire >= 0.9 else "NOT met"
    ok2 = "met" if r["max1"] <= cap * 1.05 else "NOT met"
    print(f"- WAN link {r['link']}: uses >= 90 % of the cap: {ok1} ({wire:.3f} on the wire, "
          f"{r['fetched'] * 8 / d / 1e6 / cap:.3f} as chunk payload); never above cap +5 % "
          f"(1-s intervals): {ok2} (max {r['max1'] / cap:.3f} of the cap)")
for r in lan:
    ok = "met" if r["hwm_kib"] <= 64 * 1024 else "NOT met"
    arenas = f", MALLOC_ARENA_MAX={r['arenas']}" if r.get("arenas") else ""
    print(f"- LAN, {r['n']} agent(s) ({r['in_flight']} x {r['batch']} in flight each{arenas}): relay peak "
          f"RSS <= 64 MiB: {ok} ({mib(r['hwm_kib']):.1f} MiB)")
print(f"- load average at the end: {load_end} ({cores} cores, shared with other work)")
PY
