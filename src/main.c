/* main.c: the vmlua executable. Like lua.c it runs a protected main and
 * reports errors as "vmlua: msg"; the command line itself is parsed by the
 * Lua module vmlua.cli, which is policy. Lua modules are found beside the
 * executable (PREFIX/share/lua/5.4), so no environment variable is needed. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "core.h"

static const char *progname = "vmlua";

static void report(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "%s: %s\n", progname, msg ? msg : "(error object is not a string)");
  fflush(stderr);
  lua_pop(L, 1);
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Prepends PREFIX/share/lua/5.4 and PREFIX/lib/lua/5.4, PREFIX being the
 * parent of the directory that holds the executable. */
static void add_module_paths(lua_State *L) {
  char exe[PATH_MAX];
  size_t len = sizeof exe;
  if (uv_exepath(exe, &len) != 0) return;
  for (int i = 0; i < 2; i++) { /* strip "/vmlua" and then "/bin" */
    char *slash = strrchr(exe, '/');
    if (slash == NULL) return;
    *slash = '\0';
  }
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;", exe, exe);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pushfstring(L, "%s/lib/lua/5.4/?.so;", exe);
  lua_getfield(L, -2, "cpath");
  lua_concat(L, 2);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  luaL_checkversion(L);
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_vmlua_core);
  lua_setfield(L, -2, "vmlua.core");
  lua_pop(L, 1);
  add_module_paths(L);
  lua_pushcfunction(L, traceback);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "vmlua.cli");
  if (lua_pcall(L, 1, 1, -3) != LUA_OK) return lua_error(L);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  if (lua_pcall(L, 1, 1, -4) != LUA_OK) return lua_error(L);
  return 1;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* a write to a dead QEMU fails with EPIPE instead */
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create state: not enough memory\n", progname);
    return EXIT_FAILURE;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = EXIT_FAILURE;
  if (lua_pcall(L, 2, 1, 0) == LUA_OK)
    status = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : EXIT_SUCCESS;
  else
    report(L);
  lua_close(L); /* finalizers close every handle ... */
  uv_run(uv_default_loop(), UV_RUN_NOWAIT); /* ... and this frees them */
  uv_loop_close(uv_default_loop());
  return status;
}
