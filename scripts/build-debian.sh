#!/bin/bash
# Build a Debian 12 development guest for x86_64: debootstrap --variant=minbase
# with systemd, udev, openssh-server and Debian's cloud kernel (its initramfs
# mounts the virtio-blk root), DHCP on the virtio NIC by systemd-networkd,
# and root login by a key made for this cache only (no password). cloud-init
# configures it from a NoCloud seed (vmlua.cloudinit{}) when one is attached;
# without one, its ds-identify turns it off for the boot. Cached, and rebuilt
# only when this script changes.
#
# usage: scripts/build-debian.sh
#
# Output: $VMLUA_CACHE/guests/debian-x86_64/{vmlinuz,initrd.img,root.ext4,
# id_ed25519,id_ed25519.pub,stamp}, where VMLUA_CACHE defaults to
# ${XDG_CACHE_HOME:-~/.cache}/vmlua. Packages come from the mirror in the
# host's apt configuration. Needs root (debootstrap) and a few
# minutes (about 70 s before cloud-init and its Python were added).
set -euo pipefail

case ${1-} in -h | --help) sed -n '2,/^set/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit ;; esac
PATH=$PATH:/usr/sbin:/sbin
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
cache=${VMLUA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmlua}
out=$cache/guests/debian-x86_64
suite=bookworm
size=2G

die() { echo "build-debian: $*" >&2; exit 1; }
say() { echo "build-debian: $*" >&2; }

want=$(sha256sum "$here/build-debian.sh" | cut -d' ' -f1)
if [ "$(cat "$out/stamp" 2>/dev/null)" = "$want" ] && [ -s "$out/root.ext4" ]; then exit 0; fi
[ "$(id -u)" = 0 ] || die "debootstrap needs root: run as root, or sudo $0"
[ "$(dpkg --print-architecture)" = amd64 ] || die "builds an x86_64 guest on an x86_64 host only"
for tool in debootstrap mkfs.ext4 ssh-keygen; do
	command -v "$tool" >/dev/null || die "missing $tool: run scripts/install-deps.sh"
done

# The host's own Debian mirror, as apt knows it.
mirror=$(apt-get indextargets --format '$(URI)' 'Identifier: Packages' |
	sed -n "s|/dists/$suite/main/binary-amd64/Packages.*||p" | head -n1)
[ -n "$mirror" ] || die "no $suite mirror in the host's apt configuration"

mkdir -p "$out"
chmod 700 "$out"
work=$(mktemp -d "$cache/debian-build.XXXXXX")
trap 'umount -R "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/root

started=$(date +%s)
say "debootstrap $suite from $mirror"
# python3-cffi-backend: cloud-init needs python3-cryptography, which asks for a
# virtual package (python3-cffi-backend-api-min) that debootstrap cannot resolve.
debootstrap --variant=minbase --arch=amd64 \
	--include=systemd,systemd-sysv,udev,dbus,openssh-server,linux-image-cloud-amd64,initramfs-tools,iproute2,procps,e2fsprogs,qemu-guest-agent,cloud-init,python3-cffi-backend \
	"$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
	{ tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

echo vmlua-debian >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 vmlua-debian\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' >"$root/etc/fstab"
cat >"$root/etc/systemd/network/80-vmlua-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
chroot "$root" systemctl enable -q systemd-networkd systemd-resolved 2>/dev/null ||
	chroot "$root" systemctl enable -q systemd-networkd
# The key: root logs in with it only (the root account has no password).
rm -f "$work/id_ed25519" "$work/id_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -C vmlua-debian -f "$work/id_ed25519"
install -d -m 700 "$root/root/.ssh"
install -m 600 "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
printf 'PasswordAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n' \
	>"$root/etc/ssh/sshd_config.d/vmlua.conf"
chroot "$root" passwd -q -l root >/dev/null
# cloud-init looks only for data on a local disk (NoCloud's cidata seed, or a
# config-2 drive): no network metadata services to wait for. With neither,
# its ds-identify turns it off for the boot (with one source listed it would
# always run, even without a seed). Its default locale,
# en_US.UTF-8, is not generated in this image (Debian's locale-gen ignores
# its argument), so it keeps C.UTF-8, which glibc has built in.
echo LANG=C.UTF-8 >"$root/etc/default/locale"
cat >"$root/etc/cloud/cloud.cfg.d/90-vmlua.cfg" <<'EOF'
datasource_list: [ NoCloud, ConfigDrive ]
locale: C.UTF-8
EOF
chroot "$root" apt-get -qq clean
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin

kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)
[ -s "$kernel" ] && [ -s "$initrd" ] || die "no kernel or initramfs in the image"
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
mkfs.ext4 -q -L root -d "$root" "$work/root.ext4" "$size" >/dev/null

for f in vmlinuz initrd.img root.ext4 id_ed25519 id_ed25519.pub; do mv -f "$work/$f" "$out/$f"; done
chmod 600 "$out/id_ed25519"
echo "$want" >"$out/stamp"
say "built $out in $(($(date +%s) - started)) s"
