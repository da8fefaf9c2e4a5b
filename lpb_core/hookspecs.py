"""Every hook an lpb plugin can implement. This module is the plugin author's reference.

Registration hooks receive a ``register`` callback and call it once per object they add; they
never return anything. What each kind of object must provide is in ``lpb_core.contracts`` (one
Protocol per kind), and is checked as it is registered. Event hooks receive one frozen event
object (see ``lpb_core.events``) and are how loggers observe a run. docs/plugins.md has examples.
"""

from __future__ import annotations

import pluggy

PROJECT = "lpb"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
IMPL_MARKER = f"{PROJECT}_impl"  # the attribute @hookimpl sets on a function


@hookspec
def lpb_register_mutation_operators(register):
    """Add mutation operators: ``register(operator)``.

    An operator has a unique ``name`` and an async ``mutate(ctx) -> Mutation`` method, where
    ``ctx`` is a ``lpb_core.operators.MutationContext`` and ``Mutation`` is in ``lpb_core.operators``.
    ``templates`` names the breeder.lmql entries it runs (defaults to ``(name,)``; an operator that
    runs none sets ``templates = ()``, else a day care without a template of its name switches it
    off); ``stage`` is ``"mutate"`` (chosen as the contest's operator) or
    ``"post"`` (applied to every child after the chosen operator, such as crossover). See
    ``lpb_core.contracts.MutationOperator``.
    """


@hookspec
def lpb_register_fitness_scorers(register):
    """Add fitness scorers: ``register(scorer_class)``.

    A scorer class has a unique ``name`` (the ``fitness_scorer.type`` of task_description.json),
    a ``params_schema`` (JSON Schema of its own parameters) and is built as ``scorer_class(**params)``.
    The instance offers ``is_correct(answer, gold) -> bool`` and ``score(answers, golds) -> float``, a
    fitness from 0 to 1.
    """


@hookspec
def lpb_register_selection_strategies(register):
    """Add selection strategies: ``register(strategy)``.

    A strategy has a unique ``name`` and ``contests(population, rng) -> list[Contest]``, choosing
    which units compete in one generation and who wins; each loser is replaced by a mutated copy of
    its winner. A ``lpb_core.units.Contest`` names units by id.
    """


@hookspec
def lpb_register_loggers(register):
    """Add loggers: ``register(logger_class)``.

    A logger class has a unique ``name``; ``logger_class(settings)`` builds an object implementing
    any of the event hooks below (marked with ``hookimpl``). It joins the run's plugin manager only
    when the run enables it by name (``--logger NAME``; ``console`` is on by default).
    """


@hookspec
def lpb_register_model_backends(register):
    """Add model backends: ``register(backend)``.

    A backend has a unique ``name``, ``accepts(model_name) -> bool`` and
    ``open(model_name, settings) -> lpb_core.llm.ModelHandle``. The first backend, in registration
    order, that accepts the ``--model-name-or-path`` value serves the run.
    """


@hookspec
def lpb_register_similarity_filters(register):
    """Add near-duplicate filters for the EDA operators: ``register(similarity_filter)``.

    A filter has a unique ``name`` (chosen with ``--similarity-filter``) and
    ``distinct(prompts) -> list[str]``, which keeps the order and drops prompts too similar to an
    earlier one (the paper used BERT embeddings with a cosine threshold of 0.95).
    """


@hookspec
def lpb_register_commands(cli):
    """Add subcommands to the ``lpb`` command line: ``cli`` is its click group (``@cli.command()``)."""


@hookspec
def lpb_run_started(event):
    """A breed began or resumed: ``event`` is a ``RunStarted``."""


@hookspec
def lpb_unit_evaluated(event):
    """A unit got its fitness on the current minibatch: ``event`` is a ``UnitEvaluated``."""


@hookspec
def lpb_mutation_applied(event):
    """A contest's winner produced a child: ``event`` is a ``MutationApplied``."""


@hookspec
def lpb_generation_finished(event):
    """A generation was written to the run directory: ``event`` is a ``GenerationFinished``."""


@hookspec
def lpb_run_finished(event):
    """A breed ended (completed, or stopped by a budget): ``event`` is a ``RunFinished``."""
