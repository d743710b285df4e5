/* stream.c: Unix-domain sockets (a listener vmlua owns, and its
 * connections), a pair of FIFOs used as one stream, and TCP connections
 * (to a forwarded port: vmlua.wait_port). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"

#define SERVER "vmlua.server"
#define STREAM "vmlua.stream"
enum { ON_CONNECTION = 0 };
enum { ON_DATA = 0 };

typedef struct {
  vmlua_handle h;
  char path[108];
} server;

typedef struct {
  vmlua_handle h;
  int paused;        /* stream:pause() stopped reading */
  uv_pipe_t *writer; /* a FIFO pair's write end; NULL: h.uv reads and writes */
} stream;

typedef struct {
  uv_write_t req;
  int written;    /* registry ref to fn of stream:write(data, fn), or LUA_NOREF */
  char data[];
} write_req;

static stream *check_stream(lua_State *L) { return luaL_checkudata(L, 1, STREAM); }
static server *check_server(lua_State *L) { return luaL_checkudata(L, 1, SERVER); }

static int uv_fail(lua_State *L, int code) {
  lua_pushnil(L);
  lua_pushstring(L, uv_strerror(code));
  return 2;
}

static uv_pipe_t *new_pipe(lua_State *L) {
  uv_pipe_t *uv = malloc(sizeof *uv);
  if (uv == NULL) luaL_error(L, "out of memory");
  uv_pipe_init(vmlua_loop(), uv, 0);
  return uv;
}

/* Pushes a new stream userdata owning uv, a fresh handle. */
static stream *push_stream_of(lua_State *L, uv_handle_t *uv) {
  stream *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->paused = 0;
  s->writer = NULL;
  vmlua_handle_init(&s->h, uv);
  luaL_setmetatable(L, STREAM);
  return s;
}

static stream *push_stream(lua_State *L) { return push_stream_of(L, (uv_handle_t *)new_pipe(L)); }

static void on_connection(uv_stream_t *listener, int status) {
  server *srv = listener->data;
  lua_State *L = vmlua_loop_state();
  if (srv == NULL || L == NULL || status < 0) return;
  stream *s = push_stream(L);
  uv_pipe_t *uv = (uv_pipe_t *)s->h.uv;
  if (uv_accept(listener, (uv_stream_t *)uv) != 0) {
    vmlua_handle_close(L, &s->h);
    lua_pop(L, 1);
    return;
  }
  vmlua_handle_anchor(L, &s->h, -1);
  if (vmlua_handle_push_callback(L, &srv->h, ON_CONNECTION)) {
    lua_insert(L, -2);
    vmlua_protected_call(L, 1);
  } else {
    lua_pop(L, 1);
  }
}

/* core.listen(path, fn(stream)) -> server | nil, err; the socket is 0600 */
static int l_listen(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_argcheck(L, strlen(path) < sizeof(((server *)0)->path), 1, "socket path too long");
  server *srv = lua_newuserdatauv(L, sizeof *srv, 0);
  uv_pipe_t *uv = new_pipe(L);
  vmlua_handle_init(&srv->h, (uv_handle_t *)uv);
  strcpy(srv->path, path);
  luaL_setmetatable(L, SERVER);
  int rc = uv_pipe_bind(uv, path);
  if (rc == 0 && chmod(path, 0600) != 0) rc = UV_EPERM;
  if (rc == 0) rc = uv_listen((uv_stream_t *)uv, 4, on_connection);
  if (rc != 0) {
    vmlua_handle_close(L, &srv->h);
    return uv_fail(L, rc);
  }
  vmlua_handle_set_callback(L, &srv->h, ON_CONNECTION, 2);
  vmlua_handle_anchor(L, &srv->h, -1);
  return 1;
}

typedef struct {
  uv_connect_t req;
  stream *s;
  int callback; /* registry ref */
} connect_req;

static void on_connect(uv_connect_t *req, int status) {
  connect_req *c = (connect_req *)req;
  lua_State *L = vmlua_loop_state();
  if (L != NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->callback);
    luaL_unref(L, LUA_REGISTRYINDEX, c->callback);
    if (status == 0 && c->s->h.uv != NULL) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->s->h.anchor);
      lua_pushnil(L);
    } else {
      vmlua_handle_close(L, &c->s->h);
      lua_pushnil(L);
      lua_pushstring(L, uv_strerror(status ? status : UV_ECANCELED));
    }
    vmlua_protected_call(L, 2);
  }
  free(c);
}

/* core.connect(path, fn(stream | nil, err)): connects to a Unix socket */
static int l_connect(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  connect_req *c = malloc(sizeof *c);
  if (c == NULL) return luaL_error(L, "out of memory");
  stream *s = push_stream(L);
  uv_pipe_t *uv = (uv_pipe_t *)s->h.uv;
  vmlua_handle_anchor(L, &s->h, -1);
  c->s = s;
  lua_pushvalue(L, 2);
  c->callback = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_pipe_connect(&c->req, uv, path, on_connect);
  return 0;
}

/* core.connect_tcp(address, port, fn(stream | nil, err)): connects to a
 * numeric IPv4 or IPv6 address */
static int l_connect_tcp(lua_State *L) {
  const char *address = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_argcheck(L, port > 0 && port < 65536, 2, "port out of range");
  struct sockaddr_storage addr;
  int rc = strchr(address, ':') ? uv_ip6_addr(address, port, (struct sockaddr_in6 *)&addr)
                                : uv_ip4_addr(address, port, (struct sockaddr_in *)&addr);
  if (rc != 0) return luaL_error(L, "connect_tcp: %s is not a numeric address", address);
  connect_req *c = malloc(sizeof *c);
  uv_tcp_t *uv = malloc(sizeof *uv);
  if (c == NULL || uv == NULL) {
    free(c);
    free(uv);
    return luaL_error(L, "out of memory");
  }
  uv_tcp_init(vmlua_loop(), uv);
  stream *s = push_stream_of(L, (uv_handle_t *)uv);
  vmlua_handle_anchor(L, &s->h, -1);
  c->s = s;
  lua_pushvalue(L, 3);
  c->callback = luaL_ref(L, LUA_REGISTRYINDEX);
  rc = uv_tcp_connect(&c->req, uv, (const struct sockaddr *)&addr, on_connect);
  if (rc != 0) { /* the callback never comes */
    luaL_unref(L, LUA_REGISTRYINDEX, c->callback);
    vmlua_handle_close(L, &s->h);
    free(c);
    return uv_fail(L, rc);
  }
  return 0;
}

static int s_close(lua_State *L);

/* Makes a FIFO (0600) at path and opens it for reading and writing, so
 * that open never waits for the other end; -errno on failure. */
static int make_fifo(const char *path) {
  if (mkfifo(path, 0600) != 0 || chmod(path, 0600) != 0) return -errno;
  int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

static int open_pipe(uv_pipe_t *uv, const char *path) {
  int fd = make_fifo(path);
  if (fd < 0) return fd;
  int rc = uv_pipe_open(uv, fd);
  if (rc != 0) close(fd);
  return rc;
}

/* core.open_fifos(read_path, write_path) -> stream | nil, err: makes two
 * FIFOs, and a stream that reads the first and writes the second. vmlua
 * holds both ends open, so no end of file comes: see stream:finish(). */
static int l_open_fifos(lua_State *L) {
  const char *read_path = luaL_checkstring(L, 1);
  const char *write_path = luaL_checkstring(L, 2);
  stream *s = push_stream(L);
  uv_pipe_t *uv = (uv_pipe_t *)s->h.uv;
  s->writer = new_pipe(L);
  s->writer->data = NULL;
  int rc = open_pipe(uv, read_path);
  if (rc == 0) rc = open_pipe(s->writer, write_path);
  if (rc != 0) {
    lua_pushcfunction(L, s_close);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    return uv_fail(L, rc);
  }
  vmlua_handle_anchor(L, &s->h, -1);
  return 1;
}

static int srv_close(lua_State *L) {
  vmlua_handle_close(L, &check_server(L)->h);
  return 0;
}

static int srv_tostring(lua_State *L) {
  server *srv = check_server(L);
  lua_pushfstring(L, "server %s (%s)", srv->path, srv->h.uv ? "listening" : "closed");
  return 1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t *uv, ssize_t n, const uv_buf_t *buf) {
  stream *s = uv->data;
  lua_State *L = vmlua_loop_state();
  if (s != NULL && L != NULL && n != 0) {
    int pushed = vmlua_handle_push_callback(L, &s->h, ON_DATA);
    if (n > 0) {
      lua_pushlstring(L, buf->base, (size_t)n);
      lua_pushnil(L);
    } else {
      uv_read_stop(uv);
      lua_pushnil(L);
      lua_pushstring(L, n == UV_EOF ? "closed" : uv_strerror((int)n));
    }
    if (pushed)
      vmlua_protected_call(L, 2);
    else
      lua_pop(L, 2);
  }
  free(buf->base);
}

/* stream:read(fn(data, err)): data is nil with err "closed" at the end */
static int s_read(lua_State *L) {
  stream *s = check_stream(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (s->h.uv == NULL) return luaL_error(L, "stream is closed");
  vmlua_handle_set_callback(L, &s->h, ON_DATA, 2);
  int rc = uv_read_start((uv_stream_t *)s->h.uv, on_alloc, on_read);
  if (rc != 0) return uv_fail(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* stream:pause(): stops reading until stream:resume(); the data waits in
 * the socket, so that the reader takes it in larger pieces */
static int s_pause(lua_State *L) {
  stream *s = check_stream(L);
  if (s->h.uv != NULL && !s->paused) {
    uv_read_stop((uv_stream_t *)s->h.uv);
    s->paused = 1;
  }
  return 0;
}

/* stream:resume(): reads again, with the callback given to stream:read() */
static int s_resume(lua_State *L) {
  stream *s = check_stream(L);
  if (s->h.uv != NULL && s->paused) {
    s->paused = 0;
    int rc = uv_read_start((uv_stream_t *)s->h.uv, on_alloc, on_read);
    if (rc != 0) return uv_fail(L, rc);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void on_written(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  lua_State *L = vmlua_loop_state();
  if (w->written != LUA_NOREF && L != NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->written);
    luaL_unref(L, LUA_REGISTRYINDEX, w->written);
    if (status == 0) {
      lua_pushboolean(L, 1);
      lua_pushnil(L);
    } else {
      lua_pushnil(L);
      lua_pushstring(L, uv_strerror(status));
    }
    vmlua_protected_call(L, 2);
  }
  free(w);
}

/* stream:write(data [, fn(true | nil, err)]) -> true | nil, err; the data
 * is copied and queued; fn, when given, is called once it is written (a
 * writer of much data waits for it, so that little is queued at a time). */
static int s_write(lua_State *L) {
  stream *s = check_stream(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
  if (s->h.uv == NULL) return uv_fail(L, UV_EPIPE);
  uv_stream_t *out = s->writer ? (uv_stream_t *)s->writer : (uv_stream_t *)s->h.uv;
  write_req *w = malloc(sizeof *w + len);
  if (w == NULL) return luaL_error(L, "out of memory");
  memcpy(w->data, data, len);
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
  int rc = uv_write(&w->req, out, &buf, 1, on_written);
  if (rc != 0) {
    free(w);
    return uv_fail(L, rc);
  }
  w->written = LUA_NOREF;
  if (!lua_isnoneornil(L, 3)) {
    lua_pushvalue(L, 3);
    w->written = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void free_on_close(uv_handle_t *uv) { free(uv); }

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

/* stream:shutdown() -> true | nil, err: ends writing once what is queued is
 * written, so the peer reads it all, then end of file; reading goes on. */
static int s_shutdown(lua_State *L) {
  stream *s = check_stream(L);
  if (s->h.uv == NULL) return uv_fail(L, UV_EPIPE);
  uv_stream_t *out = s->writer ? (uv_stream_t *)s->writer : (uv_stream_t *)s->h.uv;
  uv_shutdown_t *req = malloc(sizeof *req);
  if (req == NULL) return luaL_error(L, "out of memory");
  int rc = uv_shutdown(req, out, on_shutdown);
  if (rc != 0) {
    free(req);
    return uv_fail(L, rc);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int s_close(lua_State *L) {
  stream *s = check_stream(L);
  if (s->writer != NULL) {
    uv_close((uv_handle_t *)s->writer, free_on_close);
    s->writer = NULL;
  }
  vmlua_handle_close(L, &s->h);
  return 0;
}

/* stream:finish(): for a stream whose writer is gone but whose end of file
 * never comes (a FIFO vmlua holds open): passes what is buffered to the
 * read callback, then ends the stream there (nil, "closed"). */
static int s_finish(lua_State *L) {
  stream *s = check_stream(L);
  char buf[65536];
  int fd = -1;
  while (s->h.uv != NULL && uv_fileno(s->h.uv, &fd) == 0) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (!vmlua_handle_push_callback(L, &s->h, ON_DATA)) continue;
    lua_pushlstring(L, buf, (size_t)n);
    lua_pushnil(L);
    vmlua_protected_call(L, 2);
  }
  if (s->h.uv == NULL) return 0;
  uv_read_stop((uv_stream_t *)s->h.uv);
  s->paused = 0;
  if (vmlua_handle_push_callback(L, &s->h, ON_DATA)) {
    lua_pushnil(L);
    lua_pushstring(L, "closed");
    vmlua_protected_call(L, 2);
  }
  return 0;
}

static int s_tostring(lua_State *L) {
  lua_pushfstring(L, "stream (%s)", check_stream(L)->h.uv ? "open" : "closed");
  return 1;
}

void vmlua_open_stream(lua_State *L) {
  static const luaL_Reg server_methods[] = {{"close", srv_close}, {NULL, NULL}};
  static const luaL_Reg server_meta[] = {
      {"__gc", srv_close}, {"__close", srv_close}, {"__tostring", srv_tostring}, {NULL, NULL}};
  static const luaL_Reg stream_methods[] = {
      {"read", s_read},   {"write", s_write},   {"close", s_close},
      {"pause", s_pause}, {"resume", s_resume}, {"finish", s_finish},
      {"shutdown", s_shutdown}, {NULL, NULL}};
  static const luaL_Reg stream_meta[] = {
      {"__gc", s_close}, {"__close", s_close}, {"__tostring", s_tostring}, {NULL, NULL}};
  vmlua_new_class(L, SERVER, server_methods, server_meta);
  vmlua_new_class(L, STREAM, stream_methods, stream_meta);
  lua_pushcfunction(L, l_listen);
  lua_setfield(L, -2, "listen");
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
  lua_pushcfunction(L, l_connect_tcp);
  lua_setfield(L, -2, "connect_tcp");
  lua_pushcfunction(L, l_open_fifos);
  lua_setfield(L, -2, "open_fifos");
}
