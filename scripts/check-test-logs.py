#!/usr/bin/env python3
"""Scans the whole test suite's captured log for any secret a test recorded.

Each test process appends its log lines to TEST_LOG_DIR/log-*.txt, and each test
app writes the tokens, codes and client secrets it saw issued to
TEST_LOG_DIR/secrets-*.txt. A secret found anywhere in any log fails the run
(reporting only its length and the log file, never the value).

The fault soak issues thousands of secrets, so the scan does not search each log
once per secret: a secret made of word characters ([A-Za-z0-9_-]) occurs in a text
exactly when it occurs inside one of the text's maximal runs of such characters,
so each log's distinct runs are collected once and every secret is looked up in
them (whole runs directly, longer runs window by window). Secrets with other
characters, if any, are searched for directly.
"""
import pathlib
import re
import sys

log_dir = pathlib.Path(sys.argv[1])
logs = sorted(log_dir.glob("log-*.txt"))
secrets = set()
for path in log_dir.glob("secrets-*.txt"):
    secrets.update(line for line in path.read_text().splitlines() if line)

if not logs or not secrets:
    sys.exit(f"log scan: nothing to scan in {log_dir} ({len(logs)} logs, {len(secrets)} secrets)")

WORD = re.compile(r"[A-Za-z0-9_\-]+")
worded = {s for s in secrets if WORD.fullmatch(s)}
others = secrets - worded
lengths = sorted({len(s) for s in worded})
shortest = lengths[0] if lengths else 0


def leaked_in(text):
    """The secrets that occur in `text`."""
    found = {s for s in others if s in text}
    for run in set(WORD.findall(text)):
        if len(run) < shortest:
            continue
        if run in worded:
            found.add(run)
            continue
        for length in lengths:
            if length >= len(run):
                break
            for start in range(len(run) - length + 1):
                window = run[start : start + length]
                if window in worded:
                    found.add(window)
    return found


total = 0
leaks = 0
for path in logs:
    text = path.read_text(errors="replace")
    total += len(text)
    for secret in leaked_in(text):
        leaks += 1
        print(f"log scan: a secret ({len(secret)} characters) appears in {path.name}")
if leaks:
    sys.exit(f"log scan: {leaks} leaked secret(s)")
print(f"log scan: {len(secrets)} secrets, {len(logs)} logs, {total} bytes: none leaked")
