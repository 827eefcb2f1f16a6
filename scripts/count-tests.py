#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Count the tests of one suite for scripts/check.sh.

  count-tests.py meson TESTLOG.json [LABEL]
                                        every test of a `meson test` run,
                                        named "LABEL test" if LABEL is given
  count-tests.py run NAME LOG RC        one program's output and exit code

A program that prints TAP (a plan line "1..N" and "ok"/"not ok" lines)
counts as its subtests; any other program counts as one test, passed
when it exited 0. A TAP program also fails as a whole when it exited
non-zero with no failed subtest, or ran fewer subtests than it planned.
Skips are reported as skips; check.sh counts them as failures.

Prints one line per program and, last, "totals PASSED FAILED SKIPPED".
"""

import json
import re
import sys

RESULT = re.compile(r"^(not ok|ok)\s+(\d+)(?:\s|$)\s*-?\s*(.*)$")
PLAN = re.compile(r"^1\.\.(\d+)\s*(#.*)?$")


def count(name, text, ok_exit, why):
    """(passed, failed, skipped, report lines) of one program."""
    passed = failed = skipped = 0
    plans, numbers, lines = [], [], []
    for raw in text.splitlines():
        m = PLAN.match(raw)
        if m:
            plans.append((int(m.group(1)), m.group(2) or ""))
            continue
        m = RESULT.match(raw)
        if not m:
            continue
        numbers.append(int(m.group(2)))
        desc = m.group(3)
        if re.search(r"#\s*SKIP", desc, re.I):
            skipped += 1
            lines.append(f"  skipped: {name} {desc}")
        elif m.group(1) == "ok" or re.search(r"#\s*TODO", desc, re.I):
            passed += 1
        else:
            failed += 1
            lines.append(f"  failed: {name} {desc}")

    def bad(what):
        nonlocal failed
        failed += 1
        lines.append(f"  failed: {name} ({what})")

    if not plans:
        # Not TAP: one test, judged by its exit code (a stray "not ok N"
        # line fails it too; "ok 344 MiB ..." is a program's own words).
        nok = failed
        passed = failed = skipped = 0
        lines = [ln for ln in lines if ln.startswith("  failed")]
        if ok_exit and not nok:
            passed = 1
        else:
            bad(why if not ok_exit else "a 'not ok' line")
        return passed, failed, skipped, lines
    plan, directive = plans[0]
    if len(plans) > 1:
        bad(f"{len(plans)} plans")
    if plan == 0:
        # "1..0": the whole program skipped itself.
        skipped += 1
        lines.append(f"  skipped: {name} (no test ran{' ' + directive if directive else ''})")
    elif sorted(numbers) != list(range(1, plan + 1)):
        bad(f"planned {plan}, ran {len(numbers)}"
            f"{'' if len(set(numbers)) == len(numbers) else ', duplicates'}")
    if not ok_exit and failed == 0:
        bad(f"{why}, no failed subtest")
    return passed, failed, skipped, lines


def report(results):
    tp = tf = ts = 0
    for name, (p, f, s, lines) in results:
        tp, tf, ts = tp + p, tf + f, ts + s
        extra = f", {s} skipped" if s else ""
        print(f"{name}: {p} passed, {f} failed{extra}")
        for line in lines:
            print(line)
    print(f"totals {tp} {tf} {ts}")


def main(argv):
    results = []
    if len(argv) in (3, 4) and argv[1] == "meson":
        label = argv[3] + " " if len(argv) == 4 else ""
        with open(argv[2]) as f:
            for line in f:
                t = json.loads(line)
                name = label + t["name"].split(" / ", 1)[-1]
                res = t.get("result", "")
                out = t.get("stdout") or ""
                if res == "SKIP" and not re.search(PLAN.pattern, out, re.M):
                    results.append((name, (0, 0, 1,
                                           [f"  skipped: {name}"])))
                    continue
                # A TAP program that skipped subtests is SKIP to meson:
                # its skips are counted one by one.
                results.append((name, count(
                    name, out, res in ("OK", "EXPECTEDFAIL", "SKIP"),
                    f"meson result {res}, exit {t.get('returncode')}")))
    elif len(argv) == 5 and argv[1] == "run":
        name, log, rc = argv[2], argv[3], int(argv[4])
        with open(log, errors="replace") as f:
            text = f.read()
        results.append((name, count(name, text, rc == 0, f"exit {rc}")))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
