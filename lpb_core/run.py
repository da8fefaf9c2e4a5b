"""One breed from settings to summary: load and check everything, then hand over to the engine."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import attrs

from lpb_core import __version__
from lpb_core.daycare import INITIAL_TEMPLATE, DayCare, Task, cross_check, load_day_care, load_suite, raise_all
from lpb_core.decoding import parse_decoder
from lpb_core.engine import Breeder
from lpb_core.errors import InputError
from lpb_core.events import RunFinished, RunStarted
from lpb_core.fitness import FitnessTest, split
from lpb_core.cache import QueryCache
from lpb_core.finals import choose_winner, roles, score_held_out
from lpb_core.llm import Budget, LanguageModel, Meter, ModelHandle, open_model
from lpb_core.operators import MUTATE, POST, operator_templates
from lpb_core.plugins import PluginSet, describe, load_plugins
from lpb_core.rundir import RunDirectory
from lpb_core.settings import RESUMABLE_CHANGES, BreedSettings
from lpb_core.summary import build_summary
from lpb_core.units import Usage

INITIAL_ARGS = frozenset({"mutation_prompt", "thinking_style", "task_description", "candidate", "attempt"})


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


def prepare(settings: BreedSettings, extra_plugins=()) -> Prepared:
    """Load plugins, the day care and the suite, and report every cross-file problem at once."""
    plugins = load_plugins(settings.disabled_plugins, extra_plugins)
    day_care = load_day_care(settings.day_care_dir).for_task(settings.task)
    task = day_care.task(settings.task)
    if settings.decoder_options_override:
        override = parse_decoder(settings.decoder_options_override, "command line", "--decoder-options-override")
        task = attrs.evolve(task, decoder=override, fitness_decoder=override)
    suite_path = settings.fitness_test_suite or task.suite_path
    suite = load_suite(suite_path, task)
    held_out = load_suite(settings.test_suite, task) if settings.test_suite else ()

    asked = list(settings.operators) if settings.operators else None
    names = asked or plugins.operators.names()
    problems = cross_check(day_care, task, suite + held_out, suite_path, plugins, names)
    initial = day_care.breeder.templates[INITIAL_TEMPLATE]
    for index, arg in enumerate(initial.args):
        if arg not in INITIAL_ARGS:
            problems.append(InputError(day_care.breeder.path, f"{INITIAL_TEMPLATE} cannot receive {arg!r}; it gets: "
                                       f"{', '.join(sorted(INITIAL_ARGS))}", f"$.{INITIAL_TEMPLATE}_args[{index}]"))
    operators, post, disabled = [], [], {}
    for name in names:
        if name not in plugins.operators:
            continue  # already reported by cross_check
        operator = plugins.operators.get(name)
        missing = [t for t in operator_templates(operator) if t not in day_care.breeder.templates]
        if missing:
            if asked:
                problems.append(InputError(day_care.breeder.path, f"missing (operator {name!r} was asked for with "
                                           "--operators but breeder.lmql has no template for it)", f"$.{missing[0]}"))
            disabled[name] = f"breeder.lmql has no {missing[0]!r} template"
            continue
        (post if getattr(operator, "stage", MUTATE) == POST else operators).append(operator)
    if not operators and not problems:
        problems.append(InputError(day_care.breeder.path, "no mutation operator can run: none of "
                                   f"{', '.join(names)} has a template here", "--operators"))
    seeds = seed_prompts(settings, task, day_care.breeder.prompt_fields, problems)
    plugins.selection_strategies.get(settings.selection_strategy, "command line", "--selection-strategy")
    plugins.similarity_filters.get(settings.similarity_filter, "command line", "--similarity-filter")
    raise_all(problems)
    loggers = {name: plugins.loggers.get(name, "command line", "--logger")(settings)
               for name in active_loggers(settings)}
    return Prepared(settings, plugins, day_care, task, suite + held_out, len(held_out), operators, post, disabled,
                    loggers, seeds)


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
        task = open_model(prepared.plugins.backends, settings.model_name_or_path, settings)
        if settings.mutation_model in (None, settings.model_name_or_path):
            return cls(task, task)
        return cls(task, open_model(prepared.plugins.backends, settings.mutation_model, settings, "--mutation-model"))


def make_config(prepared: Prepared, models: Models) -> dict:
    return {
        "lpb_version": __version__,
        "settings": prepared.settings.to_dict(),
        "model": models.task.description,
        "mutation_model": models.mutation.description,
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
            raise InputError(run.config_path, f"this run was made with {saved[key]!r}, not {value!r}; a resumed run "
                             "must use the same settings", f"$.settings.{key}")


def breed(settings: BreedSettings, extra_plugins=()) -> dict:
    """Run (or resume) a breed; returns the summary written to summary.json."""
    prepared = prepare(settings, extra_plugins)
    task_folder = prepared.task.folder
    if settings.continue_run_number is not None:
        run = RunDirectory.existing(task_folder, settings.continue_run_number)
        check_resumable(run, settings)
    else:
        run = None
    models = Models.open(prepared)
    run = run or RunDirectory.create(task_folder, debug=settings.debug_mode)
    config = make_config(prepared, models)
    if settings.continue_run_number is None:
        run.write_config(config)
    return asyncio.run(_breed_and_close(prepared, run, models, config))


async def _breed_and_close(prepared: Prepared, run: RunDirectory, models: Models, config: dict) -> dict:
    """All model work of a run on one event loop: in-process models bind to the loop that first uses them."""
    settings = prepared.settings
    history = run.generations()
    cache = QueryCache(run.path / "cache.sqlite") if settings.cache else None
    meter = Meter(Budget(settings.max_llm_calls, settings.max_tokens, settings.max_cost),
                  history[-1].usage if history else Usage())
    model, mutation_model = (
        LanguageModel(handle, concurrency=settings.concurrency, chunk_size=settings.chunk_size, cache=cache, meter=meter)
        for handle in (models.task, models.mutation))
    try:
        return await _breed(prepared, run, model, mutation_model, config, history)
    finally:
        await model.aclose()
        if models.mutation is not models.task:
            await mutation_model.aclose()
        if cache is not None:
            cache.close()


async def _breed(prepared: Prepared, run: RunDirectory, model: LanguageModel, mutation_model: LanguageModel,
                 config: dict, history) -> dict:
    settings, manager = prepared.settings, prepared.plugins.manager
    for name, logger in prepared.loggers.items():
        manager.register(logger, name=f"logger:{name}")
    resume_from = history[-1] if history else None
    items = split(len(prepared.suite), settings, prepared.held_out)
    scorer = prepared.plugins.scorers.get(prepared.task.scorer_type)(**prepared.task.scorer_params)
    fitness = FitnessTest(prepared.day_care, prepared.task, scorer, prepared.suite, settings.variants)
    breeder = Breeder(
        settings=settings, fitness=fitness, model=model, mutation_model=mutation_model,
        strategy=prepared.plugins.selection_strategies.get(settings.selection_strategy),
        operators=prepared.operators, post_operators=prepared.post_operators,
        similarity_filter=prepared.plugins.similarity_filters.get(settings.similarity_filter),
        train_indices=items.train, hooks=manager.hook, write=run.write_generation,
        wall_before=resume_from.wall_seconds if resume_from else 0.0, seeds=prepared.seeds)
    manager.hook.lpb_run_started(event=RunStarted(
        run_dir=run.path, config=config, resumed_after=resume_from.generation if resume_from else None,
        total_generations=settings.evolution_generations, population_size=settings.population_size))
    started = time.perf_counter()
    final, stopped_because = await breeder.breed(resume_from)
    history = run.generations()

    winner, results, held_out = final.best(), [], None
    if stopped_because == "completed":  # a budget stop spends nothing more
        winner, results = await choose_winner(history, fitness, model, items.validation, settings.finalists)
        if items.test:
            named = roles(winner, history)
            units = {u.id: u for record in history for u in record.population}
            held_out = await score_held_out([units[i] for i in named], named, fitness, model, items.test)
    summary = build_summary(settings, run, config, history, winner, results, held_out, items,
                            usage=model.usage, wall_seconds=breeder.wall_before + time.perf_counter() - started,
                            stopped_because=stopped_because, priced=models_priced(model, mutation_model))
    run.write_summary(summary)
    manager.hook.lpb_run_finished(event=RunFinished(run_dir=run.path, summary=summary))
    return summary


def models_priced(*models: LanguageModel) -> bool:
    return all(m.handle.prices is not None for m in models)
