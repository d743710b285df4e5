/* host.c: facts about the machine vmlua runs on. */
#include <sys/utsname.h>
#include <string.h>

#include "core.h"

static const char *normal_arch(const char *machine) {
  if (strcmp(machine, "arm64") == 0) return "aarch64";
  if (strcmp(machine, "amd64") == 0) return "x86_64";
  return machine;
}

/* core.host() -> { cpus=, memory=, arch=, os= } */
static int l_host(lua_State *L) {
  struct utsname u;
  if (uname(&u) != 0) return luaL_error(L, "uname failed");
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)uv_available_parallelism());
  lua_setfield(L, -2, "cpus");
  uint64_t mem = uv_get_total_memory(), limit = uv_get_constrained_memory();
  if (limit > 0 && limit < mem) mem = limit;
  lua_pushinteger(L, (lua_Integer)mem);
  lua_setfield(L, -2, "memory");
  lua_pushstring(L, normal_arch(u.machine));
  lua_setfield(L, -2, "arch");
#ifdef __APPLE__
  lua_pushliteral(L, "macos");
#else
  lua_pushliteral(L, "linux");
#endif
  lua_setfield(L, -2, "os");
  return 1;
}

void vmlua_open_host(lua_State *L) {
  lua_pushcfunction(L, l_host);
  lua_setfield(L, -2, "host");
}
