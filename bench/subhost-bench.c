/*
 * subhost-bench: speed of the sub-host channel beside its floors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * In one run, against nbdkit's memory plugin on loopback TCP, through
 * fctrans_subhost_*():
 *   - 4 KiB read latency (p50, p99) with 1 and with many requests in
 *     flight, beside a plain TCP request/response of the same sizes
 *     (28-byte request, 16-byte header + 4 KiB reply, TCP_NODELAY) with
 *     the same number in flight;
 *   - bulk write throughput, beside a plain socket stream;
 *   - 4 KiB page writes per second, and read latency under a bulk write
 *     load with one and with two lanes (why the urgent lane exists).
 * Floors and channel alternate over several rounds; the median round is
 * reported, so that load from other processes hits both alike.
 *
 * Latency is from submission to the start of the completion callback (on
 * the channel's thread), which is where a userfaultfd page-in would copy
 * the page in.
 */
#include "subhost.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define PAGE            4096
#define REQ_LEN         28      /* NBD request header */
#define REPLY_LEN       (16 + PAGE) /* NBD simple reply header + data */
#define STREAM_CHUNK    (1 << 20)

typedef struct BenchOpts {
    unsigned rounds;
    unsigned samples;           /* latency samples per measurement */
    unsigned depths[4];
    unsigned ndepths;
    uint64_t write_total;       /* bytes per bulk write pass */
    size_t write_size;          /* bytes per bulk write request */
    unsigned write_depth;
    const char *allocator;
    unsigned threads;
    bool json;
} BenchOpts;

static BenchOpts opts = {
    .rounds = 3,
    .samples = 20000,
    .depths = { 16, 64 },
    .ndepths = 2,
    .write_total = 1ull << 30,
    .write_size = 256 << 10,    /* split migration's write batches */
    .write_depth = 32,
    .allocator = "sparse",
    .threads = 16,
};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* Percentile (0..1000 per mille) of @n samples, sorting them. */
static double pct_us(int64_t *v, size_t n, unsigned permille)
{
    size_t i;

    qsort(v, n, sizeof(*v), cmp_i64);
    i = (n * permille + 999) / 1000;
    i = i ? i - 1 : 0;
    return v[MIN(i, n - 1)] / 1000.0;
}

static double median(double *v, unsigned n)
{
    unsigned i, j;

    for (i = 1; i < n; i++) {
        for (j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];

            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;
static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "subhost-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* Plain TCP floors */

static int listen_loopback(int *port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
                             sizeof(one)) ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        listen(fd, 16) || getsockname(fd, (struct sockaddr *)&sa, &len)) {
        die("listen: %s", strerror(errno));
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static int connect_loopback(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))) {
        die("connect: %s", strerror(errno));
    }
    return fd;
}

static bool read_full(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len) {
        ssize_t r = recv(fd, p, len, MSG_WAITALL);

        if (r <= 0) {
            if (r < 0 && errno == EINTR) {
                continue;
            }
            return false;
        }
        p += r;
        len -= r;
    }
    return true;
}

static bool write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t r = send(fd, p, len, MSG_NOSIGNAL);

        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        p += r;
        len -= r;
    }
    return true;
}

/*
 * The floor server, a process of its own like nbdkit: one connection at a
 * time. The first byte picks the mode: 'R' request/response (28-byte
 * request in, 4 KiB reply out, like an NBD read), 'S' stream (read and
 * discard until EOF, then one byte back), 'Q' quit.
 */
static void floor_server(int lfd)
{
    g_autofree char *buf = g_malloc0(MAX(REPLY_LEN, STREAM_CHUNK));

    for (;;) {
        int one = 1;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        char mode;

        if (fd < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (!read_full(fd, &mode, 1)) {
            close(fd);
            continue;
        }
        if (mode == 'Q') {
            close(fd);
            return;
        } else if (mode == 'R') {
            char req[REQ_LEN];

            while (read_full(fd, req, REQ_LEN) &&
                   write_full(fd, buf, REPLY_LEN)) {
                /* serve */
            }
        } else if (mode == 'S') {
            ssize_t r;

            while ((r = recv(fd, buf, STREAM_CHUNK, 0)) > 0 ||
                   (r < 0 && errno == EINTR)) {
                /* discard */
            }
            write_full(fd, "k", 1);
        }
        close(fd);
    }
}

/* Fork the floor server; call before any thread exists. */
static pid_t floor_start(int *port)
{
    int lfd = listen_loopback(port);
    pid_t pid = fork();

    if (pid < 0) {
        die("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        floor_server(lfd);
        _exit(0);
    }
    close(lfd);
    return pid;
}

/* Request/response with @depth in flight; @n latencies into @lat. */
static double floor_rr(int port, unsigned depth, int64_t *lat, size_t n)
{
    int fd = connect_loopback(port);
    g_autofree int64_t *sent = g_new(int64_t, depth);
    char req[REQ_LEN] = { 0 };
    char reply[REPLY_LEN];
    size_t done = 0, head = 0;
    unsigned i;
    int64_t t0;

    write_full(fd, "R", 1);
    /* warm up */
    for (i = 0; i < 200; i++) {
        write_full(fd, req, REQ_LEN);
        read_full(fd, reply, REPLY_LEN);
    }
    t0 = now_ns();
    for (i = 0; i < depth; i++) {
        sent[i] = now_ns();
        write_full(fd, req, REQ_LEN);
    }
    while (done < n) {
        if (!read_full(fd, reply, REPLY_LEN)) {
            die("floor server: %s", strerror(errno));
        }
        lat[done++] = now_ns() - sent[head];
        if (done + depth <= n) {
            sent[head] = now_ns();
            write_full(fd, req, REQ_LEN);
        }
        head = (head + 1) % depth;
    }
    t0 = now_ns() - t0;
    close(fd);
    return n / (t0 / 1e9);
}

/* Stream @total bytes; returns bytes per second. */
static double floor_stream(int port, uint64_t total)
{
    int fd = connect_loopback(port);
    g_autofree char *buf = g_malloc(STREAM_CHUNK);
    uint64_t sent = 0;
    int64_t t0;
    char ack;

    memset(buf, 0x5a, STREAM_CHUNK);
    write_full(fd, "S", 1);
    t0 = now_ns();
    while (sent < total) {
        size_t len = MIN(STREAM_CHUNK, total - sent);

        if (!write_full(fd, buf, len)) {
            die("stream: %s", strerror(errno));
        }
        sent += len;
    }
    shutdown(fd, SHUT_WR);
    if (!read_full(fd, &ack, 1)) {
        die("stream: no acknowledgement");
    }
    t0 = now_ns() - t0;
    close(fd);
    return total / (t0 / 1e9);
}

/* The channel */

typedef struct Loop {
    FctransSubhost *sh;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    FctransSubhostOp op;
    unsigned flags;
    uint8_t *buf;               /* depth * len bytes */
    size_t len;
    uint64_t base;              /* offsets in [base, base + span) */
    uint64_t span;
    uint64_t next_seq;          /* offsets for sequential writes */
    size_t n;                   /* requests to complete */
    size_t submitted;
    size_t done;
    int64_t *lat;               /* or NULL */
    bool stop;                  /* stop resubmitting (background load) */
    bool wake_each;             /* signal the waiter on every completion */
    bool failed;
    GRand *rand;
} Loop;

typedef struct LoopReq {
    Loop *l;
    unsigned slot;
    int64_t start;
} LoopReq;

static void loop_done(void *opaque, const GError *err);

/* Submit @r unless enough were submitted; lock held. */
static void loop_next(Loop *l, LoopReq *r)
{
    g_autoptr(GError) e = NULL;
    uint8_t *buf = l->buf + (size_t)r->slot * l->len;
    uint64_t off;
    bool ok;

    if (l->stop || (l->n && l->submitted >= l->n)) {
        g_free(r);
        return;
    }
    l->submitted++;
    if (!l->rand) {
        off = l->base + l->next_seq;
        l->next_seq = (l->next_seq + l->len) % l->span;
    } else {
        off = l->base + (uint64_t)g_rand_int_range(l->rand, 0,
                                                   l->span / l->len) * l->len;
    }
    r->start = now_ns();
    if (l->op == FCTRANS_SUBHOST_OP_READ) {
        ok = fctrans_subhost_read(l->sh, off, l->len, buf, l->flags,
                                  loop_done, r, &e);
    } else {
        ok = fctrans_subhost_write(l->sh, off, l->len, buf, l->flags,
                                   loop_done, r, &e);
    }
    if (!ok) {
        die("submit: %s", e->message);
    }
}

static void loop_done(void *opaque, const GError *err)
{
    LoopReq *r = opaque;
    Loop *l = r->l;
    int64_t t = now_ns() - r->start;

    pthread_mutex_lock(&l->lock);
    if (err) {
        die("%s: %s", fctrans_subhost_op_name(l->op), err->message);
    }
    if (l->lat && l->done < l->n) {
        l->lat[l->done] = t;
    }
    l->done++;
    loop_next(l, r);
    /*
     * Wake the waiting thread only when it has something to do: a thread
     * woken per completion would be one more in every round trip.
     */
    if (l->wake_each || l->done == l->submitted) {
        pthread_cond_broadcast(&l->cond);
    }
    pthread_mutex_unlock(&l->lock);
}

/*
 * Closed loop with @depth requests in flight until @n completed (n == 0:
 * until l->stop). Callbacks resubmit from the channel's thread.
 */
static void loop_start(Loop *l, unsigned depth)
{
    unsigned i;

    pthread_mutex_lock(&l->lock);
    for (i = 0; i < depth; i++) {
        LoopReq *r = g_new0(LoopReq, 1);

        r->l = l;
        r->slot = i;
        loop_next(l, r);
    }
    pthread_mutex_unlock(&l->lock);
}

static void loop_wait(Loop *l)
{
    pthread_mutex_lock(&l->lock);
    while (l->done < l->submitted || (l->n && l->done < l->n && !l->stop)) {
        pthread_cond_wait(&l->cond, &l->lock);
    }
    pthread_mutex_unlock(&l->lock);
}

static void loop_init(Loop *l, FctransSubhost *sh, FctransSubhostOp op,
                      size_t len, unsigned depth, uint64_t base,
                      uint64_t span, size_t n, int64_t *lat, bool random)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    l->sh = sh;
    l->op = op;
    l->len = len;
    l->base = base;
    l->span = span;
    l->n = n;
    l->lat = lat;
    l->buf = g_malloc((size_t)depth * len);
    memset(l->buf, 0xa5, (size_t)depth * len);
    l->rand = random ? g_rand_new_with_seed(42) : NULL;
}

static void loop_clear(Loop *l)
{
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->cond);
    g_free(l->buf);
    if (l->rand) {
        g_rand_free(l->rand);
    }
}

/*
 * 1 in flight from a caller thread: submit, sleep until the callback ran,
 * submit the next. Latency is submission to callback.
 */
static double chan_read_lat(FctransSubhost *sh, unsigned depth,
                            uint64_t span, int64_t *lat, size_t n,
                            bool chained)
{
    Loop l;
    int64_t t0;
    double rate;

    /* warm up */
    loop_init(&l, sh, FCTRANS_SUBHOST_OP_READ, PAGE, depth, 0, span, 200,
              NULL, true);
    loop_start(&l, MIN(depth, 200));
    loop_wait(&l);
    loop_clear(&l);

    loop_init(&l, sh, FCTRANS_SUBHOST_OP_READ, PAGE, depth, 0, span, n, lat,
              true);
    t0 = now_ns();
    l.wake_each = !chained;
    if (!chained) {
        /*
         * The caller thread submits each request and sleeps until its
         * callback ran: the page-fault shape (a fault thread submits, the
         * channel thread completes).
         */
        size_t i;

        for (i = 0; i < n; i++) {
            LoopReq *r = g_new0(LoopReq, 1);

            r->l = &l;
            pthread_mutex_lock(&l.lock);
            l.n = i + 1;
            loop_next(&l, r);
            while (l.done <= i) {
                pthread_cond_wait(&l.cond, &l.lock);
            }
            pthread_mutex_unlock(&l.lock);
        }
    } else {
        /* Each callback submits the next request from the channel thread */
        loop_start(&l, depth);
        loop_wait(&l);
    }
    rate = n / ((now_ns() - t0) / 1e9);
    loop_clear(&l);
    return rate;
}

/* The same reads through libnbd alone, synchronously, on its own handle. */
static double libnbd_read_lat(struct nbd_handle *nbd, uint64_t span,
                              int64_t *lat, size_t n)
{
    GRand *r = g_rand_new_with_seed(42);
    uint8_t buf[PAGE];
    size_t i;
    int64_t t0 = now_ns();

    for (i = 0; i < n + 200; i++) {
        uint64_t off = (uint64_t)g_rand_int_range(r, 0, span / PAGE) * PAGE;
        int64_t t = now_ns();

        if (i == 200) {
            t0 = t;
        }
        if (nbd_pread(nbd, buf, PAGE, off, 0) == -1) {
            die("libnbd: %s", nbd_get_error());
        }
        if (i >= 200) {
            lat[i - 200] = now_ns() - t;
        }
    }
    g_rand_free(r);
    return n / ((now_ns() - t0) / 1e9);
}

/* Bulk writes of opts.write_total bytes; bytes per second. */
static double chan_write_bw(FctransSubhost *sh, uint64_t base)
{
    Loop l;
    size_t n = opts.write_total / opts.write_size;
    int64_t t0;
    double bw;

    loop_init(&l, sh, FCTRANS_SUBHOST_OP_WRITE, opts.write_size,
              opts.write_depth, base, opts.write_total, n, NULL, false);
    t0 = now_ns();
    loop_start(&l, opts.write_depth);
    loop_wait(&l);
    bw = (double)n * opts.write_size / ((now_ns() - t0) / 1e9);
    loop_clear(&l);
    return bw;
}

/* 4 KiB page writes at depth 64; pages per second. */
static double chan_page_writes(FctransSubhost *sh, uint64_t base,
                               uint64_t span, size_t n)
{
    Loop l;
    int64_t t0;
    double rate;

    loop_init(&l, sh, FCTRANS_SUBHOST_OP_WRITE, PAGE, 64, base, span, n,
              NULL, true);
    t0 = now_ns();
    loop_start(&l, 64);
    loop_wait(&l);
    rate = n / ((now_ns() - t0) / 1e9);
    loop_clear(&l);
    return rate;
}

/* nbdkit */

static GPid nbdkit_pid;
static char *tmpdir;

static void nbdkit_stop(void)
{
    if (nbdkit_pid) {
        /* Its data is of no use: do not wait for clients to leave. */
        kill(nbdkit_pid, SIGKILL);
        waitpid(nbdkit_pid, NULL, 0);
        nbdkit_pid = 0;
    }
    if (tmpdir) {
        g_autofree char *pid = g_build_filename(tmpdir, "nbdkit.pid", NULL);

        unlink(pid);
        rmdir(tmpdir);
    }
}

static char *nbdkit_start(uint64_t size)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *pidfile = NULL;
    g_autofree char *size_arg = g_strdup_printf("size=%" PRIu64, size);
    g_autofree char *alloc_arg = g_strdup_printf("allocator=%s",
                                                 opts.allocator);
    g_autofree char *threads_arg = g_strdup_printf("--threads=%u",
                                                   opts.threads);
    int attempt;

    tmpdir = g_dir_make_tmp("subhost-bench-XXXXXX", &err);
    if (!tmpdir) {
        die("%s", err->message);
    }
    pidfile = g_build_filename(tmpdir, "nbdkit.pid", NULL);
    for (attempt = 0; attempt < 5; attempt++) {
        int lfd, port, status;
        g_autofree char *port_arg = NULL;
        int64_t deadline = now_ns() + 10000000000ll;

        lfd = listen_loopback(&port);
        close(lfd);
        port_arg = g_strdup_printf("--port=%d", port);
        {
            const char *argv[] = {
                "nbdkit", "--foreground", "--exit-with-parent",
                "--ipaddr=127.0.0.1", port_arg, "--pidfile", pidfile,
                threads_arg, "memory", size_arg, alloc_arg, NULL,
            };

            if (!g_spawn_async(NULL, (char **)argv, NULL,
                               G_SPAWN_SEARCH_PATH |
                               G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                               &nbdkit_pid, &err)) {
                die("cannot run nbdkit: %s", err->message);
            }
        }
        while (!g_file_test(pidfile, G_FILE_TEST_EXISTS)) {
            if (waitpid(nbdkit_pid, &status, WNOHANG) == nbdkit_pid) {
                nbdkit_pid = 0;
                break;
            }
            if (now_ns() > deadline) {
                die("nbdkit did not start");
            }
            g_usleep(5000);
        }
        if (nbdkit_pid) {
            return g_strdup_printf("nbd://127.0.0.1:%d/", port);
        }
    }
    die("cannot start nbdkit");
}

static char *libnbd_version(void)
{
    struct nbd_handle *h = nbd_create();
    char *v = g_strdup(h ? nbd_get_version(h) : "?");

    if (h) {
        nbd_close(h);
    }
    return v;
}

static char *nbdkit_version(void)
{
    g_autofree char *out = NULL;
    const char *argv[] = { "nbdkit", "--version", NULL };

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                      NULL, &out, NULL, NULL, NULL)) {
        return g_strdup("nbdkit ?");
    }
    return g_strstrip(g_strdup(out));
}

/* Results */

typedef struct Row {
    const char *name;
    double chan;
    double lib;                 /* libnbd alone; 0: not measured */
    double floor;               /* plain TCP; 0: none */
    const char *target;         /* NULL: none */
    bool pass;
} Row;

static Row rows[32];
static unsigned nrows;

static void row(const char *name, double chan, double lib, double fl,
                const char *target, bool pass)
{
    rows[nrows++] = (Row) { name, chan, lib, fl, target, pass };
}

static const char *loadavg(void)
{
    static char buf[64];
    g_autofree char *text = NULL;

    if (!g_file_get_contents("/proc/loadavg", &text, NULL, NULL)) {
        return "?";
    }
    {
        g_auto(GStrv) f = g_strsplit(text, " ", 4);

        /* the 1, 5 and 15 minute averages */
        snprintf(buf, sizeof(buf), "%s %s %s", f[0], f[1] ? f[1] : "",
                 f[1] && f[2] ? f[2] : "");
    }
    return buf;
}

static void usage(void)
{
    printf("Usage: subhost-bench [options]\n"
           "  --rounds N          rounds of each measurement (median, %u)\n"
           "  --samples N         latency samples per round (%u)\n"
           "  --depths A[,B...]   read depths besides 1 (16,64)\n"
           "  --write-total BYTES bytes per bulk write pass (1 GiB)\n"
           "  --write-size BYTES  bytes per bulk write request (256 KiB)\n"
           "  --write-depth N     bulk writes in flight (32)\n"
           "  --allocator A       nbdkit memory allocator (sparse)\n"
           "  --threads N         nbdkit threads per connection (16)\n"
           "  --json              one JSON object instead of a table\n",
           opts.rounds, opts.samples);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "rounds", required_argument, NULL, 'r' },
        { "samples", required_argument, NULL, 'n' },
        { "depths", required_argument, NULL, 'd' },
        { "write-total", required_argument, NULL, 'T' },
        { "write-size", required_argument, NULL, 'S' },
        { "write-depth", required_argument, NULL, 'D' },
        { "allocator", required_argument, NULL, 'a' },
        { "threads", required_argument, NULL, 't' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'r':
            opts.rounds = MAX(1, atoi(optarg));
            break;
        case 'n':
            opts.samples = MAX(100, atoi(optarg));
            break;
        case 'd': {
            g_auto(GStrv) parts = g_strsplit(optarg, ",", -1);
            unsigned i;

            opts.ndepths = 0;
            for (i = 0; parts[i] && opts.ndepths < G_N_ELEMENTS(opts.depths);
                 i++) {
                opts.depths[opts.ndepths++] = MAX(2, atoi(parts[i]));
            }
            break;
        }
        case 'T':
            opts.write_total = g_ascii_strtoull(optarg, NULL, 0);
            break;
        case 'S':
            opts.write_size = g_ascii_strtoull(optarg, NULL, 0);
            break;
        case 'D':
            opts.write_depth = MAX(1, atoi(optarg));
            break;
        case 'a':
            opts.allocator = optarg;
            break;
        case 't':
            opts.threads = MAX(1, atoi(optarg));
            break;
        case 'j':
            opts.json = true;
            break;
        case 'h':
            usage();
            exit(0);
        default:
            usage();
            exit(2);
        }
    }
    if (!opts.write_size || opts.write_size % PAGE ||
        opts.write_size > FCTRANS_SUBHOST_MAX_REQUEST ||
        opts.write_total < opts.write_size) {
        die("--write-size must be a multiple of 4096 up to %u bytes, and "
            "--write-total at least that", FCTRANS_SUBHOST_MAX_REQUEST);
    }
}

int main(int argc, char **argv)
{
    const uint64_t read_span = 64ull << 20;     /* pages read back */
    const uint64_t page_span = 256ull << 20;    /* 4 KiB write area */
    uint64_t export_size;
    g_autofree char *uri = NULL;
    g_autofree char *ver = NULL;
    g_autofree char *libver = libnbd_version();
    g_autofree int64_t *lat = NULL;
    g_autoptr(GError) err = NULL;
    FctransSubhostConfig cfg = { .id = "bench" };
    FctransSubhostConfig cfg1;
    FctransSubhost *sh, *sh1;
    pid_t server;
    int port;
    unsigned d, round, i;
    struct utsname un;
    struct nbd_handle *lib;

    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    lat = g_new(int64_t, opts.samples);
    server = floor_start(&port);

    export_size = MAX(opts.write_total, page_span + read_span) * 2;
    uri = nbdkit_start(export_size);
    atexit(nbdkit_stop);
    ver = nbdkit_version();
    cfg.uri = uri;
    sh = fctrans_subhost_open(&cfg, &err);
    if (!sh) {
        die("%s", err->message);
    }
    cfg1 = cfg;
    cfg1.id = "bench-1lane";
    cfg1.lanes = 1;
    sh1 = fctrans_subhost_open(&cfg1, &err);
    if (!sh1) {
        die("%s", err->message);
    }

    lib = nbd_create();
    if (!lib || nbd_connect_uri(lib, uri) == -1) {
        die("libnbd: %s", nbd_get_error());
    }

    /* Pages to read back: the read area, written once. */
    {
        g_autofree uint8_t *buf = g_malloc(1 << 20);
        uint64_t off;

        memset(buf, 0x3c, 1 << 20);
        for (off = 0; off < read_span; off += 1 << 20) {
            if (!fctrans_subhost_write_sync(sh, off, 1 << 20, buf, &err)) {
                die("%s", err->message);
            }
        }
    }

    {
        unsigned nd = opts.ndepths + 1, R = opts.rounds;
        /* [depth][round] */
        g_autofree double *c50 = g_new0(double, nd * R);
        g_autofree double *c99 = g_new0(double, nd * R);
        g_autofree double *f50 = g_new0(double, nd * R);
        g_autofree double *f99 = g_new0(double, nd * R);
        g_autofree double *ciops = g_new0(double, nd * R);
        g_autofree double *fiops = g_new0(double, nd * R);
        g_autofree double *l50 = g_new0(double, R);
        g_autofree double *l99 = g_new0(double, R);
        g_autofree double *liops = g_new0(double, R);
        g_autofree double *k50 = g_new0(double, R);
        g_autofree double *k99 = g_new0(double, R);
        g_autofree double *kiops = g_new0(double, R);
        g_autofree double *cbw = g_new0(double, R);
        g_autofree double *cold = g_new0(double, R);
        g_autofree double *fbw = g_new0(double, R);
        g_autofree double *pw = g_new0(double, R);
        g_autofree double *u2_50 = g_new0(double, R);
        g_autofree double *u2_99 = g_new0(double, R);
        g_autofree double *u1_50 = g_new0(double, R);
        g_autofree double *u1_99 = g_new0(double, R);
        char name[80];

        for (round = 0; round < R; round++) {
            /*
             * One in flight: floor, libnbd and channel alternate in short
             * blocks, so that a burst of load from elsewhere hits all.
             */
            const unsigned blocks = 10;
            size_t bn = MAX(opts.samples / blocks, 100), got = 0;
            g_autofree int64_t *lf = g_new(int64_t, bn * blocks);
            g_autofree int64_t *ll = g_new(int64_t, bn * blocks);
            g_autofree int64_t *lc = g_new(int64_t, bn * blocks);
            g_autofree int64_t *lk = g_new(int64_t, bn * blocks);
            double tf = 0, tl = 0, tc = 0, tk = 0;
            unsigned b;

            for (b = 0; b < blocks; b++, got += bn) {
                tf += bn / floor_rr(port, 1, lf + got, bn);
                tl += bn / libnbd_read_lat(lib, read_span, ll + got, bn);
                tc += bn / chan_read_lat(sh, 1, read_span, lc + got, bn,
                                         false);
                tk += bn / chan_read_lat(sh, 1, read_span, lk + got, bn,
                                         true);
            }
            fiops[round] = got / tf;
            f50[round] = pct_us(lf, got, 500);
            f99[round] = pct_us(lf, got, 990);
            liops[round] = got / tl;
            l50[round] = pct_us(ll, got, 500);
            l99[round] = pct_us(ll, got, 990);
            ciops[round] = got / tc;
            c50[round] = pct_us(lc, got, 500);
            c99[round] = pct_us(lc, got, 990);
            kiops[round] = got / tk;
            k50[round] = pct_us(lk, got, 500);
            k99[round] = pct_us(lk, got, 990);

            for (d = 1; d < nd; d++) {
                unsigned depth = opts.depths[d - 1];
                unsigned k = d * R + round;

                fiops[k] = floor_rr(port, depth, lat, opts.samples);
                f50[k] = pct_us(lat, opts.samples, 500);
                f99[k] = pct_us(lat, opts.samples, 990);
                ciops[k] = chan_read_lat(sh, depth, read_span, lat,
                                         opts.samples, true);
                c50[k] = pct_us(lat, opts.samples, 500);
                c99[k] = pct_us(lat, opts.samples, 990);
            }

            fbw[round] = floor_stream(port, opts.write_total);
            /*
             * The first pass over fresh export space makes nbdkit allocate
             * (cold, as during a migration); the second overwrites (warm).
             * Trim between rounds so that every round measures both.
             */
            if (!fctrans_subhost_trim_sync(sh, export_size / 2,
                                           opts.write_total, &err)) {
                die("%s", err->message);
            }
            cold[round] = chan_write_bw(sh, export_size / 2);
            cbw[round] = chan_write_bw(sh, export_size / 2);

            pw[round] = chan_page_writes(sh, read_span, page_span,
                                         opts.samples * 4);

            /* Read latency while bulk writes run: 2 lanes, then 1 lane */
            for (i = 0; i < 2; i++) {
                FctransSubhost *h = i ? sh1 : sh;
                /* behind the writes on one lane, a read takes ~10 ms */
                unsigned n = i ? 200 : MIN(opts.samples / 4, 2000);
                Loop bg;

                loop_init(&bg, h, FCTRANS_SUBHOST_OP_WRITE, opts.write_size,
                          opts.write_depth, export_size / 2,
                          opts.write_total, 0, NULL, false);
                loop_start(&bg, opts.write_depth);
                chan_read_lat(h, 1, read_span, lat, n, false);
                pthread_mutex_lock(&bg.lock);
                bg.stop = true;
                pthread_mutex_unlock(&bg.lock);
                loop_wait(&bg);
                loop_clear(&bg);
                (i ? u1_50 : u2_50)[round] = pct_us(lat, n, 500);
                (i ? u1_99 : u2_99)[round] = pct_us(lat, n, 990);
            }
        }

#define MED(a) median((a), R)
        row("4 KiB read, 1 in flight: p50 (us)", MED(c50), MED(l50),
            MED(f50), "<= 1.3x", MED(c50) <= 1.3 * MED(f50));
        row("4 KiB read, 1 in flight: p99 (us)", MED(c99), MED(l99),
            MED(f99), NULL, true);
        row("4 KiB read, 1 in flight: kIOPS", MED(ciops) / 1000,
            MED(liops) / 1000, MED(fiops) / 1000, NULL, true);
        row("  same, callback submits the next: p50 (us)", MED(k50),
            MED(l50), MED(f50), NULL, true);
        row("  same, callback submits the next: p99 (us)", MED(k99),
            MED(l99), MED(f99), NULL, true);
        for (d = 1; d < nd; d++) {
            unsigned depth = opts.depths[d - 1];

            snprintf(name, sizeof(name), "4 KiB read, %u in flight: p50 (us)",
                     depth);
            row(g_intern_string(name), MED(c50 + d * R), 0,
                MED(f50 + d * R), NULL, true);
            snprintf(name, sizeof(name), "4 KiB read, %u in flight: p99 (us)",
                     depth);
            row(g_intern_string(name), MED(c99 + d * R), 0,
                MED(f99 + d * R), NULL, true);
            snprintf(name, sizeof(name),
                     "4 KiB read, %u in flight: kIOPS", depth);
            row(g_intern_string(name), MED(ciops + d * R) / 1000, 0,
                MED(fiops + d * R) / 1000, NULL, true);
        }
        snprintf(name, sizeof(name), "write %zu KiB x %u, overwrite (GB/s)",
                 opts.write_size >> 10, opts.write_depth);
        row(g_intern_string(name), MED(cbw) / 1e9, 0, MED(fbw) / 1e9,
            ">= 70%", MED(cbw) >= 0.7 * MED(fbw));
        snprintf(name, sizeof(name), "write %zu KiB x %u, fresh (GB/s)",
                 opts.write_size >> 10, opts.write_depth);
        row(g_intern_string(name), MED(cold) / 1e9, 0, MED(fbw) / 1e9, NULL,
            true);
        row("4 KiB writes, 64 in flight (kpages/s)", MED(pw) / 1000, 0, 0,
            NULL, true);
        row("4 KiB read under bulk writes, 2 lanes: p50 (us)", MED(u2_50), 0,
            0, NULL, true);
        row("4 KiB read under bulk writes, 2 lanes: p99 (us)", MED(u2_99), 0,
            0, NULL, true);
        row("4 KiB read under bulk writes, 1 lane: p50 (us)", MED(u1_50), 0,
            0, NULL, true);
        row("4 KiB read under bulk writes, 1 lane: p99 (us)", MED(u1_99), 0,
            0, NULL, true);
#undef MED
    }

    uname(&un);
    if (opts.json) {
        printf("{\"nbdkit\": \"%s\", \"libnbd\": \"%s\", \"allocator\": "
               "\"%s\", \"cpus\": %ld, \"kernel\": \"%s\", \"rounds\": %u, "
               "\"samples\": %u, \"results\": [", ver, libver,
               opts.allocator, sysconf(_SC_NPROCESSORS_ONLN), un.release,
               opts.rounds, opts.samples);
        for (i = 0; i < nrows; i++) {
            printf("%s\n  {\"name\": \"%s\", \"channel\": %.3f",
                   i ? "," : "", rows[i].name, rows[i].chan);
            if (rows[i].lib) {
                printf(", \"libnbd_sync\": %.3f", rows[i].lib);
            }
            if (rows[i].floor) {
                printf(", \"plain_tcp\": %.3f", rows[i].floor);
            }
            if (rows[i].target) {
                printf(", \"target\": \"%s\", \"met\": %s", rows[i].target,
                       rows[i].pass ? "true" : "false");
            }
            printf("}");
        }
        printf("\n]}\n");
    } else {
        printf("subhost-bench: %s memory plugin (allocator=%s, %u threads), "
               "libnbd %s, loopback TCP\n", ver, opts.allocator,
               opts.threads, libver);
        printf("%ld CPUs, Linux %s, load %s; median of %u rounds, %u "
               "samples each.\nchannel: fctrans_subhost, submit to "
               "completion callback; libnbd: nbd_pread() on its own handle;"
               "\nplain TCP: same sizes, TCP_NODELAY, to a trivial server "
               "process (the floor).\n\n",
               sysconf(_SC_NPROCESSORS_ONLN), un.release, loadavg(),
               opts.rounds, opts.samples);
        printf("%-48s %9s %9s %9s %7s  %s\n", "", "channel", "libnbd",
               "plain TCP", "ratio", "target");
        for (i = 0; i < nrows; i++) {
            Row *r = &rows[i];

            printf("%-48s %9.2f", r->name, r->chan);
            if (r->lib) {
                printf(" %9.2f", r->lib);
            } else {
                printf(" %9s", "");
            }
            if (r->floor) {
                printf(" %9.2f %6.2fx", r->floor, r->chan / r->floor);
            } else {
                printf(" %9s %7s", "", "");
            }
            if (r->target) {
                printf("  %s: %s", r->target, r->pass ? "met" : "NOT met");
            }
            printf("\n");
        }
    }

    fctrans_subhost_close(sh);
    fctrans_subhost_close(sh1);
    {
        int qfd = connect_loopback(port);

        write_full(qfd, "Q", 1);
        close(qfd);
        waitpid(server, NULL, 0);
    }
    nbd_close(lib);
    return 0;
}
