/* handle.c: anchoring, callbacks and closing of libuv handles owned by Lua. */
#include <stdlib.h>

#include "core.h"

void vmlua_handle_init(vmlua_handle *h, uv_handle_t *uv) {
  h->uv = uv;
  h->anchor = LUA_NOREF;
  for (int i = 0; i < VMLUA_CALLBACKS; i++) h->callbacks[i] = LUA_NOREF;
  uv->data = h;
}

void vmlua_handle_anchor(lua_State *L, vmlua_handle *h, int idx) {
  if (h->anchor != LUA_NOREF) return;
  lua_pushvalue(L, idx);
  h->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
}

void vmlua_handle_unanchor(lua_State *L, vmlua_handle *h) {
  luaL_unref(L, LUA_REGISTRYINDEX, h->anchor);
  h->anchor = LUA_NOREF;
}

void vmlua_handle_set_callback(lua_State *L, vmlua_handle *h, int slot, int idx) {
  luaL_unref(L, LUA_REGISTRYINDEX, h->callbacks[slot]);
  h->callbacks[slot] = LUA_NOREF;
  if (!lua_isnoneornil(L, idx)) {
    luaL_checktype(L, idx, LUA_TFUNCTION);
    lua_pushvalue(L, idx);
    h->callbacks[slot] = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

int vmlua_handle_push_callback(lua_State *L, vmlua_handle *h, int slot) {
  if (h->callbacks[slot] == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->callbacks[slot]);
  return 1;
}

static void free_on_close(uv_handle_t *uv) { free(uv); }

void vmlua_handle_close(lua_State *L, vmlua_handle *h) {
  if (h->uv != NULL) {
    h->uv->data = NULL;
    if (!uv_is_closing(h->uv)) uv_close(h->uv, free_on_close);
    h->uv = NULL;
  }
  for (int i = 0; i < VMLUA_CALLBACKS; i++) {
    luaL_unref(L, LUA_REGISTRYINDEX, h->callbacks[i]);
    h->callbacks[i] = LUA_NOREF;
  }
  vmlua_handle_unanchor(L, h);
}

void vmlua_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                     const luaL_Reg *metamethods) {
  luaL_newmetatable(L, name);
  luaL_setfuncs(L, metamethods, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
