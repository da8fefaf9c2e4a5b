"""An example lpb plugin: a mutation operator and a selection strategy, registered through hooks."""

from __future__ import annotations

from lpb_core.hookspecs import hookimpl
from lpb_core.operators import MUTATE, Mutation, MutationContext
from lpb_core.units import Contest


class SpliceWithBest:
    """Word-level crossover without a model call: the first half of the parent's prompt joined to the
    second half of the population's best prompt."""

    name = "splice_with_best"
    stage = MUTATE
    templates = ()  # needs no breeder.lmql template

    async def mutate(self, ctx: MutationContext) -> Mutation:
        field = ctx.prompt_fields[0]
        mine = ctx.parent.prompts[field].split()
        best = ctx.ranked_population()[0].prompts[field].split()
        cut_mine, cut_best = len(mine) // 2, len(best) // 2
        return Mutation(prompts={field: " ".join(mine[:cut_mine] + best[cut_best:])})


class FitnessProportionalTournament:
    """Random pairs, as in the binary tournament, but the fitter unit wins only with probability
    proportional to its fitness: weaker selection pressure, more diversity."""

    name = "fitness_proportional_tournament"

    def contests(self, population, rng):
        units = list(population)
        rng.shuffle(units)
        contests = []
        for a, b in zip(units[0::2], units[1::2]):
            weight_a, weight_b = (a.fitness or 0.0) + 0.05, (b.fitness or 0.0) + 0.05
            winner, loser = (a, b) if rng.random() < weight_a / (weight_a + weight_b) else (b, a)
            contests.append(Contest(winner=winner.id, loser=loser.id, competitors=(a.id, b.id)))
        return contests


@hookimpl
def lpb_register_mutation_operators(register):
    register(SpliceWithBest())


@hookimpl
def lpb_register_selection_strategies(register):
    register(FitnessProportionalTournament())
