#!/usr/bin/env python3
"""Checks the layering of ARCHITECTURE.md on the sources.

base includes only libc and otter/ base headers; core includes no program code; a program includes
only core headers and its own files (never another program's). The static libraries enforce the link
side; this checks the include side, including relative paths that would escape a directory."""
import os
import re
import sys

BASE_HEADERS = {"macro.h", "banned.h", "err.h", "log.h", "buf.h", "parse.h", "file.h", "path.h"}
PROGRAMS = {"server", "agent", "tool", "sim"}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def check_file(root, rel, problems):
    parts = rel.split(os.sep)
    layer = parts[1]  # src/<layer>/...
    with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
        text = f.read()
    for kind, inc in INCLUDE.findall(text):
        if ".." in inc.split("/"):
            problems.append(f"{rel}: includes '{inc}' through '..'")
            continue
        if layer == "base":
            if inc.startswith("otter/") and inc[len("otter/"):] not in BASE_HEADERS:
                problems.append(f"{rel}: base includes core header '{inc}'")
            elif kind == "<" and not inc.startswith("otter/") and "/" in inc and not inc.startswith(("sys/", "bits/", "linux/", "netinet/", "arpa/")):
                problems.append(f"{rel}: base includes library header '{inc}'")
            elif kind == "<" and inc in ("sodium.h", "jansson.h", "zstd.h", "archive.h", "curl/curl.h"):
                problems.append(f"{rel}: base includes library header '{inc}'")
        for prog in PROGRAMS:
            if prog != layer and (inc.startswith(prog + "/") or inc.startswith("src/" + prog)):
                problems.append(f"{rel}: {layer} includes {prog} code '{inc}'")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    problems = []
    count = 0
    for layer in ["base", "core"] + sorted(PROGRAMS):
        d = os.path.join(root, "src", layer)
        for dirpath, _, files in os.walk(d):
            for name in files:
                if name.endswith((".c", ".h")):
                    check_file(root, os.path.relpath(os.path.join(dirpath, name), root), problems)
                    count += 1
    for p in problems:
        print(p)
    print(f"checked {count} files, {len(problems)} layering problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
