/* loop.c: the one libuv loop, and protected calls into Lua from it. */
#include <stdio.h>
#include <string.h>

#include "core.h"

#define ERROR_HANDLER "vmlua.error_handler"

static lua_State *loop_state; /* the state inside uv_run, or NULL */

uv_loop_t *vmlua_loop(void) { return uv_default_loop(); }

lua_State *vmlua_loop_state(void) { return loop_state; }

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL && !lua_isnoneornil(L, 1))
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

void vmlua_protected_call(lua_State *L, int nargs) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  if (lua_pcall(L, nargs, 0, base) != LUA_OK) {
    lua_getfield(L, LUA_REGISTRYINDEX, ERROR_HANDLER);
    lua_insert(L, -2);
    if (!lua_isfunction(L, -2) || lua_pcall(L, 1, 0, 0) != LUA_OK) {
      fprintf(stderr, "vmlua: %s\n", lua_tostring(L, -1));
      fflush(stderr);
      lua_pop(L, 2);
    }
  }
  lua_remove(L, base);
}

/* core.on_error(fn): fn(message) receives errors raised in callbacks. */
static int l_on_error(lua_State *L) {
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, ERROR_HANDLER);
  return 0;
}

/* core.run([mode]) -> alive: runs the loop ("default", "once" or "nowait"). */
static int l_run(lua_State *L) {
  static const char *const names[] = {"default", "once", "nowait", NULL};
  static const uv_run_mode modes[] = {UV_RUN_DEFAULT, UV_RUN_ONCE, UV_RUN_NOWAIT};
  uv_run_mode mode = modes[luaL_checkoption(L, 1, "default", names)];
  if (loop_state != NULL)
    return luaL_error(L, "the event loop is already running (waiting inside a callback?)");
  loop_state = L;
  int alive = uv_run(vmlua_loop(), mode);
  loop_state = NULL;
  lua_pushboolean(L, alive);
  return 1;
}

static int l_stop(lua_State *L) {
  (void)L;
  uv_stop(vmlua_loop());
  return 0;
}

static int l_running(lua_State *L) {
  lua_pushboolean(L, loop_state != NULL);
  return 1;
}

/* core.now() -> seconds on a monotonic clock */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

void vmlua_open_loop(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"on_error", l_on_error}, {"run", l_run}, {"stop", l_stop},
      {"running", l_running},   {"now", l_now}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
