#!/usr/bin/env python3
"""The --check step of ci/smbtorture.sh: compares smbtorture's subunit results
with the known-failure list, as Samba's selftest does with its knownfail file.

    smbtorture_check.py KNOWNFAIL SUITE=SUBUNIT_LOG=SUMMARY ...

KNOWNFAIL: one full subtest name per line, then "#" and the reason; blank lines
and lines starting with "#" are comments. SUITE is a full suite name
(smb2.read), SUBUNIT_LOG its smbtorture --format=subunit output, SUMMARY the
per-suite line ci/smbtorture.sh printed (it says TIMEOUT, SERVER DIED or no
result when the suite went wrong).

Exit 0 when every failing or erroring subtest is on the list and every listed
subtest of the suites run still fails; 1 otherwise, with one line per problem.
"""

from __future__ import annotations

import re
import sys

RESULT = re.compile(r"^(success|successful|failure|fail|error|skip|xfail|uxsuccess): (.+?)( \[.*)?$")
BAD = {"failure", "fail", "error", "uxsuccess"}


def parse_subunit(path: str, suite: str) -> dict[str, str]:
    """Full subtest name -> its last result (success, failure, error, skip,
    xfail, uxsuccess). smbtorture names a subtest relative to the suite it
    was asked to run ("eof" in smb2.read, "bug14788.VALIDATE_NEGOTIATE" in
    smb2.ioctl); the full name is SUITE.NAME (smb2.read.eof, and
    smb2.connect.connect for a suite that is a single test)."""
    results: dict[str, str] = {}
    in_detail = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if in_detail:
                if line == "]":
                    in_detail = False
                continue
            m = RESULT.match(line)
            if not m:
                continue
            kind, name, rest = m.group(1), m.group(2).strip(), m.group(3)
            kind = {"successful": "success", "fail": "failure"}.get(kind, kind)
            results[f"{suite}.{name}"] = kind
            if rest is not None and rest.strip() == "[":
                in_detail = True
    return results


def parse_knownfail(path: str) -> tuple[dict[str, str], list[str]]:
    entries: dict[str, str] = {}
    problems: list[str] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            name, _, reason = text.partition("#")
            name, reason = name.strip(), reason.strip()
            if not reason:
                problems.append(f"{path}:{n}: {name}: no reason given (write '# why' after the name)")
            if name in entries:
                problems.append(f"{path}:{n}: {name} is listed twice")
            entries[name] = reason
    return entries, problems


def in_suite(name: str, suite: str) -> bool:
    return name == suite or name.startswith(suite + ".")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    knownfail, problems = parse_knownfail(argv[1])
    new_failures = 0
    now_passing = 0
    listed_failing = 0
    for arg in argv[2:]:
        suite, log, summary = arg.split("=", 2)
        for word in ("TIMEOUT", "SERVER DIED", "no result", "not run"):
            if word in summary:
                problems.append(f"{suite}: {summary}")
        try:
            results = parse_subunit(log, suite)
        except OSError as e:
            problems.append(f"{suite}: cannot read {log}: {e}")
            continue
        for name, kind in sorted(results.items()):
            if not in_suite(name, suite):
                continue
            if kind in BAD and name not in knownfail:
                problems.append(f"NEW FAILURE: {name} ({kind}) is not on the known-failure list")
                new_failures += 1
            elif kind in BAD:
                listed_failing += 1
        for name in sorted(knownfail):
            if not in_suite(name, suite):
                continue
            kind = results.get(name)
            if kind is None:
                problems.append(f"STALE ENTRY: {name} is listed but was not run: take it off {argv[1]}")
                now_passing += 1
            elif kind not in BAD:
                problems.append(f"NOW PASSES: {name} ({kind}) is listed as failing: take it off {argv[1]}")
                now_passing += 1
    for p in problems:
        print(f"smbtorture check: {p}")
    print(f"smbtorture check: {listed_failing} known failures, {new_failures} new failures, "
          f"{now_passing} listed subtests no longer failing, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
