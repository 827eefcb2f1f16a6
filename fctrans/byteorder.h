/*
 * fctrans: big-endian fields in byte buffers
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * fctrans builds without QEMU, so it cannot use qemu/bswap.h; these are
 * the few loads and stores its on-disk and on-wire records need (the
 * export identity record, NBD in the tests' fake server), byte by byte,
 * so that they hold at any alignment.
 */
#ifndef FCTRANS_BYTEORDER_H
#define FCTRANS_BYTEORDER_H

#include <stdint.h>

static inline void fctrans_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v;
}

static inline void fctrans_put_be32(uint8_t *p, uint32_t v)
{
    fctrans_put_be16(p, v >> 16);
    fctrans_put_be16(p + 2, v);
}

static inline void fctrans_put_be64(uint8_t *p, uint64_t v)
{
    fctrans_put_be32(p, v >> 32);
    fctrans_put_be32(p + 4, v);
}

static inline uint16_t fctrans_get_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t fctrans_get_be32(const uint8_t *p)
{
    return (uint32_t)fctrans_get_be16(p) << 16 | fctrans_get_be16(p + 2);
}

static inline uint64_t fctrans_get_be64(const uint8_t *p)
{
    return (uint64_t)fctrans_get_be32(p) << 32 | fctrans_get_be32(p + 4);
}

#endif /* FCTRANS_BYTEORDER_H */
