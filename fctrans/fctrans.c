/*
 * fctrans: common definitions
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdarg.h>

#include "fctrans.h"

GQuark fctrans_error_quark(void)
{
    return g_quark_from_static_string("fctrans-error-quark");
}

bool fctrans_fail(GError **errp, int code, const char *prefix,
                  const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, FCTRANS_ERROR, code, "%s%s", prefix, msg);
    return false;
}
