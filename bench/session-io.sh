#!/usr/bin/env bash
# A session's disk I/O while its NUC serves its peers (issue 16), printed as one markdown table
# (docs/BENCHMARKS.md).
#
# Runs the e2e test `session_io` (tests/e2e/session_io.rs) once per cap in CAPS: one NUC (agent
# with the fake hypervisor) in a session, its site letting it serve during sessions at the cap
# (`nightcast site set --peer-upload-mbit CAP --peer-share-in-session yes`), PEERS peers pulling
# the master from it over and over, and a reader standing for the guest: `dd iflag=direct bs=64k`
# of the NUC's slot image, the page cache dropped at most once a second before a pass (so the
# peer server's reads of the image reach the disk too). Peer: the same reader in the same run
# with no peer pulling; the phases alternate, ROUNDS times each, and are averaged.
#
#   bench/session-io.sh
#   CAPS="20 300 0" ROUNDS=4 SECS=5 MIB=256 bench/session-io.sh
#
# Environment: CAPS ("20 300 0"; 0: uncapped, the worst case), PEERS (3), MIB (128, the master),
# SECS (5, each phase), ROUNDS (3), OUT (none) a file the table is appended to; NO_BUILD=1 skips
# the release build. Run as root (to drop the page cache). The runs share the machine's cores
# and disk with everything else on it: the load average is printed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CAPS=${CAPS:-20 300 0}
cd "$ROOT"
if [[ ${NO_BUILD:-0} != 1 ]]; then
    cargo build --release --workspace --quiet
    cargo test --release --test e2e --no-run --quiet
fi
lines=()
for cap in $CAPS; do
    out=$(SESSION_IO_CAP=$cap SESSION_IO_PEERS=${PEERS:-3} SESSION_IO_MIB=${MIB:-128} \
        SESSION_IO_SECS=${SECS:-5} SESSION_IO_ROUNDS=${ROUNDS:-3} \
        cargo test --release --quiet --test e2e -- session_io:: --ignored --nocapture 2>&1 || true)
    line=$(grep '^SESSION-IO ' <<<"$out" || true)
    if [[ -z $line ]]; then
        echo "session-io.sh: the run at $cap Mbit/s failed:" >&2
        tail -30 <<<"$out" >&2
        exit 1
    fi
    lines+=("$line")
done
python3 - "${lines[@]}" <<'PY'
import os, sys
runs = [dict(kv.split("=") for kv in r.split()[1:]) for r in sys.argv[1:]]
r0 = runs[0]
out = [f"Session disk reads while the NUC serves: master {r0['mib']} MiB, {r0['peers']} peers pulling, "
       f"dd iflag=direct bs=64k of the slot image, {r0['rounds']} rounds of {r0['secs']} s per phase, "
       f"load average {os.getloadavg()[0]:.1f}", "",
       "| site cap Mbit/s | served Mbit/s | reader alone MB/s | reader while serving MB/s | while serving / alone |",
       "|---:|---:|---:|---:|---:|"]
for r in runs:
    cap = "uncapped" if r["cap_mbit"] == "0" else r["cap_mbit"]
    a, s = float(r["alone_mb_s"]), float(r["serving_mb_s"])
    out.append(f"| {cap} | {float(r['served_mbit_s']):.1f} | {a:.0f} | {s:.0f} | {s / a:.2f} |")
text = "\n".join(out)
print(text)
if os.environ.get("OUT"):
    open(os.environ["OUT"], "a").write(text + "\n\n")
PY
