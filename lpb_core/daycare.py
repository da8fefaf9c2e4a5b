"""Loading and checking a day care folder (the seed's layout).

    day_care/
      breeder.lmql            hjson: LMQL templates and their *_args lists
      mutation_prompts.json   list of strings
      thinking_styles.json    list of strings
      <task>/task_description.json
      <task>/fitness_test_suite.json   list of items with the template's fields and gold_<task>
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import attrs
import hjson

from lpb_core import files
from lpb_core.decoding import Decoder, parse_decoder
from lpb_core.errors import InputError, InputErrors, problems_in
from lpb_core.templates import Template, as_plain_text

FITNESS_TEMPLATE = "fitness_test_template"
INITIAL_TEMPLATE = "initial_prompt_gen"
# Arguments the engine itself can hand to the fitness template, besides prompt fields and suite fields.
FITNESS_BUILTIN_ARGS = frozenset({"CoT", "task_description", "examples"})


@attrs.frozen
class Breeder:
    path: Path
    templates: dict  # name -> Template
    prompt_fields: tuple[str, ...] = ("task_prompt",)
    hyper_mutation_prompts: tuple[str, ...] = ("Please summarise and improve the following instruction:",)


@attrs.frozen
class Task:
    name: str
    folder: Path
    description: str
    scorer_type: str
    scorer_params: dict
    decoder: Decoder
    fitness_decoder: Decoder
    fixed_system_prompt: str | None
    answer_variable: str
    reasoning_variable: str
    suite_path: Path
    initial_prompts: tuple = ()  # the user's own prompts: strings, or {prompt field: text} objects
    suite_named: bool = True  # task_description.json names its suite (False: the default file name)

    @property
    def gold_field(self) -> str:
        return f"gold_{self.name}"

    @property
    def description_file(self) -> Path:
        return self.folder / "task_description.json"

    def missing_suite(self) -> InputError:
        """The problem when the suite task_description.json names (or the default one) is not there."""
        if not self.suite_named:
            return InputError(self.suite_path, "file not found (each task needs its fitness test suite: put it here, "
                              "name another file as fitness_test_suite in task_description.json, or pass "
                              "--fitness-test-suite)")
        return InputError(self.description_file, f"no suite file at {str(self.suite_path)!r} (name one here or pass "
                          "--fitness-test-suite)", "$.fitness_test_suite")


@attrs.frozen
class DayCare:
    root: Path
    breeder: Breeder
    mutation_prompts: tuple[str, ...]
    thinking_styles: tuple[str, ...]
    tasks: dict  # name -> Task
    broken_tasks: dict = attrs.field(factory=dict)  # name -> the InputErrors that keep it from loading
    task_problems: dict = attrs.field(factory=dict)  # name -> problems found in a task that still loads
    problems: tuple = ()  # broken shared lists, kept by load_day_care(keep_going=True) (their field is empty)

    def task(self, name: str) -> Task:
        if name in self.broken_tasks:
            raise self.broken_tasks[name]
        if name not in self.tasks:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise InputError(self.root, f"no task folder {name!r} with a task_description.json; tasks here: {known}",
                             "--task")
        return self.tasks[name]

    def item_fields(self, task: Task) -> tuple[str, ...]:
        """The suite fields the fitness template shows the model: its arguments that are no prompt field, no
        built-in argument and not the gold label."""
        provided = set(self.breeder.prompt_fields) | FITNESS_BUILTIN_ARGS | {task.gold_field}
        if task.fixed_system_prompt is not None:
            provided.add("system_prompt")
        return tuple(arg for arg in self.breeder.templates[FITNESS_TEMPLATE].args if arg not in provided)

    def task_names(self) -> list[str]:
        """Every task folder, loadable or not."""
        return sorted({*self.tasks, *self.broken_tasks})

    def for_task(self, name: str) -> "DayCare":
        """This day care as one task sees it: a task folder's own breeder.lmql overrides the shared entries."""
        own = self.task(name).folder / "breeder.lmql"
        if not own.exists():
            return self
        return attrs.evolve(self, breeder=load_breeder(own, base=self.breeder))


def load_breeder(path: Path, base: Breeder | None = None) -> Breeder:
    """Read a breeder.lmql; with ``base``, it is a task's own file whose entries add to or replace the base's.

    Every problem in the file is raised at once.
    """
    text = files.read_text(path, missing="file not found (every day care needs a breeder.lmql)")
    try:
        spec = hjson.loads(text, object_pairs_hook=files.unique_keys)
    except files.DuplicateKey as exc:
        raise exc.error(path) from None
    except hjson.HjsonDecodeError as exc:
        raise InputError(path, f"invalid hjson: {exc.msg}", f"line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise InputError(path, "invalid hjson: nested too deeply") from None
    except Exception:  # hjson's parser fails with assorted errors when a string or bracket is never closed
        end = f"line {text.count(chr(10)) + 1}, column {len(text) - text.rfind(chr(10))}"
        raise InputError(path, "invalid hjson: the file ends inside an unterminated string or bracket", end) from None
    spec = _plain(spec)
    schema = files.schema("breeder")
    if base is not None:  # a task's breeder.lmql only adds or replaces entries
        schema = {k: v for k, v in schema.items() if k != "required"}
    problems = files.schema_errors(spec, schema, path)
    if problems:
        raise InputErrors(problems)
    templates = dict(base.templates) if base else {}
    for key, value in spec.items():
        if key.endswith("_args") or key in ("prompt_fields", "hyper_mutation_prompts"):
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(InputError(path, "a template must be a non-empty LMQL string", files.json_path([key])))
        elif f"{key}_args" not in spec:  # each template states its arguments next to it
            problems.append(InputError(path, f"missing (expected the list of {key}'s arguments)",
                                       files.json_path([f"{key}_args"])))
        elif value.lstrip().startswith("{decoder_options}"):
            problems.append(InputError(path, "drop the leading {decoder_options} and the `from` clause: lpb adds the "
                                       "decoder and the model itself", files.json_path([key])))
        else:
            templates[key] = Template(key, _dedent(value), tuple(spec[f"{key}_args"]), source=path)
    for key in spec:
        if key.endswith("_args") and key[: -len("_args")] not in spec:
            problems.append(InputError(path, f"no template {key[:-5]!r} for these arguments", files.json_path([key])))
    if problems:
        raise InputErrors(problems)
    extra = {"prompt_fields": base.prompt_fields, "hyper_mutation_prompts": base.hyper_mutation_prompts} if base else {}
    if "prompt_fields" in spec:
        extra["prompt_fields"] = tuple(spec["prompt_fields"])
    if "hyper_mutation_prompts" in spec:
        extra["hyper_mutation_prompts"] = tuple(spec["hyper_mutation_prompts"])
    return Breeder(path=path, templates=templates, **extra)


def _plain(value: Any) -> Any:
    """hjson returns OrderedDicts; plain types make errors and schemas simpler."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dedent(code: str) -> str:
    return textwrap.dedent(code).strip("\n")


def load_string_list(path: Path, schema_name: str) -> tuple[str, ...]:
    data = files.read_json(path)
    files.check(data, schema_name, path)
    return tuple(data)


def load_task(folder: Path) -> tuple[Task, list[InputError]]:
    """A task and the problems that do not keep it from loading (a bad decoder is replaced by the default,
    so that everything else can still be checked)."""
    path = folder / "task_description.json"
    given = files.read_json(path)
    files.check(given, "task_description", path)
    defaults = files.schema_defaults("task_description")  # the schema is where a field's default is written
    data = {**defaults, **given}
    scorer = dict(data["fitness_scorer"])
    scorer_type = scorer.pop("type")
    problems, decoders = [], {}
    for field in ("decoder_options", "fitness_decoder_options"):
        try:
            decoders[field] = parse_decoder(data[field], str(path), f"$.{field}")
        except InputError as exc:
            problems.append(exc)
            decoders[field] = parse_decoder(defaults[field])
    task = Task(
        name=folder.name,
        folder=folder,
        description=data["task_description"],
        scorer_type=scorer_type,
        scorer_params=scorer,
        decoder=decoders["decoder_options"],
        fitness_decoder=decoders["fitness_decoder_options"],
        fixed_system_prompt=data.get("fixed_system_prompt"),
        answer_variable=data["answer_variable"],
        reasoning_variable=data["reasoning_variable"],
        suite_path=folder / data["fitness_test_suite"],
        suite_named="fitness_test_suite" in given,
        initial_prompts=tuple(data.get("initial_prompts", ())),
    )
    return task, problems


def load_day_care(root: Path | str, keep_going: bool = False) -> DayCare:
    """Load the shared files and every task folder.

    Problems in the shared files are raised all at once (with those of the task files); a task whose
    task_description.json is broken is kept aside, so other tasks stay usable and ``task(name)`` says why.
    ``keep_going``: with breeder.lmql loaded, broken mutation prompts or thinking styles are kept in
    ``problems`` instead, so that the checks that need only breeder.lmql and the tasks still run (a caller
    must raise them).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a directory (expected a day care folder)", "--day-care-dir")
    tasks, broken, task_problems = {}, {}, {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / "task_description.json").exists():
            try:
                tasks[folder.name], task_problems[folder.name] = load_task(folder)
            except InputError as exc:
                broken[folder.name] = InputErrors([exc])
    shared, problems = {}, []
    for key, load in (("breeder", lambda: load_breeder(root / "breeder.lmql")),
                      ("mutation_prompts", lambda: load_string_list(root / "mutation_prompts.json", "mutation_prompts")),
                      ("thinking_styles", lambda: load_string_list(root / "thinking_styles.json", "thinking_styles"))):
        try:
            shared[key] = load()
        except InputError as exc:
            problems.extend(problems_in(exc))
    if problems and not (keep_going and "breeder" in shared):
        raise InputErrors(problems + [e for name in sorted(broken) for e in broken[name].errors]
                          + [e for name in sorted(task_problems) for e in task_problems[name]])
    lists = {key: shared.get(key, ()) for key in ("mutation_prompts", "thinking_styles")}
    return DayCare(root=root, breeder=shared["breeder"], tasks=tasks, broken_tasks=broken,
                   task_problems=task_problems, problems=tuple(problems), **lists)


def read_suite(path: Path) -> tuple[dict, ...]:
    """A suite file's items, checked against the suite schema (not yet against a task)."""
    items = files.read_json(path)
    files.check(items, "fitness_test_suite", path)
    return tuple({key: as_plain_text(value) for key, value in item.items()} for item in items)


def readable_items(path: Path) -> tuple[dict, ...]:
    """The items of a suite that breaks its schema that are objects at all, so that their own problems (a
    missing gold label or template field) are listed beside the schema's; none if the file is not a list."""
    try:
        items = files.read_json(path)
    except InputError:
        return ()
    return tuple(item for item in items if isinstance(item, dict)) if isinstance(items, list) else ()


def gold_label_problems(items: tuple[dict, ...], task: Task, path: Path) -> list[InputError]:
    """Items without the task's gold label: the first one named, the others counted."""
    lacking = [index for index, item in enumerate(items) if task.gold_field not in item]
    if not lacking:
        return []
    others = f"; {len(lacking) - 1} more item(s) lack it too" if len(lacking) > 1 else ""
    return [InputError(path, f"missing its gold label (suite items need {task.gold_field!r}){others}",
                       files.json_path([lacking[0], task.gold_field]))]


def load_suite(path: Path, task: Task) -> tuple[dict, ...]:
    """The fitness suite, each item checked for its gold label."""
    items = read_suite(path)
    problems = gold_label_problems(items, task, path)
    if problems:
        raise problems[0]
    return items


def cross_check(day_care: DayCare, task: Task, suites: list[tuple[tuple[dict, ...], Path]]) -> list[InputError]:
    """Problems that only show when the day care's files are read together: every one, not just the first.
    ``suites``: the items the fitness template will run on, with the file each list came from.

    Checks that need plugins (scorer parameters, operator arguments, compiling templates) are in
    ``lpb_core.preflight``.
    """
    problems: list[InputError] = []
    breeder = day_care.breeder

    for template in breeder.templates.values():
        for name in sorted(template.placeholders() - set(template.args)):
            problems.append(InputError(template.source or breeder.path, f"template uses {{{name}}} but "
                                       f"{template.name}_args does not list it", files.json_path([template.name])))

    fitness = breeder.templates[FITNESS_TEMPLATE]
    if task.answer_variable not in fitness.writes():  # the scorer would have nothing to read
        written = ", ".join(sorted(fitness.writes())) or "none"
        problems.append(InputError(
            fitness.source or breeder.path, f"writes no {task.answer_variable}, the variable the scorer reads "
            f"(answer_variable of {task.folder.name}/task_description.json; variables it writes: {written})",
            files.json_path([FITNESS_TEMPLATE])))
    from_items = day_care.item_fields(task)
    suites = [(items, path) for items, path in suites if items]
    for index, arg in enumerate(fitness.args):
        if arg not in from_items or not suites:
            continue
        if not any(arg in item for items, _ in suites for item in items):
            names = " or ".join(path.name for _, path in suites)
            problems.append(InputError(
                fitness.source or breeder.path, f"{arg!r} is provided by no suite field of {names}, prompt "
                f"field ({', '.join(breeder.prompt_fields)}) or built-in argument "
                f"({', '.join(sorted(FITNESS_BUILTIN_ARGS))})", files.json_path([f"{FITNESS_TEMPLATE}_args", index])))
            continue
        for items, path in suites:  # some items have it: those without are the mistake, in their own file
            lacking = [i for i, item in enumerate(items) if arg not in item]
            if lacking:
                problems.append(InputError(
                    path, f"missing (the fitness template needs it; {len(lacking)} item(s) lack it)",
                    files.json_path([lacking[0], arg])))
    return problems
