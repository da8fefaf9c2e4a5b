"""Loading and checking a day care folder (the seed's layout).

    day_care/
      breeder.lmql            hjson: LMQL templates and their *_args lists
      mutation_prompts.json   list of strings
      thinking_styles.json    list of strings
      <task>/task_description.json
      <task>/fitness_test_suite.json   list of items with the template's fields and gold_<task>
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import hjson

from lpb_core import files
from lpb_core.decoding import Decoder, parse_decoder
from lpb_core.errors import InputError, InputErrors

FITNESS_TEMPLATE = "fitness_test_template"
INITIAL_TEMPLATE = "initial_prompt_gen"
DEFAULT_MUTATION_DECODER = "sample(temperature=0.8)"
DEFAULT_FITNESS_DECODER = "argmax"
# Arguments the engine itself can hand to the fitness template, besides prompt fields and suite fields.
FITNESS_BUILTIN_ARGS = frozenset({"CoT", "task_description", "examples"})

_PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)")
_LOCAL_NAMES = re.compile(r"^\s*for\s+([A-Za-z_][\w\s,]*?)\s+in\b|^\s*([A-Za-z_]\w*)\s*=(?!=)", re.MULTILINE)


@attrs.frozen
class Template:
    name: str
    code: str
    args: tuple[str, ...]

    def placeholders(self) -> set[str]:
        """Names used as {name} in prompt strings that are neither arguments nor bound inside the template."""
        local = set()
        for loop_targets, assigned in _LOCAL_NAMES.findall(self.code):
            local.update(n.strip() for n in loop_targets.split(",") if n.strip())
            if assigned:
                local.add(assigned)
        return set(_PLACEHOLDER.findall(self.code)) - local


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

    @property
    def gold_field(self) -> str:
        return f"gold_{self.name}"

    @property
    def description_file(self) -> Path:
        return self.folder / "task_description.json"


@attrs.frozen
class DayCare:
    root: Path
    breeder: Breeder
    mutation_prompts: tuple[str, ...]
    thinking_styles: tuple[str, ...]
    tasks: dict  # name -> Task

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise InputError(self.root, f"no task folder {name!r} with a task_description.json; tasks here: {known}",
                             "--task")
        return self.tasks[name]

    def for_task(self, name: str) -> "DayCare":
        """This day care as one task sees it: a task folder's own breeder.lmql overrides the shared entries."""
        own = self.task(name).folder / "breeder.lmql"
        if not own.exists():
            return self
        return attrs.evolve(self, breeder=load_breeder(own, base=self.breeder))


def load_breeder(path: Path, base: Breeder | None = None) -> Breeder:
    """Read a breeder.lmql; with ``base``, it is a task's own file whose entries add to or replace the base's."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "file not found (every day care needs a breeder.lmql)") from None
    try:
        spec = hjson.loads(text)
    except hjson.HjsonDecodeError as exc:
        raise InputError(path, f"invalid hjson: {exc.msg}", f"line {exc.lineno}, column {exc.colno}") from None
    except (IndexError, ValueError) as exc:  # hjson fails this way on some unterminated strings
        raise InputError(path, f"invalid hjson: {exc} (an unterminated string or bracket?)") from None
    spec = _plain(spec)
    schema = files.schema("breeder")
    if base is not None:  # a task's breeder.lmql only adds or replaces entries
        schema = {k: v for k, v in schema.items() if k != "required"}
    problems = files.schema_errors(spec, schema, path)
    if problems:
        raise problems[0]
    templates = dict(base.templates) if base else {}
    for key, value in spec.items():
        if key.endswith("_args") or key in ("prompt_fields", "hyper_mutation_prompts"):
            continue
        if not isinstance(value, str) or not value.strip():
            raise InputError(path, "a template must be a non-empty LMQL string", files.json_path([key]))
        if f"{key}_args" not in spec:  # each template states its arguments next to it
            raise InputError(path, f"missing (expected the list of {key}'s arguments)", files.json_path([f"{key}_args"]))
        if value.lstrip().startswith("{decoder_options}"):
            raise InputError(path, "drop the leading {decoder_options} and the `from` clause: lpb adds the decoder "
                             "and the model itself", files.json_path([key]))
        templates[key] = Template(key, _dedent(value), tuple(spec[f"{key}_args"]))
    for key in spec:
        if key.endswith("_args") and key[: -len("_args")] not in spec:
            raise InputError(path, f"no template {key[:-5]!r} for these arguments", files.json_path([key]))
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
    import textwrap

    return textwrap.dedent(code).strip("\n")


def load_string_list(path: Path, schema_name: str) -> tuple[str, ...]:
    data = files.read_json(path)
    files.check(data, schema_name, path)
    return tuple(data)


def load_task(folder: Path) -> Task:
    path = folder / "task_description.json"
    data = files.read_json(path)
    files.check(data, "task_description", path)
    scorer = dict(data["fitness_scorer"])
    scorer_type = scorer.pop("type")
    return Task(
        name=folder.name,
        folder=folder,
        description=data["task_description"],
        scorer_type=scorer_type,
        scorer_params=scorer,
        decoder=parse_decoder(data.get("decoder_options", DEFAULT_MUTATION_DECODER), str(path), "$.decoder_options"),
        fitness_decoder=parse_decoder(data.get("fitness_decoder_options", DEFAULT_FITNESS_DECODER), str(path),
                                      "$.fitness_decoder_options"),
        fixed_system_prompt=data.get("fixed_system_prompt"),
        answer_variable=data.get("answer_variable", "ANSWER"),
        reasoning_variable=data.get("reasoning_variable", "REASONING"),
        suite_path=folder / data.get("fitness_test_suite", "fitness_test_suite.json"),
        initial_prompts=tuple(data.get("initial_prompts", ())),
    )


def load_day_care(root: Path | str) -> DayCare:
    """Load the shared files and every task folder; the first problem found is raised."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a directory (expected a day care folder)", "--day-care-dir")
    tasks = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / "task_description.json").exists():
            tasks[folder.name] = load_task(folder)
    return DayCare(
        root=root,
        breeder=load_breeder(root / "breeder.lmql"),
        mutation_prompts=load_string_list(root / "mutation_prompts.json", "mutation_prompts"),
        thinking_styles=load_string_list(root / "thinking_styles.json", "thinking_styles"),
        tasks=tasks,
    )


def load_suite(path: Path, task: Task) -> tuple[dict, ...]:
    """The fitness suite, each item checked for its gold label."""
    items = files.read_json(path)
    files.check(items, "fitness_test_suite", path)
    for index, item in enumerate(items):
        if task.gold_field not in item:
            raise InputError(path, f"missing its gold label (suite items need {task.gold_field!r})",
                             files.json_path([index, task.gold_field]))
    return tuple(items)


def cross_check(day_care: DayCare, task: Task, suite: tuple[dict, ...], suite_path: Path, plugins,
                operator_names: list[str]) -> list[InputError]:
    """Problems that only show when files are read together: every one, not just the first."""
    problems: list[InputError] = []
    breeder = day_care.breeder
    bpath = breeder.path

    for template in breeder.templates.values():
        for name in sorted(template.placeholders() - set(template.args)):
            problems.append(InputError(bpath, f"template uses {{{name}}} but {template.name}_args does not list it",
                                       files.json_path([template.name])))

    fitness = breeder.templates[FITNESS_TEMPLATE]
    provided = set(breeder.prompt_fields) | FITNESS_BUILTIN_ARGS
    if task.fixed_system_prompt is not None:
        provided.add("system_prompt")
    for index, arg in enumerate(fitness.args):
        if arg in provided:
            continue
        lacking = [i for i, item in enumerate(suite) if arg not in item]
        if len(lacking) == len(suite):
            problems.append(InputError(
                bpath, f"{arg!r} is provided by no suite field of {suite_path.name}, prompt field "
                f"({', '.join(breeder.prompt_fields)}) or built-in argument ({', '.join(sorted(FITNESS_BUILTIN_ARGS))})",
                files.json_path([f"{FITNESS_TEMPLATE}_args", index])))
        elif lacking:  # some items have it: those without are the mistake
            problems.append(InputError(
                suite_path, f"missing (the fitness template needs it; {len(lacking)} item(s) lack it)",
                files.json_path([lacking[0], arg])))

    where = str(task.description_file)
    try:
        scorer_class = plugins.scorers.get(task.scorer_type, where, "$.fitness_scorer.type")
    except InputError as exc:
        problems.append(exc)
    else:
        # The scorer's parameters sit under fitness_scorer in the file, so that is where errors point.
        for error in files.schema_errors(task.scorer_params, scorer_class.params_schema, where):
            problems.append(InputError(where, error.message, "$.fitness_scorer" + error.field[1:]))

    from lpb_core.operators import BASE_ARGS, operator_templates  # operators.py imports this module

    for name in operator_names:
        try:
            operator = plugins.operators.get(name, "--operators")
        except InputError as exc:
            problems.append(exc)
            continue
        allowed = BASE_ARGS | set(breeder.prompt_fields) | set(getattr(operator, "provides", ()))
        for template in (breeder.templates.get(t) for t in operator_templates(operator)):
            if template is None:
                continue  # the caller decides: a missing template disables the operator, or is an error
            for index, arg in enumerate(template.args):
                if arg not in allowed:
                    problems.append(InputError(
                        bpath, f"operator {name!r} cannot provide {arg!r}; it provides: {', '.join(sorted(allowed))}",
                        files.json_path([f"{template.name}_args", index])))
    return problems


def raise_all(problems: list[InputError]) -> None:
    if problems:
        raise InputErrors(problems)
