/*
 * libFuzzer target: the BTF reader, and lookups in whatever it accepts
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "btf.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(FctransBtf) btf = fctrans_btf_new(data, size, NULL);
    FctransBtfMember m;
    uint32_t id, n, count;
    uint64_t sz;
    int64_t v;

    if (!btf) {
        return 0;
    }
    count = MIN(fctrans_btf_type_count(btf) + 1, 4096);
    for (id = 0; id < count; id++) {
        fctrans_btf_type_size(btf, id, &sz, NULL);
        fctrans_btf_array_len(btf, id, &n, NULL);
        fctrans_btf_member(btf, id, "private", &m, NULL);
        fctrans_btf_member(btf, id, "lru.next", &m, NULL);
    }
    if (fctrans_btf_find(btf, "page", FCTRANS_BTF_KIND_STRUCT, &id, NULL)) {
        fctrans_btf_member(btf, id, "page_type", &m, NULL);
    }
    fctrans_btf_enum_value(btf, "PGTY_buddy", &v, NULL);
    return 0;
}
