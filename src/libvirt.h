/* libvirt.h: what the libvirt_*.c files share. libvirt is opened at first
 * use (libvirt.c), so these are pointers typed from libvirt's own headers. */
#ifndef VMLUA_LIBVIRT_H
#define VMLUA_LIBVIRT_H

#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <stdint.h>

#include "core.h"

#define VIRT_FN(name) __typeof__(name) *name
extern struct virt_api {
  VIRT_FN(virConnectOpen);
  VIRT_FN(virConnectClose);
  VIRT_FN(virConnectRef);
  VIRT_FN(virConnectRegisterCloseCallback);
  VIRT_FN(virConnectUnregisterCloseCallback);
  VIRT_FN(virConnectListAllDomains);
  VIRT_FN(virConnectDomainEventRegisterAny);
  VIRT_FN(virConnectDomainEventDeregisterAny);
  VIRT_FN(virNodeGetFreeMemory);
  VIRT_FN(virDomainCreateXML);
  VIRT_FN(virDomainLookupByName);
  VIRT_FN(virDomainRestoreFlags);
  VIRT_FN(virDomainSaveFlags);
  VIRT_FN(virDomainRef);
  VIRT_FN(virDomainFree);
  VIRT_FN(virDomainGetName);
  VIRT_FN(virDomainGetID);
  VIRT_FN(virDomainGetConnect);
  VIRT_FN(virDomainGetState);
  VIRT_FN(virDomainGetXMLDesc);
  VIRT_FN(virDomainResume);
  VIRT_FN(virDomainSuspend);
  VIRT_FN(virDomainShutdown);
  VIRT_FN(virDomainDestroy);
  VIRT_FN(virDomainOpenConsole);
  VIRT_FN(virStreamNew);
  VIRT_FN(virStreamFree);
  VIRT_FN(virStreamRecv);
  VIRT_FN(virStreamSend);
  VIRT_FN(virStreamAbort);
  VIRT_FN(virStreamEventAddCallback);
  VIRT_FN(virStreamEventUpdateCallback);
  VIRT_FN(virStreamEventRemoveCallback);
  VIRT_FN(virEventRegisterDefaultImpl);
  VIRT_FN(virEventRunDefaultImpl);
  VIRT_FN(virEventAddTimeout);
  VIRT_FN(virEventRemoveTimeout);
  VIRT_FN(virGetLastErrorMessage);
  VIRT_FN(virSetErrorFunc);
  VIRT_FN(virStreamFinish);
  VIRT_FN(virStreamSparseSendAll);
  VIRT_FN(virStoragePoolLookupByName);
  VIRT_FN(virStoragePoolCreateXML);
  VIRT_FN(virStoragePoolDestroy);
  VIRT_FN(virStoragePoolRef);
  VIRT_FN(virStoragePoolFree);
  VIRT_FN(virStoragePoolGetName);
  VIRT_FN(virStoragePoolGetConnect);
  VIRT_FN(virStoragePoolListAllVolumes);
  VIRT_FN(virStorageVolLookupByName);
  VIRT_FN(virStorageVolCreateXML);
  VIRT_FN(virStorageVolUpload);
  VIRT_FN(virStorageVolDelete);
  VIRT_FN(virStorageVolGetName);
  VIRT_FN(virStorageVolGetPath);
  VIRT_FN(virStorageVolGetInfo);
  VIRT_FN(virStorageVolFree);
  /* libvirt-qemu */
  VIRT_FN(virDomainQemuMonitorCommand);
  VIRT_FN(virDomainQemuAgentCommand);
  VIRT_FN(virConnectDomainQemuMonitorEventRegister);
  VIRT_FN(virConnectDomainQemuMonitorEventDeregister);
} virt;
#undef VIRT_FN

/* libvirt.c */
/* Opens libvirt, registers its event loop and starts the thread that runs
 * it (once); NULL when ready, else why not. On the loop's thread. */
const char *virt_open(lua_State *L);
/* "what: libvirt's last error on this thread", malloc'd (never NULL
 * unless out of memory). */
char *virt_error(const char *what);

/* A call to libvirt on libuv's thread pool. run() makes it on a worker;
 * push() pushes the results for the callback on the loop and returns how
 * many (it is not called when err is set: then the callback gets nil, err).
 * Whatever the job holds is released by release(), on the loop, after. */
typedef struct virt_job virt_job;
struct virt_job {
  uv_work_t req;
  int callback;                 /* registry ref, or LUA_NOREF */
  void (*run)(virt_job *j);
  int (*push)(lua_State *L, virt_job *j);
  void (*release)(lua_State *L, virt_job *j); /* L: NULL when the state is gone */
  virConnectPtr conn;           /* a reference of the job's, or NULL */
  virDomainPtr dom;             /* a reference of the job's, or NULL */
  char *arg1, *arg2;            /* owned */
  unsigned int flags;
  long long number;             /* results */
  int int1, int2;
  void *out;
  char *text;                   /* owned */
  char *err;                    /* owned; NULL on success */
};
/* Sets j->err to "what arg: libvirt's last error" (arg may be NULL). */
void virt_fail(virt_job *j, const char *what, const char *arg);
/* A zeroed job without a callback, or NULL when out of memory. */
virt_job *virt_job_alloc(void);
/* A zeroed job; the callback is the function at index cb (or none when
 * cb is 0). Raises on out of memory. */
virt_job *virt_job_new(lua_State *L, int cb);
/* Queues the job; on failure releases it and raises. */
void virt_job_queue(lua_State *L, virt_job *j);
/* Queues the job; a libuv error code when it cannot (the job is intact). */
int virt_job_start(virt_job *j);
/* Runs a job without a callback here and now, and frees it. */
void virt_job_inline(virt_job *j);
/* A job's push for a call that returns nothing: the callback gets true. */
int virt_push_true(lua_State *L, virt_job *j);

/* libvirt_conn.c: connections, and core.virt_connect */
void virt_open_conn(lua_State *L);
/* The open connection at idx (raises when it is not one, or closed). */
virConnectPtr virt_check_conn(lua_State *L, int idx);

/* libvirt_domain.c */
/* Pushes a new domain userdata for dom (which it takes over). */
void virt_push_domain(lua_State *L, virDomainPtr dom);
virDomainPtr virt_check_domain(lua_State *L, int idx);
const char *virt_state_name(int state);
const char *virt_reason_name(int state, int reason);
void virt_open_domain(lua_State *L);

/* libvirt_events.c: events from libvirt's thread to the loop. A target
 * (a connection, a console) lives on the loop's thread and has an id that
 * libvirt's thread names it by; events for a target that is gone are
 * dropped. */
typedef struct virt_event virt_event;
typedef struct virt_target virt_target;
struct virt_target {
  uint64_t id;
  int keeps_alive;              /* the loop's; see virt_target_keep */
  void (*deliver)(lua_State *L, virt_target *t, virt_event *e);
  virt_target *next;
};
enum { VIRT_LIFECYCLE, VIRT_MONITOR, VIRT_CLOSED, VIRT_DATA, VIRT_END };
struct virt_event {
  virt_event *next;
  uint64_t target;
  int kind;
  int a, b;                     /* lifecycle event and detail */
  double time;                  /* monitor event's timestamp */
  char *domain, *name;          /* owned */
  char *data;                   /* owned; len bytes (+ a NUL) */
  size_t len;
};
/* On the loop: a new id for a target. */
uint64_t virt_new_id(void);
/* On the loop: delivers the events for t->id to t until it is removed. */
void virt_target_add(virt_target *t);
void virt_target_remove(virt_target *t);
/* On the loop: whether t, while added, keeps the loop alive (something
 * waits for its events). */
void virt_target_keep(virt_target *t, int on);
/* From any thread: queues e (malloc'd, which it takes over) and wakes the
 * loop. */
void virt_post(virt_event *e);
/* From any thread: a new event, or NULL when out of memory. */
virt_event *virt_event_new(uint64_t target, int kind);
/* On the loop, once libvirt is open: the wakeup and the event thread. */
const char *virt_events_start(lua_State *L);
/* libvirt's callbacks for a connection, with the target's id as opaque. */
void virt_on_lifecycle(virConnectPtr c, virDomainPtr d, int event, int detail, void *opaque);
void virt_on_monitor(virConnectPtr c, virDomainPtr d, const char *event, long long seconds,
                     unsigned int micros, const char *details, void *opaque);
void virt_on_close(virConnectPtr c, int reason, void *opaque);
const char *virt_event_name(int event);
const char *virt_detail_name(int event, int detail);

/* libvirt_stream.c */
void virt_open_console(lua_State *L);
int virt_domain_console(lua_State *L);

/* libvirt_storage.c: pools, volumes, uploads; conn:pool and
 * conn:create_pool are connection methods */
int virt_conn_pool(lua_State *L);
int virt_conn_create_pool(lua_State *L);
void virt_open_storage(lua_State *L);

#endif
