/*
 * fctrans: a cancellation token that interrupts a blocking wait
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "cancel.h"
#include "fctrans.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

struct FctransCancel {
    int fd;             /* eventfd; its counter stays non-zero once set */
    int set;            /* atomic */
};

FctransCancel *fctrans_cancel_new(GError **errp)
{
    FctransCancel *c = g_new0(FctransCancel, 1);

    c->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->fd < 0) {
        g_set_error(errp, FCTRANS_ERROR, FCTRANS_ERROR_IO, "eventfd: %s",
                    g_strerror(errno));
        g_free(c);
        return NULL;
    }
    return c;
}

void fctrans_cancel_free(FctransCancel *c)
{
    if (c) {
        close(c->fd);
        g_free(c);
    }
}

void fctrans_cancel_trigger(FctransCancel *c)
{
    uint64_t one = 1;
    ssize_t r;

    __atomic_store_n(&c->set, 1, __ATOMIC_RELEASE);
    /* Nobody reads the counter: it stays readable for every waiter. */
    do {
        r = write(c->fd, &one, sizeof(one));
    } while (r < 0 && errno == EINTR);
}

bool fctrans_cancel_is_set(const FctransCancel *c)
{
    return __atomic_load_n(&c->set, __ATOMIC_ACQUIRE);
}

int fctrans_cancel_fd(const FctransCancel *c)
{
    return c->fd;
}
