#!/usr/bin/env bash
# Boot and reset times of the trainee's workstation, for the Debian test master under the BIOS
# and the UEFI profile, printed as one markdown table (docs/BENCHMARKS.md):
#
#   peer: plain qemu-system-x86_64, same image, same machine (q35, 1 vCPU, 1 GiB, same disk and
#         NIC models), no agent: start to the guest's NIGHTCAST-READY line on its serial port
#         (watched every 20 ms);
#   agent: the agent's hypervisor code (node-agent/examples/boot_bench.rs): cold boot to the
#         health signal (marker + guest-ping) and where the time goes, reset + boot as at a
#         session's end, and with resume_saved_state: the cold boot that saves the guest's
#         state once, and a reset that restores it (QEMU -incoming) to the health signal;
#   agent daemon: `nightcast demo --real-vm` (controller, relay and agent as at a site): its
#         "guest is up" time and the agent process's RSS with the guest running.
#
#   bench/boot.sh [IMAGE]
#
# IMAGE: the test master (default: the one the tests built, $CARGO_TARGET_DIR/nightcast-guest/
# debian-*.raw; `cargo test -p nightcast-agent --test workstation` builds it). TCG unless
# NIGHTCAST_BENCH_ACCEL=kvm (a NUC). Takes several minutes under TCG.
set -euo pipefail

cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
image=${1:-$(ls "$target"/nightcast-guest/debian-*.raw 2>/dev/null | head -n 1)}
[ -f "$image" ] || { echo "boot.sh: no test master; give its path or build it (see the header)" >&2; exit 1; }
accel=${NIGHTCAST_BENCH_ACCEL:-tcg}
case $accel in kvm) cpu=host ;; *) accel=tcg cpu=max ;; esac

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# peer FIRMWARE: seconds from QEMU's start to the ready marker.
peer() {
    local fw=$1 disk nic
    qemu-img create -q -f qcow2 -F raw -b "$(realpath "$image")" "$work/peer.qcow2"
    local args=(-nodefaults -no-user-config -machine q35 -accel "$accel" -cpu "$cpu" -m 1024 -smp 1
        -display none)
    if [ "$fw" = uefi ]; then
        cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
        args+=(-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
            -drive "if=pflash,format=raw,unit=1,file=$work/vars.fd")
        disk="-device virtio-blk-pci,drive=disk0,bootindex=1" nic=virtio-net-pci
    else
        disk="-device ide-hd,drive=disk0,bus=ide.0,bootindex=1" nic=e1000
    fi
    args+=(-drive "file=$work/peer.qcow2,format=qcow2,if=none,id=disk0,cache=unsafe,discard=unmap" $disk
        -netdev user,id=net0 -device "$nic,netdev=net0,romfile="
        -smbios type=11,value=nightcast:hostname=peer -chardev "file,id=s0,path=$work/peer.serial"
        -serial chardev:s0)
    rm -f "$work/peer.serial"
    local t0 t1
    t0=$(date +%s.%N)
    qemu-system-x86_64 "${args[@]}" </dev/null >/dev/null 2>"$work/peer.err" &
    local pid=$!
    until grep -qa NIGHTCAST-READY "$work/peer.serial" 2>/dev/null; do
        kill -0 $pid 2>/dev/null || { cat "$work/peer.err" >&2; return 1; }
        sleep 0.02
    done
    t1=$(date +%s.%N)
    kill $pid; wait $pid 2>/dev/null || true
    echo "$t1 - $t0" | bc
}

export CARGO_TARGET_DIR=$target
cargo build -q -p nightcast-agent --example boot_bench
cargo build -q --workspace --bins

echo "| measure | firmware | time | detail |"
echo "|---|---|---|---|"
for fw in bios uefi; do
    printf '| peer: plain qemu-system-x86_64, start to the ready marker | %s | %.1f s | no agent, accel %s |\n' \
        "$fw" "$(peer "$fw")" "$accel"
    NIGHTCAST_BENCH_ACCEL=$accel "$target/debug/examples/boot_bench" "$image" "$fw"
done
demo=$("$target/debug/nightcast" demo --real-vm "$image" --accel "$accel" 2>&1) || { echo "$demo" >&2; exit 1; }
up=$(echo "$demo" | sed -n 's/.*the guest is up: healthy \([0-9.]*\) s after.*/\1/p' | head -n 1)
rss=$(echo "$demo" | sed -n 's/.*the agent uses \([0-9.]*\) MiB.*/\1/p' | head -n 1)
printf '| agent daemon (nightcast demo --real-vm): a new master'"'"'s check boot, start to health signal | uefi | %s s | RSS of nightcast-agent run with the guest running (most seen, debug build): %s MiB |\n' "$up" "$rss"
