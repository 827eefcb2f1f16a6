/*
 * fctrans: common definitions
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "fctrans.h"

G_DEFINE_QUARK(fctrans-error-quark, fctrans_error)
