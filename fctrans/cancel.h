/*
 * fctrans: a cancellation token that interrupts a blocking wait
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A wait that polls file descriptors (connecting to a sub-host, say) adds
 * the token's descriptor to its poll set and gives up with
 * FCTRANS_ERROR_CANCELLED once it is readable. Cancelling is one write to
 * an eventfd: async-signal-safe, never blocks, callable from any thread,
 * any number of times. A token stays cancelled until it is freed.
 */
#ifndef FCTRANS_CANCEL_H
#define FCTRANS_CANCEL_H

#include <glib.h>
#include <stdbool.h>

typedef struct FctransCancel FctransCancel;

FctransCancel *fctrans_cancel_new(GError **errp);
void fctrans_cancel_free(FctransCancel *c);

/* Cancel every wait on @c, present and future. */
void fctrans_cancel_trigger(FctransCancel *c);
bool fctrans_cancel_is_set(const FctransCancel *c);

/* Readable (POLLIN) once @c is cancelled. Never read it. */
int fctrans_cancel_fd(const FctransCancel *c);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(FctransCancel, fctrans_cancel_free)

#endif /* FCTRANS_CANCEL_H */
