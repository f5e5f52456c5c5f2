"""Run a command; write its wall time and resource usage (from wait4) as JSON.

    python3 -I -S bench/measure_child.py OUT.json COMMAND [ARG]...

Why a separate process rather than ``os.wait4`` on the benchmark's own child: Linux records the
high-water RSS of the *old* address space when a process calls exec, so the ``ru_maxrss`` of a
direct child of a big Python process (forked or vforked from it) is at least the parent's own
peak. Measured from this small launcher, the floor is the launcher's ~10 MB instead.

Exits with the command's exit code (128 + N if it was killed by signal N; 127 if it could not
be started).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: measure_child.py OUT.json COMMAND [ARG]...", file=sys.stderr)
        return 2
    out, command = argv[0], argv[1:]
    start = time.monotonic()
    try:
        pid = os.posix_spawnp(command[0], command, os.environ)
    except OSError as exc:
        print(f"measure_child: cannot run {command[0]}: {exc}", file=sys.stderr)
        return 127
    _, status, usage = os.wait4(pid, 0)
    seconds = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        json.dump(
            {
                "exit_code": code,
                "seconds": seconds,
                "user_seconds": usage.ru_utime,
                "system_seconds": usage.ru_stime,
                "max_rss_kib": usage.ru_maxrss,
            },
            f,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
