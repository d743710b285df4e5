/* libvirt.c: libvirt opened at first use, its errors, and its calls on
 * libuv's thread pool.
 *
 * libvirt (and libvirt-qemu) are opened with dlopen when the first
 * connection is made: linked in, they would load into every start of
 * vmlua. Every call that may block (an RPC to the daemon, local or over
 * ssh) runs on a worker of libuv's pool and its result comes back to a Lua
 * callback on the loop. libvirt's events run on a thread of their own
 * (libvirt_events.c); connections, domains and consoles have a file each. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libvirt.h"

struct virt_api virt;

/* libvirt prints every error to stderr unless told otherwise; vmlua
 * reports them itself. */
static void quiet(void *data, virErrorPtr e) {
  (void)data;
  (void)e;
}

const char *virt_open(lua_State *L) {
  static int ready;
  static char problem[512];
  if (problem[0]) return problem;
  if (!ready) {
    void *lib = dlopen("libvirt.so.0", RTLD_NOW | RTLD_LOCAL);
    void *qemu = lib ? dlopen("libvirt-qemu.so.0", RTLD_NOW | RTLD_LOCAL) : NULL;
    int ok = lib != NULL && qemu != NULL;
#define SYM(from, name) ok = ok && (*(void **)&virt.name = dlsym(from, #name)) != NULL
    SYM(lib, virConnectOpen); SYM(lib, virConnectClose); SYM(lib, virConnectRef);
    SYM(lib, virConnectRegisterCloseCallback); SYM(lib, virConnectUnregisterCloseCallback);
    SYM(lib, virConnectListAllDomains); SYM(lib, virConnectDomainEventRegisterAny);
    SYM(lib, virConnectDomainEventDeregisterAny); SYM(lib, virNodeGetFreeMemory);
    SYM(lib, virDomainCreateXML); SYM(lib, virDomainLookupByName); SYM(lib, virDomainRestoreFlags);
    SYM(lib, virDomainSaveFlags); SYM(lib, virDomainRef); SYM(lib, virDomainFree);
    SYM(lib, virDomainGetName); SYM(lib, virDomainGetID); SYM(lib, virDomainGetConnect);
    SYM(lib, virDomainGetState); SYM(lib, virDomainGetXMLDesc); SYM(lib, virDomainResume);
    SYM(lib, virDomainSuspend); SYM(lib, virDomainShutdown); SYM(lib, virDomainDestroy);
    SYM(lib, virDomainOpenConsole); SYM(lib, virStreamNew); SYM(lib, virStreamFree);
    SYM(lib, virStreamRecv); SYM(lib, virStreamSend); SYM(lib, virStreamAbort);
    SYM(lib, virStreamEventAddCallback); SYM(lib, virStreamEventUpdateCallback);
    SYM(lib, virStreamEventRemoveCallback); SYM(lib, virEventRegisterDefaultImpl);
    SYM(lib, virEventRunDefaultImpl); SYM(lib, virEventAddTimeout); SYM(lib, virEventRemoveTimeout);
    SYM(lib, virGetLastErrorMessage); SYM(lib, virSetErrorFunc);
    SYM(lib, virStreamFinish); SYM(lib, virStreamSparseSendAll); SYM(lib, virStoragePoolLookupByName);
    SYM(lib, virStoragePoolCreateXML); SYM(lib, virStoragePoolDestroy); SYM(lib, virStoragePoolRef);
    SYM(lib, virStoragePoolFree); SYM(lib, virStoragePoolGetName); SYM(lib, virStoragePoolGetConnect);
    SYM(lib, virStoragePoolListAllVolumes); SYM(lib, virStorageVolLookupByName);
    SYM(lib, virStorageVolCreateXML); SYM(lib, virStorageVolUpload); SYM(lib, virStorageVolDelete);
    SYM(lib, virStorageVolGetName); SYM(lib, virStorageVolGetPath); SYM(lib, virStorageVolGetInfo);
    SYM(lib, virStorageVolFree);
    SYM(qemu, virDomainQemuMonitorCommand); SYM(qemu, virDomainQemuAgentCommand);
    SYM(qemu, virConnectDomainQemuMonitorEventRegister);
    SYM(qemu, virConnectDomainQemuMonitorEventDeregister);
#undef SYM
    if (!ok) {
      snprintf(problem, sizeof problem, "cannot load libvirt (install libvirt0): %s", dlerror());
      return problem;
    }
    virt.virSetErrorFunc(NULL, quiet);
    /* before any connection, as libvirt requires */
    if (virt.virEventRegisterDefaultImpl() != 0) {
      char *why = virt_error("libvirt cannot start its event loop");
      snprintf(problem, sizeof problem, "%s", why ? why : "libvirt cannot start its event loop");
      free(why);
      return problem;
    }
    ready = 1;
  }
  return virt_events_start(L);
}

char *virt_error(const char *what) {
  const char *msg = virt.virGetLastErrorMessage();
  size_t n = strlen(what) + strlen(msg) + 3;
  char *s = malloc(n);
  if (s != NULL) snprintf(s, n, "%s: %s", what, msg);
  return s;
}

void virt_fail(virt_job *j, const char *what, const char *arg) {
  size_t n = strlen(what) + (arg ? strlen(arg) + 1 : 0) + 1;
  char *w = malloc(n);
  if (w != NULL) snprintf(w, n, arg ? "%s %s" : "%s", what, arg);
  j->err = virt_error(w ? w : what);
  free(w);
}

virt_job *virt_job_alloc(void) {
  virt_job *j = calloc(1, sizeof *j);
  if (j != NULL) {
    j->req.data = j;
    j->callback = LUA_NOREF;
  }
  return j;
}

virt_job *virt_job_new(lua_State *L, int cb) {
  if (cb != 0) luaL_checktype(L, cb, LUA_TFUNCTION);
  virt_job *j = virt_job_alloc();
  if (j == NULL) luaL_error(L, "out of memory");
  if (cb != 0) {
    lua_pushvalue(L, cb);
    j->callback = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return j;
}

static void job_free(lua_State *L, virt_job *j) {
  if (j->release != NULL) j->release(L, j);
  if (j->dom != NULL) virt.virDomainFree(j->dom);
  if (j->conn != NULL) virt.virConnectClose(j->conn);
  if (L != NULL) luaL_unref(L, LUA_REGISTRYINDEX, j->callback);
  free(j->arg1);
  free(j->arg2);
  free(j->text);
  free(j->err);
  free(j);
}

static void job_run(uv_work_t *req) {
  virt_job *j = req->data;
  if (j->err == NULL) j->run(j);
  /* The job's references go here, off the loop: the last reference to a
   * connection closes it, which is an RPC. */
  if (j->dom != NULL) virt.virDomainFree(j->dom);
  if (j->conn != NULL) virt.virConnectClose(j->conn);
  j->dom = NULL;
  j->conn = NULL;
}

static void job_done(uv_work_t *req, int status) {
  virt_job *j = req->data;
  lua_State *L = vmlua_loop_state();
  if (L == NULL || j->callback == LUA_NOREF) {
    job_free(L, j);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, j->callback);
  int n;
  if (status != 0 || j->err != NULL) {
    lua_pushnil(L);
    lua_pushstring(L, j->err ? j->err : uv_strerror(status));
    n = 2;
  } else {
    n = j->push ? j->push(L, j) : 0;
  }
  job_free(L, j);
  vmlua_protected_call(L, n);
}

int virt_push_true(lua_State *L, virt_job *j) {
  (void)j;
  lua_pushboolean(L, 1);
  lua_pushnil(L);
  return 2;
}

int virt_job_start(virt_job *j) { return uv_queue_work(vmlua_loop(), &j->req, job_run, job_done); }

void virt_job_queue(lua_State *L, virt_job *j) {
  int err = virt_job_start(j);
  if (err != 0) {
    job_free(L, j);
    luaL_error(L, "libvirt: %s", uv_strerror(err));
  }
}

void virt_job_inline(virt_job *j) {
  job_run(&j->req);
  job_free(NULL, j);
}

void vmlua_open_libvirt(lua_State *L) {
  virt_open_conn(L);
  virt_open_domain(L);
  virt_open_console(L);
  virt_open_storage(L);
}
