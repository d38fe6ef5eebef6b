"""Errors a user can act on: each names the file at fault and the fix."""

from __future__ import annotations

from pathlib import Path

# The `ampsim` command's exit codes, which the orchestration retries by (deployment/orchestration.py):
EXIT_USER_ERROR = 1  # the user's input or params are at fault: running it again will not help
EXIT_TRANSIENT = 75  # EX_TEMPFAIL (sysexits.h): a server unreachable, a lock held; a retry may succeed


class AmpsimError(Exception):
    """A problem with the user's input or set-up, reported as one paragraph without a traceback."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, problem: str, *, path: Path | str | None = None, fix: str | None = None):
        self.problem = problem
        self.path = Path(path) if path is not None else None
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f"{self.path}: " if self.path is not None else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{where}{self.problem}.{fix}"


class TransientError(AmpsimError):
    """A failure that is nobody's input's fault and may clear by itself (a server down, a lock held)."""

    exit_code = EXIT_TRANSIENT


class CaptureError(AmpsimError):
    """A capture folder or one of its files cannot be used."""


class ValidationFailed(AmpsimError):
    """One or more captures failed the pair checks; the message lists every failure."""

    def __init__(self, failures: list[str], report: Path):
        self.failures = failures
        super().__init__(
            f"capture validation failed ({len(failures)} problem(s))",
            path=report,
            fix="correct the captures named above and run `dvc repro` again",
        )

    @property
    def message(self) -> str:
        body = "\n".join(f"- {f}" for f in self.failures)
        return (
            f"capture validation failed ({len(self.failures)} problem(s)):\n{body}\n"
            f"Full report: {self.path} (Data Docs HTML beside it). "
            "Correct the captures named above and run `dvc repro` again."
        )
