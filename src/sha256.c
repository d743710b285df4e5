/* sha256.c: SHA-256 through OpenSSL's EVP interface: of a file, streamed on
 * libuv's thread pool (hashing a large image takes seconds, and the loop,
 * with consoles, timers and other VMs, goes on meanwhile), or of a string.
 * libcrypto is opened at the first hash: linked, its 4 MB would load into
 * every start of vmlua. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

static struct {
  EVP_MD_CTX *(*MD_CTX_new)(void);
  void (*MD_CTX_free)(EVP_MD_CTX *);
  const EVP_MD *(*sha256)(void);
  int (*DigestInit_ex)(EVP_MD_CTX *, const EVP_MD *, ENGINE *);
  int (*DigestUpdate)(EVP_MD_CTX *, const void *, size_t);
  int (*DigestFinal_ex)(EVP_MD_CTX *, unsigned char *, unsigned int *);
  int (*Digest)(const void *, size_t, unsigned char *, unsigned int *, const EVP_MD *, ENGINE *);
} crypto;

/* Opens libcrypto once, on the loop's thread; NULL when ready, else why not. */
static const char *open_crypto(void) {
  static int ready;
  static char problem[256];
  if (ready) return NULL;
  if (problem[0]) return problem;
  void *lib = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
  int ok = lib != NULL;
#define SYM(name) ok = ok && (*(void **)&crypto.name = dlsym(lib, "EVP_" #name)) != NULL
  SYM(MD_CTX_new); SYM(MD_CTX_free); SYM(sha256); SYM(DigestInit_ex); SYM(DigestUpdate);
  SYM(DigestFinal_ex); SYM(Digest);
#undef SYM
  if (!ok) {
    snprintf(problem, sizeof problem, "cannot load libcrypto (install libssl3): %s", dlerror());
    return problem;
  }
  ready = 1;
  return NULL;
}

typedef struct {
  uv_work_t req;
  int callback;          /* registry ref */
  char *path;
  unsigned char md[32];
  int err;               /* errno, or -1 when OpenSSL failed */
} job;

static void to_hex(const unsigned char md[32], char hex[65]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 15];
  }
  hex[64] = '\0';
}

/* On a worker thread: no Lua here. */
static void hash_file(uv_work_t *req) {
  job *j = req->data;
  int fd = open(j->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    j->err = errno;
    return;
  }
  EVP_MD_CTX *ctx = crypto.MD_CTX_new();
  unsigned char *buf = malloc(1 << 20);
  unsigned int len = 0;
  int ok = ctx != NULL && buf != NULL && crypto.DigestInit_ex(ctx, crypto.sha256(), NULL) == 1;
  if (ctx == NULL || buf == NULL) j->err = ENOMEM;
  while (ok) {
    ssize_t n = read(fd, buf, 1 << 20);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) j->err = errno;
    if (n <= 0) break;
    ok = crypto.DigestUpdate(ctx, buf, (size_t)n) == 1;
  }
  if (ok && j->err == 0) ok = crypto.DigestFinal_ex(ctx, j->md, &len) == 1 && len == sizeof j->md;
  if (!ok && j->err == 0) j->err = -1;
  free(buf);
  crypto.MD_CTX_free(ctx);
  close(fd);
}

/* Back on the loop: fn(hex) or fn(nil, err). */
static void hashed(uv_work_t *req, int status) {
  job *j = req->data;
  lua_State *L = vmlua_loop_state();
  if (L != NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, j->callback);
    luaL_unref(L, LUA_REGISTRYINDEX, j->callback);
    if (status == 0 && j->err == 0) {
      char hex[65];
      to_hex(j->md, hex);
      lua_pushstring(L, hex);
      lua_pushnil(L);
    } else {
      lua_pushnil(L);
      lua_pushfstring(L, "%s: %s", j->path, status != 0 ? uv_strerror(status)
                                            : j->err > 0 ? strerror(j->err) : "OpenSSL cannot hash it");
    }
  }
  free(j->path);
  free(j);
  if (L != NULL) vmlua_protected_call(L, 2);
}

/* core.sha256_file(path, fn): hashes the file away from the loop, then calls
 * fn(hex) (64 lowercase hex digits) or fn(nil, err). */
static int l_sha256_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  const char *problem = open_crypto();
  if (problem != NULL) return luaL_error(L, "sha256_file: %s", problem);
  job *j = calloc(1, sizeof *j);
  char *copy = strdup(path);
  if (j == NULL || copy == NULL) {
    free(j);
    free(copy);
    return luaL_error(L, "out of memory");
  }
  j->path = copy;
  j->req.data = j;
  lua_pushvalue(L, 2);
  j->callback = luaL_ref(L, LUA_REGISTRYINDEX);
  int err = uv_queue_work(vmlua_loop(), &j->req, hash_file, hashed);
  if (err != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, j->callback);
    free(j->path);
    free(j);
    return luaL_error(L, "sha256_file: %s", uv_strerror(err));
  }
  return 0;
}

/* core.sha256(data) -> 64 lowercase hex digits */
static int l_sha256(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  const char *problem = open_crypto();
  if (problem != NULL) return luaL_error(L, "sha256: %s", problem);
  unsigned char md[32];
  unsigned int mdlen = 0;
  if (crypto.Digest(data, len, md, &mdlen, crypto.sha256(), NULL) != 1 || mdlen != sizeof md)
    return luaL_error(L, "sha256: OpenSSL cannot hash it");
  char hex[65];
  to_hex(md, hex);
  lua_pushstring(L, hex);
  return 1;
}

void vmlua_open_sha256(lua_State *L) {
  static const luaL_Reg funcs[] = {{"sha256_file", l_sha256_file}, {"sha256", l_sha256}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
