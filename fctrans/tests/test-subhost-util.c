/*
 * Helpers for the sub-host tests: real nbdkit exports started through the
 * launcher, TLS credentials made by the credentials helper.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "test-subhost-util.h"
#include "byteorder.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

static char *tmpdir;
static char *launcher;
static char *creds_tool;
static unsigned server_seq;

/*
 * Servers still running, killed if the test aborts: a stopped (SIGSTOP)
 * nbdkit cannot notice that its parent died.
 */
#define MAX_SERVERS 64
/* volatile: read by the SIGABRT handler */
static volatile pid_t live_pids[MAX_SERVERS];

static void track_pid(pid_t pid, bool add)
{
    unsigned i;

    for (i = 0; i < MAX_SERVERS; i++) {
        if (add ? live_pids[i] == 0 : live_pids[i] == pid) {
            live_pids[i] = add ? pid : 0;
            return;
        }
    }
    g_assert(!add);
}

/* SA_RESETHAND: the abort then proceeds with the default action */
static void abort_handler(int sig)
{
    unsigned i;

    for (i = 0; i < MAX_SERVERS; i++) {
        if (live_pids[i] > 0) {
            kill(live_pids[i], SIGKILL);
        }
    }
    raise(sig);
}

const char *subhost_test_tmpdir(void)
{
    return tmpdir;
}

const char *subhost_test_launcher(void)
{
    return launcher;
}

const char *subhost_test_creds_tool(void)
{
    return creds_tool;
}

char *subhost_test_creds(const char *name)
{
    return g_build_filename(tmpdir, "creds", name, NULL);
}

int subhost_test_run(const char *const *argv, char **out)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *sout = NULL;
    g_autofree char *serr = NULL;
    int status;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                      NULL, &sout, &serr, &status, &err)) {
        g_error("cannot run %s: %s", argv[0], err->message);
    }
    if (out) {
        *out = g_strconcat(sout, serr, NULL);
    }
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static void rm_rf(const char *path)
{
    const char *argv[] = { "rm", "-rf", path, NULL };

    subhost_test_run(argv, NULL);
}

static void cleanup(void)
{
    if (tmpdir && !g_getenv("SUBHOST_TEST_KEEP")) {
        rm_rf(tmpdir);
    }
}

static void creds(const char *cmd, ...)
{
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *out = NULL;
    const char *a;
    va_list ap;

    g_ptr_array_add(argv, g_strdup(creds_tool));
    g_ptr_array_add(argv, g_strdup(cmd));
    va_start(ap, cmd);
    while ((a = va_arg(ap, const char *))) {
        /* "@name" is a credentials directory */
        g_ptr_array_add(argv, a[0] == '@' ? subhost_test_creds(a + 1)
                                           : g_strdup(a));
    }
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    if (subhost_test_run((const char *const *)argv->pdata, &out)) {
        g_error("%s %s failed: %s", creds_tool, cmd, out);
    }
    g_ptr_array_free(argv, true);
}

static char *find_tool(const char *env, const char *name)
{
    const char *p = g_getenv(env);
    char *path;

    if (p) {
        path = g_strdup(p);
    } else {
        /* Fall back on the source tree, relative to this file. */
        path = g_build_filename(SUBHOST_SOURCE_ROOT, "contrib", "subhost",
                                name, NULL);
    }
    if (!g_file_test(path, G_FILE_TEST_IS_EXECUTABLE)) {
        g_error("%s not found at %s (set %s)", name, path, env);
    }
    return path;
}

void subhost_test_init(int *argc, char ***argv)
{
    static const char *const tools[] = {
        "nbdkit", "certtool", "psktool",
    };
    g_autoptr(GError) err = NULL;
    struct sigaction sa = { .sa_flags = 0 };
    unsigned i;

    g_test_init(argc, argv, NULL);
    /* A server killed under us must not kill the test. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = abort_handler;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGABRT, &sa, NULL);

    for (i = 0; i < G_N_ELEMENTS(tools); i++) {
        g_autofree char *p = g_find_program_in_path(tools[i]);

        if (!p) {
            g_error("%s is not installed: the sub-host tests need real "
                    "servers (run scripts/install-deps.sh)", tools[i]);
        }
    }
    launcher = find_tool("SUBHOST_LAUNCHER", "splitmem-subhost");
    creds_tool = find_tool("SUBHOST_CREDS", "splitmem-subhost-creds");

    tmpdir = g_dir_make_tmp("subhost-test-XXXXXX", &err);
    if (!tmpdir) {
        g_error("cannot make a temporary directory: %s", err->message);
    }
    atexit(cleanup);

    /*
     * A site CA for servers, one client CA per VM, a server and a client
     * directory per VM, a PSK per VM, and a second key for vmA's identity.
     */
    creds("ca", "--cn", "splitmem test site", "--dir", "@site", NULL);
    creds("ca", "--cn", "vmA clients", "--dir", "@caA", NULL);
    creds("ca", "--cn", "vmB clients", "--dir", "@caB", NULL);
    creds("server", "--ca", "@site", "--client-ca", "@caA",
          "--hostname", "localhost", "--ip", "127.0.0.1", "--dir", "@srvA",
          NULL);
    creds("server", "--ca", "@site", "--client-ca", "@caB",
          "--hostname", "localhost", "--ip", "127.0.0.1", "--dir", "@srvB",
          NULL);
    creds("client", "--ca", "@caA", "--server-ca", "@site", "--vm", "vmA",
          "--dir", "@cliA", NULL);
    creds("client", "--ca", "@caB", "--server-ca", "@site", "--vm", "vmB",
          "--dir", "@cliB", NULL);
    /* A client that trusts another CA than the servers' */
    creds("client", "--ca", "@caA", "--server-ca", "@caB", "--vm", "vmA",
          "--dir", "@cliA-untrusting", NULL);
    creds("psk", "--identity", "vmA", "--dir", "@pskA", NULL);
    creds("psk", "--identity", "vmB", "--dir", "@pskB", NULL);
    creds("psk", "--identity", "vmA", "--dir", "@pskA-wrongkey", NULL);

    /* vmA's key presented under vmB's identity */
    {
        g_autofree char *a = subhost_test_creds("pskA/keys.psk");
        g_autofree char *d = subhost_test_creds("pskA-as-vmB");
        g_autofree char *f = g_build_filename(d, "keys.psk", NULL);
        g_autofree char *line = NULL;
        g_autofree char *out = NULL;

        if (!g_file_get_contents(a, &line, NULL, &err) ||
            !strchr(line, ':')) {
            g_error("cannot read %s", a);
        }
        out = g_strconcat("vmB", strchr(line, ':'), NULL);
        g_mkdir_with_parents(d, 0700);
        if (!g_file_set_contents(f, out, -1, &err)) {
            g_error("cannot write %s: %s", f, err->message);
        }
    }
}

static int free_tcp_port(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        getsockname(fd, (struct sockaddr *)&sa, &len)) {
        g_error("cannot find a free TCP port: %s", g_strerror(errno));
    }
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* Spawn @argv (it writes s->pidfile); true once that file exists. */
static bool server_spawn_argv(SubhostTestServer *s, GPtrArray *argv)
{
    g_autoptr(GError) err = NULL;
    int64_t deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;

    g_ptr_array_add(argv, NULL);
    g_unlink(s->pidfile);
    if (!g_spawn_async(NULL, (char **)argv->pdata, NULL,
                       G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH |
                       G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, &s->pid,
                       &err)) {
        g_error("cannot start %s: %s", (char *)argv->pdata[0],
                err->message);
    }
    track_pid(s->pid, true);
    while (!g_file_test(s->pidfile, G_FILE_TEST_EXISTS)) {
        int status;

        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            track_pid(s->pid, false);
            s->pid = 0;
            return false;       /* it failed: port taken, bad option... */
        }
        if (g_get_monotonic_time() > deadline) {
            g_error("nbdkit for %s did not become ready", s->vm);
        }
        g_usleep(5000);
    }
    return true;
}

/* Spawn the launcher; true once nbdkit wrote its pid file (ready). */
static bool server_spawn(SubhostTestServer *s, const char *size,
                         SubhostTestTls tls, const char *const *extra)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    const char *suffix = s->vm[strlen(s->vm) - 1] == 'B' ? "B" : "A";

    g_ptr_array_add(argv, g_strdup(launcher));
    g_ptr_array_add(argv, g_strdup_printf("--vm=%s", s->vm));
    g_ptr_array_add(argv, g_strdup_printf("--size=%s", size));
    if (s->sock_path) {
        g_ptr_array_add(argv, g_strdup_printf("--unix=%s", s->sock_path));
    } else {
        g_ptr_array_add(argv, g_strdup_printf("--listen=127.0.0.1:%d",
                                              s->port));
    }
    switch (tls) {
    case SUBHOST_TLS_NONE:
        g_ptr_array_add(argv, g_strdup("--no-tls"));
        break;
    case SUBHOST_TLS_PSK:
        g_ptr_array_add(argv, g_strdup_printf("--tls-psk=%s/creds/psk%s",
                                              tmpdir, suffix));
        break;
    case SUBHOST_TLS_X509:
        g_ptr_array_add(argv, g_strdup_printf("--tls-creds=%s/creds/srv%s",
                                              tmpdir, suffix));
        break;
    }
    g_ptr_array_add(argv, g_strdup_printf("--pidfile=%s", s->pidfile));
    g_ptr_array_add(argv, g_strdup("--exit-with-parent"));
    g_ptr_array_add(argv, g_strdup("--cgroup=none"));
    for (; extra && *extra; extra++) {
        g_ptr_array_add(argv, g_strdup(*extra));
    }
    return server_spawn_argv(s, argv);
}

SubhostTestServer *subhost_test_nbdkit_start(const char *vm,
                                             const char *const *args)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    SubhostTestServer *s = g_new0(SubhostTestServer, 1);
    unsigned seq = ++server_seq;

    s->vm = g_strdup(vm);
    s->pidfile = g_strdup_printf("%s/%s-%u.pid", tmpdir, vm, seq);
    s->sock_path = g_strdup_printf("%s/%s-%u.sock", tmpdir, vm, seq);
    s->uri = g_strdup_printf("nbd+unix:///%s?socket=%s", vm, s->sock_path);
    g_ptr_array_add(argv, g_strdup("nbdkit"));
    g_ptr_array_add(argv, g_strdup("--foreground"));
    g_ptr_array_add(argv, g_strdup("--exit-with-parent"));
    g_ptr_array_add(argv, g_strdup_printf("--pidfile=%s", s->pidfile));
    g_ptr_array_add(argv, g_strdup_printf("--unix=%s", s->sock_path));
    for (; args && *args; args++) {
        g_ptr_array_add(argv, g_strdup(*args));
    }
    if (!server_spawn_argv(s, argv)) {
        g_error("cannot start nbdkit for %s", vm);
    }
    return s;
}

SubhostTestServer *subhost_test_server_start(const char *vm,
                                             const char *size,
                                             SubhostTestTls tls, bool tcp,
                                             const char *const *extra)
{
    SubhostTestServer *s = g_new0(SubhostTestServer, 1);
    const char *scheme = tls == SUBHOST_TLS_NONE ? "nbd" : "nbds";
    unsigned seq = ++server_seq;
    int attempt;

    s->vm = g_strdup(vm);
    s->pidfile = g_strdup_printf("%s/%s-%u.pid", tmpdir, vm, seq);
    if (!tcp) {
        s->sock_path = g_strdup_printf("%s/%s-%u.sock", tmpdir, vm, seq);
        s->uri = g_strdup_printf("%s+unix:///%s?socket=%s", scheme, vm,
                                 s->sock_path);
        if (!server_spawn(s, size, tls, extra)) {
            g_error("cannot start an export for %s", vm);
        }
        return s;
    }
    /* A free port can be taken by someone else before nbdkit binds it. */
    for (attempt = 0; attempt < 5; attempt++) {
        s->port = free_tcp_port();
        if (server_spawn(s, size, tls, extra)) {
            s->uri = g_strdup_printf("%s://127.0.0.1:%d/%s", scheme, s->port,
                                     vm);
            return s;
        }
    }
    g_error("cannot start an export for %s on TCP", vm);
}

void subhost_test_server_restart(SubhostTestServer *s, const char *size,
                                 SubhostTestTls tls,
                                 const char *const *extra)
{
    int attempt;

    g_assert(s->pid == 0);
    for (attempt = 0; attempt < 50; attempt++) {
        if (s->sock_path) {
            g_unlink(s->sock_path);
        }
        if (server_spawn(s, size, tls, extra)) {
            return;
        }
        /* The old listening socket may linger for a moment. */
        g_usleep(100000);
    }
    g_error("cannot restart the export for %s", s->vm);
}

void subhost_test_server_signal(SubhostTestServer *s, int sig)
{
    int status;

    g_assert(s->pid > 0);
    kill(s->pid, sig);
    if (sig == SIGKILL) {
        waitpid(s->pid, NULL, 0);
        g_spawn_close_pid(s->pid);
        track_pid(s->pid, false);
        s->pid = 0;
    } else if (sig == SIGSTOP) {
        /* kill() returns before the process has stopped: wait for it. */
        if (waitpid(s->pid, &status, WUNTRACED) != s->pid ||
            !WIFSTOPPED(status)) {
            g_error("nbdkit for %s did not stop", s->vm);
        }
    }
}

void subhost_test_server_stop(SubhostTestServer *s)
{
    if (!s) {
        return;
    }
    if (s->pid > 0) {
        /* SIGKILL: nbdkit waits for its clients on SIGTERM. */
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        g_spawn_close_pid(s->pid);
        track_pid(s->pid, false);
    }
    if (s->sock_path) {
        g_unlink(s->sock_path);
    }
    g_unlink(s->pidfile);
    g_free(s->vm);
    g_free(s->sock_path);
    g_free(s->pidfile);
    g_free(s->uri);
    g_free(s);
}

/*
 * A minimal NBD server of our own, for behaviour nbdkit cannot be asked
 * for: closing a connection right after its handshake, counting flushes,
 * leaving flush or multi-conn out. Fixed newstyle, NBD_OPT_GO only
 * (structured replies refused, so simple replies), reads return zeros,
 * writes, trims and flushes are acknowledged and forgotten.
 */
#define NBD_MAGIC_INIT      UINT64_C(0x4e42444d41474943)
#define NBD_MAGIC_OPT       UINT64_C(0x49484156454f5054)
#define NBD_MAGIC_OPT_REP   UINT64_C(0x3e889045565a9)
#define NBD_MAGIC_REQ       0x25609513u
#define NBD_MAGIC_REP       0x67446698u
#define NBD_OPT_EXPORT_NAME 1
#define NBD_OPT_ABORT       2
#define NBD_OPT_GO          7
#define NBD_REP_ACK         1
#define NBD_REP_INFO        3
#define NBD_REP_ERR_UNSUP   0x80000001u
#define NBD_CMD_READ        0
#define NBD_CMD_WRITE       1
#define NBD_CMD_DISC        2
#define NBD_CMD_FLUSH       3
#define NBD_FLAG_HAS_FLAGS  (1u << 0)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_TRIM  (1u << 5)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)
#define FAKE_MAX_CONNS      64

struct SubhostFakeServer {
    char *sock_path;
    char *uri;
    uint64_t size;
    uint16_t tx_flags;
    unsigned flushes;           /* atomic */
    int listen_fd;
    GThread *acceptor;

    pthread_mutex_t lock;
    int conn_fd[FAKE_MAX_CONNS];
    GThread *conn_thread[FAKE_MAX_CONNS];
    unsigned nconns;
    unsigned drop_next;         /* close the next N right after handshake */
    bool stopping;
};

typedef struct FakeConn {
    SubhostFakeServer *f;
    int fd;
    bool drop;
} FakeConn;

static bool fd_read_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t r = read(fd, p, len);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return false;
        }
        p += r;
        len -= r;
    }
    return true;
}

static bool fd_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len) {
        ssize_t r = send(fd, p, len, MSG_NOSIGNAL);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return false;
        }
        p += r;
        len -= r;
    }
    return true;
}

static bool fake_opt_reply(int fd, uint32_t opt, uint32_t type,
                           const void *data, uint32_t len)
{
    uint8_t h[20];

    fctrans_put_be64(h, NBD_MAGIC_OPT_REP);
    fctrans_put_be32(h + 8, opt);
    fctrans_put_be32(h + 12, type);
    fctrans_put_be32(h + 16, len);
    return fd_write_all(fd, h, sizeof(h)) &&
           (!len || fd_write_all(fd, data, len));
}

/* Negotiation up to transmission; false if the client went away. */
static bool fake_handshake(SubhostFakeServer *f, int fd)
{
    uint8_t h[18];
    uint8_t cflags[4];

    fctrans_put_be64(h, NBD_MAGIC_INIT);
    fctrans_put_be64(h + 8, NBD_MAGIC_OPT);
    fctrans_put_be16(h + 16, 3);        /* FIXED_NEWSTYLE | NO_ZEROES */
    if (!fd_write_all(fd, h, sizeof(h)) ||
        !fd_read_all(fd, cflags, sizeof(cflags))) {
        return false;
    }
    for (;;) {
        uint8_t oh[16];
        g_autofree uint8_t *data = NULL;
        uint32_t opt, len;

        if (!fd_read_all(fd, oh, sizeof(oh)) ||
            fctrans_get_be64(oh) != NBD_MAGIC_OPT) {
            return false;
        }
        opt = fctrans_get_be32(oh + 8);
        len = fctrans_get_be32(oh + 12);
        if (len > 65536) {
            return false;
        }
        data = g_malloc(len + 1);
        if (len && !fd_read_all(fd, data, len)) {
            return false;
        }
        if (opt == NBD_OPT_ABORT || opt == NBD_OPT_EXPORT_NAME) {
            return false;
        }
        if (opt == NBD_OPT_GO) {
            uint8_t info[12];

            fctrans_put_be16(info, 0);  /* NBD_INFO_EXPORT */
            fctrans_put_be64(info + 2, f->size);
            fctrans_put_be16(info + 10, f->tx_flags);
            return fake_opt_reply(fd, opt, NBD_REP_INFO, info,
                                  sizeof(info)) &&
                   fake_opt_reply(fd, opt, NBD_REP_ACK, NULL, 0);
        }
        if (!fake_opt_reply(fd, opt, NBD_REP_ERR_UNSUP, NULL, 0)) {
            return false;
        }
    }
}

static void fake_serve(SubhostFakeServer *f, int fd)
{
    g_autofree uint8_t *buf = g_malloc(32 << 20);

    for (;;) {
        uint8_t rq[28], rp[16];
        uint32_t type, len;

        if (!fd_read_all(fd, rq, sizeof(rq)) ||
            fctrans_get_be32(rq) != NBD_MAGIC_REQ) {
            return;
        }
        type = fctrans_get_be32(rq + 4) & 0xffff;
        len = fctrans_get_be32(rq + 24);
        if (type == NBD_CMD_DISC || len > (32u << 20)) {
            return;
        }
        if (type == NBD_CMD_WRITE && !fd_read_all(fd, buf, len)) {
            return;
        }
        if (type == NBD_CMD_FLUSH) {
            /* Counted before the reply: the client sees it once done */
            __atomic_add_fetch(&f->flushes, 1, __ATOMIC_SEQ_CST);
        }
        fctrans_put_be32(rp, NBD_MAGIC_REP);
        fctrans_put_be32(rp + 4, 0);
        memcpy(rp + 8, rq + 8, 8);      /* the handle */
        if (!fd_write_all(fd, rp, sizeof(rp))) {
            return;
        }
        if (type == NBD_CMD_READ) {
            memset(buf, 0, len);
            if (!fd_write_all(fd, buf, len)) {
                return;
            }
        }
    }
}

static gpointer fake_conn_thread(gpointer opaque)
{
    FakeConn *c = opaque;

    if (fake_handshake(c->f, c->fd) && !c->drop) {
        fake_serve(c->f, c->fd);
    }
    /* The descriptor is closed by stop: drop_all may still shut it down */
    shutdown(c->fd, SHUT_RDWR);
    g_free(c);
    return NULL;
}

static gpointer fake_acceptor(gpointer opaque)
{
    SubhostFakeServer *f = opaque;

    for (;;) {
        int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        FakeConn *c;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            return NULL;        /* stop shut the socket down */
        }
        pthread_mutex_lock(&f->lock);
        if (f->stopping || f->nconns == FAKE_MAX_CONNS) {
            pthread_mutex_unlock(&f->lock);
            close(fd);
            continue;
        }
        c = g_new0(FakeConn, 1);
        c->f = f;
        c->fd = fd;
        if (f->drop_next) {
            f->drop_next--;
            c->drop = true;
        }
        f->conn_fd[f->nconns] = fd;
        f->conn_thread[f->nconns] = g_thread_new("fake-nbd-conn",
                                                 fake_conn_thread, c);
        f->nconns++;
        pthread_mutex_unlock(&f->lock);
    }
}

SubhostFakeServer *subhost_fake_server_start_opts(const char *vm,
                                                  uint64_t size,
                                                  unsigned opts)
{
    SubhostFakeServer *f = g_new0(SubhostFakeServer, 1);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    f->size = size;
    f->tx_flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_TRIM;
    if (!(opts & SUBHOST_FAKE_NO_FLUSH)) {
        f->tx_flags |= NBD_FLAG_SEND_FLUSH;
    }
    if (!(opts & SUBHOST_FAKE_NO_MULTI_CONN)) {
        f->tx_flags |= NBD_FLAG_CAN_MULTI_CONN;
    }
    f->sock_path = g_strdup_printf("%s/fake-%s-%u.sock", tmpdir, vm,
                                   ++server_seq);
    f->uri = g_strdup_printf("nbd+unix:///%s?socket=%s", vm, f->sock_path);
    g_assert_cmpuint(strlen(f->sock_path), <, sizeof(sa.sun_path));
    strcpy(sa.sun_path, f->sock_path);
    f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f->listen_fd < 0 ||
        bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        listen(f->listen_fd, 16)) {
        g_error("fake NBD server: %s", g_strerror(errno));
    }
    pthread_mutex_init(&f->lock, NULL);
    f->acceptor = g_thread_new("fake-nbd", fake_acceptor, f);
    return f;
}

SubhostFakeServer *subhost_fake_server_start(const char *vm, uint64_t size)
{
    return subhost_fake_server_start_opts(vm, size, 0);
}

const char *subhost_fake_server_uri(SubhostFakeServer *f)
{
    return f->uri;
}

void subhost_fake_server_drop_all(SubhostFakeServer *f)
{
    unsigned i;

    pthread_mutex_lock(&f->lock);
    for (i = 0; i < f->nconns; i++) {
        shutdown(f->conn_fd[i], SHUT_RDWR);
    }
    pthread_mutex_unlock(&f->lock);
}

void subhost_fake_server_drop_after_handshake(SubhostFakeServer *f,
                                              unsigned n)
{
    pthread_mutex_lock(&f->lock);
    f->drop_next = n;
    pthread_mutex_unlock(&f->lock);
}

unsigned subhost_fake_server_connections(SubhostFakeServer *f)
{
    unsigned n;

    pthread_mutex_lock(&f->lock);
    n = f->nconns;
    pthread_mutex_unlock(&f->lock);
    return n;
}

unsigned subhost_fake_server_flushes(SubhostFakeServer *f)
{
    return __atomic_load_n(&f->flushes, __ATOMIC_SEQ_CST);
}

void subhost_fake_server_stop(SubhostFakeServer *f)
{
    unsigned i;

    pthread_mutex_lock(&f->lock);
    f->stopping = true;
    pthread_mutex_unlock(&f->lock);
    /* Wakes accept() up on Linux */
    shutdown(f->listen_fd, SHUT_RDWR);
    g_thread_join(f->acceptor);
    subhost_fake_server_drop_all(f);
    for (i = 0; i < f->nconns; i++) {
        g_thread_join(f->conn_thread[i]);
        close(f->conn_fd[i]);
    }
    close(f->listen_fd);
    g_unlink(f->sock_path);
    pthread_mutex_destroy(&f->lock);
    g_free(f->sock_path);
    g_free(f->uri);
    g_free(f);
}
