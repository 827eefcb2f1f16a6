/*
 * Tests of the sub-host channel against real nbdkit exports
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "subhost.h"
#include "test-subhost-util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <libnbd.h>

#define PAGE 4096

/* Open a sub-host; the caller fills what differs from the defaults. */
static FctransSubhost *open_sh(const FctransSubhostConfig *cfg,
                               GError **errp)
{
    return fctrans_subhost_open(cfg, errp);
}

static FctransSubhostConfig plain_cfg(SubhostTestServer *s)
{
    return (FctransSubhostConfig) {
        .id = "sub0",
        .uri = s->uri,
    };
}

/* Fill @buf with bytes derived from @seed and the offset. */
static void fill_page(uint8_t *buf, size_t len, uint64_t offset,
                      uint32_t seed)
{
    GRand *r = g_rand_new_with_seed(seed ^ (uint32_t)(offset >> 12) ^
                                    (uint32_t)(offset >> 44));
    size_t i;

    for (i = 0; i < len; i += 4) {
        uint32_t v = g_rand_int(r);

        memcpy(buf + i, &v, MIN(4, len - i));
    }
    g_rand_free(r);
}

static bool all_zero(const uint8_t *buf, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (buf[i]) {
            return false;
        }
    }
    return true;
}

/* Counting completions of asynchronous batches */

typedef struct Batch {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned submitted;
    unsigned ok;
    unsigned failed;
    int last_code;
    GError *first;
} Batch;

static void batch_init(Batch *b)
{
    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
}

static void batch_clear(Batch *b)
{
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    g_clear_error(&b->first);
}

static void batch_done(void *opaque, const GError *err)
{
    Batch *b = opaque;

    pthread_mutex_lock(&b->lock);
    if (err) {
        b->failed++;
        b->last_code = err->code;
        if (!b->first) {
            b->first = g_error_copy(err);
        }
    } else {
        b->ok++;
    }
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

/* Wait for every submitted request, at most @secs seconds. */
static void batch_wait(Batch *b, unsigned secs)
{
    struct timespec deadline;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += secs;
    pthread_mutex_lock(&b->lock);
    while (b->ok + b->failed < b->submitted) {
        if (pthread_cond_timedwait(&b->cond, &b->lock, &deadline) ==
            ETIMEDOUT) {
            g_error("only %u of %u requests completed in %u s",
                    b->ok + b->failed, b->submitted, secs);
        }
    }
    pthread_mutex_unlock(&b->lock);
}

/*
 * Write random pages in one asynchronous batch, drain, read them back in
 * another, compare; untouched pages read as zeros.
 */
static void random_pages(FctransSubhost *sh, unsigned npages, uint32_t seed)
{
    uint64_t size = fctrans_subhost_export_size(sh);
    uint64_t slots = size / PAGE;
    g_autofree uint64_t *offs = g_new(uint64_t, npages);
    g_autofree uint8_t *wbuf = g_malloc((size_t)npages * PAGE);
    g_autofree uint8_t *rbuf = g_malloc0((size_t)npages * PAGE);
    g_autoptr(GHashTable) used = g_hash_table_new(g_int64_hash,
                                                  g_int64_equal);
    g_autoptr(GError) err = NULL;
    GRand *r = g_rand_new_with_seed(seed);
    uint8_t zero[PAGE];
    Batch b;
    unsigned i;

    for (i = 0; i < npages; i++) {
        do {
            offs[i] = (uint64_t)g_rand_int_range(r, 0, slots) * PAGE;
        } while (g_hash_table_contains(used, &offs[i]));
        g_hash_table_add(used, &offs[i]);
        fill_page(wbuf + (size_t)i * PAGE, PAGE, offs[i], seed);
    }

    batch_init(&b);
    for (i = 0; i < npages; i++) {
        g_assert_true(fctrans_subhost_write(sh, offs[i], PAGE,
                                            wbuf + (size_t)i * PAGE, 0,
                                            batch_done, &b, &err));
        g_assert_no_error(err);
        pthread_mutex_lock(&b.lock);
        b.submitted++;
        pthread_mutex_unlock(&b.lock);
    }
    g_assert_true(fctrans_subhost_drain(sh, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(b.ok, ==, npages);
    batch_clear(&b);

    for (i = 0; i < npages; i++) {
        g_assert_true(fctrans_subhost_page_stored(sh, offs[i]));
    }

    batch_init(&b);
    for (i = 0; i < npages; i++) {
        g_assert_true(fctrans_subhost_read(sh, offs[i], PAGE,
                                           rbuf + (size_t)i * PAGE, 0,
                                           batch_done, &b, &err));
        pthread_mutex_lock(&b.lock);
        b.submitted++;
        pthread_mutex_unlock(&b.lock);
    }
    g_assert_true(fctrans_subhost_drain(sh, &err));
    g_assert_cmpuint(b.ok, ==, npages);
    batch_clear(&b);
    for (i = 0; i < npages; i++) {
        if (memcmp(wbuf + (size_t)i * PAGE, rbuf + (size_t)i * PAGE, PAGE)) {
            g_error("page at 0x%" PRIx64 " read back differs", offs[i]);
        }
    }

    /* A page never written reads as zeros. */
    for (i = 0; i < 64; i++) {
        uint64_t off = (uint64_t)g_rand_int_range(r, 0, slots) * PAGE;

        if (g_hash_table_contains(used, &off)) {
            continue;
        }
        memset(zero, 0xaa, sizeof(zero));
        g_assert_true(fctrans_subhost_read_sync(sh, off, PAGE, zero, &err));
        g_assert_true(all_zero(zero, PAGE));
        g_assert_false(fctrans_subhost_page_stored(sh, off));
    }
    g_rand_free(r);
}

static void test_rw(gconstpointer opaque)
{
    bool tcp = GPOINTER_TO_INT(opaque);
    SubhostTestServer *s = subhost_test_server_start("vmA", "256M",
                                                     SUBHOST_TLS_NONE, tcp,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    g_autoptr(GError) err = NULL;
    FctransSubhostStats st;
    FctransSubhost *sh;

    cfg.min_size = 256 << 20;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    /* nbdkit's memory plugin allows multi-conn: urgent and bulk lanes */
    g_assert_cmpuint(fctrans_subhost_lanes(sh), ==, 2);
    g_assert_cmpuint(fctrans_subhost_export_size(sh), ==, 256 << 20);
    g_assert_true(fctrans_subhost_is_connected(sh));

    random_pages(sh, 2000, 1);

    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_WRITE].requests, ==, 2000);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_WRITE].bytes, ==, 2000 * PAGE);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_WRITE].errors, ==, 0);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_READ].requests, >=, 2000);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_READ].lat_p50_ns, >, 0);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_READ].lat_p99_ns, >=,
                     st.op[FCTRANS_SUBHOST_OP_READ].lat_p50_ns);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_READ].lat_max_ns, >=,
                     st.op[FCTRANS_SUBHOST_OP_READ].lat_p99_ns * 15 / 16);
    g_assert_cmpuint(st.in_flight, ==, 0);
    g_assert_cmpuint(st.capacity_used, ==, 2000 * PAGE);
    g_assert_cmpuint(st.capacity_total, ==, 256 << 20);
    g_assert_true(st.connected);

    fctrans_subhost_reset_stats(sh);
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_READ].requests, ==, 0);
    g_assert_cmpuint(st.capacity_used, ==, 2000 * PAGE);

    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/* Large multi-page requests, both lanes forced, one lane. */
static void test_large_and_lanes(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "64M",
                                                     SUBHOST_TLS_NONE, false,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    size_t big = 4 << 20;
    g_autofree uint8_t *w = g_malloc(big);
    g_autofree uint8_t *r = g_malloc(big);
    g_autoptr(GError) err = NULL;
    unsigned lanes;

    fill_page(w, big, 0, 7);
    for (lanes = 1; lanes <= 2; lanes++) {
        FctransSubhost *sh;

        cfg.lanes = lanes;
        sh = open_sh(&cfg, &err);
        g_assert_no_error(err);
        g_assert_cmpuint(fctrans_subhost_lanes(sh), ==, lanes);
        g_assert_true(fctrans_subhost_write_sync(sh, lanes * big, big, w,
                                                 &err));
        g_assert_no_error(err);
        memset(r, 0, big);
        g_assert_true(fctrans_subhost_read_sync(sh, lanes * big, big, r,
                                                &err));
        g_assert_true(memcmp(w, r, big) == 0);
        /* Forcing a read onto the bulk lane works too. */
        memset(r, 0, big);
        {
            Batch b;

            batch_init(&b);
            b.submitted = 1;
            g_assert_true(fctrans_subhost_read(sh, lanes * big, big, r,
                                               FCTRANS_SUBHOST_REQ_BULK,
                                               batch_done, &b, &err));
            batch_wait(&b, 30);
            g_assert_cmpuint(b.ok, ==, 1);
            batch_clear(&b);
        }
        g_assert_true(memcmp(w, r, big) == 0);
        fctrans_subhost_close(sh);
    }
    subhost_test_server_stop(s);
}

/* Invalid requests are refused at once, and their callback never runs. */
static void never_called(void *opaque, const GError *err)
{
    g_error("callback of a refused request ran");
}

static void test_invalid_requests(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "1M",
                                                     SUBHOST_TLS_NONE, false,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    uint8_t buf[2 * PAGE];
    FctransSubhostStats st;
    FctransSubhost *sh;
    GError *err = NULL;

    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
#define REFUSED(call) do { \
        g_assert_false(call); \
        g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID); \
        g_clear_error(&err); \
    } while (0)
    REFUSED(fctrans_subhost_write(sh, 1, PAGE, buf, 0, never_called, NULL,
                                  &err));
    REFUSED(fctrans_subhost_write(sh, 0, 100, buf, 0, never_called, NULL,
                                  &err));
    REFUSED(fctrans_subhost_write(sh, 0, 0, buf, 0, never_called, NULL,
                                  &err));
    REFUSED(fctrans_subhost_read(sh, 1 << 20, PAGE, buf, 0, never_called,
                                 NULL, &err));
    REFUSED(fctrans_subhost_read(sh, (1 << 20) - PAGE, 2 * PAGE, buf, 0,
                                 never_called, NULL, &err));
    REFUSED(fctrans_subhost_read(sh, UINT64_MAX - PAGE + 1, PAGE, buf, 0,
                                 never_called, NULL, &err));
    REFUSED(fctrans_subhost_read(sh, 0, PAGE, buf,
                                 FCTRANS_SUBHOST_REQ_URGENT |
                                 FCTRANS_SUBHOST_REQ_BULK,
                                 never_called, NULL, &err));
    REFUSED(fctrans_subhost_read(sh, 0, PAGE, buf, 0x80, never_called, NULL,
                                 &err));
    REFUSED(fctrans_subhost_read(sh, 0, PAGE, NULL, 0, never_called, NULL,
                                 &err));
    REFUSED(fctrans_subhost_trim(sh, 0, PAGE, 0, NULL, NULL, &err));
#undef REFUSED
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.refused, ==, 10);
    g_assert_cmpuint(st.in_flight, ==, 0);
    g_assert_cmpuint(st.capacity_used, ==, 0);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/* Is [off, off + len) a hole on the server (memory freed)? */
static int extent_cb(void *opaque, const char *metacontext, uint64_t offset,
                     uint32_t *entries, size_t nr_entries, int *error)
{
    uint32_t *flags = opaque;

    if (!strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) &&
        nr_entries >= 2) {
        *flags = entries[1];
    }
    return 0;
}

static uint32_t server_extent_flags(const char *uri, uint64_t off,
                                    uint64_t len)
{
    struct nbd_handle *nbd = nbd_create();
    uint32_t flags = 0xffffffff;
    nbd_extent_callback cb = { .callback = extent_cb, .user_data = &flags };

    g_assert_nonnull(nbd);
    g_assert_cmpint(nbd_add_meta_context(nbd,
                                         LIBNBD_CONTEXT_BASE_ALLOCATION), ==,
                    0);
    if (nbd_connect_uri(nbd, uri) == -1 ||
        nbd_block_status(nbd, len, off, cb, 0) == -1) {
        g_error("block status: %s", nbd_get_error());
    }
    nbd_close(nbd);
    return flags;
}

static void test_trim(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "64M",
                                                     SUBHOST_TLS_NONE, false,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    size_t len = 64 * PAGE;
    g_autofree uint8_t *w = g_malloc(len);
    g_autofree uint8_t *r = g_malloc(len);
    g_autoptr(GError) err = NULL;
    FctransSubhostStats st;
    FctransSubhost *sh;
    unsigned i;

    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    fill_page(w, len, 0, 3);
    g_assert_true(fctrans_subhost_write_sync(sh, 1 << 20, len, w, &err));
    g_assert_no_error(err);
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.capacity_used, ==, len);
    g_assert_cmpuint(server_extent_flags(s->uri, 1 << 20, len) &
                     LIBNBD_STATE_HOLE, ==, 0);

    /* Trim the odd pages, one request each, asynchronously. */
    {
        Batch b;

        batch_init(&b);
        for (i = 1; i < 64; i += 2) {
            g_assert_true(fctrans_subhost_trim(sh, (1 << 20) + i * PAGE,
                                               PAGE, 0, batch_done, &b,
                                               &err));
            pthread_mutex_lock(&b.lock);
            b.submitted++;
            pthread_mutex_unlock(&b.lock);
        }
        g_assert_true(fctrans_subhost_drain(sh, &err));
        g_assert_cmpuint(b.ok, ==, 32);
        batch_clear(&b);
    }
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.capacity_used, ==, len / 2);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_TRIM].requests, ==, 32);

    g_assert_true(fctrans_subhost_read_sync(sh, 1 << 20, len, r, &err));
    for (i = 0; i < 64; i++) {
        const uint8_t *p = r + i * PAGE;

        if (i & 1) {
            g_assert_true(all_zero(p, PAGE));
            g_assert_false(fctrans_subhost_page_stored(sh, (1 << 20) +
                                                       i * PAGE));
        } else {
            g_assert_true(memcmp(p, w + i * PAGE, PAGE) == 0);
            g_assert_true(fctrans_subhost_page_stored(sh, (1 << 20) +
                                                      i * PAGE));
        }
    }

    /* Trim everything: the server reports a hole, memory is released. */
    g_assert_true(fctrans_subhost_trim_sync(sh, 1 << 20, len, &err));
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.capacity_used, ==, 0);
    g_assert_cmpuint(server_extent_flags(s->uri, 1 << 20, len) &
                     LIBNBD_STATE_HOLE, ==, LIBNBD_STATE_HOLE);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

static void test_capacity(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "64M",
                                                     SUBHOST_TLS_NONE, false,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    uint8_t page[PAGE];
    g_autofree uint8_t *two = g_malloc0(2 * PAGE);
    g_autoptr(GError) err = NULL;
    FctransSubhostStats st;
    FctransSubhost *sh;
    unsigned i;

    cfg.capacity = 16 * PAGE + 100;     /* rounded down to 16 pages */
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.capacity_total, ==, 16 * PAGE);

    memset(page, 0x5a, sizeof(page));
    for (i = 0; i < 16; i++) {
        g_assert_true(fctrans_subhost_write_sync(sh, i * 2 * PAGE, PAGE,
                                                 page, &err));
        g_assert_no_error(err);
    }
    /* Full: a new page is refused before anything is sent. */
    g_assert_false(fctrans_subhost_write(sh, 100 * PAGE, PAGE, page, 0,
                                         never_called, NULL, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_NOSPACE);
    g_clear_error(&err);
    /* A write straddling a held and a new page is refused whole. */
    g_assert_false(fctrans_subhost_write(sh, 0, 2 * PAGE, two, 0,
                                         never_called, NULL, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_NOSPACE);
    g_clear_error(&err);
    g_assert_false(fctrans_subhost_page_stored(sh, PAGE));
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_WRITE].requests, ==, 16);
    g_assert_cmpuint(st.nospace, ==, 2);
    g_assert_cmpuint(st.capacity_used, ==, 16 * PAGE);

    /* Rewriting a page already held costs nothing. */
    memset(page, 0x6b, sizeof(page));
    g_assert_true(fctrans_subhost_write_sync(sh, 0, PAGE, page, &err));
    g_assert_no_error(err);

    /* A trim frees room for one more. */
    g_assert_true(fctrans_subhost_trim_sync(sh, 2 * PAGE, PAGE, &err));
    g_assert_true(fctrans_subhost_write_sync(sh, 100 * PAGE, PAGE, page,
                                             &err));
    g_assert_no_error(err);
    /* Trimming a page never written frees nothing. */
    g_assert_true(fctrans_subhost_trim_sync(sh, 200 * PAGE, PAGE, &err));
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.capacity_used, ==, 16 * PAGE);
    g_assert_false(fctrans_subhost_write(sh, 300 * PAGE, PAGE, page, 0,
                                         never_called, NULL, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_NOSPACE);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/* TLS */

static void expect_open_error(FctransSubhostConfig *cfg, int code,
                              const char *what)
{
    g_autoptr(GError) err = NULL;
    FctransSubhost *sh = open_sh(cfg, &err);

    if (sh) {
        g_error("%s: connection accepted", what);
    }
    g_assert_nonnull(err);
    if (err->domain != FCTRANS_ERROR || err->code != code) {
        g_error("%s: expected code %d, got %d: %s", what, code, err->code,
                err->message);
    }
    if (g_test_verbose()) {
        g_test_message("%s: %s", what, err->message);
    }
}

static void roundtrip_one(FctransSubhost *sh)
{
    uint8_t w[PAGE], r[PAGE];
    g_autoptr(GError) err = NULL;

    fill_page(w, PAGE, 0, 11);
    g_assert_true(fctrans_subhost_write_sync(sh, 8 * PAGE, PAGE, w, &err));
    g_assert_no_error(err);
    g_assert_true(fctrans_subhost_read_sync(sh, 8 * PAGE, PAGE, r, &err));
    g_assert_no_error(err);
    g_assert_true(memcmp(w, r, PAGE) == 0);
}

static void test_tls_psk(gconstpointer opaque)
{
    bool tcp = GPOINTER_TO_INT(opaque);
    SubhostTestServer *a = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_PSK, tcp,
                                                     NULL);
    SubhostTestServer *b = subhost_test_server_start("vmB", "16M",
                                                     SUBHOST_TLS_PSK, tcp,
                                                     NULL);
    g_autofree char *pskA = subhost_test_creds("pskA");
    g_autofree char *pskB = subhost_test_creds("pskB");
    g_autofree char *pskA_file = g_build_filename(pskA, "keys.psk", NULL);
    g_autofree char *wrong = subhost_test_creds("pskA-wrongkey");
    g_autofree char *plain_uri = NULL;
    FctransSubhostConfig cfg = {
        .id = "sub0", .uri = a->uri, .tls_psk_file = pskA,
        .tls_username = "vmA",
    };
    g_autoptr(GError) err = NULL;
    FctransSubhost *sh;

    /* Accepted: directory as QEMU's tls-creds-psk dir=, and the file. */
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    roundtrip_one(sh);
    fctrans_subhost_close(sh);
    cfg.tls_psk_file = pskA_file;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    fctrans_subhost_close(sh);

    /* The right identity with the wrong key */
    cfg.tls_psk_file = wrong;
    expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "wrong PSK");

    /* vmA's credentials on vmB's export */
    cfg.uri = b->uri;
    cfg.tls_psk_file = pskA;
    expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "vmA's PSK on vmB");
    /* ... even under vmB's identity */
    {
        g_autofree char *as_b = subhost_test_creds("pskA-as-vmB");

        cfg.tls_psk_file = as_b;
        cfg.tls_username = "vmB";
        expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "vmA's key as vmB");
    }
    /* vmB's own credentials work there */
    cfg.tls_psk_file = pskB;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    roundtrip_one(sh);
    fctrans_subhost_close(sh);

    /* No TLS against a TLS-only export */
    g_assert_true(g_str_has_prefix(a->uri, "nbds"));
    plain_uri = g_strconcat("nbd", a->uri + strlen("nbds"), NULL);
    cfg = (FctransSubhostConfig) { .id = "sub0", .uri = plain_uri };
    expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "no TLS on a TLS export");

    subhost_test_server_stop(a);
    subhost_test_server_stop(b);
}

static void test_tls_x509(gconstpointer opaque)
{
    bool tcp = GPOINTER_TO_INT(opaque);
    SubhostTestServer *a = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_X509, tcp,
                                                     NULL);
    SubhostTestServer *b = subhost_test_server_start("vmB", "16M",
                                                     SUBHOST_TLS_X509, tcp,
                                                     NULL);
    g_autofree char *cliA = subhost_test_creds("cliA");
    g_autofree char *cliB = subhost_test_creds("cliB");
    g_autofree char *untrusting = subhost_test_creds("cliA-untrusting");
    g_autofree char *pskA = subhost_test_creds("pskA");
    FctransSubhostConfig cfg = {
        .id = "sub0", .uri = a->uri, .tls_x509_dir = cliA,
    };
    g_autoptr(GError) err = NULL;
    FctransSubhost *sh;

    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    roundtrip_one(sh);
    fctrans_subhost_close(sh);

    /* vmA's certificate on vmB's export: vmB trusts only vmB's CA. */
    cfg.uri = b->uri;
    expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "vmA's cert on vmB");
    cfg.tls_x509_dir = cliB;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    roundtrip_one(sh);
    fctrans_subhost_close(sh);

    /* A client that does not trust the server's CA */
    cfg.uri = a->uri;
    cfg.tls_x509_dir = untrusting;
    expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "untrusted server");

    /* PSK against an x509 export */
    cfg.tls_x509_dir = NULL;
    cfg.tls_psk_file = pskA;
    cfg.tls_username = "vmA";
    expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "PSK on an x509 export");

    subhost_test_server_stop(a);
    subhost_test_server_stop(b);
}

#ifndef LIBNBD_HAVE_NBD_SET_TLS_HOSTNAME
/*
 * This libnbd (before 1.22) cannot check an x509 server certificate over
 * a Unix socket: the channel refuses the configuration (fail closed). The
 * feature itself, /subhost/tls/x509/unix, needs a newer libnbd and is not
 * registered with this one.
 */
static void test_tls_x509_unix_refused(void)
{
    SubhostTestServer *a = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_X509, false,
                                                     NULL);
    g_autofree char *cliA = subhost_test_creds("cliA");
    FctransSubhostConfig cfg = {
        .id = "sub0", .uri = a->uri, .tls_x509_dir = cliA,
    };

    expect_open_error(&cfg, FCTRANS_ERROR_UNSUPPORTED, "x509 on Unix");
    subhost_test_server_stop(a);
}
#endif

/* TLS required by the client, offered by a plain-text server */
static void test_tls_server_without(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_NONE, true,
                                                     NULL);
    g_autofree char *pskA = subhost_test_creds("pskA");
    FctransSubhostConfig cfg = {
        .id = "sub0", .uri = s->uri, .tls_psk_file = pskA,
        .tls_username = "vmA",
    };

    expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "TLS on a plain export");
    subhost_test_server_stop(s);
}

static void test_export_checks(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_NONE, false,
                                                     NULL);
    g_autofree char *wrong = g_strdup_printf("nbd+unix:///vmB?socket=%s",
                                             s->sock_path);
    g_autofree char *empty = g_strdup_printf("nbd+unix:///?socket=%s",
                                             s->sock_path);
    FctransSubhostConfig cfg = { .id = "sub0", .uri = wrong };

    expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "export missing");
    cfg.uri = empty;
    expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "default export");
    cfg.uri = s->uri;
    cfg.min_size = (16 << 20) + PAGE;
    expect_open_error(&cfg, FCTRANS_ERROR_DENIED, "export too small");
    subhost_test_server_stop(s);
}

/*
 * An export without multi-conn (nbdkit's multi-conn filter) is refused,
 * with one lane too, naming the export and the reason. A single client
 * takes it, over one lane, and cannot ask for two.
 */
static void test_multi_conn_required(void)
{
    const char *const args[] = {
        "--log=null", "--filter=multi-conn", "memory", "size=16M",
        "multi-conn-mode=disable", NULL,
    };
    SubhostTestServer *s = subhost_test_nbdkit_start("vmA", args);
    FctransSubhostConfig cfg = plain_cfg(s);
    g_autoptr(GError) err = NULL;
    FctransSubhost *sh;
    unsigned lanes;

    for (lanes = 0; lanes <= 2; lanes++) {
        cfg.lanes = lanes;
        g_assert_null(open_sh(&cfg, &err));
        g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
        g_assert_nonnull(strstr(err->message, s->uri));
        g_assert_nonnull(strstr(err->message,
                                "does not advertise multi-conn"));
        g_assert_nonnull(strstr(err->message, "main host"));
        g_clear_error(&err);
    }

    cfg.single_client = true;
    cfg.lanes = 2;
    g_assert_null(open_sh(&cfg, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_clear_error(&err);
    cfg.lanes = 0;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(fctrans_subhost_lanes(sh), ==, 1);
    roundtrip_one(sh);
    g_assert_true(fctrans_subhost_flush_sync(sh, &err));
    g_assert_no_error(err);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

static void test_unreachable(void)
{
    g_autofree char *nosock = g_strdup_printf(
        "nbd+unix:///vmA?socket=%s/nonexistent.sock", subhost_test_tmpdir());
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    g_autofree char *closed_uri = NULL;
    g_autofree char *silent_uri = NULL;
    FctransSubhostConfig cfg = { .id = "sub0" };
    int64_t t0;
    int fd;

    cfg.uri = nosock;
    expect_open_error(&cfg, FCTRANS_ERROR_IO, "no such socket");

    /* A port nobody listens on */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    g_assert_cmpint(getsockname(fd, (struct sockaddr *)&sa, &len), ==, 0);
    closed_uri = g_strdup_printf("nbd://127.0.0.1:%d/vmA",
                                 ntohs(sa.sin_port));
    cfg.uri = closed_uri;
    expect_open_error(&cfg, FCTRANS_ERROR_IO, "connection refused");

    /* A server that accepts and never speaks: the connect timeout */
    g_assert_cmpint(listen(fd, 4), ==, 0);
    silent_uri = g_strdup_printf("nbd://127.0.0.1:%d/vmA",
                                 ntohs(sa.sin_port));
    cfg.uri = silent_uri;
    cfg.connect_timeout_ms = 300;
    t0 = g_get_monotonic_time();
    expect_open_error(&cfg, FCTRANS_ERROR_IO, "silent server");
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
    close(fd);
}

static gpointer cancel_later(gpointer opaque)
{
    g_usleep(200 * 1000);
    fctrans_cancel_trigger(opaque);
    return NULL;
}

/*
 * A cancel ends a connect to a server that never answers at once, long
 * before the connect timeout, with FCTRANS_ERROR_CANCELLED; a token
 * cancelled before the open fails it without waiting at all.
 */
static void test_cancel_connect(void)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    g_autofree char *uri = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(FctransCancel) cancel = fctrans_cancel_new(&err);
    FctransSubhostConfig cfg = { .id = "sub0" };
    GThread *t;
    int64_t t0, dt;
    int fd;

    g_assert_no_error(err);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    g_assert_cmpint(getsockname(fd, (struct sockaddr *)&sa, &len), ==, 0);
    g_assert_cmpint(listen(fd, 4), ==, 0);
    uri = g_strdup_printf("nbd://127.0.0.1:%d/vmA", ntohs(sa.sin_port));
    cfg.uri = uri;
    cfg.connect_timeout_ms = 30000;
    cfg.cancel = cancel;

    t0 = g_get_monotonic_time();
    t = g_thread_new("cancel", cancel_later, cancel);
    g_assert_null(fctrans_subhost_open(&cfg, &err));
    dt = g_get_monotonic_time() - t0;
    g_thread_join(t);
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_CANCELLED);
    g_assert_nonnull(strstr(err->message, "cancelled"));
    g_assert_cmpint(dt, >=, 150 * 1000);
    g_assert_cmpint(dt, <, 5 * G_USEC_PER_SEC);
    g_clear_error(&err);

    /* Already cancelled: no wait */
    t0 = g_get_monotonic_time();
    g_assert_null(fctrans_subhost_open(&cfg, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_CANCELLED);
    g_assert_cmpint(g_get_monotonic_time() - t0, <, G_USEC_PER_SEC);
    close(fd);
}

/*
 * fctrans_subhost_shutdown() ends requests in flight on a server that has
 * stopped answering at once, long before the request timeout; later
 * requests and reconnects are refused.
 */
static void test_shutdown_in_flight(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_NONE, true,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    uint8_t page[PAGE], wpage[PAGE];
    g_autoptr(GError) err = NULL;
    FctransSubhost *sh;
    int64_t t0, dt;
    Batch b;

    memset(wpage, 7, sizeof(wpage));
    cfg.request_timeout_ms = 60000;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);

    subhost_test_server_signal(s, SIGSTOP);
    batch_init(&b);
    b.submitted = 3;
    g_assert_true(fctrans_subhost_read(sh, 0, PAGE, page, 0, batch_done, &b,
                                       &err));
    g_assert_true(fctrans_subhost_write(sh, PAGE, PAGE, wpage, 0, batch_done,
                                        &b, &err));
    g_assert_true(fctrans_subhost_flush(sh, 0, batch_done, &b, &err));
    g_usleep(200 * 1000);
    t0 = g_get_monotonic_time();
    fctrans_subhost_shutdown(sh, "migration cancelled");
    batch_wait(&b, 10);
    dt = g_get_monotonic_time() - t0;
    g_assert_cmpuint(b.failed, ==, 3);
    g_assert_cmpint(dt, <, 2 * G_USEC_PER_SEC);
    g_assert_false(fctrans_subhost_is_connected(sh));
    g_assert_false(fctrans_subhost_page_stored(sh, PAGE));
    batch_clear(&b);

    g_assert_false(fctrans_subhost_read_sync(sh, 0, PAGE, page, &err));
    g_assert_nonnull(strstr(err->message, "migration cancelled"));
    g_clear_error(&err);
    subhost_test_server_signal(s, SIGCONT);
    g_assert_false(fctrans_subhost_reconnect(sh, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_CANCELLED);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/*
 * The server is killed while a large batch is in flight: every callback
 * runs, with an error unless the server acknowledged the request before
 * dying, nothing hangs, and later requests are refused at once.
 *
 * Phase A runs freely. Then the server is stopped (SIGSTOP) so that phase
 * B's requests are certainly in flight, unacknowledged, when it is killed
 * (SIGKILL); phase C comes after the kill. No request of B or C may be
 * reported stored.
 */
static bool kill_submit(FctransSubhost *sh, unsigned i, size_t len,
                        uint8_t *buf, uint8_t *rbuf, Batch *b, GError **errp)
{
    bool ok;

    /* Writes on the bulk lane, reads on the urgent lane */
    if (i % 4 == 3) {
        ok = fctrans_subhost_read(sh, (uint64_t)(i - 3) * len, PAGE,
                                  rbuf + (size_t)(i / 4) * PAGE, 0,
                                  batch_done, b, errp);
    } else {
        ok = fctrans_subhost_write(sh, (uint64_t)i * len, len, buf, 0,
                                   batch_done, b, errp);
    }
    if (ok) {
        pthread_mutex_lock(&b->lock);
        b->submitted++;
        pthread_mutex_unlock(&b->lock);
    }
    return ok;
}

static void test_kill_mid_batch(gconstpointer opaque)
{
    bool tcp = GPOINTER_TO_INT(opaque);
    SubhostTestServer *s = subhost_test_server_start("vmA", "1G",
                                                     SUBHOST_TLS_NONE, tcp,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    unsigned n = 3000, i;
    size_t len = 64 * 1024;
    g_autofree uint8_t *buf = g_malloc(len);
    /* One page-sized buffer per read (page-ins) */
    g_autofree uint8_t *rbuf = g_malloc((size_t)(n / 4 + 1) * PAGE);
    g_autoptr(GError) err = NULL;
    FctransSubhostStats st;
    FctransSubhost *sh;
    Batch a, b, c;

    fill_page(buf, len, 0, 5);
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    batch_init(&a);
    batch_init(&b);
    batch_init(&c);
    for (i = 0; i < n / 3; i++) {
        g_assert_true(kill_submit(sh, i, len, buf, rbuf, &a, &err));
    }
    subhost_test_server_signal(s, SIGSTOP);
    for (; i < 2 * n / 3; i++) {
        /* Once the socket buffers are full, requests wait in libnbd. */
        g_assert_true(kill_submit(sh, i, len, buf, rbuf, &b, &err));
    }
    subhost_test_server_signal(s, SIGKILL);
    for (; i < n; i++) {
        if (!kill_submit(sh, i, len, buf, rbuf, &c, &err)) {
            /* Refused at once once the failure is known */
            g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
            g_clear_error(&err);
        }
    }
    batch_wait(&a, 30);
    batch_wait(&b, 30);
    batch_wait(&c, 30);
    g_assert_cmpuint(b.submitted, ==, n / 3);
    g_assert_cmpuint(b.ok, ==, 0);
    g_assert_cmpuint(b.failed, ==, b.submitted);
    g_assert_cmpint(b.last_code, ==, FCTRANS_ERROR_IO);
    g_assert_cmpuint(c.ok, ==, 0);
    g_assert_cmpuint(c.failed, ==, c.submitted);
    if (g_test_verbose()) {
        g_test_message("before stop: %u acked, %u failed; stopped, then "
                       "killed: %u failed; after: %u accepted (failed), "
                       "%u refused: %s", a.ok, a.failed, b.failed,
                       c.submitted, n / 3 - c.submitted, b.first->message);
    }

    g_assert_false(fctrans_subhost_drain(sh, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
    g_clear_error(&err);
    g_assert_false(fctrans_subhost_is_connected(sh));
    g_assert_false(fctrans_subhost_write_sync(sh, 0, len, buf, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
    g_clear_error(&err);
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.in_flight, ==, 0);
    g_assert_false(st.connected);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_WRITE].errors +
                     st.op[FCTRANS_SUBHOST_OP_READ].errors, ==,
                     a.failed + b.failed + c.failed);
    batch_clear(&a);
    batch_clear(&b);
    batch_clear(&c);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/* A server that stops answering fails the sub-host after the timeout. */
static void test_request_timeout(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_NONE, true,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    uint8_t page[PAGE], wpage[PAGE];
    g_autoptr(GError) err = NULL;
    FctransSubhost *sh;
    int64_t t0, dt;
    Batch b;

    memset(wpage, 1, sizeof(wpage));
    cfg.request_timeout_ms = 400;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    /* Idle for longer than the timeout: no false alarm */
    g_usleep(1000 * 1000);
    g_assert_true(fctrans_subhost_read_sync(sh, 0, PAGE, page, &err));
    g_assert_no_error(err);

    subhost_test_server_signal(s, SIGSTOP);
    batch_init(&b);
    b.submitted = 2;
    t0 = g_get_monotonic_time();
    g_assert_true(fctrans_subhost_read(sh, 0, PAGE, page, 0, batch_done, &b,
                                       &err));
    g_assert_true(fctrans_subhost_write(sh, PAGE, PAGE, wpage, 0, batch_done,
                                        &b, &err));
    batch_wait(&b, 10);
    dt = g_get_monotonic_time() - t0;
    g_assert_cmpuint(b.failed, ==, 2);
    g_assert_cmpint(b.last_code, ==, FCTRANS_ERROR_IO);
    g_assert_nonnull(strstr(b.first->message, "no reply"));
    g_assert_cmpint(dt, >=, 350 * 1000);
    g_assert_cmpint(dt, <, 3 * G_USEC_PER_SEC);
    g_assert_false(fctrans_subhost_is_connected(sh));
    /* The failed write was never acknowledged: neither stored nor charged */
    g_assert_false(fctrans_subhost_page_stored(sh, PAGE));
    {
        FctransSubhostStats st;

        fctrans_subhost_get_stats(sh, &st);
        g_assert_cmpuint(st.capacity_used, ==, 0);
    }
    batch_clear(&b);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/* After a server restart, reconnect works; old pages are gone. */
static void test_reconnect(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_PSK, false,
                                                     NULL);
    g_autofree char *pskA = subhost_test_creds("pskA");
    FctransSubhostConfig cfg = {
        .id = "sub0", .uri = s->uri, .tls_psk_file = pskA,
        .tls_username = "vmA",
    };
    uint8_t page[PAGE];
    g_autoptr(GError) err = NULL;
    FctransSubhostStats st;
    FctransSubhost *sh;

    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    roundtrip_one(sh);

    /* Reconnecting a healthy sub-host does nothing. */
    g_assert_true(fctrans_subhost_reconnect(sh, &err));
    g_assert_no_error(err);

    subhost_test_server_signal(s, SIGKILL);
    /* The idle lanes notice the lost connection by themselves. */
    while (fctrans_subhost_is_connected(sh)) {
        g_usleep(1000);
    }
    g_assert_false(fctrans_subhost_read_sync(sh, 0, PAGE, page, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
    g_clear_error(&err);
    /* Nothing to reconnect to yet */
    g_assert_false(fctrans_subhost_reconnect(sh, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
    g_clear_error(&err);
    g_assert_false(fctrans_subhost_is_connected(sh));

    subhost_test_server_restart(s, "16M", SUBHOST_TLS_PSK, NULL);
    g_assert_true(fctrans_subhost_reconnect(sh, &err));
    g_assert_no_error(err);
    g_assert_true(fctrans_subhost_is_connected(sh));
    roundtrip_one(sh);
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.reconnects, ==, 1);
    g_assert_true(st.connected);
    fctrans_subhost_close(sh);

    /* A restarted server of another size is refused. */
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    subhost_test_server_signal(s, SIGKILL);
    while (fctrans_subhost_is_connected(sh)) {
        g_usleep(1000);
    }
    subhost_test_server_restart(s, "32M", SUBHOST_TLS_PSK, NULL);
    g_assert_false(fctrans_subhost_reconnect(sh, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_DENIED);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/*
 * A server that accepts one connection only: opening (two lanes) fails
 * with a hint; a reconnect whose second lane is refused fails, shuts the
 * lane it did open, and a later reconnect succeeds.
 */
static void test_second_lane_refused(void)
{
    const char *const one[] = { "--max-clients=1", NULL };
    const char *const three[] = { "--max-clients=3", NULL };
    SubhostTestServer *s = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_NONE, false,
                                                     one);
    FctransSubhostConfig cfg = plain_cfg(s);
    g_autoptr(GError) err = NULL;
    FctransSubhost *sh;
    unsigned i;

    sh = open_sh(&cfg, &err);
    g_assert_null(sh);
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, "bulk lane"));
    g_assert_nonnull(strstr(err->message, "limit clients"));
    g_clear_error(&err);
    /*
     * One lane is enough for it, once it noticed that the refused
     * attempt's first connection is gone.
     */
    cfg.lanes = 1;
    for (i = 0; i < 100; i++) {
        sh = open_sh(&cfg, &err);
        if (sh) {
            break;
        }
        g_clear_error(&err);
        g_usleep(20 * 1000);
    }
    g_assert_no_error(err);
    g_assert_nonnull(sh);
    roundtrip_one(sh);
    fctrans_subhost_close(sh);

    subhost_test_server_signal(s, SIGKILL);
    subhost_test_server_restart(s, "16M", SUBHOST_TLS_NONE, three);
    cfg.lanes = 0;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(fctrans_subhost_lanes(sh), ==, 2);
    subhost_test_server_signal(s, SIGKILL);
    while (fctrans_subhost_is_connected(sh)) {
        g_usleep(1000);
    }
    subhost_test_server_restart(s, "16M", SUBHOST_TLS_NONE, one);
    g_assert_false(fctrans_subhost_reconnect(sh, &err));
    g_assert_nonnull(err);
    g_clear_error(&err);
    g_assert_false(fctrans_subhost_is_connected(sh));

    /* The urgent lane of the failed attempt was closed: room for two. */
    subhost_test_server_signal(s, SIGKILL);
    subhost_test_server_restart(s, "16M", SUBHOST_TLS_NONE, three);
    g_assert_true(fctrans_subhost_reconnect(sh, &err));
    g_assert_no_error(err);
    roundtrip_one(sh);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/*
 * A server whose writes fail (nbdkit's error filter, while a file exists):
 * a failed write is neither stored nor charged, before its callback runs;
 * a page stored earlier stays stored after a failed rewrite. With room for
 * four pages, many failed writes must not use the capacity up.
 */
typedef struct StoredCheck {
    FctransSubhost *sh;
    uint64_t offset;
    Batch *b;
} StoredCheck;

static void stored_check_done(void *opaque, const GError *err)
{
    StoredCheck *c = opaque;

    /* The accounting is settled before the callback runs. */
    if (fctrans_subhost_page_stored(c->sh, c->offset) != !err) {
        g_error("write at 0x%" PRIx64 " %s, but page_stored says %d",
                c->offset, err ? "failed" : "succeeded", !err);
    }
    batch_done(c->b, err);
}

static void test_write_errors(void)
{
    g_autofree char *inject = g_build_filename(subhost_test_tmpdir(),
                                               "fail-writes", NULL);
    g_autofree char *inject_arg = g_strdup_printf("error-pwrite-file=%s",
                                                  inject);
    const char *const args[] = {
        "--log=null", "--filter=error", "memory", "size=16M",
        "error-pwrite=EIO", "error-pwrite-rate=100%", inject_arg, NULL,
    };
    SubhostTestServer *s = subhost_test_nbdkit_start("vmA", args);
    FctransSubhostConfig cfg = plain_cfg(s);
    StoredCheck checks[32];
    uint8_t page[PAGE];
    g_autoptr(GError) err = NULL;
    FctransSubhostStats st;
    FctransSubhost *sh;
    unsigned i;
    Batch b;

    memset(page, 0x3c, sizeof(page));
    cfg.capacity = 4 * PAGE;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    g_assert_true(fctrans_subhost_write_sync(sh, 0, PAGE, page, &err));
    g_assert_no_error(err);
    g_assert_true(fctrans_subhost_page_stored(sh, 0));

    g_assert_true(g_file_set_contents(inject, "", 0, &err));
    /* One at a time: more than the capacity, if failures stayed charged */
    for (i = 1; i <= 16; i++) {
        g_assert_false(fctrans_subhost_write_sync(sh, i * PAGE, PAGE, page,
                                                  &err));
        if (!g_error_matches(err, FCTRANS_ERROR, FCTRANS_ERROR_IO)) {
            g_error("failed write %u: %s", i, err->message);
        }
        g_clear_error(&err);
        g_assert_false(fctrans_subhost_page_stored(sh, i * PAGE));
    }
    /* A failed rewrite of a stored page: the server still holds one */
    g_assert_false(fctrans_subhost_write_sync(sh, 0, PAGE, page, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
    g_clear_error(&err);
    g_assert_true(fctrans_subhost_page_stored(sh, 0));
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.capacity_used, ==, PAGE);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_WRITE].errors, ==, 17);
    /* The sub-host stays up: a write error is not a lost connection. */
    g_assert_true(st.connected);

    /* Asynchronous, checked in the callback */
    for (i = 0; i < G_N_ELEMENTS(checks); i++) {
        batch_init(&b);
        checks[i] = (StoredCheck) {
            .sh = sh, .offset = (100 + i) * PAGE, .b = &b,
        };
        b.submitted = 1;
        g_assert_true(fctrans_subhost_write(sh, checks[i].offset, PAGE, page,
                                            0, stored_check_done, &checks[i],
                                            &err));
        g_assert_no_error(err);
        batch_wait(&b, 10);
        g_assert_cmpuint(b.failed, ==, 1);
        batch_clear(&b);
    }
    g_assert_false(fctrans_subhost_drain(sh, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
    g_clear_error(&err);
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.capacity_used, ==, PAGE);
    g_assert_cmpuint(st.in_flight, ==, 0);

    /* Writes work again: the capacity left is all there. */
    g_assert_cmpint(unlink(inject), ==, 0);
    for (i = 1; i < 4; i++) {
        g_assert_true(fctrans_subhost_write_sync(sh, i * PAGE, PAGE, page,
                                                 &err));
        g_assert_no_error(err);
        g_assert_true(fctrans_subhost_page_stored(sh, i * PAGE));
    }
    g_assert_false(fctrans_subhost_write(sh, 4 * PAGE, PAGE, page, 0,
                                         never_called, NULL, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_NOSPACE);
    g_clear_error(&err);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/*
 * Writers in several threads while the server is killed: writes are
 * acknowledged, fail, or are refused at once (some after they were
 * charged: the sub-host failed between the check and the send). Only
 * the acknowledged ones may be stored and charged.
 */
#define KILL_WRITERS 3
#define KILL_WRITES 3000
#define KILL_LEN (16 * PAGE)

enum { REC_PENDING, REC_OK, REC_FAILED, REC_REFUSED };

typedef struct KillRec {
    int state;
    Batch *b;
} KillRec;

typedef struct KillWriter {
    FctransSubhost *sh;
    unsigned id;
    const uint8_t *buf;
    KillRec *recs;
    Batch b;
    unsigned refused;
} KillWriter;

static void kill_rec_done(void *opaque, const GError *err)
{
    KillRec *r = opaque;

    __atomic_store_n(&r->state, err ? REC_FAILED : REC_OK, __ATOMIC_RELEASE);
    batch_done(r->b, err);
}

static uint64_t kill_rec_offset(unsigned writer, unsigned i)
{
    return ((uint64_t)writer * KILL_WRITES + i) * KILL_LEN;
}

static gpointer kill_writer_thread(gpointer opaque)
{
    KillWriter *w = opaque;
    unsigned i;

    for (i = 0; i < KILL_WRITES; i++) {
        GError *err = NULL;

        w->recs[i].b = &w->b;
        pthread_mutex_lock(&w->b.lock);
        w->b.submitted++;
        pthread_mutex_unlock(&w->b.lock);
        if (!fctrans_subhost_write(w->sh, kill_rec_offset(w->id, i),
                                   KILL_LEN, w->buf, 0, kill_rec_done,
                                   &w->recs[i], &err)) {
            g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
            g_clear_error(&err);
            w->recs[i].state = REC_REFUSED;
            w->refused++;
            pthread_mutex_lock(&w->b.lock);
            w->b.submitted--;
            pthread_mutex_unlock(&w->b.lock);
        }
    }
    return NULL;
}

static void test_kill_accounting(void)
{
    unsigned round;

    for (round = 0; round < 3; round++) {
        SubhostTestServer *s = subhost_test_server_start("vmA", "1G",
                                                         SUBHOST_TLS_NONE,
                                                         false, NULL);
        FctransSubhostConfig cfg = plain_cfg(s);
        g_autofree uint8_t *buf = g_malloc0(KILL_LEN);
        KillWriter w[KILL_WRITERS];
        GThread *t[KILL_WRITERS];
        g_autoptr(GError) err = NULL;
        unsigned n[4] = { 0 }, wrong[4] = { 0 };
        uint64_t pages_ok = 0;
        FctransSubhostStats st;
        FctransSubhost *sh;
        unsigned i, j;

        sh = open_sh(&cfg, &err);
        g_assert_no_error(err);
        for (i = 0; i < KILL_WRITERS; i++) {
            w[i] = (KillWriter) {
                .sh = sh, .id = i, .buf = buf,
                .recs = g_new0(KillRec, KILL_WRITES),
            };
            batch_init(&w[i].b);
            t[i] = g_thread_new("writer", kill_writer_thread, &w[i]);
        }
        /* Kill it while the writers are busy */
        g_usleep((5 + 10 * round) * 1000);
        subhost_test_server_signal(s, SIGKILL);
        for (i = 0; i < KILL_WRITERS; i++) {
            g_thread_join(t[i]);
            batch_wait(&w[i].b, 30);
        }
        g_assert_false(fctrans_subhost_drain(sh, &err));
        g_clear_error(&err);

        for (i = 0; i < KILL_WRITERS; i++) {
            for (j = 0; j < KILL_WRITES; j++) {
                int state = __atomic_load_n(&w[i].recs[j].state,
                                            __ATOMIC_ACQUIRE);
                uint64_t off = kill_rec_offset(i, j);
                bool stored = fctrans_subhost_page_stored(sh, off);

                g_assert_cmpint(state, !=, REC_PENDING);
                n[state]++;
                if (stored != (state == REC_OK) ||
                    fctrans_subhost_page_stored(sh, off + KILL_LEN - PAGE) !=
                    stored) {
                    wrong[state]++;
                }
            }
            batch_clear(&w[i].b);
            g_free(w[i].recs);
        }
        pages_ok = (uint64_t)n[REC_OK] * (KILL_LEN / PAGE);
        fctrans_subhost_get_stats(sh, &st);
        g_test_message("round %u: %u acknowledged, %u failed, %u refused; "
                       "wrongly (not) stored: %u acknowledged, %u failed, "
                       "%u refused", round, n[REC_OK], n[REC_FAILED],
                       n[REC_REFUSED], wrong[REC_OK], wrong[REC_FAILED],
                       wrong[REC_REFUSED]);
        g_assert_cmpuint(wrong[REC_OK] + wrong[REC_FAILED] +
                         wrong[REC_REFUSED], ==, 0);
        g_assert_cmpuint(st.capacity_used, ==, pages_ok * PAGE);
        g_assert_cmpuint(st.in_flight, ==, 0);
        fctrans_subhost_close(sh);
        subhost_test_server_stop(s);
    }
}

/*
 * errp may be NULL (glib's convention) on every path that fails: the
 * second lane refused (it used to add its hint through *errp), invalid
 * and refused requests, drain, reconnect.
 */
static void test_null_errp(void)
{
    const char *const one[] = { "--max-clients=1", NULL };
    SubhostTestServer *s = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_NONE, false,
                                                     one);
    FctransSubhostConfig cfg = plain_cfg(s);
    FctransSubhostConfig bad = { .id = "sub0", .uri = "http://x/y" };
    uint8_t page[PAGE];
    FctransSubhost *sh;
    unsigned i;

    memset(page, 0x11, sizeof(page));
    g_assert_null(fctrans_subhost_open(&bad, NULL));
    /* Urgent lane accepted, bulk lane refused */
    g_assert_null(fctrans_subhost_open(&cfg, NULL));

    cfg.lanes = 1;
    cfg.capacity = PAGE;
    for (i = 0; i < 100; i++) {
        sh = fctrans_subhost_open(&cfg, NULL);
        if (sh) {
            break;
        }
        g_usleep(20 * 1000);
    }
    g_assert_nonnull(sh);
    g_assert_false(fctrans_subhost_write(sh, 1, PAGE, page, 0, never_called,
                                         NULL, NULL));
    g_assert_true(fctrans_subhost_write_sync(sh, 0, PAGE, page, NULL));
    g_assert_false(fctrans_subhost_write(sh, PAGE, PAGE, page, 0,
                                         never_called, NULL, NULL));
    g_assert_true(fctrans_subhost_drain(sh, NULL));
    subhost_test_server_signal(s, SIGKILL);
    while (fctrans_subhost_is_connected(sh)) {
        g_usleep(1000);
    }
    g_assert_false(fctrans_subhost_read_sync(sh, 0, PAGE, page, NULL));
    g_assert_false(fctrans_subhost_write(sh, 0, PAGE, page, 0, never_called,
                                         NULL, NULL));
    g_assert_false(fctrans_subhost_reconnect(sh, NULL));
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/*
 * A lane that dies while fctrans_subhost_reconnect() starts the new
 * connections: the server closes the urgent lane right after its
 * handshake. The failure must not be lost under the reconnect's "healthy"
 * (the request timeout is a minute: nothing else would report it).
 */
static void test_reconnect_lane_dies(void)
{
    SubhostFakeServer *f = subhost_fake_server_start("vmA", 16 << 20);
    FctransSubhostConfig cfg = {
        .id = "sub0", .uri = subhost_fake_server_uri(f),
    };
    uint8_t page[PAGE];
    g_autoptr(GError) err = NULL;
    FctransSubhostStats st;
    FctransSubhost *sh;
    unsigned round, reported_by_reconnect = 0;
    int64_t deadline;

    memset(page, 0x22, sizeof(page));
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(fctrans_subhost_lanes(sh), ==, 2);
    g_assert_true(fctrans_subhost_write_sync(sh, 0, PAGE, page, &err));
    g_assert_no_error(err);

    for (round = 0; round < 20; round++) {
        subhost_fake_server_drop_all(f);
        deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
        while (fctrans_subhost_is_connected(sh)) {
            g_assert_cmpint(g_get_monotonic_time(), <, deadline);
            g_usleep(1000);
        }
        subhost_fake_server_drop_after_handshake(f, 1);
        if (!fctrans_subhost_reconnect(sh, &err)) {
            /* Fine too: the failure was reported. */
            g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
            g_clear_error(&err);
            reported_by_reconnect++;
            continue;
        }
        /* The urgent lane is gone: the sub-host must say so, soon. */
        deadline = g_get_monotonic_time() + 2 * G_USEC_PER_SEC;
        while (fctrans_subhost_is_connected(sh)) {
            if (g_get_monotonic_time() > deadline) {
                g_error("round %u: a lane died during the reconnect, and "
                        "the sub-host still says it is connected", round);
            }
            g_usleep(1000);
        }
        g_assert_false(fctrans_subhost_read_sync(sh, 0, PAGE, page, &err));
        g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
        g_clear_error(&err);
    }
    g_test_message("%u rounds: %u failures reported by reconnect, the "
                   "others by the sub-host", round, reported_by_reconnect);

    /* A clean reconnect still works afterwards. */
    subhost_fake_server_drop_after_handshake(f, 0);
    g_assert_true(fctrans_subhost_reconnect(sh, &err));
    g_assert_no_error(err);
    g_assert_true(fctrans_subhost_write_sync(sh, PAGE, PAGE, page, &err));
    g_assert_no_error(err);
    g_assert_true(fctrans_subhost_read_sync(sh, PAGE, PAGE, page, &err));
    g_assert_no_error(err);
    g_assert_true(fctrans_subhost_is_connected(sh));
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.reconnects, ==, 20 - reported_by_reconnect + 1);
    fctrans_subhost_close(sh);
    subhost_fake_server_stop(f);
}

/* Closing with requests in flight completes every one of them. */
static void test_close_in_flight(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "256M",
                                                     SUBHOST_TLS_NONE, false,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    size_t len = 256 * 1024;
    g_autofree uint8_t *buf = g_malloc0(len);
    g_autoptr(GError) err = NULL;
    FctransSubhost *sh;
    unsigned i;
    Batch b;

    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    batch_init(&b);
    for (i = 0; i < 512; i++) {
        g_assert_true(fctrans_subhost_write(sh, (uint64_t)i * len, len, buf,
                                            0, batch_done, &b, &err));
        pthread_mutex_lock(&b.lock);
        b.submitted++;
        pthread_mutex_unlock(&b.lock);
    }
    /* Flushes among them: every lane's part must complete too */
    for (i = 0; i < 8; i++) {
        g_assert_true(fctrans_subhost_flush(sh, 0, batch_done, &b, &err));
        pthread_mutex_lock(&b.lock);
        b.submitted++;
        pthread_mutex_unlock(&b.lock);
    }
    fctrans_subhost_close(sh);
    /* close() returned: every callback has run. */
    g_assert_cmpuint(b.ok + b.failed, ==, 512 + 8);
    if (g_test_verbose()) {
        g_test_message("%u acked, %u cancelled", b.ok, b.failed);
    }
    batch_clear(&b);
    subhost_test_server_stop(s);
}

/*
 * Flush: writes acknowledged before a flush are read back through other
 * connections (a second handle on the export, as the main host's) once
 * it completed; a flush from a completion callback; statistics; flags
 * refused; refused at once on a failed sub-host.
 */
typedef struct FlushChain {
    FctransSubhost *sh;
    Batch *b;
} FlushChain;

static void flush_after_write(void *opaque, const GError *err)
{
    FlushChain *fc = opaque;
    GError *e = NULL;

    g_assert_null(err);
    /* A callback may submit a flush, as any request. */
    if (!fctrans_subhost_flush(fc->sh, 0, batch_done, fc->b, &e)) {
        g_error("flush from a callback: %s", e->message);
    }
}

static void test_flush(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_NONE, false,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    FctransSubhostConfig other_cfg = plain_cfg(s);
    unsigned npages = 64, i;
    g_autofree uint8_t *wbuf = g_malloc((size_t)npages * PAGE);
    g_autofree uint8_t *rbuf = g_malloc((size_t)npages * PAGE);
    g_autoptr(GError) err = NULL;
    FctransSubhost *sh, *other;
    FctransSubhostStats st;
    FlushChain fc;
    Batch b;

    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    other_cfg.id = "sub0-main";
    other = open_sh(&other_cfg, &err);
    g_assert_no_error(err);
    g_assert_cmpstr(fctrans_subhost_op_name(FCTRANS_SUBHOST_OP_FLUSH), ==,
                    "flush");

    batch_init(&b);
    for (i = 0; i < npages; i++) {
        fill_page(wbuf + (size_t)i * PAGE, PAGE, (uint64_t)i * PAGE, 5);
        pthread_mutex_lock(&b.lock);
        b.submitted++;
        pthread_mutex_unlock(&b.lock);
        g_assert_true(fctrans_subhost_write(sh, (uint64_t)i * PAGE, PAGE,
                                            wbuf + (size_t)i * PAGE, 0,
                                            batch_done, &b, &err));
    }
    batch_wait(&b, 10);
    g_assert_cmpuint(b.ok, ==, npages);
    /* Every write's callback has run: the flush covers them all. */
    pthread_mutex_lock(&b.lock);
    b.submitted++;
    pthread_mutex_unlock(&b.lock);
    g_assert_true(fctrans_subhost_flush(sh, 0, batch_done, &b, &err));
    g_assert_no_error(err);
    batch_wait(&b, 10);
    g_assert_cmpuint(b.failed, ==, 0);
    g_assert_true(fctrans_subhost_read_sync(other, 0, (size_t)npages * PAGE,
                                            rbuf, &err));
    g_assert_no_error(err);
    g_assert_cmpmem(wbuf, (size_t)npages * PAGE, rbuf,
                    (size_t)npages * PAGE);

    /* A write whose callback flushes; then a synchronous flush */
    fc.sh = sh;
    fc.b = &b;
    pthread_mutex_lock(&b.lock);
    b.submitted++;
    pthread_mutex_unlock(&b.lock);
    g_assert_true(fctrans_subhost_write(sh, 0, PAGE, wbuf + PAGE, 0,
                                        flush_after_write, &fc, &err));
    batch_wait(&b, 10);
    g_assert_true(fctrans_subhost_drain(sh, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(b.failed, ==, 0);
    g_assert_true(fctrans_subhost_flush_sync(sh, &err));
    g_assert_no_error(err);
    g_assert_true(fctrans_subhost_read_sync(other, 0, PAGE, rbuf, &err));
    g_assert_cmpmem(wbuf + PAGE, PAGE, rbuf, PAGE);

    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_FLUSH].requests, ==, 3);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_FLUSH].errors, ==, 0);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_FLUSH].bytes, ==, 0);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_FLUSH].lat_p50_ns, >, 0);
    g_assert_cmpuint(st.in_flight, ==, 0);

    /* No flags are defined */
    g_assert_false(fctrans_subhost_flush(sh, FCTRANS_SUBHOST_REQ_URGENT,
                                         batch_done, &b, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_clear_error(&err);
    g_assert_false(fctrans_subhost_flush(sh, 0, NULL, NULL, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_clear_error(&err);

    /* A failed sub-host refuses a flush at once */
    subhost_test_server_signal(s, SIGKILL);
    while (fctrans_subhost_is_connected(sh)) {
        g_usleep(1000);
    }
    g_assert_false(fctrans_subhost_flush(sh, 0, never_called, NULL, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
    g_clear_error(&err);
    g_assert_false(fctrans_subhost_flush_sync(sh, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
    g_clear_error(&err);

    batch_clear(&b);
    fctrans_subhost_close(other);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/* A flush sends one NBD_CMD_FLUSH on every lane. */
static void test_flush_every_lane(void)
{
    SubhostFakeServer *f = subhost_fake_server_start("vmA", 16 << 20);
    FctransSubhostConfig cfg = {
        .id = "sub0", .uri = subhost_fake_server_uri(f),
    };
    g_autoptr(GError) err = NULL;
    FctransSubhost *sh;

    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(fctrans_subhost_lanes(sh), ==, 2);
    g_assert_cmpuint(subhost_fake_server_flushes(f), ==, 0);
    g_assert_true(fctrans_subhost_flush_sync(sh, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(subhost_fake_server_flushes(f), ==, 2);
    fctrans_subhost_close(sh);

    cfg.lanes = 1;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    g_assert_true(fctrans_subhost_flush_sync(sh, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(subhost_fake_server_flushes(f), ==, 3);
    fctrans_subhost_close(sh);
    subhost_fake_server_stop(f);
}

/* A flush the server never answers fails once, with the sub-host. */
static void test_flush_timeout(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "16M",
                                                     SUBHOST_TLS_NONE, false,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    g_autoptr(GError) err = NULL;
    FctransSubhostStats st;
    FctransSubhost *sh;
    Batch b;

    cfg.request_timeout_ms = 300;
    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(fctrans_subhost_lanes(sh), ==, 2);
    subhost_test_server_signal(s, SIGSTOP);
    batch_init(&b);
    b.submitted = 1;
    g_assert_true(fctrans_subhost_flush(sh, 0, batch_done, &b, &err));
    g_assert_no_error(err);
    batch_wait(&b, 10);
    g_assert_cmpuint(b.failed, ==, 1);
    g_assert_cmpint(b.last_code, ==, FCTRANS_ERROR_IO);
    g_assert_nonnull(strstr(b.first->message, "flush on the"));
    g_assert_nonnull(strstr(b.first->message, "no reply"));
    g_assert_false(fctrans_subhost_is_connected(sh));
    g_assert_false(fctrans_subhost_drain(sh, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
    g_clear_error(&err);
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_FLUSH].requests, ==, 1);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_FLUSH].errors, ==, 1);
    g_assert_cmpuint(st.in_flight, ==, 0);
    /* Only the one callback ran */
    g_usleep(100 * 1000);
    g_assert_cmpuint(b.ok + b.failed, ==, 1);
    batch_clear(&b);
    subhost_test_server_signal(s, SIGCONT);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/* An export that cannot flush is refused, saying why. */
static void test_flush_unsupported(void)
{
    SubhostFakeServer *f = subhost_fake_server_start_opts(
        "vmA", 16 << 20, SUBHOST_FAKE_NO_FLUSH);
    FctransSubhostConfig cfg = {
        .id = "sub0", .uri = subhost_fake_server_uri(f),
    };
    g_autoptr(GError) err = NULL;

    g_assert_null(open_sh(&cfg, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_UNSUPPORTED);
    g_assert_nonnull(strstr(err->message, "does not support flush"));
    g_assert_nonnull(strstr(err->message, "other connections"));
    subhost_fake_server_stop(f);
}

/*
 * Several threads submit at once, and callbacks submit follow-up requests
 * from the channel's threads: write, then read back from the callback.
 */
#define CHAIN_THREADS 4
#define CHAIN_PAGES 500

typedef struct Chain {
    FctransSubhost *sh;
    unsigned id;
    uint8_t *wbuf;
    uint8_t *rbuf;
    Batch b;
} Chain;

typedef struct ChainReq {
    Chain *c;
    unsigned i;
} ChainReq;

static void chain_read_done(void *opaque, const GError *err)
{
    ChainReq *cr = opaque;
    Chain *c = cr->c;

    g_free(cr);
    batch_done(&c->b, err);
}

static void chain_write_done(void *opaque, const GError *err)
{
    ChainReq *cr = opaque;
    Chain *c = cr->c;
    uint64_t off = ((uint64_t)c->id * CHAIN_PAGES + cr->i) * PAGE;
    GError *e = NULL;

    g_assert_null(err);
    /* Synchronous calls are refused on a channel thread. */
    g_assert_false(fctrans_subhost_drain(c->sh, &e));
    g_assert_error(e, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_clear_error(&e);
    if (!fctrans_subhost_read(c->sh, off, PAGE, c->rbuf + cr->i * PAGE, 0,
                              chain_read_done, cr, &e)) {
        g_error("read from a callback: %s", e->message);
    }
}

static gpointer chain_thread(gpointer opaque)
{
    Chain *c = opaque;
    GError *err = NULL;
    unsigned i;

    for (i = 0; i < CHAIN_PAGES; i++) {
        ChainReq *cr = g_new(ChainReq, 1);
        uint64_t off = ((uint64_t)c->id * CHAIN_PAGES + i) * PAGE;

        cr->c = c;
        cr->i = i;
        fill_page(c->wbuf + i * PAGE, PAGE, off, 9);
        pthread_mutex_lock(&c->b.lock);
        c->b.submitted++;
        pthread_mutex_unlock(&c->b.lock);
        if (!fctrans_subhost_write(c->sh, off, PAGE, c->wbuf + i * PAGE, 0,
                                   chain_write_done, cr, &err)) {
            g_error("write: %s", err->message);
        }
    }
    return NULL;
}

static void test_threads(void)
{
    SubhostTestServer *s = subhost_test_server_start("vmA", "64M",
                                                     SUBHOST_TLS_NONE, true,
                                                     NULL);
    FctransSubhostConfig cfg = plain_cfg(s);
    Chain c[CHAIN_THREADS];
    GThread *t[CHAIN_THREADS];
    g_autoptr(GError) err = NULL;
    FctransSubhostStats st;
    FctransSubhost *sh;
    unsigned i;

    sh = open_sh(&cfg, &err);
    g_assert_no_error(err);
    for (i = 0; i < CHAIN_THREADS; i++) {
        c[i].sh = sh;
        c[i].id = i;
        c[i].wbuf = g_malloc(CHAIN_PAGES * PAGE);
        c[i].rbuf = g_malloc0(CHAIN_PAGES * PAGE);
        batch_init(&c[i].b);
        t[i] = g_thread_new("chain", chain_thread, &c[i]);
    }
    for (i = 0; i < CHAIN_THREADS; i++) {
        g_thread_join(t[i]);
    }
    /* Every write's callback submits a read before it returns. */
    g_assert_true(fctrans_subhost_drain(sh, &err));
    g_assert_no_error(err);
    for (i = 0; i < CHAIN_THREADS; i++) {
        batch_wait(&c[i].b, 30);
        g_assert_cmpuint(c[i].b.ok, ==, CHAIN_PAGES);
        g_assert_true(memcmp(c[i].wbuf, c[i].rbuf, CHAIN_PAGES * PAGE) == 0);
        batch_clear(&c[i].b);
        g_free(c[i].wbuf);
        g_free(c[i].rbuf);
    }
    fctrans_subhost_get_stats(sh, &st);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_WRITE].requests, ==,
                     CHAIN_THREADS * CHAIN_PAGES);
    g_assert_cmpuint(st.op[FCTRANS_SUBHOST_OP_READ].requests, ==,
                     CHAIN_THREADS * CHAIN_PAGES);
    g_assert_cmpuint(st.capacity_used, ==,
                     (uint64_t)CHAIN_THREADS * CHAIN_PAGES * PAGE);
    fctrans_subhost_close(sh);
    subhost_test_server_stop(s);
}

/* Two sub-hosts of one VM, as split migration uses them. */
static void test_two_subhosts(void)
{
    SubhostTestServer *s0 = subhost_test_server_start("vmA", "32M",
                                                      SUBHOST_TLS_X509, true,
                                                      NULL);
    SubhostTestServer *s1 = subhost_test_server_start("vmA", "32M",
                                                      SUBHOST_TLS_X509, true,
                                                      NULL);
    g_autofree char *cliA = subhost_test_creds("cliA");
    FctransSubhostConfig c0 = {
        .id = "sub0", .uri = s0->uri, .tls_x509_dir = cliA,
    };
    FctransSubhostConfig c1 = {
        .id = "sub1", .uri = s1->uri, .tls_x509_dir = cliA,
    };
    g_autoptr(GError) err = NULL;
    FctransSubhost *h0 = open_sh(&c0, &err);
    FctransSubhost *h1;

    g_assert_no_error(err);
    h1 = open_sh(&c1, &err);
    g_assert_no_error(err);
    g_assert_cmpstr(fctrans_subhost_id(h1), ==, "sub1");
    random_pages(h0, 300, 21);
    random_pages(h1, 300, 22);
    fctrans_subhost_close(h0);
    fctrans_subhost_close(h1);
    subhost_test_server_stop(s0);
    subhost_test_server_stop(s1);
}

/* The version of the libnbd this program runs with */
static const char *libnbd_version(void)
{
    static char version[64] = "?";
    struct nbd_handle *nbd = nbd_create();

    if (nbd) {
        g_strlcpy(version, nbd_get_version(nbd), sizeof(version));
        nbd_close(nbd);
    }
    return version;
}

int main(int argc, char **argv)
{
    subhost_test_init(&argc, &argv);

    g_test_add_data_func("/subhost/rw/unix", GINT_TO_POINTER(false),
                         test_rw);
    g_test_add_data_func("/subhost/rw/tcp", GINT_TO_POINTER(true), test_rw);
    g_test_add_func("/subhost/rw/large-and-lanes", test_large_and_lanes);
    g_test_add_func("/subhost/rw/invalid-requests", test_invalid_requests);
    g_test_add_func("/subhost/rw/threads-and-callbacks", test_threads);
    g_test_add_func("/subhost/rw/two-subhosts", test_two_subhosts);
    g_test_add_func("/subhost/trim", test_trim);
    g_test_add_func("/subhost/capacity", test_capacity);
    g_test_add_func("/subhost/flush", test_flush);
    g_test_add_func("/subhost/flush/every-lane", test_flush_every_lane);
    g_test_add_func("/subhost/flush/timeout", test_flush_timeout);
    g_test_add_func("/subhost/flush/unsupported", test_flush_unsupported);
    g_test_add_data_func("/subhost/tls/psk/unix", GINT_TO_POINTER(false),
                         test_tls_psk);
    g_test_add_data_func("/subhost/tls/psk/tcp", GINT_TO_POINTER(true),
                         test_tls_psk);
#ifdef LIBNBD_HAVE_NBD_SET_TLS_HOSTNAME
    g_test_add_data_func("/subhost/tls/x509/unix", GINT_TO_POINTER(false),
                         test_tls_x509);
    g_print("# libnbd %s: x509 over a Unix socket is tested "
            "(/subhost/tls/x509/unix)\n", libnbd_version());
#else
    /* Only the refusal can be tested: named for it, not for the feature */
    g_test_add_func("/subhost/tls/x509/unix-refused-old-libnbd",
                    test_tls_x509_unix_refused);
    g_print("# libnbd %s (before 1.22) cannot verify x509 over a Unix "
            "socket: /subhost/tls/x509/unix is not run, "
            "/subhost/tls/x509/unix-refused-old-libnbd checks the refusal\n",
            libnbd_version());
#endif
    g_test_add_data_func("/subhost/tls/x509/tcp", GINT_TO_POINTER(true),
                         test_tls_x509);
    g_test_add_func("/subhost/tls/server-without-tls",
                    test_tls_server_without);
    g_test_add_func("/subhost/errors/export", test_export_checks);
    g_test_add_func("/subhost/errors/multi-conn-required",
                    test_multi_conn_required);
    g_test_add_func("/subhost/errors/unreachable", test_unreachable);
    g_test_add_func("/subhost/errors/cancel-connect", test_cancel_connect);
    g_test_add_func("/subhost/errors/shutdown-in-flight",
                    test_shutdown_in_flight);
    g_test_add_data_func("/subhost/errors/kill-mid-batch/unix",
                         GINT_TO_POINTER(false), test_kill_mid_batch);
    g_test_add_data_func("/subhost/errors/kill-mid-batch/tcp",
                         GINT_TO_POINTER(true), test_kill_mid_batch);
    g_test_add_func("/subhost/errors/request-timeout", test_request_timeout);
    g_test_add_func("/subhost/errors/reconnect", test_reconnect);
    g_test_add_func("/subhost/errors/close-in-flight", test_close_in_flight);
    g_test_add_func("/subhost/errors/second-lane-refused",
                    test_second_lane_refused);
    g_test_add_func("/subhost/errors/null-errp", test_null_errp);
    g_test_add_func("/subhost/errors/reconnect-lane-dies",
                    test_reconnect_lane_dies);
    g_test_add_func("/subhost/capacity/failed-writes", test_write_errors);
    g_test_add_func("/subhost/capacity/kill-mid-write", test_kill_accounting);

    return g_test_run();
}
