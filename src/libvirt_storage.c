/* libvirt_storage.c: a storage pool on a libvirt host, its volumes, and
 * uploads of local files into it (conn:pool, conn:create_pool, pool:*).
 *
 * A path in a domain's XML is a path on the host that runs it: for a
 * remote host, the files a domain reads are first uploaded into a pool.
 * An upload creates the volume (a plain file of the local file's size),
 * then streams the file into it through virStorageVolUpload on a blocking
 * virStream, on a worker of libuv's pool. The stream is sparse: holes of
 * the local file (SEEK_HOLE) travel as their length, not as zeros. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "libvirt.h"

#define POOL "vmlua.virt_pool"

typedef struct {
  virStoragePoolPtr pool; /* NULL once freed */
} pool_ud;

/* What a pool job holds beside the virt_job: the pool (a reference of its
 * own, dropped on the worker: it may hold the connection's last one),
 * and the results. */
typedef struct {
  virStoragePoolPtr pool;
  char *local;            /* upload: the local file */
  char *path;             /* the volume's path on the host */
  long long bytes, data;  /* upload: the file's size, the bytes sent */
  double seconds;
  int count;              /* volumes: how many */
  char **names, **paths;
  long long *capacity, *allocation;
} pool_work;

static pool_ud *check_ud(lua_State *L) { return luaL_checkudata(L, 1, POOL); }

static virStoragePoolPtr check_pool(lua_State *L) {
  pool_ud *u = check_ud(L);
  if (u->pool == NULL) luaL_error(L, "the libvirt storage pool is freed");
  return u->pool;
}

static void push_pool(lua_State *L, virStoragePoolPtr p) {
  pool_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->pool = p;
  luaL_setmetatable(L, POOL);
}

static char *dup_or_fail(lua_State *L, const char *s) {
  char *c = strdup(s);
  if (c == NULL) luaL_error(L, "out of memory");
  return c;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void release_work(lua_State *L, virt_job *j) {
  (void)L;
  pool_work *w = j->out;
  if (w == NULL) return;
  if (w->pool != NULL) virt.virStoragePoolFree(w->pool);
  for (int i = 0; i < w->count; i++) {
    if (w->names) free(w->names[i]);
    if (w->paths) free(w->paths[i]);
  }
  free(w->names);
  free(w->paths);
  free(w->capacity);
  free(w->allocation);
  free(w->local);
  free(w->path);
  free(w);
}

/* Frees the job's pool on the worker, once its work is done. */
static void drop_pool(virt_job *j) {
  pool_work *w = j->out;
  if (w->pool != NULL) virt.virStoragePoolFree(w->pool);
  w->pool = NULL;
}

/* A job on the pool at index 1, which it holds a reference to; arg2 is the
 * pool's name for messages. */
static virt_job *pool_job(lua_State *L, int cb, void (*run)(virt_job *)) {
  virStoragePoolPtr p = check_pool(L);
  virt_job *j = virt_job_new(L, cb);
  j->release = release_work;
  pool_work *w = calloc(1, sizeof *w);
  const char *name = virt.virStoragePoolGetName(p);
  j->arg2 = strdup(name ? name : "?");
  if (w == NULL || j->arg2 == NULL) {
    free(w);
    j->err = strdup("out of memory"); /* so that run is not called */
    virt_job_inline(j);
    luaL_error(L, "out of memory");
  }
  virt.virStoragePoolRef(p);
  w->pool = p;
  j->out = w;
  j->run = run;
  return j;
}

/* Volume names become file names on the host and go into XML unescaped:
 * letters, digits and . _ - only, not starting with a dot. */
static const char *check_name(lua_State *L, int idx) {
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  if (len == 0 || len > 200 || s[0] == '.' || strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != len)
    luaL_error(L, "bad volume name '%s' (letters, digits, '.', '_' and '-'; not starting with '.')", s);
  return s;
}

/* conn:pool(name, fn(pool | nil, err)) and conn:create_pool(xml, ...) */
static void run_lookup(virt_job *j) {
  j->out = virt.virStoragePoolLookupByName(j->conn, j->arg1);
  if (j->out == NULL) virt_fail(j, "cannot find storage pool", j->arg1);
}

static void run_create_pool(virt_job *j) {
  j->out = virt.virStoragePoolCreateXML(j->conn, j->arg1, VIR_STORAGE_POOL_CREATE_WITH_BUILD);
  if (j->out == NULL) virt_fail(j, "cannot create the storage pool", NULL);
}

static int push_new_pool(lua_State *L, virt_job *j) {
  push_pool(L, j->out);
  j->out = NULL;
  lua_pushnil(L);
  return 2;
}

static void release_new_pool(lua_State *L, virt_job *j) {
  (void)L;
  if (j->out != NULL) virt.virStoragePoolFree(j->out);
}

static int conn_pool_job(lua_State *L, void (*run)(virt_job *)) {
  virConnectPtr c = virt_check_conn(L, 1);
  const char *arg = luaL_checkstring(L, 2);
  virt_job *j = virt_job_new(L, 3);
  virt.virConnectRef(c);
  j->conn = c;
  j->run = run;
  j->push = push_new_pool;
  j->release = release_new_pool;
  j->arg1 = strdup(arg);
  if (j->arg1 == NULL) j->err = strdup("out of memory");
  virt_job_queue(L, j);
  return 0;
}

/* conn:pool(name, fn(pool | nil, err)): the storage pool called name */
int virt_conn_pool(lua_State *L) { return conn_pool_job(L, run_lookup); }

/* conn:create_pool(xml, fn(pool | nil, err)): starts a transient pool
 * (building it first: a dir pool's directory is made); it is gone once
 * destroyed or when the daemon stops, its volumes' files stay. */
int virt_conn_create_pool(lua_State *L) { return conn_pool_job(L, run_create_pool); }

/* pool:volumes(fn(list | nil, err)) */
static void run_volumes(virt_job *j) {
  pool_work *w = j->out;
  virStorageVolPtr *vols = NULL;
  int n = virt.virStoragePoolListAllVolumes(w->pool, &vols, 0);
  if (n < 0) {
    virt_fail(j, "cannot list the volumes of pool", j->arg2);
    drop_pool(j);
    return;
  }
  w->names = calloc((size_t)n + 1, sizeof *w->names);
  w->paths = calloc((size_t)n + 1, sizeof *w->paths);
  w->capacity = calloc((size_t)n + 1, sizeof *w->capacity);
  w->allocation = calloc((size_t)n + 1, sizeof *w->allocation);
  int ok = w->names && w->paths && w->capacity && w->allocation;
  for (int i = 0; i < n; i++) {
    if (ok) {
      const char *name = virt.virStorageVolGetName(vols[i]);
      virStorageVolInfo info;
      w->names[w->count] = strdup(name ? name : "");
      /* a volume deleted meanwhile has no path: it is left out */
      w->paths[w->count] = virt.virStorageVolGetPath(vols[i]);
      if (virt.virStorageVolGetInfo(vols[i], &info) == 0) {
        w->capacity[w->count] = (long long)info.capacity;
        w->allocation[w->count] = (long long)info.allocation;
      }
      if (w->names[w->count] != NULL && w->paths[w->count] != NULL) {
        w->count++;
      } else {
        free(w->names[w->count]);
        free(w->paths[w->count]);
        w->names[w->count] = w->paths[w->count] = NULL;
      }
    }
    virt.virStorageVolFree(vols[i]);
  }
  free(vols);
  if (!ok) j->err = strdup("out of memory");
  drop_pool(j);
}

static int push_volumes(lua_State *L, virt_job *j) {
  pool_work *w = j->out;
  lua_createtable(L, w->count, 0);
  for (int i = 0; i < w->count; i++) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, w->names[i]);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, w->paths[i]);
    lua_setfield(L, -2, "path");
    lua_pushinteger(L, w->capacity[i]);
    lua_setfield(L, -2, "capacity");
    lua_pushinteger(L, w->allocation[i]);
    lua_setfield(L, -2, "allocation");
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushnil(L);
  return 2;
}

/* pool:volumes(fn(list | nil, err)): the pool's volumes, as
 * { name=, path= (on the host), capacity=, allocation= (bytes) } */
static int p_volumes(lua_State *L) {
  virt_job *j = pool_job(L, 2, run_volumes);
  j->push = push_volumes;
  virt_job_queue(L, j);
  return 0;
}

/* The sparse stream's handlers: the local file, read from where it is. */
static int read_data(virStreamPtr st, char *buf, size_t n, void *opaque) {
  (void)st;
  ssize_t got;
  do got = read(*(int *)opaque, buf, n); while (got < 0 && errno == EINTR);
  return (int)got;
}

/* Whether the file at its offset is in data or a hole, and for how long
 * (libvirt's own virFileInData, with SEEK_DATA/SEEK_HOLE). */
static int in_data(virStreamPtr st, int *data, long long *length, void *opaque) {
  (void)st;
  int fd = *(int *)opaque;
  off_t cur = lseek(fd, 0, SEEK_CUR), next, end;
  if (cur < 0) return -1;
  if ((next = lseek(fd, cur, SEEK_DATA)) < 0) {
    if (errno != ENXIO && errno != EINVAL) return -1;
    if ((end = lseek(fd, 0, SEEK_END)) < 0) return -1;
    *data = 0; /* a hole up to the end (or at the end) */
    *length = end - cur;
  } else if (next > cur) {
    *data = 0;
    *length = next - cur;
  } else {
    if ((end = lseek(fd, cur, SEEK_HOLE)) < 0) return -1;
    *data = 1;
    *length = end - cur;
  }
  return lseek(fd, cur, SEEK_SET) < 0 ? -1 : 0;
}

static int skip(virStreamPtr st, long long length, void *opaque) {
  (void)st;
  return lseek(*(int *)opaque, (off_t)length, SEEK_CUR) < 0 ? -1 : 0;
}

static void fail_errno(virt_job *j, const char *what, const char *path) {
  size_t n = strlen(what) + strlen(path) + 64;
  j->err = malloc(n);
  if (j->err != NULL) snprintf(j->err, n, "%s %s: %s", what, path, strerror(errno));
}

/* Creates volume arg1 of the file's size, streams the file into it; on
 * failure removes the volume again. */
static void upload(virt_job *j, int fd, struct stat *st) {
  pool_work *w = j->out;
  char xml[512];
  snprintf(xml, sizeof xml,
           "<volume><name>%s</name><capacity unit='bytes'>%lld</capacity><allocation>0</allocation>"
           "<target><format type='raw'/><permissions><mode>0644</mode></permissions></target></volume>",
           j->arg1, (long long)st->st_size);
  virStorageVolPtr vol = virt.virStorageVolCreateXML(w->pool, xml, 0);
  if (vol == NULL) {
    virt_fail(j, "cannot create volume", j->arg1);
    return;
  }
  virStreamPtr s = virt.virStreamNew(virt.virStoragePoolGetConnect(w->pool), 0);
  int ok = s != NULL &&
           virt.virStorageVolUpload(vol, s, 0, (unsigned long long)st->st_size, VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM) == 0;
  if (ok && virt.virStreamSparseSendAll(s, read_data, in_data, skip, &fd) < 0) {
    ok = 0; /* libvirt has aborted the stream */
  } else if (ok && virt.virStreamFinish(s) < 0) {
    ok = 0;
  } else if (!ok && s != NULL) {
    virt.virStreamAbort(s);
  }
  if (!ok) virt_fail(j, "cannot upload", w->local);
  if (s != NULL) virt.virStreamFree(s);
  if (ok) {
    w->path = virt.virStorageVolGetPath(vol);
    if (w->path == NULL) virt_fail(j, "cannot read the path of volume", j->arg1);
  } else {
    virt.virStorageVolDelete(vol, 0);
  }
  virt.virStorageVolFree(vol);
}

static void run_upload(virt_job *j) {
  pool_work *w = j->out;
  double t0 = now();
  int fd = open(w->local, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    fail_errno(j, "cannot read", w->local);
  } else if (!S_ISREG(st.st_mode)) {
    errno = EINVAL;
    fail_errno(j, "not a regular file:", w->local);
  } else {
    w->bytes = (long long)st.st_size;
    upload(j, fd, &st);
    w->data = (long long)st.st_blocks * 512;
    if (w->data > w->bytes) w->data = w->bytes;
  }
  if (fd >= 0) close(fd);
  w->seconds = now() - t0;
  drop_pool(j);
}

static int push_upload(lua_State *L, virt_job *j) {
  pool_work *w = j->out;
  lua_pushstring(L, w->path);
  lua_pushnil(L);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, w->bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushinteger(L, w->data);
  lua_setfield(L, -2, "data");
  lua_pushnumber(L, w->seconds);
  lua_setfield(L, -2, "seconds");
  return 3;
}

/* pool:upload(file, name, fn(path | nil, err, stats)): makes volume name
 * (which must not exist) from the local file; path is its path on the
 * host, stats { bytes= (the file's size), data= (bytes allocated, about
 * what was sent), seconds= }. The volume is a plain file with the local
 * file's bytes, whatever their format; a failed upload leaves no volume. */
static int p_upload(lua_State *L) {
  const char *local = luaL_checkstring(L, 2);
  const char *name = check_name(L, 3);
  virt_job *j = pool_job(L, 4, run_upload);
  pool_work *w = j->out;
  j->push = push_upload;
  j->arg1 = strdup(name);
  w->local = strdup(local);
  if (j->arg1 == NULL || w->local == NULL) j->err = strdup("out of memory");
  virt_job_queue(L, j);
  return 0;
}

static void run_delete(virt_job *j) {
  pool_work *w = j->out;
  virStorageVolPtr vol = virt.virStorageVolLookupByName(w->pool, j->arg1);
  if (vol == NULL) {
    virt_fail(j, "cannot find volume", j->arg1);
  } else {
    if (virt.virStorageVolDelete(vol, 0) < 0) virt_fail(j, "cannot delete volume", j->arg1);
    virt.virStorageVolFree(vol);
  }
  drop_pool(j);
}

/* pool:delete(name, fn(true | nil, err)): removes the volume and its file */
static int p_delete(lua_State *L) {
  const char *name = check_name(L, 2);
  virt_job *j = pool_job(L, 3, run_delete);
  j->push = virt_push_true;
  j->arg1 = dup_or_fail(L, name);
  virt_job_queue(L, j);
  return 0;
}

static void run_create_volume(virt_job *j) {
  pool_work *w = j->out;
  virStorageVolPtr vol = virt.virStorageVolCreateXML(w->pool, j->arg1, 0);
  if (vol == NULL) {
    virt_fail(j, "cannot create a volume in pool", j->arg2);
  } else {
    w->path = virt.virStorageVolGetPath(vol);
    if (w->path == NULL) virt_fail(j, "cannot read the path of a new volume in pool", j->arg2);
    virt.virStorageVolFree(vol);
  }
  drop_pool(j);
}

static int push_path(lua_State *L, virt_job *j) {
  lua_pushstring(L, ((pool_work *)j->out)->path);
  lua_pushnil(L);
  return 2;
}

/* pool:create_volume(xml, fn(path | nil, err)): a volume from libvirt's
 * volume XML (a blank disk, a qcow2 overlay with a backingStore...); its
 * path on the host */
static int p_create_volume(lua_State *L) {
  const char *xml = luaL_checkstring(L, 2);
  virt_job *j = pool_job(L, 3, run_create_volume);
  j->push = push_path;
  j->arg1 = dup_or_fail(L, xml);
  virt_job_queue(L, j);
  return 0;
}

static void run_destroy(virt_job *j) {
  pool_work *w = j->out;
  if (virt.virStoragePoolDestroy(w->pool) < 0) virt_fail(j, "cannot stop storage pool", j->arg2);
  drop_pool(j);
}

/* pool:destroy(fn(true | nil, err)): stops the pool (a transient one is
 * gone); its volumes' files stay */
static int p_destroy(lua_State *L) {
  virt_job *j = pool_job(L, 2, run_destroy);
  j->push = virt_push_true;
  virt_job_queue(L, j);
  return 0;
}

/* pool:name() -> its name */
static int p_name(lua_State *L) {
  const char *name = virt.virStoragePoolGetName(check_pool(L));
  lua_pushstring(L, name ? name : "");
  return 1;
}

/* pool:free(): drops this reference (the pool goes on); safe twice */
static int p_free(lua_State *L) {
  pool_ud *u = check_ud(L);
  if (u->pool != NULL) virt.virStoragePoolFree(u->pool);
  u->pool = NULL;
  return 0;
}

static int p_tostring(lua_State *L) {
  pool_ud *u = check_ud(L);
  const char *name = u->pool ? virt.virStoragePoolGetName(u->pool) : NULL;
  if (u->pool == NULL) lua_pushstring(L, "libvirt storage pool (freed)");
  else lua_pushfstring(L, "libvirt storage pool %s", name ? name : "?");
  return 1;
}

void virt_open_storage(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"volumes", p_volumes}, {"upload", p_upload}, {"delete", p_delete},
      {"create_volume", p_create_volume}, {"destroy", p_destroy}, {"name", p_name},
      {"free", p_free}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", p_free}, {"__close", p_free}, {"__tostring", p_tostring}, {NULL, NULL}};
  vmlua_new_class(L, POOL, methods, meta);
}
