/*
 * libFuzzer target: the profile parser; what it accepts must render
 * back to text that parses to the same profile
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "profile.h"
#include "fuzz.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(FctransProfile) p = NULL;
    g_autoptr(FctransProfile) q = NULL;
    g_autofree char *text = NULL, *text2 = NULL, *name = NULL;

    p = fctrans_profile_parse((const char *)data, size, NULL);
    if (!p) {
        return 0;
    }
    text = fctrans_profile_to_text(p);
    name = fctrans_profile_file_name(p);
    q = fctrans_profile_parse(text, strlen(text), NULL);
    g_assert(q);
    text2 = fctrans_profile_to_text(q);
    g_assert(strcmp(text, text2) == 0);
    return 0;
}
