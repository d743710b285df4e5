/* download.c: an HTTP(S) download into a file with libcurl's multi
 * interface, driven by the loop as curl documents it (curl_multi_socket_action
 * with a uv_poll per socket and one uv_timer), so the loop never blocks.
 * With an offset, the request asks for the bytes from there (Range): a 206
 * answer goes after the file's first `offset` bytes, and a 200 (a server
 * that ignores Range) rewrites the file from its start. Where to download,
 * when to resume, checksums, messages and progress bars are the caller's. */
#include <curl/curl.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

/* libcurl, opened at the first download: linked in, it would load some
 * thirty libraries (TLS, Kerberos, LDAP...) into every start of vmlua and
 * double the time vmlua plan takes. */
static struct {
  CURLcode (*global_init)(long);
  CURL *(*easy_init)(void);
  CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
  CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
  const char *(*easy_strerror)(CURLcode);
  void (*easy_cleanup)(CURL *);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
  CURLMcode (*multi_add_handle)(CURLM *, CURL *);
  CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
  CURLMcode (*multi_assign)(CURLM *, curl_socket_t, void *);
  CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
  CURLMsg *(*multi_info_read)(CURLM *, int *);
  CURLMcode (*multi_cleanup)(CURLM *);
} curl;

/* Opens libcurl once; NULL when it is ready, else why not. */
static const char *open_curl(void) {
  static int ready;
  static char problem[256];
  if (ready) return NULL;
  if (problem[0]) return problem;
  void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
  int ok = lib != NULL;
#define SYM(name) ok = ok && (*(void **)&curl.name = dlsym(lib, "curl_" #name)) != NULL
  SYM(global_init); SYM(easy_init); SYM(easy_setopt); SYM(easy_getinfo); SYM(easy_strerror);
  SYM(easy_cleanup); SYM(multi_init); SYM(multi_setopt); SYM(multi_add_handle);
  SYM(multi_remove_handle); SYM(multi_assign); SYM(multi_socket_action); SYM(multi_info_read);
  SYM(multi_cleanup);
#undef SYM
  if (!ok) {
    snprintf(problem, sizeof problem, "cannot load libcurl (install libcurl4): %s", dlerror());
    return problem;
  }
  if (curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(problem, sizeof problem, "libcurl cannot start");
    return problem;
  }
  ready = 1;
  return NULL;
}

#define DOWNLOAD "vmlua.download"
enum { ON_PROGRESS, ON_DONE };

typedef struct sock sock;

typedef struct {
  vmlua_handle h;       /* the timer curl asks for; NULL once closed */
  CURLM *multi;         /* NULL once finished or closed */
  CURL *easy;
  sock *socks;          /* the sockets curl watches */
  int fd;               /* the file written, -1 once closed */
  curl_off_t offset;    /* the first byte asked for */
  curl_off_t start;     /* where the body goes: offset (206) or 0; -1 before the body */
  curl_off_t written;   /* bytes of the body written */
  curl_off_t total;     /* the whole file's size, -1 while unknown */
  curl_off_t reported;  /* start + written when on_progress last ran */
  long long range_first, range_total; /* the answer's Content-Range, or -1 */
  char problem[256];    /* why this side stopped the transfer */
  char error[CURL_ERROR_SIZE];
} download;

struct sock {
  uv_poll_t poll;
  download *d; /* NULL once curl is done with the socket */
  curl_socket_t fd;
  sock *next;
};

static download *check_download(lua_State *L) { return luaL_checkudata(L, 1, DOWNLOAD); }

static void free_sock(uv_handle_t *uv) { free(uv); }

static void drop_sock(download *d, sock *k) {
  for (sock **p = &d->socks; *p; p = &(*p)->next)
    if (*p == k) {
      *p = k->next;
      break;
    }
  k->d = NULL;
  uv_poll_stop(&k->poll);
  uv_close((uv_handle_t *)&k->poll, free_sock);
}

/* Frees everything of curl's and closes the file; safe to call twice. */
static void release(download *d) {
  if (d->multi != NULL) {
    curl.multi_remove_handle(d->multi, d->easy);
    curl.easy_cleanup(d->easy);
    curl.multi_cleanup(d->multi);
    d->multi = NULL;
    d->easy = NULL;
  }
  while (d->socks != NULL) drop_sock(d, d->socks);
  if (d->fd >= 0) close(d->fd);
  d->fd = -1;
}

/* The size of the file now. */
static lua_Integer file_size(download *d) {
  struct stat st;
  return d->fd >= 0 && fstat(d->fd, &st) == 0 ? (lua_Integer)st.st_size : 0;
}

/* The transfer ended: on_done(status, size, err), err nil if it succeeded. */
static void finish(download *d, CURLcode result) {
  lua_State *L = vmlua_loop_state();
  long status = 0;
  curl.easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
  if (d->start >= 0) {
    if (ftruncate(d->fd, d->start + d->written) != 0 && result == CURLE_OK) {
      snprintf(d->problem, sizeof d->problem, "cannot truncate the file: %s", strerror(errno));
      result = CURLE_WRITE_ERROR;
    }
  } else if (result == CURLE_OK && status != 206 && ftruncate(d->fd, 0) != 0) { /* an empty body */
    snprintf(d->problem, sizeof d->problem, "cannot truncate the file: %s", strerror(errno));
    result = CURLE_WRITE_ERROR;
  }
  if (L == NULL) {
    release(d);
    return;
  }
  int pushed = vmlua_handle_push_callback(L, &d->h, ON_DONE);
  if (pushed) {
    lua_pushinteger(L, status);
    lua_pushinteger(L, file_size(d));
    if (result == CURLE_OK)
      lua_pushnil(L);
    else
      lua_pushstring(L, d->problem[0] ? d->problem : d->error[0] ? d->error : curl.easy_strerror(result));
  }
  release(d);
  vmlua_handle_close(L, &d->h); /* the arguments are on the stack already */
  if (pushed) vmlua_protected_call(L, 3);
}

static void report_progress(download *d) {
  lua_State *L = vmlua_loop_state();
  curl_off_t have = d->start + d->written;
  if (L == NULL || d->start < 0 || have == d->reported) return;
  d->reported = have;
  if (!vmlua_handle_push_callback(L, &d->h, ON_PROGRESS)) return;
  lua_pushinteger(L, (lua_Integer)have);
  if (d->total >= 0)
    lua_pushinteger(L, (lua_Integer)d->total);
  else
    lua_pushnil(L);
  vmlua_protected_call(L, 2); /* it may close d: nothing follows */
}

/* Lets curl act on a socket (or its timeout), then reports what changed. */
static void act(download *d, curl_socket_t fd, int flags) {
  if (d->multi == NULL) return;
  int running;
  curl.multi_socket_action(d->multi, fd, flags, &running);
  CURLMsg *m;
  int left;
  while ((m = curl.multi_info_read(d->multi, &left)) != NULL)
    if (m->msg == CURLMSG_DONE) {
      finish(d, m->data.result);
      return;
    }
  report_progress(d);
}

static void on_poll(uv_poll_t *uv, int status, int events) {
  sock *k = (sock *)uv;
  if (k->d == NULL) return;
  int flags = status < 0 ? CURL_CSELECT_ERR : 0;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  act(k->d, k->fd, flags);
}

static void on_timeout(uv_timer_t *uv) {
  download *d = uv->data;
  if (d != NULL) act(d, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_SOCKETFUNCTION: watch the socket for what curl waits on. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  (void)easy;
  download *d = userp;
  sock *k = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (k != NULL && k->d != NULL) drop_sock(d, k);
    return 0;
  }
  if (k == NULL) {
    k = malloc(sizeof *k);
    if (k == NULL) return -1;
    if (uv_poll_init_socket(vmlua_loop(), &k->poll, s) != 0) {
      free(k);
      return -1;
    }
    k->d = d;
    k->fd = s;
    k->next = d->socks;
    d->socks = k;
    curl.multi_assign(d->multi, s, k);
  }
  int events = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
  uv_poll_start(&k->poll, events, on_poll);
  return 0;
}

/* CURLMOPT_TIMERFUNCTION: call back in ms milliseconds (-1: never). */
static int on_curl_timer(CURLM *multi, long ms, void *userp) {
  (void)multi;
  download *d = userp;
  if (d->h.uv == NULL) return 0;
  if (ms < 0)
    uv_timer_stop((uv_timer_t *)d->h.uv);
  else
    uv_timer_start((uv_timer_t *)d->h.uv, on_timeout, (uint64_t)ms, 0);
  return 0;
}

/* Each header line: remembers the Content-Range of the last answer. */
static size_t on_header(char *line, size_t size, size_t n, void *userp) {
  download *d = userp;
  size_t len = size * n;
  static const char name[] = "content-range:";
  if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
    d->range_first = d->range_total = -1;
  } else if (len > sizeof name && strncasecmp(line, name, sizeof name - 1) == 0) {
    char text[128];
    size_t take = len - (sizeof name - 1) < sizeof text - 1 ? len - (sizeof name - 1) : sizeof text - 1;
    memcpy(text, line + sizeof name - 1, take);
    text[take] = '\0';
    long long first, last, total;
    int got = sscanf(text, " bytes %lld-%lld/%lld", &first, &last, &total);
    if (got >= 2) d->range_first = first;
    if (got == 3) d->range_total = total;
  }
  return len;
}

/* The first bytes of the body: where they go depends on the answer. */
static int begin_body(download *d) {
  long status = 0;
  curl_off_t length = -1;
  curl.easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
  curl.easy_getinfo(d->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  if (status == 206) {
    if (d->range_first != d->offset) {
      snprintf(d->problem, sizeof d->problem, "the server sent the bytes from %lld, not from %lld",
               d->range_first, (long long)d->offset);
      return -1;
    }
    d->start = d->offset;
    d->total = d->range_total >= 0 ? d->range_total : length >= 0 ? d->offset + length : -1;
  } else {
    if (ftruncate(d->fd, 0) != 0) {
      snprintf(d->problem, sizeof d->problem, "cannot truncate the file: %s", strerror(errno));
      return -1;
    }
    d->start = 0;
    d->total = length;
  }
  return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *userp) {
  download *d = userp;
  size_t len = size * n, done = 0;
  if (d->start < 0 && begin_body(d) != 0) return 0;
  while (done < len) {
    ssize_t w = pwrite(d->fd, data + done, len - done, d->start + d->written);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      snprintf(d->problem, sizeof d->problem, "cannot write the file: %s", strerror(errno));
      return 0;
    }
    done += (size_t)w;
    d->written += w;
  }
  return len;
}

static int fail_open(lua_State *L, download *d, const char *message) {
  release(d);
  vmlua_handle_close(L, &d->h);
  lua_pushnil(L);
  lua_pushstring(L, message);
  return 2;
}

#define SET(opt, value) ok = ok && curl.easy_setopt(d->easy, opt, value) == CURLE_OK

/* core.download{ url=, path=, offset=0, on_progress=fn(bytes, total), on_done=fn(status, size, err) }
 *   -> download | nil, err
 * Writes what url answers into path (made 0644 if missing). With offset,
 * asks for the bytes from there on (see the top of the file). on_progress
 * gets the file's size so far and the whole size (nil if unknown); on_done
 * the HTTP status (0 without an answer), the file's size, and nil or why the
 * transfer failed (an HTTP error status fails it, and leaves the file as it
 * was). A transfer stalled for 60 s fails. download:close() cancels. */
static int l_download(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *problem = open_curl();
  if (problem != NULL) return luaL_error(L, "download: %s", problem);
  lua_getfield(L, 1, "url");
  const char *url = luaL_checkstring(L, -1);
  lua_getfield(L, 1, "path");
  const char *path = luaL_checkstring(L, -1);
  lua_getfield(L, 1, "offset");
  lua_Integer offset = luaL_optinteger(L, -1, 0);
  luaL_argcheck(L, offset >= 0, 1, "offset must not be negative");

  download *d = lua_newuserdatauv(L, sizeof *d, 0);
  memset(d, 0, sizeof *d);
  d->fd = -1;
  d->offset = (curl_off_t)offset;
  d->start = d->total = d->reported = -1;
  d->range_first = d->range_total = -1;
  uv_timer_t *timer = malloc(sizeof *timer);
  if (timer == NULL) return luaL_error(L, "out of memory");
  uv_timer_init(vmlua_loop(), timer);
  vmlua_handle_init(&d->h, (uv_handle_t *)timer);
  luaL_setmetatable(L, DOWNLOAD);
  int self = lua_gettop(L);
  lua_getfield(L, 1, "on_progress");
  vmlua_handle_set_callback(L, &d->h, ON_PROGRESS, -1);
  lua_getfield(L, 1, "on_done");
  vmlua_handle_set_callback(L, &d->h, ON_DONE, -1);
  lua_settop(L, self);

  d->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
  if (d->fd < 0) {
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return fail_open(L, d, lua_tostring(L, -1));
  }
  d->multi = curl.multi_init();
  d->easy = curl.easy_init();
  if (d->multi == NULL || d->easy == NULL) {
    if (d->multi == NULL && d->easy != NULL) curl.easy_cleanup(d->easy);
    if (d->multi != NULL && d->easy == NULL) curl.multi_cleanup(d->multi);
    d->multi = NULL;
    d->easy = NULL;
    return fail_open(L, d, "cannot start libcurl");
  }
  int ok = 1;
  char range[32];
  snprintf(range, sizeof range, "%lld-", (long long)offset);
  SET(CURLOPT_URL, url);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_FOLLOWLOCATION, 1L);
  SET(CURLOPT_MAXREDIRS, 10L);
  SET(CURLOPT_FAILONERROR, 1L);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_USERAGENT, "vmlua");
  SET(CURLOPT_CONNECTTIMEOUT, 30L);
  SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
  SET(CURLOPT_LOW_SPEED_TIME, 60L);
  SET(CURLOPT_ERRORBUFFER, d->error);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, d);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, d);
  if (offset > 0) SET(CURLOPT_RANGE, range);
  ok = ok && curl.multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, on_socket) == CURLM_OK &&
       curl.multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d) == CURLM_OK &&
       curl.multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) == CURLM_OK &&
       curl.multi_setopt(d->multi, CURLMOPT_TIMERDATA, d) == CURLM_OK;
  if (!ok) return fail_open(L, d, "libcurl refused an option (is it older than 7.85?)");
  vmlua_handle_anchor(L, &d->h, self);
  uv_update_time(vmlua_loop()); /* the loop's clock is stale between runs */
  if (curl.multi_add_handle(d->multi, d->easy) != CURLM_OK) return fail_open(L, d, "libcurl cannot start the transfer");
  lua_pushvalue(L, self);
  return 1;
}

static int d_close(lua_State *L) {
  download *d = check_download(L);
  release(d);
  vmlua_handle_close(L, &d->h);
  return 0;
}

static int d_active(lua_State *L) {
  lua_pushboolean(L, check_download(L)->multi != NULL);
  return 1;
}

static int d_tostring(lua_State *L) {
  download *d = check_download(L);
  if (d->multi != NULL)
    lua_pushfstring(L, "download (active, %I bytes)", (lua_Integer)(d->start < 0 ? 0 : d->start + d->written));
  else
    lua_pushstring(L, "download (closed)");
  return 1;
}

void vmlua_open_download(lua_State *L) {
  static const luaL_Reg methods[] = {{"close", d_close}, {"active", d_active}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", d_close}, {"__close", d_close}, {"__tostring", d_tostring}, {NULL, NULL}};
  vmlua_new_class(L, DOWNLOAD, methods, meta);
  lua_pushcfunction(L, l_download);
  lua_setfield(L, -2, "download");
}
