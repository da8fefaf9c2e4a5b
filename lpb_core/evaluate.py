"""``lpb eval``: score any prompts on a task's items with exactly the fitness test a breed uses.

It is the baseline a user compares a breed against, and the way to check a bred prompt on new data:
each prompt gets its accuracy with a 95 % interval, and every prompt is compared with the first
one, item by item (McNemar's exact test), on the same items.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import attrs

from lpb_core import preflight
from lpb_core.constraints import degrade, unenforced
from lpb_core.daycare import FITNESS_TEMPLATE, cross_check, load_day_care, load_suite
from lpb_core.decoding import parse_decoder
from lpb_core.errors import InputError, raise_all
from lpb_core.fitness import FitnessTest, Minibatch, Progress, evaluate_each, split
from lpb_core.llm import LanguageModel, check_server_options, open_model, unread_option_warnings
from lpb_core.plugins import load_plugins
from lpb_core.retry import RetryPolicy, ServerUnavailable
from lpb_core.rundir import RunDirectory
from lpb_core.settings import BreedSettings
from lpb_core.stats import Accuracy, compare, comparison_measure
from lpb_core.units import Unit, Working

@attrs.frozen
class Candidate:
    label: str  # where the prompt came from: "--prompt 1", "RUN_3 best (u0021)", ...
    unit: Unit
    where: str = "command line"  # the file (or "command line") and field an error in it points to
    field: str = "--prompt"


@attrs.frozen
class Scored:
    candidate: Candidate
    fitness: float
    correct: tuple[bool, ...]  # every variant's per-item outcomes, variant after variant
    answers: tuple[str, ...] = ()  # the answers read, in the same order
    unreadable: int = 0  # answers the scorer could not read

    @property
    def accuracy(self) -> Accuracy:
        return Accuracy.of(self.correct)


def prompt_units(texts, first_field: str, label: str, where: str, field: str) -> list[Candidate]:
    """Candidates from prompt texts, {prompt field: text} objects (the forms initial_prompts takes), or what
    `lpb best --format json` prints: an object with "prompts" and its few-shot "context"."""
    candidates = []
    for number, entry in enumerate(texts, 1):
        context = ()
        if isinstance(entry, dict) and isinstance(entry.get("prompts"), dict):
            try:
                context = tuple(Working(**w) for w in entry.get("context") or ())
            except TypeError:
                raise InputError(where, "context entries need question, reasoning and answer",
                                 f"{field}[{number - 1}].context") from None
            entry = entry["prompts"]
        prompts = {first_field: entry} if isinstance(entry, str) else entry
        at = f"{field}[{number - 1}]" if field.startswith("$") else field
        if not isinstance(prompts, dict) or not prompts or not all(isinstance(v, str) and v.strip()
                                                                     for v in prompts.values()):
            raise InputError(where, "a prompt must be a non-empty string or an object of prompt fields", at)
        candidates.append(Candidate(f"{label} {number}", Unit(id=f"p{number}", prompts=prompts, mutation_prompt="",
                                                              context=context), where, at))
    return candidates


def run_units(run_dir: Path) -> list[Candidate]:
    """A run's winner, its best initial unit and its seeded units, as summary.json names them."""
    run = RunDirectory(run_dir, None)
    summary = run.read_summary()
    if summary is None:
        raise InputError(run_dir, "the run has not finished (no summary.json yet): resume it with lpb breed "
                         "--continue-run-number, or score its prompts with lpb best and --prompts-file", "--run")
    units = {u.id: u for record in run.generations() for u in record.population}
    named = {summary["best_unit"]["id"]: ["best"]}
    for unit_id, entry in ((summary.get("held_out") or {}).get("units") or {}).items():
        named.setdefault(unit_id, [])
        named[unit_id] += [r for r in entry["roles"] if r not in named[unit_id]]
    return [Candidate(f"{run_dir.name} {' and '.join(r.replace('_', ' ') for r in roles)} ({unit_id})",
                      units[unit_id], str(run_dir), f"unit {unit_id}")
            for unit_id, roles in named.items() if unit_id in units]


def settings_of_run(run_dir: Path, **changes) -> BreedSettings:
    """The settings a run was made with (model, seed, split, decoder...), with ``changes`` applied."""
    values = BreedSettings.known(RunDirectory(run_dir, None).read_config()["settings"])
    values.update({k: v for k, v in changes.items() if v is not None})
    return BreedSettings(**values)


def items_of(settings: BreedSettings, which: str, suite_size: int, held_out: int, own_suite: bool) -> tuple[int, ...]:
    if own_suite:  # --suite: every item of that file
        return tuple(range(suite_size))
    items = split(suite_size, settings, held_out)
    return {"test": items.test, "validation": items.validation, "train": items.train,
            "all": tuple(range(suite_size))}[which]


def evaluate(settings: BreedSettings, candidates: list[Candidate], which: str = "test",
             suite: Path | None = None, progress: Progress | None = None,
             warn: Callable[[str], None] | None = None) -> dict:
    """Score the candidates on the chosen items; returns what ``lpb eval --json`` prints. The warnings known
    before scoring are also passed to ``warn`` as soon as they are known."""
    if not candidates:
        raise InputError("command line", "nothing to score: give --prompt, --prompts-file or --run", "--prompt")
    plugins = load_plugins(settings.disabled_plugins)
    day_care = load_day_care(settings.day_care_dir).for_task(settings.task)
    task = day_care.task(settings.task)
    if settings.decoder_options_override:
        override = parse_decoder(settings.decoder_options_override, "command line", "--decoder-options-override")
        task = attrs.evolve(task, decoder=override, fitness_decoder=override)
    suite_path = suite or settings.fitness_test_suite or task.suite_path
    items = load_suite(suite_path, task)
    extra = load_suite(settings.test_suite, task) if settings.test_suite and not suite else ()
    scorer, scorer_problems = preflight.build_scorer(task, plugins)
    raise_all(cross_check(day_care, task, [(items, suite_path), (extra, settings.test_suite)])
              + preflight.compile_problems(day_care.breeder) + scorer_problems)
    for candidate in candidates:
        unknown = set(candidate.unit.prompts) - set(day_care.breeder.prompt_fields)
        if unknown:
            name = sorted(unknown)[0]
            raise InputError(candidate.where, f"{name!r} is not a prompt field of task {settings.task!r} (prompt_fields "
                             f"in {day_care.breeder.path}: {', '.join(day_care.breeder.prompt_fields)})",
                             f"{candidate.field}.{name}" if candidate.field.startswith("$") else candidate.field)
    indices = items_of(settings, which, len(items) + len(extra), len(extra), suite is not None)
    if not indices:
        shares = {"test": f"--test-split {settings.test_split}", "validation": f"--validation-split "
                                                                             f"{settings.validation_split}"}
        given = f" ({shares[which]})" if which in shares else ""
        raise InputError("command line", f"no {which} items to score with these split settings{given}; choose other "
                         "--items, or score a suite of your own with --suite", "--items")
    fitness = FitnessTest(day_care, task, scorer, items + extra, settings.variants)
    handle = open_model(plugins.backends, settings.model_name_or_path, settings)
    check_server_options(settings, handle)
    raise_all(preflight.overlong_items(day_care, task, [(items, suite_path), (extra, settings.test_suite)],
                                       handle.count_tokens, handle.description))
    warnings = unread_option_warnings(settings, handle)
    for some, path in ((items, suite_path), (extra, settings.test_suite)):
        warnings += preflight.never_right(scorer, some, task, path)
        warnings += preflight.answers_that_cannot_be_right(day_care, task, scorer, some, path)
    _, dropped = degrade(day_care.breeder.templates[FITNESS_TEMPLATE].code, handle.enforces)
    if dropped:  # as a breed reports it: the answers may be read differently than with the constraint
        warnings.append(unenforced(FITNESS_TEMPLATE, dropped))
    for warning in warnings if warn else ():  # said before the minutes of scoring, not after them
        warn(warning)
    scored, failed = asyncio.run(_score_all(fitness, handle, settings, candidates, Minibatch(which, indices),
                                            progress))
    baseline = scored[0]
    if failed:
        warnings.append(failed)
    constant = fitness.constant_answer(indices)
    measure = comparison_measure(dict(enumerate(s.fitness for s in scored)), dict(enumerate(s.correct for s in scored)))
    return {
        "task": settings.task,
        "model": handle.description,
        "warnings": warnings,
        "items": which if suite is None else str(suite),
        "item_count": len(indices),
        "variants": list(settings.variants),
        # "accuracy" when the scorer's fitness is not the share of right answers: the figures below are accuracy
        "measure": measure,
        "prompts": [{"label": s.candidate.label, "prompts": dict(s.candidate.unit.prompts),
                     "context": len(s.candidate.unit.context), "fitness": s.fitness, "accuracy": s.accuracy.value,
                     "interval_95": list(s.accuracy.interval), "correct": list(s.correct),
                     "answers": list(s.answers), "unreadable": s.unreadable} for s in scored],
        "comparisons": [{"a": s.candidate.label, "b": baseline.candidate.label,
                         **compare(s.correct, baseline.correct).to_dict(),
                         "sentence": compare(s.correct, baseline.correct).sentence("items", measure)}
                        for s in scored[1:]],
        # What one label every time gets: a prompt at or below it shows no sign the model read the items.
        "constant_answer": constant and {**constant.to_dict(), "accuracy": Accuracy.of(constant.correct).value},
    }


async def _score_all(fitness: FitnessTest, handle, settings: BreedSettings, candidates: list[Candidate],
                     batch: Minibatch, progress: Progress | None) -> tuple[list[Scored], str | None]:
    model = LanguageModel(handle, concurrency=settings.concurrency, chunk_size=settings.chunk_size,
                          retry_policy=RetryPolicy.from_settings(settings))
    try:
        evaluations = await evaluate_each([(c.unit, batch) for c in candidates],
                                          lambda unit, b: fitness.evaluate_items(unit, b, model), progress)
    finally:
        await model.aclose()
    calls, failed = len(candidates) * len(batch.indices) * len(fitness.variants), model.usage.failed_calls
    if failed and failed == calls:  # fewer calls than the run of failures that stops a breed: nothing was scored
        raise ServerUnavailable(f"every one of the {calls} calls failed; the last: {model.meter.last_failure}")
    scored = [Scored(c, e.unit.fitness, tuple(x for v in fitness.variants for x in e.correct[v]),
                     tuple(a for v in fitness.variants for a in e.answers[v]), e.unreadable)
              for c, e in zip(candidates, evaluations)]
    note = (f"{failed} of {calls} calls failed after their retries and are scored as wrong; the last: "
            f"{model.meter.last_failure}") if failed else None
    return scored, note
