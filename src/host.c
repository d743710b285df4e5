/* host.c: facts about the machine vmlua runs on. */
#include <sys/socket.h>
#include <sys/utsname.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

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

/* core.port_free(address, port) -> true | nil, message, errno: whether a
   TCP listener could bind the IPv4 address and port now, as QEMU's host
   forward does (with SO_REUSEADDR, so a port in TIME_WAIT is free). */
static int l_port_free(lua_State *L) {
  const char *address = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  luaL_argcheck(L, port >= 1 && port <= 65535, 2, "not a port (1-65535)");
  luaL_argcheck(L, inet_pton(AF_INET, address, &sa.sin_addr) == 1, 1, "not an IPv4 address");
  sa.sin_port = htons((uint16_t)port);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int err = 0;
  if (fd < 0) {
    err = errno;
  } else {
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) err = errno;
    close(fd);
  }
  if (err == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, strerror(err));
  lua_pushinteger(L, err);
  return 3;
}

/* core.free_port(address) -> port | nil, message: a TCP port that is free on
   the IPv4 address now (the kernel's pick), for a forward of host port 0. */
static int l_free_port(lua_State *L) {
  const char *address = luaL_checkstring(L, 1);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  luaL_argcheck(L, inet_pton(AF_INET, address, &sa.sin_addr) == 1, 1, "not an IPv4 address");
  socklen_t len = sizeof sa;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int err = fd < 0 ? errno : 0;
  if (err == 0 && (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
                   getsockname(fd, (struct sockaddr *)&sa, &len) != 0))
    err = errno;
  if (fd >= 0) close(fd);
  if (err != 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(err));
    return 2;
  }
  lua_pushinteger(L, ntohs(sa.sin_port));
  return 1;
}

void vmlua_open_host(lua_State *L) {
  lua_pushcfunction(L, l_host);
  lua_setfield(L, -2, "host");
  lua_pushcfunction(L, l_port_free);
  lua_setfield(L, -2, "port_free");
  lua_pushcfunction(L, l_free_port);
  lua_setfield(L, -2, "free_port");
}
