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

RESULT = re.compile(r"^(not ok|ok)\b\s*(\d+)?\s*-?\s*(.*)$")
PLAN = re.compile(r"^1\.\.(\d+)")


def count(name, text, ok_exit, why):
    """(passed, failed, skipped, report lines) of one program."""
    passed = failed = skipped = 0
    plan, seen, lines = None, 0, []
    # The plan may come first or last (TAP allows both).
    for raw in text.splitlines():
        m = PLAN.match(raw.strip())
        if m:
            plan = int(m.group(1))
            break
    for raw in text.splitlines() if plan is not None else ():
        m = RESULT.match(raw.strip())
        if not m:
            continue
        seen += 1
        desc = m.group(3)
        if re.search(r"#\s*SKIP", desc, re.I):
            skipped += 1
            lines.append(f"  skipped: {name} {desc}")
        elif m.group(1) == "ok" or re.search(r"#\s*TODO", desc, re.I):
            passed += 1
        else:
            failed += 1
            lines.append(f"  failed: {name} {desc}")
    if plan is None:
        if ok_exit:
            passed = 1
        else:
            failed = 1
            lines.append(f"  failed: {name} ({why})")
    else:
        if seen < plan:
            failed += 1
            lines.append(f"  failed: {name} (planned {plan}, ran {seen})")
        if not ok_exit and failed == 0:
            failed += 1
            lines.append(f"  failed: {name} ({why}, no failed subtest)")
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
                if res == "SKIP" and not PLAN.search(t.get("stdout") or ""):
                    results.append((name, (0, 0, 1,
                                           [f"  skipped: {name}"])))
                    continue
                results.append((name, count(
                    name, t.get("stdout") or "", res in ("OK", "EXPECTEDFAIL"),
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
