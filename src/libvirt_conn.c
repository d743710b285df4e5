/* libvirt_conn.c: a connection to libvirt (core.virt_connect) and what is
 * asked of the host through it: create, look up, list and restore
 * domains, free memory, and the events of its domains.
 *
 * A connection asks for the lifecycle and QMP events of every domain as
 * it opens (on a worker: registering is an RPC), and stays a target of
 * libvirt_events.c until it is closed. It keeps the loop alive while a
 * function waits for its events. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "libvirt.h"

#define CONN "vmlua.virt_conn"

typedef struct {
  virt_target t;             /* first: events name it by t.id */
  virConnectPtr conn;        /* NULL once closed */
  int lifecycle, monitor;    /* libvirt's callback ids, or -1 */
  int on_lifecycle, on_monitor, on_close, anchor; /* registry refs */
  char uri[];
} conn_ud;

static conn_ud *check_conn(lua_State *L) { return luaL_checkudata(L, 1, CONN); }

static conn_ud *check_open(lua_State *L) {
  conn_ud *u = check_conn(L);
  if (u->conn == NULL) luaL_error(L, "the libvirt connection to %s is closed", u->uri);
  return u;
}

virConnectPtr virt_check_conn(lua_State *L, int idx) {
  conn_ud *u = luaL_checkudata(L, idx, CONN);
  if (u->conn == NULL) luaL_error(L, "the libvirt connection to %s is closed", u->uri);
  return u->conn;
}

static const char *const close_reasons[] = {"error", "eof", "keepalive", "client"};

static void deliver(lua_State *L, virt_target *t, virt_event *e) {
  conn_ud *u = (conn_ud *)t;
  int ref = e->kind == VIRT_LIFECYCLE ? u->on_lifecycle : e->kind == VIRT_MONITOR ? u->on_monitor : u->on_close;
  if (ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  if (e->kind == VIRT_CLOSED) {
    lua_pushstring(L, e->a >= 0 && e->a < 4 ? close_reasons[e->a] : "error");
    vmlua_protected_call(L, 1);
    return;
  }
  lua_pushstring(L, e->domain);
  if (e->kind == VIRT_LIFECYCLE) {
    const char *event = virt_event_name(e->a), *detail = virt_detail_name(e->a, e->b);
    if (event) lua_pushstring(L, event); else lua_pushinteger(L, e->a);
    if (detail) lua_pushstring(L, detail); else lua_pushinteger(L, e->b);
    vmlua_protected_call(L, 3);
  } else {
    lua_pushstring(L, e->name);
    if (e->data) lua_pushlstring(L, e->data, e->len); else lua_pushnil(L);
    lua_pushnumber(L, e->time);
    vmlua_protected_call(L, 4);
  }
}

/* On a worker: opens the connection and asks for its domains' events. */
static void run_connect(virt_job *j) {
  virConnectPtr c = virt.virConnectOpen(j->arg1);
  if (c == NULL) {
    virt_fail(j, "cannot connect to", j->arg1);
    return;
  }
  void *id = (void *)(uintptr_t)j->number;
  j->int1 = virt.virConnectDomainEventRegisterAny(c, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                  VIR_DOMAIN_EVENT_CALLBACK(virt_on_lifecycle), id, NULL);
  if (j->int1 < 0) {
    virt_fail(j, "cannot watch the domains of", j->arg1);
    virt.virConnectClose(c);
    return;
  }
  /* QMP events exist on QEMU's driver only: elsewhere, none come. */
  j->int2 = virt.virConnectDomainQemuMonitorEventRegister(c, NULL, NULL, virt_on_monitor, id, NULL, 0);
  virt.virConnectRegisterCloseCallback(c, virt_on_close, id, NULL);
  j->out = c;
}

static int push_connect(lua_State *L, virt_job *j) {
  size_t len = strlen(j->arg1);
  conn_ud *u = lua_newuserdatauv(L, sizeof *u + len + 1, 0);
  memcpy(u->uri, j->arg1, len + 1);
  u->conn = j->out;
  j->out = NULL;
  u->lifecycle = j->int1;
  u->monitor = j->int2;
  u->on_lifecycle = u->on_monitor = u->on_close = LUA_NOREF;
  luaL_setmetatable(L, CONN);
  lua_pushvalue(L, -1);
  u->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  u->t.id = (uint64_t)j->number;
  u->t.deliver = deliver;
  virt_target_add(&u->t);
  lua_pushnil(L);
  return 2;
}

static void release_connect(lua_State *L, virt_job *j) {
  (void)L;
  if (j->out != NULL) virt.virConnectClose(j->out);
}

/* core.virt_connect(uri, fn(conn | nil, err)): opens a connection to
 * libvirt (qemu:///system, qemu+ssh://user@host/system, ...) away from the
 * loop. */
static int l_virt_connect(lua_State *L) {
  const char *uri = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  const char *problem = virt_open(L);
  if (problem != NULL) return luaL_error(L, "virt_connect: %s", problem);
  virt_job *j = virt_job_new(L, 2);
  j->arg1 = strdup(uri);
  if (j->arg1 == NULL) j->err = strdup("out of memory");
  j->number = (long long)virt_new_id();
  j->run = run_connect;
  j->push = push_connect;
  j->release = release_connect;
  virt_job_queue(L, j);
  return 0;
}

/* A job on the connection, which it holds a reference to. */
static virt_job *conn_job(lua_State *L, conn_ud *u, int cb, void (*run)(virt_job *)) {
  virt_job *j = virt_job_new(L, cb);
  virt.virConnectRef(u->conn);
  j->conn = u->conn;
  j->run = run;
  return j;
}

static char *opt_strdup(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return NULL;
  char *s = strdup(luaL_checkstring(L, idx));
  if (s == NULL) luaL_error(L, "out of memory");
  return s;
}

/* The field of the options table at idx, as a boolean (nil: false). */
static int opt_flag(lua_State *L, int idx, const char *name) {
  if (lua_isnoneornil(L, idx)) return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, name);
  int on = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return on;
}

static int push_domain(lua_State *L, virt_job *j) {
  virt_push_domain(L, j->out);
  j->out = NULL;
  lua_pushnil(L);
  return 2;
}

static void release_domain(lua_State *L, virt_job *j) {
  (void)L;
  if (j->out != NULL) virt.virDomainFree(j->out);
}

static void run_create(virt_job *j) {
  j->out = virt.virDomainCreateXML(j->conn, j->arg1, j->flags);
  if (j->out == NULL) virt_fail(j, "cannot create the domain", NULL);
}

/* conn:create(xml, {paused=, autodestroy=} | nil, fn(dom | nil, err)):
 * starts a transient domain. paused: its CPUs wait for dom:resume();
 * autodestroy: libvirt destroys it when this connection closes. */
static int c_create(lua_State *L) {
  conn_ud *u = check_open(L);
  luaL_checkstring(L, 2);
  unsigned int flags = (opt_flag(L, 3, "paused") ? VIR_DOMAIN_START_PAUSED : 0) |
                       (opt_flag(L, 3, "autodestroy") ? VIR_DOMAIN_START_AUTODESTROY : 0);
  virt_job *j = conn_job(L, u, 4, run_create);
  j->flags = flags;
  j->push = push_domain;
  j->release = release_domain;
  j->arg1 = opt_strdup(L, 2);
  virt_job_queue(L, j);
  return 0;
}

static void run_lookup(virt_job *j) {
  j->out = virt.virDomainLookupByName(j->conn, j->arg1);
  if (j->out == NULL) virt_fail(j, "cannot look up domain", j->arg1);
}

/* conn:lookup(name, fn(dom | nil, err)) */
static int c_lookup(lua_State *L) {
  conn_ud *u = check_open(L);
  luaL_checkstring(L, 2);
  virt_job *j = conn_job(L, u, 3, run_lookup);
  j->push = push_domain;
  j->release = release_domain;
  j->arg1 = opt_strdup(L, 2);
  virt_job_queue(L, j);
  return 0;
}

typedef struct {
  char *name;
  int id, state, reason;
} listed;

static void run_domains(virt_job *j) {
  virDomainPtr *doms = NULL;
  int n = virt.virConnectListAllDomains(j->conn, &doms, 0);
  if (n < 0) {
    virt_fail(j, "cannot list the domains", NULL);
    return;
  }
  listed *list = calloc((size_t)n + 1, sizeof *list);
  for (int i = 0; i < n; i++) {
    if (list != NULL) {
      const char *name = virt.virDomainGetName(doms[i]);
      unsigned int id = virt.virDomainGetID(doms[i]);
      list[i].name = strdup(name ? name : "");
      list[i].id = id == (unsigned int)-1 ? -1 : (int)id;
      /* a domain that went away meanwhile shows as shut off */
      if (virt.virDomainGetState(doms[i], &list[i].state, &list[i].reason, 0) < 0)
        list[i].state = VIR_DOMAIN_SHUTOFF;
    }
    virt.virDomainFree(doms[i]);
  }
  free(doms);
  if (list == NULL) {
    j->err = strdup("out of memory");
    return;
  }
  j->out = list;
  j->number = n;
}

static int push_domains(lua_State *L, virt_job *j) {
  listed *list = j->out;
  lua_createtable(L, (int)j->number, 0);
  for (int i = 0; i < j->number; i++) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, list[i].name ? list[i].name : "");
    lua_setfield(L, -2, "name");
    if (list[i].id >= 0) {
      lua_pushinteger(L, list[i].id);
      lua_setfield(L, -2, "id");
    }
    lua_pushstring(L, virt_state_name(list[i].state));
    lua_setfield(L, -2, "state");
    lua_pushstring(L, virt_reason_name(list[i].state, list[i].reason));
    lua_setfield(L, -2, "reason");
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushnil(L);
  return 2;
}

static void release_domains(lua_State *L, virt_job *j) {
  (void)L;
  listed *list = j->out;
  if (list == NULL) return;
  for (int i = 0; i < j->number; i++) free(list[i].name);
  free(list);
}

/* conn:domains(fn(list | nil, err)): every domain, running or not, as
 * { name=, id= (running ones), state=, reason= } */
static int c_domains(lua_State *L) {
  conn_ud *u = check_open(L);
  virt_job *j = conn_job(L, u, 2, run_domains);
  j->push = push_domains;
  j->release = release_domains;
  virt_job_queue(L, j);
  return 0;
}

static void run_free_memory(virt_job *j) {
  unsigned long long bytes = virt.virNodeGetFreeMemory(j->conn);
  if (bytes == 0) {
    virt_fail(j, "cannot read the host's free memory", NULL);
    return;
  }
  j->number = (long long)bytes;
}

static int push_number(lua_State *L, virt_job *j) {
  lua_pushinteger(L, (lua_Integer)j->number);
  lua_pushnil(L);
  return 2;
}

/* conn:free_memory(fn(bytes | nil, err)): the host's free memory */
static int c_free_memory(lua_State *L) {
  conn_ud *u = check_open(L);
  virt_job *j = conn_job(L, u, 2, run_free_memory);
  j->push = push_number;
  virt_job_queue(L, j);
  return 0;
}

static void run_restore(virt_job *j) {
  if (virt.virDomainRestoreFlags(j->conn, j->arg1, j->arg2, j->flags) < 0)
    virt_fail(j, "cannot restore the domain from", j->arg1);
}

/* conn:restore(file, {xml=, paused=} | nil, fn(true | nil, err)): starts
 * the domain saved in file (a path on the host); paused true or false
 * overrides the state it was saved in. */
static int c_restore(lua_State *L) {
  conn_ud *u = check_open(L);
  luaL_checkstring(L, 2);
  unsigned int flags = 0;
  char *xml = NULL;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "paused");
    if (!lua_isnil(L, -1)) flags = lua_toboolean(L, -1) ? VIR_DOMAIN_SAVE_PAUSED : VIR_DOMAIN_SAVE_RUNNING;
    lua_getfield(L, 3, "xml");
    xml = opt_strdup(L, -1);
    lua_pop(L, 2);
  }
  virt_job *j = conn_job(L, u, 4, run_restore);
  j->arg2 = xml;
  j->flags = flags;
  j->push = virt_push_true;
  j->arg1 = opt_strdup(L, 2);
  virt_job_queue(L, j);
  return 0;
}

static void set_ref(lua_State *L, int *ref, int idx) {
  if (!lua_isnil(L, idx)) luaL_checktype(L, idx, LUA_TFUNCTION);
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
  if (!lua_isnil(L, idx)) {
    lua_pushvalue(L, idx);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

/* conn:on_lifecycle(fn(domain, event, detail) | nil): libvirt's lifecycle
 * events of every domain ("started", "booted"; "stopped", "shutdown"...) */
static int c_on_lifecycle(lua_State *L) {
  conn_ud *u = check_open(L);
  luaL_checkany(L, 2);
  set_ref(L, &u->on_lifecycle, 2);
  virt_target_keep(&u->t, u->on_lifecycle != LUA_NOREF || u->on_monitor != LUA_NOREF);
  return 0;
}

/* conn:on_monitor_event(fn(domain, event, data_json | nil, time) | nil):
 * QEMU's QMP events of every domain (STOP, RESUME, SHUTDOWN...) */
static int c_on_monitor_event(lua_State *L) {
  conn_ud *u = check_open(L);
  luaL_checkany(L, 2);
  if (u->monitor < 0 && !lua_isnil(L, 2))
    return luaL_error(L, "%s gives no QEMU monitor events", u->uri);
  set_ref(L, &u->on_monitor, 2);
  virt_target_keep(&u->t, u->on_lifecycle != LUA_NOREF || u->on_monitor != LUA_NOREF);
  return 0;
}

/* conn:on_close(fn(reason) | nil): the connection broke ("eof": the
 * daemon went away, "keepalive", "error"); calls fail from then on. */
static int c_on_close(lua_State *L) {
  conn_ud *u = check_open(L);
  luaL_checkany(L, 2);
  set_ref(L, &u->on_close, 2);
  return 0;
}

static void forget(lua_State *L, conn_ud *u) {
  virt_target_remove(&u->t);
  luaL_unref(L, LUA_REGISTRYINDEX, u->on_lifecycle);
  luaL_unref(L, LUA_REGISTRYINDEX, u->on_monitor);
  luaL_unref(L, LUA_REGISTRYINDEX, u->on_close);
  luaL_unref(L, LUA_REGISTRYINDEX, u->anchor);
  u->on_lifecycle = u->on_monitor = u->on_close = u->anchor = LUA_NOREF;
  u->conn = NULL;
}

static void deregister(virConnectPtr c, int lifecycle, int monitor) {
  virt.virConnectUnregisterCloseCallback(c, virt_on_close);
  if (lifecycle >= 0) virt.virConnectDomainEventDeregisterAny(c, lifecycle);
  if (monitor >= 0) virt.virConnectDomainQemuMonitorEventDeregister(c, monitor);
}

static void run_close(virt_job *j) { deregister(j->conn, j->int1, j->int2); }

/* conn:close([fn(true)]): no more events; libvirt closes the connection
 * (away from the loop) once its domains are freed too. Safe to call twice. */
static int c_close(lua_State *L) {
  conn_ud *u = check_conn(L);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  if (u->conn == NULL) return 0;
  virt_job *j = virt_job_new(L, lua_isnoneornil(L, 2) ? 0 : 2);
  j->conn = u->conn; /* the job takes the userdata's reference */
  j->int1 = u->lifecycle;
  j->int2 = u->monitor;
  j->run = run_close;
  j->push = virt_push_true;
  forget(L, u);
  virt_job_queue(L, j);
  return 0;
}

static int c_close_meta(lua_State *L) {
  lua_settop(L, 1);
  return c_close(L);
}

/* The state closes with the connection open: closed here, at once. */
static int c_gc(lua_State *L) {
  conn_ud *u = check_conn(L);
  if (u->conn == NULL) return 0;
  virConnectPtr c = u->conn;
  forget(L, u);
  deregister(c, u->lifecycle, u->monitor);
  virt.virConnectClose(c);
  return 0;
}

static int c_uri(lua_State *L) {
  lua_pushstring(L, check_conn(L)->uri);
  return 1;
}

static int c_tostring(lua_State *L) {
  conn_ud *u = check_conn(L);
  lua_pushfstring(L, "libvirt connection %s (%s)", u->uri, u->conn ? "open" : "closed");
  return 1;
}

void virt_open_conn(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"create", c_create}, {"lookup", c_lookup}, {"domains", c_domains},
      {"free_memory", c_free_memory}, {"restore", c_restore}, {"on_lifecycle", c_on_lifecycle},
      {"on_monitor_event", c_on_monitor_event}, {"on_close", c_on_close}, {"close", c_close}, {"uri", c_uri},
      {"pool", virt_conn_pool}, {"create_pool", virt_conn_create_pool}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", c_gc}, {"__close", c_close_meta}, {"__tostring", c_tostring}, {NULL, NULL}};
  vmlua_new_class(L, CONN, methods, meta);
  lua_pushcfunction(L, l_virt_connect);
  lua_setfield(L, -2, "virt_connect");
}
