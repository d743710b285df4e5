#!/bin/bash
# Build the small Linux guests that vmlua's integration tests boot: Debian's
# cloud kernel, and an initramfs with busybox, a few modules and
# scripts/guest-init. Cached, and rebuilt only when these scripts change.
#
# usage: scripts/build-guests.sh [x86_64] [aarch64]     (default: both)
#
# Output: $VMLUA_CACHE/guests/ARCH/{vmlinuz,initrd.img,data.ext4,stamp},
# where VMLUA_CACHE defaults to ${XDG_CACHE_HOME:-~/.cache}/vmlua. The .deb
# files are kept in $VMLUA_CACHE/debs. Remove a guest's directory to force a
# rebuild (e.g. to pick up a newer Debian kernel). The UEFI firmware that
# aarch64 guests boot through is the system's (Debian: qemu-efi-aarch64).
set -euo pipefail

case ${1-} in -h | --help) sed -n '2,/^set/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit ;; esac
PATH=$PATH:/usr/sbin:/sbin # mke2fs, for users whose PATH lacks them
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
cache=${VMLUA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmlua}
guests=$cache/guests
debs=$cache/debs

# Modules to load, by name; their dependencies are added. Names that are
# built into the kernel or missing on an arch (button on arm64) are skipped.
modules="virtio_pci virtio_mmio virtio_blk virtio_net virtio_console
	ext4 button evdev virtiofs"

die() { echo "build-guests: $*" >&2; exit 1; }
say() { echo "build-guests: $*" >&2; }

# The inputs of a build: this script, the init and the files under guest/.
stamp() {
	cd "$here" && {
		sha256sum build-guests.sh guest-init
		find guest -type f -exec sha256sum {} + | sort
		find guest -printf '%m %p\n' | sort
	} | sha256sum | cut -d' ' -f1
}

is_built() { # ARCH
	local d=$guests/$1
	[ -s "$d/vmlinuz" ] && [ -s "$d/initrd.img" ] && [ -s "$d/data.ext4" ] &&
		[ "$(cat "$d/stamp" 2>/dev/null)" = "$want" ]
}

# --- apt: everything through Debian's own clients, quietly ----------------

root() { [ "$(id -u)" = 0 ]; }

apt_opts=(-qq)
if root; then apt_opts+=(-o APT::Sandbox::User=root); fi

updated=
apt_update() {
	[ -z "$updated" ] || return 0
	root || die "package lists are missing or stale: run 'apt-get update' as root"
	say "apt-get update"
	apt-get "${apt_opts[@]}" update >/dev/null
	updated=1
}

host_tools() {
	local missing=() tool
	for tool in cpio:cpio busybox:busybox-static mke2fs:e2fsprogs \
		dpkg-deb:dpkg apt-get:apt flock:util-linux; do
		command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
	done
	[ ${#missing[@]} = 0 ] && return
	root || die "missing tools; install: ${missing[*]}"
	say "installing ${missing[*]}"
	apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null ||
		{ apt_update; apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}

# Make apt know packages of Debian architecture $1 (e.g. arm64 on amd64).
deb_arch() {
	[ "$1" = "$(dpkg --print-architecture)" ] && return
	dpkg --print-foreign-architectures | grep -qx "$1" && return
	root || die "run as root, or: dpkg --add-architecture $1 && apt-get update"
	say "dpkg --add-architecture $1"
	dpkg --add-architecture "$1"
	updated=
	apt_update
}

version() { # PKG:ARCH -> candidate version
	apt-cache show --no-all-versions "$1" 2>/dev/null | awk '/^Version:/ { print $2; exit }'
}

# The kernel package the metapackage linux-image-cloud-ARCH points to.
kernel_pkg() { # DEBARCH
	apt-cache depends "linux-image-cloud-$1:$1" 2>/dev/null |
		awk '$1 == "Depends:" { sub(/:.*/, "", $2); print $2; exit }'
}

# Download PKG:ARCH into $debs unless it is there; print the file name.
fetch() { # PKG DEBARCH
	local ver file
	ver=$(version "$1:$2")
	if [ -z "$ver" ]; then apt_update; ver=$(version "$1:$2"); fi
	[ -n "$ver" ] || die "no package $1:$2 in the apt sources"
	file=$debs/${1}_${ver//:/%3a}_$2.deb
	if [ ! -s "$file" ]; then
		say "downloading $1:$2 $ver"
		mkdir -p "$tmp/dl"
		(cd "$tmp/dl" && apt-get "${apt_opts[@]}" download "$1:$2=$ver" >/dev/null) ||
			die "apt-get download $1:$2=$ver failed"
		mkdir -p "$debs"
		mv "$tmp/dl/$(basename "$file")" "$file"
	fi
	echo "$file"
}

# --- the build -------------------------------------------------------------

# Print the .ko files (paths relative to the module dir) that load the
# wanted modules, dependencies first, using modules.dep.
load_order() { # MODDIR
	local -A dep=() seen=()
	local line path name m
	while IFS= read -r line; do
		path=${line%%:*}
		name=$(basename "$path" .ko)
		dep[${name//-/_}]="$path:${line#*:}"
	done <"$1/modules.dep"
	visit() {
		local name=$1 d
		[ -z "${seen[$name]-}" ] || return 0
		seen[$name]=1
		for d in ${dep[$name]#*:}; do
			d=$(basename "$d" .ko)
			visit "${d//-/_}"
		done
		echo "${dep[$name]%%:*}"
	}
	for m in $modules; do
		if [ -n "${dep[$m]-}" ]; then
			visit "$m"
		elif ! grep -q "/$m\.ko$" "$1/modules.builtin"; then
			say "$arch: no module $m, skipped"
		fi
	done
}

build() { # ARCH
	local arch=$1 debarch kpkg kver moddir rootfs m
	case $arch in
	x86_64) debarch=amd64 ;;
	aarch64) debarch=arm64 ;;
	esac
	say "building the $arch guest in $guests/$arch"
	tmp=$(mktemp -d "$guests/.build-$arch.XXXXXX")
	deb_arch "$debarch"
	kpkg=$(kernel_pkg "$debarch")
	if [ -z "$kpkg" ]; then apt_update; kpkg=$(kernel_pkg "$debarch"); fi
	[ -n "$kpkg" ] || die "cannot resolve linux-image-cloud-$debarch"

	mkdir "$tmp/pkg" "$tmp/out"
	dpkg-deb -x "$(fetch "$kpkg" "$debarch")" "$tmp/pkg"
	dpkg-deb -x "$(fetch busybox-static "$debarch")" "$tmp/pkg"
	kver=$(basename "$(echo "$tmp"/pkg/lib/modules/*)")
	cp "$tmp/pkg/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"

	# The package has no modules.dep (its postinst runs depmod).
	moddir=$tmp/pkg/lib/modules/$kver
	busybox depmod -b "$tmp/pkg" "$kver"

	rootfs=$tmp/root
	mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,mnt,lib/modules}
	chmod 1777 "$rootfs/tmp"
	chmod 700 "$rootfs/root"
	cp "$tmp/pkg/bin/busybox" "$rootfs/bin/"
	# Applet links. The guest's busybox may not run here (another arch);
	# the host's busybox of the same Debian release lists the same applets.
	{ "$rootfs/bin/busybox" --list-full 2>/dev/null || busybox --list-full; } |
		while read -r m; do
			case $m in bin/busybox | linuxrc) ;; *) ln -s /bin/busybox "$rootfs/$m" ;; esac
		done
	cp "$here/guest-init" "$rootfs/init"
	chmod 755 "$rootfs/init"
	cp -R "$here/guest/." "$rootfs/"
	if root; then mknod -m 600 "$rootfs/dev/console" c 5 1; fi

	load_order "$moddir" >"$tmp/order"
	while read -r m; do
		mkdir -p "$rootfs/lib/modules/$(dirname "$m")"
		cp "$moddir/$m" "$rootfs/lib/modules/$m"
	done <"$tmp/order"
	cp "$tmp/order" "$rootfs/lib/modules/load-order"
	say "$arch: kernel $kver, modules: $(xargs -n1 basename <"$tmp/order" | sed 's/\.ko$//' | xargs)"

	(cd "$rootfs" && find . -mindepth 1 | LC_ALL=C sort |
		cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9n >"$tmp/out/initrd.img"

	# A small data disk for the tests.
	mkdir "$tmp/data"
	echo "hello from vmlua" >"$tmp/data/hello.txt"
	mke2fs -q -t ext4 -L vmlua-data -d "$tmp/data" \
		-E root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0 \
		"$tmp/out/data.ext4" 16M >/dev/null

	echo "$want" >"$tmp/out/stamp"
	# Swap the whole directory so a guest is either complete or absent.
	if [ -e "$guests/$arch" ]; then mv "$guests/$arch" "$tmp/old"; fi
	mv "$tmp/out" "$guests/$arch"
	rm -rf "$tmp"
	tmp=
	say "$arch: done ($(du -h "$guests/$arch/initrd.img" | cut -f1) initrd)"
}

want=$(stamp)
arches=("$@")
[ $# -gt 0 ] || arches=(x86_64 aarch64)

todo=()
for arch in "${arches[@]}"; do
	case $arch in x86_64 | aarch64) ;; *) die "unknown arch '$arch' (x86_64 or aarch64)" ;; esac
	is_built "$arch" || todo+=("$arch")
done
[ ${#todo[@]} -gt 0 ] || exit 0

mkdir -p "$guests"
tmp=
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT
host_tools
exec 9>"$guests/.lock"
flock 9 # one build at a time; another run may have done the work meanwhile
rm -rf "$guests"/.build-* # left by an interrupted build
for arch in "${todo[@]}"; do
	is_built "$arch" || build "$arch"
done
