/* core.c: the vmlua.core module, one area per file. */
#include "core.h"

int luaopen_vmlua_core(lua_State *L) {
  lua_newtable(L);
  vmlua_open_loop(L);
  vmlua_open_host(L);
  vmlua_open_fs(L);
  vmlua_open_json(L);
  vmlua_open_timer(L);
  vmlua_open_process(L);
  vmlua_open_stream(L);
  vmlua_open_signal(L);
  vmlua_open_caller(L);
  vmlua_open_terminal(L);
  vmlua_open_editline(L);
  vmlua_open_interrupt(L);
  vmlua_open_lock(L);
  vmlua_open_guard(L);
  vmlua_open_memlimit(L);
  vmlua_open_download(L);
  vmlua_open_sha256(L);
  vmlua_open_libvirt(L);
  return 1;
}
