#!/usr/bin/env bash
# Builds the test master: a small Debian that boots under SeaBIOS and under OVMF from one raw disk,
# tells the host on its serial port when it is up and when it shuts down, takes its hostname from
# the host (fw_cfg or SMBIOS), asks DHCP for an address on any NIC, and runs qemu-guest-agent.
#
#   build-debian.sh OUTPUT.raw
#
# Needs root (mmdebstrap in root mode, chroot) and: mmdebstrap, mkfs.ext4, mkfs.vfat, mtools,
# sgdisk, grub-mkimage with the i386-pc and x86_64-efi platforms (grub-pc-bin,
# grub-efi-amd64-bin). `.ci/run` installs them. Mounts nothing and uses no loop device: the file
# systems are made from directories (`mkfs.ext4 -d`, mtools) straight into the disk file.
#
# The disk (GPT, sectors of 512 bytes):
#   1  BIOS boot   2048..4095      GRUB's i386-pc core image (SeaBIOS: MBR boot.img -> here)
#   2  ESP (FAT)   4096..36863     \EFI\BOOT\BOOTX64.EFI (OVMF's removable-media path)
#   3  root ext4   36864..         label nightcast-root; /boot/grub/grub.cfg for both firmwares
# Both GRUB images find the root by its label, so the disk model (virtio, SATA) does not matter.
#
# The output is renamed into place only when complete. Its contents depend on this file and on
# the Debian archive at build time (the package versions are not pinned).
set -euo pipefail

out=${1:?usage: build-debian.sh OUTPUT.raw}
mirror=${NIGHTCAST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
root_mib=640
label=nightcast-root
# Debian's generic kernel (the cloud one lacks AHCI and e1000, which the SATA/e1000 profile needs)
# without the module trees a VM never loads: a third of the size.
kernel_excludes="drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging
    drivers/iio drivers/bluetooth drivers/isdn drivers/comedi drivers/misc drivers/mtd drivers/hwmon
    drivers/platform drivers/thunderbolt drivers/nfc drivers/w1 drivers/leds drivers/power drivers/mfd
    drivers/net/can drivers/net/usb drivers/net/wwan drivers/net/ieee802154 drivers/atm
    sound net/wireless net/mac80211 net/bluetooth fs/ocfs2 fs/gfs2 fs/xfs fs/btrfs fs/nfs fs/nfsd fs/ceph
    fs/smb fs/f2fs fs/jfs fs/ubifs arch/x86/kvm"

for tool in mmdebstrap mkfs.ext4 mkfs.vfat mmd mcopy sgdisk grub-mkimage; do
    command -v "$tool" >/dev/null || { echo "build-debian.sh: $tool is missing (see .ci/run)" >&2; exit 1; }
done
for platform in i386-pc x86_64-efi; do
    [ -d "/usr/lib/grub/$platform" ] || { echo "build-debian.sh: /usr/lib/grub/$platform is missing" >&2; exit 1; }
done

work=$(mktemp -d "$(dirname "$out")/.build-debian.XXXXXX")
# --one-file-system: never into a mount mmdebstrap may have left behind (proc, sys, dev)
trap 'rm -rf --one-file-system "$work"' EXIT
rootfs=$work/root

# The guest's own files, written into the tree before the packages are configured.
files=$work/files
mkdir -p "$files/usr/local/sbin" "$files/etc/systemd/system" "$files/etc/systemd/network"

cat >"$files/usr/local/sbin/nightcast-hostname" <<'EOF'
#!/bin/sh
# nightcast: take this seat's hostname from the host, at every boot. The agent passes it twice:
# as fw_cfg file opt/nightcast/hostname (read here first) and as SMBIOS OEM string
# "nightcast:hostname=NAME" (type 11; what a Windows guest reads).
name=
modprobe -q qemu_fw_cfg 2>/dev/null || true
f=/sys/firmware/qemu_fw_cfg/by_name/opt/nightcast/hostname/raw
[ -r "$f" ] && name=$(cat "$f")
if [ -z "$name" ]; then
    modprobe -q dmi_sysfs 2>/dev/null || true
    for e in /sys/firmware/dmi/entries/11-*/raw; do
        [ -r "$e" ] || continue
        name=$(tr '\0' '\n' <"$e" | sed -n 's/.*nightcast:hostname=//p' | head -n 1)
        [ -n "$name" ] && break
    done
fi
case $name in
    '' | -* | *[!A-Za-z0-9-]*)
        echo "nightcast-hostname: no usable hostname from the host (got '$name')" >&2
        exit 0
        ;;
esac
echo "$name" >/etc/hostname
echo "$name" >/proc/sys/kernel/hostname
sed -i '/^127\.0\.1\.1[[:space:]]/d' /etc/hosts
echo "127.0.1.1	$name" >>/etc/hosts
echo "nightcast-hostname: $name"
EOF

cat >"$files/usr/local/sbin/nightcast-marker" <<'EOF'
#!/bin/sh
# nightcast: one line on the first serial port, which the host logs to a file and watches.
#   nightcast-marker ready     -> NIGHTCAST-READY <hostname>      (the guest booted)
#   nightcast-marker shutdown  -> NIGHTCAST-SHUTDOWN <hostname>   (the guest is shutting down)
case $1 in
    ready) word=NIGHTCAST-READY ;;
    shutdown) word=NIGHTCAST-SHUTDOWN ;;
    *) echo "usage: nightcast-marker ready|shutdown" >&2; exit 2 ;;
esac
printf '\n%s %s\n' "$word" "$(cat /proc/sys/kernel/hostname)" >/dev/ttyS0
EOF
chmod 755 "$files/usr/local/sbin/nightcast-hostname" "$files/usr/local/sbin/nightcast-marker"

cat >"$files/etc/systemd/system/nightcast-hostname.service" <<'EOF'
[Unit]
Description=nightcast: the seat's hostname from the host (fw_cfg or SMBIOS)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target network-pre.target systemd-networkd.service
Wants=network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/nightcast-hostname

[Install]
WantedBy=sysinit.target
EOF

cat >"$files/etc/systemd/system/nightcast-marker.service" <<'EOF'
[Unit]
Description=nightcast: boot and shutdown markers on the serial port
After=nightcast-hostname.service systemd-networkd.service qemu-guest-agent.service systemd-user-sessions.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/nightcast-marker ready
ExecStop=/usr/local/sbin/nightcast-marker shutdown

[Install]
WantedBy=multi-user.target
EOF

cat >"$files/etc/systemd/network/80-nightcast-dhcp.network" <<'EOF'
# Any wired NIC: DHCP, identified by its MAC (the seat's, stable across NUC swaps), not by the
# machine-id (which a pristine image shares with every seat).
[Match]
Name=en* eth*

[Network]
DHCP=yes

[DHCPv4]
ClientIdentifier=mac
EOF

cat >"$files/etc/fstab" <<EOF
LABEL=$label / ext4 errors=remount-ro 0 1
EOF

# Nothing on the disk names a partition by number: GRUB finds the root by label.
cat >"$work/early.cfg" <<EOF
search --no-floppy --label $label --set=root
set prefix=(\$root)/boot/grub
EOF

# Of the graphics drivers, only QEMU's standard VGA (bochs) and what it needs: the guest's console
# then takes the screen's size from the EDID the host gives (a real master's desktop does the same).
kernel_keeps="drivers/gpu/drm/drm.ko drivers/gpu/drm/drm_kms_helper.ko drivers/gpu/drm/drm_vram_helper.ko
    drivers/gpu/drm/drm_ttm_helper.ko drivers/gpu/drm/ttm/ttm.ko drivers/gpu/drm/tiny/bochs.ko"
module_excludes=()
for d in $kernel_excludes; do
    for lib in /lib /usr/lib; do module_excludes+=("--dpkgopt=path-exclude=$lib/modules/*/kernel/$d/*"); done
done
for f in $kernel_keeps; do
    for lib in /lib /usr/lib; do module_excludes+=("--dpkgopt=path-include=$lib/modules/*/kernel/$f*"); done
done

mmdebstrap \
    --mode=root \
    --variant=minbase \
    --format=directory \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    "${module_excludes[@]}" \
    --include=systemd-sysv,udev,dbus,kmod,zstd,initramfs-tools,linux-image-amd64,qemu-guest-agent \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && printf "COMPRESS=zstd\nMODULES=list\n" >"$1/etc/initramfs-tools/conf.d/nightcast"' \
    --customize-hook="cp -a '$files/.' \"\$1/\"" \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd.service nightcast-hostname.service nightcast-marker.service' \
    --customize-hook='chroot "$1" systemctl mask systemd-networkd-wait-online.service systemd-firstboot.service e2scrub_reap.service e2scrub_all.timer' \
    --customize-hook='printf "%s\n" virtio_pci virtio_blk ahci sd_mod ext4 >>"$1/etc/initramfs-tools/modules"' \
    --customize-hook='chroot "$1" update-initramfs -u -k all' \
    --customize-hook='echo debian >"$1/etc/hostname"; : >"$1/etc/machine-id"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log' \
    "$suite" "$rootfs" "$mirror"

kernel=$(cd "$rootfs/boot" && ls vmlinuz-* | sort -V | tail -n 1)
initrd=initrd.img-${kernel#vmlinuz-}
[ -f "$rootfs/boot/$initrd" ] || { echo "build-debian.sh: no $initrd in the guest" >&2; exit 1; }

# GRUB: the modules of both platforms under /boot/grub (as grub-install would put them), one
# configuration for both. The kernel talks on the serial port and on the screen; `no_timer_check`:
# under TCG on a starved host the kernel's IO-APIC timer check can fail and panic ("IO-APIC + timer
# doesn't work!"), seen once in a loaded test run.
mkdir -p "$rootfs/boot/grub"
for platform in i386-pc x86_64-efi; do
    mkdir -p "$rootfs/boot/grub/$platform"
    cp /usr/lib/grub/$platform/*.mod /usr/lib/grub/$platform/*.lst "$rootfs/boot/grub/$platform/"
done
cat >"$rootfs/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=0
menuentry 'Debian (nightcast test master)' {
    insmod part_gpt
    insmod ext2
    search --no-floppy --label $label --set=root
    linux /boot/$kernel root=LABEL=$label ro console=tty0 console=ttyS0,115200n8 quiet mitigations=off no_timer_check
    initrd /boot/$initrd
}
EOF

# The disk.
sector=512
bios_start=2048
esp_start=4096
esp_sectors=32768
root_start=36864
root_sectors=$((root_mib * 2048))
total_sectors=$((root_start + root_sectors + 2048))
disk=$work/disk.raw
truncate -s $((total_sectors * sector)) "$disk"
sgdisk --clear \
    -n 1:$bios_start:$((esp_start - 1)) -t 1:EF02 -c 1:bios-boot \
    -n 2:$esp_start:$((root_start - 1)) -t 2:EF00 -c 2:esp \
    -n 3:$root_start:$((root_start + root_sectors - 1)) -t 3:8304 -c 3:root \
    "$disk" >/dev/null

truncate -s "$((root_mib))M" "$work/root.img"
mkfs.ext4 -q -L "$label" -d "$rootfs" "$work/root.img"
dd if="$work/root.img" of="$disk" bs=1M seek=$((root_start * sector / 1048576)) conv=notrunc,sparse status=none
rm "$work/root.img"

# UEFI: a GRUB image at the removable-media path of a FAT ESP.
grub-mkimage -O x86_64-efi -o "$work/BOOTX64.EFI" -c "$work/early.cfg" -p /boot/grub \
    part_gpt ext2 search search_label normal configfile linux echo serial terminal
esp=$work/esp.img
mkfs.vfat -F 16 -n ESP -C "$esp" $((esp_sectors * sector / 1024)) >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT
mcopy -i "$esp" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
dd if="$esp" of="$disk" bs=$sector seek=$esp_start conv=notrunc status=none

# BIOS: boot.img in the MBR's code area (the partition table after it is kept), the core image in
# the BIOS boot partition, and the two block addresses grub-bios-setup would patch: where boot.img
# finds the core's first sector (0x5c), and where the core's first sector finds the rest (its
# blocklist, the last 12 bytes of that sector: start u64, length u16 (set by grub-mkimage)).
grub-mkimage -O i386-pc -o "$work/core.img" -c "$work/early.cfg" -p /boot/grub \
    biosdisk part_gpt ext2 search search_label normal configfile linux echo serial terminal
core_size=$(stat -c %s "$work/core.img")
((core_size <= (esp_start - bios_start) * sector)) || { echo "build-debian.sh: core.img too large ($core_size bytes)" >&2; exit 1; }
le() { # le VALUE BYTES: VALUE as little-endian bytes
    local v=$1 n=$2 i
    for ((i = 0; i < n; i++)); do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done
}
patch() { # patch OFFSET: stdin into the disk at byte OFFSET
    dd of="$disk" bs=1 seek="$1" conv=notrunc status=none
}
dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
le $bios_start 8 | patch $((0x5c))
printf '\x90\x90' | patch $((0x66)) # trust the BIOS's boot drive (what grub-bios-setup does for disks)
dd if="$work/core.img" of="$disk" bs=$sector seek=$bios_start conv=notrunc status=none
le $((bios_start + 1)) 8 | patch $((bios_start * sector + sector - 12))

sgdisk --verify "$disk" >/dev/null
mv "$disk" "$out"
echo "build-debian.sh: $out ($kernel, $(du -h --apparent-size "$out" | cut -f1) apparent, $(du -h "$out" | cut -f1) used)"
