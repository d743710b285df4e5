/* pty.c: a child process on a new pseudo-terminal, the way a terminal
 * emulator runs a program: the child is a session leader whose controlling
 * terminal is the pty, so it sees a real tty and Ctrl-C written to the
 * master reaches it as SIGINT. The specs drive the REPL through it. Like
 * process.c the child is started from an argv array, never a shell, and on
 * Linux gets SIGTERM if vmlua dies. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "core.h"

#define PTY "vmlua.pty"
enum { ON_DATA, ON_EXIT };

typedef struct pty pty;

typedef struct {
  uv_poll_t uv;
  pty *owner;
} master_poll;

struct pty {
  vmlua_handle h; /* the SIGCHLD watcher */
  pid_t pid;
  int status; /* wait status once reaped */
  int reaped;
  int master;         /* -1 once closed */
  master_poll *poll;  /* NULL once the master reached its end */
};

static pty *check_pty(lua_State *L) { return luaL_checkudata(L, 1, PTY); }

static void free_poll(uv_handle_t *uv) { free(uv); }

static void close_master(pty *p) {
  if (p->poll != NULL) {
    p->poll->owner = NULL;
    uv_close((uv_handle_t *)&p->poll->uv, free_poll);
    p->poll = NULL;
  }
  if (p->master >= 0) {
    close(p->master);
    p->master = -1;
  }
}

/* on_exit runs once the child is reaped and its output is drained. */
static void finish_if_done(lua_State *L, pty *p) {
  if (!p->reaped || p->poll != NULL || p->h.uv == NULL) return;
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
  pty *p = ((master_poll *)uv)->owner;
  lua_State *L = vmlua_loop_state();
  if (p == NULL || L == NULL) return;
  char buf[4096];
  ssize_t n = status < 0 ? -1 : read(p->master, buf, sizeof buf);
  if (n < 0 && status >= 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n > 0) {
    if (vmlua_handle_push_callback(L, &p->h, ON_DATA)) {
      lua_pushlstring(L, buf, (size_t)n);
      vmlua_protected_call(L, 1);
    }
    return;
  }
  /* 0 or EIO: every slave descriptor is closed, the child has gone. The
   * master stays open until close(), so that write() reports the end. */
  if (p->poll != NULL) {
    p->poll->owner = NULL;
    uv_close((uv_handle_t *)&p->poll->uv, free_poll);
    p->poll = NULL;
  }
  finish_if_done(L, p);
}

static void on_sigchld(uv_signal_t *sig, int signum) {
  (void)signum;
  pty *p = sig->data;
  lua_State *L = vmlua_loop_state();
  if (p == NULL || p->reaped) return;
  if (waitpid(p->pid, &p->status, WNOHANG) != p->pid) return;
  p->reaped = 1;
  if (L != NULL) finish_if_done(L, p);
}

/* Runs in the child between fork and exec: only async-signal-safe calls. */
static void exec_child(const char *file, char **argv, const char *slave_name, int report_fd,
                       pid_t parent) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  for (int s = 1; s < NSIG; s++)
    if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
  if (setsid() < 0) goto fail;
#ifdef __linux__
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(127);
#else
  (void)parent;
#endif
  int slave = open(slave_name, O_RDWR); /* the first tty a session leader opens */
  if (slave < 0) goto fail;
#ifdef TIOCSCTTY
  ioctl(slave, TIOCSCTTY, 0);
#endif
  if (dup2(slave, 0) < 0 || dup2(slave, 1) < 0 || dup2(slave, 2) < 0) goto fail;
  if (slave > 2) close(slave);
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

static int get_callback(lua_State *L, pty *p, int slot, const char *name) {
  lua_getfield(L, 1, name);
  vmlua_handle_set_callback(L, &p->h, slot, -1);
  lua_pop(L, 1);
  return 0;
}

static int fail_errno(lua_State *L, const char *what, int e) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, strerror(e));
  return 2;
}

/* core.pty_spawn{ file=, args={argv0, ...}, rows=24, cols=80,
 *                 on_data=fn(data), on_exit=fn(code, signal) } -> pty | nil, err */
static int l_pty_spawn(lua_State *L) {
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
  lua_getfield(L, 1, "rows");
  lua_getfield(L, 1, "cols");
  struct winsize ws = {.ws_row = (unsigned short)luaL_optinteger(L, -2, 24),
                       .ws_col = (unsigned short)luaL_optinteger(L, -1, 80)};
  lua_pop(L, 2);

  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0) return fail_errno(L, "posix_openpt", errno);
  fcntl(master, F_SETFD, FD_CLOEXEC);
  char slave_name[128];
  if (grantpt(master) != 0 || unlockpt(master) != 0 ||
      ptsname_r(master, slave_name, sizeof slave_name) != 0) {
    int e = errno;
    close(master);
    return fail_errno(L, "cannot set up the pseudo-terminal", e);
  }
  ioctl(master, TIOCSWINSZ, &ws);

  pty *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  p->master = master;
  uv_signal_t *sig = malloc(sizeof *sig);
  if (sig == NULL) {
    close(master);
    return luaL_error(L, "out of memory");
  }
  uv_signal_init(vmlua_loop(), sig);
  vmlua_handle_init(&p->h, (uv_handle_t *)sig);
  luaL_setmetatable(L, PTY);
  int self = lua_gettop(L);
  get_callback(L, p, ON_DATA, "on_data");
  get_callback(L, p, ON_EXIT, "on_exit");
  uv_signal_start(sig, on_sigchld, SIGCHLD); /* before fork: no exit is missed */

  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    int e = errno;
    close_master(p);
    vmlua_handle_close(L, &p->h);
    return fail_errno(L, "pipe", e);
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) exec_child(file, argv, slave_name, report[1], parent);
  int fork_errno = errno;
  close(report[1]);
  int exec_errno = 0;
  if (pid > 0) {
    ssize_t n;
    while ((n = read(report[0], &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR) {}
    if (n <= 0) exec_errno = 0;
  }
  close(report[0]);
  if (pid < 0 || exec_errno != 0) {
    if (pid > 0) waitpid(pid, NULL, 0);
    close_master(p);
    vmlua_handle_close(L, &p->h);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot run %s: %s", file, strerror(pid < 0 ? fork_errno : exec_errno));
    return 2;
  }
  p->pid = pid;
  p->poll = malloc(sizeof *p->poll);
  if (p->poll == NULL) return luaL_error(L, "out of memory");
  p->poll->owner = p;
  uv_poll_init(vmlua_loop(), &p->poll->uv, master);
  uv_poll_start(&p->poll->uv, UV_READABLE | UV_DISCONNECT, on_readable);
  vmlua_handle_anchor(L, &p->h, self);
  lua_pushvalue(L, self);
  return 1;
}

/* pty:write(data) -> true | nil, err: what a user types; written at once */
static int t_write(lua_State *L) {
  pty *p = check_pty(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (p->master < 0) return fail_errno(L, "write", EBADF);
  while (len > 0) {
    ssize_t n = write(p->master, data, len);
    if (n < 0 && errno == EAGAIN) {
      struct pollfd pfd = {.fd = p->master, .events = POLLOUT};
      if (poll(&pfd, 1, 5000) <= 0) return fail_errno(L, "write", ETIMEDOUT);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno(L, "write", errno);
    data += n;
    len -= (size_t)n;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* pty:resize(rows, cols): the child gets SIGWINCH */
static int t_resize(lua_State *L) {
  pty *p = check_pty(L);
  struct winsize ws = {.ws_row = (unsigned short)luaL_checkinteger(L, 2),
                       .ws_col = (unsigned short)luaL_checkinteger(L, 3)};
  if (p->master >= 0) ioctl(p->master, TIOCSWINSZ, &ws);
  return 0;
}

static int t_pid(lua_State *L) {
  lua_pushinteger(L, check_pty(L)->pid);
  return 1;
}

static int t_running(lua_State *L) {
  pty *p = check_pty(L);
  lua_pushboolean(L, p->pid > 0 && !p->reaped);
  return 1;
}

/* pty:kill([signal]) -> true | nil, err; signal is a name ("TERM") or number */
static int t_kill(lua_State *L) {
  pty *p = check_pty(L);
  static const char *const names[] = {"TERM", "KILL", "INT", "HUP", NULL};
  static const int nums[] = {SIGTERM, SIGKILL, SIGINT, SIGHUP};
  int signum = SIGTERM;
  if (lua_type(L, 2) == LUA_TSTRING)
    signum = nums[luaL_checkoption(L, 2, NULL, names)];
  else if (!lua_isnoneornil(L, 2))
    signum = (int)luaL_checkinteger(L, 2);
  if (p->reaped || p->pid <= 0) return fail_errno(L, "kill", ESRCH);
  if (kill(p->pid, signum) != 0) return fail_errno(L, "kill", errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* Closing a running child kills it first: a pty never leaks a process. */
static int t_close(lua_State *L) {
  pty *p = check_pty(L);
  if (p->pid > 0 && !p->reaped) {
    kill(p->pid, SIGKILL);
    if (waitpid(p->pid, &p->status, 0) == p->pid) p->reaped = 1;
  }
  close_master(p);
  vmlua_handle_close(L, &p->h);
  return 0;
}

static int t_tostring(lua_State *L) {
  pty *p = check_pty(L);
  if (!p->reaped)
    lua_pushfstring(L, "pty process %d (running)", (int)p->pid);
  else if (WIFSIGNALED(p->status))
    lua_pushfstring(L, "pty process %d (killed by SIG%s)", (int)p->pid,
                    sigabbrev_np(WTERMSIG(p->status)));
  else
    lua_pushfstring(L, "pty process %d (exited %d)", (int)p->pid, WEXITSTATUS(p->status));
  return 1;
}

void vmlua_open_pty(lua_State *L) {
  static const luaL_Reg methods[] = {{"write", t_write}, {"resize", t_resize}, {"pid", t_pid},
                                     {"running", t_running}, {"kill", t_kill},
                                     {"close", t_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", t_close}, {"__close", t_close}, {"__tostring", t_tostring}, {NULL, NULL}};
  vmlua_new_class(L, PTY, methods, meta);
  lua_pushcfunction(L, l_pty_spawn);
  lua_setfield(L, -2, "pty_spawn");
}
