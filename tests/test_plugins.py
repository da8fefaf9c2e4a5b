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
    message = str(error.value)
    assert "'binary_tournament'" in message and "'lpb-selection'" in message
    assert re.search(r"CopycatPlugin|\d{6,}", message)  # pluggy names an unnamed plugin object by its id


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
    assert rows["lpb-loggers"]["registers"] == {"loggers": ["console", "wandb"]}


def test_the_core_never_imports_a_builtin_plugin():
    core = Path(hookspecs.__file__).parent
    for source in core.glob("*.py"):
        assert "lpb_plugins" not in source.read_text(), source.name


HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("lpb_")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_and_tested(hook):
    """Like datasette's: a hook without reference docs or without a test fails the suite."""
    assert getattr(hookspecs, hook).__doc__.strip()
    docs = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
    assert f"`{hook}" in docs, f"{hook} is not in docs/plugins.md"
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != "test_plugins.py")
    assert hook in tests, f"no test mentions {hook}"


def test_disabling_an_unknown_plugin_is_an_error_listing_the_installed_ones():
    with pytest.raises(UnknownNameError) as error:
        load_plugins(disabled=["lpb-selektion"])
    assert "'lpb-selektion'" in str(error.value) and "lpb-selection" in str(error.value)
