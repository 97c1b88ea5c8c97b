"""Errors the CLI turns into a clear message and exit code 2 (bad input), never a traceback."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: a spec, a results file, an option. Exit code 2."""


class SpecError(UsageError):
    """A sweep spec is invalid. Carries where (file, line, field path) and what is allowed."""

    def __init__(
        self,
        file: str,
        field: str,
        message: str,
        *,
        line: int | None = None,
        value: object = None,
        allowed: str | None = None,
    ) -> None:
        self.file, self.field, self.line = file, field, line
        self.value, self.allowed, self.message = value, allowed, message
        where = f"{file}:{line}" if line is not None else file
        text = f"{where}: {field or '<top level>'}: {message}"
        if value is not None:
            shown = repr(value)
            text += f" (got {shown if len(shown) <= 120 else shown[:100] + '...'})"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text)


class SpecErrors(UsageError):
    """Several spec errors found in one pass (all are reported, not just the first)."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
