/*
 * Common declarations of splitmem's libFuzzer targets
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef FCTRANS_FUZZ_H
#define FCTRANS_FUZZ_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif /* FCTRANS_FUZZ_H */
