/* timer.c: one-shot and repeating timers. */
#include <stdlib.h>

#include "core.h"

#define TIMER "vmlua.timer"

typedef struct {
  vmlua_handle h;
  int repeating;
} timer;

static timer *check_timer(lua_State *L) { return luaL_checkudata(L, 1, TIMER); }

static void on_timer(uv_timer_t *uv) {
  timer *t = uv->data;
  lua_State *L = vmlua_loop_state();
  if (t == NULL || L == NULL) return;
  int pushed = vmlua_handle_push_callback(L, &t->h, 0);
  if (!t->repeating) vmlua_handle_close(L, &t->h); /* the callback stays on the stack */
  if (pushed) vmlua_protected_call(L, 0);
}

static uint64_t to_ms(lua_State *L, int idx) {
  lua_Number s = luaL_checknumber(L, idx);
  luaL_argcheck(L, s >= 0, idx, "seconds must not be negative");
  return (uint64_t)(s * 1000 + 0.5);
}

/* core.timer(seconds, repeat_seconds, fn) -> timer; repeat 0 fires once */
static int l_timer(lua_State *L) {
  uint64_t timeout = to_ms(L, 1), repeat = to_ms(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  timer *t = lua_newuserdatauv(L, sizeof *t, 0);
  uv_timer_t *uv = malloc(sizeof *uv);
  if (uv == NULL) return luaL_error(L, "out of memory");
  uv_timer_init(vmlua_loop(), uv);
  vmlua_handle_init(&t->h, (uv_handle_t *)uv);
  t->repeating = repeat > 0;
  luaL_setmetatable(L, TIMER);
  vmlua_handle_set_callback(L, &t->h, 0, 3);
  vmlua_handle_anchor(L, &t->h, -1);
  uv_update_time(vmlua_loop()); /* the loop's clock is stale between runs */
  uv_timer_start(uv, on_timer, timeout, repeat);
  return 1;
}

static int t_close(lua_State *L) {
  vmlua_handle_close(L, &check_timer(L)->h);
  return 0;
}

static int t_active(lua_State *L) {
  lua_pushboolean(L, check_timer(L)->h.uv != NULL);
  return 1;
}

static int t_unref(lua_State *L) {
  timer *t = check_timer(L);
  if (t->h.uv) uv_unref(t->h.uv);
  return 0;
}

static int t_tostring(lua_State *L) {
  timer *t = check_timer(L);
  lua_pushfstring(L, "timer (%s)", t->h.uv ? "active" : "closed");
  return 1;
}

void vmlua_open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"stop", t_close}, {"close", t_close}, {"active", t_active}, {"unref", t_unref}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", t_close}, {"__close", t_close}, {"__tostring", t_tostring}, {NULL, NULL}};
  vmlua_new_class(L, TIMER, methods, meta);
  lua_pushcfunction(L, l_timer);
  lua_setfield(L, -2, "timer");
}
