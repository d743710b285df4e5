/* caller.c: core.located(f) wraps f so that it also receives where it was
 * called from. A Lua function called as `return f(...)` loses its caller's
 * frame (a tail call); a C function does not, so the wrapper is in C. */
#include <string.h>

#include "core.h"

/* What the wrapped function returned, also after it yielded (a task that waits). */
static int located_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

/* Calls the wrapped function as f({source=, short_src=, currentline=}, ...) */
static int located_call(lua_State *L) {
  int nargs = lua_gettop(L);
  luaL_checkstack(L, 4, NULL);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_createtable(L, 0, 3);
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (strcmp(ar.what, "C") != 0) {
      lua_pushstring(L, ar.source);
      lua_setfield(L, -2, "source");
      lua_pushstring(L, ar.short_src);
      lua_setfield(L, -2, "short_src");
      lua_pushinteger(L, ar.currentline);
      lua_setfield(L, -2, "currentline");
      break;
    }
  }
  lua_rotate(L, 1, 2); /* f, info, args... */
  lua_callk(L, nargs + 1, LUA_MULTRET, 0, located_done);
  return located_done(L, LUA_OK, 0);
}

static int l_located(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_pushcclosure(L, located_call, 1);
  return 1;
}

void vmlua_open_caller(lua_State *L) {
  lua_pushcfunction(L, l_located);
  lua_setfield(L, -2, "located");
}
