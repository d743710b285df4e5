/* process.c: child processes started from an argv array, never a shell.
 * The child gets its own session (a Ctrl-C on the terminal reaches vmlua, not
 * the child) and, on Linux, is sent SIGTERM if vmlua dies, so no child is
 * ever orphaned. on_exit runs once the child is reaped and both its output
 * pipes are drained, so it always sees the child's last words. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "core.h"

#define PROCESS "vmlua.process"
enum { ON_STDOUT, ON_STDERR, ON_EXIT };

typedef struct process process;

typedef struct {
  uv_pipe_t uv;
  process *owner;
  int slot;
} output_pipe;

struct process {
  vmlua_handle h; /* the SIGCHLD watcher */
  pid_t pid;
  int status;     /* wait status once reaped */
  int reaped;
  output_pipe *out[2]; /* NULL once drained */
};

static process *check_process(lua_State *L) { return luaL_checkudata(L, 1, PROCESS); }

static void free_pipe(uv_handle_t *uv) { free(uv); }

static void close_pipe(process *p, int i) {
  if (p->out[i] == NULL) return;
  p->out[i]->owner = NULL;
  uv_close((uv_handle_t *)&p->out[i]->uv, free_pipe);
  p->out[i] = NULL;
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

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  output_pipe *op = (output_pipe *)s;
  process *p = op->owner;
  lua_State *L = vmlua_loop_state();
  if (p != NULL && L != NULL) {
    if (n > 0 && vmlua_handle_push_callback(L, &p->h, op->slot)) {
      lua_pushlstring(L, buf->base, (size_t)n);
      vmlua_protected_call(L, 1);
    } else if (n < 0) {
      close_pipe(p, op->slot);
      finish_if_done(L, p);
    }
  }
  free(buf->base);
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

/* Runs in the child between fork and exec: only async-signal-safe calls. */
static void exec_child(const char *file, char **argv, int out_fd, int err_fd, int report_fd,
                       pid_t parent) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  setsid();
#ifdef __linux__
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(127);
#else
  (void)parent;
#endif
  int null_fd = open("/dev/null", O_RDONLY);
  if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) goto fail;
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

static int open_output(lua_State *L, process *p, int slot, int fd) {
  output_pipe *op = malloc(sizeof *op);
  if (op == NULL) return luaL_error(L, "out of memory");
  uv_pipe_init(vmlua_loop(), &op->uv, 0);
  op->owner = p;
  op->slot = slot;
  p->out[slot] = op;
  uv_pipe_open(&op->uv, fd);
  uv_read_start((uv_stream_t *)&op->uv, on_alloc, on_read);
  return 0;
}

static int get_callback(lua_State *L, process *p, int slot, const char *name) {
  lua_getfield(L, 1, name);
  vmlua_handle_set_callback(L, &p->h, slot, -1);
  lua_pop(L, 1);
  return 0;
}

/* core.spawn{ file=, args={argv0, ...}, on_stdout=, on_stderr=, on_exit=fn(code, signal) } */
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

  process *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
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

  int out[2], err[2], report[2];
  if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(report, O_CLOEXEC)) {
    vmlua_handle_close(L, &p->h);
    return luaL_error(L, "cannot create pipes: %s", strerror(errno));
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) exec_child(file, argv, out[1], err[1], report[1], parent);
  int fork_errno = errno;
  close(out[1]);
  close(err[1]);
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
    close(out[0]);
    close(err[0]);
    vmlua_handle_close(L, &p->h);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot run %s: %s", file, strerror(pid < 0 ? fork_errno : exec_errno));
    return 2;
  }
  p->pid = pid;
  open_output(L, p, ON_STDOUT, out[0]);
  open_output(L, p, ON_STDERR, err[0]);
  vmlua_handle_anchor(L, &p->h, self);
  lua_pushvalue(L, self);
  return 1;
}

static int p_pid(lua_State *L) {
  lua_pushinteger(L, check_process(L)->pid);
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
  if (p->reaped || p->pid <= 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "the process has exited");
    return 2;
  }
  if (kill(p->pid, signum) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int p_running(lua_State *L) {
  process *p = check_process(L);
  lua_pushboolean(L, p->pid > 0 && !p->reaped);
  return 1;
}

/* Closing a running process kills it first: a handle never leaks a child. */
static int p_close(lua_State *L) {
  process *p = check_process(L);
  if (p->pid > 0 && !p->reaped) {
    kill(p->pid, SIGKILL);
    if (waitpid(p->pid, &p->status, 0) == p->pid) p->reaped = 1;
  }
  close_pipe(p, 0);
  close_pipe(p, 1);
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
  static const luaL_Reg methods[] = {{"pid", p_pid},   {"kill", p_kill}, {"running", p_running},
                                     {"close", p_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", p_close}, {"__close", p_close}, {"__tostring", p_tostring}, {NULL, NULL}};
  vmlua_new_class(L, PROCESS, methods, meta);
  lua_pushcfunction(L, l_spawn);
  lua_setfield(L, -2, "spawn");
}
