#!/bin/bash
# Installs what vmlua needs to build, test and run on Debian 12. Idempotent:
# packages already installed are left alone, and apt-get runs only when
# something is missing.
set -euo pipefail

packages=(
  gcc make pkg-config                    # build
  liblua5.4-dev lua5.4 libuv1-dev libjansson-dev libedit-dev
  libcurl4-openssl-dev libssl-dev python3 # vmlua.image: downloads, SHA-256; its specs' HTTP server
  lua-filesystem                         # directory walks (LuaFileSystem)
  lua-busted lua-check                   # tests and lint
  lua-ldoc luarocks zsh                  # make doc; the rockspec and zsh completion specs
  qemu-system-x86 qemu-system-arm qemu-utils qemu-efi-aarch64 ovmf # the backend, UEFI firmware
  busybox-static cpio e2fsprogs          # guests (scripts/build-guests.sh)
  grub-common grub-efi-amd64-bin dosfstools mtools fdisk # EFI disks (scripts/build-efi.sh)
  debootstrap openssh-client             # the Debian guest (scripts/build-debian.sh), vm:ssh
  xorriso                                # cloud-init seeds (vmlua.cloudinit)
  vde-switch                             # private networks between VMs (vmlua.lan)
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev # the libvirt backend; its specs' private libvirtd
  openssh-server                         # the remote libvirt specs' private sshd (tests/support/sshd.lua)
  valgrind                               # memory checks in CI
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
