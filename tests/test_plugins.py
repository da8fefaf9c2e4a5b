import ast
import inspect
import re
from pathlib import Path

import pytest

from lpb_core import hookspecs
from lpb_core.errors import PluginError
from lpb_core.hookspecs import hookimpl
from lpb_core.plugins import UnknownNameError, describe, load_plugins


class Copycat:
    name = "binary_tournament"

    def contests(self, population, rng):
        return []


class CopycatPlugin:
    @hookimpl
    def lpb_register_selection_strategies(self, register):
        register(Copycat())


def test_two_plugins_registering_one_name_is_an_error_naming_both():
    with pytest.raises(PluginError) as error:
        load_plugins(extra_plugins=[CopycatPlugin()])
    assert len(error.value.errors) == 1  # one clash, raised once
    message = str(error.value)
    assert "selection strategy 'binary_tournament' is registered by two plugins" in message
    assert "llama-day-care 0.1.0 (entry point lpb-selection = " in message  # where each one comes from
    assert "--disable-plugin lpb-selection" in message and "--disable-plugin tests.test_plugins.CopycatPlugin" in message


class TwicePlugin:
    @hookimpl
    def lpb_register_selection_strategies(self, register):
        for _ in range(2):
            copy = Copycat()
            copy.name = "mine"
            register(copy)


def test_one_plugin_registering_one_name_twice_is_told_so_once():
    with pytest.raises(PluginError) as error:
        load_plugins(extra_plugins=[TwicePlugin()])
    [problem] = error.value.errors
    assert str(problem).endswith("TwicePlugin: registers selection strategy 'mine' twice; each selection strategy it "
                                 "registers needs a name of its own")


def test_plugins_listing_marks_both_plugins_of_a_clash_broken():
    rows = {row["name"]: row for row in describe(load_plugins(extra_plugins=[CopycatPlugin()], strict=False))}
    for name in ("lpb-selection", "tests.test_plugins.CopycatPlugin"):
        assert not rows[name]["ok"]
        assert rows[name]["problems"][0].startswith("selection strategy 'binary_tournament' is registered by two")
    assert rows["lpb-scorers"]["ok"]


def test_disabling_the_builtin_resolves_the_clash():
    plugins = load_plugins(disabled=["lpb-selection"], extra_plugins=[CopycatPlugin()])
    assert isinstance(plugins.selection_strategies.get("binary_tournament"), Copycat)


def test_unknown_name_lists_the_known_names():
    plugins = load_plugins()
    with pytest.raises(UnknownNameError) as error:
        plugins.scorers.get("bleu", "task_description.json", "$.fitness_scorer.type")
    message = str(error.value)
    assert message.startswith("task_description.json: $.fitness_scorer.type: unknown fitness scorer 'bleu'")
    for name in ("accuracy", "binary_fbeta", "exact_match", "numeric", "regex"):
        assert name in message


def test_each_run_gets_a_fresh_plugin_manager():
    first, second = load_plugins(extra_plugins=[]), load_plugins()
    assert first.manager is not second.manager
    first.manager.register(CopycatPlugin(), name="late")
    assert second.manager.get_plugin("late") is None


def test_describe_names_distribution_version_and_registrations():
    rows = {row["name"]: row for row in describe(load_plugins())}
    assert rows["lpb-scorers"]["version"] == "0.1.0"
    assert rows["lpb-scorers"]["hooks"] == ["lpb_register_fitness_scorers"]
    assert rows["lpb-loggers"]["registers"] == {"loggers": ["console", "events", "wandb"]}


HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("lpb_")]
TESTS = Path(__file__).parent
DOCS = TESTS.parent / "docs" / "plugins.md"
# A documented hook signature: `lpb_register_loggers(register)`, in a heading or a table.
_DOCUMENTED = re.compile(r"`(lpb_\w+)\(([^)`]*)\)`")


def names_of_tests() -> set[str]:
    names = set()
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def documented_signatures(text: str) -> dict[str, list[inspect.Signature]]:
    found: dict[str, list[inspect.Signature]] = {}
    for name, params in _DOCUMENTED.findall(text):
        namespace: dict = {}
        exec(f"def {name}({params}): pass", namespace)
        found.setdefault(name, []).append(inspect.signature(namespace[name]))
    return found


def test_hooks_are_read_from_the_hookspecs():
    assert len(HOOKS) == 12 and {"lpb_register_commands", "lpb_run_finished"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_and_tested(hook):
    """As datasette does: a test named after the hook, and docs/plugins.md showing the hookspec's signature."""
    assert f"test_hook_{hook}" in names_of_tests(), f"no test named test_hook_{hook}"
    documented = documented_signatures(DOCS.read_text()).get(hook)
    assert documented, f"docs/plugins.md does not show `{hook}(...)`"
    spec = inspect.signature(getattr(hookspecs, hook))
    assert all(signature == spec for signature in documented), (hook, documented, spec)


def test_a_misdocumented_signature_is_caught():
    documented = documented_signatures("`lpb_run_started(evt)` and `lpb_run_finished(event)`")
    assert documented["lpb_run_started"] != [inspect.signature(hookspecs.lpb_run_started)]
    assert documented["lpb_run_finished"] == [inspect.signature(hookspecs.lpb_run_finished)]


def test_disabling_an_unknown_plugin_is_an_error_listing_the_installed_ones():
    with pytest.raises(UnknownNameError) as error:
        load_plugins(disabled=["lpb-selektion"])
    assert "'lpb-selektion'" in str(error.value) and "lpb-selection" in str(error.value)


def filter_named(name):
    return type(name, (), {"name": name, "distinct": lambda self, prompts: list(prompts)})()


class Plain:
    @hookimpl
    def lpb_register_similarity_filters(self, register):
        register(filter_named("plain"))


class First:
    @hookimpl(tryfirst=True)
    def lpb_register_similarity_filters(self, register):
        register(filter_named("first"))


class Last:
    @hookimpl(trylast=True)
    def lpb_register_similarity_filters(self, register):
        register(filter_named("last"))


def test_registration_hooks_run_in_pluggys_order():
    """pluggy calls the plugin registered last first; tryfirst and trylast move an implementation."""
    names = load_plugins(extra_plugins=[Plain(), First()]).similarity_filters.names()
    assert names.index("first") < names.index("plain")
    names = load_plugins(extra_plugins=[First(), Plain()]).similarity_filters.names()
    assert names.index("first") < names.index("plain")
    names = load_plugins(extra_plugins=[Last(), Plain()]).similarity_filters.names()
    assert names[0] == "plain" and names[-1] == "last"
    names = load_plugins(extra_plugins=[Plain(), Last()]).similarity_filters.names()
    assert names[0] == "plain" and names[-1] == "last"


def test_each_name_is_attributed_to_the_plugin_that_registered_it():
    plugins = load_plugins(extra_plugins=[Plain(), First()])
    assert plugins.similarity_filters.owner("plain").name == "tests.test_plugins.Plain"
    assert plugins.similarity_filters.owner("first").name == "tests.test_plugins.First"
    owner = plugins.similarity_filters.owner("trigram_cosine")
    assert (owner.name, owner.distribution, owner.entry_point) == \
        ("lpb-similarity", "llama-day-care", "lpb-similarity = lpb_plugins.similarity")


class Wrapper:
    def __init__(self):
        self.seen = []

    @hookimpl(wrapper=True)
    def lpb_register_similarity_filters(self, register):
        self.seen.append("before")
        register(filter_named("from_the_wrapper"))
        result = yield
        self.seen.append("after")
        return result


class OldStyleWrapper:
    def __init__(self):
        self.outcomes = []

    @hookimpl(hookwrapper=True)
    def lpb_register_mutation_operators(self, register):
        outcome = yield
        self.outcomes.append(outcome.exception)


def test_a_hook_wrapper_sees_the_registration_call():
    wrapper, old_style = Wrapper(), OldStyleWrapper()
    plugins = load_plugins(extra_plugins=[wrapper, old_style])
    assert wrapper.seen == ["before", "after"] and old_style.outcomes == [None]
    assert plugins.similarity_filters.owner("from_the_wrapper").name == "tests.test_plugins.Wrapper"
    assert {"trigram_cosine", "from_the_wrapper"} <= set(plugins.similarity_filters.names())


class Failing:
    def __init__(self, fail):
        self.fail = fail

    @hookimpl
    def lpb_run_finished(self, event):
        if self.fail:
            raise ValueError(f"failing {event}")


def test_an_event_hook_failure_names_the_plugin_whose_code_raised():
    from lpb_core.errors import PluginFailure

    quiet, loud = Failing(False), Failing(True)  # one class, two plugins: told apart by `self`
    plugins = load_plugins(extra_plugins=[loud, quiet])
    with pytest.raises(PluginFailure) as failure:
        plugins.events().lpb_run_finished(event="done")
    assert failure.value.name == plugins.manager.get_name(loud) == "tests.test_plugins.Failing"
    assert str(failure.value) == "plugin 'tests.test_plugins.Failing', in lpb_run_finished, raised ValueError: " \
                                 "failing done"
    assert isinstance(failure.value.__cause__, ValueError)


def test_an_event_hook_failure_outside_any_plugin_is_raised_as_it_is():
    import pluggy

    plugins = load_plugins(extra_plugins=[Failing(True)])
    with pytest.warns(UserWarning), pytest.raises(pluggy.HookCallError) as error:
        plugins.events().lpb_run_finished()  # no event: pluggy itself refuses the call
    assert error.value.__cause__ is not error.value
