/* signal.c: signals delivered through the loop, never in a handler. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define SIGNAL "vmlua.signal"

typedef struct {
  vmlua_handle h;
  int signum;
} watcher;

static const char *const names[] = {"INT", "TERM", "HUP", "QUIT", "WINCH", NULL};
static const int nums[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH};

static watcher *check_watcher(lua_State *L) { return luaL_checkudata(L, 1, SIGNAL); }

static void on_signal(uv_signal_t *uv, int signum) {
  watcher *w = uv->data;
  lua_State *L = vmlua_loop_state();
  if (w == NULL || L == NULL || !vmlua_handle_push_callback(L, &w->h, 0)) return;
  for (int i = 0; names[i]; i++)
    if (nums[i] == signum) lua_pushstring(L, names[i]);
  vmlua_protected_call(L, 1);
}

/* core.signal(name, fn(name)) -> watcher; it does not keep the loop alive */
static int l_signal(lua_State *L) {
  int signum = nums[luaL_checkoption(L, 1, NULL, names)];
  luaL_checktype(L, 2, LUA_TFUNCTION);
  watcher *w = lua_newuserdatauv(L, sizeof *w, 0);
  uv_signal_t *uv = malloc(sizeof *uv);
  if (uv == NULL) return luaL_error(L, "out of memory");
  uv_signal_init(vmlua_loop(), uv);
  vmlua_handle_init(&w->h, (uv_handle_t *)uv);
  w->signum = signum;
  luaL_setmetatable(L, SIGNAL);
  vmlua_handle_set_callback(L, &w->h, 0, 2);
  vmlua_handle_anchor(L, &w->h, -1);
  uv_signal_start(uv, on_signal, signum);
  uv_unref((uv_handle_t *)uv);
  return 1;
}

static int w_close(lua_State *L) {
  vmlua_handle_close(L, &check_watcher(L)->h);
  return 0;
}

static int w_tostring(lua_State *L) {
  watcher *w = check_watcher(L);
  lua_pushfstring(L, "signal watcher SIG%s (%s)", sigabbrev_np(w->signum),
                  w->h.uv ? "active" : "closed");
  return 1;
}

/* A write to a QEMU that has just died must fail with EPIPE, not kill the
 * process: SIGPIPE is ignored unless the host program handles it. */
static void ignore_sigpipe(void) {
  struct sigaction current;
  if (sigaction(SIGPIPE, NULL, &current) == 0 && current.sa_handler == SIG_DFL &&
      !(current.sa_flags & SA_SIGINFO))
    signal(SIGPIPE, SIG_IGN);
}

void vmlua_open_signal(lua_State *L) {
  ignore_sigpipe();
  static const luaL_Reg methods[] = {{"close", w_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", w_close}, {"__close", w_close}, {"__tostring", w_tostring}, {NULL, NULL}};
  vmlua_new_class(L, SIGNAL, methods, meta);
  lua_pushcfunction(L, l_signal);
  lua_setfield(L, -2, "signal");
}
