"""Hypothesis breaks day care folders, suites and command lines at random. Every case must end the same way:
exit 2, one line naming the file and the field, no traceback, and nothing written outside a new run directory.

The cases fail before any model is opened, so each costs a few milliseconds in-process (CliRunner).
"""

import json
import re
import shutil
import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from lpb_core.cli import cli
from lpb_core.decoding import parse_decoder
from lpb_core.files import json_path
from tests.conftest import FIXTURES

# No example database: nothing is written into the repository, and CI starts from the same place each time.
FUZZ = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
RUN = ["--model-name-or-path", "random", "--task", "sentiment", "--population-size", "2",
       "--evolution-generations", "0", "--fitness-batch-size", "2"]
# Where a problem can be: a JSON path into the file, or a position in a file that does not parse.
LOCATION = r"(\$\S*|line \d+, column \d+|byte \d+)"

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
KEYS = st.text(min_size=1, max_size=12)


def garbage(original: bytes):
    """Bytes that are not a valid version of ``original``: random bytes or text, or the file cut short."""
    cut = st.integers(0, len(original.rstrip()) - 1).map(lambda n: original[:n])
    return st.binary(max_size=40) | st.text(max_size=40).map(str.encode) | cut


def snapshot(root: Path) -> dict:
    """Every file outside run directories, with its content."""
    return {p: p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not any(part.startswith("RUN_") for part in p.relative_to(root).parts)}


def run_lpb(change, *args, command="breed"):
    """Break a fresh copy of the tiny day care with ``change``, run lpb on it, check nothing else was written."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        day_care = root / "day_care"
        shutil.copytree(FIXTURES / "tiny_day_care", day_care)
        change(day_care)
        before = snapshot(root)
        runner = CliRunner()
        with runner.isolated_filesystem(temp_dir=root):  # anything written to the working directory shows too
            args = [a(day_care) if callable(a) else str(a) for a in args]
            if command == "breed":
                result = runner.invoke(cli, ["breed", "--day-care-dir", str(day_care), *RUN, *args])
            else:
                result = runner.invoke(cli, [command, str(day_care), *args])
        assert snapshot(root) == before
        return result, day_care


def assert_one_line(result, where: str, field: str | None = None) -> str:
    """Exit 2 and exactly one line, ``Error: <where>: <field or location>: ...``."""
    assert "Traceback" not in result.output
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    (line,) = lines
    assert line.startswith(f"Error: {where}: "), (where, line)
    rest = line[len(f"Error: {where}: "):]
    if field is None:
        assert re.match(LOCATION + ": ", rest), line
    else:
        assert rest.startswith(field) and rest[len(field):][:1] in (":", "[", "."), (field, line)
    return line


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    write_json(path, data)


# --- whole files replaced by garbage -------------------------------------------------------------------------

FILES = ["breeder.lmql", "mutation_prompts.json", "thinking_styles.json", "sentiment/task_description.json",
         "sentiment/fitness_test_suite.json"]


@FUZZ
@given(data=st.data(), name=st.sampled_from(FILES))
def test_a_garbled_file(data, name):
    original = (FIXTURES / "tiny_day_care" / name).read_bytes()
    content = data.draw(garbage(original))
    result, day_care = run_lpb(lambda d: (d / name).write_bytes(content))
    assert_one_line(result, str(day_care / name))


@FUZZ
@given(data=st.data(), name=st.sampled_from(FILES))
def test_lpb_validate_names_the_file_of_every_problem(data, name):
    original = (FIXTURES / "tiny_day_care" / name).read_bytes()
    content = data.draw(garbage(original))
    result, day_care = run_lpb(lambda d: (d / name).write_bytes(content), command="validate")
    assert "Traceback" not in result.output
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines and all(line.startswith(f"Error: {day_care / name}: ") for line in lines), result.output


# --- breeder.lmql ---------------------------------------------------------------------------------------------

BREEDER = FIXTURES / "tiny_day_care" / "breeder.lmql"
TEMPLATES = ["fitness_test_template", "initial_prompt_gen", "zero_order_prompt_gen", "lineage_mutation"]


def not_a_template(value) -> bool:
    return not isinstance(value, str) or not value.strip()


def not_a_list_of_names(value) -> bool:
    return not (isinstance(value, list) and all(isinstance(v, str) and re.fullmatch(r"[A-Za-z_]\w*", v)
                                                for v in value) and len(set(value)) == len(value))


def load_breeder_spec() -> dict:
    import hjson

    return json.loads(json.dumps(hjson.loads(BREEDER.read_text())))


@FUZZ
@given(data=st.data())
def test_a_broken_breeder_entry(data):
    spec = load_breeder_spec()
    kind = data.draw(st.sampled_from(["template", "args", "prompt_fields", "unknown", "orphan_args", "no_args",
                                      "removed"]))
    if kind == "template":
        key = data.draw(st.sampled_from(TEMPLATES))
        spec[key] = data.draw(JSON_VALUES.filter(not_a_template))
    elif kind == "args":
        key = data.draw(st.sampled_from(TEMPLATES)) + "_args"
        spec[key] = data.draw(JSON_VALUES.filter(not_a_list_of_names))
    elif kind == "prompt_fields":
        key = "prompt_fields"
        spec[key] = data.draw(JSON_VALUES.filter(
            lambda v: not_a_list_of_names(v) or not v or any(not re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in v)))
    elif kind == "unknown":  # a key that is neither a template nor an argument list
        key = data.draw(KEYS.filter(lambda k: not re.fullmatch(r"[A-Za-z_]\w*", k)))
        spec[key] = data.draw(JSON_VALUES)
    elif kind == "orphan_args":  # arguments for a template that is not there
        key = data.draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(lambda k: k not in spec)) + "_args"
        spec[key] = ["task_prompt"]
    elif kind == "no_args":  # a template without its argument list
        name = data.draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(lambda k: k not in spec))
        spec[name], key = '"[TASK_PROMPT]"', name + "_args"
    else:
        key = data.draw(st.sampled_from(["fitness_test_template", "fitness_test_template_args", "initial_prompt_gen",
                                         "initial_prompt_gen_args"]))
        del spec[key]
    result, day_care = run_lpb(lambda d: write_json(d / "breeder.lmql", spec))
    assert_one_line(result, str(day_care / "breeder.lmql"), json_path([key]))


# --- mutation_prompts.json and thinking_styles.json ----------------------------------------------------------

def not_a_list_of_prompts(value) -> bool:
    return (not isinstance(value, list) or not value or len({json.dumps(v) for v in value}) != len(value)
            or any(not isinstance(v, str) or not v for v in value))


@FUZZ
@given(name=st.sampled_from(["mutation_prompts.json", "thinking_styles.json"]),
       value=JSON_VALUES.filter(not_a_list_of_prompts))
def test_a_broken_prompt_list(name, value):
    result, day_care = run_lpb(lambda d: write_json(d / name, value))
    assert_one_line(result, str(day_care / name))


# --- task_description.json -----------------------------------------------------------------------------------

def not_a_decoder(text) -> bool:
    try:
        parse_decoder(text)
    except Exception:  # refused, or crashed: either way a case to try
        return True
    return False


def not_a_nonempty_string(value) -> bool:
    return not isinstance(value, str) or not value


def bad_task_fields():
    """(field, value, JSON path the error must name) for values task_description.json must not accept."""
    return st.one_of(
        st.tuples(st.just("task_description"), JSON_VALUES.filter(not_a_nonempty_string)),
        st.tuples(st.just("decoder_options"), (JSON_VALUES | st.text(max_size=30)).filter(not_a_decoder)),
        st.tuples(st.just("fitness_decoder_options"), (JSON_VALUES | st.text(max_size=30)).filter(not_a_decoder)),
        st.tuples(st.just("answer_variable"),
                  JSON_VALUES.filter(lambda v: not isinstance(v, str) or not re.fullmatch(r"[A-Z][A-Z0-9_]*", v))),
        st.tuples(st.just("fixed_system_prompt"), JSON_VALUES.filter(lambda v: v is not None and not isinstance(v, str))),
        st.tuples(st.just("fitness_test_suite"), JSON_VALUES.filter(not_a_nonempty_string) | st.text(min_size=1)),
        st.tuples(st.just("fitness_scorer"), JSON_VALUES.filter(lambda v: not isinstance(v, dict) or "type" not in v)),
        st.tuples(KEYS.filter(lambda k: k not in TASK_FIELDS), JSON_VALUES),
    ).map(lambda pair: (pair[0], pair[1], json_path([pair[0]])))


def bad_scorers():
    """Scorer settings a registered scorer must refuse; the error names the field under fitness_scorer."""
    return st.one_of(
        st.tuples(st.just({"type": "accuracy"}), st.just("labels"),
                  JSON_VALUES.filter(lambda v: not isinstance(v, list) or len(v) < 2
                                     or any(not isinstance(x, str) or not x for x in v))),
        st.tuples(st.just({"type": "binary_fbeta", "positive_label": "positive", "negative_label": "negative"}),
                  st.just("beta"), JSON_VALUES.filter(lambda v: not isinstance(v, (int, float)) or v <= 0)),
        st.tuples(st.just({"type": "regex"}), st.just("pattern"), st.text(min_size=1).filter(not_a_regex)),
        st.tuples(st.just({"type": "accuracy", "labels": ["positive", "negative"]}), KEYS.filter(lambda k: k != "labels"),
                  JSON_VALUES),
    ).map(lambda t: ({**t[0], t[1]: t[2]}, "$.fitness_scorer"))


def not_a_regex(text) -> bool:
    try:
        re.compile(text.replace("{gold}", "gold"))
    except re.error:
        return True
    return False


TASK_FIELDS = {"task_description", "fitness_scorer", "decoder_options", "fitness_decoder_options",
               "fixed_system_prompt", "answer_variable", "reasoning_variable", "fitness_test_suite"}


@FUZZ
@given(case=bad_task_fields())
def test_a_broken_task_description_field(case):
    field, value, where = case
    assume(not (field == "fitness_test_suite" and isinstance(value, str) and value == "fitness_test_suite.json"))
    result, day_care = run_lpb(lambda d: edit_json(d / "sentiment" / "task_description.json",
                                                   lambda t: t.update({field: value})))
    assert_one_line(result, str(day_care / "sentiment" / "task_description.json"), where)


@FUZZ
@given(case=bad_scorers())
def test_a_scorer_with_bad_parameters(case):
    scorer, where = case
    result, day_care = run_lpb(lambda d: edit_json(d / "sentiment" / "task_description.json",
                                                   lambda t: t.update(fitness_scorer=scorer)))
    assert_one_line(result, str(day_care / "sentiment" / "task_description.json"), where)


# --- the fitness suite ---------------------------------------------------------------------------------------

def bad_suites():
    """Suites that break the rules, with the path of the first item or field at fault."""
    item = st.fixed_dictionaries({"text": st.text(max_size=10), "gold_sentiment": st.sampled_from(["positive",
                                                                                                   "negative"])})
    good = st.lists(item, min_size=2, max_size=4)
    return st.one_of(
        JSON_VALUES.filter(lambda v: not isinstance(v, list)).map(lambda v: (v, "$")),
        item.map(lambda i: ([i], "$")),  # fewer than two items
        st.tuples(good, JSON_VALUES.filter(lambda v: not isinstance(v, dict) or not v), st.data()).map(
            lambda t: insert(t[0], t[1], t[2])),
        st.tuples(good, st.sampled_from(["text", "gold_sentiment"]),
                  JSON_VALUES.filter(lambda v: isinstance(v, (list, dict)) or v is None), st.data()).map(
            lambda t: set_field(*t)),
        st.tuples(good, st.sampled_from(["text", "gold_sentiment"]), st.data()).map(lambda t: drop_field(*t)),
    )


def insert(items, value, data):
    index = data.draw(st.integers(0, len(items)))
    return items[:index] + [value] + items[index:], f"$[{index}]"


def set_field(items, field, value, data):
    index = data.draw(st.integers(0, len(items) - 1))
    items[index][field] = value
    return items, f"$[{index}].{field}"


def drop_field(items, field, data):
    index = data.draw(st.integers(0, len(items) - 1))
    del items[index][field]
    return items, f"$[{index}].{field}"


@FUZZ
@given(case=bad_suites())
def test_a_broken_suite(case):
    suite, where = case
    result, day_care = run_lpb(lambda d: write_json(d / "sentiment" / "fitness_test_suite.json", suite))
    assert_one_line(result, str(day_care / "sentiment" / "fitness_test_suite.json"), where)


# --- command-line values -------------------------------------------------------------------------------------

NAMES = st.text(min_size=1, max_size=12)


def bad_options():
    """(arguments, the option the error must name) for values `lpb breed` must refuse."""
    def under(minimum):
        return st.integers(max_value=minimum - 1).map(str) | st.text(max_size=6).filter(lambda t: not is_int(t))

    known_models = ("random", "smollm2")
    return st.one_of(
        st.sampled_from([("--population-size", 2), ("--evolution-generations", 0), ("--fitness-batch-size", 0),
                         ("--initial-prompts-per-unit", 1), ("--num-eda-samples", 1), ("--client-batch-size", 1),
                         ("--chunk-size", 1), ("--n-threads", 1), ("--max-llm-calls", 1), ("--seed", None),
                         ("--continue-run-number", 0)]).flatmap(
            lambda o: (under(o[1]) if o[1] is not None else st.text(max_size=6).filter(lambda t: not is_int(t))).map(
                lambda v: ([o[0], v], o[0]))),
        (st.floats(allow_nan=False).filter(lambda f: not 0 <= f <= 0.9).map(str) | st.text(max_size=5).filter(
            lambda t: not is_float(t))).map(lambda v: (["--test-split", v], "--test-split")),
        st.text(max_size=30).filter(not_a_decoder).map(
            lambda v: (["--decoder-options-override", v], "--decoder-options-override")),
        st.lists(NAMES.filter(lambda n: "," not in n and n.strip()), min_size=1, max_size=3).map(
            lambda names: (["--operators", ",".join(["zero_order_prompt_gen", *names])], "--operators")),
        NAMES.map(lambda n: (["--selection-strategy", n], "--selection-strategy")),
        NAMES.map(lambda n: (["--similarity-filter", n], "--similarity-filter")),
        NAMES.map(lambda n: (["--logger", n], "--logger")),
        NAMES.map(lambda n: (["--disable-plugin", n], "--disable-plugin")),
        NAMES.filter(lambda n: n not in known_models and not n.startswith("openai/")).map(
            lambda n: (["--model-name-or-path", n], "--model-name-or-path")),
        st.sampled_from(["--fitness-test-suite", "--test-suite"]).flatmap(
            lambda o: NAMES.filter(lambda n: "\x00" not in n).map(lambda n: ([o, f"no such dir/{n}"], o))),
        st.integers(min_value=1).map(lambda n: (["--continue-run-number", str(n)], "--continue-run-number")),
        st.sampled_from(["--day-care-dir", "--task"]).map(lambda o: ([o, "no such folder"], o)),
    )


def is_int(text) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def is_float(text) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@FUZZ
@given(case=bad_options())
def test_a_bad_command_line_value(case):
    args, option = case
    assume(option != "--selection-strategy" or args[1] not in ("binary_tournament", "tournament_elitism"))
    assume(option != "--similarity-filter" or args[1] not in ("trigram_cosine", "exact"))
    assume(option != "--logger" or args[1] not in ("console", "wandb"))
    assume(option != "--disable-plugin" or not args[1].startswith("lpb-"))
    result, _ = run_lpb(lambda d: None, *args)
    assert "Traceback" not in result.output
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and option in line, (option, line)
