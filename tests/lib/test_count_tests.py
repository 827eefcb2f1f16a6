#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""scripts/count-tests.py: what make check's summary is made of. Each
case is a log that once counted wrong, or could."""

import importlib.util
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tap  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "count_tests", os.path.join(HERE, "..", "..", "scripts", "count-tests.py"))
ct = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ct)


def counts(text, ok_exit=True):
    return ct.count("t", text, ok_exit, "exit 1")[:3]


class CountTest(unittest.TestCase):
    def test_subtests_counted(self):
        self.assertEqual(counts("1..3\nok 1 a\nnot ok 2 b\nok 3 c # SKIP x\n",
                                False), (1, 1, 1))

    def test_plan_last(self):
        self.assertEqual(counts("ok 1 a\nok 2 b\n1..2\n"), (2, 0, 0))

    def test_plain_program_is_one_test(self):
        self.assertEqual(counts("ok     the guest verified\n"), (1, 0, 0))
        self.assertEqual(counts("whatever\n", False), (0, 1, 0))

    def test_empty_plan_is_a_skip(self):
        self.assertEqual(counts("1..0 # SKIP no kvm\n"), (0, 0, 1))
        self.assertEqual(counts("1..0\n"), (0, 0, 1))

    def test_results_without_plan(self):
        # Not TAP: one test, failed by a 'not ok' line or the exit code.
        self.assertEqual(counts("ok 1 a\nnot ok 2 b\n")[:2], (0, 1))
        self.assertEqual(counts("ok 344 MiB on sub-hosts\n"), (1, 0, 0))

    def test_stray_ok_lines_are_not_results(self):
        # Two results of three planned, and lines that only look alike.
        self.assertEqual(counts("1..3\nok 1 a\nok, continuing\n  ok 3 x\n"
                                "ok 2 b\n"), (2, 1, 0))

    def test_duplicates_and_second_plan_fail(self):
        self.assertEqual(counts("1..2\nok 1 a\nok 1 a\n"), (2, 1, 0))
        self.assertEqual(counts("1..2\nok 1 a\nok 2 b\n1..2\nok 1 c\n"
                                "ok 2 d\n"), (4, 2, 0))

    def test_exit_without_failed_subtest_fails(self):
        self.assertEqual(counts("1..1\nok 1 a\n", False), (1, 1, 0))


if __name__ == "__main__":
    tap.main()
