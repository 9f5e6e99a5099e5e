#!/usr/bin/env bash
# WAN bytes for v2 of a generated pair (../shared/bench/gen-vm-image.py, v2 = --evolve 0.02):
# nightcast's new chunks (as imported, and after `tighten`, what the controller sends) plus the
# v2 manifest, against casync (store growth + .caibx) and rsync of the raw image with zstd on the
# wire (--inplace, as a site's disk would be updated; RSYNC_COPY=1 also without --inplace, which
# needs room for a second copy). Sizes only. Run from an empty work directory:
#   mkdir /var/tmp/genpair && cd /var/tmp/genpair && SIZE=2G /path/to/bench/gen-pair-wan.sh
# Needs a release build (cargo build --release -p image-tools), casync, rsync >= 3.2, zstd.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE=${SIZE:-2G}
G=$ROOT/../shared/bench/gen-vm-image.py
B=$PWD/nightcast-image
cp "$ROOT/target/release/nightcast-image" "$B"
[ -f v1.img ] || python3 $G v1.img --size $SIZE --seed 1
[ -f v2.img ] || python3 $G v2.img --size $SIZE --seed 1 --evolve 0.02
rm -rf store new ca.castr key key.pub rsync-dst.img
$B keygen --out key >/dev/null
$B build --store store --key key --name g --version 1 -o v1.m v1.img --json > /dev/null
find store/chunks -type f -printf '%f\n' | sort > before.txt
$B build --store store --key key --name g --version 2 -o v2.m v2.img --json > v2.json
find store/chunks -type f -printf '%f\n' | sort > after.txt
comm -13 before.txt after.txt > newids.txt
mkdir -p new/chunks
cp store/nightcast-store new/
while read id; do mkdir -p new/chunks/${id:0:2}; cp store/chunks/${id:0:2}/$id new/chunks/${id:0:2}/; done < newids.txt
$B tighten --store new --json > tighten.json
tight=$(find new/chunks -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
asimp=$(cat newids.txt | while read id; do stat -c %s store/chunks/${id:0:2}/$id; done | awk '{s+=$1} END {print s}')
man=$(stat -c %s v2.m)
casync make --store=ca.castr v1.caibx v1.img >/dev/null
b=$(du -sb ca.castr | cut -f1)
casync make --store=ca.castr v2.caibx v2.img >/dev/null
a=$(du -sb ca.castr | cut -f1)
cidx=$(stat -c %s v2.caibx)
cp --sparse=always v1.img rsync-dst.img
printf '#!/bin/sh\nshift\nexec sh -c "$*"\n' > rsh-local; chmod +x rsh-local
rs=$(rsync -e ./rsh-local --no-whole-file --inplace --compress --compress-choice=zstd --stats v2.img localhost:$PWD/rsync-dst.img | awk '/Total bytes sent/ {gsub(",","",$4); s=$4} /Total bytes received/ {gsub(",","",$4); r=$4} END {print s+r}')
cmp v2.img rsync-dst.img && echo "rsync copy identical"
rs2=0
if [ -n "${RSYNC_COPY:-}" ]; then
    cp --sparse=always v1.img rsync-dst2.img
    rs2=$(rsync -e ./rsh-local --no-whole-file --compress --compress-choice=zstd --stats v2.img localhost:$PWD/rsync-dst2.img | awk '/Total bytes sent/ {gsub(",","",$4); s=$4} /Total bytes received/ {gsub(",","",$4); r=$4} END {print s+r}')
    cmp v2.img rsync-dst2.img && echo "rsync copy (no --inplace) identical"
fi
echo "new_chunks=$(wc -l < newids.txt) as_imported=$asimp tightened=$tight manifest=$man casync_growth=$((a-b)) casync_index=$cidx rsync_wire=$rs rsync_copy_wire=$rs2"
python3 - <<PY
nc=$tight+$man; nci=$asimp+$man; ca=$((a-b))+$cidx; rs=$rs
print(f"nightcast tightened+manifest {nc:,}; as imported {nci:,}; casync {ca:,}; rsync+zstd {rs:,}")
print(f"tightened/casync {nc/ca:.3f}, tightened/rsync {nc/rs:.3f}; as imported/casync {nci/ca:.3f}, /rsync {nci/rs:.3f}")
PY
