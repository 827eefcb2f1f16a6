/*
 * QTest testcases for split migration: guest RAM over a main host and
 * NBD sub-hosts (nbdkit's memory plugin, started by the tests)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The framework's guest keeps incrementing one byte of every page between
 * 1 MiB and 100 MiB of its 150 MiB, so with a resident budget of half the
 * RAM some of those pages must end up on the sub-hosts; the destination
 * must page them in again (remote page-ins) for check_guests_ram() to
 * pass. The destination starts paused (-S), so that what is resident when
 * the VM could start is measured before the guest faults anything in.
 *
 * Both sides have the capability 'return-path' (split-memory needs it),
 * and the main host its own split-subhosts: it never uses the URIs that
 * the stream names.
 *
 * These tests need userfaultfd on the destination, nbdkit, and nbdinfo
 * and nbdcopy (libnbd-bin); without them they fail, they are not skipped.
 */
#include "qemu/osdep.h"
#include <sys/mount.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include "libqtest.h"
#include "migration/bootfile.h"
#include "migration/framework.h"
#include "migration/migration-qmp.h"
#include "migration/migration-util.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"

#define SPLIT_PAGE_SIZE     4096
#define SPLIT_GUEST_RAM     (150 * 1024 * 1024)
#define SPLIT_BUDGET        (SPLIT_GUEST_RAM / 2)
/* Room for the guest RAM and the other split RAM blocks (VGA) */
#define SPLIT_EXPORT_SIZE   "512M"
#define SPLIT_TIMEOUT_S     60
/* Pages mapped besides the pager's own count (e.g. a fault being served) */
#define SPLIT_RSS_SLACK     64
/* Pages the main host may page in while the device state loads */
#define SPLIT_LOAD_PAGE_INS_MAX 16

static char *tmpfs;

typedef struct SplitSubhostProc {
    char *id;
    char *sock;
    char *uri;
    uint64_t capacity;
    GPid pid;
} SplitSubhostProc;

typedef struct SplitTest {
    unsigned nsubhosts;
    SplitSubhostProc sub[2];
    uint64_t budget;
    const char *policy;
    bool tls_psk;
    /*
     * The main host's own split-subhosts name the source's, at these URIs
     * where set (a misconfigured main host); none at all with
     * @main_without_subhosts. It never uses the URIs the stream names.
     */
    const char *main_uri[2];
    bool main_without_subhosts;
    /* Leave 'return-path' off on both sides: split-memory is refused */
    bool without_return_path;
    /*
     * Guest RAM in a private memfd on each side, not anonymous memory: a
     * different discard and fault path (shared RAM is refused)
     */
    bool memfd;
    /*
     * SPLIT_PAGER_INJECT for the main host, and the query-split-memory
     * counter that must then reach @inject_count
     */
    const char *inject;
    const char *inject_counter;
    int64_t inject_count;
    /* SPLIT_PAGER_NO_WP for the main host: a kernel without page-out */
    bool no_wp;
    /*
     * Keep the budget the source placed pages for once the guest runs on
     * the main host; else split_cont() lifts it, so that tests of other
     * features do not page out all the time.
     */
    bool pageout;
    char *pskdir;
} SplitTest;

static void split_psk_setup(SplitTest *t)
{
    g_autofree char *file = NULL;
    g_autoptr(GError) err = NULL;
    /* A test key, as QEMU's TLS tests use: never do this for real */
    const char *line = "qemu:0c5ea2a8cf2f0c64b1e2b1d3a4f5e6d7\n";

    t->pskdir = g_strdup_printf("%s/split-psk", tmpfs);
    g_assert_cmpint(g_mkdir_with_parents(t->pskdir, 0700), ==, 0);
    file = g_strdup_printf("%s/keys.psk", t->pskdir);
    g_assert_true(g_file_set_contents(file, line, -1, &err));
    g_assert_no_error(err);
}

static void split_psk_cleanup(SplitTest *t)
{
    g_autofree char *file = NULL;

    if (!t->pskdir) {
        return;
    }
    file = g_strdup_printf("%s/keys.psk", t->pskdir);
    unlink(file);
    rmdir(t->pskdir);
    g_clear_pointer(&t->pskdir, g_free);
}

/* Start nbdkit's memory plugin on a Unix socket in the test directory. */
static void split_subhost_start(SplitTest *t, SplitSubhostProc *sp,
                                const char *id, uint64_t capacity)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *pskarg = NULL;
    GPtrArray *argv = g_ptr_array_new();
    int waited;

    sp->id = g_strdup(id);
    sp->capacity = capacity;
    sp->sock = g_strdup_printf("%s/%s.sock", tmpfs, id);
    unlink(sp->sock);

    g_ptr_array_add(argv, (char *)"nbdkit");
    g_ptr_array_add(argv, (char *)"--foreground");
    g_ptr_array_add(argv, (char *)"--exit-with-parent");
    g_ptr_array_add(argv, (char *)"--unix");
    g_ptr_array_add(argv, sp->sock);
    if (t->tls_psk) {
        pskarg = g_strdup_printf("--tls-psk=%s/keys.psk", t->pskdir);
        g_ptr_array_add(argv, (char *)"--tls=require");
        g_ptr_array_add(argv, pskarg);
    }
    g_ptr_array_add(argv, (char *)"memory");
    g_ptr_array_add(argv, (char *)"size=" SPLIT_EXPORT_SIZE);
    g_ptr_array_add(argv, NULL);

    /*
     * nbdkit complains on stderr when a QEMU that the test kills leaves
     * without closing its connections: keep that for QTEST_LOG.
     */
    if (!g_spawn_async(NULL, (char **)argv->pdata, NULL,
                       G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD |
                       (getenv("QTEST_LOG") ? 0 :
                        G_SPAWN_STDERR_TO_DEV_NULL),
                       NULL, NULL, &sp->pid, &err)) {
        g_printerr("split: cannot start nbdkit (install it: it is the "
                   "sub-host of these tests): %s\n", err->message);
        g_assert_not_reached();
    }
    g_ptr_array_free(argv, true);

    for (waited = 0; !g_file_test(sp->sock, G_FILE_TEST_EXISTS); waited++) {
        g_assert_cmpint(waited, <, 10 * 1000);
        g_usleep(1000);
    }
    sp->uri = g_strdup_printf("nbd%s+unix:///?socket=%s",
                              t->tls_psk ? "s" : "", sp->sock);
}

/* Stop a sub-host: SIGTERM waits for its clients, SIGKILL is a crash. */
static void split_subhost_stop_sig(SplitSubhostProc *sp, int sig)
{
    if (sp->pid) {
        kill(sp->pid, sig);
        waitpid(sp->pid, NULL, 0);
        g_spawn_close_pid(sp->pid);
        sp->pid = 0;
    }
    if (sp->sock) {
        unlink(sp->sock);
    }
    g_clear_pointer(&sp->id, g_free);
    g_clear_pointer(&sp->sock, g_free);
    g_clear_pointer(&sp->uri, g_free);
}

static void split_subhost_stop(SplitSubhostProc *sp)
{
    split_subhost_stop_sig(sp, SIGTERM);
}

/* Bytes of data that an NBD export holds, by nbdinfo --map --totals. */
static uint64_t split_subhost_data_bytes(SplitSubhostProc *sp)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *out = NULL;
    g_autofree char *errout = NULL;
    g_autofree char *uri = g_strdup_printf("nbd+unix:///?socket=%s",
                                           sp->sock);
    g_auto(GStrv) lines = NULL;
    const char *argv[] = { "nbdinfo", "--map", "--totals", uri, NULL };
    uint64_t data = 0;
    int status, i;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                      NULL, &out, &errout, &status, &err)) {
        g_printerr("split: cannot run nbdinfo (libnbd-bin): %s\n",
                   err->message);
        g_assert_not_reached();
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        g_printerr("split: nbdinfo on sub-host %s: %s\n", sp->id, errout);
    }
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* Lines: "<bytes> <percent>% <type> <description>" */
    lines = g_strsplit(out, "\n", -1);
    for (i = 0; lines[i]; i++) {
        guint64 bytes;
        int type;

        if (sscanf(lines[i], "%" G_GUINT64_FORMAT " %*s %d", &bytes,
                   &type) == 2 && !(type & 1)) {
            data += bytes;      /* not a hole */
        }
    }
    return data;
}

/* The source's split-subhosts, or the main host's (its capacities unused) */
static QList *split_subhost_list(SplitTest *t, bool main_host)
{
    QList *list = qlist_new();
    unsigned k;

    for (k = 0; k < t->nsubhosts; k++) {
        QDict *e = qdict_new();

        qdict_put_str(e, "id", t->sub[k].id);
        qdict_put_str(e, "uri", main_host && t->main_uri[k] ?
                      t->main_uri[k] : t->sub[k].uri);
        /* The main host pages out there too, within the same capacity */
        qdict_put_int(e, "capacity", t->sub[k].capacity);
        qlist_append(list, e);
    }
    return list;
}

static QDict *split_one_subhost_args(const char *id, const char *uri,
                                     int64_t capacity)
{
    QDict *args = qdict_new();
    QList *list = qlist_new();
    QDict *e = qdict_new();

    qdict_put_str(e, "id", id);
    qdict_put_str(e, "uri", uri);
    qdict_put_int(e, "capacity", capacity);
    qlist_append(list, e);
    qdict_put_obj(args, "split-subhosts", QOBJECT(list));
    return args;
}

static void split_setup_tls(SplitTest *t, QTestState *from, QTestState *to)
{
    qtest_qmp_assert_success(from,
                             "{ 'execute': 'object-add',"
                             "  'arguments': { 'qom-type': 'tls-creds-psk',"
                             "                 'id': 'tlscredspsk0',"
                             "                 'endpoint': 'client',"
                             "                 'dir': %s,"
                             "                 'username': 'qemu'} }",
                             t->pskdir);
    qtest_qmp_assert_success(to,
                             "{ 'execute': 'object-add',"
                             "  'arguments': { 'qom-type': 'tls-creds-psk',"
                             "                 'id': 'tlscredspsk0',"
                             "                 'endpoint': 'server',"
                             "                 'dir': %s } }",
                             t->pskdir);
    /* The sub-hosts use the migration's credentials by default */
    migrate_set_parameter_str(from, "tls-creds", "tlscredspsk0");
    migrate_set_parameter_str(to, "tls-creds", "tlscredspsk0");
}

static void split_setup(SplitTest *t, QTestState *from, QTestState *to)
{
    QDict *args = qdict_new();

    migrate_set_capability(from, "split-memory", true);
    migrate_set_capability(to, "split-memory", true);
    /* On it the main host confirms that it can run the VM */
    if (!t->without_return_path) {
        migrate_set_capability(from, "return-path", true);
        migrate_set_capability(to, "return-path", true);
    }

    qdict_put_obj(args, "split-subhosts",
                  QOBJECT(split_subhost_list(t, false)));
    qdict_put_int(args, "split-resident-budget", t->budget);
    qdict_put_str(args, "split-policy", t->policy ? t->policy :
                  "working-set");
    qtest_qmp_assert_success(from, "{ 'execute': 'migrate-set-parameters',"
                             "  'arguments': %p }", args);
    if (!t->main_without_subhosts) {
        args = qdict_new();
        qdict_put_obj(args, "split-subhosts",
                      QOBJECT(split_subhost_list(t, true)));
        qtest_qmp_assert_success(to, "{ 'execute': 'migrate-set-parameters',"
                                 "  'arguments': %p }", args);
    }
    if (t->tls_psk) {
        split_setup_tls(t, from, to);
    }
}

static QDict *split_query_memory(QTestState *to)
{
    return qtest_qmp_assert_success_ref(to,
                                        "{ 'execute': 'query-split-memory' }");
}

/* Sum of Rss and Size (kB) of the mappings userfaultfd tracks (split RAM). */
static void split_uffd_rss(pid_t pid, uint64_t *rss_kb, uint64_t *size_kb)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/smaps", pid);
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    uint64_t vma_rss = 0, vma_size = 0;
    int i;

    *rss_kb = *size_kb = 0;
    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (i = 0; lines[i]; i++) {
        guint64 v;

        if (sscanf(lines[i], "Size: %" G_GUINT64_FORMAT " kB", &v) == 1) {
            vma_size = v;
        } else if (sscanf(lines[i], "Rss: %" G_GUINT64_FORMAT " kB",
                          &v) == 1) {
            vma_rss = v;
        } else if (g_str_has_prefix(lines[i], "VmFlags:")) {
            g_auto(GStrv) flags = g_strsplit(lines[i] + 8, " ", -1);

            if (g_strv_contains((const char * const *)flags, "um")) {
                *rss_kb += vma_rss;
                *size_kb += vma_size;
            }
        }
    }
}

/*
 * On the paused main host, right after the migration: split, within the
 * budget (by the pager's count and by the kernel's), pages left remote.
 */
static void split_check_main_host_at_start(SplitTest *t, QTestState *to)
{
    g_autoptr(QDict) rsp = split_query_memory(to);
    g_autofree char *hmp = qtest_hmp(to, "info split-memory");
    g_autofree char *hmp_line = NULL;
    QListEntry *e;
    uint64_t resident, remote = 0, rss_kb, size_kb;
    int64_t loaded;

    g_assert_true(qdict_get_bool(rsp, "active"));
    g_assert_cmpint(qdict_get_int(rsp, "page-size"), ==, SPLIT_PAGE_SIZE);
    g_assert_cmpint(qdict_get_int(rsp, "resident-budget"), ==, t->budget);
    resident = qdict_get_int(rsp, "resident-pages-at-start");
    /*
     * The pager starts before the device state loads, and loading reads
     * a few pages (the vapic ROM state at 0xcc000 on x86): those may be
     * paged in already, nothing else is.
     */
    loaded = qdict_get_int(rsp, "resident-pages") - resident;
    g_assert_cmpint(loaded, >=, 0);
    g_assert_cmpint(loaded, <=, SPLIT_LOAD_PAGE_INS_MAX);
    g_assert_cmpuint(resident * SPLIT_PAGE_SIZE, <=, t->budget);
    /* The guest wrote more than the budget: some of it is remote */
    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "subhosts"), e) {
        QDict *s = qobject_to(QDict, qlist_entry_obj(e));

        g_assert_true(qdict_get_bool(s, "connected"));
        g_assert_cmpint(qdict_get_int(s, "page-ins"), <=,
                        SPLIT_LOAD_PAGE_INS_MAX);
        remote += qdict_get_int(s, "pages");
    }
    g_assert_cmpuint(remote, >, 0);
    g_assert_cmpint(qdict_get_int(rsp, "page-ins-remote") +
                    qdict_get_int(rsp, "page-ins-local"), <=, loaded);

    /* HMP shows the same */
    g_assert_nonnull(strstr(hmp, "split memory: on"));
    hmp_line = g_strdup_printf("resident: %" PRIu64 " pages (%" PRIu64
                               " at start), budget %" PRIu64 " pages",
                               resident + loaded, resident,
                               t->budget / SPLIT_PAGE_SIZE);
    g_assert_nonnull(strstr(hmp, hmp_line));
    g_assert_nonnull(strstr(hmp, "sub-host sh0: "));

    /* Introspection would page in remote memory: refused here */
    {
        g_autoptr(QDict) err = qtest_qmp(to, "{ 'execute': "
                                         "'query-guest-free-memory' }");
        QDict *qerr = qdict_get_qdict(err, "error");

        g_assert_nonnull(qerr);
        g_assert_nonnull(strstr(qdict_get_str(qerr, "desc"),
                                "not available on the main host of a "
                                "split-memory VM"));
    }

    /* The kernel's view: what is mapped in the split RAM */
    split_uffd_rss(qtest_pid(to), &rss_kb, &size_kb);
    g_test_message("main host at start: %" PRIu64 " resident pages (budget %"
                   PRIu64 "), %" PRIu64 " remote; kernel: Rss %" PRIu64
                   " kB of %" PRIu64 " kB of split RAM", resident,
                   t->budget / SPLIT_PAGE_SIZE, remote, rss_kb, size_kb);
    g_assert_cmpuint(size_kb * 1024, >=, SPLIT_GUEST_RAM);
    g_assert_cmpuint(rss_kb * 1024, <=,
                     (resident + SPLIT_RSS_SLACK) * SPLIT_PAGE_SIZE);
    g_assert_cmpuint(rss_kb * 1024, <=, t->budget +
                     SPLIT_RSS_SLACK * SPLIT_PAGE_SIZE);
}

/* The source's per-destination statistics of a completed migration. */
static void split_check_source_stats(SplitTest *t, QTestState *from)
{
    g_autoptr(QDict) rsp = qtest_qmp_assert_success_ref(from,
                               "{ 'execute': 'query-migrate' }");
    QDict *split = qdict_get_qdict(rsp, "split");
    g_autofree char *hmp = NULL;
    QListEntry *e;
    unsigned n = 0;
    uint64_t placed_remote = 0;

    g_assert_nonnull(split);
    g_test_message("source: total %" PRId64 " ms, downtime %" PRId64
                   " ms, %" PRId64 " kB transferred, %" PRId64
                   " unused pages, map %" PRId64 " bytes",
                   qdict_get_int(rsp, "total-time"),
                   qdict_get_int(rsp, "downtime"),
                   qdict_get_int(qdict_get_qdict(rsp, "ram"),
                                 "transferred") >> 10,
                   qdict_get_int(split, "unused-pages"),
                   qdict_get_int(split, "map-bytes"));
    g_assert_cmpint(qdict_get_int(split, "unused-pages"), >, 0);
    g_assert_cmpint(qdict_get_int(split, "map-bytes"), >, 0);
    QLIST_FOREACH_ENTRY(qdict_get_qlist(split, "destinations"), e) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));
        const char *dest = qdict_get_str(d, "destination");

        g_test_message("source: %s: %" PRId64 " pages sent, %" PRId64
                       " placed", dest, qdict_get_int(d, "pages"),
                       qdict_get_int(d, "placed"));
        if (n == 0) {
            g_assert_cmpstr(dest, ==, "main");
            g_assert_cmpuint(qdict_get_int(d, "placed") * SPLIT_PAGE_SIZE,
                             <=, t->budget);
        } else {
            g_assert_cmpstr(dest, ==, t->sub[n - 1].id);
            g_assert_cmpuint(qdict_get_int(d, "placed") * SPLIT_PAGE_SIZE,
                             <=, t->sub[n - 1].capacity);
            placed_remote += qdict_get_int(d, "placed");
        }
        /* Kept pages stayed where they were: placed, never sent */
        g_assert_cmpint(qdict_get_int(d, "pages") + qdict_get_int(d, "kept"),
                        >=, qdict_get_int(d, "placed"));
        g_assert_cmpint(qdict_get_int(d, "kept"), <=,
                        qdict_get_int(d, "placed"));
        g_assert_cmpint(qdict_get_int(d, "bytes"), ==,
                        qdict_get_int(d, "pages") * SPLIT_PAGE_SIZE);
        n++;
    }
    g_assert_cmpuint(n, ==, 1 + t->nsubhosts);
    g_assert_cmpuint(placed_remote, >, 0);

    hmp = qtest_hmp(from, "info migrate");
    g_assert_nonnull(strstr(hmp, "split main: sent "));
    g_assert_nonnull(strstr(hmp, "split sh0: sent "));
}

static char *split_status(QTestState *who)
{
    g_autoptr(QDict) rsp = qtest_qmp_assert_success_ref(who,
                               "{ 'execute': 'query-status' }");

    return g_strdup(qdict_get_str(rsp, "status"));
}

/* The guest of @who runs: QEMU says so, and the guest still writes. */
static void split_check_guest_runs(QTestState *who)
{
    g_autofree char *status = split_status(who);
    int64_t deadline = g_get_monotonic_time() +
                       SPLIT_TIMEOUT_S * G_USEC_PER_SEC;
    uint8_t first = qtest_readb(who, X86_TEST_MEM_START);

    g_assert_cmpstr(status, ==, "running");
    while (qtest_readb(who, X86_TEST_MEM_START) == first) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(10 * 1000);
    }
}

/* What query-migrate says went wrong in the last migration of @who. */
static char *split_migration_error(QTestState *who)
{
    g_autoptr(QDict) rsp = qtest_qmp_assert_success_ref(who,
                               "{ 'execute': 'query-migrate' }");
    const char *desc = qdict_get_try_str(rsp, "error-desc");

    g_assert_nonnull(desc);
    return g_strdup(desc);
}

/*
 * The source's migration failed and its VM runs again. QEMU restarts a
 * VM that it stopped for the switchover in a bottom half after the state
 * turned "failed": until then it is in finish-migrate, never postmigrate
 * (that would mean the source believes the main host runs the VM).
 */
static void split_wait_source_resumed(QTestState *from)
{
    int64_t deadline = g_get_monotonic_time() +
                       SPLIT_TIMEOUT_S * G_USEC_PER_SEC;

    wait_for_migration_status(from, "failed",
                              (const char * []) { "completed", NULL });
    for (;;) {
        g_autofree char *status = split_status(from);

        if (g_str_equal(status, "running")) {
            break;
        }
        g_assert_cmpstr(status, ==, "finish-migrate");
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(10 * 1000);
    }
    split_check_guest_runs(from);
}

/*
 * Wait until a sub-host holds at most @max bytes: a failed migration's
 * cleanup trims after the source's state turned "failed".
 */
static uint64_t split_wait_data_bytes(SplitSubhostProc *sp, uint64_t max)
{
    int64_t deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    uint64_t held;

    while ((held = split_subhost_data_bytes(sp)) > max &&
           g_get_monotonic_time() < deadline) {
        g_usleep(50 * 1000);
    }
    g_test_message("sub-host %s holds %" PRIu64 " bytes", sp->id, held);
    g_assert_cmpuint(held, <=, max);
    return held;
}

/* Wait until the guest paged something in from the sub-hosts. */
static void split_wait_remote_page_ins(QTestState *to)
{
    int64_t deadline = g_get_monotonic_time() +
                       SPLIT_TIMEOUT_S * G_USEC_PER_SEC;

    for (;;) {
        g_autoptr(QDict) rsp = split_query_memory(to);
        QListEntry *e;
        int64_t remote = qdict_get_int(rsp, "page-ins-remote");
        int64_t per_subhost = 0;

        QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "subhosts"), e) {
            per_subhost += qdict_get_int(qobject_to(QDict,
                                         qlist_entry_obj(e)), "page-ins");
        }
        if (remote > 0) {
            g_test_message("main host: %" PRId64 " remote page-ins (+%"
                           PRId64 " prefetched), %" PRId64 " local, "
                           "latency p50 %" PRId64 " us p99 %" PRId64
                           " us max %" PRId64 " us, %" PRId64
                           " resident pages", remote,
                           qdict_get_int(rsp, "prefetched-pages"),
                           qdict_get_int(rsp, "page-ins-local"),
                           qdict_get_int(rsp, "latency-p50"),
                           qdict_get_int(rsp, "latency-p99"),
                           qdict_get_int(rsp, "latency-max"),
                           qdict_get_int(rsp, "resident-pages"));
            g_assert_cmpint(per_subhost, >=, remote);
            g_assert_cmpint(qdict_get_int(rsp, "blocked-faults"), ==, 0);
            g_assert_cmpint(qdict_get_int(rsp, "latency-max"), >=,
                            qdict_get_int(rsp, "latency-p50"));
            return;
        }
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(20 * 1000);
    }
}

/* Wait until the main host's counter @name reaches @min. */
static void split_wait_counter(QTestState *to, const char *name, int64_t min)
{
    int64_t deadline = g_get_monotonic_time() +
                       SPLIT_TIMEOUT_S * G_USEC_PER_SEC;

    for (;;) {
        g_autoptr(QDict) rsp = split_query_memory(to);
        int64_t v = qdict_get_int(rsp, name);

        if (v >= min) {
            g_test_message("main host: %s %" PRId64 " (eagain %" PRId64
                           ", retries %" PRId64 ", eexist %" PRId64 ")",
                           name, v, qdict_get_int(rsp, "eagain"),
                           qdict_get_int(rsp, "retries"),
                           qdict_get_int(rsp, "eexist"));
            g_assert_cmpint(qdict_get_int(rsp, "blocked-faults"), ==, 0);
            return;
        }
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(20 * 1000);
    }
}

static void split_test_cleanup(SplitTest *t)
{
    const char *files[] = { "migsocket", "src_serial", "dest_serial" };
    unsigned k;

    for (k = 0; k < ARRAY_SIZE(files); k++) {
        g_autofree char *path = g_strdup_printf("%s/%s", tmpfs, files[k]);

        unlink(path);
    }

    for (k = 0; k < t->nsubhosts; k++) {
        split_subhost_stop(&t->sub[k]);
    }
    split_psk_cleanup(t);
}

static void split_test_start_subhosts(SplitTest *t, uint64_t capacity)
{
    unsigned k;

    if (t->tls_psk) {
        split_psk_setup(t);
    }
    for (k = 0; k < t->nsubhosts; k++) {
        g_autofree char *id = g_strdup_printf("sh%u", k);

        split_subhost_start(t, &t->sub[k], id, capacity);
    }
}

/*
 * A live split migration to a paused main host, checked there at start,
 * then resumed: the guest faults its remote pages back in and the
 * framework checks every page of its memory.
 */
/*
 * Start both sides, the main host paused (with t->inject, if set, in its
 * environment: only the main host runs a pager), and migrate live: a full
 * pass, the guest dirties memory again, then completion on both sides.
 * False, with everything cleaned up, when QEMU could not start.
 */
static bool split_migrate_to_paused(SplitTest *t, MigrateStart *args,
                                    QTestState **pfrom, QTestState **pto)
{
    g_autofree char *uri = g_strdup_printf("unix:%s/migsocket", tmpfs);
    QTestState *from, *to;
    int ret;

    if (t->inject) {
        g_setenv("SPLIT_PAGER_INJECT", t->inject, true);
    }
    if (t->no_wp) {
        g_setenv("SPLIT_PAGER_NO_WP", "1", true);
    }
    ret = migrate_start(&from, &to, "defer", args);
    g_unsetenv("SPLIT_PAGER_INJECT");
    g_unsetenv("SPLIT_PAGER_NO_WP");
    if (ret) {
        split_test_cleanup(t);
        return false;
    }
    split_setup(t, from, to);
    migrate_incoming_qmp(to, uri, NULL, "{}");
    wait_for_serial("src_serial");
    migrate_ensure_non_converge(from);
    migrate_prepare_for_dirty_mem(from);
    migrate_qmp(from, to, uri, NULL, "{}");
    /* A full pass, and the guest dirtied memory again since */
    migrate_wait_for_dirty_mem(from, to);
    migrate_ensure_converge(from);
    wait_for_migration_complete(from);
    wait_for_migration_complete(to);
    *pfrom = from;
    *pto = to;
    return true;
}

/*
 * Let the paused main host run. Unless the test is about page-out, the
 * whole guest may be resident from now on (split-set-budget), as before
 * page-out existed: a guest that writes all its memory in a loop would
 * otherwise page in and out all the time.
 */
static void split_cont(SplitTest *t, QTestState *to)
{
    g_autoptr(QDict) rsp = split_query_memory(to);

    if (!t->pageout && qdict_get_bool(rsp, "page-out")) {
        qtest_qmp_assert_success(to, "{ 'execute': 'split-set-budget',"
                                 "  'arguments': { 'budget': %" PRIu64 " } }",
                                 (uint64_t)SPLIT_GUEST_RAM * 2);
    }
    qtest_qmp_assert_success(to, "{ 'execute': 'cont' }");
}

static void split_test_migrate(SplitTest *t)
{
    MigrateStart args = {
        .opts_target = "-S",
        .memory_backend = t->memfd ?
            "-object memory-backend-memfd,id=mem0,size=%s,share=off "
            "-machine memory-backend=mem0" : NULL,
    };
    QTestState *from, *to;

    if (!split_migrate_to_paused(t, &args, &from, &to)) {
        return;
    }

    split_check_source_stats(t, from);
    split_check_main_host_at_start(t, to);

    split_cont(t, to);
    wait_for_serial("dest_serial");
    split_wait_remote_page_ins(to);
    if (t->inject_counter) {
        split_wait_counter(to, t->inject_counter, t->inject_count);
    }

    /* Reads every page of the guest's test area: more page-ins */
    migrate_end(from, to, true);
    split_test_cleanup(t);
}

static void test_split_one_subhost(void)
{
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
    };

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    split_test_migrate(&t);
}

static void test_split_two_subhosts(void)
{
    SplitTest t = {
        .nsubhosts = 2,
        .budget = SPLIT_BUDGET,
    };

    split_test_start_subhosts(&t, 64 * 1024 * 1024);
    split_test_migrate(&t);
}

/* Pages resident beyond the budget: page-ins under way and prefetch */
#define SPLIT_PAGEOUT_SLACK     (2 * 16)

static void split_set_budget(QTestState *to, uint64_t budget)
{
    int64_t t0 = g_get_monotonic_time();

    qtest_qmp_assert_success(to, "{ 'execute': 'split-set-budget',"
                             "  'arguments': { 'budget': %" PRIu64 " } }",
                             budget);
    g_test_message("budget %" PRIu64 " MiB reached in %" PRId64 " ms",
                   budget >> 20, (g_get_monotonic_time() - t0) / 1000);
}

/*
 * For about @ms while the guest writes its memory: the resident pages, by
 * the pager's count and by the kernel's, stay within @budget plus slack.
 * Returns the largest count seen.
 */
static uint64_t split_sample_resident(QTestState *to, uint64_t budget,
                                      unsigned ms)
{
    uint64_t pages = budget / SPLIT_PAGE_SIZE, max = 0;
    int64_t end = g_get_monotonic_time() + ms * 1000;

    do {
        g_autoptr(QDict) rsp = split_query_memory(to);
        uint64_t resident = qdict_get_int(rsp, "resident-pages");
        uint64_t rss_kb, size_kb;

        g_assert_cmpuint(qdict_get_int(rsp, "resident-budget"), ==,
                         pages * SPLIT_PAGE_SIZE);
        g_assert_cmpuint(resident, <=, pages + SPLIT_PAGEOUT_SLACK);
        split_uffd_rss(qtest_pid(to), &rss_kb, &size_kb);
        g_assert_cmpuint(rss_kb * 1024, <=,
                         (pages + SPLIT_PAGEOUT_SLACK + SPLIT_RSS_SLACK) *
                         SPLIT_PAGE_SIZE);
        max = MAX(max, resident);
        g_usleep(50 * 1000);
    } while (g_get_monotonic_time() < end);
    return max;
}

/*
 * Page-out: the guest writes every page of a test area larger than the
 * budget, in a loop, while the budget shrinks and grows. Resident memory
 * stays within each budget, pages go out and come back in, and every page
 * agrees with the guest's pattern at the end.
 */
static void test_split_pageout(void)
{
    SplitTest t = {
        .nsubhosts = 2,
        .budget = SPLIT_BUDGET,
        .pageout = true,
    };
    MigrateStart args = { .opts_target = "-S" };
    const uint64_t budgets[] = { 48 << 20, 64 << 20, 24 << 20, 40 << 20 };
    QTestState *from, *to;
    int64_t page_outs = 0, page_ins = 0;
    unsigned i;

    split_test_start_subhosts(&t, 128 * 1024 * 1024);
    if (!split_migrate_to_paused(&t, &args, &from, &to)) {
        return;
    }
    split_check_main_host_at_start(&t, to);
    split_cont(&t, to);
    wait_for_serial("dest_serial");

    /* Bad input changes nothing */
    {
        g_autoptr(QDict) err = qtest_qmp(to, "{ 'execute': "
                                         "'split-set-budget', 'arguments':"
                                         " { 'budget': 1048576 } }");

        g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(err, "error"),
                                              "desc"), "too small"));
    }
    split_sample_resident(to, t.budget, 500);

    for (i = 0; i < ARRAY_SIZE(budgets); i++) {
        g_autoptr(QDict) rsp = NULL;
        uint64_t max;

        if (i == 1) {
            /* HMP says the same */
            g_autofree char *cmd = g_strdup_printf("split_set_budget %"
                                                   PRIu64 "M",
                                                   budgets[i] >> 20);
            g_autofree char *out = qtest_hmp(to, "%s", cmd);
            g_autofree char *info = NULL;

            g_assert_cmpstr(out, ==, "");
            info = qtest_hmp(to, "info split-memory");
            g_assert_nonnull(strstr(info, "page-out: watermarks "));
        } else {
            split_set_budget(to, budgets[i]);
        }
        max = split_sample_resident(to, budgets[i], 1500);
        rsp = split_query_memory(to);
        g_test_message("budget %" PRIu64 " MiB: up to %" PRIu64 " pages "
                       "resident; %" PRId64 " page-outs (%" PRId64 " clean, "
                       "%" PRId64 " zero, %" PRId64 " aborted), %" PRId64
                       " write faults, %" PRId64 " room waits, %" PRId64
                       " over budget, p50 %" PRId64 " us p99 %" PRId64 " us",
                       budgets[i] >> 20, max,
                       qdict_get_int(rsp, "page-outs"),
                       qdict_get_int(rsp, "clean-drops"),
                       qdict_get_int(rsp, "zero-drops"),
                       qdict_get_int(rsp, "page-outs-aborted"),
                       qdict_get_int(rsp, "write-faults"),
                       qdict_get_int(rsp, "room-waits"),
                       qdict_get_int(rsp, "over-budget"),
                       qdict_get_int(rsp, "page-out-latency-p50"),
                       qdict_get_int(rsp, "page-out-latency-p99"));
        /* The guest's writes made pages go out and come back */
        g_assert_cmpint(qdict_get_int(rsp, "page-outs"), >, page_outs);
        g_assert_cmpint(qdict_get_int(rsp, "page-ins-remote"), >, page_ins);
        g_assert_cmpint(qdict_get_int(rsp, "page-out-errors"), ==, 0);
        g_assert_cmpint(qdict_get_int(rsp, "blocked-faults"), ==, 0);
        page_outs = qdict_get_int(rsp, "page-outs");
        page_ins = qdict_get_int(rsp, "page-ins-remote");
    }
    g_assert_cmpint(split_subhost_data_bytes(&t.sub[0]) +
                    split_subhost_data_bytes(&t.sub[1]), >, 0);

    /* Every page of the test area agrees with the guest's pattern */
    migrate_end(from, to, true);
    split_test_cleanup(&t);
}

/*
 * A main host whose kernel cannot write-protect (pretended): no page-out,
 * said so, and the VM runs as before, past its budget.
 */
static void test_split_pageout_unavailable(void)
{
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
        .no_wp = true,
        .pageout = true,
    };
    MigrateStart args = { .opts_target = "-S" };
    QTestState *from, *to;
    g_autoptr(QDict) rsp = NULL;
    g_autoptr(QDict) err = NULL;

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    if (!split_migrate_to_paused(&t, &args, &from, &to)) {
        return;
    }
    rsp = split_query_memory(to);
    g_assert_false(qdict_get_bool(rsp, "page-out"));
    g_assert_false(qdict_haskey(rsp, "page-outs"));
    err = qtest_qmp(to, "{ 'execute': 'split-set-budget', 'arguments':"
                    " { 'budget': 33554432 } }");
    g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(err, "error"),
                                          "desc"),
                            "no page-out on this main host: write-protection "
                            "disabled by SPLIT_PAGER_NO_WP"));
    {
        g_autofree char *info = qtest_hmp(to, "info split-memory");

        g_assert_nonnull(strstr(info, "page-out: off (write-protection "
                                "disabled by SPLIT_PAGER_NO_WP)"));
    }
    split_cont(&t, to);
    wait_for_serial("dest_serial");
    split_wait_remote_page_ins(to);
    migrate_end(from, to, true);
    split_test_cleanup(&t);
}

static void test_split_two_subhosts_tls_psk(void)
{
    SplitTest t = {
        .nsubhosts = 2,
        .budget = SPLIT_BUDGET,
        .tls_psk = true,
    };

    split_test_start_subhosts(&t, 64 * 1024 * 1024);
    split_test_migrate(&t);
}

static void test_split_memfd(void)
{
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
        .memfd = true,
    };

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    split_test_migrate(&t);
}

static void test_split_sequential(void)
{
    SplitTest t = {
        .nsubhosts = 2,
        .budget = SPLIT_BUDGET,
        .policy = "sequential",
    };

    split_test_start_subhosts(&t, 64 * 1024 * 1024);
    split_test_migrate(&t);
}

/*
 * A sub-host dies after the switchover: the main host must not hand the
 * guest anything in place of its pages. It reports the sub-host lost and
 * stops the VM (io-error) when the guest waits for one of them; the
 * monitor keeps working even if a vCPU waits for good.
 */
static void test_split_subhost_lost(void)
{
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
    };
    MigrateStart args = {
        .opts_target = "-S",
        .hide_stderr = true,
    };
    QTestState *from, *to;
    QDict *ev, *data;
    int64_t deadline;

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    if (!split_migrate_to_paused(&t, &args, &from, &to)) {
        return;
    }
    split_check_main_host_at_start(&t, to);

    /* The sub-host goes away before the guest could page anything in */
    split_subhost_stop_sig(&t.sub[0], SIGKILL);
    split_cont(&t, to);

    ev = qtest_qmp_eventwait_ref(to, "SPLIT_SUBHOST_LOST");
    data = qdict_get_qdict(ev, "data");
    g_test_message("event: %s lost: %s", qdict_get_str(data, "id"),
                   qdict_get_str(data, "error"));
    g_assert_cmpstr(qdict_get_str(data, "id"), ==, "sh0");
    qobject_unref(ev);

    /* The guest soon needs one of those pages: the VM stops */
    deadline = g_get_monotonic_time() + SPLIT_TIMEOUT_S * G_USEC_PER_SEC;
    for (;;) {
        g_autofree char *status = split_status(to);

        if (g_str_equal(status, "io-error")) {
            break;
        }
        g_assert_cmpstr(status, ==, "running");
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(20 * 1000);
    }
    {
        g_autoptr(QDict) rsp = split_query_memory(to);
        QDict *s = qobject_to(QDict, qlist_peek(qdict_get_qlist(rsp,
                                                            "subhosts")));

        g_assert_false(qdict_get_bool(s, "connected"));
        g_assert_cmpint(qdict_get_int(s, "pages"), >, 0);
        g_assert_cmpint(qdict_get_int(rsp, "blocked-faults"), >, 0);
    }

    /* It cannot pause its vCPUs for good: it exits with a failure */
    qtest_set_expected_status(to, EXIT_FAILURE);
    qtest_quit(from);
    qtest_quit(to);
    split_test_cleanup(&t);
}

/* Every page of the test area agrees with the guest's pattern. */
static void split_check_pattern(QTestState *who)
{
    uint8_t first, last, b;
    unsigned addr, edges = 0;

    first = qtest_readb(who, X86_TEST_MEM_START);
    last = first;
    for (addr = X86_TEST_MEM_START + TEST_MEM_PAGE_SIZE;
         addr < X86_TEST_MEM_END; addr += TEST_MEM_PAGE_SIZE) {
        b = qtest_readb(who, addr);
        if (b != last) {
            /* the guest was stopped between two pages of a pass */
            g_assert_cmpint((uint8_t)(b + 1), ==, last);
            g_assert_cmpuint(++edges, ==, 1);
            last = b;
        }
    }
}

/*
 * Data of someone else in the export, beyond the guest RAM span and its
 * identity record: a migration's cleanup must leave it alone. nbdkit's
 * memory plugin allocates in 32 KiB pages, so the block shows in nbdinfo's
 * map as at most that much data.
 */
#define SPLIT_MARKER_OFFSET     (500 * 1024 * 1024)
#define SPLIT_MARKER_LEN        4096
#define SPLIT_MARKER_BYTE       'M'
#define SPLIT_MARKER_HELD_MAX   (32 * 1024)
#define SPLIT_EXPORT_BYTES      (512 * 1024 * 1024)

static void split_run(const char *const *argv)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *errout = NULL;
    int status;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                      NULL, NULL, &errout, &status, &err)) {
        g_printerr("split: cannot run %s (libnbd-bin): %s\n", argv[0],
                   err->message);
        g_assert_not_reached();
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        g_printerr("split: %s failed: %s\n", argv[0], errout);
        g_assert_not_reached();
    }
}

/* Write the marker block into @sp's export (by nbdcopy, from a file). */
static void split_export_write_marker(SplitSubhostProc *sp)
{
    g_autofree char *file = g_strdup_printf("%s/marker-in.img", tmpfs);
    g_autofree char *uri = g_strdup_printf("nbd+unix:///?socket=%s",
                                           sp->sock);
    g_autofree uint8_t *buf = g_malloc(SPLIT_MARKER_LEN);
    const char *argv[] = { "nbdcopy", "--destination-is-zero", file, uri,
                           NULL };
    int fd = open(file, O_CREAT | O_TRUNC | O_WRONLY, 0600);

    g_assert_cmpint(fd, >=, 0);
    memset(buf, SPLIT_MARKER_BYTE, SPLIT_MARKER_LEN);
    /* Sparse: nbdcopy writes only the marker */
    g_assert_cmpint(ftruncate(fd, SPLIT_EXPORT_BYTES), ==, 0);
    g_assert_cmpint(pwrite(fd, buf, SPLIT_MARKER_LEN, SPLIT_MARKER_OFFSET),
                    ==, SPLIT_MARKER_LEN);
    close(fd);
    split_run(argv);
    unlink(file);
}

/* Whether @sp's export still holds the marker block, byte for byte. */
static bool split_export_has_marker(SplitSubhostProc *sp)
{
    g_autofree char *file = g_strdup_printf("%s/marker-out.img", tmpfs);
    g_autofree char *uri = g_strdup_printf("nbd+unix:///?socket=%s",
                                           sp->sock);
    g_autofree uint8_t *buf = g_malloc(SPLIT_MARKER_LEN);
    const char *argv[] = { "nbdcopy", uri, file, NULL };
    bool ok = true;
    int fd, i;

    /* A sparse copy of the export: only what it holds is read */
    split_run(argv);
    fd = open(file, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pread(fd, buf, SPLIT_MARKER_LEN, SPLIT_MARKER_OFFSET),
                    ==, SPLIT_MARKER_LEN);
    close(fd);
    unlink(file);
    for (i = 0; i < SPLIT_MARKER_LEN; i++) {
        ok = ok && buf[i] == SPLIT_MARKER_BYTE;
    }
    return ok;
}

/*
 * Cancel while the sub-host holds pages: the source runs on, and its
 * cleanup trims exactly what this migration placed there (its pages and
 * its identity record), not the whole export: another block of data in
 * the export is still there.
 */
static void test_split_cancel(void)
{
    g_autofree char *uri = g_strdup_printf("unix:%s/migsocket", tmpfs);
    g_autofree char *status = NULL;
    SplitTest t = {
        .nsubhosts = 1,
        .budget = 8 * 1024 * 1024,
        .policy = "sequential",
    };
    MigrateStart args = {
        .hide_stderr = true,
    };
    QTestState *from, *to;
    int64_t deadline;
    uint64_t held;

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    split_export_write_marker(&t.sub[0]);
    g_assert_cmpuint(split_subhost_data_bytes(&t.sub[0]), <=,
                     SPLIT_MARKER_HELD_MAX);
    g_assert_true(split_export_has_marker(&t.sub[0]));
    if (migrate_start(&from, &to, "defer", &args)) {
        split_test_cleanup(&t);
        return;
    }
    split_setup(&t, from, to);
    migrate_incoming_qmp(to, uri, NULL, "{ 'exit-on-error': false }");
    wait_for_serial("src_serial");
    /* Never converges: the guest dirties faster than 1 ms of downtime */
    migrate_set_parameter_int(from, "max-bandwidth", 50 * 1000 * 1000);
    migrate_set_parameter_int(from, "downtime-limit", 1);
    migrate_qmp(from, to, uri, NULL, "{}");

    /* Wait until the sub-host holds a good part of the guest */
    deadline = g_get_monotonic_time() + SPLIT_TIMEOUT_S * G_USEC_PER_SEC;
    for (;;) {
        g_autoptr(QDict) rsp = qtest_qmp_assert_success_ref(from,
                                   "{ 'execute': 'query-migrate' }");
        QDict *split = qdict_get_qdict(rsp, "split");
        QList *dests = split ? qdict_get_qlist(split, "destinations") : NULL;

        if (dests && qlist_size(dests) == 2) {
            QDict *d = qobject_to(QDict, qlist_entry_obj(
                                  qlist_next(qlist_first(dests))));

            /*
             * 'pages' counts writes submitted; the export holds them once
             * they were acknowledged, a little later on a loaded host
             */
            if (qdict_get_int(d, "pages") > 4096 &&
                split_subhost_data_bytes(&t.sub[0]) >
                4096 * SPLIT_PAGE_SIZE) {
                break;
            }
        }
        g_assert_true(g_str_equal(qdict_get_str(rsp, "status"), "setup") ||
                      g_str_equal(qdict_get_str(rsp, "status"), "active"));
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(10 * 1000);
    }

    migrate_cancel(from);
    wait_for_migration_status(from, "cancelled",
                              (const char * []) { "completed", NULL });
    wait_for_migration_status(to, "failed",
                              (const char * []) { "completed", NULL });

    /*
     * The source runs on, its memory intact; the sub-host holds nothing
     * of this migration any more, and still the marker
     */
    status = split_status(from);
    g_assert_cmpstr(status, ==, "running");
    held = split_wait_data_bytes(&t.sub[0], SPLIT_MARKER_HELD_MAX);
    g_assert_cmpuint(held, >=, SPLIT_MARKER_LEN);
    g_assert_true(split_export_has_marker(&t.sub[0]));
    {
        g_autoptr(QDict) rsp = qtest_qmp_assert_success_ref(from,
                                   "{ 'execute': 'query-migrate' }");

        g_assert_cmpint(qdict_get_int(qdict_get_qdict(rsp, "split"),
                                      "trimmed-pages"), >, 0);
    }
    qtest_qmp_assert_success(from, "{ 'execute': 'stop' }");
    split_check_pattern(from);

    qtest_quit(from);
    qtest_quit(to);
    split_test_cleanup(&t);
}

/* A sub-host that cannot be reached: clear error, the source runs on. */
static void test_split_unreachable(void)
{
    g_autofree char *uri = g_strdup_printf("unix:%s/migsocket", tmpfs);
    g_autofree char *status = NULL;
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
    };
    MigrateStart args = {
        .hide_stderr = true,
    };
    QTestState *from, *to;
    g_autoptr(QDict) rsp = NULL;
    const char *desc;

    t.sub[0].id = g_strdup("sh0");
    t.sub[0].sock = g_strdup_printf("%s/nobody-listens.sock", tmpfs);
    t.sub[0].uri = g_strdup_printf("nbd+unix:///?socket=%s", t.sub[0].sock);
    t.sub[0].capacity = 256 * 1024 * 1024;

    if (migrate_start(&from, &to, "defer", &args)) {
        split_test_cleanup(&t);
        return;
    }
    split_setup(&t, from, to);
    migrate_incoming_qmp(to, uri, NULL, "{ 'exit-on-error': false }");
    wait_for_serial("src_serial");
    migrate_ensure_converge(from);
    migrate_qmp(from, to, uri, NULL, "{}");
    /* QEMU goes through "active" when its setup fails */
    wait_for_migration_fail(from, true);

    rsp = qtest_qmp_assert_success_ref(from, "{ 'execute': 'query-migrate' }");
    desc = qdict_get_try_str(rsp, "error-desc");
    g_test_message("error: %s", desc);
    g_assert_nonnull(desc);
    g_assert_nonnull(strstr(desc, "sub-host 'sh0'"));
    status = split_status(from);
    g_assert_cmpstr(status, ==, "running");

    qtest_quit(from);
    qtest_quit(to);
    split_test_cleanup(&t);
}

/*
 * A migration that the main host fails at the split header, before the
 * switchover: it fails on both sides, the main host's error contains
 * @what, the source runs on (it never stopped its VM) and its cleanup
 * empties every sub-host, identity records included. False, with
 * everything cleaned up, when QEMU could not start.
 */
static bool split_migrate_main_fails(SplitTest *t, const char *what,
                                     QTestState **pfrom, QTestState **pto)
{
    g_autofree char *uri = g_strdup_printf("unix:%s/migsocket", tmpfs);
    g_autofree char *err = NULL;
    g_autofree char *src_err = NULL;
    MigrateStart args = {
        .hide_stderr = true,
    };
    QTestState *from, *to;
    unsigned k;

    if (migrate_start(&from, &to, "defer", &args)) {
        split_test_cleanup(t);
        return false;
    }
    split_setup(t, from, to);
    migrate_incoming_qmp(to, uri, NULL, "{ 'exit-on-error': false }");
    wait_for_serial("src_serial");
    migrate_ensure_converge(from);
    migrate_qmp(from, to, uri, NULL, "{}");

    wait_for_migration_status(to, "failed",
                              (const char * []) { "completed", NULL });
    err = split_migration_error(to);
    g_test_message("main host error: %s", err);
    g_assert_nonnull(strstr(err, what));

    /* QEMU goes through "active" when its setup fails */
    wait_for_migration_fail(from, true);
    src_err = split_migration_error(from);
    g_test_message("source error: %s", src_err);
    g_assert_false(get_src()->stop_seen);
    split_check_guest_runs(from);
    for (k = 0; k < t->nsubhosts; k++) {
        split_wait_data_bytes(&t->sub[k], 0);
    }
    *pfrom = from;
    *pto = to;
    return true;
}

/*
 * The main host cannot reach a sub-host that the source can: the incoming
 * side fails before the switchover with an error naming it, the source
 * runs on and empties the sub-host.
 */
static void test_split_unreachable_from_main(void)
{
    g_autofree char *bad_uri = g_strdup_printf("nbd+unix:///?socket=%s/"
                                               "nobody-listens.sock", tmpfs);
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
        .main_uri = { bad_uri },
    };
    QTestState *from, *to;

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    if (!split_migrate_main_fails(&t, "sub-host 'sh0'", &from, &to)) {
        return;
    }
    qtest_quit(from);
    qtest_quit(to);
    split_test_cleanup(&t);
}

/*
 * The main host has no split-subhosts of its own: it never connects to the
 * URIs that the stream names (whoever controls the stream could point it
 * at any server or Unix socket), so the migration fails.
 */
static void test_split_main_without_subhosts(void)
{
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
        .main_without_subhosts = true,
    };
    QTestState *from, *to;

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    if (!split_migrate_main_fails(&t, "this host has no split-subhosts",
                                  &from, &to)) {
        return;
    }
    qtest_quit(from);
    qtest_quit(to);
    split_test_cleanup(&t);
}

/*
 * The main host maps sh0 to sh1's export and sh1 to sh0's (an easy slip):
 * the identity records tell, and the migration fails on both sides before
 * the guest could run on another sub-host's pages. The source's cleanup
 * leaves both exports empty and reusable: the same source then migrates
 * to a fresh, rightly configured main host, whose guest memory is right.
 */
static void test_split_swapped_subhosts(void)
{
    g_autofree char *uri = g_strdup_printf("unix:%s/migsocket", tmpfs);
    SplitTest t = {
        .nsubhosts = 2,
        .budget = SPLIT_BUDGET,
    };
    MigrateStart args = {
        .only_target = true,
        .opts_target = "-S",
        .hide_stderr = true,
    };
    QTestState *from, *to;
    g_autofree char *err = NULL;

    split_test_start_subhosts(&t, 64 * 1024 * 1024);
    t.main_uri[0] = t.sub[1].uri;
    t.main_uri[1] = t.sub[0].uri;
    if (!split_migrate_main_fails(&t, "are the sub-host URIs swapped?",
                                  &from, &to)) {
        return;
    }
    err = split_migration_error(to);
    g_assert_nonnull(strstr(err, "sub-host 'sh0'"));
    g_assert_nonnull(strstr(err, "the pages of sub-host 'sh1' of this "
                            "migration, not those of 'sh0'"));
    qtest_quit(to);

    /* The same source, a fresh main host with the right mapping */
    t.main_uri[0] = t.main_uri[1] = NULL;
    if (migrate_start(&from, &to, "defer", &args)) {
        qtest_quit(from);
        split_test_cleanup(&t);
        return;
    }
    split_setup(&t, from, to);
    migrate_incoming_qmp(to, uri, NULL, "{}");
    migrate_qmp(from, to, uri, NULL, "{}");
    wait_for_migration_complete(from);
    wait_for_migration_complete(to);
    split_check_source_stats(&t, from);
    split_check_main_host_at_start(&t, to);

    split_cont(&t, to);
    wait_for_serial("dest_serial");
    split_wait_remote_page_ins(to);
    /* Reads every page of the guest's test area */
    migrate_end(from, to, true);
    split_test_cleanup(&t);
}

/*
 * The main host's URI for sh0 is a third export, empty (a server that was
 * restarted, or the wrong one): its missing identity record fails the
 * migration before the guest could run on zeros, and the main host
 * writes nothing there.
 */
static void test_split_empty_export(void)
{
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
    };
    SplitSubhostProc empty = { 0 };
    QTestState *from, *to;

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    split_subhost_start(&t, &empty, "empty", 256 * 1024 * 1024);
    t.main_uri[0] = empty.uri;
    if (split_migrate_main_fails(&t, "the export holds no identity record",
                                 &from, &to)) {
        g_autofree char *err = split_migration_error(to);

        g_assert_nonnull(strstr(err, "sub-host 'sh0'"));
        g_assert_cmpuint(split_subhost_data_bytes(&empty), ==, 0);
        qtest_quit(from);
        qtest_quit(to);
        split_test_cleanup(&t);
    }
    split_subhost_stop(&empty);
}

/*
 * An export that a running split-memory VM uses: a second, unrelated source
 * named it in its split-subhosts. Its migration fails at setup, before it
 * wrote anything there; it runs on, and so does the first VM, on the
 * pages that the export still holds. The second VM has more RAM than the
 * first: where its guest RAM span ends the export holds nothing, so it
 * must find the record where every VM looks (at the export's end).
 */
static void test_split_export_in_use(void)
{
    g_autofree char *uri2 = g_strdup_printf("unix:%s/migsocket2", tmpfs);
    g_autofree char *sock2 = g_strdup_printf("%s/migsocket2", tmpfs);
    g_autofree char *err = NULL;
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
    };
    MigrateStart args = {
        .opts_target = "-S",
        .hide_stderr = true,
    };
    MigrateStart args2 = {
        .hide_stderr = true,
        /* Not the framework's size (%.0s prints nothing of it) */
        .memory_backend = "-m 256M%.0s ",
    };
    QTestState *from, *to, *from2, *to2;
    uint64_t held;

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    if (!split_migrate_to_paused(&t, &args, &from, &to)) {
        return;
    }
    qtest_quit(from);
    /* The main host runs the VM, part of it on the sub-host */
    split_cont(&t, to);
    wait_for_serial("dest_serial");
    held = split_subhost_data_bytes(&t.sub[0]);
    g_assert_cmpuint(held, >, 0);

    /* Another VM, whose split-subhosts name the same export */
    if (migrate_start(&from2, &to2, "defer", &args2)) {
        qtest_quit(to);
        split_test_cleanup(&t);
        return;
    }
    split_setup(&t, from2, to2);
    migrate_incoming_qmp(to2, uri2, NULL, "{ 'exit-on-error': false }");
    wait_for_serial("src_serial");
    migrate_ensure_converge(from2);
    migrate_qmp(from2, to2, uri2, NULL, "{}");
    /* QEMU goes through "active" when its setup fails */
    wait_for_migration_fail(from2, true);
    err = split_migration_error(from2);
    g_test_message("second source: %s", err);
    g_assert_nonnull(strstr(err, "split-memory: sub-host 'sh0' ("));
    g_assert_nonnull(strstr(err, ") is in use: its export holds the pages "
                            "of the running split-memory VM"));
    split_check_guest_runs(from2);
    qtest_quit(from2);
    qtest_quit(to2);
    unlink(sock2);

    /* The first VM: its pages are still there, its memory is right */
    g_assert_cmpuint(split_subhost_data_bytes(&t.sub[0]), ==, held);
    {
        g_autoptr(QDict) rsp = split_query_memory(to);
        QDict *s = qobject_to(QDict, qlist_peek(qdict_get_qlist(rsp,
                                                            "subhosts")));

        g_assert_true(qdict_get_bool(s, "connected"));
        g_assert_cmpint(qdict_get_int(s, "pages"), >, 0);
    }
    split_check_guest_runs(to);
    qtest_qmp_assert_success(to, "{ 'execute': 'stop' }");
    /* Pages in what is still remote */
    split_check_pattern(to);
    qtest_quit(to);
    split_test_cleanup(&t);
}

/*
 * The main host fails after the source stopped the VM: here a device that
 * only the source has, whose state comes after the split commit. The main
 * host says so on the return path; the source's migration fails, its VM
 * runs again with its memory intact, and it empties the sub-host (the
 * main host never took the export over).
 */
static void test_split_main_fails_late(void)
{
    g_autofree char *uri = g_strdup_printf("unix:%s/migsocket", tmpfs);
    g_autofree char *err = NULL;
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
    };
    MigrateStart args = {
        .opts_source = "-device virtio-rng-pci,id=late0",
        .hide_stderr = true,
    };
    QTestState *from, *to;

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    if (migrate_start(&from, &to, "defer", &args)) {
        split_test_cleanup(&t);
        return;
    }
    split_setup(&t, from, to);
    migrate_incoming_qmp(to, uri, NULL, "{ 'exit-on-error': false }");
    wait_for_serial("src_serial");
    migrate_ensure_non_converge(from);
    migrate_prepare_for_dirty_mem(from);
    migrate_qmp(from, to, uri, NULL, "{}");
    /* A full pass: the sub-host holds pages of the guest */
    migrate_wait_for_dirty_mem(from, to);
    g_assert_cmpuint(split_subhost_data_bytes(&t.sub[0]), >, 0);
    migrate_ensure_converge(from);

    wait_for_migration_status(to, "failed",
                              (const char * []) { "completed", NULL });
    err = split_migration_error(to);
    g_test_message("main host error: %s", err);
    split_wait_source_resumed(from);
    /* It failed after the switchover began */
    g_assert_true(get_src()->stop_seen);
    g_free(err);
    err = split_migration_error(from);
    g_test_message("source error: %s", err);
    split_wait_data_bytes(&t.sub[0], 0);

    qtest_qmp_assert_success(from, "{ 'execute': 'stop' }");
    split_check_pattern(from);
    qtest_quit(from);
    qtest_quit(to);
    split_test_cleanup(&t);
}

/* Budget plus capacities below the guest RAM: refused by 'migrate'. */
static void test_split_too_small(void)
{
    g_autofree char *uri = g_strdup_printf("unix:%s/migsocket", tmpfs);
    g_autofree char *status = NULL;
    SplitTest t = {
        .nsubhosts = 1,
        .budget = 32 * 1024 * 1024,
    };
    MigrateStart args = {
        .hide_stderr = true,
    };
    QTestState *from, *to;
    QDict *err;

    split_test_start_subhosts(&t, 64 * 1024 * 1024);
    if (migrate_start(&from, &to, "defer", &args)) {
        split_test_cleanup(&t);
        return;
    }
    split_setup(&t, from, to);
    migrate_incoming_qmp(to, uri, NULL, "{ 'exit-on-error': false }");
    wait_for_serial("src_serial");

    err = qtest_qmp_assert_failure_ref(from,
                                       "{ 'execute': 'migrate',"
                                       "  'arguments': { 'uri': %s } }", uri);
    g_test_message("error: %s", qdict_get_str(err, "desc"));
    g_assert_nonnull(strstr(qdict_get_str(err, "desc"),
                            "cannot hold the guest RAM"));
    qobject_unref(err);
    status = split_status(from);
    g_assert_cmpstr(status, ==, "running");
    /* Nothing was written anywhere */
    g_assert_cmpuint(split_subhost_data_bytes(&t.sub[0]), ==, 0);

    qtest_quit(from);
    qtest_quit(to);
    split_test_cleanup(&t);
}

static void split_expect_param_error(QTestState *who, QDict *args,
                                     const char *what)
{
    QDict *err = qtest_qmp_assert_failure_ref(who,
                     "{ 'execute': 'migrate-set-parameters',"
                     "  'arguments': %p }", args);

    g_test_message("expected error: %s", qdict_get_str(err, "desc"));
    g_assert_nonnull(strstr(qdict_get_str(err, "desc"), what));
    qobject_unref(err);
}

/* Parameters: validation, QMP and HMP views, a clean state when off. */
static void test_split_params(void)
{
    QTestState *qts = qtest_init("-machine none -nodefaults");
    g_autoptr(QDict) params = NULL;
    g_autoptr(QDict) info = NULL;
    g_autofree char *hmp = NULL;
    g_autofree char *hmp2 = NULL;
    g_autofree char *hmp3 = NULL;
    QDict *args, *err;
    QList *list;
    QDict *sh;

    /* Defaults */
    params = qtest_qmp_assert_success_ref(qts,
                 "{ 'execute': 'query-migrate-parameters' }");
    g_assert_cmpint(qdict_get_int(params, "split-resident-budget"), ==, 0);
    g_assert_cmpstr(qdict_get_str(params, "split-policy"), ==,
                    "working-set");
    g_assert_cmpstr(qdict_get_str(params, "split-tls-creds"), ==, "");
    g_assert_false(qdict_haskey(params, "split-subhosts"));
    qobject_unref(params);

    /* Invalid sub-hosts */
    split_expect_param_error(qts, split_one_subhost_args("a", "http://x/y",
                             1 << 20), "scheme");
    split_expect_param_error(qts, split_one_subhost_args("a",
                             "nbd://user:pw@host/e", 1 << 20), "credentials");
    split_expect_param_error(qts, split_one_subhost_args("a",
                             "nbd+unix:///e", 1 << 20), "socket");
    split_expect_param_error(qts, split_one_subhost_args("a",
                             "nbds://host/e?tls-psk-file=/k", 1 << 20),
                             "TLS settings");
    split_expect_param_error(qts, split_one_subhost_args("a", "nbd:///e",
                             1 << 20), "no host");
    split_expect_param_error(qts, split_one_subhost_args("a", "nbd://h/e", 0),
                             "capacity");
    split_expect_param_error(qts, split_one_subhost_args("bad id",
                             "nbd://h/e", 1 << 20), "invalid id");
    args = split_one_subhost_args("a", "nbd://h/e", 1 << 20);
    list = qdict_get_qlist(args, "split-subhosts");
    sh = qdict_new();
    qdict_put_str(sh, "id", "a");
    qdict_put_str(sh, "uri", "nbd+unix:///e?socket=/run/a.sock");
    qdict_put_int(sh, "capacity", 1 << 20);
    qlist_append(list, sh);
    split_expect_param_error(qts, args, "duplicate id 'a'");

    /* A valid set, seen by QMP and HMP */
    args = split_one_subhost_args("sh0", "nbd://10.0.0.2:10809/vm1",
                                  1 << 30);
    qdict_put_int(args, "split-resident-budget", 512 << 20);
    qdict_put_str(args, "split-policy", "sequential");
    qdict_put_str(args, "split-tls-creds", "creds0");
    qtest_qmp_assert_success(qts, "{ 'execute': 'migrate-set-parameters',"
                             "  'arguments': %p }", args);
    params = qtest_qmp_assert_success_ref(qts,
                 "{ 'execute': 'query-migrate-parameters' }");
    g_assert_cmpint(qdict_get_int(params, "split-resident-budget"), ==,
                    512 << 20);
    g_assert_cmpstr(qdict_get_str(params, "split-policy"), ==, "sequential");
    g_assert_cmpstr(qdict_get_str(params, "split-tls-creds"), ==, "creds0");
    list = qdict_get_qlist(params, "split-subhosts");
    g_assert_cmpint(qlist_size(list), ==, 1);
    sh = qobject_to(QDict, qlist_peek(list));
    g_assert_cmpstr(qdict_get_str(sh, "id"), ==, "sh0");
    g_assert_cmpint(qdict_get_int(sh, "capacity"), ==, 1 << 30);

    hmp = qtest_hmp(qts, "info migrate_parameters");
    g_assert_nonnull(strstr(hmp, "split-resident-budget: 536870912 bytes"));
    g_assert_nonnull(strstr(hmp, "'sh0': nbd://10.0.0.2:10809/vm1"));
    g_assert_nonnull(strstr(hmp, "split-policy: sequential"));
    hmp2 = qtest_hmp(qts, "migrate_set_parameter split-subhosts x");
    g_assert_nonnull(strstr(hmp2, "only be set through QMP"));
    g_free(qtest_hmp(qts, "migrate_set_parameter split-resident-budget 64M"));
    g_free(qtest_hmp(qts, "migrate_set_parameter split-policy working-set"));
    qobject_unref(params);
    params = qtest_qmp_assert_success_ref(qts,
                 "{ 'execute': 'query-migrate-parameters' }");
    g_assert_cmpint(qdict_get_int(params, "split-resident-budget"), ==,
                    64 << 20);
    g_assert_cmpstr(qdict_get_str(params, "split-policy"), ==,
                    "working-set");
    /* null resets the credentials to "same as tls-creds" */
    qtest_qmp_assert_success(qts, "{ 'execute': 'migrate-set-parameters',"
                             "  'arguments': { 'split-tls-creds': null } }");

    /* Capabilities that do not combine */
    err = qtest_qmp_assert_failure_ref(qts,
              "{ 'execute': 'migrate-set-capabilities',"
              "  'arguments': { 'capabilities': ["
              "    { 'capability': 'split-memory', 'state': true },"
              "    { 'capability': 'multifd', 'state': true } ] } }");
    g_assert_nonnull(strstr(qdict_get_str(err, "desc"), "multifd"));
    qobject_unref(err);

    /* Not split: a clean state */
    info = qtest_qmp_assert_success_ref(qts,
               "{ 'execute': 'query-split-memory' }");
    g_assert_false(qdict_get_bool(info, "active"));
    g_assert_cmpint(qdict_size(info), ==, 1);
    hmp3 = qtest_hmp(qts, "info split-memory");
    g_assert_nonnull(strstr(hmp3, "split memory: off"));

    qtest_quit(qts);
}

/*
 * Guest RAM that the main host's pager cannot see is never split: such a
 * migration is refused by 'migrate' (and by 'migrate-incoming' on a main
 * host set up the same way) before anything is sent, and the VM runs on.
 */
typedef struct SplitRefusal {
    MigrateStart start;
    /* A distinctive part of split's error */
    const char *error;
    /* The main host refuses migrate-incoming too (same configuration) */
    bool refused_by_main;
    /* The URI of the refused commands; NULL: the test's Unix socket */
    const char *refused_uri;
    /* Makes the refused condition true in the running QEMUs */
    void (*prepare)(QTestState *from, QTestState *to);
    /* Then a migration without split-memory, checked on the destination */
    bool plain_after;
    /* Everything right but the capability 'return-path' */
    bool without_return_path;
} SplitRefusal;

static void split_expect_refusal(QTestState *who, const char *command,
                                 const char *uri, const char *what)
{
    QDict *err = qtest_qmp_assert_failure_ref(who,
                     "{ 'execute': %s, 'arguments': { 'uri': %s } }",
                     command, uri);
    const char *desc = qdict_get_str(err, "desc");

    g_test_message("%s refused: %s", command, desc);
    g_assert_nonnull(strstr(desc, "split-memory: "));
    g_assert_nonnull(strstr(desc, what));
    qobject_unref(err);
}

/* After a refusal the source is running and its guest still writes. */
static void split_check_source_runs(QTestState *from)
{
    g_autoptr(QDict) rsp = qtest_qmp_assert_success_ref(from,
                               "{ 'execute': 'query-migrate' }");
    const char *mig = qdict_get_try_str(rsp, "status");

    /* No migration was started: nothing to fail or cancel */
    g_assert_true(!mig || g_str_equal(mig, "none"));
    split_check_guest_runs(from);
}

static void split_test_refusal(SplitRefusal *r)
{
    g_autofree char *uri = g_strdup_printf("unix:%s/migsocket", tmpfs);
    const char *refused_uri = r->refused_uri ? r->refused_uri : uri;
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
        .without_return_path = r->without_return_path,
    };
    QTestState *from, *to;

    /* The destination must then listen without split-memory */
    g_assert_true(!r->plain_after || r->refused_by_main);
    r->start.hide_stderr = true;
    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    if (migrate_start(&from, &to, "defer", &r->start)) {
        split_test_cleanup(&t);
        return;
    }
    if (r->prepare) {
        r->prepare(from, to);
    }
    /* Everything else is right for a split migration */
    split_setup(&t, from, to);

    if (r->refused_by_main) {
        split_expect_refusal(to, "migrate-incoming", refused_uri, r->error);
        migrate_set_capability(to, "split-memory", false);
    }
    migrate_incoming_qmp(to, uri, NULL, "{ 'exit-on-error': false }");
    wait_for_serial("src_serial");

    split_expect_refusal(from, "migrate", refused_uri, r->error);
    split_check_source_runs(from);
    /* Nothing was written anywhere */
    g_assert_cmpuint(split_subhost_data_bytes(&t.sub[0]), ==, 0);

    if (!r->plain_after) {
        qtest_quit(from);
        qtest_quit(to);
        split_test_cleanup(&t);
        return;
    }
    /* The same VM migrates without split-memory: split was the refuser */
    migrate_set_capability(from, "split-memory", false);
    migrate_ensure_converge(from);
    migrate_qmp(from, to, uri, NULL, "{}");
    wait_for_migration_complete(from);
    wait_for_migration_complete(to);
    migrate_end(from, to, true);
    split_test_cleanup(&t);
}

/*
 * Without the return path the source would give the VM up before the main
 * host confirmed that it reached its sub-hosts: refused on both sides.
 */
static void test_split_refuse_without_return_path(void)
{
    SplitRefusal r = {
        .without_return_path = true,
        .error = "needs the capability 'return-path' on both hosts",
        .refused_by_main = true,
        .plain_after = true,
    };

    split_test_refusal(&r);
}

/* vhost-user backends and ivshmem peers need share=on */
static void test_split_refuse_shared(void)
{
    SplitRefusal r = {
        .start.memory_backend =
            "-object memory-backend-memfd,id=mem0,size=%s,share=on "
            "-machine memory-backend=mem0",
        .error = "RAM block 'mem0' (memory-backend-memfd 'mem0') is shared "
                 "with other processes (share=on",
        .refused_by_main = true,
        .plain_after = true,
    };

    split_test_refusal(&r);
}

static void test_split_refuse_prealloc(void)
{
    SplitRefusal r = {
        .start.memory_backend =
            "-object memory-backend-ram,id=mem0,size=%s,prealloc=on "
            "-machine memory-backend=mem0",
        .error = "RAM block 'mem0' (memory-backend-ram 'mem0') is "
                 "preallocated",
        .refused_by_main = true,
        .plain_after = true,
    };

    split_test_refusal(&r);
}

/* -mem-prealloc on the source only: the main host accepts its own RAM */
static void test_split_refuse_mem_prealloc(void)
{
    SplitRefusal r = {
        .start.opts_source = "-mem-prealloc",
        .error = "RAM block 'pc.ram' (memory-backend-ram 'pc.ram') is "
                 "preallocated",
    };

    split_test_refusal(&r);
}

/* mem-lock=on on the source, on-fault on the main host */
static void test_split_refuse_mem_lock(void)
{
    SplitRefusal r = {
        .start.opts_source = "-overcommit mem-lock=on",
        .start.opts_target = "-overcommit mem-lock=on-fault",
        .error = "guest RAM is locked (-overcommit mem-lock",
        .refused_by_main = true,
    };

    split_test_refusal(&r);
}

static void test_split_refuse_virtio_mem(void)
{
    SplitRefusal r = {
        .start.memory_backend =
            "-m %s,maxmem=1G "
            "-object memory-backend-ram,id=vmem0,size=128M "
            "-device virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=0",
        .error = "/vmem0' (memory-backend-ram 'vmem0') is managed by "
                 "virtio-mem '/machine/peripheral/vm0/virtio-backend'",
        .refused_by_main = true,
    };

    split_test_refusal(&r);
}

/*
 * Disable RAM discards in a running QEMU the way VFIO, vhost-vdpa or SEV
 * do, by calling QEMU's own ram_block_discard_disable() through gdb: none
 * of those can be set up on a machine without VFIO, vDPA or KVM.
 */
static void split_disable_discards(QTestState *who)
{
    g_autofree char *pid = g_strdup_printf("%d", (int)qtest_pid(who));
    g_autofree char *out = NULL;
    g_autofree char *errout = NULL;
    g_autoptr(GError) err = NULL;
    const char *argv[] = {
        "gdb", "-nx", "-batch", "-p", pid,
        "-iex", "set debuginfod enabled off",
        "-ex", "call (int)ram_block_discard_disable(1)", NULL
    };
    int status;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                      NULL, &out, &errout, &status, &err)) {
        g_printerr("split: cannot run gdb (it sets up this test): %s\n",
                   err->message);
        g_assert_not_reached();
    }
    if (!strstr(out, "= 0\n")) {
        g_printerr("split: gdb did not disable discards:\n%s%s\n", out,
                   errout);
        g_assert_not_reached();
    }
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void split_disable_discards_both(QTestState *from, QTestState *to)
{
    split_disable_discards(from);
    split_disable_discards(to);
}

static void test_split_refuse_discard_disabled(void)
{
    SplitRefusal r = {
        .prepare = split_disable_discards_both,
        .error = "RAM discards are disabled by a device or guest type that "
                 "pins guest RAM (VFIO",
        .refused_by_main = true,
    };

    split_test_refusal(&r);
}

static void test_split_refuse_rdma(void)
{
    SplitRefusal r = {
        .refused_uri = "rdma:127.0.0.1:4444",
        .error = "the rdma transport is not supported",
        .refused_by_main = true,
    };

    split_test_refusal(&r);
}

/* Without split-memory, rdma fails for its own reason in this build */
static void test_split_rdma_plain(void)
{
    QTestState *qts = qtest_init("-machine none -nodefaults");
    QDict *err;

    err = qtest_qmp_assert_failure_ref(qts,
              "{ 'execute': 'migrate',"
              "  'arguments': { 'uri': 'rdma:127.0.0.1:4444' } }");
    g_test_message("rdma without split-memory: %s",
                   qdict_get_str(err, "desc"));
    g_assert_null(strstr(qdict_get_str(err, "desc"), "split-memory"));
    qobject_unref(err);
    qtest_quit(qts);
}

#define SPLIT_HUGE_PAGE         (2 * 1024 * 1024)
#define SPLIT_HUGETLBFS_MAGIC   0x958458f6
#define SPLIT_HUGE_SYSFS        "/sys/kernel/mm/hugepages/hugepages-2048kB/"

static long split_read_long(const char *path)
{
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return -1;
    }
    return g_ascii_strtoll(text, NULL, 10);
}

/* Write a number to a /proc or /sys file in place (no rename). */
static bool split_write_long(const char *path, long value)
{
    g_autofree char *text = g_strdup_printf("%ld\n", value);
    int fd = open(path, O_WRONLY);
    bool ok;

    if (fd < 0) {
        return false;
    }
    ok = write(fd, text, strlen(text)) == strlen(text);
    close(fd);
    return ok;
}

typedef struct SplitHugetlb {
    char *dir;
    bool mounted;
    long nr_before;     /* -1: nr_hugepages left alone */
} SplitHugetlb;

/*
 * A hugetlbfs mount with @npages free 2 MiB pages: this machine's, or one
 * mounted here, with pages reserved here if there are too few. Fails if
 * that cannot be done: a hugetlbfs test must not pass by not running.
 */
static void split_hugetlb_setup(SplitHugetlb *h, long npages)
{
    struct statfs sfs;
    long free_pages;

    h->nr_before = -1;
    if (statfs("/dev/hugepages", &sfs) == 0 &&
        sfs.f_type == SPLIT_HUGETLBFS_MAGIC) {
        h->dir = g_strdup("/dev/hugepages");
    } else {
        h->dir = g_strdup_printf("%s/hugetlbfs", tmpfs);
        g_assert_cmpint(g_mkdir_with_parents(h->dir, 0700), ==, 0);
        if (mount("none", h->dir, "hugetlbfs", 0, "pagesize=2M")) {
            g_printerr("split: cannot mount hugetlbfs on %s: %s (this test "
                       "needs root or a hugetlbfs mount)\n", h->dir,
                       strerror(errno));
            g_assert_not_reached();
        }
        h->mounted = true;
    }
    free_pages = split_read_long(SPLIT_HUGE_SYSFS "free_hugepages");
    g_assert_cmpint(free_pages, >=, 0);
    if (free_pages < npages) {
        long nr = split_read_long("/proc/sys/vm/nr_hugepages");

        if (nr < 0 || !split_write_long("/proc/sys/vm/nr_hugepages",
                                        nr + npages - free_pages)) {
            g_printerr("split: cannot reserve huge pages in "
                       "/proc/sys/vm/nr_hugepages (needs root)\n");
            g_assert_not_reached();
        }
        h->nr_before = nr;
        free_pages = split_read_long(SPLIT_HUGE_SYSFS "free_hugepages");
    }
    g_test_message("hugetlbfs %s, %ld free 2 MiB pages", h->dir, free_pages);
    g_assert_cmpint(free_pages, >=, npages);
}

static void split_hugetlb_cleanup(SplitHugetlb *h)
{
    if (h->nr_before >= 0) {
        split_write_long("/proc/sys/vm/nr_hugepages", h->nr_before);
    }
    if (h->mounted) {
        umount(h->dir);
        rmdir(h->dir);
    }
    g_free(h->dir);
}

/* The norm for large VMs; not split at huge-page size yet */
static void test_split_refuse_hugetlb(void)
{
    SplitHugetlb h = { 0 };
    g_autofree char *backend = NULL;
    SplitRefusal r = {
        .error = "RAM block 'mem0' (memory-backend-file 'mem0') uses huge "
                 "pages (2 MiB, the host's page size is 4 KiB): huge pages "
                 "are not supported yet",
        .refused_by_main = true,
        .plain_after = true,
    };

    /* The source and the destination hold the guest RAM at once */
    split_hugetlb_setup(&h, 2 * SPLIT_GUEST_RAM / SPLIT_HUGE_PAGE);
    backend = g_strdup_printf("-object memory-backend-file,id=mem0,size=%%s,"
                              "mem-path=%s,share=off "
                              "-machine memory-backend=mem0", h.dir);
    r.start.memory_backend = backend;
    split_test_refusal(&r);
    split_hugetlb_cleanup(&h);
}

/*
 * The main host's pager under placement failures it must survive
 * (SPLIT_PAGER_INJECT makes them on any kernel): EAGAIN and ENOMEM are
 * retried with backoff, the faulting threads wait and then get the
 * right page; nothing is woken without its page.
 */
/* Placements failed on purpose, each retried with backoff */
#define SPLIT_INJECT_COUNT 20

static void split_test_retried(const char *inject, const char *counter)
{
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
        .inject = inject,
        .inject_counter = counter,
        .inject_count = SPLIT_INJECT_COUNT,
    };

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    split_test_migrate(&t);
}

static void test_split_pager_eagain(void)
{
    split_test_retried("EAGAIN:" stringify(SPLIT_INJECT_COUNT), "eagain");
}

static void test_split_pager_enomem(void)
{
    split_test_retried("ENOMEM:" stringify(SPLIT_INJECT_COUNT), "retries");
}

/* Wait for the main host's run state @want, failing on anything but @ok */
static void split_wait_status(QTestState *who, const char *want,
                              const char *ok)
{
    int64_t deadline = g_get_monotonic_time() +
                       SPLIT_TIMEOUT_S * G_USEC_PER_SEC;

    for (;;) {
        g_autofree char *status = split_status(who);

        if (g_str_equal(status, want)) {
            return;
        }
        g_assert_cmpstr(status, ==, ok);
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(20 * 1000);
    }
}

/*
 * A placement that fails for good once the guest runs (EFAULT): the
 * main host stops the VM with SPLIT_PAGE_IN_FAILED, the monitor stays
 * usable, and QEMU exits with a failure since a vCPU waits for a page.
 * With ENOMEM for longer than 10 s the VM stops the same way, the
 * placement is still retried, and once it succeeds the VM continues
 * with the right memory.
 */
static void split_test_place_failed(const char *inject, bool recovers)
{
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
        .inject = inject,
    };
    MigrateStart args = {
        .opts_target = "-S",
        .hide_stderr = true,
    };
    QTestState *from, *to;
    QDict *ev, *data;

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    if (!split_migrate_to_paused(&t, &args, &from, &to)) {
        return;
    }

    split_cont(&t, to);
    ev = qtest_qmp_eventwait_ref(to, "SPLIT_PAGE_IN_FAILED");
    data = qdict_get_qdict(ev, "data");
    g_test_message("event: %s offset 0x%" PRIx64 ": %s",
                   qdict_get_str(data, "block"),
                   (uint64_t)qdict_get_int(data, "offset"),
                   qdict_get_str(data, "error"));
    g_assert_nonnull(qdict_get_str(data, "block"));
    qobject_unref(ev);
    split_wait_status(to, "io-error", "running");

    if (!recovers) {
        /* The monitor answers although a vCPU waits for good */
        g_autoptr(QDict) rsp = split_query_memory(to);

        g_assert_true(qdict_get_bool(rsp, "active"));
        qtest_set_expected_status(to, EXIT_FAILURE);
        qtest_quit(from);
        qtest_quit(to);
        split_test_cleanup(&t);
        return;
    }

    /* Memory is back: the waiting pages land, the VM may go on */
    {
        int64_t deadline = g_get_monotonic_time() +
                           SPLIT_TIMEOUT_S * G_USEC_PER_SEC;

        for (;;) {
            g_autoptr(QDict) rsp = split_query_memory(to);

            if (qdict_get_int(rsp, "in-flight") == 0) {
                g_test_message("retries: %" PRId64,
                               qdict_get_int(rsp, "retries"));
                g_assert_cmpint(qdict_get_int(rsp, "retries"), >, 0);
                break;
            }
            g_assert_cmpint(g_get_monotonic_time(), <, deadline);
            g_usleep(50 * 1000);
        }
    }
    qtest_qmp_assert_success(to, "{ 'execute': 'cont' }");
    wait_for_serial("dest_serial");
    /* Stopped, the guest's pattern has at most one edge */
    qtest_qmp_assert_success(to, "{ 'execute': 'stop' }");
    split_check_pattern(to);
    qtest_quit(from);
    qtest_quit(to);
    split_test_cleanup(&t);
}

static void test_split_pager_efault(void)
{
    /* after the placements the device state load needs */
    split_test_place_failed("EFAULT:1:32", false);
}

static void test_split_pager_enomem_gives_up(void)
{
    split_test_place_failed("ENOMEM:120:32", true);
}

/* Write @text to a cgroup file (g_file_set_contents() renames: not here) */
static bool split_write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY);
    ssize_t len = strlen(text);
    bool ok;

    if (fd < 0) {
        return false;
    }
    ok = write(fd, text, len) == len;
    close(fd);
    return ok;
}

/* A memory cgroup for @pid with @limit bytes; returns its directory. */
static char *split_memcg_enter(pid_t pid, uint64_t limit, bool *v1)
{
    const char *base;
    g_autofree char *dir = NULL, *lim = NULL, *procs = NULL;
    g_autofree char *val = g_strdup_printf("%" PRIu64, limit);
    g_autofree char *spid = g_strdup_printf("%d", (int)pid);

    *v1 = g_file_test("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                      G_FILE_TEST_EXISTS);
    base = *v1 ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup";
    dir = g_strdup_printf("%s/splitmem-qtest-%d", base, (int)getpid());
    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    lim = g_strdup_printf("%s/%s", dir, *v1 ? "memory.limit_in_bytes" :
                                              "memory.max");
    procs = g_strdup_printf("%s/cgroup.procs", dir);
    g_assert_true(split_write_file(lim, val));
    g_assert_true(split_write_file(procs, spid));
    return g_steal_pointer(&dir);
}

static void split_memcg_unlimit(const char *dir, bool v1)
{
    g_autofree char *lim = g_strdup_printf("%s/%s", dir,
                                           v1 ? "memory.limit_in_bytes" :
                                                "memory.max");

    g_assert_true(split_write_file(lim, v1 ? "-1" : "max"));
}

static void split_memcg_leave(const char *dir, pid_t pid, bool v1)
{
    g_autofree char *root = g_strdup_printf("%s/cgroup.procs",
                                            v1 ? "/sys/fs/cgroup/memory" :
                                                 "/sys/fs/cgroup");
    g_autofree char *spid = g_strdup_printf("%d", (int)pid);

    split_write_file(root, spid);
    rmdir(dir);
}

/*
 * The main host in a memory cgroup whose limit the guest's page-ins reach:
 * it neither hangs nor is OOM-killed. The pager keeps a headroom below the
 * limit, stops the VM with SPLIT_PAGE_IN_FAILED and lets the faults wait;
 * once the limit is raised they are served and the VM continues with the
 * right memory.
 */
static void test_split_pager_memcg(void)
{
    g_autofree char *cg = NULL;
    SplitTest t = {
        .nsubhosts = 1,
        .budget = SPLIT_BUDGET,
    };
    MigrateStart args = {
        .opts_target = "-S",
        .hide_stderr = true,
    };
    QTestState *from, *to;
    QDict *ev, *data;
    bool v1;

    split_test_start_subhosts(&t, 256 * 1024 * 1024);
    if (!split_migrate_to_paused(&t, &args, &from, &to)) {
        return;
    }

    /*
     * Charges made before the move stay where they were: the cgroup
     * starts near empty, and 48 MiB leave 16 MiB of page-ins above the
     * pager's 32 MiB headroom, well below the ~25 MiB the guest pages in.
     */
    cg = split_memcg_enter(qtest_pid(to), 48 * 1024 * 1024, &v1);
    split_cont(&t, to);
    ev = qtest_qmp_eventwait_ref(to, "SPLIT_PAGE_IN_FAILED");
    data = qdict_get_qdict(ev, "data");
    g_test_message("event: %s offset 0x%" PRIx64 ": %s",
                   qdict_get_str(data, "block"),
                   (uint64_t)qdict_get_int(data, "offset"),
                   qdict_get_str(data, "error"));
    g_assert_nonnull(strstr(qdict_get_str(data, "error"), "memory cgroup"));
    qobject_unref(ev);
    split_wait_status(to, "io-error", "running");

    /* Memory is back: the waiting faults are served, the VM goes on */
    split_memcg_unlimit(cg, v1);
    qtest_qmp_assert_success(to, "{ 'execute': 'cont' }");
    wait_for_serial("dest_serial");
    split_wait_remote_page_ins(to);
    qtest_qmp_assert_success(to, "{ 'execute': 'stop' }");
    split_check_pattern(to);
    split_memcg_leave(cg, qtest_pid(to), v1);
    qtest_quit(from);
    qtest_quit(to);
    split_test_cleanup(&t);
}

/*
 * Re-migrating a split-memory VM from its main host to a plain
 * destination (no split-memory there): the main host, now a source,
 * sends every page of its guest, and its pager pages in from the
 * sub-host what the RAM iteration reads. The split-memory capability is
 * turned off on it first (the source side of a split migration would
 * split again), and 'return-path' too (the plain destination has
 * neither).
 */
typedef struct SplitRemigrate {
    SplitTest t;
    /*
     * The second migration is a split one too, onto the same sub-host:
     * @plain is then the new main host
     */
    bool split;
    QTestState *main;
    QTestState *plain;
    char *uri;
    /*
     * Before the second migration: pages fetched from the sub-host, and
     * pages stored only there
     */
    int64_t page_ins_before;
    int64_t only_remote_before;
} SplitRemigrate;

/*
 * Pages the main host @who fetched from its sub-hosts so far: on a fault
 * or with one (prefetched); in @only_remote, those still stored only on
 * a sub-host. Logged with what is resident, as @when.
 */
static int64_t split_remote_page_ins(QTestState *who, const char *when,
                                     int64_t *only_remote)
{
    g_autoptr(QDict) rsp = split_query_memory(who);
    int64_t remote = qdict_get_int(rsp, "page-ins-remote");
    int64_t prefetched = qdict_get_int(rsp, "prefetched-pages");
    int64_t left = 0;
    QListEntry *e;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "subhosts"), e) {
        left += qdict_get_int(qobject_to(QDict, qlist_entry_obj(e)),
                              "pages");
    }
    g_test_message("main host %s: %" PRId64 " remote page-ins (+%" PRId64
                   " prefetched), %" PRId64 " resident pages, %" PRId64
                   " only on the sub-host", when, remote, prefetched,
                   qdict_get_int(rsp, "resident-pages"), left);
    if (only_remote) {
        *only_remote = left;
    }
    return remote + prefetched;
}

/*
 * Split-migrate to a main host, run the guest there a little, then start
 * a plain destination and migrate the main host to it (not waiting for
 * the end). False, with everything cleaned up, when QEMU could not start.
 */
static bool split_remigrate_start(SplitRemigrate *r, bool exit_on_error)
{
    MigrateStart args = {
        .opts_target = "-S",
        .hide_stderr = true,
    };
    MigrateStart plain_args = {
        .only_target = true,
        .hide_stderr = true,
    };
    g_autofree char *serial = g_strdup_printf("%s/dest_serial", tmpfs);
    QTestState *from;

    r->t.nsubhosts = 1;
    r->t.budget = SPLIT_BUDGET;
    split_test_start_subhosts(&r->t, 256 * 1024 * 1024);
    if (!split_migrate_to_paused(&r->t, &args, &from, &r->main)) {
        return false;
    }
    split_check_main_host_at_start(&r->t, r->main);
    split_cont(&r->t, r->main);
    wait_for_serial("dest_serial");
    split_wait_remote_page_ins(r->main);
    /* The main host holds the VM: the first source has nothing to do */
    qtest_quit(from);
    split_check_guest_runs(r->main);

    if (!r->split) {
        migrate_set_capability(r->main, "split-memory", false);
        migrate_set_capability(r->main, "return-path", false);
    }
    /* The plain destination's serial is a file of its own */
    unlink(serial);
    if (migrate_start(&r->main, &r->plain, "defer", &plain_args)) {
        qtest_quit(r->main);
        split_test_cleanup(&r->t);
        return false;
    }
    if (r->split) {
        /* The main host splits its VM again, onto the same sub-host */
        split_setup(&r->t, r->main, r->plain);
    }
    r->uri = g_strdup_printf("unix:%s/migsocket-plain", tmpfs);
    migrate_incoming_qmp(r->plain, r->uri, NULL, exit_on_error ? "{}" :
                         "{ 'exit-on-error': false }");
    r->page_ins_before = split_remote_page_ins(r->main, "before",
                                               &r->only_remote_before);
    migrate_ensure_non_converge(r->main);
    migrate_prepare_for_dirty_mem(r->main);
    migrate_qmp(r->main, r->plain, r->uri, NULL, "{}");
    return true;
}

static void split_remigrate_cleanup(SplitRemigrate *r)
{
    g_autofree char *path = g_strdup_printf("%s/migsocket-plain", tmpfs);

    unlink(path);
    g_clear_pointer(&r->uri, g_free);
    split_test_cleanup(&r->t);
}

/* A full pass, the guest dirtied memory again, then completion */
static void split_remigrate_complete(SplitRemigrate *r)
{
    migrate_wait_for_dirty_mem(r->main, r->plain);
    migrate_ensure_converge(r->main);
    wait_for_migration_complete(r->main);
    wait_for_migration_complete(r->plain);
}

static void test_split_remigrate_plain(void)
{
    SplitRemigrate r = { };
    int64_t after, only_remote;

    if (!split_remigrate_start(&r, true)) {
        return;
    }
    split_remigrate_complete(&r);

    /* The pages that were on the sub-host were gathered from it */
    after = split_remote_page_ins(r.main, "after", &only_remote);
    g_assert_cmpint(r.only_remote_before, >, 0);
    g_assert_cmpint(after, >=, r.page_ins_before + r.only_remote_before);
    g_assert_cmpint(only_remote, ==, 0);

    wait_for_serial("dest_serial");
    split_check_guest_runs(r.plain);
    /* Quits the main host, checks every page of the plain destination */
    migrate_end(r.main, r.plain, true);
    split_remigrate_cleanup(&r);
}

/*
 * The same, cancelled midway: the main host runs its split-memory VM on,
 * its guest's memory intact, its sub-host still connected.
 */
static void test_split_remigrate_cancel(void)
{
    SplitRemigrate r = { };
    int64_t deadline;
    QDict *s;

    if (!split_remigrate_start(&r, false)) {
        return;
    }
    /* Wait until a good part of the guest went out (at 3 MB/s) */
    deadline = g_get_monotonic_time() + SPLIT_TIMEOUT_S * G_USEC_PER_SEC;
    for (;;) {
        g_autoptr(QDict) rsp = qtest_qmp_assert_success_ref(r.main,
                                   "{ 'execute': 'query-migrate' }");
        QDict *ram = qdict_get_qdict(rsp, "ram");

        g_assert_true(g_str_equal(qdict_get_str(rsp, "status"), "setup") ||
                      g_str_equal(qdict_get_str(rsp, "status"), "active"));
        if (ram && qdict_get_int(ram, "transferred") > 8 * 1024 * 1024) {
            break;
        }
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(20 * 1000);
    }
    migrate_cancel(r.main);
    wait_for_migration_status(r.main, "cancelled",
                              (const char * []) { "completed", NULL });
    wait_for_migration_status(r.plain, "failed",
                              (const char * []) { "completed", NULL });
    split_remote_page_ins(r.main, "after the cancel", NULL);

    split_check_guest_runs(r.main);
    {
        g_autoptr(QDict) rsp = split_query_memory(r.main);

        g_assert_true(qdict_get_bool(rsp, "active"));
        s = qobject_to(QDict, qlist_peek(qdict_get_qlist(rsp, "subhosts")));
        g_assert_cmpstr(qdict_get_str(s, "id"), ==, "sh0");
        g_assert_true(qdict_get_bool(s, "connected"));
        g_assert_cmpint(qdict_get_int(rsp, "blocked-faults"), ==, 0);
    }
    /*
     * Quits the plain destination; the main host's guest still writes,
     * and every page of its test area checks out (page-ins again)
     */
    migrate_end(r.plain, r.main, true);
    split_remigrate_cleanup(&r);
}

/* Pages that sub-host @id kept in the split migration of @from. */
static int64_t split_source_kept(QTestState *from, const char *id)
{
    g_autoptr(QDict) rsp = qtest_qmp_assert_success_ref(from,
                               "{ 'execute': 'query-migrate' }");
    QListEntry *e;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(qdict_get_qdict(rsp, "split"),
                                        "destinations"), e) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));

        if (g_str_equal(qdict_get_str(d, "destination"), id)) {
            return qdict_get_int(d, "kept");
        }
    }
    g_assert_not_reached();
}

/*
 * The old main host @who of a completed re-migration refuses to run its
 * VM, to migrate it, or to save or dump its RAM (reading it would wait
 * for good): sub-host @id's pages are the new main host's. (Its disk's
 * lock would refuse 'cont' too, later: the refusal names the real
 * reason.)
 */
static void split_check_handed_over(QTestState *who, const char *id)
{
    g_autofree char *want = g_strdup_printf("owns its pages on sub-host "
                                            "'%s'", id);
    g_autofree char *uri = g_strdup_printf("unix:%s/migsocket-none", tmpfs);
    g_autofree char *file = g_strdup_printf("%s/handed-over-ram", tmpfs);
    g_autofree char *dump = g_strdup_printf("file:%s", file);
    static const char *const cmds[] = {
        "cont", "migrate", "pmemsave", "memsave", "dump-guest-memory",
    };
    g_autofree char *status = NULL;
    QDict *rsp[ARRAY_SIZE(cmds)];
    unsigned i;

    rsp[0] = qtest_qmp(who, "{ 'execute': 'cont' }");
    rsp[1] = qtest_qmp(who, "{ 'execute': 'migrate', 'arguments': "
                       "{ 'uri': %s } }", uri);
    rsp[2] = qtest_qmp(who, "{ 'execute': 'pmemsave', 'arguments': "
                       "{ 'val': 0, 'size': 1048576, 'filename': %s } }",
                       file);
    rsp[3] = qtest_qmp(who, "{ 'execute': 'memsave', 'arguments': "
                       "{ 'val': 0, 'size': 1048576, 'filename': %s } }",
                       file);
    rsp[4] = qtest_qmp(who, "{ 'execute': 'dump-guest-memory', "
                       "'arguments': { 'paging': false, 'protocol': %s } }",
                       dump);
    for (i = 0; i < ARRAY_SIZE(rsp); i++) {
        const char *desc;

        g_assert_true(qdict_haskey(rsp[i], "error"));
        desc = qdict_get_str(qdict_get_qdict(rsp[i], "error"), "desc");
        g_test_message("%s on the old main host: %s", cmds[i], desc);
        g_assert_nonnull(strstr(desc, want));
        qobject_unref(rsp[i]);
    }
    /* Refused before anything was written */
    g_assert_false(g_file_test(file, G_FILE_TEST_EXISTS));
    status = split_status(who);
    g_assert_cmpstr(status, ==, "postmigrate");
}

/*
 * A split-memory VM split-migrated again, onto a new main host with the
 * same sub-host: the pages whose only copy is there stay, neither paged
 * in on the old main host nor sent; the new main host pages them in from
 * there, and every page of the guest checks out.
 */
static void test_split_remigrate_split(void)
{
    SplitRemigrate r = { .split = true };
    int64_t after, kept;

    if (!split_remigrate_start(&r, true)) {
        return;
    }
    split_remigrate_complete(&r);

    split_check_source_stats(&r.t, r.main);
    kept = split_source_kept(r.main, "sh0");
    after = split_remote_page_ins(r.main, "after", NULL);
    g_test_message("sh0 kept %" PRId64 " of the %" PRId64 " pages stored "
                   "only there", kept, r.only_remote_before);
    g_assert_cmpint(r.only_remote_before, >, 0);
    g_assert_cmpint(kept, >, 0);
    g_assert_cmpint(kept, <=, r.only_remote_before);
    /* Not gathered, unlike remigrate-plain */
    g_assert_cmpint(after - r.page_ins_before, <, r.only_remote_before);
    split_check_handed_over(r.main, "sh0");

    wait_for_serial("dest_serial");
    split_check_guest_runs(r.plain);
    split_wait_remote_page_ins(r.plain);

    /* Quits the old main host, checks every page of the new one */
    migrate_end(r.main, r.plain, true);
    split_remigrate_cleanup(&r);
}

/*
 * The same, cancelled midway: the old main host runs on, on its
 * sub-host, and no kept page was trimmed there: every page of its guest
 * checks out, those still remote paged in from the sub-host.
 */
static void test_split_remigrate_split_cancel(void)
{
    SplitRemigrate r = { .split = true };
    int64_t deadline;

    if (!split_remigrate_start(&r, false)) {
        return;
    }
    /* Wait until a good part of the guest went out (at 3 MB/s) */
    deadline = g_get_monotonic_time() + SPLIT_TIMEOUT_S * G_USEC_PER_SEC;
    for (;;) {
        g_autoptr(QDict) rsp = qtest_qmp_assert_success_ref(r.main,
                                   "{ 'execute': 'query-migrate' }");
        QDict *ram = qdict_get_qdict(rsp, "ram");

        g_assert_cmpstr(qdict_get_str(rsp, "status"), !=, "completed");
        if (ram && qdict_get_int(ram, "transferred") > 8 * 1024 * 1024) {
            break;
        }
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(20 * 1000);
    }
    g_assert_cmpint(split_source_kept(r.main, "sh0"), >, 0);
    migrate_cancel(r.main);
    wait_for_migration_status(r.main, "cancelled",
                              (const char * []) { "completed", NULL });
    wait_for_migration_status(r.plain, "failed",
                              (const char * []) { "completed", NULL });
    split_check_guest_runs(r.main);
    {
        g_autoptr(QDict) rsp = split_query_memory(r.main);
        QDict *s = qobject_to(QDict,
                              qlist_peek(qdict_get_qlist(rsp, "subhosts")));

        g_assert_true(qdict_get_bool(s, "connected"));
        g_assert_cmpint(qdict_get_int(rsp, "blocked-faults"), ==, 0);
    }
    migrate_end(r.plain, r.main, true);
    split_remigrate_cleanup(&r);
}

void migration_test_add_split(MigrationTestEnv *env)
{
    tmpfs = env->tmpfs;

    /*
     * Registered whether or not userfaultfd and nbdkit are there: without
     * them these tests fail rather than vanish.
     */
    migration_test_add("/migration/split/params", test_split_params);
    if (!env->is_x86) {
        return;     /* the checks know the x86 guest's layout */
    }
    migration_test_add("/migration/split/too-small", test_split_too_small);
    migration_test_add("/migration/split/unreachable-subhost",
                       test_split_unreachable);
    migration_test_add("/migration/split/unreachable-from-main",
                       test_split_unreachable_from_main);
    migration_test_add("/migration/split/main-without-subhosts",
                       test_split_main_without_subhosts);
    migration_test_add("/migration/split/swapped-subhosts",
                       test_split_swapped_subhosts);
    migration_test_add("/migration/split/empty-export",
                       test_split_empty_export);
    migration_test_add("/migration/split/export-in-use",
                       test_split_export_in_use);
    migration_test_add("/migration/split/main-fails-late",
                       test_split_main_fails_late);
    migration_test_add("/migration/split/one-subhost",
                       test_split_one_subhost);
    migration_test_add("/migration/split/two-subhosts",
                       test_split_two_subhosts);
    migration_test_add("/migration/split/cancel", test_split_cancel);
    migration_test_add("/migration/split/pageout", test_split_pageout);
    migration_test_add("/migration/split/pageout-unavailable",
                       test_split_pageout_unavailable);
    migration_test_add("/migration/split/remigrate-plain",
                       test_split_remigrate_plain);
    migration_test_add("/migration/split/remigrate-cancel",
                       test_split_remigrate_cancel);
    migration_test_add("/migration/split/remigrate-split",
                       test_split_remigrate_split);
    migration_test_add("/migration/split/remigrate-split-cancel",
                       test_split_remigrate_split_cancel);
    migration_test_add("/migration/split/memfd", test_split_memfd);
    migration_test_add("/migration/split/pager-eagain",
                       test_split_pager_eagain);
    migration_test_add("/migration/split/pager-enomem",
                       test_split_pager_enomem);
    migration_test_add("/migration/split/pager-efault",
                       test_split_pager_efault);
    migration_test_add("/migration/split/pager-enomem-gives-up",
                       test_split_pager_enomem_gives_up);
    migration_test_add("/migration/split/pager-memcg",
                       test_split_pager_memcg);
    migration_test_add("/migration/split/refuse-without-return-path",
                       test_split_refuse_without_return_path);
    migration_test_add("/migration/split/refuse-shared",
                       test_split_refuse_shared);
    migration_test_add("/migration/split/refuse-prealloc",
                       test_split_refuse_prealloc);
    migration_test_add("/migration/split/refuse-mem-prealloc",
                       test_split_refuse_mem_prealloc);
    migration_test_add("/migration/split/refuse-mem-lock",
                       test_split_refuse_mem_lock);
    migration_test_add("/migration/split/refuse-virtio-mem",
                       test_split_refuse_virtio_mem);
    migration_test_add("/migration/split/refuse-discard-disabled",
                       test_split_refuse_discard_disabled);
    migration_test_add("/migration/split/refuse-rdma",
                       test_split_refuse_rdma);
    migration_test_add("/migration/split/refuse-rdma-without-split",
                       test_split_rdma_plain);
    migration_test_add("/migration/split/refuse-hugetlb",
                       test_split_refuse_hugetlb);
    migration_test_add("/migration/split/subhost-lost",
                       test_split_subhost_lost);
    if (env->full_set) {
        migration_test_add("/migration/split/sequential",
                           test_split_sequential);
    }
#ifdef CONFIG_GNUTLS
    migration_test_add("/migration/split/two-subhosts-tls-psk",
                       test_split_two_subhosts_tls_psk);
#endif
}
