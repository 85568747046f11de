"""Exceptions the public API raises. Each carries a one-line, user-facing message."""

from __future__ import annotations


class SourcesepError(Exception):
    """Base class: anything the CLI turns into a one-line error and a non-zero exit."""

    exit_code = 1


class InputError(SourcesepError):
    """Bad input: unreadable, empty, silent, too short or too long audio. Never worth a retry."""

    exit_code = 2

    def __init__(self, path: object, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ParamError(SourcesepError):
    """A parameter, config file or sidecar that does not fit the schema.

    ``problems`` lists ``(key, problem)`` pairs (key None for a problem of the whole file or of
    several keys) and ``where`` the file or layer they are in, for callers that word their own
    messages; ``str()`` is ``WHERE: KEY: problem``, several joined by "; ".
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None,
                 problems: list[tuple[str | None, str]] | None = None):
        self.where = where
        self.problems = problems or []
        super().__init__(message)

    @classmethod
    def of(cls, where: str, problems: list[tuple[str | None, str]]) -> "ParamError":
        text = "; ".join(f"{where}: {key}: {why}" if key else f"{where}: {why}" for key, why in problems)
        return cls(text, where=where, problems=problems)


class ModelError(SourcesepError):
    """The AST model cannot be found or loaded."""

    exit_code = 3
