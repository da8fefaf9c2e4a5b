"""Checks that need the plugins or LMQL, run before any model is opened.

``lpb_core.daycare`` checks the day care's files on their own and against each other; here they meet
the plugins: the scorer's parameters and constructor, the operators' templates and arguments, the
selection strategy on a trial population, the loggers' constructors, and every template compiled by
LMQL. Each function returns every problem it finds, so ``lpb validate`` can list them all. One check needs the
model's tokenizer and runs once the model is open: ``overlong_items``.
"""

from __future__ import annotations

import random

import attrs

from lpb_core import files
from lpb_core.constraints import allowed_answers
from lpb_core.daycare import FITNESS_TEMPLATE, INITIAL_TEMPLATE, Breeder, DayCare, Task
from lpb_core.errors import InputError, PluginError, raise_all
from lpb_core.operators import BASE_ARGS, MUTATE, MUTATION_PROMPT_VARIABLE, POST, operator_templates
from lpb_core.plugins import PluginSet
from lpb_core.settings import DEFAULT_LOGGERS, BreedSettings
from lpb_core.templates import TemplateError
from lpb_core.units import Unit, contest_problem, unit_id

# What initial_prompt_gen can receive.
INITIAL_ARGS = frozenset({"mutation_prompt", "thinking_style", "task_description", "candidate", "attempt"})


def compile_problems(breeder: Breeder) -> list[InputError]:
    """Every template the task sees (shared and its own), compiled by LMQL; no model is needed."""
    problems = []
    for template in breeder.templates.values():
        try:
            template.compiled()
        except TemplateError as exc:
            problems.append(InputError(template.source or breeder.path, str(exc), files.json_path([template.name])))
    return problems


def initial_template_problems(breeder: Breeder) -> list[InputError]:
    initial = breeder.templates[INITIAL_TEMPLATE]
    where = initial.source or breeder.path
    problems = [InputError(where, f"{INITIAL_TEMPLATE} cannot receive {arg!r}; it gets: "
                           f"{', '.join(sorted(INITIAL_ARGS))}", files.json_path([f"{INITIAL_TEMPLATE}_args", index]))
                for index, arg in enumerate(initial.args) if arg not in INITIAL_ARGS]
    unwritten = [f.upper() for f in breeder.prompt_fields if f.upper() not in initial.writes()]
    if unwritten:  # each unit would ask again, then start from the task description
        problems.append(InputError(where, f"writes no {', '.join(unwritten)}: generation 0 needs a variable for every "
                                   f"prompt field (prompt_fields: {', '.join(breeder.prompt_fields)})",
                                   f"$.{INITIAL_TEMPLATE}"))
    return problems


def unread_template_warnings(breeder: Breeder, operators) -> list[str]:
    """Templates of the run's operators that write no variable a child is made from: the operator would make
    children identical to their parents (a prompt field renamed in breeder.lmql but not in the templates that
    write it). A warning, since an operator of a plugin may build the child from other variables itself."""
    read = {f.upper() for f in breeder.prompt_fields} | {MUTATION_PROMPT_VARIABLE}
    users: dict[str, list[str]] = {}  # template -> the operators running it
    for operator in operators:
        for name in operator_templates(operator):
            users.setdefault(name, []).append(operator.name)
    warnings = []
    for name, operator_names in users.items():
        template = breeder.templates.get(name)
        written = template.writes() if template else set()
        if written and not written & read:
            warnings.append(f"{template.source or breeder.path}: {name} writes {', '.join(sorted(written))} but a "
                            f"child's prompts come from {', '.join(sorted(read))} (prompt fields in upper case): "
                            f"{', '.join(operator_names)} may leave children as copies of their parents")
    return warnings


def first_few(texts: list[str], joiner: str = ", ", shown: int = 3) -> str:
    """The first ``shown`` of ``texts`` joined, and how many more there are: a warning names examples, not all."""
    more = f" and {len(texts) - shown} more" if len(texts) > shown else ""
    return joiner.join(texts[:shown]) + more


def never_right(scorer, items: tuple[dict, ...], task: Task, path) -> list[str]:
    """A warning if some items' gold labels are not scored right even when given as the answer itself: those
    items can never count (a misspelt label, or one outside the scorer's labels). Not an error. When no gold
    passes it is said only for a scorer of labels: another may read answers in another form than its golds
    (a regex scorer)."""
    if scorer is None or not items:
        return []
    bad = []
    for index, item in enumerate(items):
        gold = item.get(task.gold_field)
        try:
            if not scorer.is_correct(str(gold), gold):
                bad.append(index)
        except Exception:  # the scorer's failure is reported, naming it, when it first scores
            return []
    if not bad or (len(bad) == len(items) and not getattr(scorer, "labels", None)):
        return []
    shown = first_few([f"$[{i}].{task.gold_field} = {items[i].get(task.gold_field)!r}" for i in bad])
    return [f"{path}: {shown}: the {task.scorer_type} scorer does not count this gold label right even as "
            f"the answer itself, so {'this item' if len(bad) == 1 else f'these {len(bad)} items'} can never be "
            "scored right"]


def build_scorer(task: Task, plugins: PluginSet) -> tuple[object | None, list[Exception]]:
    """The task's scorer, built from its checked parameters; or the problems that prevent it."""
    where = str(task.description_file)
    try:
        scorer_class = plugins.scorers.get(task.scorer_type, where, "$.fitness_scorer.type")
    except InputError as exc:
        return None, [exc]
    # The scorer's parameters sit under fitness_scorer in the file, so that is where errors point.
    problems = [InputError(where, error.message, "$.fitness_scorer" + error.field[1:])
                for error in files.schema_errors(task.scorer_params, scorer_class.params_schema, where)]
    if problems:
        return None, problems
    try:
        return scorer_class(**task.scorer_params), []
    except InputError as exc:  # the scorer's own check of its parameters
        return None, [exc if exc.where else InputError(where, exc.message, exc.field or "$.fitness_scorer")]
    except Exception as exc:
        plugin = plugins.owner_label("fitness scorer", task.scorer_type)
        return None, [PluginError(f"fitness scorer {task.scorer_type!r} (plugin {plugin}) cannot be built from "
                                  f"{where} $.fitness_scorer {task.scorer_params}: {type(exc).__name__}: {exc}")]


@attrs.frozen
class OperatorChoice:
    operators: list  # stage "mutate", in registration order
    post_operators: list  # stage "post"
    disabled: dict  # name -> why it is off
    problems: list


def choose_operators(breeder: Breeder, plugins: PluginSet, asked: list[str] | None) -> OperatorChoice:
    """The operators this run can use: asked for (--operators) or all registered, each with its templates."""
    names = asked or plugins.operators.names()
    operators, post, disabled, problems = [], [], {}, []
    for name in names:
        try:
            operator = plugins.operators.get(name, "command line", "--operators")
        except InputError as exc:
            problems.append(exc)
            continue
        allowed = BASE_ARGS | set(breeder.prompt_fields) | set(getattr(operator, "provides", ()))
        for template in (breeder.templates.get(t) for t in operator_templates(operator)):
            for index, arg in enumerate(template.args if template else ()):
                if arg not in allowed:
                    problems.append(InputError(
                        template.source or breeder.path, f"operator {name!r} cannot provide {arg!r}; it provides: "
                        f"{', '.join(sorted(allowed))}", files.json_path([f"{template.name}_args", index])))
        missing = [t for t in operator_templates(operator) if t not in breeder.templates]
        if missing:
            if asked:
                problems.append(InputError(breeder.path, f"missing (operator {name!r} was asked for with "
                                           "--operators but breeder.lmql has no template for it)", f"$.{missing[0]}"))
            disabled[name] = f"breeder.lmql has no {missing[0]!r} template"
            continue
        (post if getattr(operator, "stage", MUTATE) == POST else operators).append(operator)
    if not operators and not problems:
        why = [f"{name} (stage 'post': runs only after an operator that makes the child)" for name in
               (op.name for op in post)] + [f"{name} ({reason})" for name, reason in disabled.items()]
        makers = [n for n, op in plugins.operators.items() if getattr(op, "stage", MUTATE) == MUTATE]
        problems.append(InputError(breeder.path, f"no mutation operator can make children: {'; '.join(why)}; "
                                   f"operators that make them: {', '.join(makers) or 'none registered'}", "--operators"))
    return OperatorChoice(operators, post, disabled, problems)


def trial_population(settings: BreedSettings, breeder: Breeder) -> tuple[Unit, ...]:
    """Units shaped like a scored generation's, with spread fitness, for trying a strategy without a model."""
    size = settings.population_size
    units = []
    for i in range(size):
        fitness = round((i * 7 % size) / size, 3)
        units.append(Unit(id=unit_id(i), prompts={f: f"Trial prompt {i}." for f in breeder.prompt_fields},
                          mutation_prompt="Improve this instruction.", thinking_style="Think step by step.",
                          fitness=fitness, scores={v: fitness for v in settings.variants}, scored_on="trial"))
    return tuple(units)


def try_strategy(settings: BreedSettings, plugins: PluginSet, breeder: Breeder) -> tuple[list[Exception], list[str]]:
    """The selection strategy tried once on a trial population: its contests must name units of it (problems),
    and a strategy holding none would leave every generation as it was (a warning: it may have its reasons)."""
    try:
        strategy = plugins.selection_strategies.get(settings.selection_strategy, "command line",
                                                    "--selection-strategy")
    except InputError as exc:
        return [exc], []
    population = trial_population(settings, breeder)
    subject = (f"selection strategy {strategy.name!r} (plugin "
               f"{plugins.owner_label('selection strategy', strategy.name)})")
    trial = f"on a trial population of {len(population)} units ({population[0].id} to {population[-1].id})"
    try:
        contests = strategy.contests(population, random.Random(f"{settings.seed}:trial"))
    except Exception as exc:
        return [PluginError(f"{subject} raised {type(exc).__name__}: {exc} {trial}")], []
    problem = contest_problem(contests, population)
    if problem:
        return [PluginError(f"{subject} {problem} {trial}")], []
    if settings.evolution_generations and not contests:
        return [], [f"{subject} held no contest {trial}: if it does so in a breed, no child is ever made"]
    return [], []


def build_loggers(settings: BreedSettings, plugins: PluginSet, names: list[str]) -> dict:
    """The run's loggers, each built as ``cls(settings)``; a failing constructor names the logger."""
    loggers, problems = {}, []
    for name in names:
        if name in DEFAULT_LOGGERS and name not in plugins.loggers.names():
            problems.append(InputError("command line", f"logger {name!r}, which every breed uses, is not registered: "
                                       "leave the plugin that provides it enabled", "--disable-plugin"))
            continue
        try:
            logger_class = plugins.loggers.get(name, "command line", "--logger")
            loggers[name] = logger_class(settings)
        except InputError as exc:
            subject = f"logger {name!r} (plugin {plugins.owner_label('logger', name)})"
            problems.append(exc if exc.where else InputError(subject, exc.message, exc.field))
        except Exception as exc:
            problems.append(PluginError(f"logger {name!r} (plugin {plugins.owner_label('logger', name)}) cannot be "
                                        f"built: {type(exc).__name__}: {exc}"))
    raise_all(problems)
    return loggers


def check_similarity_filter(settings: BreedSettings, plugins: PluginSet) -> list[InputError]:
    try:
        plugins.similarity_filters.get(settings.similarity_filter, "command line", "--similarity-filter")
    except InputError as exc:
        return [exc]
    return []


def day_care_problems(day_care: DayCare) -> list[InputError]:
    """The task's view of breeder.lmql: its templates compile and initial_prompt_gen gets what it asks for."""
    return compile_problems(day_care.breeder) + initial_template_problems(day_care.breeder)


def overlong_items(day_care: DayCare, task: Task, suites, count_tokens, model: str) -> list[InputError]:
    """Items whose text alone is more tokens than a fitness query may hold (the fitness decoder's max_len): LMQL
    would refuse every query on them, mid-run. ``suites``: (items, the file they came from)."""
    fields, limit, problems = day_care.item_fields(task), task.fitness_decoder.max_len, []
    for items, path in suites:
        for index, item in enumerate(items):
            sizes = {field: count_tokens(str(item[field])) for field in fields if field in item}
            if sizes and sum(sizes.values()) >= limit:
                longest = max(sizes, key=sizes.get)
                problems.append(InputError(path, f"{sum(sizes.values())} tokens for {model}, more than a fitness "
                                           f"query may hold ({limit}, the fitness decoder's max_len): shorten it, "
                                           "or raise max_len in fitness_decoder_options",
                                           files.json_path([index, longest])))
    return problems


def repeated_items(day_care: DayCare, task: Task, train: tuple[dict, ...], train_path, held_out: tuple[dict, ...],
                   held_out_path) -> list[str]:
    """Warnings for items the fitness template would show the same (the fields it reads): held-out items that
    are also training items, whose held-out scores are then not held out, and items given twice with different
    gold labels, one of which is always scored wrong."""
    fields = day_care.item_fields(task)

    def shown(item: dict) -> str:
        return repr([item.get(field) for field in fields])

    warnings, first, clashes = [], {}, []
    for path, items in ((train_path, train), (held_out_path, held_out)):
        for index, item in enumerate(items):
            earlier = first.setdefault(shown(item), (path, index, item.get(task.gold_field)))
            if earlier[:2] != (path, index) and earlier[2] != item.get(task.gold_field):
                clashes.append(f"{path}: $[{index}] ({item.get(task.gold_field)!r}) is {earlier[0]}: $[{earlier[1]}] "
                               f"({earlier[2]!r})")
    if clashes:
        warnings.append(f"{first_few(clashes, '; ')}: the same item with another gold label, so one of each "
                        "pair is always scored wrong")
    training = {shown(item) for item in train}
    also = [index for index, item in enumerate(held_out) if shown(item) in training]
    if also:
        warnings.append(f"{held_out_path}: {first_few([f'$[{i}]' for i in also])} also in the training items ({train_path}): a held-out score "
                        "on an item the search was tuned on is not held out")
    return warnings


def answers_that_cannot_be_right(day_care: DayCare, task: Task, scorer, items: tuple[dict, ...], path) -> list[str]:
    """A warning when the fitness template lets the model give only answers (``ANSWER in [...]``) that the scorer
    never counts right for some gold labels: labels unlike the scorer's make every answer wrong, silently."""
    choices = allowed_answers(day_care.breeder.templates[FITNESS_TEMPLATE].code, task.answer_variable)
    if scorer is None or not choices or not items:
        return []
    golds = list(dict.fromkeys(item.get(task.gold_field) for item in items))
    try:
        missed = [gold for gold in golds if not any(scorer.is_correct(choice, gold) for choice in choices)]
    except Exception:  # the scorer's failure is reported, naming it, when it first scores
        return []
    if not missed:
        return []
    shown = first_few([repr(gold) for gold in missed])
    return [f"{day_care.breeder.templates[FITNESS_TEMPLATE].source or day_care.breeder.path}: "
            f"{FITNESS_TEMPLATE} allows only {', '.join(map(repr, choices))} as {task.answer_variable}, and the "
            f"{task.scorer_type} scorer counts none of them right for gold label{'s' * (len(missed) > 1)} {shown} of "
            f"{path}: those items can never be scored right"]
