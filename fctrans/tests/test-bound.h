/*
 * The wall time one hostile input may cost in a unit test
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Far below a second, so that a parser gone quadratic or exponential
 * fails: the ones these tests caught took from 0.6 s to minutes, their
 * fixed versions take milliseconds. Sanitizer builds run the same code
 * several times slower, so the bound grows with them (still below a
 * second); the deterministic bounds beside it (bytes read, records
 * visited) do not.
 */
#ifndef FCTRANS_TEST_BOUND_H
#define FCTRANS_TEST_BOUND_H

#ifdef SPLITMEM_SANITIZED
#define TEST_INPUT_SECONDS 0.8
#else
#define TEST_INPUT_SECONDS 0.2
#endif

#endif
