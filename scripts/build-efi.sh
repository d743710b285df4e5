#!/bin/bash
# Build the EFI-bootable disks that vmlua's UEFI specs boot (vmlua.efi{}):
# a GPT disk whose one partition, an EFI system partition (FAT32), holds a
# standalone GRUB at the removable-media path (EFI/BOOT/BOOTX64.EFI or
# BOOTAA64.EFI) and the busybox guest's kernel and initrd. GRUB's embedded
# grub.cfg finds the partition by its label and boots that kernel with the
# serial console. No root and no mounts: mkfs.vfat, mtools and sfdisk work
# on files. Cached, and rebuilt when this script or the guest changes.
#
# usage: scripts/build-efi.sh [x86_64] [aarch64]     (default: both)
#
# Output: $VMLUA_CACHE/guests/efi-ARCH/{disk.img,stamp}. The guests come
# from scripts/build-guests.sh (run first). GRUB's arm64 modules come from
# Debian's grub-efi-arm64-bin:arm64, kept in $VMLUA_CACHE/debs; the x86_64
# ones from the installed grub-efi-amd64-bin, or its .deb likewise.
set -euo pipefail

case ${1-} in -h | --help) sed -n '2,/^set/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit ;; esac
PATH=$PATH:/usr/sbin:/sbin # mkfs.vfat and sfdisk, for users whose PATH lacks them
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
cache=${VMLUA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmlua}
guests=$cache/guests
debs=$cache/debs
label=VMLUA-EFI
# Fixed times and identifiers: the same inputs make the same image.
export SOURCE_DATE_EPOCH=1700000000
volume_id=766d6c75
disk_guid=766D6C75-6566-4900-8000-000000000001
part_guid=766D6C75-6566-4900-8000-000000000002
esp_mib=64 # FAT32 needs at least 65525 clusters: 33 MiB with 512-byte ones

die() { echo "build-efi: $*" >&2; exit 1; }
say() { echo "build-efi: $*" >&2; }
root() { [ "$(id -u)" = 0 ]; }

apt_opts=(-qq)
if root; then apt_opts+=(-o APT::Sandbox::User=root); fi

host_tools() {
	local missing=() tool
	for tool in grub-mkstandalone:grub-common mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk \
		dpkg-deb:dpkg apt-get:apt flock:util-linux; do
		command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
	done
	[ ${#missing[@]} = 0 ] && return
	root || die "missing tools; install: ${missing[*]} (or run scripts/install-deps.sh as root)"
	say "installing ${missing[*]}"
	apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
}

# Per guest architecture: Debian's name, GRUB's platform, its package, the
# removable-media boot file and the serial console.
setup() { # ARCH
	case $1 in
	x86_64) debarch=amd64 platform=x86_64-efi grubpkg=grub-efi-amd64-bin bootfile=BOOTX64.EFI console=ttyS0 ;;
	aarch64) debarch=arm64 platform=arm64-efi grubpkg=grub-efi-arm64-bin bootfile=BOOTAA64.EFI console=ttyAMA0 ;;
	*) die "unknown arch '$1' (x86_64 or aarch64)" ;;
	esac
}

grub_version() { # the version whose modules go in: installed, else the apt candidate
	if [ -d "/usr/lib/grub/$platform" ] && [ "$(dpkg --print-architecture)" = "$debarch" ]; then
		dpkg-query -W -f='${Version}' "$grubpkg" 2>/dev/null && return
	fi
	apt-cache show --no-all-versions "$grubpkg:$debarch" 2>/dev/null | awk '/^Version:/ { print $2; exit }'
}

# The inputs of a disk: this script, the guest it boots and GRUB's version.
stamp() { # ARCH
	{
		sha256sum <"$here/build-efi.sh"
		cat "$guests/$1/stamp"
		echo "$grubpkg $(grub_version)"
	} | sha256sum | cut -d' ' -f1
}

is_built() { # ARCH
	local d=$guests/efi-$1
	[ -s "$d/disk.img" ] && [ "$(cat "$d/stamp" 2>/dev/null)" = "$(stamp "$1")" ]
}

# The directory of GRUB's modules for $platform: the installed package's,
# or the one unpacked from its .deb (apt-get download, no root needed).
grub_modules() {
	if [ -d "/usr/lib/grub/$platform" ] && [ "$(dpkg --print-architecture)" = "$debarch" ]; then
		echo "/usr/lib/grub/$platform"
		return
	fi
	local ver file
	ver=$(grub_version)
	[ -n "$ver" ] || die "no package $grubpkg:$debarch in the apt sources (dpkg --add-architecture $debarch; apt-get update)"
	file=$debs/${grubpkg}_${ver//:/%3a}_$debarch.deb
	if [ ! -s "$file" ]; then
		say "downloading $grubpkg:$debarch $ver"
		mkdir -p "$tmp/dl" "$debs"
		(cd "$tmp/dl" && apt-get "${apt_opts[@]}" download "$grubpkg:$debarch=$ver" >/dev/null) ||
			die "apt-get download $grubpkg:$debarch=$ver failed"
		mv "$tmp/dl/$(basename "$file")" "$file"
	fi
	dpkg-deb -x "$file" "$tmp/grub"
	echo "$tmp/grub/usr/lib/grub/$platform"
}

build() { # ARCH
	local arch=$1 guest=$guests/$1 out esp_bytes modules
	setup "$arch"
	say "building the $arch EFI disk in $guests/efi-$arch"
	tmp=$(mktemp -d "$guests/.efi-$arch.XXXXXX")
	out=$tmp/out
	mkdir "$out"

	# GRUB with its configuration inside (memdisk): it needs nothing else.
	cat >"$tmp/grub.cfg" <<-EOF
		set timeout=0
		search --no-floppy --label --set=root $label
		echo "vmlua-efi: GRUB boots the busybox guest from (\$root)"
		linux /vmlinuz console=$console panic=-1
		initrd /initrd.img
		boot
	EOF
	modules=$(grub_modules)
	grub-mkstandalone -d "$modules" -O "$platform" -o "$tmp/$bootfile" \
		--modules="part_gpt fat search search_label linux" --locales= --themes= --fonts= \
		"boot/grub/grub.cfg=$tmp/grub.cfg"

	# The EFI system partition, made in a file of its own.
	mkfs.vfat -C -F 32 -S 512 -s 1 -n "$label" -i "$volume_id" "$tmp/esp.img" $((esp_mib * 1024)) >/dev/null
	mmd -i "$tmp/esp.img" ::/EFI ::/EFI/BOOT
	mcopy -i "$tmp/esp.img" "$tmp/$bootfile" "::/EFI/BOOT/$bootfile"
	mcopy -i "$tmp/esp.img" "$guest/vmlinuz" "$guest/initrd.img" ::/

	# The disk: a GPT with the ESP at 1 MiB, and room for the backup table.
	esp_bytes=$(stat -c %s "$tmp/esp.img")
	truncate -s $((esp_bytes + 2 * 1024 * 1024)) "$out/disk.img"
	sfdisk -q "$out/disk.img" <<-EOF
		label: gpt
		label-id: $disk_guid
		start=2048, size=$((esp_bytes / 512)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$part_guid, name="EFI system partition"
	EOF
	dd if="$tmp/esp.img" of="$out/disk.img" bs=1M seek=1 conv=notrunc,sparse status=none

	stamp "$arch" >"$out/stamp"
	# Swap the whole directory so a disk is either complete or absent.
	if [ -e "$guests/efi-$arch" ]; then mv "$guests/efi-$arch" "$tmp/old"; fi
	mv "$out" "$guests/efi-$arch"
	rm -rf "$tmp"
	tmp=
	say "$arch: done ($(du -h --apparent-size "$guests/efi-$arch/disk.img" | cut -f1) disk, GRUB $(grub_version))"
}

arches=("$@")
[ $# -gt 0 ] || arches=(x86_64 aarch64)
for arch in "${arches[@]}"; do setup "$arch"; done

"$here/build-guests.sh" "${arches[@]}" # the kernels and initrds it boots

todo=()
for arch in "${arches[@]}"; do
	setup "$arch"
	is_built "$arch" || todo+=("$arch")
done
[ ${#todo[@]} -gt 0 ] || exit 0

tmp=
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT
host_tools
exec 9>"$guests/.efi-lock"
flock 9 # one build at a time; another run may have done the work meanwhile
rm -rf "$guests"/.efi-*.* # left by an interrupted build
for arch in "${todo[@]}"; do
	setup "$arch"
	is_built "$arch" || build "$arch"
done
