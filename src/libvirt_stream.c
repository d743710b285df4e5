/* libvirt_stream.c: a domain's console (its pty serial port) as a
 * non-blocking virStream.
 *
 * The stream's callback runs on libvirt's event thread: it reads what
 * came, posts it to the loop as events (libvirt_events.c), and sends what
 * console:write queued. What both threads touch is in a `shared` block
 * with a mutex and a count of references (the userdata's, a job's, the
 * table's, a running callback's). libvirt's callback finds the block by
 * id in a table rather than by pointer: libvirt 9.0's remote driver never
 * calls the free function given to virStreamEventAddCallback, and a
 * callback may still run while another thread removes it. Opening and
 * closing are RPCs: they run on workers. libvirt 9.0 gives one console
 * session per domain at a time. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "libvirt.h"

#define CONSOLE "vmlua.virt_console"
#define EVENTS (VIR_STREAM_EVENT_READABLE | VIR_STREAM_EVENT_ERROR | VIR_STREAM_EVENT_HANGUP)

typedef struct {
  pthread_mutex_t lock;
  int refs;          /* under lock */
  uint64_t id;       /* the target's */
  virStreamPtr st;   /* freed by the teardown job */
  char *out;         /* to send, under lock */
  size_t len, cap;
  int ended;         /* libvirt's thread saw the end; under lock */
  /* the loop's */
  int opening;       /* the open job has not come back */
  int closed;        /* the teardown job is (or will be) queued */
  int watching;      /* libvirt's callback is registered */
  void *next;        /* in the table, under table_lock */
} shared;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static shared *table; /* the consoles libvirt's callback may run for */

typedef struct {
  virt_target t;     /* first */
  shared *sh;        /* NULL once released (__gc) */
  int on_data, on_end, anchor; /* registry refs */
} console_ud;

static shared *sh_ref(shared *sh) {
  pthread_mutex_lock(&sh->lock);
  sh->refs++;
  pthread_mutex_unlock(&sh->lock);
  return sh;
}

static void sh_unref(shared *sh) {
  pthread_mutex_lock(&sh->lock);
  int left = --sh->refs;
  pthread_mutex_unlock(&sh->lock);
  if (left > 0) return;
  pthread_mutex_destroy(&sh->lock);
  free(sh->out);
  free(sh);
}

/* The console of id with a reference for the caller, or NULL. */
static shared *find(uint64_t id) {
  pthread_mutex_lock(&table_lock);
  shared *sh = table;
  while (sh != NULL && sh->id != id) sh = sh->next;
  if (sh != NULL) sh_ref(sh);
  pthread_mutex_unlock(&table_lock);
  return sh;
}

static void table_add(shared *sh) {
  pthread_mutex_lock(&table_lock);
  sh->next = table;
  table = sh_ref(sh);
  pthread_mutex_unlock(&table_lock);
}

static void table_remove(shared *sh) {
  int found = 0;
  pthread_mutex_lock(&table_lock);
  for (shared **p = &table; *p; p = (shared **)&(*p)->next)
    if (*p == sh) {
      *p = sh->next;
      found = 1;
      break;
    }
  pthread_mutex_unlock(&table_lock);
  if (found) sh_unref(sh);
}

static console_ud *check_console(lua_State *L) { return luaL_checkudata(L, 1, CONSOLE); }

/* On libvirt's thread: the end, once; err is taken over. */
static void finish(virStreamPtr st, shared *sh, char *err) {
  pthread_mutex_lock(&sh->lock);
  int first = !sh->ended;
  sh->ended = 1;
  if (first) virt.virStreamEventUpdateCallback(st, 0);
  pthread_mutex_unlock(&sh->lock);
  virt_event *e = first ? virt_event_new(sh->id, VIRT_END) : NULL;
  if (e == NULL) {
    free(err);
    return;
  }
  e->data = err;
  e->len = err ? strlen(err) : 0;
  virt_post(e);
}

/* On libvirt's thread: the stream can be read or written, or ended. */
static void on_events(virStreamPtr st, int events, shared *sh) {
  if (events & VIR_STREAM_EVENT_READABLE) {
    char buf[16384];
    for (;;) {
      int n = virt.virStreamRecv(st, buf, sizeof buf);
      if (n == -2) break;
      if (n <= 0) {
        finish(st, sh, n == 0 ? NULL : virt_error("cannot read the console"));
        return;
      }
      virt_event *e = virt_event_new(sh->id, VIRT_DATA);
      if (e == NULL || (e->data = malloc((size_t)n)) == NULL) {
        free(e);
        break;
      }
      memcpy(e->data, buf, (size_t)n);
      e->len = (size_t)n;
      virt_post(e);
    }
  }
  if (events & VIR_STREAM_EVENT_WRITABLE) {
    char *err = NULL;
    pthread_mutex_lock(&sh->lock);
    while (sh->len > 0 && !sh->ended) {
      int n = virt.virStreamSend(st, sh->out, sh->len);
      if (n == -2) break;
      if (n < 0) {
        err = virt_error("cannot write to the console");
        break;
      }
      memmove(sh->out, sh->out + n, sh->len - (size_t)n);
      sh->len -= (size_t)n;
    }
    if (sh->len == 0 && !sh->ended) virt.virStreamEventUpdateCallback(st, EVENTS);
    pthread_mutex_unlock(&sh->lock);
    if (err != NULL) {
      finish(st, sh, err);
      return;
    }
  }
  if (events & (VIR_STREAM_EVENT_ERROR | VIR_STREAM_EVENT_HANGUP))
    finish(st, sh, events & VIR_STREAM_EVENT_ERROR ? strdup("the console stream failed") : NULL);
}

static void on_stream(virStreamPtr st, int events, void *opaque) {
  shared *sh = find((uint64_t)(uintptr_t)opaque);
  if (sh == NULL) return; /* torn down meanwhile */
  on_events(st, events, sh);
  sh_unref(sh);
}

/* On a worker: the stream goes (its job holds a reference to sh). */
static void run_teardown(virt_job *j) {
  shared *sh = j->out;
  if (sh->st != NULL) {
    if (sh->watching) virt.virStreamEventRemoveCallback(sh->st);
    table_remove(sh);
    virt.virStreamAbort(sh->st);
    virt.virStreamFree(sh->st);
    sh->st = NULL;
  }
}

static void release_sh(lua_State *L, virt_job *j) {
  (void)L;
  if (j->out != NULL) sh_unref(j->out);
}

/* On the loop: the stream goes, on a worker if it can. */
static void teardown(shared *sh) {
  virt_job *j = virt_job_alloc();
  if (j == NULL) return; /* out of memory: the stream stays */
  j->out = sh_ref(sh);
  j->run = run_teardown;
  j->release = release_sh;
  if (virt_job_start(j) != 0) virt_job_inline(j);
}

/* On the loop: no more events or callbacks; the stream goes once it is
 * open. Safe to call twice. */
static void close_console(lua_State *L, console_ud *u) {
  shared *sh = u->sh;
  if (sh == NULL || sh->closed) return;
  sh->closed = 1;
  virt_target_remove(&u->t);
  luaL_unref(L, LUA_REGISTRYINDEX, u->on_data);
  luaL_unref(L, LUA_REGISTRYINDEX, u->on_end);
  luaL_unref(L, LUA_REGISTRYINDEX, u->anchor);
  u->on_data = u->on_end = u->anchor = LUA_NOREF;
  if (!sh->opening) teardown(sh);
}

static void deliver(lua_State *L, virt_target *t, virt_event *e) {
  console_ud *u = (console_ud *)t;
  if (e->kind == VIRT_DATA) {
    if (u->on_data == LUA_NOREF) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, u->on_data);
    lua_pushlstring(L, e->data, e->len);
    vmlua_protected_call(L, 1);
    return;
  }
  int ref = u->on_end;
  u->on_end = LUA_NOREF;
  if (ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
  }
  if (e->data) lua_pushlstring(L, e->data, e->len); else lua_pushnil(L);
  close_console(L, u); /* the arguments are on the stack already */
  if (ref != LUA_NOREF) vmlua_protected_call(L, 1); else lua_pop(L, 1);
}

/* On a worker: the stream, the console session and libvirt's callback. */
static void run_open(virt_job *j) {
  shared *sh = j->out;
  sh->st = virt.virStreamNew(virt.virDomainGetConnect(j->dom), VIR_STREAM_NONBLOCK);
  if (sh->st == NULL) {
    virt_fail(j, "cannot open the console of domain", j->arg2);
    return;
  }
  if (virt.virDomainOpenConsole(j->dom, NULL, sh->st, j->flags) < 0) {
    virt_fail(j, "cannot open the console of domain", j->arg2);
    return;
  }
  table_add(sh);
  if (virt.virStreamEventAddCallback(sh->st, EVENTS, on_stream, (void *)(uintptr_t)sh->id, NULL) < 0) {
    table_remove(sh);
    virt_fail(j, "cannot watch the console of domain", j->arg2);
    return;
  }
  sh->watching = 1;
}

/* On the loop: the console is open, or not; fn has its arguments. */
static void opened(lua_State *L, virt_job *j) {
  shared *sh = j->out;
  console_ud *u = NULL;
  if (j->int1 != LUA_NOREF && L != NULL) { /* it failed: push_open did not run */
    lua_rawgeti(L, LUA_REGISTRYINDEX, j->int1);
    u = lua_touserdata(L, -1);
    lua_pop(L, 1); /* anchored while it is not closed */
    luaL_unref(L, LUA_REGISTRYINDEX, j->int1);
  }
  sh->opening = 0;
  if (sh->closed) {
    teardown(sh); /* closed while it opened */
  } else if (j->err != NULL) {
    if (u != NULL) close_console(L, u); else teardown(sh);
  } else {
    pthread_mutex_lock(&sh->lock); /* what was written meanwhile */
    if (sh->len > 0) virt.virStreamEventUpdateCallback(sh->st, EVENTS | VIR_STREAM_EVENT_WRITABLE);
    pthread_mutex_unlock(&sh->lock);
  }
  sh_unref(sh);
}

static int push_open(lua_State *L, virt_job *j) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, j->int1);
  luaL_unref(L, LUA_REGISTRYINDEX, j->int1);
  j->int1 = LUA_NOREF;
  console_ud *u = lua_touserdata(L, -1);
  if (u->sh->closed) {
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_pushstring(L, "the console was closed as it opened");
  } else {
    lua_pushnil(L);
  }
  return 2;
}

/* dom:console({on_data=fn(bytes), on_end=fn(err | nil), force=}, fn(console | nil, err))
 *   -> console
 * Opens the domain's console. on_data gets what the guest writes (maybe
 * before fn is called), on_end once when the stream ends (the domain
 * stopped: nil) or fails; the console closes then. force takes the
 * session over from another client. Created paused, opened, then resumed,
 * a domain loses none of its boot output. */
int virt_domain_console(lua_State *L) {
  virDomainPtr dom = virt_check_domain(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_getfield(L, 2, "on_data");
  lua_getfield(L, 2, "on_end");
  lua_getfield(L, 2, "force");
  int force = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!lua_isnil(L, -2)) luaL_checktype(L, -2, LUA_TFUNCTION);
  if (!lua_isnil(L, -1)) luaL_checktype(L, -1, LUA_TFUNCTION);
  shared *sh = calloc(1, sizeof *sh);
  if (sh == NULL) return luaL_error(L, "out of memory");
  pthread_mutex_init(&sh->lock, NULL);
  sh->refs = 1; /* the userdata's */
  sh->id = virt_new_id();
  sh->opening = 1;
  console_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->sh = sh;
  u->t.id = sh->id;
  u->t.deliver = deliver;
  u->on_data = u->on_end = u->anchor = LUA_NOREF;
  luaL_setmetatable(L, CONSOLE);
  int self = lua_gettop(L);
  lua_pushvalue(L, self - 2);
  u->on_data = lua_isnil(L, -1) ? (lua_pop(L, 1), LUA_NOREF) : luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, self - 1);
  u->on_end = lua_isnil(L, -1) ? (lua_pop(L, 1), LUA_NOREF) : luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, self);
  u->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  virt_target_add(&u->t);
  virt_target_keep(&u->t, 1);

  virt_job *j = virt_job_new(L, 3);
  virt.virDomainRef(dom);
  j->dom = dom;
  const char *name = virt.virDomainGetName(dom);
  j->arg2 = strdup(name ? name : "?");
  j->flags = force ? VIR_DOMAIN_CONSOLE_FORCE : 0;
  j->out = sh_ref(sh);
  lua_pushvalue(L, self);
  j->int1 = luaL_ref(L, LUA_REGISTRYINDEX); /* the console, for fn */
  j->run = run_open;
  j->push = push_open;
  j->release = opened;
  virt_job_queue(L, j);
  lua_settop(L, self);
  return 1;
}

/* console:write(data) -> true | nil, err: queues data for the guest */
static int k_write(lua_State *L) {
  console_ud *u = check_console(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  shared *sh = u->sh;
  if (sh == NULL || sh->closed) {
    lua_pushnil(L);
    lua_pushliteral(L, "the console is closed");
    return 2;
  }
  pthread_mutex_lock(&sh->lock);
  if (sh->len + len > sh->cap) {
    size_t cap = (sh->len + len) * 2;
    char *out = realloc(sh->out, cap);
    if (out == NULL) {
      pthread_mutex_unlock(&sh->lock);
      return luaL_error(L, "out of memory");
    }
    sh->out = out;
    sh->cap = cap;
  }
  memcpy(sh->out + sh->len, data, len);
  sh->len += len;
  if (!sh->opening && sh->watching && !sh->ended)
    virt.virStreamEventUpdateCallback(sh->st, EVENTS | VIR_STREAM_EVENT_WRITABLE);
  pthread_mutex_unlock(&sh->lock);
  lua_pushboolean(L, 1);
  return 1;
}

/* console:close(): ends the session; safe to call twice */
static int k_close(lua_State *L) {
  close_console(L, check_console(L));
  return 0;
}

/* The state closes (an open console is anchored): it goes here and now. */
static int k_gc(lua_State *L) {
  console_ud *u = check_console(L);
  shared *sh = u->sh;
  if (sh == NULL) return 0;
  if (!sh->closed) {
    int opening = sh->opening;
    sh->opening = 1; /* no teardown queued by close_console */
    close_console(L, u);
    sh->opening = opening;
    virt_job *j = opening ? NULL : virt_job_alloc();
    if (j != NULL) {
      j->out = sh_ref(sh);
      j->run = run_teardown;
      j->release = release_sh;
      virt_job_inline(j);
    }
  }
  u->sh = NULL;
  sh_unref(sh);
  return 0;
}

static int k_tostring(lua_State *L) {
  console_ud *u = check_console(L);
  shared *sh = u->sh;
  lua_pushstring(L, sh == NULL || sh->closed ? "libvirt console (closed)"
                    : sh->opening             ? "libvirt console (opening)"
                                              : "libvirt console (open)");
  return 1;
}

void virt_open_console(lua_State *L) {
  static const luaL_Reg methods[] = {{"write", k_write}, {"close", k_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", k_gc}, {"__close", k_close}, {"__tostring", k_tostring}, {NULL, NULL}};
  vmlua_new_class(L, CONSOLE, methods, meta);
}
