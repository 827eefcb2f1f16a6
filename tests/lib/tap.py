# SPDX-License-Identifier: GPL-2.0-or-later
"""Run unittest test cases and report them as TAP, one line per test,
so that scripts/check.sh counts tests (skips reported as SKIP)."""

import sys
import unittest


class _TapResult(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.n = 0

    def _line(self, test, ok, note=""):
        self.n += 1
        name = test.id().split(".", 1)[-1]
        print(f"{'ok' if ok else 'not ok'} {self.n} - {name}{note}",
              flush=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._line(test, True)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._line(test, False)
        print("# " + self._exc_info_to_string(err, test).replace(
            "\n", "\n# "), flush=True)

    def addError(self, test, err):
        super().addError(test, err)
        self._line(test, False)
        print("# " + self._exc_info_to_string(err, test).replace(
            "\n", "\n# "), flush=True)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._line(test, True, f" # SKIP {reason}")


def main(module="__main__"):
    suite = unittest.defaultTestLoader.loadTestsFromModule(
        sys.modules[module])
    print(f"1..{suite.countTestCases()}", flush=True)
    result = _TapResult()
    suite.run(result)
    sys.exit(0 if result.wasSuccessful() and not result.skipped else 1)
