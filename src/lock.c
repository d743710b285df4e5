/* lock.c: an exclusive lock on a file (flock), held until it is unlocked or
 * the process ends, and never passed on to child processes. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#define LOCK "vmlua.lock"
#define TRIES 8

typedef struct {
  int fd; /* -1 once released; the path is the userdata's user value */
} lock;

static lock *check_lock(lua_State *L) { return luaL_checkudata(L, 1, LOCK); }

static int lock_fail(lua_State *L, const char *path, int held, const char *why) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", path, why);
  lua_pushboolean(L, held);
  return 3;
}

/* core.lock(path) -> lock | nil, err, held: `held` is true when another open
 * file holds the lock (another process, or another lock in this one). The file
 * is made 0600 if it is missing. A holder may unlink the file as it lets go, so
 * the lock counts only while the path still names the file that is locked. */
static int l_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lock *lk = lua_newuserdatauv(L, sizeof *lk, 1);
  lk->fd = -1;
  luaL_setmetatable(L, LOCK);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  for (int i = 0; i < TRIES; i++) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
    if (fd < 0) return lock_fail(L, path, 0, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int e = errno;
      close(fd);
      if (e == EWOULDBLOCK) return lock_fail(L, path, 1, "held by another process");
      return lock_fail(L, path, 0, strerror(e));
    }
    struct stat locked, named;
    if (fstat(fd, &locked) == 0 && lstat(path, &named) == 0 && locked.st_dev == named.st_dev &&
        locked.st_ino == named.st_ino) {
      lk->fd = fd;
      return 1;
    }
    close(fd); /* unlinked by the holder that just let go: lock the new one */
  }
  return lock_fail(L, path, 0, "it keeps being replaced");
}

static int l_unlock(lua_State *L) {
  lock *lk = check_lock(L);
  if (lk->fd >= 0) {
    close(lk->fd); /* the last descriptor of the file: the lock goes with it */
    lk->fd = -1;
  }
  return 0;
}

static int l_held(lua_State *L) {
  lua_pushboolean(L, check_lock(L)->fd >= 0);
  return 1;
}

static int l_tostring(lua_State *L) {
  lock *lk = check_lock(L);
  lua_getiuservalue(L, 1, 1);
  lua_pushfstring(L, "lock %s (%s)", lua_tostring(L, -1), lk->fd >= 0 ? "held" : "released");
  return 1;
}

void vmlua_open_lock(lua_State *L) {
  static const luaL_Reg methods[] = {{"unlock", l_unlock}, {"held", l_held}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", l_unlock}, {"__close", l_unlock}, {"__tostring", l_tostring}, {NULL, NULL}};
  vmlua_new_class(L, LOCK, methods, meta);
  lua_pushcfunction(L, l_lock);
  lua_setfield(L, -2, "lock");
}
