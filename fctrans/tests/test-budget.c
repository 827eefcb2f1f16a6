/*
 * Unit tests: the resident budget's watermarks
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <glib.h>

#include "budget.h"

static void check(uint64_t budget, uint64_t gap)
{
    FctransWatermarks wm;

    fctrans_budget_watermarks(budget, &wm);
    g_assert_cmpuint(wm.budget, ==, budget);
    g_assert_cmpuint(wm.high, ==, budget - gap);
    g_assert_cmpuint(wm.low, ==, budget - 2 * gap);
    g_assert_cmpuint(wm.low, >, 0);
}

static void test_watermarks(void)
{
    /* The smallest budget: the floor of the gap */
    check(FCTRANS_BUDGET_MIN_PAGES, FCTRANS_BUDGET_GAP_MIN_PAGES);
    /* 384 MiB of 4 KiB pages: 1/32 */
    check(98304, 3072);
    /* 12 GiB: the gap stops growing at 64 MiB */
    check(3145728, FCTRANS_BUDGET_GAP_MAX_PAGES);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/budget/watermarks", test_watermarks);
    return g_test_run();
}
