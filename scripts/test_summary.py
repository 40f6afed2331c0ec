#!/usr/bin/env python3
"""Adds up the results of every test run into one line: "N passed, N failed".

Counts each cmocka case (TAP lines in meson's test log), each other meson test once, and each pytest
case (junit XML). A build that failed to compile counts as a failure."""
import glob
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

TAP = re.compile(r"^(not ok|ok)\b(?!.*# SKIP)", re.M)
TAP_SKIP = re.compile(r"^(?:not ok|ok)\b.*# SKIP", re.M)
TAP_PLAN = re.compile(r"^1\.\.\d+", re.M)


def meson_counts(path):
    passed = failed = skipped = 0
    with open(path) as f:
        for line in f:
            t = json.loads(line)
            out = t.get("stdout") or ""
            tap = TAP.findall(out) if TAP_PLAN.search(out) else []
            skipped += len(TAP_SKIP.findall(out))
            if tap:
                passed += sum(1 for x in tap if x == "ok")
                failed += sum(1 for x in tap if x == "not ok")
                if t.get("result") not in ("OK", "EXPECTEDFAIL") and not any(x == "not ok" for x in tap):
                    failed += 1  # crashed after its last case
            elif t.get("result") in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif t.get("result") == "SKIP":
                skipped += 1
            else:
                failed += 1
    return passed, failed, skipped


def junit_counts(path):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    p = f = s = 0
    for su in suites:
        tests = int(su.get("tests", 0))
        fail = int(su.get("failures", 0)) + int(su.get("errors", 0))
        skip = int(su.get("skipped", 0))
        f += fail
        s += skip
        p += tests - fail - skip
    return p, f, s


def main():
    d = sys.argv[1]
    passed = failed = skipped = 0
    for path in sorted(glob.glob(os.path.join(d, "meson-*.json"))):
        p, f, s = meson_counts(path)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    for path in sorted(glob.glob(os.path.join(d, "pytest-*.xml"))):
        p, f, s = junit_counts(path)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    failed += len(glob.glob(os.path.join(d, "*.fail")))
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
