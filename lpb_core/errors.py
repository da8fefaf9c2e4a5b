"""The kinds of failure the CLI distinguishes: bad input or a broken plugin (exit 2), a runtime failure (exit 1)."""

from __future__ import annotations


class InputError(Exception):
    """Something the user gave us is wrong; lpb prints it as one line and exits with code 2.

    ``InputError(message)``, or ``InputError(where, message, field=None)`` to name the file (or
    ``"command line"``) and the field (a JSON path such as ``$.fitness_scorer.labels``, or an option).
    """

    def __init__(self, where_or_message: object, message: str | None = None, field: str | None = None):
        if message is None:  # InputError("message")
            where_or_message, message = None, str(where_or_message)
        self.where = None if where_or_message is None else str(where_or_message)
        self.field = field
        self.message = message
        located = "".join(f"{part}: " for part in (self.where, field) if part)
        super().__init__(located + message)


class InputErrors(InputError):
    """Several problems found at once (``lpb validate`` lists every one): InputErrors and PluginErrors."""

    def __init__(self, errors: list[Exception], lister: str | None = "lpb validate"):
        """``lister``: the command that lists every problem (None: none does, as for a damaged run file)."""
        self.errors = [e for error in errors for e in problems_in(error)]
        first = self.errors[0]
        super().__init__(getattr(first, "where", None), getattr(first, "message", str(first)),
                         getattr(first, "field", None))
        more = len(self.errors) - 1
        listed = f": {lister} lists them all" if lister else ""
        self.args = (f"{first} (and {more} more problem{'s' * (more > 1)}{listed})" if more else str(first),)


def problems_in(error: Exception) -> list[Exception]:
    """The single problems an error stands for (an InputErrors or PluginErrors holds several)."""
    return list(getattr(error, "errors", None) or [error])


def raise_all(problems: list[Exception]) -> None:
    """Raise every problem found at once, if there is any: PluginErrors if all are plugin problems,
    else InputErrors (which may hold plugin problems too)."""
    problems = [p for problem in problems for p in problems_in(problem)]
    if problems and all(isinstance(p, PluginError) for p in problems):
        raise PluginErrors(problems)
    if problems:
        raise InputErrors(problems)


class PluginError(Exception):
    """A plugin set that cannot work: an object breaking its contract, a duplicate or unknown name."""


class PluginErrors(PluginError):
    """Every plugin problem found while loading the plugins."""

    def __init__(self, errors: list[PluginError]):
        self.errors = list(errors)
        more = len(self.errors) - 1
        extra = f" (and {more} more plugin problem{'s' * (more > 1)}: lpb plugins lists them all)" if more else ""
        super().__init__(f"{self.errors[0]}{extra}")


class BreedError(Exception):
    """A failure while breeding that is not the user's input."""


class BudgetTooSmall(BreedError):
    """The budget ran out before the initial population was scored: no generation to stop after, so the run
    goes on only with a larger budget."""


class ModelError(BreedError):
    """The model (or the server or API behind it) failed a query."""


class PluginFailure(BreedError):
    """A plugin's own code failed while breeding; names the object, its plugin, what went wrong and when.

    ``plugin`` and ``when`` are filled in on the way up, by the code that knows them (the plugin set
    knows who registered what; the engine knows the generation).
    """

    def __init__(self, kind: str, name: str, problem: str, plugin: str | None = None, when: str | None = None,
                 hook: str | None = None):
        super().__init__(kind, name, problem)
        self.kind, self.name, self.problem, self.plugin, self.when = kind, name, problem, plugin, when
        self.hook = hook  # the event hook it was called through, if any

    @classmethod
    def raised(cls, kind: str, name: str, error: BaseException, **where) -> "PluginFailure":
        return cls(kind, name, f"raised {type(error).__name__}: {error}", **where)

    def __str__(self) -> str:
        plugin = f" (plugin {self.plugin})" if self.plugin else ""
        hook = f", in {self.hook}," if self.hook else ""
        when = f" {self.when}" if self.when else ""
        return f"{self.kind} {self.name!r}{plugin}{hook} {self.problem}{when}"


class RunFailed(BreedError):
    """A breed failed after its run directory was made: the finished generations are saved there."""

    def __init__(self, cause: BaseException, run_dir, run_number: int | None):
        self.cause, self.run_dir, self.run_number = cause, run_dir, run_number
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        return str(self.cause) if isinstance(self.cause, BreedError) else f"{type(self.cause).__name__}: {self.cause}"

    def __str__(self) -> str:
        return f"{self.reason}; finished generations are saved in {self.run_dir}"
