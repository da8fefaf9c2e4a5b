"""A plugin method that raises while breeding stops the run with one line naming the object, its plugin,
the exception and the generation, and the exact command that resumes the run (exit code 1)."""

import json
import shlex
import sys

import pytest

from lpb_core.cli_breed import resume_command, settings_from_options
from lpb_core.errors import PluginError, RunFailed
from lpb_core.hookspecs import hookimpl
from lpb_core.operators import Mutation
from lpb_core.run import breed
from lpb_core.settings import BreedSettings
from lpb_core.units import Contest
from tests.conftest import SMALL_RUN

EXPLODING_OPERATOR = """
    from lpb_core.hookspecs import hookimpl
    from lpb_core.operators import Mutation

    EXPLODE = True

    class ExplodeOp:
        name = "explode_op"
        templates = ()

        async def mutate(self, ctx):
            if EXPLODE and ctx.generation == 2:
                return {}["no_such_key"]
            return Mutation(prompts={"task_prompt": ctx.parent.prompts["task_prompt"] + " Please."})

    @hookimpl
    def lpb_register_mutation_operators(register):
        register(ExplodeOp())
"""


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_operator_raising_names_operator_plugin_exception_generation_and_resume(lpb, day_care, install_plugin):
    install_plugin(EXPLODING_OPERATOR)
    result = lpb("breed", "--day-care-dir", day_care, *SMALL_RUN, "--operators", "explode_op")
    assert result.exit_code == 1, result.output
    line = one_error_line(result)
    prefix = ("Error: mutation operator 'explode_op' (plugin lpb-myplugins 0.1.0) raised KeyError: 'no_such_key' "
              "in generation 2; the run is saved: resume with ")
    assert line.startswith(prefix), line
    assert "Traceback" not in result.output
    run = day_care / "sentiment" / "RUN_0"
    assert (run / "generation_001.json").exists() and not (run / "generation_002.json").exists()

    # The command resumes the run exactly, once the plugin is fixed.
    command = shlex.split(line[len(prefix):])
    assert command[:2] == ["lpb", "breed"] and command[-2:] == ["--continue-run-number", "0"]
    sys.modules["lpb_myplugins"].EXPLODE = False
    resumed = lpb(*command[1:])
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming" in resumed.output and (run / "generation_002.json").exists()
    assert json.loads((run / "summary.json").read_text())["generations_completed"] == 2


def test_verbose_adds_the_plugins_traceback(lpb, day_care, install_plugin):
    install_plugin(EXPLODING_OPERATOR)
    result = lpb("breed", "--day-care-dir", day_care, *SMALL_RUN, "--operators", "explode_op", "--verbose")
    assert result.exit_code == 1
    assert "Traceback" in result.output and 'return {}["no_such_key"]' in result.output
    assert "--verbose" in one_error_line(result)  # the resume command keeps it


def settings(day_care, **changes):
    base = dict(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=2,
                evolution_generations=2, fitness_batch_size=2, loggers=(), operators=["append_please"])
    return BreedSettings(**{**base, **changes})


class AppendPlease:
    name = "append_please"
    templates = ()
    generations = []

    async def mutate(self, ctx):
        self.generations.append(ctx.generation)
        return Mutation(prompts={"task_prompt": ctx.parent.prompts["task_prompt"] + " Please."})


class Plugin:
    """Registers AppendPlease and whatever objects it is given."""

    def __init__(self, **objects):
        self.objects = objects

    @hookimpl
    def lpb_register_mutation_operators(self, register):
        register(AppendPlease())

    @hookimpl
    def lpb_register_selection_strategies(self, register):
        for strategy in self.objects.get("strategies", ()):
            register(strategy)

    @hookimpl
    def lpb_register_fitness_scorers(self, register):
        for scorer in self.objects.get("scorers", ()):
            register(scorer)

    @hookimpl
    def lpb_register_similarity_filters(self, register):
        for similarity_filter in self.objects.get("filters", ()):
            register(similarity_filter)

    @hookimpl
    def lpb_register_loggers(self, register):
        for logger in self.objects.get("loggers", ()):
            register(logger)

    @hookimpl
    def lpb_register_model_backends(self, register):
        for backend in self.objects.get("backends", ()):
            register(backend)


class UnknownLoser:
    """Well-behaved on the trial population and in generation 1; then names a unit that does not exist."""

    name = "unknown_loser"

    def __init__(self):
        self.calls = 0

    def contests(self, population, rng):
        self.calls += 1
        loser = "u9999" if self.calls == 3 else population[1].id
        return [Contest(winner=population[0].id, loser=loser)]


def test_strategy_returning_an_unknown_unit_is_caught_before_anything_is_spent(day_care):
    AppendPlease.generations.clear()
    with pytest.raises(RunFailed) as failed:
        breed(settings(day_care, selection_strategy="unknown_loser"), extra_plugins=[Plugin(strategies=[UnknownLoser()])])
    assert failed.value.reason == ("selection strategy 'unknown_loser' (plugin tests.test_plugin_failures.Plugin) "
                                   "returned a contest whose loser 'u9999' is not a unit id of the population in "
                                   "generation 2")
    assert AppendPlease.generations == [1]  # no child was made for generation 2's contests
    assert failed.value.run_number == 0


class ReturnsUnits:
    name = "returns_units"

    def contests(self, population, rng):
        return [Contest(winner=population[0], loser=population[1])]


def test_strategy_returning_units_instead_of_ids_is_refused_before_any_model_is_opened(lpb, day_care):
    with pytest.raises(PluginError) as error:
        breed(settings(day_care, selection_strategy="returns_units"), extra_plugins=[Plugin(strategies=[ReturnsUnits()])])
    assert "selection strategy 'returns_units' (plugin tests.test_plugin_failures.Plugin) returned a contest whose " \
           "winner is the unit u0000, not its id" in str(error.value)
    assert "(contests take unit ids) on a trial population of 2 units (u0000 to u0001)" in str(error.value)
    assert not list((day_care / "sentiment").glob("RUN_*"))


class DividingScorer:
    name = "dividing"
    params_schema = {"type": "object"}

    def is_correct(self, answer, gold):
        return 1 / 0

    def score(self, answers, golds):
        return 0.0


class LateScorer(DividingScorer):
    """Scores minibatches of 2; fails on anything longer: the final's and the held-out test's item sets."""
    name = "late"

    def is_correct(self, answer, gold):
        return True

    def score(self, answers, golds):
        if len(answers) > 2:
            raise ValueError("too many answers")
        return 0.5


class WordyScorer(DividingScorer):
    name = "wordy"

    def is_correct(self, answer, gold):
        return True

    def score(self, answers, golds):
        return "high"


class OutOfRangeScorer(WordyScorer):
    name = "out_of_range"

    def score(self, answers, golds):
        return 5.0


class RaisingFilter:
    name = "raising_filter"

    def distinct(self, prompts):
        raise RuntimeError("no embeddings")


class RaisingLogger:
    name = "raising_logger"

    def __init__(self, settings):
        pass

    @hookimpl
    def lpb_generation_finished(self, event):
        if event.record.generation == 1:
            raise ValueError("disk full")


class RaisingBackend:
    name = "raising_backend"

    def accepts(self, model_name):
        return model_name == "raising"

    def open(self, model_name, settings):
        raise ConnectionError("no server at localhost:1")


@pytest.mark.parametrize("changes, objects, expected", [
    (dict(task_scorer="dividing"), dict(scorers=[DividingScorer]),
     "fitness scorer 'dividing' (plugin tests.test_plugin_failures.Plugin) raised ZeroDivisionError: division by zero "
     "in generation 0"),
    (dict(operators=["eda_mutation"], similarity_filter="raising_filter"), dict(filters=[RaisingFilter()]),
     "similarity filter 'raising_filter' (plugin tests.test_plugin_failures.Plugin) raised RuntimeError: no "
     "embeddings in generation 1"),
    (dict(loggers=["raising_logger"]), dict(loggers=[RaisingLogger]),
     "logger 'raising_logger' (plugin tests.test_plugin_failures.Plugin), in lpb_generation_finished, raised "
     "ValueError: disk full in generation 1"),
    (dict(task_scorer="wordy"), dict(scorers=[WordyScorer]),
     "fitness scorer 'wordy' (plugin tests.test_plugin_failures.Plugin) score returned 'high' instead of a number "
     "in generation 0"),
    (dict(task_scorer="out_of_range"), dict(scorers=[OutOfRangeScorer]),
     "fitness scorer 'out_of_range' (plugin tests.test_plugin_failures.Plugin) score returned 5.0, outside 0 to 1 "
     "in generation 0"),
    (dict(task_scorer="late"), dict(scorers=[LateScorer]),
     "fitness scorer 'late' (plugin tests.test_plugin_failures.Plugin) raised ValueError: too many answers while "
     "choosing the winner among the last generation's fittest"),
    (dict(task_scorer="late", validation_split=0, test_split=0.5), dict(scorers=[LateScorer]),
     "fitness scorer 'late' (plugin tests.test_plugin_failures.Plugin) raised ValueError: too many answers while "
     "scoring the winner on the held-out items"),
], ids=["scorer", "similarity_filter", "logger", "scorer_result", "scorer_range", "scorer_final", "scorer_held_out"])
def test_a_plugin_method_that_raises_is_named(day_care, changes, objects, expected):
    if "task_scorer" in changes:
        task_file = day_care / "sentiment" / "task_description.json"
        task = json.loads(task_file.read_text())
        task["fitness_scorer"] = {"type": changes.pop("task_scorer")}
        task_file.write_text(json.dumps(task))
    with pytest.raises(RunFailed) as failed:
        breed(settings(day_care, **changes), extra_plugins=[Plugin(**objects)])
    assert failed.value.reason == expected
    assert str(failed.value).endswith(f"; finished generations are saved in {day_care / 'sentiment' / 'RUN_0'}")


def test_a_raising_logger_costs_no_other_logger_the_event(day_care):
    with pytest.raises(RunFailed):
        breed(settings(day_care, loggers=["events", "raising_logger"]), extra_plugins=[Plugin(loggers=[RaisingLogger])])
    lines = (day_care / "sentiment" / "RUN_0" / "events.jsonl").read_text().splitlines()
    finished = [json.loads(line)["generation"] for line in lines if '"generation_finished"' in line]
    assert finished == [0, 1]  # the built-in events logger recorded the generation the other one failed on


def test_a_logger_failing_at_the_end_does_not_offer_to_resume_a_finished_run(lpb, day_care, install_plugin):
    install_plugin("""
        from lpb_core.hookspecs import hookimpl

        class AtTheEnd:
            name = "at_the_end"

            def __init__(self, settings):
                pass

            @hookimpl
            def lpb_run_finished(self, event):
                raise OSError("no space left")

        @hookimpl
        def lpb_register_loggers(register):
            register(AtTheEnd)
    """)
    result = lpb("breed", "--day-care-dir", day_care, *SMALL_RUN, "--logger", "at_the_end")
    assert result.exit_code == 1
    run_dir = day_care / "sentiment" / "RUN_0"
    assert one_error_line(result).endswith(
        f"in lpb_run_finished, raised OSError: no space left; the run itself finished: {run_dir}")
    assert (run_dir / "summary.json").is_file() and '"run_finished"' in (run_dir / "events.jsonl").read_text()


def test_a_backend_that_raises_while_opening_is_named(lpb, day_care):
    with pytest.raises(Exception) as failed:
        breed(settings(day_care, model_name_or_path="raising"), extra_plugins=[Plugin(backends=[RaisingBackend()])])
    assert str(failed.value) == ("model backend 'raising_backend' (plugin tests.test_plugin_failures.Plugin) raised "
                                 "ConnectionError: no server at localhost:1 while opening the model")
    assert not list((day_care / "sentiment").glob("RUN_*"))  # nothing to resume


class WrongResult:
    name = "wrong_result"
    templates = ()

    async def mutate(self, ctx):
        return "a better prompt"


def test_an_operator_returning_something_else_than_a_mutation_is_named(day_care):
    class WrongPlugin:
        @hookimpl
        def lpb_register_mutation_operators(self, register):
            register(WrongResult())

    with pytest.raises(RunFailed) as failed:
        breed(settings(day_care, operators=["wrong_result"]), extra_plugins=[WrongPlugin()])
    assert failed.value.reason.startswith("mutation operator 'wrong_result' (plugin ")
    assert failed.value.reason.endswith(") returned 'a better prompt' instead of a lpb_core.operators.Mutation in "
                                        "generation 1")


class AlwaysSkips:
    name = "always_skips"
    templates = ()

    async def mutate(self, ctx):
        from lpb_core.operators import OperatorSkipped

        raise OperatorSkipped("needs a correct working")


def test_operators_that_all_skip_a_parent_say_why(day_care):
    class SkipPlugin:
        @hookimpl
        def lpb_register_mutation_operators(self, register):
            register(AlwaysSkips())

    with pytest.raises(RunFailed) as failed:
        breed(settings(day_care, operators=["always_skips"]), extra_plugins=[SkipPlugin()])
    assert "could mutate unit u0000; each skipped it (always_skips: needs a correct working)" in failed.value.reason


class ReturnsThis:
    name = "returns_this"
    templates = ()

    def __init__(self, mutation):
        self.mutation = mutation

    async def mutate(self, ctx):
        return self.mutation


@pytest.mark.parametrize("mutation, problem", [
    (Mutation(prompts={"taskprompt": "Be brief."}), "returned prompts for 'taskprompt', which this day care has no "
                                                    "prompt field for (its prompt fields: task_prompt)"),
    (Mutation(prompts={"task_prompt": 42}), "returned prompts['task_prompt'] = 42, not a string"),
    (Mutation(prompts="Be brief."), "returned prompts='Be brief.', not a dict of prompt field to text"),
    (Mutation(context=("a worked example",)), "returned context=('a worked example',), not a tuple of "
                                              "lpb_core.units.Working"),
    (Mutation(prompts={"task_prompt": "Be brief."}, notes={"seen": object()}),
     "returned notes that cannot be written as JSON (Object of type object is not JSON serializable)"),
])
def test_an_operators_unusable_mutation_is_named_with_what_is_wrong(day_care, mutation, problem):
    class Plugin:
        @hookimpl
        def lpb_register_mutation_operators(self, register):
            register(ReturnsThis(mutation))

    with pytest.raises(RunFailed) as failed:
        breed(settings(day_care, operators=["returns_this"]), extra_plugins=[Plugin()])
    assert failed.value.reason.startswith("mutation operator 'returns_this' (plugin ")
    assert failed.value.reason.endswith(f") {problem} in generation 1")


def test_a_loggers_input_error_with_only_a_message_names_the_logger(lpb, day_care, install_plugin):
    install_plugin("""
        from lpb_core.errors import InputError
        from lpb_core.hookspecs import hookimpl

        class Picky:
            name = "picky"

            def __init__(self, settings):
                raise InputError("set PICKY_TOKEN first")

        @hookimpl
        def lpb_register_loggers(register):
            register(Picky)
    """)
    result = lpb("breed", "--day-care-dir", day_care, *SMALL_RUN, "--logger", "picky")
    assert result.exit_code == 2
    assert result.output.strip() == "Error: logger 'picky' (plugin lpb-myplugins 0.1.0): set PICKY_TOKEN first"
    assert not list((day_care / "sentiment").glob("RUN_*"))


def test_the_resume_command_gives_back_the_same_settings(day_care):
    settings = BreedSettings(
        task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=6, seed=3,
        operators=("a", "b"), disabled_plugins=("lpb-loggers",), loggers=("console", "events", "wandb"), test_cot=True,
        test_no_cot=True, endpoints=("h1:1", "h2:2"), cache=False, max_cost=0.5, fitness_test_suite="suite.json",
        verbose=True, continue_run_number=4, decoder_options_override="sample(temperature=0.5)", n_threads=2,
        initial_prompts=("Say 'positive' or 'negative'.", "Classify it."), mutation_model="openai/gpt-4o",
        validation_split=0.0, finalists=2)
    command = shlex.split(resume_command(settings))
    assert command[:2] == ["lpb", "breed"]
    from lpb_core.cli_breed import breed as breed_command

    context = breed_command.make_context("breed", command[2:])
    assert settings_from_options(**context.params) == settings
