"""Each plugin object is checked against its contract when it is registered: a broken one stops a breed
before any model is opened, naming the plugin's distribution, its entry point and what is missing."""

import json
import types

import pytest

from lpb_core.errors import InputError, PluginError
from lpb_core.hookspecs import hookimpl
from lpb_core.plugins import load_plugins
from lpb_core.run import breed
from lpb_core.settings import BreedSettings
from tests.conftest import QUICK_RUN

NO_MUTATE = """
    from lpb_core.hookspecs import hookimpl

    class NoMutate:
        name = "no_mutate"
        templates = ()

    @hookimpl
    def lpb_register_mutation_operators(register):
        register(NoMutate())
"""


@pytest.fixture
def opened(monkeypatch):
    """Every model a backend opens in this test."""
    from lpb_plugins.backends import RandomBackend

    calls = []
    original = RandomBackend.open
    monkeypatch.setattr(RandomBackend, "open", lambda self, *args: calls.append(args) or original(self, *args))
    return calls


def test_operator_without_mutate_stops_the_breed_before_any_model_is_opened(lpb, day_care, install_plugin, opened):
    install_plugin(NO_MUTATE)
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN)
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: plugin lpb-myplugins 0.1.0 (entry point myplugins = lpb_myplugins): "
                           "mutation operator 'no_mutate' (NoMutate): has no mutate method (expected async def "
                           "mutate(self, ctx))"), line
    assert opened == [] and not list((day_care / "sentiment").glob("RUN_*"))


def test_lpb_plugins_shows_a_broken_plugin_as_broken(lpb, install_plugin):
    install_plugin(NO_MUTATE)
    result = lpb("plugins")
    assert result.exit_code == 2
    assert "myplugins (lpb-myplugins 0.1.0) BROKEN" in result.output
    assert "  broken: plugin lpb-myplugins 0.1.0 (entry point myplugins = lpb_myplugins): mutation operator " \
           "'no_mutate' (NoMutate): has no mutate method" in result.output
    assert "lpb-operators (llama-day-care 0.1.0)\n" in result.output  # the others are fine

    rows = {row["name"]: row for row in json.loads(lpb("plugins", "--json").output)}
    assert rows["myplugins"]["ok"] is False and rows["myplugins"]["registers"] == {}
    assert "has no mutate method" in rows["myplugins"]["problems"][0]
    assert rows["myplugins"]["entry_point"] == "myplugins = lpb_myplugins"
    assert rows["lpb-operators"]["ok"] is True and rows["lpb-operators"]["problems"] == []


def test_validate_lists_a_broken_plugin_with_the_day_cares_problems(lpb, day_care, install_plugin):
    install_plugin(NO_MUTATE)
    task_file = day_care / "sentiment" / "task_description.json"
    task_file.write_text(task_file.read_text().replace('"labels"', '"lables"'))
    result = lpb("validate", day_care)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert any("'no_mutate' (NoMutate): has no mutate method" in line for line in lines)
    assert any("$.fitness_scorer.lables" in line for line in lines)


def test_a_plugin_that_cannot_be_imported_is_listed_as_broken(lpb, day_care, install_plugin):
    install_plugin("import lpb_no_such_module\n")
    result = lpb("plugins")
    assert result.exit_code == 2
    assert "myplugins (lpb-myplugins 0.1.0) BROKEN" in result.output
    assert "cannot be loaded: ModuleNotFoundError: No module named 'lpb_no_such_module'" in result.output
    breed = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN)
    assert breed.exit_code == 2 and "entry point myplugins = lpb_myplugins" in breed.output


def plugin(hook: str, obj) -> types.ModuleType:
    """A plugin module named broken_plugin whose ``hook`` registers ``obj``."""
    module = types.ModuleType("broken_plugin")
    setattr(module, hook, hookimpl(lambda register: register(obj)))
    return module


class SyncMutate:
    name, templates = "sync_mutate", ()

    def mutate(self, ctx):
        return None


class NoCtx:
    name = "no_ctx"

    async def mutate(self):
        return None


class FineOperator:  # registered as the class, not an instance
    name = "fine_operator"
    templates = ()

    async def mutate(self, ctx):
        return None


class BadStage(SyncMutate):
    name, stage = "bad_stage", "pre"

    async def mutate(self, ctx):
        return None


class StringTemplates(BadStage):
    name, stage, templates = "string_templates", "mutate", "rephrase"


class Nameless(BadStage):
    name, stage = None, "mutate"


class Scorer:
    name = "scorer"
    params_schema = {"type": "object"}

    def is_correct(self, answer, gold):
        return True

    def score(self, answers, golds):
        return 1.0


class BadSchema(Scorer):
    name, params_schema = "bad_schema", {"type": "objekt"}


class NoSchema(Scorer):
    name, params_schema = "no_schema", None


class Unbuildable(Scorer):
    name = "unbuildable"
    params_schema = {"type": "object", "properties": {"labels": {"type": "array"}, "beta": {"type": "number"}}}

    def __init__(self, labels):
        self.labels = labels


class NoScore:
    name, params_schema = "no_score", {}

    def is_correct(self, answer, gold):
        return True


class OneArgumentIsCorrect(Scorer):
    name = "one_argument"

    def is_correct(self, answer):
        return True


class StaticScorer(Scorer):
    name = "static"

    @staticmethod
    def score(answers, golds):
        return 1.0


class AsyncContests:
    name = "async_contests"

    async def contests(self, population, rng):
        return []


class NoContests:
    name = "no_contests"


class UnmarkedLogger:
    name = "unmarked"

    def __init__(self, settings):
        pass

    def lpb_generation_finished(self, event):
        pass


class WrongArgumentLogger(UnmarkedLogger):
    name = "wrong_argument"

    @hookimpl
    def lpb_generation_finished(self, evt):
        pass


class NoSettingsLogger:
    name = "no_settings"

    def __init__(self):
        pass


class RegisteringLogger(UnmarkedLogger):
    name = "registering"
    lpb_generation_finished = None

    @hookimpl
    def lpb_register_mutation_operators(self, register):
        pass


class NoAccepts:
    name = "no_accepts"

    def open(self, model_name, settings):
        return None


class AsyncOpen(NoAccepts):
    name = "async_open"

    def accepts(self, model_name):
        return True

    async def open(self, model_name, settings):
        return None


class NoPrompts:
    name = "no_prompts"

    def distinct(self):
        return []


CASES = [
    ("lpb_register_mutation_operators", SyncMutate(), "mutation operator 'sync_mutate' (SyncMutate): mutate must be "
                                                      "async (expected async def mutate(self, ctx))"),
    ("lpb_register_mutation_operators", NoCtx(), "mutate cannot be called as mutate(ctx)"),
    ("lpb_register_mutation_operators", FineOperator,
     "mutate cannot be called as mutate(ctx) (expected async def mutate(self, ctx)); register an instance, not the "
     "class"),
    ("lpb_register_mutation_operators", BadStage(), "stage is 'pre'; it must be 'mutate' or 'post'"),
    ("lpb_register_mutation_operators", StringTemplates(), "templates must be a tuple of names, not 'rephrase'"),
    ("lpb_register_mutation_operators", Nameless(), "registered a mutation operator without a name"),
    ("lpb_register_fitness_scorers", Scorer(), "fitness scorer 'scorer' (Scorer): is an instance of Scorer, not a class"),
    ("lpb_register_fitness_scorers", BadSchema, "params_schema['type'] is not a valid JSON Schema"),
    ("lpb_register_fitness_scorers", NoSchema, "has no params_schema"),
    ("lpb_register_fitness_scorers", NoScore, "has no score method"),
    ("lpb_register_fitness_scorers", OneArgumentIsCorrect, "is_correct cannot be called as is_correct(answer, gold) "
                                                           "(expected def is_correct(self, answer, gold))"),
    ("lpb_register_fitness_scorers", Unbuildable, "params_schema allows 'beta', which cls(**params) does not accept"),
    ("lpb_register_selection_strategies", AsyncContests(), "contests must not be async"),
    ("lpb_register_selection_strategies", NoContests(), "has no contests method (expected def contests(self, "
                                                        "population, rng))"),
    ("lpb_register_loggers", UnmarkedLogger, "lpb_generation_finished is not marked @hookimpl, so it never receives "
                                             "events"),
    ("lpb_register_loggers", WrongArgumentLogger, "lpb_generation_finished takes evt, which the hook does not pass"),
    ("lpb_register_loggers", NoSettingsLogger, "cannot be built as cls(settings)"),
    ("lpb_register_loggers", RegisteringLogger, "implements lpb_register_mutation_operators, which a logger never "
                                                "receives"),
    ("lpb_register_model_backends", NoAccepts(), "has no accepts method"),
    ("lpb_register_model_backends", AsyncOpen(), "open must not be async"),
    ("lpb_register_similarity_filters", NoPrompts(), "distinct cannot be called as distinct(prompts)"),
]


@pytest.mark.parametrize("hook, obj, missing", CASES, ids=[c[2][:40] for c in CASES])
def test_a_broken_object_is_refused_at_registration(hook, obj, missing):
    with pytest.raises(PluginError) as error:
        load_plugins(extra_plugins=[plugin(hook, obj)])
    assert str(error.value).startswith("plugin broken_plugin: ")
    assert missing in str(error.value)
    plugins = load_plugins(extra_plugins=[plugin(hook, obj)], strict=False)  # listed, but not registered
    assert plugins.manager.problems["broken_plugin"] == [str(error.value)]
    assert getattr(obj, "name", None) not in plugins.operators.names() + plugins.scorers.names()


def test_a_registration_hook_that_raises_is_its_plugins_problem():
    module = types.ModuleType("raising_plugin")

    @hookimpl
    def lpb_register_mutation_operators(register):
        raise ValueError("boom")

    module.lpb_register_mutation_operators = lpb_register_mutation_operators
    with pytest.raises(PluginError, match=r"plugin raising_plugin: lpb_register_mutation_operators raised "
                                          r"ValueError: boom \(.*test_contracts.py:\d+\)"):
        load_plugins(extra_plugins=[module])
    plugins = load_plugins(extra_plugins=[module], strict=False)
    assert "lamarckian_mutation" in plugins.operators  # the other plugins' objects are there


def test_a_hook_function_not_marked_hookimpl_is_its_plugins_problem(lpb, day_care, install_plugin):
    install_plugin("""
        def lpb_register_selection_strategies(register):
            raise AssertionError("pluggy never calls an unmarked function")
    """)
    result = lpb("plugins")
    assert result.exit_code == 2 and "myplugins (lpb-myplugins 0.1.0) BROKEN" in result.output
    assert "lpb_register_selection_strategies is not marked @hookimpl, so lpb never calls it" in result.output
    breed = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN)
    assert breed.exit_code == 2 and "is not marked @hookimpl" in breed.output


def test_a_misspelt_hook_is_its_plugins_problem():
    module = types.ModuleType("misspelt_plugin")
    module.lpb_register_operators = hookimpl(lambda register: None)
    plugins = load_plugins(extra_plugins=[module], strict=False)
    [problem] = plugins.manager.problems["misspelt_plugin"]
    assert "unknown hook 'lpb_register_operators'" in problem and "(did you mean lpb_register_mutation_operators?)" \
        in problem
    with pytest.raises(PluginError, match="lpb_register_operators"):
        load_plugins(extra_plugins=[module])


def test_a_hook_argument_the_hook_does_not_pass_is_one_line_naming_the_arguments_it_does():
    module = types.ModuleType("wrong_argument_plugin")
    module.lpb_register_mutation_operators = hookimpl(lambda registrar: None)
    [problem] = load_plugins(extra_plugins=[module], strict=False).manager.problems["wrong_argument_plugin"]
    assert "\n" not in problem
    assert problem.startswith("plugin wrong_argument_plugin: cannot be registered: PluginValidationError: ")
    assert "{'registrar'}" in problem and problem.endswith("(lpb_register_mutation_operators passes: register)")


def test_scorer_methods_may_be_plain_or_static_methods():
    for scorer in (Scorer, StaticScorer):
        plugins = load_plugins(extra_plugins=[plugin("lpb_register_fitness_scorers", scorer)])
        assert plugins.scorers.get(scorer.name) is scorer


class NeedsThreshold(Scorer):
    name = "needs_threshold"
    params_schema = {"type": "object", "properties": {"threshold": {"type": "number"}}}

    def __init__(self, threshold):
        if threshold > 1:
            raise InputError("threshold must be at most 1")
        self.threshold = threshold


@pytest.mark.parametrize("params, expected", [
    ({}, "fitness scorer 'needs_threshold' (plugin broken_plugin) cannot be built from {task}"
         " $.fitness_scorer {{}}: TypeError: "),
    ({"threshold": 2}, "{task}: $.fitness_scorer: threshold must be at most 1"),
], ids=["constructor_raises", "constructor_input_error"])
def test_the_scorer_is_built_from_the_tasks_parameters_before_any_model_is_opened(day_care, opened, params,
                                                                                   expected):
    task_file = day_care / "sentiment" / "task_description.json"
    task = json.loads(task_file.read_text())
    task["fitness_scorer"] = {"type": "needs_threshold", **params}
    task_file.write_text(json.dumps(task))
    settings = BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", loggers=())
    with pytest.raises((InputError, PluginError)) as error:
        breed(settings, extra_plugins=[plugin("lpb_register_fitness_scorers", NeedsThreshold)])
    assert str(error.value).startswith(expected.format(task=task_file)), str(error.value)
    assert opened == []


def test_a_failing_command_hook_does_not_hide_the_other_commands(install_plugin):
    import os
    import subprocess
    import sys

    site = install_plugin("""
        from lpb_core.hookspecs import hookimpl

        @hookimpl
        def lpb_register_commands(cli):
            raise RuntimeError("no click here")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "lpb_core", "--help"], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "serve" in result.stdout and "validate" in result.stdout
    assert result.stderr.startswith("Warning: plugin lpb-myplugins 0.1.0 (entry point myplugins = lpb_myplugins): "
                                    "lpb_register_commands raised RuntimeError: no click here")


def test_a_strategy_naming_an_unknown_unit_stops_the_breed_before_any_model_is_opened(lpb, day_care, install_plugin,
                                                                                       opened):
    install_plugin("""
        from lpb_core.hookspecs import hookimpl
        from lpb_core.units import Contest

        class Phantom:
            name = "phantom"

            def contests(self, population, rng):
                return [Contest(winner=population[0].id, loser="u9999")]

        @hookimpl
        def lpb_register_selection_strategies(register):
            register(Phantom())
    """)
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN, "--selection-strategy", "phantom")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: selection strategy 'phantom' (plugin lpb-myplugins 0.1.0) returned a contest whose loser 'u9999' is "
        "not a unit id of the population on a trial population of 4 units (u0000 to u0003)")
    assert opened == [] and not list((day_care / "sentiment").glob("RUN_*"))
