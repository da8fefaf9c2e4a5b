"""The two kinds of failure the CLI distinguishes: bad input (exit 2) and runtime failure (exit 1)."""

from __future__ import annotations


class InputError(Exception):
    """Something the user gave us is wrong. Always names where: a file and a field, or an option."""

    def __init__(self, where: str, message: str, field: str | None = None):
        self.where = str(where)
        self.field = field
        self.message = message
        located = f"{self.where}: {field}: " if field else f"{self.where}: "
        super().__init__(located + message)


class InputErrors(InputError):
    """Several problems found at once (``lpb validate`` lists every one)."""

    def __init__(self, errors: list[InputError]):
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.where, first.message, first.field)
        self.args = (str(first) if len(self.errors) == 1 else f"{first} (and {len(self.errors) - 1} more problems)",)


class PluginError(Exception):
    """A plugin set that cannot work together: duplicate names, unknown names."""


class BreedError(Exception):
    """A failure while breeding that is not the user's input."""
