/* editline.c: the input of the interactive prompt.
 *
 * On a terminal it is libedit's readline-compatible callback interface:
 * a poll handle on stdin feeds rl_callback_read_char() while a prompt is
 * shown, so the loop (VMs, timers, consoles) keeps running under the
 * prompt. Output that arrives meanwhile goes above it: editor:hide()
 * clears the prompt and the half-typed line before the output is written,
 * and a prepare handle draws them again before the loop next sleeps.
 * When stdin is not a terminal, lines are read without editing, still
 * through the loop. libedit's readline layer is one per process, and so is
 * the editor. */
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <editline/readline.h>

#include "core.h"

#define EDITOR "vmlua.editor"
#define WORD_BREAKS " \t\n\"\\'`@$><=;|&{}()[]+-*/%^~#,"

enum { ON_LINE, ON_COMPLETE };

typedef struct {
  int open;
  int tty;           /* libedit edits the line; else plain lines */
  int fd, fd_flags;  /* stdin and its flags, restored on close */
  uv_poll_t *poll;   /* NULL when stdin cannot be polled (a regular file) */
  uv_idle_t *idle;   /* delivers buffered lines, or reads an unpollable file */
  uv_prepare_t *prepare;
  int reading;       /* a prompt is up and input is delivered */
  int hidden;        /* the prompt is cleared for output */
  int line_open;     /* the last output did not end its line */
  int point, end;    /* cursor offset and line length, as libedit last drew them */
  char *prompt;
  int accepted;      /* libedit finished a line (or got EOF) */
  char *line;        /* that line, NULL at EOF */
  char *buf;         /* plain input not yet delivered */
  size_t len, cap;
  int eof;
  vmlua_handle h;    /* on_line, complete; anchors the userdata */
} editor;

static editor ed;

typedef struct {
  int open;
} editor_ref;

static editor *check_editor(lua_State *L) {
  editor_ref *r = luaL_checkudata(L, 1, EDITOR);
  if (!r->open || !ed.open) luaL_error(L, "the editor is closed");
  return &ed;
}

static void free_handle(uv_handle_t *uv) { free(uv); }

/* The libedit side. */

static void on_rl_line(char *line) {
  ed.accepted = 1;
  ed.line = line;
}

static int cols(void) {
  int rows = 0, columns = 0;
  rl_get_screen_size(&rows, &columns);
  return columns > 0 ? columns : 80;
}

/* The row of the cursor, counted from the prompt's first row. */
static int cursor_row(int offset) {
  return (int)((strlen(ed.prompt ? ed.prompt : "") + (size_t)offset) / (size_t)cols());
}

/* Takes the prompt and the line off the screen, the cursor being at `point`. */
static void clear(int point) {
  int up = cursor_row(point);
  fputs("\r", stdout);
  if (up > 0) fprintf(stdout, "\x1b[%dA", up);
  fputs("\x1b[J", stdout);
  fflush(stdout);
}

/* Draws the prompt and the line again, the cursor being at `point`. */
static void redraw(int point) {
  clear(point);
  rl_forced_update_display(); /* from the prompt's first column */
  fflush(stdout);
}

/* Lists candidates under the line, in columns, without what they share
 * before the last '.' or ':' of the word (vm:s lists send( start( stop(). */
static void list(lua_State *L, int out, int n, size_t skip) {
  size_t width = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, out, i);
    size_t len = lua_rawlen(L, -1);
    if (len - skip > width) width = len - skip;
    lua_pop(L, 1);
  }
  width += 2;
  int per_row = (int)((size_t)cols() / width);
  if (per_row < 1) per_row = 1;
  int rows = (n + per_row - 1) / per_row;
  int down = cursor_row(ed.end) - cursor_row(ed.point);
  if (down > 0) fprintf(stdout, "\x1b[%dB", down);
  fputs("\r\n", stdout);
  for (int r = 0; r < rows; r++) {
    for (int c = 0; c < per_row; c++) {
      int i = c * rows + r + 1;
      if (i > n) break;
      lua_rawgeti(L, out, i);
      const char *s = lua_tostring(L, -1) + skip;
      if (c == per_row - 1 || i + rows > n)
        fputs(s, stdout);
      else
        fprintf(stdout, "%-*s", (int)width, s);
      lua_pop(L, 1);
    }
    fputs("\n", stdout);
  }
  rl_forced_update_display(); /* the prompt again, below the list */
  fflush(stdout);
}

/* Tab: complete(word, text_before_word, out) fills out with candidates
 * that extend the word before the cursor. What they share is inserted;
 * when that adds nothing, they are listed. (libedit's own completion rings
 * the bell even on a unique match, so Tab is bound to this instead.) */
static int on_tab(int count, int key) {
  (void)count;
  (void)key;
  lua_State *L = vmlua_loop_state();
  if (L == NULL || rl_line_buffer == NULL) return 0;
  ed.point = rl_point;
  ed.end = rl_end;
  int start = ed.point;
  while (start > 0 && strchr(WORD_BREAKS, rl_line_buffer[start - 1]) == NULL) start--;
  int top = lua_gettop(L);
  lua_newtable(L);
  int out = lua_gettop(L);
  if (!vmlua_handle_push_callback(L, &ed.h, ON_COMPLETE)) {
    lua_settop(L, top);
    return 0;
  }
  lua_pushlstring(L, rl_line_buffer + start, (size_t)(ed.point - start));
  lua_pushlstring(L, rl_line_buffer, (size_t)start);
  lua_pushvalue(L, out);
  vmlua_protected_call(L, 3);
  size_t word = (size_t)(ed.point - start);
  int n = (int)lua_rawlen(L, out);
  size_t common = 0;
  const char *first = NULL;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, out, i); /* the string stays referenced by out */
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    lua_pop(L, 1);
    if (s == NULL || len < word || strncmp(s, rl_line_buffer + start, word) != 0) {
      n = 0; /* not extensions of the word: ignore them all */
      break;
    }
    if (first == NULL) {
      first = s;
      common = len;
    } else {
      size_t k = 0;
      while (k < common && s[k] == first[k]) k++;
      common = k;
    }
  }
  if (n > 0 && common > word) {
    char *add = strndup(first + word, common - word);
    if (add != NULL) {
      int point = ed.point;
      rl_insert_text(add);
      free(add);
      redraw(point);
    }
  } else if (n > 1) {
    size_t skip = word;
    while (skip > 0 && rl_line_buffer[start + skip - 1] != '.' &&
           rl_line_buffer[start + skip - 1] != ':')
      skip--;
    list(L, out, n, skip);
  }
  lua_settop(L, top);
  return 0;
}

/* Reading. */

static void stop_reading(void) {
  if (!ed.reading) return;
  ed.reading = 0;
  ed.hidden = 0;
  if (ed.poll != NULL) uv_poll_stop(ed.poll);
  if (ed.idle != NULL) uv_idle_stop(ed.idle);
  if (ed.tty) rl_callback_handler_remove(); /* the terminal back in its own mode */
}

/* Stops reading and hands a line (NULL: the end of input) to on_line. */
static void deliver(lua_State *L, const char *line, size_t len) {
  stop_reading();
  if (!vmlua_handle_push_callback(L, &ed.h, ON_LINE)) return;
  if (line != NULL)
    lua_pushlstring(L, line, len);
  else
    lua_pushnil(L);
  vmlua_protected_call(L, 1);
}

static void on_tty_readable(uv_poll_t *uv, int status, int events) {
  (void)uv;
  (void)events;
  lua_State *L = vmlua_loop_state();
  if (!ed.open || !ed.reading || L == NULL) return;
  int avail = 0;
  if (status < 0 || ioctl(ed.fd, FIONREAD, &avail) != 0 || avail <= 0) {
    deliver(L, NULL, 0); /* the terminal hung up */
    return;
  }
  ed.accepted = 0;
  ed.line = NULL;
  do {
    rl_callback_read_char();
    ed.point = rl_point;
    ed.end = rl_end;
  } while (!ed.accepted && ed.reading && ioctl(ed.fd, FIONREAD, &avail) == 0 && avail > 0);
  if (!ed.accepted || !ed.reading) return;
  char *line = ed.line;
  ed.accepted = 0;
  ed.line = NULL;
  if (line != NULL) {
    deliver(L, line, strlen(line));
    free(line);
  } else {
    fputs("\n", stdout); /* Ctrl-D: leave the prompt's row */
    fflush(stdout);
    deliver(L, NULL, 0);
  }
}

/* Plain input: hands over the next complete line, or the end. */
static int deliver_buffered(lua_State *L) {
  if (!ed.reading) return 1;
  char *nl = ed.len > 0 ? memchr(ed.buf, '\n', ed.len) : NULL;
  if (nl == NULL && !ed.eof) return 0;
  size_t take = nl ? (size_t)(nl - ed.buf) + 1 : ed.len;
  size_t len = nl ? take - 1 : take;
  if (len > 0 && ed.buf[len - 1] == '\r') len--;
  if (take == 0) {
    deliver(L, NULL, 0);
    return 1;
  }
  stop_reading();
  int pushed = vmlua_handle_push_callback(L, &ed.h, ON_LINE);
  if (pushed) lua_pushlstring(L, ed.buf, len); /* a copy: the buffer moves on */
  memmove(ed.buf, ed.buf + take, ed.len - take);
  ed.len -= take;
  if (pushed) vmlua_protected_call(L, 1);
  return 1;
}

static void read_plain(void) {
  if (ed.cap - ed.len < 4096) {
    size_t cap = ed.cap ? ed.cap * 2 : 8192;
    char *buf = realloc(ed.buf, cap);
    if (buf == NULL) {
      ed.eof = 1;
      return;
    }
    ed.buf = buf;
    ed.cap = cap;
  }
  ssize_t n = read(ed.fd, ed.buf + ed.len, ed.cap - ed.len);
  if (n > 0)
    ed.len += (size_t)n;
  else if (n == 0 || (errno != EAGAIN && errno != EINTR))
    ed.eof = 1;
}

static void on_plain_readable(uv_poll_t *uv, int status, int events) {
  (void)uv;
  (void)events;
  lua_State *L = vmlua_loop_state();
  if (!ed.open || !ed.reading || L == NULL) return;
  if (status < 0)
    ed.eof = 1;
  else
    read_plain();
  deliver_buffered(L);
}

static void on_idle(uv_idle_t *uv) {
  lua_State *L = vmlua_loop_state();
  if (!ed.open || !ed.reading || L == NULL) {
    uv_idle_stop(uv);
    return;
  }
  if (deliver_buffered(L)) return;
  if (ed.poll != NULL) { /* wait for more */
    uv_idle_stop(uv);
    uv_poll_start(ed.poll, UV_READABLE | UV_DISCONNECT, on_plain_readable);
  } else { /* a regular file never blocks: read on */
    read_plain();
    deliver_buffered(L);
  }
}

static void show(void) {
  if (!ed.hidden) return;
  ed.hidden = 0;
  if (!ed.reading || !ed.tty) return;
  if (ed.line_open) fputs("\n", stdout);
  rl_forced_update_display(); /* the prompt and the line, from column 0 */
  fflush(stdout);
}

static void on_prepare(uv_prepare_t *uv) {
  (void)uv;
  if (ed.open && ed.hidden) show();
}

/* Methods. */

/* editor:prompt(text): shows the prompt and delivers the next line */
static int e_prompt(lua_State *L) {
  editor *e = check_editor(L);
  const char *prompt = luaL_checkstring(L, 2);
  if (e->reading) return luaL_error(L, "the prompt is already up");
  char *copy = strdup(prompt);
  if (copy == NULL) return luaL_error(L, "out of memory");
  free(e->prompt);
  e->prompt = copy;
  e->reading = 1;
  e->hidden = 0;
  if (e->tty) {
    e->point = e->end = 0;
    fflush(stdout);
    rl_callback_handler_remove();
    rl_callback_handler_install(e->prompt, on_rl_line); /* draws the prompt */
    uv_poll_start(e->poll, UV_READABLE | UV_DISCONNECT, on_tty_readable);
  } else {
    uv_idle_start(e->idle, on_idle); /* lines may be buffered already */
  }
  return 0;
}

/* editor:cancel(): Ctrl-C at the prompt: drops the line, delivers nothing */
static int e_cancel(lua_State *L) {
  editor *e = check_editor(L);
  if (e->reading && e->tty) {
    show();
    int down = cursor_row(e->end) - cursor_row(e->point);
    int col = (int)((strlen(e->prompt) + (size_t)e->end) % (size_t)cols());
    fputs("\r", stdout);
    if (down > 0) fprintf(stdout, "\x1b[%dB", down);
    if (col > 0) fprintf(stdout, "\x1b[%dC", col);
    fputs("^C\n", stdout);
    fflush(stdout);
  }
  stop_reading();
  return 0;
}

/* editor:stop(): takes the prompt off the screen and stops reading, for
 * something else that needs the terminal (a console attached meanwhile) */
static int e_stop(lua_State *L) {
  editor *e = check_editor(L);
  if (e->reading && e->tty && !e->hidden) clear(e->point);
  stop_reading();
  return 0;
}

/* editor:hide([ends_line]): clears the prompt before output is written;
 * ends_line tells whether that output ends its line. */
static int e_hide(lua_State *L) {
  editor *e = check_editor(L);
  if (!e->reading || !e->tty) return 0;
  if (!e->hidden) {
    clear(e->point);
    e->hidden = 1;
  }
  e->line_open = !(lua_isnone(L, 2) || lua_toboolean(L, 2));
  return 0;
}

/* editor:show(): draws the prompt again now rather than before the loop sleeps */
static int e_show(lua_State *L) {
  check_editor(L);
  fflush(stdout);
  show();
  return 0;
}

static int e_reading(lua_State *L) {
  lua_pushboolean(L, check_editor(L)->reading);
  return 1;
}

static int e_tty(lua_State *L) {
  lua_pushboolean(L, check_editor(L)->tty);
  return 1;
}

/* editor:resize(): the terminal changed size (SIGWINCH) */
static int e_resize(lua_State *L) {
  if (check_editor(L)->tty) rl_resize_terminal();
  return 0;
}

static int e_history_add(lua_State *L) {
  editor *e = check_editor(L);
  const char *line = luaL_checkstring(L, 2);
  if (e->tty) add_history(line);
  return 0;
}

/* editor:history_load(path): a missing file is an empty history */
static int e_history_load(lua_State *L) {
  editor *e = check_editor(L);
  const char *path = luaL_checkstring(L, 2);
  if (e->tty) read_history(path);
  return 0;
}

/* editor:history_save(path, max) -> true | nil, err: the file is 0600 */
static int e_history_save(lua_State *L) {
  editor *e = check_editor(L);
  const char *path = luaL_checkstring(L, 2);
  int max = (int)luaL_optinteger(L, 3, 1000);
  if (!e->tty) {
    lua_pushboolean(L, 1);
    return 1;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) close(fd);
  stifle_history(max);
  int rc = write_history(path);
  if (rc == 0 && chmod(path, 0600) != 0) rc = errno;
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* editor:close(): stops reading, gives stdin back as it was; safe twice */
static int e_close(lua_State *L) {
  editor_ref *r = luaL_checkudata(L, 1, EDITOR);
  if (!r->open) return 0;
  r->open = 0;
  if (ed.reading && ed.tty) {
    show();
    fputs("\n", stdout);
    fflush(stdout);
  }
  stop_reading();
  if (ed.tty) rl_callback_handler_remove();
  if (ed.poll) uv_close((uv_handle_t *)ed.poll, free_handle);
  if (ed.idle) uv_close((uv_handle_t *)ed.idle, free_handle);
  if (ed.prepare) uv_close((uv_handle_t *)ed.prepare, free_handle);
  ed.poll = NULL;
  ed.idle = NULL;
  ed.prepare = NULL;
  if (ed.fd_flags >= 0) fcntl(ed.fd, F_SETFL, ed.fd_flags);
  free(ed.prompt);
  free(ed.buf);
  ed.prompt = NULL;
  ed.buf = NULL;
  ed.open = 0;
  vmlua_handle_close(L, &ed.h); /* releases the callbacks and the anchor */
  return 0;
}

static int e_tostring(lua_State *L) {
  editor_ref *r = luaL_checkudata(L, 1, EDITOR);
  if (!r->open)
    lua_pushliteral(L, "editor (closed)");
  else
    lua_pushfstring(L, "editor (%s, %s)", ed.tty ? "terminal" : "plain lines",
                    ed.reading ? "reading" : "idle");
  return 1;
}

/* Whether the readline functions this file calls are libedit's: a plain
 * lua5.4 that loads core.so has GNU readline's under the same names. */
static int have_libedit(void) {
  return rl_library_version != NULL && strncmp(rl_library_version, "EditLine", 8) == 0;
}

/* core.editor{ on_line = fn(line|nil), complete = fn(word, before, out),
 *              name = "vmlua", plain = false } -> editor | nil, err */
static int l_editor(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (ed.open) return luaL_error(L, "an editor is open already");
  lua_getfield(L, 1, "plain");
  int plain = lua_toboolean(L, -1);
  lua_pop(L, 1);
  memset(&ed, 0, sizeof ed);
  ed.fd = STDIN_FILENO;
  ed.fd_flags = fcntl(ed.fd, F_GETFL);
  ed.tty = !plain && isatty(ed.fd) && isatty(STDOUT_FILENO) && have_libedit();

  editor_ref *r = lua_newuserdatauv(L, sizeof *r, 0);
  r->open = 0;
  luaL_setmetatable(L, EDITOR);
  int self = lua_gettop(L);

  uv_poll_t *poll = malloc(sizeof *poll);
  if (poll == NULL) return luaL_error(L, "out of memory");
  if (uv_poll_init(vmlua_loop(), poll, ed.fd) != 0) {
    free(poll); /* a regular file or /dev/null: read it from the idle handle */
    poll = NULL;
    if (ed.tty) return luaL_error(L, "cannot poll the terminal");
  }
  if (ed.fd_flags >= 0) fcntl(ed.fd, F_SETFL, ed.fd_flags); /* keep it blocking */
  ed.poll = poll;
  ed.idle = malloc(sizeof *ed.idle);
  ed.prepare = malloc(sizeof *ed.prepare);
  if (ed.idle == NULL || ed.prepare == NULL) return luaL_error(L, "out of memory");
  uv_idle_init(vmlua_loop(), ed.idle);
  uv_prepare_init(vmlua_loop(), ed.prepare);
  uv_prepare_start(ed.prepare, on_prepare); /* keeps the loop alive until closed */

  /* The callbacks and the anchor live in a vmlua_handle without a uv
   * handle of its own: the editor owns several and closes them itself. */
  ed.h.uv = NULL;
  ed.h.anchor = LUA_NOREF;
  for (int i = 0; i < VMLUA_CALLBACKS; i++) ed.h.callbacks[i] = LUA_NOREF;
  lua_getfield(L, 1, "on_line");
  vmlua_handle_set_callback(L, &ed.h, ON_LINE, -1);
  lua_getfield(L, 1, "complete");
  vmlua_handle_set_callback(L, &ed.h, ON_COMPLETE, -1);
  lua_pop(L, 2);
  vmlua_handle_anchor(L, &ed.h, self);

  if (ed.tty) {
    lua_getfield(L, 1, "name");
    static char name[64];
    snprintf(name, sizeof name, "%s", luaL_optstring(L, -1, "vmlua"));
    lua_pop(L, 1);
    rl_readline_name = name;
    rl_catch_signals = 0; /* the loop handles signals */
    setlocale(LC_CTYPE, ""); /* so that libedit edits UTF-8 as characters */
    rl_instream = stdin;
    rl_outstream = stdout;
    static int initialized;
    if (!initialized) {
      rl_initialize(); /* once: it reads ~/.editrc */
      rl_add_defun("vmlua-complete", on_tab, '\t');
    }
    initialized = 1;
    using_history();
    stifle_history(1000);
  }
  ed.open = 1;
  r->open = 1;
  return 1;
}

void vmlua_open_editline(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"prompt", e_prompt},           {"cancel", e_cancel},
      {"stop", e_stop},
      {"hide", e_hide},               {"show", e_show},
      {"reading", e_reading},         {"tty", e_tty},
      {"resize", e_resize},           {"history_add", e_history_add},
      {"history_load", e_history_load}, {"history_save", e_history_save},
      {"close", e_close},             {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", e_close}, {"__close", e_close}, {"__tostring", e_tostring}, {NULL, NULL}};
  vmlua_new_class(L, EDITOR, methods, meta);
  lua_pushcfunction(L, l_editor);
  lua_setfield(L, -2, "editor");
}
