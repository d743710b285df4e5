/* process.c: child processes started from an argv array, never a shell.
 * The child gets its own session (a Ctrl-C on vmlua's terminal reaches
 * vmlua, not the child) and, on Linux, is sent SIGTERM if vmlua dies, so no
 * child is ever orphaned; unless spawned with guarded = true, for a child
 * that a guard (guard.c) ends more gently, or with detached = true, for a
 * child meant to outlive vmlua (an instance's keeper). Its output comes from two pipes or, with a pty,
 * from a new pseudo-terminal: then the child sees a real terminal, as under a
 * terminal emulator, and a Ctrl-C written to it reaches it as SIGINT. on_exit
 * runs once the child is reaped and its output drained, so it always sees
 * the child's last words. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#ifdef __linux__
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#endif

#include "core.h"

#define PROCESS "vmlua.process"
enum { ON_STDOUT, ON_STDERR, ON_EXIT };

typedef struct process process;

typedef struct {
  uv_poll_t uv;
  process *owner; /* NULL once closed */
  int slot;       /* ON_STDOUT or ON_STDERR */
  int fd;
} output;

struct process {
  vmlua_handle h; /* the SIGCHLD watcher */
  pid_t pid;
  int status;     /* wait status once reaped */
  int reaped;
  int detached;   /* closing the handle leaves the child running */
  int master;     /* the pty's master, -1 without a pty or once closed */
  output *out[2]; /* NULL once drained */
};

static process *check_process(lua_State *L) { return luaL_checkudata(L, 1, PROCESS); }

static int push_error(lua_State *L, const char *message) {
  lua_pushnil(L);
  lua_pushstring(L, message);
  return 2;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void free_output(uv_handle_t *uv) { free(uv); }

static void close_output(process *p, int slot) {
  output *o = p->out[slot];
  if (o == NULL) return;
  o->owner = NULL;
  uv_close((uv_handle_t *)&o->uv, free_output);
  if (o->fd != p->master) close(o->fd); /* the master stays for write() until close() */
  p->out[slot] = NULL;
}

static void finish_if_done(lua_State *L, process *p) {
  if (!p->reaped || p->out[0] || p->out[1] || p->h.uv == NULL) return;
  int pushed = vmlua_handle_push_callback(L, &p->h, ON_EXIT);
  vmlua_handle_close(L, &p->h);
  if (!pushed) return;
  if (WIFSIGNALED(p->status)) {
    lua_pushnil(L);
    lua_pushstring(L, sigabbrev_np(WTERMSIG(p->status)));
  } else {
    lua_pushinteger(L, WEXITSTATUS(p->status));
    lua_pushnil(L);
  }
  vmlua_protected_call(L, 2);
}

static void on_readable(uv_poll_t *uv, int status, int events) {
  (void)events;
  output *o = (output *)uv;
  process *p = o->owner;
  lua_State *L = vmlua_loop_state();
  if (p == NULL || L == NULL) return;
  char buf[4096];
  ssize_t n = status < 0 ? -1 : read(o->fd, buf, sizeof buf);
  if (n < 0 && status >= 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n > 0) {
    if (vmlua_handle_push_callback(L, &p->h, o->slot)) {
      lua_pushlstring(L, buf, (size_t)n);
      vmlua_protected_call(L, 1);
    }
    return;
  }
  /* 0 ends a pipe; EIO ends a pty, once every slave descriptor is closed */
  close_output(p, o->slot);
  finish_if_done(L, p);
}

static void on_sigchld(uv_signal_t *sig, int signum) {
  (void)signum;
  process *p = sig->data;
  lua_State *L = vmlua_loop_state();
  if (p == NULL || p->reaped) return;
  if (waitpid(p->pid, &p->status, WNOHANG) != p->pid) return;
  p->reaped = 1;
  if (L != NULL) finish_if_done(L, p);
}

/* In the child: a private mount namespace in which dir, and every mount
 * below it, is read-only (a read-only bind mount over itself); the host's
 * mounts stay as they are. Without mount_setattr (Linux < 5.12) the bind is
 * not recursive: mounts below dir are hidden rather than left writable.
 * Returns 0, or -1 and errno. */
static int readonly_view(const char *dir) {
#ifdef __linux__
  if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return -1;
  if (mount(dir, dir, NULL, MS_BIND | MS_REC, NULL) < 0) return -1;
  struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY};
  if (mount_setattr(AT_FDCWD, dir, AT_RECURSIVE, &attr, sizeof attr) == 0) return 0;
  if (errno != ENOSYS || umount2(dir, MNT_DETACH) < 0 || mount(dir, dir, NULL, MS_BIND, NULL) < 0) return -1;
  return mount(NULL, dir, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
#else
  (void)dir;
  errno = ENOSYS;
  return -1;
#endif
}

/* Runs in the child between fork and exec: only async-signal-safe calls.
 * With a pty, tty names its slave, which becomes the controlling terminal
 * and stdin, stdout and stderr; without, stdin is in_path (read-only) or
 * /dev/null. With ro_dir, the child sees that directory read-only. */
static void exec_child(const char *file, char **argv, const char *tty, const char *in_path, const char *ro_dir,
                       int out_fd, int err_fd, int report_fd, pid_t parent, int guarded) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  for (int s = 1; s < NSIG; s++) /* even those vmlua's own parent ignored */
    if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
  if (setsid() < 0) goto fail;
  if (ro_dir != NULL && readonly_view(ro_dir) < 0) goto fail;
#ifdef __linux__
  if (!guarded) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
  }
#else
  (void)parent;
  (void)guarded;
#endif
  /* the first tty a session leader opens becomes its controlling terminal */
  int in_fd = tty ? open(tty, O_RDWR) : open(in_path ? in_path : "/dev/null", O_RDONLY);
  if (in_fd < 0) goto fail;
  if (tty != NULL) {
#ifdef TIOCSCTTY
    ioctl(in_fd, TIOCSCTTY, 0);
#endif
    out_fd = err_fd = in_fd;
  }
  if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) goto fail;
  if (in_fd > 2) close(in_fd);
#ifdef __linux__
  close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
#endif
  fcntl(report_fd, F_SETFD, FD_CLOEXEC);
  execv(file, argv);
fail: {
  int e = errno;
  ssize_t ignored = write(report_fd, &e, sizeof e);
  (void)ignored;
  _exit(127);
}
}

/* Fills fd[slot] with {the end vmlua reads, the child's end}: two pipes, or,
 * given a window size, a new pty: vmlua reads its master as stdout and the
 * child opens its slave by the name left in tty. Returns 0, or -1 and errno. */
static int open_outputs(int fd[2][2], const struct winsize *ws, char *tty, size_t len) {
  if (ws == NULL) return pipe2(fd[0], O_CLOEXEC) || pipe2(fd[1], O_CLOEXEC) ? -1 : 0;
  int m = fd[0][0] = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0 || grantpt(m) || unlockpt(m) || ptsname_r(m, tty, len) || ioctl(m, TIOCSWINSZ, ws))
    return -1;
  return 0;
}

static int open_output(lua_State *L, process *p, int slot, int fd) {
  output *o = malloc(sizeof *o);
  if (o == NULL) {
    if (fd != p->master) close(fd);
    return luaL_error(L, "out of memory");
  }
  uv_poll_init(vmlua_loop(), &o->uv, fd); /* makes fd non-blocking */
  o->owner = p;
  o->slot = slot;
  o->fd = fd;
  p->out[slot] = o;
  uv_poll_start(&o->uv, UV_READABLE | UV_DISCONNECT, on_readable);
  return 0;
}

static void get_callback(lua_State *L, process *p, int slot, const char *name) {
  lua_getfield(L, 1, name);
  vmlua_handle_set_callback(L, &p->h, slot, -1);
  lua_pop(L, 1);
}

/* core.spawn{ file=, args={argv0, ...}, pty={rows=24, cols=80}, stdin=PATH, readonly=DIR, on_stdout=fn(data),
 *             on_stderr=fn(data), on_exit=fn(code, signal), guarded=false, detached=false }
 *   -> process | nil, err
 * With pty, everything the child prints comes through on_stdout. guarded:
 * no SIGTERM when vmlua dies (the caller starts a core.guard for it).
 * stdin: a file the child reads as its stdin (without a pty).
 * readonly: a directory the child sees read-only, in a mount namespace of its
 * own (Linux, root; what a read-only virtio-fs share runs in).
 * detached: no SIGTERM either, and closing the handle does not kill it. */
static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "file");
  const char *file = luaL_checkstring(L, -1);
  lua_getfield(L, 1, "args");
  luaL_checktype(L, -1, LUA_TTABLE);
  int argc = (int)lua_rawlen(L, -1);
  luaL_argcheck(L, argc >= 1, 1, "args needs at least argv[0]");
  char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(argc + 1), 0);
  for (int i = 0; i < argc; i++) {
    lua_rawgeti(L, -2, i + 1);
    argv[i] = (char *)luaL_checkstring(L, -1);
    lua_pop(L, 1); /* the string stays alive in the args table */
  }
  argv[argc] = NULL;
  struct winsize ws = {0};
  lua_getfield(L, 1, "guarded");
  int guarded = lua_toboolean(L, -1);
  lua_getfield(L, 1, "detached");
  int detached = lua_toboolean(L, -1);
  lua_pop(L, 2);
  lua_getfield(L, 1, "stdin"); /* stays on the stack, so the string lives until the fork */
  const char *in_path = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "readonly"); /* on the stack too */
  const char *ro_dir = luaL_optstring(L, -1, NULL);
  int on_pty = lua_getfield(L, 1, "pty") != LUA_TNIL;
  if (on_pty) {
    if (!lua_istable(L, -1)) return luaL_error(L, "spawn: pty must be a table {rows=, cols=}");
    lua_getfield(L, -1, "rows");
    lua_getfield(L, -2, "cols");
    ws.ws_row = (unsigned short)luaL_optinteger(L, -2, 24);
    ws.ws_col = (unsigned short)luaL_optinteger(L, -1, 80);
    lua_pop(L, 2);
  }

  process *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  p->master = -1;
  uv_signal_t *sig = malloc(sizeof *sig);
  if (sig == NULL) return luaL_error(L, "out of memory");
  uv_signal_init(vmlua_loop(), sig);
  vmlua_handle_init(&p->h, (uv_handle_t *)sig);
  luaL_setmetatable(L, PROCESS);
  int self = lua_gettop(L);
  get_callback(L, p, ON_STDOUT, "on_stdout");
  get_callback(L, p, ON_STDERR, "on_stderr");
  get_callback(L, p, ON_EXIT, "on_exit");
  uv_signal_start(sig, on_sigchld, SIGCHLD); /* before fork: no exit is missed */

  int fd[2][2] = {{-1, -1}, {-1, -1}}, report[2] = {-1, -1}; /* report: exec's errno */
  char tty[128];
  int err = 0;
  pid_t parent = getpid(), pid = -1;
  if (open_outputs(fd, on_pty ? &ws : NULL, tty, sizeof tty) || pipe2(report, O_CLOEXEC))
    err = errno;
  else if ((pid = fork()) == 0)
    exec_child(file, argv, on_pty ? tty : NULL, in_path, ro_dir, fd[0][1], fd[1][1], report[1], parent,
               guarded || detached);
  else if (pid < 0)
    err = errno;
  close_fd(&fd[0][1]);
  close_fd(&fd[1][1]);
  close_fd(&report[1]);
  if (pid > 0) {
    ssize_t n;
    while ((n = read(report[0], &err, sizeof err)) < 0 && errno == EINTR) {}
    if (n <= 0) err = 0;
  }
  close_fd(&report[0]);
  if (err != 0) {
    if (pid > 0) waitpid(pid, NULL, 0);
    close_fd(&fd[0][0]);
    close_fd(&fd[1][0]);
    vmlua_handle_close(L, &p->h);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot run %s: %s", file, strerror(err));
    return 2;
  }
  p->pid = pid;
  p->detached = detached;
  if (on_pty) p->master = fd[0][0];
  for (int slot = ON_STDOUT; slot <= ON_STDERR; slot++)
    if (fd[slot][0] >= 0) open_output(L, p, slot, fd[slot][0]);
  vmlua_handle_anchor(L, &p->h, self);
  lua_pushvalue(L, self);
  return 1;
}

/* core.exec(file, {argv0, ...}) -> nil, err: replaces vmlua with the
 * program (`vmlua ssh` hands the terminal to ssh), with the signal
 * dispositions and mask a program expects. */
static int l_exec(lua_State *L) {
  const char *file = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int argc = (int)lua_rawlen(L, 2);
  luaL_argcheck(L, argc >= 1, 2, "needs at least argv[0]");
  char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(argc + 1), 0);
  for (int i = 0; i < argc; i++) {
    lua_rawgeti(L, 2, i + 1);
    argv[i] = (char *)luaL_checkstring(L, -1);
    lua_pop(L, 1); /* the string stays alive in the table */
  }
  argv[argc] = NULL;
  fflush(NULL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  execv(file, argv);
  return push_error(L, strerror(errno));
}

static int p_pid(lua_State *L) {
  lua_pushinteger(L, check_process(L)->pid);
  return 1;
}

/* proc:write(data) -> true | nil, err: what a user types on the pty, written at once */
static int p_write(lua_State *L) {
  process *p = check_process(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (p->master < 0) return push_error(L, "the process has no pty to write to");
  while (len > 0) {
    ssize_t n = write(p->master, data, len);
    if (n < 0 && errno == EAGAIN) {
      struct pollfd pfd = {.fd = p->master, .events = POLLOUT};
      if (poll(&pfd, 1, 5000) <= 0) return push_error(L, "write: the terminal takes no input");
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return push_error(L, strerror(errno));
    data += n;
    len -= (size_t)n;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* proc:kill([signal]) -> true | nil, err; signal is a name ("TERM") or number */
static int p_kill(lua_State *L) {
  process *p = check_process(L);
  int signum = SIGTERM;
  if (lua_type(L, 2) == LUA_TSTRING) {
    static const char *const names[] = {"TERM", "KILL", "INT", "HUP", "STOP", "CONT", NULL};
    static const int nums[] = {SIGTERM, SIGKILL, SIGINT, SIGHUP, SIGSTOP, SIGCONT};
    signum = nums[luaL_checkoption(L, 2, NULL, names)];
  } else if (!lua_isnoneornil(L, 2)) {
    signum = (int)luaL_checkinteger(L, 2);
  }
  if (p->reaped || p->pid <= 0) return push_error(L, "the process has exited");
  if (kill(p->pid, signum) != 0) return push_error(L, strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

static int p_running(lua_State *L) {
  process *p = check_process(L);
  lua_pushboolean(L, p->pid > 0 && !p->reaped);
  return 1;
}

/* Closing a running process kills it first: a handle never leaks a child
 * (but a detached one, which is meant to outlive vmlua). */
static int p_close(lua_State *L) {
  process *p = check_process(L);
  if (p->pid > 0 && !p->reaped && !p->detached) {
    kill(p->pid, SIGKILL);
    if (waitpid(p->pid, &p->status, 0) == p->pid) p->reaped = 1;
  }
  close_output(p, ON_STDOUT);
  close_output(p, ON_STDERR);
  close_fd(&p->master);
  vmlua_handle_close(L, &p->h);
  return 0;
}

static int p_tostring(lua_State *L) {
  process *p = check_process(L);
  if (!p->reaped)
    lua_pushfstring(L, "process %d (running)", (int)p->pid);
  else if (WIFSIGNALED(p->status))
    lua_pushfstring(L, "process %d (killed by SIG%s)", (int)p->pid, sigabbrev_np(WTERMSIG(p->status)));
  else
    lua_pushfstring(L, "process %d (exited %d)", (int)p->pid, WEXITSTATUS(p->status));
  return 1;
}

void vmlua_open_process(lua_State *L) {
  static const luaL_Reg methods[] = {{"pid", p_pid},         {"write", p_write}, {"kill", p_kill},
                                     {"running", p_running}, {"close", p_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", p_close}, {"__close", p_close}, {"__tostring", p_tostring}, {NULL, NULL}};
  vmlua_new_class(L, PROCESS, methods, meta);
  lua_pushcfunction(L, l_spawn);
  lua_setfield(L, -2, "spawn");
  lua_pushcfunction(L, l_exec);
  lua_setfield(L, -2, "exec");
}
