#!/usr/bin/env python3
"""A private OpenSSH sshd for the remote libvirt specs (run as root, Linux only).

Enters a mount namespace of its own, where /run is a fresh tmpfs (sshd's
privilege separation directory /run/sshd lives there, not on the host)
and --libvirt-run, if given, is bound over /run/libvirt: the sessions of
this sshd see a private libvirtd's socket where a libvirt host has its
own, so `qemu+libssh://root@127.0.0.1:PORT/system` reaches that daemon
through virt-ssh-helper like any remote host. Then it becomes
`sshd -D -e -f CONFIG` (the spec's own configuration, never
/etc/ssh/sshd_config), which dies with its parent (PR_SET_PDEATHSIG).
"""
import argparse
import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
          "mount %s on %s" % (source, target))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="sshd's configuration file")
    ap.add_argument("--libvirt-run", help="a directory to show as /run/libvirt")
    ap.add_argument("--sshd", default="/usr/sbin/sshd")
    args = ap.parse_args()
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0), "prctl")
    check(libc.unshare(CLONE_NEWNS), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", "/run", "tmpfs", 0, "mode=0755")
    os.makedirs("/run/sshd", mode=0o755)
    if args.libvirt_run:
        os.makedirs("/run/libvirt", mode=0o755)
        mount(os.path.realpath(args.libvirt_run), "/run/libvirt", None, MS_BIND)
    os.execv(args.sshd, [args.sshd, "-D", "-e", "-f", args.config])


if __name__ == "__main__":
    main()
