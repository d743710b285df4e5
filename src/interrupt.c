/* interrupt.c: Ctrl-C (and SIGTERM, SIGHUP) for the code that runs: the
 * interactive prompt's line, or the script vmlua runs.
 *
 * core.interrupt(fn, {"INT", ...}) takes those signals over (SIGINT by
 * default; the previous dispositions come back on close). Like lua.c's, the
 * signal handler only does async-signal-safe things. It wakes the loop,
 * which then calls fn(busy, name) as an ordinary protected callback, once
 * per signal: the prompt drops the line being typed, or ends the wait of
 * the line that runs. And when the code that runs (the thread in w:pcall)
 * is running Lua code rather than waiting, it sets a hook on that thread
 * that raises "interrupted" at the next instruction, so that a busy loop is
 * broken too; fn then gets busy = true.
 *
 * w:pcall(f, ...) is pcall, and may yield like it; the hook is only ever
 * set while f runs, and taken off in C before pcall returns, so it never
 * fires outside the protected call. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define INTERRUPT "vmlua.interrupt"

static const char *const names[] = {"INT", "TERM", "HUP", NULL};
static const int nums[] = {SIGINT, SIGTERM, SIGHUP};
#define SIGNALS 3

typedef struct {
  vmlua_handle h; /* the async handle that wakes the loop */
  int target_ref; /* registry ref keeping the target thread alive, or LUA_NOREF */
  int taken[SIGNALS]; /* which of nums[] it took over */
  struct sigaction previous[SIGNALS];
} watcher;

static watcher *active; /* the one watcher that has the signals */

/* Read and written by the signal handler. */
static uv_async_t *volatile wakeup;
static lua_State *volatile target;    /* the thread inside w:pcall */
static volatile sig_atomic_t hooked;  /* the hook was set for this signal */
static volatile sig_atomic_t pending; /* a signal the loop has not seen yet */
static volatile sig_atomic_t received[SIGNALS]; /* counts, by index in nums[] */
static int seen[SIGNALS];                       /* what the loop has handled */

#define HOOK_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT)

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  lua_pushliteral(L, "interrupted");
  lua_error(L);
}

static void on_signal(int signum) {
  for (int i = 0; i < SIGNALS; i++)
    if (nums[i] == signum) received[i]++;
  lua_State *T = target;
  if (T != NULL && lua_status(T) == LUA_OK) { /* running, not suspended in a wait */
    lua_sethook(T, stop_hook, HOOK_MASK, 1);
    hooked = 1;
  }
  pending = 1;
  if (wakeup != NULL) uv_async_send(wakeup);
}

static void on_wakeup(uv_async_t *uv) {
  watcher *w = uv->data;
  lua_State *L = vmlua_loop_state();
  int busy = hooked;
  hooked = 0;
  pending = 0;
  for (int i = 0; i < SIGNALS; i++) {
    int n = received[i] - seen[i];
    seen[i] = received[i];
    for (int k = 0; k < n && k < 2; k++) { /* a third one adds nothing */
      if (w == NULL || L == NULL || !vmlua_handle_push_callback(L, &w->h, 0)) return;
      lua_pushboolean(L, busy);
      lua_pushstring(L, names[i]);
      vmlua_protected_call(L, 2);
    }
  }
}

static watcher *check_watcher(lua_State *L) { return luaL_checkudata(L, 1, INTERRUPT); }

/* Forgets the target, and takes the hook off it if it was never run. */
static void clear_target(lua_State *L, watcher *w) {
  if (w == active && target != NULL) {
    lua_State *T = target;
    target = NULL;
    if (lua_gethook(T) == stop_hook) lua_sethook(T, NULL, 0, 0);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, w->target_ref);
  w->target_ref = LUA_NOREF;
}

/* core.interrupt(fn(busy, name) [, {"INT", "TERM", "HUP"}]) -> watcher:
 * each of those signals (SIGINT alone by default) calls fn on the loop */
static int l_interrupt(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int take[SIGNALS] = {1, 0, 0};
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    take[0] = 0;
    for (int i = 1; lua_rawgeti(L, 2, i) != LUA_TNIL; i++) {
      take[luaL_checkoption(L, -1, NULL, names)] = 1;
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  if (active != NULL) return luaL_error(L, "Ctrl-C is already taken over");
  watcher *w = lua_newuserdatauv(L, sizeof *w, 0);
  uv_async_t *uv = malloc(sizeof *uv);
  if (uv == NULL) return luaL_error(L, "out of memory");
  uv_async_init(vmlua_loop(), uv, on_wakeup);
  vmlua_handle_init(&w->h, (uv_handle_t *)uv);
  w->target_ref = LUA_NOREF;
  luaL_setmetatable(L, INTERRUPT);
  vmlua_handle_set_callback(L, &w->h, 0, 1);
  vmlua_handle_anchor(L, &w->h, -1);
  uv_unref((uv_handle_t *)uv);
  hooked = pending = 0;
  for (int i = 0; i < SIGNALS; i++) seen[i] = received[i];
  active = w;
  wakeup = uv;
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int i = 0; i < SIGNALS; i++) {
    w->taken[i] = take[i];
    if (take[i]) sigaction(nums[i], &sa, &w->previous[i]);
  }
  return 1;
}

/* Stack: watcher, true, results... or watcher, true, error (status not OK). */
static int finish_pcall(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  watcher *w = check_watcher(L);
  if (target == L)
    clear_target(L, w);
  else if (lua_gethook(L) == stop_hook) /* a line left behind that ended after all */
    lua_sethook(L, NULL, 0, 0);
  if (status != LUA_OK && status != LUA_YIELD) {
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - 1;
}

/* w:pcall(f, ...) -> true, results... | false, err: runs f protected, as the
 * code Ctrl-C interrupts; f may wait (yield). One at a time. */
static int w_pcall(lua_State *L) {
  watcher *w = check_watcher(L);
  luaL_checkany(L, 2);
  if (w != active) return luaL_error(L, "the interrupt watcher is closed");
  if (target != NULL) return luaL_error(L, "another line is running");
  lua_pushthread(L);
  w->target_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  target = L;
  if (pending && !hooked) { /* Ctrl-C came as the line was entered: it is for the line */
    lua_sethook(L, stop_hook, HOOK_MASK, 1);
    hooked = 1;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, 2); /* watcher, true, f, args... */
  int status = lua_pcallk(L, lua_gettop(L) - 3, LUA_MULTRET, 0, 0, finish_pcall);
  return finish_pcall(L, status, 0);
}

/* w:clear(): forgets the line in w:pcall (a line the prompt left behind) */
static int w_clear(lua_State *L) {
  clear_target(L, check_watcher(L));
  return 0;
}

/* w:close(): gives the signals back; safe to call twice */
static int w_close(lua_State *L) {
  watcher *w = check_watcher(L);
  clear_target(L, w);
  if (active == w) {
    for (int i = 0; i < SIGNALS; i++)
      if (w->taken[i]) sigaction(nums[i], &w->previous[i], NULL);
    wakeup = NULL;
    active = NULL;
  }
  vmlua_handle_close(L, &w->h);
  return 0;
}

static int w_tostring(lua_State *L) {
  lua_pushfstring(L, "interrupt watcher (%s)", check_watcher(L) == active ? "active" : "closed");
  return 1;
}

void vmlua_open_interrupt(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"pcall", w_pcall}, {"clear", w_clear}, {"close", w_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", w_close}, {"__close", w_close}, {"__tostring", w_tostring}, {NULL, NULL}};
  vmlua_new_class(L, INTERRUPT, methods, meta);
  lua_pushcfunction(L, l_interrupt);
  lua_setfield(L, -2, "interrupt");
}
