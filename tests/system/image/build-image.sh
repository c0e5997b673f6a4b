#!/usr/bin/env bash
# Build a bootable Debian guest for the system test (tests/system/), from Debian's archive.
#
#   build-image.sh RELEASE OUT_DIR SSH_PUBLIC_KEY_FILE      (RELEASE: bookworm | trixie)
#
# Writes OUT_DIR/{rootfs/, disk.img, vmlinuz, initrd.img, kernel-release, build.log}:
#  - rootfs/ is the tree itself, kept so that the harness can chroot into the guest's own
#    userland at native speed (building the wheelhouse for the guest's Python, `make test` on it);
#  - disk.img is a raw ext4 file system of that tree (the VM's /dev/vda, used read-only through a
#    qcow2 overlay per run), booted with Debian's kernel and initrd copied beside it.
# The guest has what deploy/install.sh would otherwise fetch with apt (python3-venv, python3-dev,
# gcc, libasound2-dev, alsa-utils, swig), the test's own tools (espeak-ng, sox, gpiod, sudo,
# ssh), the host's extra CA certificates (a TLS-intercepting proxy), and gpio-sim built out of
# tree from Debian's linux-source package (Debian's kernels do not ship it).
# Run as root (mmdebstrap in root mode, chroot, mkfs.ext4 -d). Takes a few minutes.
set -euo pipefail

RELEASE=${1:?usage: build-image.sh RELEASE OUT_DIR SSH_PUBLIC_KEY_FILE}
OUT=${2:?usage: build-image.sh RELEASE OUT_DIR SSH_PUBLIC_KEY_FILE}
PUBKEY_FILE=${3:?usage: build-image.sh RELEASE OUT_DIR SSH_PUBLIC_KEY_FILE}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly RELEASE OUT PUBKEY_FILE HERE
readonly DISK_SIZE=${ATOMS_SYSTEM_DISK_SIZE:-6G}

case "$RELEASE" in
    bookworm) KSRC=linux-source-6.1 ;;
    trixie) KSRC=linux-source-6.12 ;;
    *) echo "build-image.sh: unknown release $RELEASE (bookworm or trixie)" >&2; exit 2 ;;
esac
readonly KSRC

# The Debian archive the host's apt uses (its proxy settings and mirror choice apply to the
# guest too), unless ATOMS_SYSTEM_MIRROR / ATOMS_SYSTEM_SECURITY_MIRROR say otherwise.
host_uris() {
    {
        sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
        grep -hoE '^deb +(\[[^]]*\] +)?[a-z]+://[^ ]+' /etc/apt/sources.list \
            /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $NF}'
    } | grep -E '/debian(-security)?/?$' || true
}
MIRROR=${ATOMS_SYSTEM_MIRROR:-$(host_uris | grep -v -- -security | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${ATOMS_SYSTEM_SECURITY_MIRROR:-$(host_uris | grep -- -security | head -1)}
SECURITY=${SECURITY:-${MIRROR%/}-security}
readonly MIRROR=${MIRROR%/} SECURITY=${SECURITY%/}

PACKAGES=(
    # a bootable system with systemd as PID 1 and Debian's kernel
    systemd-sysv udev kmod dbus linux-image-amd64 initramfs-tools zstd procps iproute2
    openssh-server sudo ca-certificates less psmisc
    # what deploy/install.sh installs with apt (and `make test` on the guest's userland)
    python3 python3-venv python3-dev gcc libasound2-dev alsa-utils swig make git shellcheck
    # the test's own tools: speech, WAV analysis, GPIO inspection
    espeak-ng sox gpiod
    # gpio-sim's build: the kernel's headers and Debian's source of the same kernel
    linux-headers-amd64 "$KSRC"
)

rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp"
ROOTFS=$OUT.tmp/rootfs
readonly ROOTFS

# Hooks run on the host with the tree as $1 (mmdebstrap's customize hooks).
# shellcheck disable=SC2016  # the hooks are expanded by mmdebstrap's shell, not this one
mmdebstrap --mode=root --variant=apt --format=directory \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --aptopt='Acquire::Retries "3"' \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"' \
    --essential-hook='printf "MODULES=list\n" > "$1/etc/initramfs-tools/conf.d/atoms-systest.conf"' \
    --essential-hook='mkdir -p "$1/usr/share/initramfs-tools/modules.d"' \
    --essential-hook='printf "virtio_pci\nvirtio_blk\next4\n" > "$1/usr/share/initramfs-tools/modules.d/atoms-systest"' \
    --customize-hook="\"$HERE/customize.sh\" \"\$1\" \"$KSRC\" \"$PUBKEY_FILE\" \"$HERE\"" \
    "$RELEASE" "$ROOTFS" \
    "deb $MIRROR $RELEASE main" \
    "deb $MIRROR $RELEASE-updates main" \
    "deb $SECURITY $RELEASE-security main"

KREL=$(cat "$ROOTFS/etc/atoms-systest/kernel-release")
cp "$ROOTFS/boot/vmlinuz-$KREL" "$OUT.tmp/vmlinuz"
cp "$ROOTFS/boot/initrd.img-$KREL" "$OUT.tmp/initrd.img"
echo "$KREL" >"$OUT.tmp/kernel-release"
truncate -s "$DISK_SIZE" "$OUT.tmp/disk.img"
mkfs.ext4 -q -F -L atoms-root -d "$ROOTFS" "$OUT.tmp/disk.img"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "build-image.sh: $RELEASE with kernel $KREL in $OUT"
