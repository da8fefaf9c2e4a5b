"""One breed from settings to summary: load and check everything, then hand over to the engine."""

from __future__ import annotations

import asyncio
import time

import attrs

from lpb_core import __version__, files, preflight
from lpb_core.constraints import degrade
from lpb_core.daycare import (FITNESS_TEMPLATE, DayCare, Task, cross_check, gold_label_problems, load_day_care,
                              read_suite, readable_items)
from lpb_core.decoding import parse_decoder
from lpb_core.engine import Breeder
from lpb_core.errors import InputError, PluginError, PluginFailure, RunFailed, raise_all
from lpb_core.events import FINAL, HELD_OUT, RunFinished, RunStarted, UnitEvaluated
from lpb_core.fitness import FitnessTest, split
from lpb_core.interrupts import InterruptGuard, Interrupted
from lpb_core.cache import QueryCache
from lpb_core.finals import choose_winner, roles, score_held_out
from lpb_core.llm import (Budget, BudgetExhausted, LanguageModel, Meter, ModelHandle, check_server_options,
                          open_model, unread_option_warnings)
from lpb_core.plugins import LOGGER_PREFIX, PluginSet, describe, load_plugins
from lpb_core.retry import RetryPolicy
from lpb_core.rundir import RunDirectory, run_path
from lpb_core.settings import RESUMABLE_CHANGES, BreedSettings
from lpb_core.summary import build_summary
from lpb_core.templates import TemplateError
from lpb_core.units import COMPLETED, GenerationRecord, Unit, Usage


@attrs.frozen
class Prepared:
    """Everything checked and loaded, before any model is opened."""

    settings: BreedSettings
    plugins: PluginSet
    day_care: DayCare
    task: Task
    suite: tuple  # training items, then the items of --test-suite if given
    held_out: int  # how many items at the end of ``suite`` came from --test-suite
    operators: list
    post_operators: list
    disabled_operators: dict  # name -> why
    loggers: dict  # name -> logger object, joined to the plugin manager when the run starts
    seeds: tuple = ()  # the user's own prompts for generation 0, each {prompt field: text}
    scorer: object = None  # the task's fitness scorer, built from its parameters
    warnings: tuple = ()  # what is suspicious but not wrong (gold labels no answer can match), one line each

    def suites(self) -> list[tuple[tuple, object]]:
        """The training items and the --test-suite items (maybe none), each with the file they came from."""
        train = len(self.suite) - self.held_out
        return [(self.suite[:train], self.settings.fitness_test_suite or self.task.suite_path),
                (self.suite[train:], self.settings.test_suite)]


def prepare(settings: BreedSettings, extra_plugins=()) -> Prepared:
    """Load plugins, the day care and the suite, check them against each other and compile every template;
    every problem found is raised at once (``lpb validate`` lists them), before any model is opened."""
    plugins = load_plugins(settings.disabled_plugins, extra_plugins, strict=False)
    problems: list[Exception] = plugins.manager.errors()
    try:
        loaded = load_day_care(settings.day_care_dir, keep_going=True)
        problems += loaded.problems  # broken mutation prompts or thinking styles: raised with the rest
        day_care = loaded.for_task(settings.task)
        task = day_care.task(settings.task)
    except InputError as exc:  # nothing else can be checked without them
        raise_all(problems + [exc])
    problems += day_care.task_problems.get(settings.task, [])
    if settings.decoder_options_override is not None:  # an empty one is a mistake, not "no override"
        try:
            override = parse_decoder(settings.decoder_options_override, "command line", "--decoder-options-override")
            task = attrs.evolve(task, decoder=override, fitness_decoder=override)
        except InputError as exc:
            problems.append(exc)
    suite_path = settings.fitness_test_suite or task.suite_path
    suites = {}
    for role, path, option in (("train", suite_path, "--fitness-test-suite"),
                               ("held_out", settings.test_suite, "--test-suite")):
        if path and not path.is_file():  # named where the name was given
            problems.append(task.missing_suite() if path == task.suite_path else files.missing_file(path, option))
        elif path:
            try:
                suites[role] = read_suite(path)
            except InputError as exc:
                problems.append(exc)
                suites[role] = readable_items(path)
            problems += gold_label_problems(suites[role], task, path)
    suite, held_out = suites.get("train", ()), suites.get("held_out", ())

    problems += cross_check(day_care, task, [(suite, suite_path), (held_out, settings.test_suite)])
    problems += preflight.day_care_problems(day_care)
    scorer, scorer_problems = preflight.build_scorer(task, plugins)
    problems += scorer_problems
    recorded = recorded_operators(settings, task, plugins, problems)
    chosen = preflight.choose_operators(day_care.breeder, plugins, list(settings.operators or ()) or recorded)
    problems += chosen.problems
    seeds = seed_prompts(settings, task, day_care.breeder.prompt_fields, problems)
    strategy_problems, strategy_warnings = preflight.try_strategy(settings, plugins, day_care.breeder)
    problems += strategy_problems
    problems += preflight.check_similarity_filter(settings, plugins)
    try:
        loggers = preflight.build_loggers(settings, plugins, active_loggers(settings))
    except (InputError, PluginError) as exc:
        problems.append(exc)
    raise_all(problems)
    warnings = [w for role, path in (("train", suite_path), ("held_out", settings.test_suite))
                for w in preflight.never_right(scorer, suites.get(role, ()), task, path)
                + preflight.answers_that_cannot_be_right(day_care, task, scorer, suites.get(role, ()), path)]
    warnings += preflight.repeated_items(day_care, task, suite, suite_path, held_out, settings.test_suite)
    warnings += preflight.unread_template_warnings(day_care.breeder, chosen.operators + chosen.post_operators)
    warnings += strategy_warnings
    return Prepared(settings, plugins, day_care, task, suite + held_out, len(held_out), chosen.operators,
                    chosen.post_operators, chosen.disabled, loggers, seeds, scorer, tuple(warnings))


def seed_prompts(settings: BreedSettings, task: Task, prompt_fields: tuple[str, ...],
                 problems: list[InputError]) -> tuple[dict, ...]:
    """The user's prompts for generation 0: task_description.json's initial_prompts, then --initial-prompt's.

    A string fills the first prompt field; an object names its fields. Repeats are dropped.
    """
    seeds = []
    for index, entry in enumerate(task.initial_prompts):
        prompts = {prompt_fields[0]: entry} if isinstance(entry, str) else dict(entry)
        for field in sorted(set(prompts) - set(prompt_fields)):
            problems.append(InputError(task.description_file, f"unknown prompt field; breeder.lmql's prompt_fields "
                                       f"are: {', '.join(prompt_fields)}", f"$.initial_prompts[{index}].{field}"))
        seeds.append({k: " ".join(v.split()) for k, v in prompts.items()})
    for text in settings.initial_prompts:
        if not text.strip():
            problems.append(InputError("command line", "an initial prompt cannot be blank", "--initial-prompt"))
        seeds.append({prompt_fields[0]: " ".join(text.split())})
    unique = list({tuple(sorted(p.items())): p for p in seeds if all(p.values())}.values())
    if len(unique) > settings.population_size:
        problems.append(InputError("command line", f"{len(unique)} initial prompts do not fit a population of "
                                   f"{settings.population_size}", "--population-size"))
    return tuple(unique)


def active_loggers(settings: BreedSettings) -> list[str]:
    names = list(dict.fromkeys(settings.loggers))
    if settings.use_wandb and "wandb" not in names:
        names.append("wandb")
    return names


@attrs.frozen
class Models:
    """The model being optimised, and the one that writes prompts (the same one unless --mutation-model)."""

    task: ModelHandle
    mutation: ModelHandle

    @classmethod
    def open(cls, prepared: Prepared) -> "Models":
        settings = prepared.settings
        try:
            task = open_model(prepared.plugins.backends, settings.model_name_or_path, settings)
            mutation = task
            if settings.mutation_model not in (None, settings.model_name_or_path):
                mutation = open_model(prepared.plugins.backends, settings.mutation_model, settings, "--mutation-model")
            check_server_options(settings, task, mutation)
            return cls(task, mutation)
        except PluginFailure as failure:
            raise prepared.plugins.attribute(failure)


def unenforced_constraints(prepared: Prepared, models: Models) -> dict[str, list[str]]:
    """Template name -> the where constraints its model cannot enforce (the fitness test runs on the task model,
    every other template on the mutation model); those templates run with short, bounded answers instead."""
    found = {}
    for template in prepared.day_care.breeder.templates.values():
        handle = models.task if template.name == FITNESS_TEMPLATE else models.mutation
        code, dropped = degrade(template.code, handle.enforces)
        if dropped:
            found[template.name] = dropped
            try:  # compiled now, so a template that cannot run degraded stops the breed before it starts
                attrs.evolve(template, code=code).compiled()
            except TemplateError as exc:
                raise InputError(template.source or prepared.day_care.breeder.path, f"without the constraints "
                                 f"{handle.description} cannot enforce ({' and '.join(dropped)}): {exc}",
                                 f"$.{template.name}") from None
    return found


def make_config(prepared: Prepared, models: Models) -> dict:
    return {
        "lpb_version": __version__,
        "settings": prepared.settings.to_dict(),
        "model": models.task.description,
        "model_identity": models.task.identity,  # what keys the query cache
        "mutation_model": models.mutation.description,
        "mutation_model_identity": models.mutation.identity,
        "unenforced_constraints": unenforced_constraints(prepared, models),
        "warnings": list(prepared.warnings) + unread_option_warnings(prepared.settings, models.task, models.mutation),
        "day_care": str(prepared.day_care.root.resolve()),
        "operators": [op.name for op in prepared.operators + prepared.post_operators],
        "disabled_operators": prepared.disabled_operators,
        "plugins": [{k: row[k] for k in ("name", "distribution", "version")} for row in describe(prepared.plugins)],
    }


def check_resumable(run: RunDirectory, settings: BreedSettings) -> None:
    saved = run.read_config().get("settings", {})
    current = settings.to_dict()
    for key, value in current.items():
        if key not in RESUMABLE_CHANGES and key in saved and saved[key] != value:
            was, now = ("the default" if v is None else repr(v) for v in (saved[key], value))
            raise InputError(run.config_path, f"this run was made with {was}, not {now}; a resumed run must use "
                             "the same settings", f"$.settings.{key}")


def recorded_operators(settings: BreedSettings, task: Task, plugins: PluginSet, problems: list) -> list[str]:
    """For a resume without --operators: the operators the run was made with, not whatever is installed now
    (a plugin installed since would change the generations still to come); an empty list otherwise."""
    if settings.continue_run_number is None or settings.operators:
        return []
    run = RunDirectory(run_path(task.folder, settings.continue_run_number), settings.continue_run_number)
    try:
        names = run.read_config().get("operators") or []
    except InputError:  # no such run, or a config.json its schema refuses: the resume itself says so
        return []
    installed = set(plugins.operators.names())
    for name in names:
        if name not in installed:
            problems.append(InputError(run.config_path, f"the run was made with operator {name!r}, which no "
                                       "installed plugin registers now: install it to resume the run as it was",
                                       "$.operators"))
    return [name for name in names if name in installed]


def breed(settings: BreedSettings, extra_plugins=()) -> dict:
    """Run (or resume) a breed; returns the summary written to summary.json.

    SIGINT and SIGTERM stop it at a safe point with ``Interrupted``, naming the run to resume if one exists.
    """
    with InterruptGuard() as guard:
        prepared = prepare(settings, extra_plugins)
        guard.checkpoint()
        task_folder = prepared.task.folder
        run = None
        try:
            if settings.continue_run_number is not None:
                run = RunDirectory.existing(task_folder, settings.continue_run_number)  # locked from here on
                check_resumable(run, settings)
            models = Models.open(prepared)
            raise_all(preflight.overlong_items(prepared.day_care, prepared.task, prepared.suites(),
                                               models.task.count_tokens, models.task.description))
            guard.checkpoint()
            config = make_config(prepared, models)  # compiles degraded templates: an input error comes before the folder
            run = run or RunDirectory.create(task_folder, debug=settings.debug_mode)
            if settings.continue_run_number is None:
                run.write_config(config)
            return asyncio.run(guard.run(_breed_and_close, prepared, run, models, config))
        except Interrupted as stop:
            if run is not None and run.config_path.exists():
                stop.run_dir, stop.run_number = run.path, run.number
            raise
        except (InputError, PluginError):
            raise
        except Exception as exc:  # the run directory keeps every finished generation: say how to go on
            if run is None:
                raise
            if isinstance(exc, PluginFailure):
                prepared.plugins.attribute(exc)
            raise RunFailed(exc, run.path, run.number) from exc
        finally:
            if run is not None:
                run.unlock()


async def _breed_and_close(prepared: Prepared, run: RunDirectory, models: Models, config: dict) -> dict:
    """All model work of a run on one event loop: in-process models bind to the loop that first uses them."""
    settings = prepared.settings
    history = run.generations()
    cache = QueryCache(run.path / "cache.sqlite") if settings.cache else None
    carried, carried_wall = run.read_unrecorded()  # what earlier sessions spent after the last generation
    recorded, recorded_wall = (history[-1].usage, history[-1].wall_seconds) if history else (Usage(), 0.0)
    meter = Meter(Budget(settings.max_llm_calls, settings.max_tokens, settings.max_cost), recorded + carried)
    model, mutation_model = (
        LanguageModel(handle, concurrency=settings.concurrency, chunk_size=settings.chunk_size, cache=cache, meter=meter,
                      retry_policy=RetryPolicy.from_settings(settings))
        for handle in (models.task, models.mutation))
    started = time.perf_counter()
    try:
        return await _breed(prepared, run, model, mutation_model, config, history, recorded_wall + carried_wall)
    finally:
        # Calls made since the last generation written (an interrupt, a failure, the final) still count on resume.
        try:
            latest = run.latest_generation()
            last_usage, last_wall = (latest.usage, latest.wall_seconds) if latest else (Usage(), 0.0)
            wall = recorded_wall + carried_wall + time.perf_counter() - started
            if meter.usage != last_usage:
                run.write_unrecorded(meter.usage - last_usage, max(0.0, wall - last_wall))
        except (OSError, InputError):  # bookkeeping must not hide what stopped the run (a full disk...)
            pass
        await model.aclose()
        if models.mutation is not models.task:
            await mutation_model.aclose()
        if cache is not None:
            cache.close()


async def _breed(prepared: Prepared, run: RunDirectory, model: LanguageModel, mutation_model: LanguageModel,
                 config: dict, history, wall_before: float) -> dict:
    settings, manager, events = prepared.settings, prepared.plugins.manager, prepared.plugins.events()
    for name, logger in prepared.loggers.items():
        manager.register(logger, name=f"{LOGGER_PREFIX}{name}")
    resume_from = history[-1] if history else None
    items = split(len(prepared.suite), settings, prepared.held_out)
    fitness = FitnessTest(prepared.day_care, prepared.task, prepared.scorer, prepared.suite, settings.variants)
    breeder = Breeder(
        settings=settings, fitness=fitness, model=model, mutation_model=mutation_model,
        strategy=prepared.plugins.selection_strategies.get(settings.selection_strategy),
        operators=prepared.operators, post_operators=prepared.post_operators,
        similarity_filter=prepared.plugins.similarity_filters.get(settings.similarity_filter),
        train_indices=items.train, hooks=events, write=run.write_generation,
        wall_before=wall_before, seeds=prepared.seeds)
    events.lpb_run_started(event=RunStarted(
        run_dir=run.path, config=config, resumed_after=resume_from.generation if resume_from else None,
        total_generations=settings.evolution_generations, population_size=settings.population_size))
    started = time.perf_counter()
    final, stopped_because = await breeder.breed(resume_from)
    history = run.generations()

    winner, results, held_out = final.best(), [], None
    if stopped_because == COMPLETED:  # a budget stop spends nothing more
        when = "while choosing the winner among the last generation's fittest"
        try:
            winner, results = await choose_winner(history, fitness, model, items, settings.finalists,
                                                  stage_progress(events, history, FINAL))
            if items.test:
                when = "while scoring the winner on the held-out items"
                named = roles(winner, history)
                units = {u.id: u for record in history for u in record.population}
                held_out = await score_held_out([units[i] for i in named], named, fitness, model, items.test,
                                                stage_progress(events, history, HELD_OUT))
        except BudgetExhausted as exhausted:  # every generation is done; only the final scoring is missing
            stopped_because = f"budget: {exhausted.reason} while choosing the winner"
        except PluginFailure as failure:
            failure.when = failure.when or when
            raise
    summary = build_summary(settings, run, config, history, winner, results, held_out, items,
                            usage=model.usage, wall_seconds=breeder.wall_before + time.perf_counter() - started,
                            stopped_because=stopped_because, priced=models_priced(model, mutation_model))
    run.write_summary(summary)
    events.lpb_run_finished(event=RunFinished(run_dir=run.path, summary=summary))
    return summary


def stage_progress(events, history: list[GenerationRecord], stage: str):
    """The final's evaluations as UnitEvaluated events, so loggers show progress after the last generation."""
    def tell(unit: Unit, items: int, done: int, total: int) -> None:
        events.lpb_unit_evaluated(event=UnitEvaluated(generation=history[-1].generation, unit=unit, items=items,
                                                      done=done, total=total, stage=stage))
    return tell


def models_priced(*models: LanguageModel) -> bool:
    return all(m.handle.prices is not None for m in models)
