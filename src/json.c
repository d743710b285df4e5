/* json.c: JSON through jansson. Objects and arrays become tables; JSON null
 * becomes core.null. An empty table encodes as an object. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#include "core.h"

#define MAX_DEPTH 64

static void push_json(lua_State *L, json_t *v, int depth) {
  luaL_checkstack(L, 4, "JSON too deep");
  if (depth > MAX_DEPTH) luaL_error(L, "JSON nested too deeply");
  switch (json_typeof(v)) {
    case JSON_OBJECT: {
      const char *key;
      json_t *item;
      lua_createtable(L, 0, (int)json_object_size(v));
      json_object_foreach(v, key, item) {
        push_json(L, item, depth + 1);
        lua_setfield(L, -2, key);
      }
      break;
    }
    case JSON_ARRAY: {
      size_t i;
      json_t *item;
      lua_createtable(L, (int)json_array_size(v), 0);
      json_array_foreach(v, i, item) {
        push_json(L, item, depth + 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
      }
      break;
    }
    case JSON_STRING: lua_pushlstring(L, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(v)); break;
    case JSON_REAL: lua_pushnumber(L, json_real_value(v)); break;
    case JSON_TRUE: lua_pushboolean(L, 1); break;
    case JSON_FALSE: lua_pushboolean(L, 0); break;
    case JSON_NULL: lua_pushlightuserdata(L, NULL); break;
  }
}

/* core.json_decode(text) -> value | nil, err */
static int l_decode(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  json_error_t err;
  json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
  if (v == NULL) {
    lua_pushnil(L);
    lua_pushfstring(L, "JSON: %s at line %d, column %d", err.text, err.line, err.column);
    return 2;
  }
  push_json(L, v, 0);
  json_decref(v);
  return 1;
}

static int is_array(lua_State *L, int idx) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  if (n == 0) return 0;
  lua_Integer count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1)) { lua_pop(L, 1); return 0; }
    count++;
  }
  return count == n;
}

/* Builds a json_t from the value at idx; raises on values JSON cannot hold. */
static json_t *to_json(lua_State *L, int idx, int depth) {
  idx = lua_absindex(L, idx);
  if (depth > MAX_DEPTH) luaL_error(L, "cannot encode: nested too deeply (a cycle?)");
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return json_null();
    case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
      if (!isfinite(lua_tonumber(L, idx))) luaL_error(L, "cannot encode %f as JSON", lua_tonumber(L, idx));
      return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      json_t *v = json_stringn(s, len);
      if (v == NULL) luaL_error(L, "cannot encode a string that is not UTF-8 as JSON");
      return v;
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return json_null();
      break;
    case LUA_TTABLE: {
      luaL_checkstack(L, 4, "JSON too deep");
      if (is_array(L, idx)) {
        json_t *a = json_array();
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
        for (lua_Integer i = 1; i <= n; i++) {
          lua_rawgeti(L, idx, i);
          json_array_append_new(a, to_json(L, -1, depth + 1));
          lua_pop(L, 1);
        }
        return a;
      }
      json_t *o = json_object();
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
          json_decref(o);
          luaL_error(L, "cannot encode a table with %s keys as JSON", luaL_typename(L, -2));
        }
        json_object_set_new(o, lua_tostring(L, -2), to_json(L, -1, depth + 1));
        lua_pop(L, 1);
      }
      return o;
    }
    default: break;
  }
  luaL_error(L, "cannot encode a %s as JSON", luaL_typename(L, idx));
  return NULL;
}

/* core.json_encode(value [, pretty]) -> text */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  int pretty = lua_toboolean(L, 2);
  lua_settop(L, 1);
  json_t *v = to_json(L, 1, 0);
  size_t flags = JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS;
  if (pretty) flags = JSON_ENCODE_ANY | JSON_INDENT(2) | JSON_SORT_KEYS;
  char *text = json_dumps(v, flags);
  json_decref(v);
  if (text == NULL) return luaL_error(L, "cannot encode as JSON");
  lua_pushstring(L, text);
  free(text);
  return 1;
}

void vmlua_open_json(lua_State *L) {
  static const luaL_Reg funcs[] = {{"json_decode", l_decode}, {"json_encode", l_encode}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
}
