/*
 * Tests of the sub-host launcher (contrib/subhost/splitmem-subhost): the
 * nbdkit command it builds, its configuration file, and the memory cgroup
 * it runs the export in.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "subhost.h"
#include "test-subhost-util.h"

#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

/* Run the launcher with @args (NULL-terminated); output in *out. */
static int launch(char **out, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    const char *a;
    va_list ap;

    g_ptr_array_add(argv, (char *)subhost_test_launcher());
    va_start(ap, out);
    while ((a = va_arg(ap, const char *))) {
        g_ptr_array_add(argv, (char *)a);
    }
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    return subhost_test_run((const char *const *)argv->pdata, out);
}

static void assert_contains(const char *out, const char *what)
{
    if (!strstr(out, what)) {
        g_error("'%s' not found in:\n%s", what, out);
    }
}

static void test_command_line(void)
{
    g_autofree char *psk = subhost_test_creds("pskA");
    g_autofree char *srv = subhost_test_creds("srvA");
    g_autofree char *psk_arg = g_strdup_printf("--tls-psk=%s", psk);
    g_autofree char *srv_arg = g_strdup_printf("--tls-creds=%s", srv);
    g_autofree char *expect = NULL;
    g_autofree char *out = NULL;

    g_assert_cmpint(launch(&out, "--vm", "vmA", "--size", "64G",
                           "--listen", "192.0.2.1:10809", psk_arg,
                           "--memory-limit", "16G", "--dry-run", NULL),
                    ==, 0);
    expect = g_strdup_printf("--tls-psk=%s/keys.psk", psk);
    assert_contains(out, expect);
    assert_contains(out, "--tls=require");
    assert_contains(out, "--ipaddr=192.0.2.1 --port=10809");
    assert_contains(out, "size=68719476736");
    assert_contains(out, "allocator=sparse");
    assert_contains(out, "--filter=exportname");
    assert_contains(out, "exportname=vmA exportname-strict=true");
    assert_contains(out, "memory limit: 17179869184");
    g_clear_pointer(&out, g_free);

    g_assert_cmpint(launch(&out, "--vm=vmA", "--size=1G",
                           "--listen=[::1]:10810", srv_arg,
                           "--memory-limit=1G", "--allocator=zstd",
                           "--max-clients=2", "--user=nobody",
                           "--stats-file=/tmp/st", "--dry-run", NULL), ==, 0);
    assert_contains(out, "--tls-verify-peer");
    assert_contains(out, "--ipaddr=::1 --port=10810");
    assert_contains(out, "allocator=zstd");
    assert_contains(out, "--filter=limit");
    assert_contains(out, "limit=2");
    assert_contains(out, "--user=nobody");
    assert_contains(out, "--filter=stats");
    g_clear_pointer(&out, g_free);

    g_assert_cmpint(launch(&out, "--vm=vmA", "--size=1G", "--unix=/tmp/s",
                           psk_arg, "--memory-limit=1G",
                           "--allocator=malloc-mlock", "--dry-run", NULL),
                    ==, 0);
    assert_contains(out, "allocator=malloc");
    assert_contains(out, "mlock=true");
    assert_contains(out, "--unix=/tmp/s");
}

static void test_refusals(void)
{
    static const struct {
        const char *args[8];
        const char *expect;
    } cases[] = {
        { { "--size=1G", "--unix=/s", "--no-tls", "--memory-limit=1G" },
          "--vm NAME is required" },
        { { "--vm=../etc", "--size=1G", "--unix=/s", "--no-tls",
            "--memory-limit=1G" }, "--vm NAME is required" },
        { { "--vm=vmA", "--size=lots", "--unix=/s", "--no-tls",
            "--memory-limit=1G" }, "--size BYTES is required" },
        { { "--vm=vmA", "--size=1G", "--no-tls", "--memory-limit=1G" },
          "--listen ADDR:PORT or --unix PATH is required" },
        { { "--vm=vmA", "--size=1G", "--unix=/s", "--listen=1.2.3.4:5",
            "--no-tls", "--memory-limit=1G" }, "not both" },
        { { "--vm=vmA", "--size=1G", "--unix=/s", "--memory-limit=1G" },
          "exactly one of --tls-creds, --tls-psk, --no-tls" },
        { { "--vm=vmA", "--size=1G", "--unix=/s", "--no-tls" },
          "--memory-limit BYTES is required" },
        { { "--vm=vmA", "--size=1G", "--unix=/s", "--no-tls",
            "--memory-limit=1G", "--allocator=best" }, "--allocator is" },
        { { "--vm=vmA", "--size=1G", "--listen=host", "--no-tls",
            "--memory-limit=1G" }, "--listen takes ADDR:PORT" },
        { { "--vm=vmA", "--size=1G", "--unix=/s", "--no-tls",
            "--memory-limit=1G", "--frobnicate=1" }, "unknown setting" },
        { { "--vm=vmA", "--size=1G", "--unix=/s",
            "--tls-creds=/nonexistent", "--memory-limit=1G" },
          "not found (x509 credentials directory)" },
    };
    unsigned i;

    for (i = 0; i < G_N_ELEMENTS(cases); i++) {
        const char *const *a = cases[i].args;
        g_autofree char *out = NULL;

        /* the argument list ends at the first NULL */
        g_assert_cmpint(launch(&out, "--dry-run", a[0], a[1], a[2], a[3],
                               a[4], a[5], a[6], a[7], NULL), !=, 0);
        assert_contains(out, cases[i].expect);
    }
}

/* A PSK file with several identities would let several VMs in. */
static void test_psk_one_identity(void)
{
    g_autofree char *dir = g_build_filename(subhost_test_tmpdir(),
                                            "psk-two", NULL);
    g_autofree char *file = g_build_filename(dir, "keys.psk", NULL);
    g_autofree char *arg = g_strdup_printf("--tls-psk=%s", dir);
    g_autofree char *out = NULL;

    g_mkdir_with_parents(dir, 0700);
    g_assert_true(g_file_set_contents(file, "vmA:00112233\nvmB:44556677\n",
                                      -1, NULL));
    g_assert_cmpint(launch(&out, "--vm=vmA", "--size=1G", "--unix=/s", arg,
                           "--memory-limit=1G", "--dry-run", NULL), !=, 0);
    assert_contains(out, "exactly one identity");
}

static void test_config_file(void)
{
    g_autofree char *conf = g_build_filename(subhost_test_tmpdir(),
                                             "vmA.conf", NULL);
    g_autofree char *bad = g_build_filename(subhost_test_tmpdir(),
                                            "bad.conf", NULL);
    g_autofree char *marker = g_build_filename(subhost_test_tmpdir(),
                                               "pwned", NULL);
    g_autofree char *psk = subhost_test_creds("pskA");
    g_autofree char *text = g_strdup_printf(
        "# sub-host export of vmA\n"
        "vm = vmA\n"
        "size = 32G\n"
        "listen = 10.0.0.2:10809   # storage network\n"
        "tls_psk = \"%s\"\n"
        "memory-limit = 8G\n"
        "allocator = zstd\n"
        "exit-with-parent = yes\n", psk);
    g_autofree char *bad_text = g_strdup_printf(
        "vm = $(touch %s)\nsize = 1G\nunix = /s\nno-tls = yes\n"
        "memory-limit = 1G\n", marker);
    g_autofree char *conf_arg = g_strdup_printf("--config=%s", conf);
    g_autofree char *bad_arg = g_strdup_printf("--config=%s", bad);
    g_autofree char *out = NULL;

    g_assert_true(g_file_set_contents(conf, text, -1, NULL));
    g_assert_cmpint(launch(&out, conf_arg, "--dry-run", NULL), ==, 0);
    assert_contains(out, "--ipaddr=10.0.0.2 --port=10809");
    assert_contains(out, "size=34359738368");
    assert_contains(out, "allocator=zstd");
    assert_contains(out, "--exit-with-parent");
    assert_contains(out, "keys.psk");
    g_clear_pointer(&out, g_free);

    /* The command line wins over the file. */
    g_assert_cmpint(launch(&out, conf_arg, "--allocator=sparse",
                           "--dry-run", NULL), ==, 0);
    assert_contains(out, "allocator=sparse");
    g_clear_pointer(&out, g_free);

    /* The file is data, never shell. */
    g_assert_true(g_file_set_contents(bad, bad_text, -1, NULL));
    g_assert_cmpint(launch(&out, bad_arg, "--dry-run", NULL), !=, 0);
    assert_contains(out, "--vm NAME is required");
    g_assert_false(g_file_test(marker, G_FILE_TEST_EXISTS));
    g_clear_pointer(&out, g_free);

    g_assert_true(g_file_set_contents(bad, "vm: vmA\n", -1, NULL));
    g_assert_cmpint(launch(&out, bad_arg, "--dry-run", NULL), !=, 0);
    assert_contains(out, "expected 'key = value'");
}

/* The memory cgroup hierarchy this process is in, or NULL. */
static char *own_memory_cgroup(int *version)
{
    g_autofree char *self = NULL;
    g_auto(GStrv) lines = NULL;
    unsigned i;

    if (!g_file_get_contents("/proc/self/cgroup", &self, NULL, NULL)) {
        return NULL;
    }
    lines = g_strsplit(self, "\n", -1);
    if (g_file_test("/sys/fs/cgroup/cgroup.controllers", G_FILE_TEST_EXISTS)) {
        g_autofree char *ctl = NULL;

        if (g_file_get_contents("/sys/fs/cgroup/cgroup.controllers", &ctl,
                                NULL, NULL) && strstr(ctl, "memory")) {
            for (i = 0; lines[i]; i++) {
                if (g_str_has_prefix(lines[i], "0::")) {
                    *version = 2;
                    return g_strconcat("/sys/fs/cgroup", lines[i] + 3, NULL);
                }
            }
        }
    }
    for (i = 0; lines[i]; i++) {
        g_auto(GStrv) f = g_strsplit(lines[i], ":", 3);

        if (g_strv_length(f) == 3) {
            g_auto(GStrv) ctl = g_strsplit(f[1], ",", -1);

            if (g_strv_contains((const char *const *)ctl, "memory")) {
                *version = 1;
                return g_strconcat("/sys/fs/cgroup/memory", f[2], NULL);
            }
        }
    }
    return NULL;
}

static uint64_t read_u64(const char *dir, const char *file)
{
    g_autofree char *path = g_build_filename(dir, file, NULL);
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        g_error("cannot read %s", path);
    }
    if (g_str_has_prefix(text, "max")) {
        return UINT64_MAX;
    }
    return g_ascii_strtoull(text, NULL, 10);
}

typedef struct Fill {
    pthread_mutex_t lock;
    unsigned ok, failed;
    GError *first;
} Fill;

static void fill_done(void *opaque, const GError *err)
{
    Fill *f = opaque;

    pthread_mutex_lock(&f->lock);
    if (err) {
        f->failed++;
        if (!f->first) {
            f->first = g_error_copy(err);
        }
    } else {
        f->ok++;
    }
    pthread_mutex_unlock(&f->lock);
}

/*
 * The export runs in a memory cgroup with the given hard limit; a client
 * writing past it gets a clear error (the server is OOM-killed, not the
 * host), and the launcher removes the cgroup when the export ends.
 */
static void test_cgroup_limit(void)
{
    const char *const extra[] = {
        "--cgroup=self", "--memory-limit=96M", NULL,
    };
    g_autofree char *own = NULL;
    g_autofree char *cg = NULL;
    g_autofree char *probe = NULL;
    g_autofree uint8_t *buf = NULL;
    g_autoptr(GError) err = NULL;
    SubhostTestServer *s;
    FctransSubhostConfig cfg = { .id = "sub0" };
    FctransSubhost *sh;
    Fill f = { .ok = 0 };
    const size_t chunk = 1 << 20;
    unsigned i;
    int version = 0, status;
    uint64_t usage;

    own = own_memory_cgroup(&version);
    if (geteuid() != 0 || !own) {
        g_test_skip("needs root and a memory cgroup (v2 or v1)");
        return;
    }
    probe = g_build_filename(own, "subhost-test-probe", NULL);
    if (g_mkdir(probe, 0755) && errno != EEXIST) {
        g_test_skip("the memory cgroup hierarchy is not writable here");
        return;
    }
    g_rmdir(probe);

    s = subhost_test_server_start("vmA", "1G", SUBHOST_TLS_NONE, false,
                                  extra);
    cg = g_build_filename(own, "vmA", NULL);
    g_assert_true(g_file_test(cg, G_FILE_TEST_IS_DIR));
    g_assert_cmpuint(read_u64(cg, version == 2 ? "memory.max"
                                               : "memory.limit_in_bytes"),
                     ==, 96 << 20);
    {
        g_autofree char *procs = NULL;
        g_autofree char *pid = NULL;
        g_autofree char *procs_path = g_build_filename(cg, "cgroup.procs",
                                                       NULL);

        g_assert_true(g_file_get_contents(s->pidfile, &pid, NULL, NULL));
        g_strstrip(pid);
        g_assert_true(g_file_get_contents(procs_path, &procs, NULL, NULL));
        /* nbdkit runs inside the cgroup */
        g_assert_nonnull(strstr(procs, pid));
    }

    cfg.uri = s->uri;
    sh = fctrans_subhost_open(&cfg, &err);
    g_assert_no_error(err);
    buf = g_malloc(chunk);
    memset(buf, 0x77, chunk);
    for (i = 0; i < 32; i++) {
        g_assert_true(fctrans_subhost_write_sync(sh, (uint64_t)i * chunk,
                                                 chunk, buf, &err));
    }
    usage = read_u64(cg, version == 2 ? "memory.current"
                                      : "memory.usage_in_bytes");
    g_test_message("32 MiB stored: cgroup charged %" PRIu64 " bytes", usage);
    g_assert_cmpuint(usage, >=, 32 << 20);

    /* Past the limit: the export dies, the client is told. */
    pthread_mutex_init(&f.lock, NULL);
    for (i = 32; i < 256; i++) {
        if (!fctrans_subhost_write(sh, (uint64_t)i * chunk, chunk, buf, 0,
                                   fill_done, &f, &err)) {
            g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
            g_clear_error(&err);
            break;
        }
    }
    g_assert_false(fctrans_subhost_drain(sh, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_IO);
    g_test_message("over the limit: %u acked, %u failed: %s", f.ok, f.failed,
                   err->message);
    g_assert_false(fctrans_subhost_is_connected(sh));
    g_assert_cmpuint(f.ok, <, 96);
    fctrans_subhost_close(sh);

    /* The launcher reports the OOM kill and removes the cgroup. */
    if (waitpid(s->pid, &status, 0) != s->pid) {
        g_error("waitpid: %s", g_strerror(errno));
    }
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 137);
    s->pid = 0;
    g_assert_false(g_file_test(cg, G_FILE_TEST_EXISTS));
    g_clear_error(&f.first);
    pthread_mutex_destroy(&f.lock);
    subhost_test_server_stop(s);
}

/* A clean stop (SIGTERM) ends nbdkit and removes the cgroup. */
static void test_cgroup_clean_stop(void)
{
    const char *const extra[] = {
        "--cgroup=self", "--memory-limit=64M", NULL,
    };
    g_autofree char *own = NULL;
    g_autofree char *cg = NULL;
    SubhostTestServer *s;
    int version = 0, status;

    own = own_memory_cgroup(&version);
    if (geteuid() != 0 || !own || access(own, W_OK)) {
        g_test_skip("needs root and a writable memory cgroup");
        return;
    }
    s = subhost_test_server_start("vmB", "1G", SUBHOST_TLS_NONE, false,
                                  extra);
    cg = g_build_filename(own, "vmB", NULL);
    g_assert_true(g_file_test(cg, G_FILE_TEST_IS_DIR));
    kill(s->pid, SIGTERM);
    if (waitpid(s->pid, &status, 0) != s->pid) {
        g_error("waitpid: %s", g_strerror(errno));
    }
    s->pid = 0;
    g_assert_true(WIFEXITED(status));
    g_assert_false(g_file_test(cg, G_FILE_TEST_EXISTS));
    subhost_test_server_stop(s);
}

int main(int argc, char **argv)
{
    subhost_test_init(&argc, &argv);

    g_test_add_func("/launcher/command-line", test_command_line);
    g_test_add_func("/launcher/refusals", test_refusals);
    g_test_add_func("/launcher/psk-one-identity", test_psk_one_identity);
    g_test_add_func("/launcher/config-file", test_config_file);
    g_test_add_func("/cgroup/limit", test_cgroup_limit);
    g_test_add_func("/cgroup/clean-stop", test_cgroup_clean_stop);

    return g_test_run();
}
