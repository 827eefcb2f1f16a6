/*
 * fctrans-profile: generate guest kernel profiles for free-memory
 * introspection from distribution kernel images
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *   fctrans-profile [-o FILE | -d DIR] IMAGE...
 *   fctrans-profile --check PROFILE...
 *
 * IMAGE is a linux-image-*.deb, a vmlinuz (bzImage) or a vmlinux.
 */
#include "profile.h"
#include "kimage.h"

#include <stdio.h>
#include <stdlib.h>

static char *opt_output;
static char *opt_dir;
static gboolean opt_check;
static gboolean opt_quiet;

static const GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &opt_output,
      "Write the profile to FILE ('-': standard output, the default)",
      "FILE" },
    { "directory", 'd', 0, G_OPTION_ARG_FILENAME, &opt_dir,
      "Write each profile into DIR under its canonical name", "DIR" },
    { "check", 'c', 0, G_OPTION_ARG_NONE, &opt_check,
      "Check that each argument is a valid profile", NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &opt_quiet,
      "Print nothing but errors", NULL },
    { NULL }
};

static bool generate(const char *image, GError **errp)
{
    g_autoptr(GBytes) vmlinux = NULL;
    g_autoptr(FctransProfile) p = NULL;
    g_autofree char *text = NULL;
    g_autofree char *path = NULL;
    g_autofree char *release = NULL;
    const void *data;
    size_t len;

    vmlinux = fctrans_kimage_vmlinux_file(image, &release, errp);
    if (!vmlinux) {
        return false;
    }
    data = g_bytes_get_data(vmlinux, &len);
    p = fctrans_profile_from_vmlinux(data, len, errp);
    if (!p) {
        g_prefix_error(errp, "%s: ", image);
        return false;
    }
    if (release && strcmp(release, p->release) != 0) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_INVALID,
                    "%s: package file names release %s, banner says %s",
                    image, release, p->release);
        return false;
    }
    text = fctrans_profile_to_text(p);
    if (opt_dir) {
        g_autofree char *name = fctrans_profile_file_name(p);

        path = g_build_filename(opt_dir, name, NULL);
    } else if (opt_output && strcmp(opt_output, "-") != 0) {
        path = g_strdup(opt_output);
    }
    if (!path) {
        fputs(text, stdout);
        return true;
    }
    if (!g_file_set_contents(path, text, -1, errp)) {
        return false;
    }
    if (!opt_quiet) {
        printf("%s: %s\n", path, p->banner);
    }
    return true;
}

static bool check(const char *path, GError **errp)
{
    g_autoptr(FctransProfile) p = fctrans_profile_load(path, errp);

    if (!p) {
        return false;
    }
    if (!opt_quiet) {
        printf("%s: OK: %s\n", path, p->banner);
    }
    return true;
}

int main(int argc, char **argv)
{
    g_autoptr(GOptionContext) ctx = NULL;
    g_autoptr(GError) err = NULL;
    int i, failed = 0;

    ctx = g_option_context_new("IMAGE... | --check PROFILE...");
    g_option_context_set_summary(ctx,
        "Generate splitmem guest kernel profiles (struct layouts from BTF,\n"
        "symbol addresses from the ksymtab) from a linux-image .deb, a\n"
        "vmlinuz or a vmlinux, or check existing profiles.");
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "fctrans-profile: %s\n", err->message);
        return 2;
    }
    if (argc < 2) {
        fprintf(stderr, "fctrans-profile: no input (see --help)\n");
        return 2;
    }
    if (!opt_check && opt_output && opt_dir) {
        fprintf(stderr, "fctrans-profile: -o and -d exclude each other\n");
        return 2;
    }
    if (!opt_check && opt_output && argc > 2) {
        fprintf(stderr, "fctrans-profile: -o takes one image; use -d\n");
        return 2;
    }
    for (i = 1; i < argc; i++) {
        bool ok = opt_check ? check(argv[i], &err) : generate(argv[i], &err);

        if (!ok) {
            fprintf(stderr, "fctrans-profile: %s\n", err->message);
            g_clear_error(&err);
            failed++;
        }
    }
    return failed ? 1 : 0;
}
