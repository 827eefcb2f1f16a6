/*
 * Tests of the sub-host channel's configuration checks (subhost-config.c)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * No server is started: every configuration here is refused, or
 * accepted, before anything would connect.
 */
#include "subhost-internal.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libnbd.h>

static char *tmpdir;
static char *x509_dir;          /* an empty directory will do */
static char *psk_file;
static char *psk_dir;           /* holds keys.psk */
static char *psk_empty_dir;     /* does not */

static void make_files(void)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *keys = NULL;

    tmpdir = g_dir_make_tmp("test-subhost-config-XXXXXX", &err);
    g_assert_no_error(err);
    x509_dir = g_build_filename(tmpdir, "x509", NULL);
    psk_dir = g_build_filename(tmpdir, "psk", NULL);
    psk_empty_dir = g_build_filename(tmpdir, "psk-empty", NULL);
    psk_file = g_build_filename(tmpdir, "vm.psk", NULL);
    keys = g_build_filename(psk_dir, "keys.psk", NULL);
    g_assert_cmpint(mkdir(x509_dir, 0700), ==, 0);
    g_assert_cmpint(mkdir(psk_dir, 0700), ==, 0);
    g_assert_cmpint(mkdir(psk_empty_dir, 0700), ==, 0);
    g_assert_true(g_file_set_contents(psk_file, "vmA:00112233\n", -1, &err));
    g_assert_true(g_file_set_contents(keys, "vmA:00112233\n", -1, &err));
}

static void remove_files(void)
{
    g_autofree char *keys = g_build_filename(psk_dir, "keys.psk", NULL);

    unlink(keys);
    unlink(psk_file);
    rmdir(psk_dir);
    rmdir(psk_empty_dir);
    rmdir(x509_dir);
    rmdir(tmpdir);
}

/* @cfg must be refused with @code, and a message holding @expect. */
static void expect_refused(const FctransSubhostConfig *cfg, int code,
                           const char *expect)
{
    g_autoptr(GError) err = NULL;
    SubhostParams p;

    if (fctrans_subhost_config_check(cfg, &err)) {
        g_error("'%s' accepted (expected: %s)", cfg->uri ? cfg->uri : "",
                expect);
    }
    g_assert_nonnull(err);
    if (err->domain != FCTRANS_ERROR || err->code != code ||
        !strstr(err->message, expect)) {
        g_error("'%s': expected code %d and '%s', got %d: %s",
                cfg->uri ? cfg->uri : "", code, expect, err->code,
                err->message);
    }
    if (g_test_verbose()) {
        g_test_message("%s", err->message);
    }
    /* The internal form refuses the same, leaving nothing behind */
    g_clear_error(&err);
    g_assert_false(subhost_params_init(&p, cfg, &err));
    g_assert_error(err, FCTRANS_ERROR, code);
    g_assert_null(p.id);
    g_assert_null(p.uri);
    /* glib's convention: errp may be NULL */
    g_assert_false(fctrans_subhost_config_check(cfg, NULL));
}

static void expect_accepted(const FctransSubhostConfig *cfg)
{
    g_autoptr(GError) err = NULL;

    if (!fctrans_subhost_config_check(cfg, &err)) {
        g_error("'%s' refused: %s", cfg->uri, err->message);
    }
}

static void test_required(void)
{
    FctransSubhostConfig cfg = { .id = "sub0" };

    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "are required");
    cfg.uri = "";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "are required");
    cfg = (FctransSubhostConfig) { .uri = "nbd://127.0.0.1/x" };
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "sub-host ?: an id");
    cfg.id = "";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "are required");
}

static void test_uri_schemes(void)
{
    static const char *const refused[] = {
        "http://host/x", "file:///tmp/x", "nbd+vsock:///x", "nbd+tcp://h/x",
        "NBDX://host/x", "unix:///x?socket=/s",
    };
    static const char *const accepted[] = {
        "nbd://127.0.0.1/x", "nbd://127.0.0.1:10809/x", "nbd://[::1]/x",
        "nbd://host.example/vmA", "nbd+unix:///x?socket=/run/s.sock",
        "nbd+unix:///?socket=/run/s.sock", "nbd://127.0.0.1",
    };
    FctransSubhostConfig cfg = { .id = "sub0" };
    unsigned i;

    for (i = 0; i < G_N_ELEMENTS(refused); i++) {
        cfg.uri = refused[i];
        expect_refused(&cfg, FCTRANS_ERROR_INVALID, "is not nbd://");
    }
    for (i = 0; i < G_N_ELEMENTS(accepted); i++) {
        cfg.uri = accepted[i];
        expect_accepted(&cfg);
    }
    cfg.uri = "::::";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "invalid URI");
    cfg.uri = "nbd://127.0.0.1:99999999999/x";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "invalid URI");
}

/* Credentials come from the configuration only, never from the URI. */
static void test_uri_credentials(void)
{
    FctransSubhostConfig cfg = { .id = "sub0" };

    cfg.uri = "nbd://user@127.0.0.1/x";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "user information");
    cfg.uri = "nbd://user:secret@127.0.0.1/x";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "user information");
    cfg.uri = "nbd+unix:///x?socket=/s&tls-psk-file=/etc/passwd";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "'tls-psk-file'");
    cfg.uri = "nbd://127.0.0.1/x?tls-certificates=/etc";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "'tls-certificates'");
    cfg.uri = "nbd://127.0.0.1/x?tls=off";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "'tls'");
    cfg.uri = "nbd://127.0.0.1/x?tls-verify-peer=false";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "'tls-verify-peer'");
    cfg.uri = "nbd://127.0.0.1/x?tls-username=vmA";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "'tls-username'");

    /* With PSK: the identity goes in tls_username, not the URI */
    cfg.tls_psk_file = psk_file;
    cfg.uri = "nbds://vmA@127.0.0.1/x";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "tls_username");
    cfg.uri = "nbds://127.0.0.1/x";
    cfg.tls_username = "vmA";
    expect_accepted(&cfg);
}

static void test_tls(void)
{
    FctransSubhostConfig cfg = { .id = "sub0" };
    g_autofree char *nofile = g_build_filename(tmpdir, "nonexistent", NULL);

    /* nbds:// without credentials */
    cfg.uri = "nbds://127.0.0.1/x";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "no TLS credentials");
    cfg.uri = "nbds+unix:///x?socket=/s";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "no TLS credentials");

    /* Both kinds */
    cfg.uri = "nbds://127.0.0.1/x";
    cfg.tls_psk_file = psk_file;
    cfg.tls_x509_dir = x509_dir;
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "not both");

    /* A username without PSK */
    cfg.tls_psk_file = NULL;
    cfg.tls_username = "vmA";
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "only used with PSK");
    cfg.tls_username = NULL;

    /* Missing on disk */
    cfg.tls_x509_dir = nofile;
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "not found");
    cfg.tls_x509_dir = psk_file;        /* a file, not a directory */
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "not found");
    cfg.tls_x509_dir = NULL;
    cfg.tls_psk_file = nofile;
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "not found");
    cfg.tls_psk_file = psk_empty_dir;   /* no keys.psk in it */
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "keys.psk not found");

    /* Accepted: x509 over TCP, PSK as a file or a directory */
    cfg.tls_psk_file = NULL;
    cfg.tls_x509_dir = x509_dir;
    expect_accepted(&cfg);
    cfg.tls_x509_dir = NULL;
    cfg.tls_psk_file = psk_file;
    expect_accepted(&cfg);
    cfg.tls_psk_file = psk_dir;
    expect_accepted(&cfg);
    cfg.uri = "nbds+unix:///x?socket=/s";
    expect_accepted(&cfg);
    /* Credentials make TLS required even with an nbd:// URI */
    cfg.uri = "nbd://127.0.0.1/x";
    expect_accepted(&cfg);

    /* x509 over a Unix socket needs a libnbd that can check the name */
    cfg.tls_psk_file = NULL;
    cfg.tls_x509_dir = x509_dir;
    cfg.uri = "nbds+unix:///x?socket=/s";
#ifdef LIBNBD_HAVE_NBD_SET_TLS_HOSTNAME
    expect_accepted(&cfg);
#else
    expect_refused(&cfg, FCTRANS_ERROR_UNSUPPORTED, "libnbd >= 1.22");
#endif
}

static void test_sizes_and_lanes(void)
{
    static const uint32_t bad_pages[] = {
        1, 256, 511, 1000, 4095, 4097, 12288, 64 << 20, 0x80000000u,
    };
    static const uint32_t good_pages[] = { 512, 4096, 65536, 2 << 20,
                                           FCTRANS_SUBHOST_MAX_REQUEST };
    FctransSubhostConfig cfg = { .id = "sub0", .uri = "nbd://127.0.0.1/x" };
    unsigned i;

    for (i = 0; i < G_N_ELEMENTS(bad_pages); i++) {
        cfg.page_size = bad_pages[i];
        expect_refused(&cfg, FCTRANS_ERROR_INVALID, "not a power of two");
    }
    for (i = 0; i < G_N_ELEMENTS(good_pages); i++) {
        cfg.page_size = good_pages[i];
        expect_accepted(&cfg);
    }
    cfg.page_size = 0;

    for (i = 0; i <= 2; i++) {
        cfg.lanes = i;
        expect_accepted(&cfg);
    }
    cfg.lanes = 3;
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "at most 2");
    cfg.lanes = 100;
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "at most 2");

    /* A single client has one connection */
    cfg.single_client = true;
    cfg.lanes = 2;
    expect_refused(&cfg, FCTRANS_ERROR_INVALID, "single client");
    cfg.lanes = 1;
    expect_accepted(&cfg);
    cfg.lanes = 0;
    expect_accepted(&cfg);
}

/* What the checked configuration holds: copies and defaults. */
static void test_params(void)
{
    char id[] = "sub0", uri[] = "nbd+unix:///vmA?socket=/run/s.sock";
    FctransSubhostConfig cfg = { .id = id, .uri = uri };
    g_autoptr(GError) err = NULL;
    g_autofree char *keys = g_build_filename(psk_dir, "keys.psk", NULL);
    SubhostParams p;

    g_assert_true(subhost_params_init(&p, &cfg, &err));
    g_assert_no_error(err);
    /* Copies: the caller's strings may change or go */
    id[0] = 'X';
    uri[0] = 'X';
    g_assert_cmpstr(p.id, ==, "sub0");
    g_assert_cmpstr(p.uri, ==, "nbd+unix:///vmA?socket=/run/s.sock");
    g_assert_true(p.unix_socket);
    g_assert_null(p.x509_dir);
    g_assert_null(p.psk_file);
    g_assert_cmpstr(p.username, ==, "qemu");
    g_assert_cmpuint(p.page_size, ==, 4096);
    g_assert_cmpuint(p.page_shift, ==, 12);
    g_assert_cmpuint(p.lanes, ==, 0);
    g_assert_false(p.single_client);
    g_assert_cmpuint(p.connect_timeout_ms, ==, 10000);
    g_assert_cmpuint(p.request_timeout_ms, ==, 60000);
    g_assert_cmpuint(p.capacity, ==, 0);
    g_assert_cmpuint(p.min_size, ==, 0);
    subhost_params_clear(&p);
    g_assert_null(p.id);

    cfg = (FctransSubhostConfig) {
        .id = "sub1", .uri = "nbds://127.0.0.1:10810/vmA",
        .tls_psk_file = psk_dir, .tls_username = "vmA",
        .page_size = 65536, .lanes = 1, .capacity = 1 << 30,
        .min_size = 1 << 20, .connect_timeout_ms = 5,
        .request_timeout_ms = 7, .single_client = true,
    };
    g_assert_true(subhost_params_init(&p, &cfg, &err));
    g_assert_false(p.unix_socket);
    /* A PSK directory means its keys.psk */
    g_assert_cmpstr(p.psk_file, ==, keys);
    g_assert_cmpstr(p.username, ==, "vmA");
    g_assert_cmpuint(p.page_size, ==, 65536);
    g_assert_cmpuint(p.page_shift, ==, 16);
    g_assert_cmpuint(p.lanes, ==, 1);
    g_assert_true(p.single_client);
    g_assert_cmpuint(p.capacity, ==, 1 << 30);
    g_assert_cmpuint(p.min_size, ==, 1 << 20);
    g_assert_cmpuint(p.connect_timeout_ms, ==, 5);
    g_assert_cmpuint(p.request_timeout_ms, ==, 7);
    subhost_params_clear(&p);

    cfg = (FctransSubhostConfig) {
        .id = "sub2", .uri = "nbds+unix:///vmA?socket=/s",
        .tls_psk_file = psk_file,
    };
    g_assert_true(subhost_params_init(&p, &cfg, &err));
    g_assert_true(p.unix_socket);
    g_assert_cmpstr(p.psk_file, ==, psk_file);
    subhost_params_clear(&p);
}

/* fctrans_subhost_open() runs the same checks, before connecting. */
static void test_open_checks(void)
{
    FctransSubhostConfig cfg = { .id = "sub0", .uri = "http://host/x" };
    g_autoptr(GError) err = NULL;

    g_assert_null(fctrans_subhost_open(&cfg, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
    g_clear_error(&err);
    cfg.uri = "nbd://127.0.0.1/x";
    cfg.lanes = 3;
    g_assert_null(fctrans_subhost_open(&cfg, &err));
    g_assert_error(err, FCTRANS_ERROR, FCTRANS_ERROR_INVALID);
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    make_files();
    g_test_add_func("/subhost/config/required", test_required);
    g_test_add_func("/subhost/config/uri-schemes", test_uri_schemes);
    g_test_add_func("/subhost/config/uri-credentials", test_uri_credentials);
    g_test_add_func("/subhost/config/tls", test_tls);
    g_test_add_func("/subhost/config/sizes-and-lanes", test_sizes_and_lanes);
    g_test_add_func("/subhost/config/params", test_params);
    g_test_add_func("/subhost/config/open-checks", test_open_checks);
    ret = g_test_run();
    remove_files();
    return ret;
}
