#!/usr/bin/env bash
# mmdebstrap customize hook of build-image.sh: runs on the host, as root, with the guest's tree
# as $1 (proc, sys and dev mounted by mmdebstrap).
#
#   customize.sh ROOTFS KERNEL_SOURCE_PACKAGE SSH_PUBLIC_KEY_FILE IMAGE_DIR
set -euo pipefail
ROOTFS=$1 KSRC=$2 PUBKEY_FILE=$3 HERE=$4
readonly ROOTFS KSRC PUBKEY_FILE HERE

in_guest() { chroot "$ROOTFS" "$@"; }

mapfile -t krels < <(ls "$ROOTFS/lib/modules")
[[ ${#krels[@]} -eq 1 ]] || { echo "customize.sh: expected one kernel, got: ${krels[*]}" >&2; exit 1; }
readonly KREL=${krels[0]}
mkdir -p "$ROOTFS/etc/atoms-systest"
echo "$KREL" >"$ROOTFS/etc/atoms-systest/kernel-release"

# --- gpio-sim, out of tree, from Debian's source of this very kernel ---------------------------
build_gpio_sim() {
    local src=/usr/src/atoms-gpio-sim tmp
    tmp=$(mktemp -d)
    # gpio-sim.c includes the GPIO core's private header (gpiolib.h) from its own directory.
    tar -xf "$ROOTFS/usr/src/$KSRC.tar.xz" -C "$tmp" --strip-components=1 --wildcards \
        "$KSRC/drivers/gpio/gpio-sim.c" "$KSRC/drivers/gpio/gpiolib*.h" "$KSRC/kernel/irq/irq_sim.c"
    rm -rf "${ROOTFS:?}$src"
    mkdir -p "$ROOTFS$src"
    cp "$tmp/drivers/gpio/gpio-sim.c" "$ROOTFS$src/gpio-sim-main.c"
    cp "$tmp"/drivers/gpio/gpiolib*.h "$ROOTFS$src/"
    # irq_to_desc() is not exported to modules; generic_handle_irq() does the same lookup and is.
    sed 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' \
        "$tmp/kernel/irq/irq_sim.c" >"$ROOTFS$src/irq_sim.c"
    grep -q 'generic_handle_irq(irqnum);' "$ROOTFS$src/irq_sim.c" ||
        { echo "customize.sh: irq_sim.c of $KSRC no longer matches the patch" >&2; exit 1; }
    cp "$HERE/gpio-sim/Kbuild" "$ROOTFS$src/Kbuild"
    rm -rf "$tmp"
    in_guest make -s -C "/lib/modules/$KREL/build" M="$src" modules
    install -D -m 0644 "$ROOTFS$src/gpio-sim.ko" "$ROOTFS/lib/modules/$KREL/updates/gpio-sim.ko"
    in_guest depmod -a "$KREL"
    in_guest modinfo -F vermagic gpio-sim -k "$KREL" >/dev/null
    # The 130 MB source tarball has served its purpose.
    rm -f "$ROOTFS/usr/src/$KSRC.tar.xz"
}
build_gpio_sim

# --- machine identity, disk, network ----------------------------------------------------------
echo atoms-systest >"$ROOTFS/etc/hostname"
echo "127.0.1.1 atoms-systest" >>"$ROOTFS/etc/hosts"
# The wheelhouse the harness shares read-only over virtio-9p (tests/system/guest.py).
mkdir -p "$ROOTFS/mnt/wheelhouse"
cat >"$ROOTFS/etc/fstab" <<'EOF'
/dev/vda / ext4 defaults,noatime 0 1
wheelhouse /mnt/wheelhouse 9p trans=virtio,version=9p2000.L,ro,nofail 0 0
EOF
printf '[Match]\nName=en*\n[Network]\nDHCP=ipv4\n' >"$ROOTFS/etc/systemd/network/10-en.network"
in_guest systemctl enable systemd-networkd.service >/dev/null
rm -f "$ROOTFS/etc/resolv.conf"
echo "nameserver 10.0.2.3" >"$ROOTFS/etc/resolv.conf"   # QEMU's user-mode network DNS
mkdir -p "$ROOTFS/var/log/journal"                      # the journal survives reboots and power cuts

# --- the host's extra CA certificates (a TLS-intercepting proxy): apt, Python and pip trust them
shopt -s nullglob
cas=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob
if ((${#cas[@]})); then
    cp "${cas[@]}" "$ROOTFS/usr/local/share/ca-certificates/"
    in_guest update-ca-certificates >/dev/null
fi
# pip uses its own CA bundle unless told otherwise.
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ROOTFS/etc/pip.conf"

# --- users: tester (a person with sudo, as on a fresh Pi), visitor (no rights at all) ---------
pubkey=$(cat "$PUBKEY_FILE")
add_key() {
    local user=$1 home=$2
    mkdir -p "$ROOTFS$home/.ssh"
    echo "$pubkey" >"$ROOTFS$home/.ssh/authorized_keys"
    chmod 700 "$ROOTFS$home/.ssh"
    chmod 600 "$ROOTFS$home/.ssh/authorized_keys"
    in_guest chown -R "$user:" "$home/.ssh"
}
in_guest useradd -m -s /bin/bash -G sudo tester
in_guest useradd -m -s /bin/bash visitor
echo 'tester ALL=(ALL) NOPASSWD:ALL' >"$ROOTFS/etc/sudoers.d/tester"
chmod 0440 "$ROOTFS/etc/sudoers.d/tester"
add_key root /root
add_key tester /home/tester
add_key visitor /home/visitor

# --- the test machine's "hardware": snd-aloop and a gpio-sim chip at every boot ----------------
# --- and the agent's side: a network namespace with the simulator in it -------------------------
for name in atoms-systest-hw atoms-systest-net atoms-systest-sim; do
    [[ ! -f "$HERE/rootfs/$name" ]] || install -m 0755 "$HERE/rootfs/$name" "$ROOTFS/usr/local/sbin/$name"
    install -m 0644 "$HERE/rootfs/$name.service" "$ROOTFS/etc/systemd/system/"
    in_guest systemctl enable "$name.service" >/dev/null
done

# --- a faster boot under emulation: nothing the test does not use ------------------------------
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer \
    dpkg-db-backup.timer systemd-networkd-wait-online.service e2scrub_reap.service \
    getty@tty1.service; do
    in_guest systemctl mask "$unit" >/dev/null 2>&1 || true
done
in_guest apt-get clean
