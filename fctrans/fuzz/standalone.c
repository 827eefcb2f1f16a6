/*
 * Driver for the fuzz targets without libFuzzer: runs each file given
 * (or each file in each directory given), then a fixed number of
 * deterministic random mutations of each, so that a compiler without
 * -fsanitize=fuzzer still exercises the targets as regression tests.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "fuzz.h"

#include <stdio.h>
#include <string.h>

#define MUTATIONS 200

static void run_file(const char *path, unsigned *runs)
{
    g_autofree uint8_t *data = NULL;
    g_autofree uint8_t *copy = NULL;
    GRand *rand = g_rand_new_with_seed(*runs + 1);
    gsize len;
    unsigned i, j;

    if (!g_file_get_contents(path, (char **)&data, &len, NULL)) {
        fprintf(stderr, "cannot read %s\n", path);
        g_rand_free(rand);
        return;
    }
    LLVMFuzzerTestOneInput(data, len);
    (*runs)++;
    copy = g_malloc(len + 1);
    for (i = 0; i < MUTATIONS && len; i++) {
        size_t n = len;

        memcpy(copy, data, len);
        for (j = g_rand_int_range(rand, 1, 9); j > 0; j--) {
            copy[g_rand_int_range(rand, 0, len)] = g_rand_int(rand);
        }
        if (g_rand_boolean(rand)) {
            n = g_rand_int_range(rand, 0, len);
        }
        LLVMFuzzerTestOneInput(copy, n);
        (*runs)++;
    }
    g_rand_free(rand);
}

int main(int argc, char **argv)
{
    unsigned runs = 0;
    int i;

    for (i = 1; i < argc; i++) {
        if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
            g_autoptr(GDir) dir = g_dir_open(argv[i], 0, NULL);
            const char *name;

            while (dir && (name = g_dir_read_name(dir))) {
                g_autofree char *p = g_build_filename(argv[i], name, NULL);

                run_file(p, &runs);
            }
        } else {
            run_file(argv[i], &runs);
        }
    }
    printf("%s: %u inputs\n", argv[0], runs);
    return runs ? 0 : 1;
}
