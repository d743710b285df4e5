/* libvirt_events.c: libvirt's events, brought to the loop.
 *
 * libvirt's own event loop (virEventRegisterDefaultImpl) runs on a thread
 * of its own, started with the first connection. That is simpler than
 * giving libvirt the libuv loop (virEventRegisterImpl): libvirt calls those
 * hooks from any thread that makes API calls, so an adapter would queue
 * every change to a watch or timer and apply it on the loop anyway. Here
 * libvirt's callbacks, on that thread, copy what happened into an event,
 * queue it under a mutex and wake the loop (uv_async_send); the loop hands
 * each event to its target (a connection, a console) by id, and drops
 * those whose target is gone, so nothing on libvirt's thread ever points
 * at a Lua object. The thread ends when the Lua state closes. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libvirt.h"

#define SENTINEL "vmlua.virt_events"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static virt_event *queue, **queue_end = &queue; /* under lock */
static uv_async_t *wakeup;       /* set while the thread runs */
static pthread_t thread;
static atomic_int stopping;
static virt_target *targets;     /* the loop's */
static int alive;                /* targets that keep the loop alive */
static uint64_t last_id;

uint64_t virt_new_id(void) { return ++last_id; }

void virt_target_add(virt_target *t) {
  t->keeps_alive = 0;
  t->next = targets;
  targets = t;
}

void virt_target_keep(virt_target *t, int on) {
  on = on != 0;
  if (on == t->keeps_alive || wakeup == NULL) return;
  t->keeps_alive = on;
  alive += on ? 1 : -1;
  if (on && alive == 1) uv_ref((uv_handle_t *)wakeup);
  if (!on && alive == 0) uv_unref((uv_handle_t *)wakeup);
}

void virt_target_remove(virt_target *t) {
  for (virt_target **p = &targets; *p; p = &(*p)->next)
    if (*p == t) {
      virt_target_keep(t, 0);
      *p = t->next;
      return;
    }
}

virt_event *virt_event_new(uint64_t target, int kind) {
  virt_event *e = calloc(1, sizeof *e);
  if (e != NULL) {
    e->target = target;
    e->kind = kind;
  }
  return e;
}

static void event_free(virt_event *e) {
  free(e->domain);
  free(e->name);
  free(e->data);
  free(e);
}

void virt_post(virt_event *e) {
  pthread_mutex_lock(&lock);
  e->next = NULL;
  *queue_end = e;
  queue_end = &e->next;
  pthread_mutex_unlock(&lock);
  uv_async_send(wakeup);
}

/* Takes the whole queue. */
static virt_event *take_queue(void) {
  pthread_mutex_lock(&lock);
  virt_event *e = queue;
  queue = NULL;
  queue_end = &queue;
  pthread_mutex_unlock(&lock);
  return e;
}

static void on_wakeup(uv_async_t *uv) {
  (void)uv;
  lua_State *L = vmlua_loop_state();
  virt_event *e = take_queue();
  while (e != NULL) {
    virt_event *next = e->next;
    virt_target *t = targets;
    while (t != NULL && t->id != e->target) t = t->next;
    if (t != NULL && L != NULL) t->deliver(L, t, e); /* may remove targets */
    event_free(e);
    e = next;
  }
}

static void *run_events(void *arg) {
  (void)arg;
  while (!atomic_load(&stopping))
    if (virt.virEventRunDefaultImpl() != 0) break;
  return NULL;
}

static void nothing(int timer, void *opaque) {
  (void)timer;
  (void)opaque;
}

static void free_wakeup(uv_handle_t *uv) { free(uv); }

/* The Lua state closes: the connections and consoles have closed already
 * (their finalizers run first), so the thread, whose code may be unloaded
 * with the module next, ends, and the queue goes. */
static int stop_events(lua_State *L) {
  (void)L;
  if (wakeup == NULL) return 0;
  atomic_store(&stopping, 1);
  int timer = virt.virEventAddTimeout(0, nothing, NULL, NULL); /* wakes the thread */
  pthread_join(thread, NULL);
  if (timer >= 0) virt.virEventRemoveTimeout(timer);
  atomic_store(&stopping, 0);
  uv_close((uv_handle_t *)wakeup, free_wakeup);
  wakeup = NULL;
  targets = NULL;
  alive = 0;
  for (virt_event *e = take_queue(), *next; e != NULL; e = next) {
    next = e->next;
    event_free(e);
  }
  return 0;
}

const char *virt_events_start(lua_State *L) {
  static char problem[128];
  if (wakeup != NULL) return NULL;
  uv_async_t *uv = malloc(sizeof *uv);
  if (uv == NULL) return "out of memory";
  uv_async_init(vmlua_loop(), uv, on_wakeup);
  uv_unref((uv_handle_t *)uv);
  wakeup = uv;
  int err = pthread_create(&thread, NULL, run_events, NULL);
  if (err != 0) {
    wakeup = NULL;
    uv_close((uv_handle_t *)uv, free_wakeup);
    snprintf(problem, sizeof problem, "cannot start libvirt's event thread: %s", strerror(err));
    return problem;
  }
  /* Its finalizer stops the thread when the state closes. */
  lua_newuserdatauv(L, 1, 0);
  if (luaL_newmetatable(L, SENTINEL)) {
    lua_pushcfunction(L, stop_events);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, SENTINEL);
  return NULL;
}

/* On libvirt's thread: what happened to a domain of the connection whose
 * target id is opaque. */
void virt_on_lifecycle(virConnectPtr c, virDomainPtr d, int event, int detail, void *opaque) {
  (void)c;
  virt_event *e = virt_event_new((uint64_t)(uintptr_t)opaque, VIRT_LIFECYCLE);
  if (e == NULL) return;
  const char *name = virt.virDomainGetName(d);
  e->a = event;
  e->b = detail;
  e->domain = strdup(name ? name : "");
  virt_post(e);
}

/* On libvirt's thread: a QMP event of a domain of the connection. */
void virt_on_monitor(virConnectPtr c, virDomainPtr d, const char *event, long long seconds,
                     unsigned int micros, const char *details, void *opaque) {
  (void)c;
  virt_event *e = virt_event_new((uint64_t)(uintptr_t)opaque, VIRT_MONITOR);
  if (e == NULL) return;
  const char *name = virt.virDomainGetName(d);
  e->domain = strdup(name ? name : "");
  e->name = strdup(event ? event : "");
  if (details != NULL) {
    e->data = strdup(details);
    e->len = e->data ? strlen(e->data) : 0;
  }
  e->time = (double)seconds + micros / 1e6;
  virt_post(e);
}

/* On libvirt's thread: the connection broke (the daemon went away,
 * keepalive timed out). */
void virt_on_close(virConnectPtr c, int reason, void *opaque) {
  (void)c;
  virt_event *e = virt_event_new((uint64_t)(uintptr_t)opaque, VIRT_CLOSED);
  if (e == NULL) return;
  e->a = reason;
  virt_post(e);
}

static const char *const events[] = {"defined", "undefined", "started", "suspended", "resumed",
                                     "stopped", "shutdown", "pmsuspended", "crashed"};

static const char *const details[][9] = {
    {"added", "updated", "renamed", "from_snapshot"},
    {"removed", "renamed"},
    {"booted", "migrated", "restored", "from_snapshot", "wakeup"},
    {"paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot", "api_error",
     "postcopy", "postcopy_failed"},
    {"unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed"},
    {"shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot"},
    {"finished", "guest", "host"},
    {"memory", "disk"},
    {"panicked", "crashloaded"},
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

const char *virt_event_name(int event) {
  return event >= 0 && event < COUNT(events) ? events[event] : NULL;
}

const char *virt_detail_name(int event, int detail) {
  if (event < 0 || event >= COUNT(details) || detail < 0 || detail >= COUNT(details[0])) return NULL;
  return details[event][detail];
}
