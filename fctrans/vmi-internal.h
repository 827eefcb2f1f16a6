/*
 * fctrans: helpers shared by the introspection modules
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Kernel images, BTF and guest memory are little-endian x86-64 data; these
 * loaders read them at any alignment on any host.
 */
#ifndef FCTRANS_VMI_INTERNAL_H
#define FCTRANS_VMI_INTERNAL_H

#include <glib.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t fctrans_ld16(const void *p)
{
    uint16_t v;

    memcpy(&v, p, sizeof(v));
    return GUINT16_FROM_LE(v);
}

static inline uint32_t fctrans_ld32(const void *p)
{
    uint32_t v;

    memcpy(&v, p, sizeof(v));
    return GUINT32_FROM_LE(v);
}

static inline uint64_t fctrans_ld64(const void *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return GUINT64_FROM_LE(v);
}

static inline void fctrans_st32(void *p, uint32_t v)
{
    v = GUINT32_TO_LE(v);
    memcpy(p, &v, sizeof(v));
}

static inline void fctrans_st64(void *p, uint64_t v)
{
    v = GUINT64_TO_LE(v);
    memcpy(p, &v, sizeof(v));
}

#endif /* FCTRANS_VMI_INTERNAL_H */
