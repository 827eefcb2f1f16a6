/*
 * fctrans: common definitions
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "fctrans.h"

GQuark fctrans_error_quark(void)
{
    return g_quark_from_static_string("fctrans-error-quark");
}
