/* fs.c: the file-system and process facts Lua's standard library lacks. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core.h"

static int fail(lua_State *L, const char *path) {
  int e = errno;
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", path, strerror(e));
  lua_pushinteger(L, e);
  return 3;
}

/* core.stat(path) -> { type=, size=, mode=, uid=, dev=, ino=, rdev=, mtime= } | nil, err */
static int l_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) return fail(L, path);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, S_ISREG(st.st_mode)   ? "file"
                    : S_ISDIR(st.st_mode) ? "directory"
                    : S_ISBLK(st.st_mode) ? "block"
                    : S_ISCHR(st.st_mode) ? "char"
                                          : "other");
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, st.st_mode & 07777);
  lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)st.st_uid);
  lua_setfield(L, -2, "uid");
  /* identity, for caches keyed on a file: device, inode, device number, mtime */
  lua_pushinteger(L, (lua_Integer)st.st_dev);
  lua_setfield(L, -2, "dev");
  lua_pushinteger(L, (lua_Integer)st.st_ino);
  lua_setfield(L, -2, "ino");
  lua_pushinteger(L, (lua_Integer)st.st_rdev);
  lua_setfield(L, -2, "rdev");
  lua_pushinteger(L, (lua_Integer)st.st_mtime);
  lua_setfield(L, -2, "mtime");
  return 1;
}

/* core.can_open(path, "r"|"rw") -> true | nil, err: really opens the file. */
static int l_can_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  static const char *const modes[] = {"r", "rw", NULL};
  int flags = luaL_checkoption(L, 2, "r", modes) == 0 ? O_RDONLY : O_RDWR;
  int fd = open(path, flags | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return fail(L, path);
  close(fd);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.executable(path) -> boolean */
static int l_executable(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  lua_pushboolean(L, stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0);
  return 1;
}

/* core.mkdir_private(path) -> true, made | nil, err: a directory only we can
 * use. A new one is made 0700. One that exists is used as it is only if it is
 * a real directory, ours, and closed to group and others; it is never
 * chmod'ed, since vmlua did not make it (as tmux and ssh-agent do). */
static int l_mkdir_private(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int made = mkdir(path, 0700) == 0;
  if (!made && errno != EEXIST) return fail(L, path);
  struct stat st;
  if (lstat(path, &st) != 0) return fail(L, path);
  const char *why = NULL;
  if (S_ISLNK(st.st_mode))
    why = "it is a symbolic link";
  else if (!S_ISDIR(st.st_mode))
    why = "it is not a directory";
  else if (st.st_uid != geteuid())
    why = "it belongs to another user";
  if (why == NULL && made && (st.st_mode & 07777) != 0700) { /* the umask took bits of ours */
    if (chmod(path, 0700) != 0) return fail(L, path);
    st.st_mode = (st.st_mode & ~07777) | 0700;
  }
  if (why != NULL) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, why);
    return 2;
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    snprintf(mode, sizeof mode, "0%o", (unsigned)(st.st_mode & 07777));
    lua_pushnil(L);
    lua_pushfstring(L, "%s: it is open to other users (mode %s)", path, mode);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_pushboolean(L, made);
  return 2;
}

/* core.create_file(path, mode) -> true (made with mode) | false (it existed,
 * left as it is) | nil, err */
static int l_create_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, (mode_t)luaL_checkinteger(L, 2));
  if (fd < 0 && errno != EEXIST) return fail(L, path);
  if (fd >= 0) close(fd);
  lua_pushboolean(L, fd >= 0);
  return 1;
}

/* core.chmod(path, mode) -> true | nil, err */
static int l_chmod(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (chmod(path, (mode_t)luaL_checkinteger(L, 2)) != 0) return fail(L, path);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  if (realpath(path, buf) == NULL) return fail(L, path);
  lua_pushstring(L, buf);
  return 1;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int l_getuid(lua_State *L) {
  lua_pushinteger(L, getuid());
  return 1;
}

/* core.alive(pid) -> boolean: whether a process with that pid exists */
static int l_alive(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  lua_pushboolean(L, pid > 0 && (kill(pid, 0) == 0 || errno == EPERM));
  return 1;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* core.redirect_stdio(path) -> true | nil, err: stdin from /dev/null,
 * stdout and stderr appended to path (made 0600), for a process that
 * outlives its terminal. */
static int l_redirect_stdio(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (in < 0) return fail(L, "/dev/null");
  int out = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
  if (out < 0) {
    close(in);
    return fail(L, path);
  }
  fflush(stdout);
  fflush(stderr);
  int ok = dup2(in, 0) >= 0 && dup2(out, 1) >= 0 && dup2(out, 2) >= 0;
  close(in);
  close(out);
  if (!ok) return fail(L, path);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.exepath() -> the path of the running executable */
static int l_exepath(lua_State *L) {
  char exe[PATH_MAX];
  size_t len = sizeof exe;
  int err = uv_exepath(exe, &len);
  if (err != 0) {
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(err));
    return 2;
  }
  lua_pushlstring(L, exe, len);
  return 1;
}

void vmlua_open_fs(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"stat", l_stat},       {"can_open", l_can_open}, {"executable", l_executable},
      {"mkdir_private", l_mkdir_private}, {"create_file", l_create_file}, {"chmod", l_chmod}, {"realpath", l_realpath},
      {"getpid", l_getpid},
      {"getuid", l_getuid},   {"alive", l_alive},       {"isatty", l_isatty},
      {"redirect_stdio", l_redirect_stdio}, {"exepath", l_exepath},
      {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
  /* the longest path a Unix socket address holds, without its final NUL */
  lua_pushinteger(L, (lua_Integer)sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
  lua_setfield(L, -2, "max_socket_path");
}
