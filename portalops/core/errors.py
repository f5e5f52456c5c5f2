"""The exit codes and the one error root every job raises (exit codes: README, "Global options")."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    PROBLEM_FOUND = 1  # a probe, drill, check or compliance rule failed
    BAD_INPUT = 2  # arguments, config, inventory
    OPERATIONAL = 3  # unreachable repository, missing tool, lock held


class OpsError(Exception):
    """{}"""

    exit_code = ExitCode.OPERATIONAL

    def __str__(self) -> str:
        return (type(self).__doc__ or "{}").strip().format(*self.args)


class BadInput(OpsError):
    """{}"""

    exit_code = ExitCode.BAD_INPUT


class SourceError(BadInput):
    """A file the user gave us is wrong; every problem found is listed as FILE:LINE: key: what."""

    def __init__(self, problems: list[str]) -> None:
        ordered = sorted(dict.fromkeys(problems), key=_file_line)
        super().__init__(*ordered)
        self.problems = ordered

    def __str__(self) -> str:
        return "\n".join(self.problems)


class ToolMissing(OpsError):
    """{} not found on PATH; install the Debian package {} (scripts/setup-system does)"""


def _file_line(problem: str) -> tuple[str, int]:
    """Sort key: problems read top to bottom through each file."""
    head = problem.split(": ", 1)[0]
    file, _, line = head.rpartition(":")
    return (file, int(line)) if line.isdigit() else (head, 0)
