/*
 * Helpers for the sub-host tests: real nbdkit exports started through the
 * launcher, TLS credentials made by the credentials helper.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef TEST_SUBHOST_UTIL_H
#define TEST_SUBHOST_UTIL_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum {
    SUBHOST_TLS_NONE,
    SUBHOST_TLS_PSK,
    SUBHOST_TLS_X509,
} SubhostTestTls;

typedef struct SubhostTestServer {
    char *vm;
    char *sock_path;        /* Unix socket, or NULL for TCP */
    int port;               /* TCP port on 127.0.0.1 */
    char *pidfile;
    GPid pid;               /* nbdkit (the launcher exec'd it) */
    char *uri;              /* nbd[s]:// URI for this export */
} SubhostTestServer;

/*
 * Set up the test environment once: a private temporary directory, the
 * launcher and credentials helper (from the source tree, or the
 * SUBHOST_LAUNCHER / SUBHOST_CREDS environment variables) and credentials
 * for two VMs, "vmA" and "vmB". Aborts the test program when nbdkit or the
 * tools are missing: a missing server must not look like a pass.
 */
void subhost_test_init(int *argc, char ***argv);
const char *subhost_test_tmpdir(void);
/* Path of a credentials directory: "pskA", "cliA", "srvB", "site", ... */
char *subhost_test_creds(const char *name);
const char *subhost_test_launcher(void);
const char *subhost_test_creds_tool(void);

/*
 * Start an export for @vm of @size bytes. @tls picks the export's
 * credentials (those made for @vm). @tcp: loopback TCP, else a Unix
 * socket. @extra: more launcher arguments, NULL-terminated, or NULL.
 */
SubhostTestServer *subhost_test_server_start(const char *vm,
                                             const char *size,
                                             SubhostTestTls tls, bool tcp,
                                             const char *const *extra);
/* Start again at the same address (after a kill), with @extra args. */
void subhost_test_server_restart(SubhostTestServer *s, const char *size,
                                 SubhostTestTls tls,
                                 const char *const *extra);
void subhost_test_server_signal(SubhostTestServer *s, int sig);
/* Kill (if running), reap and free. */
void subhost_test_server_stop(SubhostTestServer *s);

/*
 * Start nbdkit itself (not through the launcher) on a Unix socket, with
 * @args (plugin, filters, parameters; NULL-terminated) after the options
 * the helpers need. For servers the launcher cannot make, e.g. one whose
 * writes fail (nbdkit's error filter).
 */
SubhostTestServer *subhost_test_nbdkit_start(const char *vm,
                                             const char *const *args);

/*
 * A minimal NBD server in a thread of the test, on a Unix socket, for
 * what nbdkit cannot be made to do on cue. It allows multi-conn, flush
 * and trim; reads return zeros, writes and flushes are acknowledged and
 * forgotten.
 */
typedef struct SubhostFakeServer SubhostFakeServer;

SubhostFakeServer *subhost_fake_server_start(const char *vm, uint64_t size);
/* What it leaves out of what it advertises (both by default) */
#define SUBHOST_FAKE_NO_FLUSH       (1u << 0)
#define SUBHOST_FAKE_NO_MULTI_CONN  (1u << 1)
SubhostFakeServer *subhost_fake_server_start_opts(const char *vm,
                                                  uint64_t size,
                                                  unsigned opts);
const char *subhost_fake_server_uri(SubhostFakeServer *f);
/* Shut every connection down now, as a server that went away. */
void subhost_fake_server_drop_all(SubhostFakeServer *f);
/* Close the next @n connections right after their handshake. */
void subhost_fake_server_drop_after_handshake(SubhostFakeServer *f,
                                              unsigned n);
/* Connections accepted so far */
unsigned subhost_fake_server_connections(SubhostFakeServer *f);
/* NBD_CMD_FLUSH requests answered so far, on all connections */
unsigned subhost_fake_server_flushes(SubhostFakeServer *f);
void subhost_fake_server_stop(SubhostFakeServer *f);

/* Run a command; returns its exit status, output in *out (may be NULL). */
int subhost_test_run(const char *const *argv, char **out);

#endif /* TEST_SUBHOST_UTIL_H */
