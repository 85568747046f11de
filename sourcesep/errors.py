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
    """A parameter, config file or sidecar that does not fit the schema."""

    exit_code = 2


class ModelError(SourcesepError):
    """The AST model cannot be found or loaded."""

    exit_code = 3
