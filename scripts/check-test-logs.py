#!/usr/bin/env python3
"""Scans the whole test suite's captured log for any secret a test recorded.

Each test process appends its log lines to TEST_LOG_DIR/log-*.txt, and each test
app writes the tokens, codes and client secrets it saw issued to
TEST_LOG_DIR/secrets-*.txt. A secret found anywhere in any log fails the run
(reporting only its length and the log file, never the value).
"""
import pathlib
import sys

log_dir = pathlib.Path(sys.argv[1])
logs = sorted(log_dir.glob("log-*.txt"))
secrets = set()
for path in log_dir.glob("secrets-*.txt"):
    secrets.update(line for line in path.read_text().splitlines() if line)

if not logs or not secrets:
    sys.exit(f"log scan: nothing to scan in {log_dir} ({len(logs)} logs, {len(secrets)} secrets)")

total = 0
leaks = 0
for path in logs:
    text = path.read_text(errors="replace")
    total += len(text)
    for secret in secrets:
        if secret in text:
            leaks += 1
            print(f"log scan: a secret ({len(secret)} characters) appears in {path.name}")
if leaks:
    sys.exit(f"log scan: {leaks} leaked secret(s)")
print(f"log scan: {len(secrets)} secrets, {len(logs)} logs, {total} bytes: none leaked")
