/* terminal.c: the user's terminal: its modes, its size, and raw input.
 *
 * core.terminal(fd) remembers the mode the terminal is in; t:raw() changes
 * it and t:restore() or t:close() puts the remembered mode back. Every
 * remembered mode is also put back at exit, on a fatal signal, and while the
 * process is stopped by Ctrl-Z, so vmlua never leaves a terminal raw. A
 * reader delivers the bytes typed on a descriptor through the loop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "core.h"

#define TERMINAL "vmlua.terminal"
#define READER "vmlua.reader"
#define MAX_SAVED 8

typedef struct {
  int fd;           /* -1 once closed */
  int slot;         /* index in saved[] */
} terminal;

/* Modes to put back, in the order they were remembered. Read by signal
 * handlers, so only plain stores while a slot is in use. */
static struct {
  volatile sig_atomic_t used;
  int fd;
  struct termios mode;
} saved[MAX_SAVED];

static void restore_all(void) {
  for (int i = MAX_SAVED - 1; i >= 0; i--)
    if (saved[i].used) tcsetattr(saved[i].fd, TCSADRAIN, &saved[i].mode);
}

static const int fatal[] = {SIGHUP, SIGQUIT, SIGILL, SIGABRT, SIGFPE, SIGBUS, SIGSEGV, SIGTERM};
#define NFATAL (int)(sizeof fatal / sizeof fatal[0])

static void on_fatal(int signum) {
  int e = errno;
  restore_all();
  signal(signum, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signum);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  raise(signum);
  errno = e;
}

/* Ctrl-Z: give the shell its terminal back, stop, and on fg take it again. */
static void on_stop(int signum) {
  int e = errno;
  struct termios current[MAX_SAVED];
  int have[MAX_SAVED];
  for (int i = 0; i < MAX_SAVED; i++)
    have[i] = saved[i].used && tcgetattr(saved[i].fd, &current[i]) == 0;
  restore_all();
  struct sigaction dfl = {.sa_handler = SIG_DFL}, mine = {.sa_handler = on_stop};
  sigemptyset(&dfl.sa_mask);
  sigemptyset(&mine.sa_mask);
  mine.sa_flags = SA_RESTART;
  sigaction(signum, &dfl, NULL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signum);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  raise(signum); /* stops here until SIGCONT */
  sigaction(signum, &mine, NULL);
  for (int i = 0; i < MAX_SAVED; i++)
    if (have[i]) tcsetattr(saved[i].fd, TCSADRAIN, &current[i]);
  errno = e;
}

/* Installs the handlers once, and only where nobody else handles the signal. */
static void guard_once(void) {
  static int done;
  if (done) return;
  done = 1;
  atexit(restore_all);
  for (int i = 0; i < NFATAL; i++) {
    struct sigaction old;
    if (sigaction(fatal[i], NULL, &old) != 0 || old.sa_handler != SIG_DFL) continue;
    struct sigaction sa = {.sa_handler = on_fatal};
    sigemptyset(&sa.sa_mask);
    sigaction(fatal[i], &sa, NULL);
  }
  struct sigaction old;
  if (sigaction(SIGTSTP, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTSTP, &sa, NULL);
  }
}

static terminal *check_terminal(lua_State *L) { return luaL_checkudata(L, 1, TERMINAL); }

static terminal *open_terminal(lua_State *L, terminal *t) {
  if (t->fd < 0) luaL_error(L, "the terminal is closed");
  return t;
}

static int fail_errno(lua_State *L, const char *what) {
  int e = errno;
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, strerror(e));
  return 2;
}

/* core.terminal(fd) -> terminal | nil, err: remembers the terminal's mode */
static int l_terminal(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  struct termios mode;
  if (tcgetattr(fd, &mode) != 0) return fail_errno(L, "not a terminal");
  int slot = -1;
  for (int i = 0; i < MAX_SAVED && slot < 0; i++)
    if (!saved[i].used) slot = i;
  if (slot < 0) return luaL_error(L, "too many terminals open");
  guard_once();
  terminal *t = lua_newuserdatauv(L, sizeof *t, 0);
  t->fd = fd;
  t->slot = slot;
  saved[slot].fd = fd;
  saved[slot].mode = mode;
  saved[slot].used = 1;
  luaL_setmetatable(L, TERMINAL);
  return 1;
}

/* t:raw(): every byte as typed, no echo, no signals from keys, no output
 * processing: what a console attached to a guest needs. */
static int t_raw(lua_State *L) {
  terminal *t = open_terminal(L, check_terminal(L));
  struct termios mode;
  if (tcgetattr(t->fd, &mode) != 0) return fail_errno(L, "tcgetattr");
  cfmakeraw(&mode);
  mode.c_cc[VMIN] = 1;
  mode.c_cc[VTIME] = 0;
  if (tcsetattr(t->fd, TCSADRAIN, &mode) != 0) return fail_errno(L, "tcsetattr");
  lua_pushboolean(L, 1);
  return 1;
}

/* t:restore(): back to the mode remembered when the terminal was opened */
static int t_restore(lua_State *L) {
  terminal *t = open_terminal(L, check_terminal(L));
  if (tcsetattr(t->fd, TCSADRAIN, &saved[t->slot].mode) != 0) return fail_errno(L, "tcsetattr");
  lua_pushboolean(L, 1);
  return 1;
}

/* t:size() -> rows, cols (24, 80 when the terminal does not say) */
static int t_size(lua_State *L) {
  terminal *t = open_terminal(L, check_terminal(L));
  struct winsize ws;
  if (ioctl(t->fd, TIOCGWINSZ, &ws) != 0 || ws.ws_row == 0 || ws.ws_col == 0) {
    ws.ws_row = 24;
    ws.ws_col = 80;
  }
  lua_pushinteger(L, ws.ws_row);
  lua_pushinteger(L, ws.ws_col);
  return 2;
}

/* t:close(): restores the mode and forgets it; safe to call twice */
static int t_close(lua_State *L) {
  terminal *t = check_terminal(L);
  if (t->fd < 0) return 0;
  tcsetattr(t->fd, TCSADRAIN, &saved[t->slot].mode);
  saved[t->slot].used = 0;
  t->fd = -1;
  return 0;
}

static int t_tostring(lua_State *L) {
  terminal *t = check_terminal(L);
  if (t->fd < 0)
    lua_pushliteral(L, "terminal (closed)");
  else
    lua_pushfstring(L, "terminal on fd %d", t->fd);
  return 1;
}

/* A reader: a poll handle on a descriptor that stays in blocking mode (it is
 * shared with the shell that started vmlua), read only when readable. */
typedef struct {
  vmlua_handle h;
  int fd;
} reader;

static reader *check_reader(lua_State *L) { return luaL_checkudata(L, 1, READER); }

static void on_readable(uv_poll_t *uv, int status, int events) {
  (void)events;
  reader *r = uv->data;
  lua_State *L = vmlua_loop_state();
  if (r == NULL || L == NULL) return;
  char buf[4096];
  ssize_t n = status < 0 ? -1 : read(r->fd, buf, sizeof buf);
  if (n < 0 && status >= 0 && (errno == EAGAIN || errno == EINTR)) return;
  int pushed = vmlua_handle_push_callback(L, &r->h, 0);
  if (n > 0) {
    lua_pushlstring(L, buf, (size_t)n);
    lua_pushnil(L);
  } else {
    uv_poll_stop(uv);
    lua_pushnil(L);
    lua_pushstring(L, n == 0 ? "closed" : status < 0 ? uv_strerror(status) : strerror(errno));
  }
  if (pushed)
    vmlua_protected_call(L, 2);
  else
    lua_pop(L, 2);
}

/* core.reader(fd, fn(data, err)) -> reader | nil, err: data is nil with err
 * "closed" at the end. Like a stream, an open reader keeps the loop alive. */
static int l_reader(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return fail_errno(L, "fcntl");
  reader *r = lua_newuserdatauv(L, sizeof *r, 0);
  uv_poll_t *uv = malloc(sizeof *uv);
  if (uv == NULL) return luaL_error(L, "out of memory");
  int rc = uv_poll_init(vmlua_loop(), uv, fd);
  fcntl(fd, F_SETFL, flags); /* uv_poll_init made it non-blocking */
  if (rc != 0) {
    free(uv);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot poll fd %d: %s", fd, uv_strerror(rc));
    return 2;
  }
  vmlua_handle_init(&r->h, (uv_handle_t *)uv);
  r->fd = fd;
  luaL_setmetatable(L, READER);
  vmlua_handle_set_callback(L, &r->h, 0, 2);
  vmlua_handle_anchor(L, &r->h, -1);
  uv_poll_start(uv, UV_READABLE | UV_DISCONNECT, on_readable);
  return 1;
}

static int r_close(lua_State *L) {
  vmlua_handle_close(L, &check_reader(L)->h);
  return 0;
}

static int r_tostring(lua_State *L) {
  reader *r = check_reader(L);
  lua_pushfstring(L, "reader on fd %d (%s)", r->fd, r->h.uv ? "open" : "closed");
  return 1;
}

void vmlua_open_terminal(lua_State *L) {
  static const luaL_Reg methods[] = {{"raw", t_raw},     {"restore", t_restore},
                                     {"size", t_size},   {"close", t_close},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", t_close}, {"__close", t_close}, {"__tostring", t_tostring}, {NULL, NULL}};
  static const luaL_Reg reader_methods[] = {{"close", r_close}, {NULL, NULL}};
  static const luaL_Reg reader_meta[] = {
      {"__gc", r_close}, {"__close", r_close}, {"__tostring", r_tostring}, {NULL, NULL}};
  vmlua_new_class(L, TERMINAL, methods, meta);
  vmlua_new_class(L, READER, reader_methods, reader_meta);
  lua_pushcfunction(L, l_terminal);
  lua_setfield(L, -2, "terminal");
  lua_pushcfunction(L, l_reader);
  lua_setfield(L, -2, "reader");
}
