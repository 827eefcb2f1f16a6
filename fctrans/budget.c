/*
 * fctrans: the main host's resident budget and its page-out watermarks
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>

#include "budget.h"

void fctrans_budget_watermarks(uint64_t budget_pages, FctransWatermarks *wm)
{
    uint64_t gap = budget_pages / FCTRANS_BUDGET_GAP_DIV;

    g_assert(budget_pages >= FCTRANS_BUDGET_MIN_PAGES);
    gap = MAX(gap, FCTRANS_BUDGET_GAP_MIN_PAGES);
    gap = MIN(gap, FCTRANS_BUDGET_GAP_MAX_PAGES);
    wm->budget = budget_pages;
    wm->high = budget_pages - gap;
    wm->low = budget_pages - 2 * gap;
}
