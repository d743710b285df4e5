/* guard.c: a small process that powers a VM off if vmlua dies.
 *
 * core.guard{pid=, socket=, lock=, files={...}, dir=} forks a guard for the
 * QEMU with that pid. The guard leaves vmlua's session (a closed terminal
 * or a Ctrl-C does not reach it), closes every descriptor but its own,
 * connects to QEMU's second QMP monitor (socket) as soon as QEMU serves it,
 * so that it talks to this QEMU and no other, and waits on a pipe whose
 * write end only vmlua holds. guard:dismiss() (once the VM has ended, or
 * when vmlua exits) writes a byte and the guard exits. If vmlua dies
 * instead, the pipe ends without that byte: the guard takes the VM's name
 * lock (vmlua's went with it), resumes the guest and presses its power
 * button, waits up to GRACE_MS for QEMU to exit, then asks QEMU to quit
 * and, last, kills it; then, if it got the lock, it removes the runtime
 * files and directory. Between fork and _exit it makes only
 * async-signal-safe calls (system calls), since vmlua may have threads. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "core.h"

#define GUARD "vmlua.guard"
#define GRACE_MS 10000 /* for the guest to power off; the README says so */
#define QUIT_MS 3000   /* for QEMU to quit, then to die of SIGKILL */
#define CONNECT_MS 2000 /* for QEMU to serve the monitor, once vmlua is gone */
#define RETRY_MS 50

typedef struct {
  pid_t pid;  /* the guard's; 0 once dismissed */
  pid_t qemu; /* the QEMU it guards */
  int pipe;   /* the write end; -1 once dismissed */
} guard;

/* What the guard needs, all prepared before fork. */
typedef struct {
  pid_t qemu;
  int pidfd; /* QEMU's pidfd (Linux), or -1 */
  int in;    /* the pipe's read end */
  struct sockaddr_un addr;
  const char *lock;   /* the VM's name lock (a file to flock), or NULL */
  const char **files; /* NULL-terminated */
  const char *dir;
} plan;

static guard *check_guard(lua_State *L) { return luaL_checkudata(L, 1, GUARD); }

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_from(int lo, int hi) { /* closes lo..hi; hi < 0: to the end */
  if (hi >= 0 && hi < lo) return;
#ifdef __linux__
  close_range((unsigned)lo, hi < 0 ? ~0U : (unsigned)hi, 0);
#else
  for (int fd = lo; fd <= (hi < 0 ? 1023 : hi); fd++) close(fd);
#endif
}

static int qemu_gone(const plan *p) {
  if (p->pidfd >= 0) {
    struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
    return poll(&pfd, 1, 0) > 0;
  }
  return kill(p->qemu, 0) != 0 && errno == ESRCH;
}

static void kill_qemu(const plan *p) {
#if defined(__linux__) && defined(SYS_pidfd_send_signal)
  if (p->pidfd >= 0) {
    syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0);
    return;
  }
#endif
  kill(p->qemu, SIGKILL);
}

/* Waits up to ms for QEMU to exit, reading (and dropping) what the monitor
 * says. Returns 1 once it has exited. */
static int wait_gone(const plan *p, int sock, long ms) {
  long deadline = now_ms() + ms;
  for (;;) {
    if (qemu_gone(p)) return 1;
    long left = deadline - now_ms();
    if (left <= 0) return 0;
    struct pollfd fds[2] = {{.fd = sock, .events = POLLIN}, {.fd = p->pidfd, .events = POLLIN}};
    int wait = p->pidfd >= 0 && sock < 0 ? (int)left : (int)(left < 100 ? left : 100);
    if (poll(fds, 2, wait) > 0 && sock >= 0 && (fds[0].revents & (POLLIN | POLLHUP))) {
      char buf[512];
      if (read(sock, buf, sizeof buf) <= 0) sock = -1; /* the monitor closed: QEMU is ending */
    }
  }
}

static void say(int sock, const char *text) {
  size_t len = strlen(text);
  while (len > 0) {
    ssize_t n = write(sock, text, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text += n;
    len -= (size_t)n;
  }
}

static int try_connect(const plan *p) {
  int sock = socket(AF_UNIX, SOCK_STREAM, 0);
  if (sock < 0) return -1;
  if (connect(sock, (const struct sockaddr *)&p->addr, sizeof p->addr) == 0) return sock;
  close(sock);
  return -1;
}

/* The guest gets the power button, then QEMU is told to quit, then killed. */
static void power_off(const plan *p, int sock) {
  for (long deadline = now_ms() + CONNECT_MS; sock < 0 && !qemu_gone(p) && now_ms() < deadline;
       poll(NULL, 0, RETRY_MS))
    sock = try_connect(p);
  if (sock >= 0) {
    say(sock, "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"cont\"}\n"
              "{\"execute\":\"system_powerdown\"}\n");
    if (wait_gone(p, sock, GRACE_MS)) return;
    say(sock, "{\"execute\":\"quit\"}\n");
    if (wait_gone(p, sock, QUIT_MS)) return;
  }
  kill_qemu(p);
  wait_gone(p, -1, QUIT_MS);
}

/* vmlua's lock goes as the kernel closes its descriptors, which may be
 * just after the pipe's: so try for a moment. */
static int take_lock(const char *path) {
  int fd = open(path, O_RDWR | O_NOFOLLOW | O_NOCTTY);
  if (fd < 0) return 0;
  for (int ms = 0; flock(fd, LOCK_EX | LOCK_NB) != 0; ms++) { /* before any new vmlua can */
    if ((errno != EWOULDBLOCK && errno != EINTR) || ms == 1000) return 0;
    poll(NULL, 0, 1);
  }
  struct stat locked, named; /* still the file the name is locked by */
  return fstat(fd, &locked) == 0 && lstat(path, &named) == 0 && locked.st_dev == named.st_dev &&
         locked.st_ino == named.st_ino; /* fd stays open: the lock holds until _exit */
}

static void guard_main(const plan *p) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  for (int s = 1; s < NSIG; s++)
    if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);
  setsid(); /* the terminal's hangup and Ctrl-C are for vmlua */
  int keep[2] = {p->in, p->pidfd};
  if (keep[1] >= 0 && keep[1] < keep[0]) keep[0] = p->pidfd, keep[1] = p->in;
  int null = open("/dev/null", O_RDWR);
  for (int fd = 0; fd < 3; fd++)
    if (fd != keep[0] && fd != keep[1] && null >= 0) dup2(null, fd);
  /* every descriptor but 0-2 and its own: no socket or pipe of vmlua stays open */
  int from = 3;
  for (int i = 0; i < 2; i++) {
    if (keep[i] < 3) continue;
    close_from(from, keep[i] - 1);
    from = keep[i] + 1;
  }
  close_from(from, -1);

  struct pollfd fds[2] = {{.fd = p->in, .events = POLLIN}, {.fd = p->pidfd, .events = POLLIN}};
  int sock = -1, gone = 0, tries = 0;
  for (;;) {
    int trying = sock < 0 && !gone && tries < 60000 / RETRY_MS; /* a minute at most */
    int n = poll(fds, 2, trying ? RETRY_MS : -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) _exit(1);
    if (fds[1].revents || (p->pidfd < 0 && sock < 0 && qemu_gone(p)))
      gone = 1, fds[1].fd = -1; /* QEMU ended: only vmlua's word is left to wait for */
    if (trying) sock = try_connect(p), tries++;
    if (fds[0].revents == 0) continue;
    char byte;
    ssize_t got = read(p->in, &byte, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got == 1) _exit(0); /* dismissed */
    break;                  /* vmlua died */
  }
  /* The name is the guard's until QEMU is gone, unless another vmlua took
   * it first (then that one cleared the directory, and it stays as is). */
  int mine = p->lock == NULL || take_lock(p->lock);
  if (!qemu_gone(p)) power_off(p, sock);
  if (mine) {
    for (const char **f = p->files; *f; f++) unlink(*f);
    if (p->dir) rmdir(p->dir);
  }
  _exit(0);
}

static int push_error(lua_State *L, const char *what) {
  lua_pushnil(L);
  lua_pushfstring(L, "cannot start the guard: %s: %s", what, strerror(errno));
  return 2;
}

/* core.guard{pid=, socket=, lock=, files={paths}, dir=} -> guard | nil, err */
static int l_guard(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  plan p = {.pidfd = -1};
  lua_getfield(L, 1, "pid");
  p.qemu = (pid_t)luaL_checkinteger(L, -1);
  lua_getfield(L, 1, "socket");
  const char *socket_path = luaL_checkstring(L, -1);
  luaL_argcheck(L, strlen(socket_path) < sizeof p.addr.sun_path, 1, "socket path too long");
  p.addr.sun_family = AF_UNIX;
  strcpy(p.addr.sun_path, socket_path);
  lua_getfield(L, 1, "dir");
  p.dir = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "lock");
  p.lock = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "files");
  int nfiles = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 0;
  p.files = lua_newuserdatauv(L, sizeof(char *) * (size_t)(nfiles + 1), 0);
  for (int i = 0; i < nfiles; i++) {
    lua_rawgeti(L, -2, i + 1);
    p.files[i] = luaL_checkstring(L, -1);
    lua_pop(L, 1); /* the string stays alive in the files table */
  }
  p.files[nfiles] = NULL;

  guard *g = lua_newuserdatauv(L, sizeof *g, 0);
  g->pid = 0;
  g->pipe = -1;
  g->qemu = p.qemu;
  luaL_setmetatable(L, GUARD);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return push_error(L, "pipe");
#if defined(__linux__) && defined(SYS_pidfd_open)
  /* QEMU is vmlua's child and not yet reaped: the pidfd is surely its own */
  p.pidfd = (int)syscall(SYS_pidfd_open, p.qemu, 0);
#endif
  p.in = fds[0];
  pid_t pid = fork();
  if (pid == 0) guard_main(&p);
  int err = errno;
  close(fds[0]);
  if (p.pidfd >= 0) close(p.pidfd);
  if (pid < 0) {
    close(fds[1]);
    errno = err;
    return push_error(L, "fork");
  }
  g->pid = pid;
  g->pipe = fds[1];
  return 1;
}

/* guard:dismiss(): vmlua looks after the VM itself; safe to call twice */
static int g_dismiss(lua_State *L) {
  guard *g = check_guard(L);
  if (g->pipe >= 0) {
    char byte = 'x';
    ssize_t ignored = write(g->pipe, &byte, 1);
    (void)ignored;
    close(g->pipe);
    g->pipe = -1;
  }
  if (g->pid > 0) {
    while (waitpid(g->pid, NULL, 0) < 0 && errno == EINTR) {}
    g->pid = 0;
  }
  return 0;
}

static int g_pid(lua_State *L) {
  lua_pushinteger(L, check_guard(L)->pid);
  return 1;
}

static int g_tostring(lua_State *L) {
  guard *g = check_guard(L);
  if (g->pid > 0)
    lua_pushfstring(L, "guard %d of QEMU %d (watching)", (int)g->pid, (int)g->qemu);
  else
    lua_pushfstring(L, "guard of QEMU %d (dismissed)", (int)g->qemu);
  return 1;
}

void vmlua_open_guard(lua_State *L) {
  static const luaL_Reg methods[] = {{"dismiss", g_dismiss}, {"pid", g_pid}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", g_dismiss}, {"__close", g_dismiss}, {"__tostring", g_tostring}, {NULL, NULL}};
  vmlua_new_class(L, GUARD, methods, meta);
  lua_pushcfunction(L, l_guard);
  lua_setfield(L, -2, "guard");
}
