#!/usr/bin/env python3
"""A private libvirtd for the libvirt specs (run as root, Linux only).

Runs libvirtd in a mount namespace of its own, where the directories of
--dir stand in for the host's libvirt directories:
  DIR/etc -> /etc/libvirt      DIR/lib   -> /var/lib/libvirt
  DIR/run -> /run/libvirt      DIR/log   -> /var/log/libvirt
  DIR/cache -> /var/cache/libvirt
/run is a fresh tmpfs there (no host sockets, no D-Bus, no systemd), and
hugetlbfs mounts are hidden, so nothing of the host's libvirt is read or
changed. Clients outside connect to
  qemu:///system?socket=DIR/run/libvirt-sock
libvirtd logs to DIR/libvirtd.log; QEMU's output goes to DIR/log/qemu/.

QEMU's capabilities, which libvirtd probes for seconds at a cold start, are
copied in from --cache (if given) and the ones probed are copied back, so
later runs start warm while every run's own state is fresh.

This process is a child subreaper: QEMU, which libvirt daemonizes, becomes
its child and is reaped at once (libvirt waits for a dead QEMU to vanish).
On SIGTERM, SIGINT or SIGHUP it ends every QEMU, then libvirtd, then exits
(removing --dir too if its own parent has died); when libvirtd dies by
itself it ends the rest and exits 1. Prints "libvirtd PID" once libvirtd
runs.
"""
import argparse
import os
import shutil
import signal
import sys
import time

import mountns
from mountns import MNT_DETACH, MS_BIND, PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, check, libc, mount

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

QEMU_CONF = """\
# The fixture's QEMU driver: no namespaces, cgroups, virtlogd or relabelling.
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
"""

LIBVIRTD_CONF = """\
# The fixture's daemon: its unix socket only, for root, without polkit.
listen_tls = 0
listen_tcp = 0
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:stderr"
"""

TARGETS = [("etc", "/etc/libvirt"), ("lib", "/var/lib/libvirt"), ("run", "/run/libvirt"),
           ("log", "/var/log/libvirt"), ("cache", "/var/cache/libvirt")]

SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def write(path, text, mode=0o644):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(text)


def version_key():
    """A cache key: which libvirtd and QEMU are installed (libvirt checks
    its cache itself too; the key keeps two installations apart)."""
    words = []
    for name in ("libvirtd", "qemu-system-x86_64"):
        path = shutil.which(name, path=PATH + ":" + os.environ.get("PATH", ""))
        st = os.stat(path) if path else None
        words.append("%s-%x-%x" % (name, st.st_size, int(st.st_mtime)) if st else name + "-none")
    return "-".join(words)


def copy_tree(src, dst):
    """Copies the files of src that dst lacks or has older, each atomically."""
    if not os.path.isdir(src):
        return
    os.makedirs(dst, mode=0o700, exist_ok=True)
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if not os.path.isfile(s) or name.startswith("."):
            continue
        if os.path.exists(d) and os.path.getmtime(d) >= os.path.getmtime(s):
            continue
        tmp = os.path.join(dst, ".%s.%d" % (name, os.getpid()))
        shutil.copy2(s, tmp)
        os.replace(tmp, d)


def prepare(dir):
    """The per-run directories and configuration."""
    for name, _ in TARGETS:
        os.makedirs(os.path.join(dir, name), mode=0o700, exist_ok=True)
    etc = os.path.join(dir, "etc")
    for sub in ("qemu/networks/autostart", "qemu/autostart", "storage", "nwfilter", "hooks"):
        os.makedirs(os.path.join(etc, sub), mode=0o700, exist_ok=True)
    write(os.path.join(etc, "qemu.conf"), QEMU_CONF, 0o600)
    write(os.path.join(etc, "libvirtd.conf"), LIBVIRTD_CONF, 0o600)


def enter_namespace(dir):
    """A mount namespace where dir's directories are the host's libvirt's."""
    mountns.enter()
    with open("/proc/self/mounts") as f:
        huge = [line.split()[1] for line in f if line.split()[2] == "hugetlbfs"]
    for target in reversed(huge):
        libc.umount2(target.encode(), MNT_DETACH)
    mount("tmpfs", "/run", "tmpfs", 0, "mode=0755")
    os.makedirs("/run/lock", exist_ok=True)
    os.chmod("/run/lock", 0o1777)
    for name, target in TARGETS:
        os.makedirs(target, exist_ok=True)  # only /run/libvirt, in the new tmpfs
        mount(os.path.join(dir, name), target, None, MS_BIND)


def spawn(argv, log):
    """Starts argv with a clean environment and signal state, output to log."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    pid = os.fork()
    if pid == 0:
        try:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            for s in (signal.SIGPIPE, signal.SIGINT):
                signal.signal(s, signal.SIG_DFL)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.setsid()
            env = {"PATH": PATH + ":" + os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"),
                   "LC_ALL": "C"}
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(fd)
    return pid


def children():
    """The pids whose parent is this process."""
    me, pids = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            pids.append(int(entry))
    return pids


def reap():
    """Reaps every child that has ended; returns their pids."""
    gone = []
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return gone
        if pid == 0:
            return gone
        gone.append(pid)


def end(pids, seconds):
    """SIGTERM to pids, SIGKILL to those left after `seconds`, reaping."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + seconds
        while True:
            reap()
            pids = [p for p in pids if p in children()]
            left = deadline - time.monotonic()
            if not pids or left <= 0:
                break
            signal.sigtimedwait(SIGNALS, min(left, 0.2))
        if not pids:
            return


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="the fixture's directory (private, empty)")
    ap.add_argument("--cache", help="a directory kept across runs for the capabilities")
    args = ap.parse_args()
    dir = os.path.realpath(args.dir)
    parent = os.getppid()
    caps_dir = os.path.join(dir, "cache", "qemu", "capabilities")
    shared = os.path.join(args.cache, version_key()) if args.cache else None

    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl")
    prepare(dir)
    if shared:
        copy_tree(shared, caps_dir)
    enter_namespace(dir)
    libvirtd = shutil.which("libvirtd", path=PATH)
    if libvirtd is None:
        sys.exit("libvirtd is not installed")
    daemon = spawn([libvirtd, "--pid-file", os.path.join(dir, "libvirtd.pid")],
                   os.path.join(dir, "libvirtd.log"))
    print("libvirtd %d" % daemon, flush=True)

    status = 0
    while True:
        info = signal.sigwaitinfo(SIGNALS)
        if info.si_signo == signal.SIGCHLD:
            if daemon in reap():
                status = 1
                break
        else:
            break
    # QEMU first (libvirtd leaves its guests running when it stops), then
    # libvirtd, then anything else it left.
    end([p for p in children() if p != daemon], 5)
    if status == 0:
        end([daemon], 10)
    end(children(), 2)
    if shared:
        copy_tree(caps_dir, shared)
    if os.getppid() != parent:  # it died (SIGTERM came as its death signal): no one else will
        shutil.rmtree(dir, ignore_errors=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
