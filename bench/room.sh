#!/usr/bin/env bash
# Room fill benchmark (issue 16): how long a room of NUCs takes to get a master from its relay,
# against one NUC alone, and how many copies of the master the relay's switch port carries.
#
# Runs the e2e test `room_fill` (tests/e2e/room_fill.rs: one relay and N NUCs in network
# namespaces on one bridge, every port shaped by tbf to MBIT in both directions) once per room
# size in SIZES, and prints a markdown table from the line each run prints. Run as root from
# anywhere; builds the workspace (release: the NUCs' CPU is part of what is measured) first
# unless NO_BUILD=1.
#   sudo bench/room.sh
#   SIZES="1 20" MBIT=50 MIB=96 bench/room.sh
# Environment: SIZES ("1 5 10 20"), MBIT (100) the port rate, MIB (48) the master's size (a
# generated VM-like image), PEERS ("1 0": with peer sharing, then without it, the relay serving
# every NUC alone), OUT (none) a file the table is appended to. The runs share 2 cores
# with everything else on the machine: the load average is printed. E2E (none): an e2e test
# binary to run instead of `cargo test` (a copy of target/release/deps/e2e-* beside copies of
# the workspace's binaries in its `..`: to compare two builds in one script); implies NO_BUILD.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES=${SIZES:-1 5 10 20}
MBIT=${MBIT:-100}
MIB=${MIB:-48}
cd "$ROOT"
if [[ ${NO_BUILD:-0} != 1 && -z ${E2E:-} ]]; then
    cargo build --release --workspace --quiet
    cargo test --release --test e2e --no-run --quiet
fi
rows=()
for peers in ${PEERS:-1 0}; do
for n in $SIZES; do
    if [[ -n ${E2E:-} ]]; then
        run=("$E2E" room_fill:: --nocapture)
    else
        run=(cargo test --release --quiet --test e2e -- room_fill:: --nocapture)
    fi
    line=$(ROOM_FILL_PEERS=$peers ROOM_FILL_NUCS=$n ROOM_FILL_MBIT=$MBIT ROOM_FILL_MIB=$MIB \
        "${run[@]}" 2>&1 | grep '^ROOM-FILL' || true)
    if [[ -z $line ]]; then
        echo "room.sh: the run with $n NUCs failed (run the test by hand to see why)" >&2
        exit 1
    fi
    rows+=("$line")
done
done
python3 - "$MBIT" "$MIB" "${rows[@]}" <<'PY'
import os, sys
mbit, mib, rows = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = [dict(kv.split("=") for kv in r.split()[1:]) for r in rows]
base = {p: next((float(r["last_ready_s"]) for r in runs if r["nucs"] == "1" and r["peers"] == p), None)
        for p in ("true", "false")}
out = [f"Room fill: {mib} MiB master ({int(runs[0]['stored']):,} bytes stored), every port {mbit} Mbit/s, "
       f"load average {os.getloadavg()[0]:.1f}", "",
       "| peer sharing | NUCs | last ready s | vs 1 NUC | relay port sent / stored | NUCs' CPU s | CPU s per GB received |",
       "|---|---:|---:|---:|---:|---:|---:|"]
for r in runs:
    t = float(r["last_ready_s"])
    b = base[r["peers"]]
    ratio = f"{t / b:.2f}" if b else "-"
    out.append(f"| {'on' if r['peers'] == 'true' else 'off'} | {r['nucs']} | {t:.2f} | {ratio} | {float(r['copies']):.2f} | {float(r['agents_cpu_s']):.1f} | {float(r['cpu_s_per_gb']):.1f} |")
text = "\n".join(out)
print(text)
if os.environ.get("OUT"):
    open(os.environ["OUT"], "a").write(text + "\n\n")
PY
