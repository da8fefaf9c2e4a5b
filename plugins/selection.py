"""Built-in selection strategies."""

from __future__ import annotations

import random

from lpb_core.hookspecs import hookimpl
from lpb_core.units import Contest, Unit, fitness_key


def _ranked(units, rng: random.Random) -> list[Unit]:
    """Fittest first; ties broken at random (seeded), so no unit wins by its position."""
    keyed = [(fitness_key(u), rng.random(), u) for u in units]
    return [u for *_, u in sorted(keyed, key=lambda t: (t[0], t[1]), reverse=True)]


class BinaryTournament:
    """The paper's: the population in random pairs; in each pair the fitter unit wins."""

    name = "binary_tournament"

    def contests(self, population: tuple[Unit, ...], rng: random.Random) -> list[Contest]:
        shuffled = list(population)
        rng.shuffle(shuffled)
        contests = []
        for a, b in zip(shuffled[0::2], shuffled[1::2]):
            winner, loser = _ranked((a, b), rng)
            contests.append(Contest(winner=winner.id, loser=loser.id, competitors=(a.id, b.id)))
        return contests


class TournamentWithElitism:
    """k-way tournaments (k = 3) over disjoint groups; the best unit of the population is never replaced."""

    name = "tournament_elitism"
    size = 3

    def contests(self, population: tuple[Unit, ...], rng: random.Random) -> list[Contest]:
        elite = _ranked(population, rng)[0]
        shuffled = list(population)
        rng.shuffle(shuffled)
        contests = []
        for start in range(0, len(shuffled) - 1, self.size):
            group = shuffled[start:start + self.size]
            if len(group) < 2:
                break
            ranked = _ranked(group, rng)
            if ranked[-1].id == elite.id:
                continue  # only possible in a group of equals; the elite stays
            contests.append(Contest(winner=ranked[0].id, loser=ranked[-1].id, competitors=tuple(u.id for u in group)))
        return contests


@hookimpl
def lpb_register_selection_strategies(register):
    register(BinaryTournament())
    register(TournamentWithElitism())
