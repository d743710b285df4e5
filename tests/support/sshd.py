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
import os
import signal

from mountns import MS_BIND, PR_SET_PDEATHSIG, check, enter, libc, mount


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="sshd's configuration file")
    ap.add_argument("--libvirt-run", help="a directory to show as /run/libvirt")
    ap.add_argument("--sshd", default="/usr/sbin/sshd")
    args = ap.parse_args()
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0), "prctl")
    enter()
    mount("tmpfs", "/run", "tmpfs", 0, "mode=0755")
    os.makedirs("/run/sshd", mode=0o755)
    if args.libvirt_run:
        os.makedirs("/run/libvirt", mode=0o755)
        mount(os.path.realpath(args.libvirt_run), "/run/libvirt", None, MS_BIND)
    os.execv(args.sshd, [args.sshd, "-D", "-e", "-f", args.config])


if __name__ == "__main__":
    main()
