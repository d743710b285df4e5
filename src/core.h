/* core.h: declarations shared by the files of the vmlua.core module. */
#ifndef VMLUA_CORE_H
#define VMLUA_CORE_H

#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

int luaopen_vmlua_core(lua_State *L);

/* Each area adds its functions to the module table on top of the stack. */
void vmlua_open_loop(lua_State *L);
void vmlua_open_host(lua_State *L);
void vmlua_open_fs(lua_State *L);
void vmlua_open_json(lua_State *L);
void vmlua_open_timer(lua_State *L);
void vmlua_open_process(lua_State *L);
void vmlua_open_stream(lua_State *L);
void vmlua_open_signal(lua_State *L);
void vmlua_open_caller(lua_State *L);
void vmlua_open_terminal(lua_State *L);
void vmlua_open_editline(lua_State *L);
void vmlua_open_interrupt(lua_State *L);
void vmlua_open_lock(lua_State *L);
void vmlua_open_guard(lua_State *L);
void vmlua_open_memlimit(lua_State *L);
void vmlua_open_download(lua_State *L);
void vmlua_open_sha256(lua_State *L);
void vmlua_open_libvirt(lua_State *L);

/* loop.c */
uv_loop_t *vmlua_loop(void);
/* The state that runs the loop now; callbacks run on it. */
lua_State *vmlua_loop_state(void);
/* Calls the function below nargs arguments, protected: an error is reported
 * (with a traceback) through the error handler and never propagates. */
void vmlua_protected_call(lua_State *L, int nargs);

/* handle.c: the life cycle shared by every libuv handle exposed to Lua.
 * A userdata owns a malloc'd uv handle; while the handle is active the
 * userdata is anchored in the registry so that it cannot be collected. */
#define VMLUA_CALLBACKS 3

typedef struct vmlua_handle {
  uv_handle_t *uv;                  /* NULL once closed */
  int anchor;                       /* registry ref to the userdata, or LUA_NOREF */
  int callbacks[VMLUA_CALLBACKS];   /* registry refs, or LUA_NOREF */
} vmlua_handle;

void vmlua_handle_init(vmlua_handle *h, uv_handle_t *uv);
void vmlua_handle_anchor(lua_State *L, vmlua_handle *h, int idx);
void vmlua_handle_unanchor(lua_State *L, vmlua_handle *h);
void vmlua_handle_set_callback(lua_State *L, vmlua_handle *h, int slot, int idx);
/* Pushes the callback in slot; returns 0 (pushing nothing) if there is none. */
int vmlua_handle_push_callback(lua_State *L, vmlua_handle *h, int slot);
/* Closes the uv handle, releases all references; safe to call twice. */
void vmlua_handle_close(lua_State *L, vmlua_handle *h);
/* Registers a metatable with methods and __gc/__close/__tostring. */
void vmlua_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                     const luaL_Reg *metamethods);

#endif
