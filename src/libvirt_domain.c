/* libvirt_domain.c: a libvirt domain, and what is done to it: resume,
 * suspend, shut down, destroy, state, save, QMP commands, its XML. Every
 * call that is an RPC runs on a worker (libvirt.c). The console is in
 * libvirt_stream.c. */
#include <stdlib.h>
#include <string.h>

#include "libvirt.h"

#define DOMAIN "vmlua.virt_domain"

typedef struct {
  virDomainPtr dom; /* NULL once freed */
} domain_ud;

static domain_ud *check_ud(lua_State *L) { return luaL_checkudata(L, 1, DOMAIN); }

void virt_push_domain(lua_State *L, virDomainPtr dom) {
  domain_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->dom = dom;
  luaL_setmetatable(L, DOMAIN);
}

virDomainPtr virt_check_domain(lua_State *L, int idx) {
  domain_ud *u = luaL_checkudata(L, idx, DOMAIN);
  if (u->dom == NULL) luaL_error(L, "the libvirt domain is freed");
  return u->dom;
}

static const char *const states[] = {"nostate", "running", "blocked", "paused",
                                     "shutdown", "shutoff", "crashed", "pmsuspended"};

static const char *const reasons[][14] = {
    {"unknown"},
    {"unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused", "migration_canceled",
     "save_canceled", "wakeup", "crashed", "postcopy", "postcopy_failed"},
    {"unknown"},
    {"unknown", "user", "migration", "save", "dump", "ioerror", "watchdog", "from_snapshot",
     "shutting_down", "snapshot", "crashed", "starting_up", "postcopy", "postcopy_failed"},
    {"unknown", "user"},
    {"unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot",
     "daemon"},
    {"unknown", "panicked"},
    {"unknown"},
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

const char *virt_state_name(int state) {
  return state >= 0 && state < COUNT(states) ? states[state] : "unknown";
}

const char *virt_reason_name(int state, int reason) {
  if (state < 0 || state >= COUNT(reasons) || reason < 0 || reason >= COUNT(reasons[0]) ||
      reasons[state][reason] == NULL)
    return "unknown";
  return reasons[state][reason];
}

/* A job on the domain, which it holds a reference to; arg2 is its name
 * for messages. */
static virt_job *domain_job(lua_State *L, int cb, void (*run)(virt_job *)) {
  virDomainPtr dom = virt_check_domain(L, 1);
  virt_job *j = virt_job_new(L, cb);
  virt.virDomainRef(dom);
  j->dom = dom;
  j->run = run;
  const char *name = virt.virDomainGetName(dom);
  j->arg2 = strdup(name ? name : "?");
  return j;
}

enum { RESUME, SUSPEND, SHUTDOWN, DESTROY };

static void run_simple(virt_job *j) {
  static const char *const what[] = {"cannot resume domain", "cannot suspend domain",
                                     "cannot shut down domain", "cannot destroy domain"};
  int rc = j->int1 == RESUME     ? virt.virDomainResume(j->dom)
           : j->int1 == SUSPEND  ? virt.virDomainSuspend(j->dom)
           : j->int1 == SHUTDOWN ? virt.virDomainShutdown(j->dom)
                                 : virt.virDomainDestroy(j->dom);
  if (rc < 0) virt_fail(j, what[j->int1], j->arg2);
}

static int simple(lua_State *L, int op) {
  virt_job *j = domain_job(L, 2, run_simple);
  j->int1 = op;
  j->push = virt_push_true;
  virt_job_queue(L, j);
  return 0;
}

/* dom:resume(fn(true | nil, err)): its CPUs run (QMP cont) */
static int d_resume(lua_State *L) { return simple(L, RESUME); }
/* dom:suspend(fn(true | nil, err)): its CPUs stop (QMP stop) */
static int d_suspend(lua_State *L) { return simple(L, SUSPEND); }
/* dom:shutdown(fn(true | nil, err)): asks the guest to power off (ACPI) */
static int d_shutdown(lua_State *L) { return simple(L, SHUTDOWN); }
/* dom:destroy(fn(true | nil, err)): ends QEMU at once */
static int d_destroy(lua_State *L) { return simple(L, DESTROY); }

static void run_state(virt_job *j) {
  if (virt.virDomainGetState(j->dom, &j->int1, &j->int2, 0) < 0)
    virt_fail(j, "cannot read the state of domain", j->arg2);
}

static int push_state(lua_State *L, virt_job *j) {
  lua_pushstring(L, virt_state_name(j->int1));
  lua_pushstring(L, virt_reason_name(j->int1, j->int2));
  return 2;
}

/* dom:state(fn(state, reason | nil, err)): "running", "paused",
 * "shutoff"..., and why ("booted", "user", "destroyed"...) */
static int d_state(lua_State *L) {
  virt_job *j = domain_job(L, 2, run_state);
  j->push = push_state;
  virt_job_queue(L, j);
  return 0;
}

static void run_save(virt_job *j) {
  if (virt.virDomainSaveFlags(j->dom, j->arg1, NULL, 0) < 0) virt_fail(j, "cannot save domain", j->arg2);
}

/* dom:save(file, fn(true | nil, err)): saves it into file (a path on the
 * host) and ends it; conn:restore(file) starts it again. */
static int d_save(lua_State *L) {
  luaL_checkstring(L, 2);
  virt_job *j = domain_job(L, 3, run_save);
  j->arg1 = strdup(lua_tostring(L, 2));
  j->push = virt_push_true;
  virt_job_queue(L, j);
  return 0;
}

static void run_monitor(virt_job *j) {
  char *reply = NULL;
  if (virt.virDomainQemuMonitorCommand(j->dom, j->arg1, &reply, 0) < 0)
    virt_fail(j, "QMP command failed on domain", j->arg2);
  else
    j->text = reply;
}

static int push_text(lua_State *L, virt_job *j) {
  lua_pushstring(L, j->text ? j->text : "");
  lua_pushnil(L);
  return 2;
}

/* dom:monitor(json, fn(reply_json | nil, err)): a QMP command, passed
 * through; the reply is QEMU's whole answer ({"return": ...} or
 * {"error": ...}). */
static int d_monitor(lua_State *L) {
  luaL_checkstring(L, 2);
  virt_job *j = domain_job(L, 3, run_monitor);
  j->arg1 = strdup(lua_tostring(L, 2));
  j->push = push_text;
  virt_job_queue(L, j);
  return 0;
}

static void run_agent(virt_job *j) {
  j->text = virt.virDomainQemuAgentCommand(j->dom, j->arg1, j->int1, 0);
  if (j->text == NULL) virt_fail(j, "guest agent command failed on domain", j->arg2);
}

/* dom:agent(json, seconds, fn(reply_json | nil, err)): a command to the
 * guest agent (qemu-guest-agent), which libvirt syncs and passes through;
 * the reply is the agent's whole answer. An error when the agent has not
 * opened its port or did not answer within seconds. */
static int d_agent(lua_State *L) {
  luaL_checkstring(L, 2);
  lua_Integer seconds = luaL_checkinteger(L, 3);
  luaL_argcheck(L, seconds >= 1 && seconds <= 86400, 3, "seconds out of range");
  virt_job *j = domain_job(L, 4, run_agent);
  j->arg1 = strdup(lua_tostring(L, 2));
  j->int1 = (int)seconds;
  j->push = push_text;
  virt_job_queue(L, j);
  return 0;
}

static void run_xml(virt_job *j) {
  j->text = virt.virDomainGetXMLDesc(j->dom, 0);
  if (j->text == NULL) virt_fail(j, "cannot read the XML of domain", j->arg2);
}

/* dom:xml(fn(xml | nil, err)): its definition as libvirt has it now */
static int d_xml(lua_State *L) {
  virt_job *j = domain_job(L, 2, run_xml);
  j->push = push_text;
  virt_job_queue(L, j);
  return 0;
}

/* dom:name() -> its name */
static int d_name(lua_State *L) {
  const char *name = virt.virDomainGetName(virt_check_domain(L, 1));
  lua_pushstring(L, name ? name : "");
  return 1;
}

/* dom:free(): drops this reference to it (the domain itself goes on);
 * safe to call twice */
static int d_free(lua_State *L) {
  domain_ud *u = check_ud(L);
  if (u->dom != NULL) virt.virDomainFree(u->dom);
  u->dom = NULL;
  return 0;
}

static int d_tostring(lua_State *L) {
  domain_ud *u = check_ud(L);
  if (u->dom == NULL) {
    lua_pushstring(L, "libvirt domain (freed)");
  } else {
    const char *name = virt.virDomainGetName(u->dom);
    lua_pushfstring(L, "libvirt domain %s", name ? name : "?");
  }
  return 1;
}

void virt_open_domain(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"resume", d_resume}, {"suspend", d_suspend}, {"shutdown", d_shutdown},
      {"destroy", d_destroy}, {"state", d_state}, {"save", d_save}, {"monitor", d_monitor}, {"agent", d_agent},
      {"xml", d_xml}, {"console", virt_domain_console}, {"name", d_name}, {"free", d_free},
      {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", d_free}, {"__close", d_free}, {"__tostring", d_tostring}, {NULL, NULL}};
  vmlua_new_class(L, DOMAIN, methods, meta);
}
