/*
 * fctrans: transparent tracking of unused guest memory (common definitions)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The library is plain C over glib with no QEMU internals, so that every
 * part of it can be unit-tested alone and linked both into QEMU and into
 * the project's tools.
 */
#ifndef FCTRANS_H
#define FCTRANS_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define FCTRANS_ERROR fctrans_error_quark()
GQuark fctrans_error_quark(void);

typedef enum {
    FCTRANS_ERROR_FAILED,       /* generic failure */
    FCTRANS_ERROR_INVALID,      /* malformed input (image, profile, stream) */
    FCTRANS_ERROR_UNSUPPORTED,  /* well-formed but not supported */
    FCTRANS_ERROR_IO,           /* I/O or network failure */
    FCTRANS_ERROR_NOSPACE,      /* out of capacity */
    FCTRANS_ERROR_DENIED,       /* refused by a peer (TLS, export) */
    FCTRANS_ERROR_MISMATCH,     /* a peer holds other data than expected */
    FCTRANS_ERROR_CANCELLED,    /* the caller cancelled the wait */
} FctransError;

/*
 * Set *errp (if errp is not NULL) to an FCTRANS_ERROR with the given code
 * and the message prefix followed by the formatted text; return false, so
 * that a parser can write "return fctrans_fail(...);".
 */
bool fctrans_fail(GError **errp, int code, const char *prefix,
                  const char *fmt, ...) G_GNUC_PRINTF(4, 5);

/* A range of guest pages, [start, start + count), in page-frame numbers. */
typedef struct FctransPageRange {
    uint64_t start;
    uint64_t count;
} FctransPageRange;

#endif /* FCTRANS_H */
