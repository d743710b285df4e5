/* memlimit.c: core.memory_limit(bytes) caps how much more memory the Lua
 * state may take from now on (the sandbox sets it while a recipe's code
 * runs); core.memory_limit() lifts it. Lua has no per-chunk limit, so the
 * cap is a wrapper around the state's allocator: an allocation that would
 * grow the state beyond the budget fails, and Lua raises "not enough
 * memory" after a full collection. Frees and shrinks always succeed. */
#include "core.h"

typedef struct {
  lua_Alloc base;   /* the allocator the state had before the cap */
  void *base_ud;
  long long budget; /* bytes the state may grow by while capped */
  long long grown;  /* net bytes taken since the cap was set (may be negative) */
  int refused;      /* an allocation was refused since the cap was set */
} memlimit;

static memlimit limit; /* one Lua state per process: the executable's or lua5.4's */

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  memlimit *m = ud;
  long long old = ptr ? (long long)osize : 0; /* for a new block, osize is a type tag */
  long long more = (long long)nsize - old;
  if (nsize > 0 && more > 0 && m->grown + more > m->budget) {
    m->refused = 1;
    return NULL;
  }
  void *block = m->base(m->base_ud, ptr, osize, nsize);
  if (block != NULL || nsize == 0) m->grown += more;
  return block;
}

/* core.memory_limit(bytes): cap from now on (again: a fresh budget).
 * core.memory_limit(): lift the cap; returns the bytes taken meanwhile
 * (0 or more) and whether an allocation was refused. */
static int l_memory_limit(lua_State *L) {
  void *ud;
  lua_Alloc current = lua_getallocf(L, &ud);
  if (lua_isnoneornil(L, 1)) {
    long long grown = limit.grown > 0 ? limit.grown : 0;
    int refused = limit.refused;
    if (current == limited_alloc) lua_setallocf(L, limit.base, limit.base_ud);
    limit.grown = 0;
    limit.refused = 0;
    lua_pushinteger(L, (lua_Integer)grown);
    lua_pushboolean(L, refused);
    return 2;
  }
  lua_Integer bytes = luaL_checkinteger(L, 1);
  luaL_argcheck(L, bytes > 0, 1, "the budget must be more than 0 bytes");
  if (current != limited_alloc) {
    limit.base = current;
    limit.base_ud = ud;
  }
  limit.budget = (long long)bytes;
  limit.grown = 0;
  limit.refused = 0;
  lua_setallocf(L, limited_alloc, &limit);
  return 0;
}

void vmlua_open_memlimit(lua_State *L) {
  lua_pushcfunction(L, l_memory_limit);
  lua_setfield(L, -2, "memory_limit");
}
