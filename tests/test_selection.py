import json
import random

import attrs

from lpb_core.hookspecs import hookimpl
from lpb_core.run import breed
from lpb_core.settings import BreedSettings
from lpb_core.units import Contest, Unit
from lpb_plugins.selection import BinaryTournament, TournamentWithElitism


def population(*fitnesses):
    return tuple(Unit(id=f"u{i}", prompts={"task_prompt": str(i)}, mutation_prompt="m", fitness=f)
                 for i, f in enumerate(fitnesses))


def test_binary_tournament_pairs_everyone_once_and_the_fitter_wins():
    units = population(0.1, 0.9, 0.5, 0.3, 0.7, 0.2)
    contests = BinaryTournament().contests(units, random.Random(1))
    assert len(contests) == 3
    assert sorted(u for c in contests for u in c.competitors) == sorted(u.id for u in units)
    fitness = {u.id: u.fitness for u in units}
    assert all(fitness[c.winner] > fitness[c.loser] for c in contests)


def test_binary_tournament_breaks_ties_at_random_not_by_position():
    units = population(0.5, 0.5)
    winners = {BinaryTournament().contests(units, random.Random(seed))[0].winner for seed in range(20)}
    assert winners == {"u0", "u1"}


def test_tournament_with_elitism_never_replaces_the_best():
    units = population(0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    for seed in range(30):
        contests = TournamentWithElitism().contests(units, random.Random(seed))
        assert "u0" not in {c.loser for c in contests}
        assert len({c.loser for c in contests}) == len(contests)
        assert all(len(c.competitors) == 3 for c in contests)


class EveryoneAgainstTheBest:
    """A strategy from a plugin: the best unit wins against everyone in the bottom half."""

    name = "best_takes_all"

    def contests(self, population, rng):
        ranked = sorted(population, key=lambda u: u.fitness, reverse=True)
        best = ranked[0]
        return [Contest(winner=best.id, loser=u.id, competitors=(best.id, u.id)) for u in ranked[len(ranked) // 2:]]


class StrategyPlugin:
    @hookimpl
    def lpb_register_selection_strategies(self, register):
        register(EveryoneAgainstTheBest())


def test_engine_replaces_each_loser_by_a_mutated_copy_of_its_winner(day_care):
    """The paper's tournament semantics, checked on the records of a run with a plugin strategy."""
    breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=6,
                        evolution_generations=2, fitness_batch_size=4, selection_strategy="best_takes_all",
                        loggers=()), extra_plugins=[StrategyPlugin()])
    run = day_care / "sentiment" / "RUN_0"
    for n in (1, 2):
        before = {u["id"]: u for u in json.loads((run / f"generation_00{n - 1}.json").read_text())["population"]}
        record = json.loads((run / f"generation_00{n}.json").read_text())
        after = {u["id"]: u for u in record["population"]}
        assert len(record["births"]) == 3
        for birth in record["births"]:
            contest, child = birth["contest"], after[birth["child"]]
            assert contest["loser"] not in after
            assert child["parents"] == [contest["winner"]] and child["born"] == n
            assert child["operator"] == birth["operator"]
            assert child["mutation_prompt"]  # inherited or evolved, never lost
        survivors = set(before) - {b["contest"]["loser"] for b in record["births"]}
        assert survivors <= set(after)


class NoContests:
    name = "no_contests"

    def contests(self, population, rng):
        return []


class NoContestsPlugin:
    @hookimpl
    def lpb_register_selection_strategies(self, register):
        register(NoContests())


def test_a_strategy_holding_no_contest_is_a_warning(day_care):
    from lpb_core.run import prepare

    settings = BreedSettings(task="sentiment", day_care_dir=day_care, selection_strategy="no_contests", loggers=())
    warnings = prepare(settings, extra_plugins=[NoContestsPlugin()]).warnings
    assert any(w.startswith("selection strategy 'no_contests' (plugin ") and "held no contest on a trial population"
               in w and "no child is ever made" in w for w in warnings), warnings
    assert not any("held no contest" in w for w in prepare(attrs.evolve(settings, selection_strategy="binary_tournament"),
                                                           extra_plugins=[NoContestsPlugin()]).warnings)
