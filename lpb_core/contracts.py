"""What each kind of plugin object must provide: one Protocol per kind, checked when it is registered.

docs/plugins.md tells the story with examples; the Protocols below are the reference. ``CHECKS``
maps each kind to a function listing what an object lacks, each as a short phrase ("has no mutate
method"), so that the registry can report it naming the plugin, its entry point and the missing
piece, before any model is opened. Only what the docs ask for is checked; optional attributes
have the defaults shown.
"""

from __future__ import annotations

import inspect
import random
from typing import Any, Callable, ClassVar, Protocol

import jsonschema

from lpb_core import hookspecs
from lpb_core.llm import ModelHandle
from lpb_core.operators import MUTATE, POST, Mutation, MutationContext
from lpb_core.settings import BreedSettings
from lpb_core.units import Contest, Unit

STAGES = (MUTATE, POST)


class MutationOperator(Protocol):
    """Registered with ``lpb_register_mutation_operators``; makes a child from a parent."""

    name: str  # unique; chosen with --operators and recorded on every child it makes
    stage: str = MUTATE  # MUTATE: drawn as a contest's operator; POST: applied to every child afterwards
    templates: tuple[str, ...]  # breeder.lmql templates it runs; default (name,); () for none
    provides: tuple[str, ...] = ()  # argument names, beyond the base ones, its templates may take

    async def mutate(self, ctx: MutationContext) -> Mutation | None:
        """The child's changes; raise ``lpb_core.operators.OperatorSkipped`` to hand over to another
        operator. POST operators may return None for "no change"."""


class FitnessScorer(Protocol):
    """Registered (the class itself) with ``lpb_register_fitness_scorers``; built as ``cls(**params)``
    from task_description.json's ``fitness_scorer`` once its parameters pass ``params_schema``."""

    name: ClassVar[str]  # the fitness_scorer.type that selects it
    params_schema: ClassVar[dict]  # JSON Schema (draft 2020-12) of the parameters

    def is_correct(self, answer: str, gold: Any) -> bool:
        """Whether one answer is right; an answer it cannot read counts as wrong (never raise)."""

    def score(self, answers: list[str], golds: list) -> float:
        """The fitness of one evaluation, from 0 (worst) to 1 (best): lpb compares it with accuracies."""

    # Optional: ``can_read(answer) -> bool`` lets lpb count unreadable answers.


class SelectionStrategy(Protocol):
    """Registered with ``lpb_register_selection_strategies``; picks who competes and who wins."""

    name: str  # chosen with --selection-strategy

    def contests(self, population: tuple[Unit, ...], rng: random.Random) -> list[Contest]:
        """Contests over the ids of units in ``population``; each unit loses at most once."""


class Logger(Protocol):
    """Registered (the class itself) with ``lpb_register_loggers``; built as ``cls(settings)`` when a run
    enables it, and then receives the event hooks it implements as ``@hookimpl`` methods."""

    name: ClassVar[str]  # enabled with --logger NAME

    def __init__(self, settings: BreedSettings) -> None: ...


class ModelBackend(Protocol):
    """Registered with ``lpb_register_model_backends``; opens the model a run names."""

    name: str

    def accepts(self, model_name: str) -> bool:
        """Whether this backend serves ``--model-name-or-path``."""

    def open(self, model_name: str, settings: BreedSettings) -> ModelHandle:
        """The opened model; raise ``InputError`` for a missing file, key or package."""


class SimilarityFilter(Protocol):
    """Registered with ``lpb_register_similarity_filters``; drops near-duplicate prompts."""

    name: str  # chosen with --similarity-filter

    def distinct(self, prompts: list[str]) -> list[str]:
        """``prompts`` in order, without those too similar to an earlier one."""


class CommandGroup(Protocol):
    """What ``lpb_register_commands(cli)`` receives: lpb's click group."""

    def command(self, *args: Any, **kwargs: Any) -> Callable:
        """``@cli.command()`` adds a subcommand, as in click."""

    def add_command(self, cmd: Any, name: str | None = None) -> None: ...


def _expected(method: str, params: tuple[str, ...], is_async: bool) -> str:
    return f"{'async ' if is_async else ''}def {method}(self, {', '.join(params)})"


def _method_problems(obj: Any, method: str, params: tuple[str, ...], is_async: bool = False,
                     built: bool = False) -> list[str]:
    """Whether ``obj.method`` exists, is async exactly when it must be, and takes ``params``. ``built``: ``obj``
    is a class lpb makes instances of, so its plain methods take ``self`` first."""
    function = getattr(obj, method, None)
    expected = _expected(method, params, is_async)
    if function is None:
        return [f"has no {method} method (expected {expected})"]
    if not callable(function):
        return [f"{method} is {function!r:.40}, not a method (expected {expected})"]
    if inspect.iscoroutinefunction(function) != is_async:
        return [f"{method} must {'' if is_async else 'not '}be async (expected {expected})"]
    unbound = built and not isinstance(inspect.getattr_static(obj, method), (staticmethod, classmethod))
    try:
        inspect.signature(function).bind(*(("self",) if unbound else ()), *params)
    except TypeError:
        hint = "; register an instance, not the class" if inspect.isclass(obj) and not built else ""
        return [f"{method} cannot be called as {method}({', '.join(params)}) (expected {expected}){hint}"]
    except ValueError:  # no signature to read (a builtin): trust it
        pass
    return []


def _names_problem(obj: Any, attribute: str) -> list[str]:
    if not hasattr(obj, attribute):
        return []
    value = getattr(obj, attribute)
    if isinstance(value, str) or not isinstance(value, (tuple, list, frozenset, set)) \
            or not all(isinstance(v, str) and v for v in value):
        return [f"{attribute} must be a tuple of names, not {value!r:.60}"]
    return []


def check_operator(operator: Any) -> list[str]:
    problems = []
    stage = getattr(operator, "stage", MUTATE)
    if stage not in STAGES:
        problems.append(f"stage is {stage!r}; it must be {MUTATE!r} or {POST!r}")
    problems += _names_problem(operator, "templates") + _names_problem(operator, "provides")
    return problems + _method_problems(operator, "mutate", ("ctx",), is_async=True)


def _class_problem(obj: Any, built_as: str) -> list[str]:
    if inspect.isclass(obj):
        return []
    return [f"is an instance of {type(obj).__name__}, not a class (register the class itself; lpb builds it as "
            f"{built_as})"]


def check_scorer(scorer_class: Any) -> list[str]:
    problems = _class_problem(scorer_class, "cls(**params)")
    if problems:
        return problems
    schema = getattr(scorer_class, "params_schema", None)
    if schema is None:
        problems.append("has no params_schema (the JSON Schema of its parameters, e.g. "
                        "{'type': 'object', 'properties': {}, 'additionalProperties': False})")
    else:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "".join(f"[{p!r}]" for p in exc.absolute_path)
            problems.append(f"params_schema{where} is not a valid JSON Schema: {exc.message}")
        else:
            problems += _unbuildable(scorer_class, schema)
    for method, params in (("is_correct", ("answer", "gold")), ("score", ("answers", "golds"))):
        problems += _method_problems(scorer_class, method, params, built=True)
    if hasattr(scorer_class, "can_read"):
        problems += _method_problems(scorer_class, "can_read", ("answer",), built=True)
    return problems


def _unbuildable(scorer_class: type, schema: Any) -> list[str]:
    """Parameters the schema lets a task give that ``cls(**params)`` would refuse."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    try:
        signature = inspect.signature(scorer_class)
    except (TypeError, ValueError):  # no signature to read: trust it
        return []
    refused = []
    for name in properties or ():
        try:
            signature.bind_partial(**{name: None})
        except TypeError:
            refused.append(name)
    if refused:
        return [f"params_schema allows {', '.join(map(repr, refused))}, which cls(**params) does not accept"]
    return []


def _hook_params(name: str) -> list[str]:
    return list(inspect.signature(getattr(hookspecs, name)).parameters)


EVENT_HOOKS = ("lpb_run_started", "lpb_unit_evaluated", "lpb_mutation_applied", "lpb_generation_finished",
               "lpb_run_finished")


def check_logger(logger_class: Any) -> list[str]:
    problems = _class_problem(logger_class, "cls(settings)")
    if problems:
        return problems
    try:
        inspect.signature(logger_class).bind(None)
    except TypeError:
        problems.append("cannot be built as cls(settings) (expected def __init__(self, settings))")
    except ValueError:
        pass
    marker = hookspecs.IMPL_MARKER
    for attribute in dir(logger_class):
        if not attribute.startswith(f"{hookspecs.PROJECT}_") or attribute == marker:
            continue
        function = getattr(logger_class, attribute)
        marked = getattr(function, marker, None) is not None
        if attribute in EVENT_HOOKS:
            if not marked:
                problems.append(f"{attribute} is not marked @hookimpl, so it never receives events")
                continue
            params = [p for p in inspect.signature(function).parameters if p != "self"]
            unknown = [p for p in params if p not in _hook_params(attribute)]
            if unknown:
                problems.append(f"{attribute} takes {', '.join(unknown)}, which the hook does not pass (it passes "
                                f"{', '.join(_hook_params(attribute))})")
        elif marked and hasattr(hookspecs, attribute):
            problems.append(f"implements {attribute}, which a logger never receives (loggers join a run after "
                            "registration); implement it in the plugin module")
        elif marked:
            problems.append(f"{attribute} is marked @hookimpl but is no lpb hook (event hooks: "
                            f"{', '.join(EVENT_HOOKS)})")
    return problems


def check_strategy(strategy: Any) -> list[str]:
    return _method_problems(strategy, "contests", ("population", "rng"))


def check_backend(backend: Any) -> list[str]:
    return _method_problems(backend, "accepts", ("model_name",)) + \
        _method_problems(backend, "open", ("model_name", "settings"))


def check_similarity_filter(similarity_filter: Any) -> list[str]:
    return _method_problems(similarity_filter, "distinct", ("prompts",))


# Each kind of registered object, and what it must provide.
CHECKS: dict[str, Callable[[Any], list[str]]] = {
    "mutation operator": check_operator,
    "fitness scorer": check_scorer,
    "selection strategy": check_strategy,
    "logger": check_logger,
    "model backend": check_backend,
    "similarity filter": check_similarity_filter,
}
