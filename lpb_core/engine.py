"""The PromptBreeder loop, top to bottom.

Initialise a population, then for each generation: score every unit on this generation's
minibatch, let the selection strategy pick contests, replace each loser by a mutated copy of its
winner, score the children, and write the generation down.
"""

from __future__ import annotations

import random
import time
from typing import Callable

import attrs

from lpb_core.daycare import INITIAL_TEMPLATE
from lpb_core.errors import BreedError, BudgetTooSmall, ModelError, PluginFailure
from lpb_core.events import GenerationFinished, MutationApplied, UnitEvaluated
from lpb_core.fitness import FitnessTest, Minibatch, evaluate_each
from lpb_core.llm import BudgetExhausted, LanguageModel, run_all
from lpb_core.operators import POST, Mutation, MutationContext, OperatorSkipped, clean_prompt, mutation_problem
from lpb_core.retry import CallFailed
from lpb_core.settings import BreedSettings
from lpb_core.units import (COMPLETED, SEED, TASK_DESCRIPTION, Birth, Contest, GenerationRecord, Unit, best_unit,
                            contest_problem, unit_id)

COPY = "copy"  # the operator recorded for a child left as its parent's copy because every mutation call failed


@attrs.define
class Breeder:
    settings: BreedSettings
    fitness: FitnessTest
    model: LanguageModel  # the model whose prompts are bred: it takes the fitness tests
    mutation_model: LanguageModel  # writes new prompts (the same model unless --mutation-model)
    strategy: object  # a registered selection strategy
    operators: list  # enabled operators of stage "mutate", in a fixed order
    post_operators: list  # enabled operators of stage "post", applied to every child in order
    similarity_filter: object  # a registered similarity filter, for the EDA operators
    train_indices: tuple[int, ...]
    hooks: object  # the run's event hooks (lpb_core.plugins.EventHooks)
    write: Callable[[GenerationRecord], object]  # persists a finished generation
    seeds: tuple[dict, ...] = ()  # the user's own prompts for generation 0, each {prompt field: text}
    wall_before: float = 0.0  # wall seconds of earlier sessions of a resumed run

    async def breed(self, resume_from: GenerationRecord | None) -> tuple[GenerationRecord, str]:
        """Breed until the last generation or the budget; returns the last finished generation and why it stopped."""
        started = time.perf_counter()
        record, generation = resume_from, 0
        try:
            record = record or await self.initialise(started)
            for generation in range(record.generation + 1, self.settings.evolution_generations + 1):
                record = await self.evolve(record, generation, started)
        except PluginFailure as failure:
            failure.when = failure.when or f"in generation {generation}"
            raise
        except BudgetExhausted as exhausted:
            if record is None:
                raise BudgetTooSmall(f"the budget ran out before the initial population was scored: "
                                     f"{exhausted.reason}") from None
            return record, f"budget: {exhausted.reason}"
        return record, COMPLETED

    async def initialise(self, started: float) -> GenerationRecord:
        day_care = self.fitness.day_care
        rng = self.rng("init")
        draws = [(rng.choice(day_care.mutation_prompts), rng.choice(day_care.thinking_styles))
                 for _ in range(self.settings.population_size)]
        # The user's own prompts take the first places (one candidate each), then the task description itself
        # (a fair starting prompt that a small model's first attempts often fall below); the paper's
        # initialisation fills the rest.
        given = [(prompts, SEED) for prompts in self.seeds]
        first_field = day_care.breeder.prompt_fields[0]
        if (self.settings.task_description_unit and len(given) < len(draws)
                and all(p.get(first_field) != self.fitness.task.description for p, _ in given)):
            given.append(({first_field: self.fitness.task.description}, TASK_DESCRIPTION))
        groups = []
        for number, (mutation_prompt, thinking_style) in enumerate(draws):
            prompts, origin = given[number] if number < len(given) else ({}, "initial")
            candidates = 1 if prompts else self.settings.initial_prompts_per_unit
            groups.append([(unit_id(number), mutation_prompt, thinking_style, c, prompts, origin)
                           for c in range(candidates)])
        drafts = await run_all(self.initial_candidate(*args) for group in groups for args in group)
        batch = self.minibatch(0)
        scored = iter(await self.evaluate_all(drafts, batch, 0))
        # Each unit keeps the best of its candidate prompts.
        population = [best_unit([next(scored) for _ in group]) for group in groups]
        return self.finish(0, population, batch, (), None, len(population), 0, started)

    async def evolve(self, previous: GenerationRecord, generation: int, started: float) -> GenerationRecord:
        batch = self.minibatch(generation)
        # Contestants must be compared on the same items, so units scored on another minibatch are rescored.
        population = await self.evaluate_all(list(previous.population), batch, generation)
        try:
            contests = self.strategy.contests(tuple(population), self.rng("select", generation))
        except Exception as exc:
            raise PluginFailure.raised("selection strategy", self.strategy.name, exc) from exc
        check_contests(contests, population, self.strategy)  # before anything is spent on them
        cycle = previous.operator_cycle
        chosen = []
        for k in range(len(contests)):
            if self.settings.debug_mode:  # every operator in turn, so a short run exercises them all
                chosen.append(self.operators[cycle % len(self.operators)])
                cycle += 1
            else:
                chosen.append(self.rng("operator", generation, k).choice(self.operators))
        by_id = {u.id: u for u in population}
        made = await run_all((
            self.make_child(by_id[contest.winner], unit_id(previous.next_unit_number + k), operator,
                            tuple(population), previous, generation, k)
            for k, (contest, operator) in enumerate(zip(contests, chosen))))
        children = await self.evaluate_all([child for child, *_ in made], batch, generation)
        births = []
        for contest, child, (_, applied, notes) in zip(contests, children, made):
            births.append(Birth(contest=contest, child=child.id, operator=applied[0], post_operators=applied[1:],
                                notes=notes))
            self.hooks.lpb_mutation_applied(event=MutationApplied(
                generation=generation, operator=applied[0], parent=by_id[contest.winner], child=child,
                replaced=contest.loser))
        replacement = {contest.loser: child for contest, child in zip(contests, children)}
        population = [replacement.get(u.id, u) for u in population]
        return self.finish(generation, population, batch, births, previous,
                           previous.next_unit_number + len(contests), cycle, started)

    async def make_child(self, parent: Unit, child_id: str, operator, population: tuple[Unit, ...],
                         previous: GenerationRecord, generation: int, k: int) -> tuple[Unit, tuple[str, ...], dict]:
        """A mutated copy of ``parent``; returns it, the names of the operators that acted and their notes."""
        rng = self.rng("mutate", generation, k)
        # An operator that cannot act on this parent hands over to the others, in a seeded order.
        fallbacks = [op for op in self.operators if op is not operator]
        rng.shuffle(fallbacks)
        child = attrs.evolve(parent, id=child_id, parents=(parent.id,), born=generation, fitness=None, scores={},
                             scored_on=None, workings=(), operator="")
        applied, notes, failed, skipped = [], {}, [], []
        for candidate in [operator, *fallbacks]:
            try:
                mutation = await mutate(candidate, self.context(parent, population, previous, generation, rng))
            except OperatorSkipped as exc:
                skipped.append(f"{candidate.name}: {exc}" if str(exc) else candidate.name)
                continue
            except CallFailed as exc:  # counted by the model; another operator may still get through
                failed.append(f"{candidate.name}: {exc}")
                continue
            child = apply(child, mutation, candidate.name)
            applied.append(candidate.name)
            if mutation.notes:
                notes[candidate.name] = dict(mutation.notes)
            break
        else:
            if not failed:
                raise BreedError(f"no enabled operator could mutate unit {parent.id}; each skipped it "
                                 f"({'; '.join(skipped)})")
            # every operator's call failed: the child is the parent's copy, and the birth says why
            applied.append(COPY)
            notes[COPY] = {"failed_calls": failed}
        for post in self.post_operators:
            try:
                mutation = await mutate(post, self.context(child, population, previous, generation, rng))
            except CallFailed:
                continue
            if mutation is not None:
                child = apply(child, mutation, None)
                applied.append(post.name)
                if mutation.notes:
                    notes[post.name] = dict(mutation.notes)
        return attrs.evolve(child, operator=applied[0]), tuple(applied), notes

    def context(self, parent, population, previous, generation, rng) -> MutationContext:
        return MutationContext(
            parent=parent, population=population, generation=generation, elite_prompts=previous.elite_prompts,
            day_care=self.fitness.day_care, task=self.fitness.task, rng=rng,
            num_eda_samples=self.settings.num_eda_samples,
            num_lamarckian_reasonings=self.settings.num_lamarckian_reasonings, model=self.mutation_model,
            similarity_filter=self.similarity_filter)

    async def initial_candidate(self, unit_id: str, mutation_prompt: str, thinking_style: str, candidate: int,
                                given: dict, origin: str) -> Unit:
        """The paper's initialisation: mutation prompt + thinking style + problem description -> task prompt.

        Prompt fields in ``given`` (a seed) are kept as they are; only the others are generated. ``origin``
        becomes the unit's operator: "initial", SEED or TASK_DESCRIPTION.
        """
        day_care, task = self.fitness.day_care, self.fitness.task
        prompts = dict(given)
        missing = [f for f in day_care.breeder.prompt_fields if f not in given]
        for attempt in range(3 if missing else 0):  # a small model sometimes writes nothing; a new sample helps
            try:
                variables = (await self.mutation_model.run(
                    day_care.breeder.templates[INITIAL_TEMPLATE],
                    {"mutation_prompt": mutation_prompt, "thinking_style": thinking_style,
                     "task_description": task.description, "candidate": candidate, "attempt": attempt},
                    task.decoder, sample_key=f"{self.settings.seed}:init:{unit_id}:{candidate}:{attempt}")).variables
            except CallFailed:  # counted by the model; like a blank answer
                continue
            prompts.update({f: clean_prompt(str(variables.get(f.upper(), ""))) for f in missing})
            if all(prompts.values()):
                break
        # Still blank: the task description is a sane starting prompt, and breeding moves on from it.
        prompts = {f: prompts.get(f) or task.description for f in day_care.breeder.prompt_fields}
        return Unit(id=unit_id, prompts=prompts, mutation_prompt=mutation_prompt, thinking_style=thinking_style,
                    operator=origin)

    async def evaluate_all(self, units: list[Unit], batch: Minibatch, generation: int) -> list[Unit]:
        """Score the units not yet scored on ``batch``; keeps order."""
        todo = [i for i, u in enumerate(units) if u.scored_on != batch.id]

        def tell(unit: Unit, items: int, done: int, total: int) -> None:
            self.hooks.lpb_unit_evaluated(event=UnitEvaluated(generation=generation, unit=unit, items=items,
                                                              done=done, total=total))

        results = await evaluate_each([(units[i], batch) for i in todo],
                                      lambda unit, b: self.fitness.evaluate(unit, b, self.model), tell)
        units = list(units)
        for i, scored in zip(todo, results):
            units[i] = scored
        return units

    def finish(self, generation, population, batch, births, previous, next_unit_number, cycle,
               started) -> GenerationRecord:
        best = best_unit(population)
        record = GenerationRecord(
            generation=generation, population=tuple(population), minibatch=batch.indices, births=tuple(births),
            elites=(previous.elites if previous else ()) + (best.id,),
            elite_prompts=(previous.elite_prompts if previous else ()) + (best.prompts,),
            next_unit_number=next_unit_number, operator_cycle=cycle,
            usage=self.model.meter.usage,
            wall_seconds=self.wall_before + time.perf_counter() - started)
        path = self.write(record)
        self.hooks.lpb_generation_finished(event=GenerationFinished(
            record=record, run_dir=path.parent, total_generations=self.settings.evolution_generations))
        return record

    # Every draw comes from a generator named by its purpose, so a resumed run makes exactly
    # the draws an uninterrupted one would, whatever order concurrent work finishes in.
    def rng(self, *purpose) -> random.Random:
        return random.Random(":".join(map(str, (self.settings.seed, *purpose))))

    def minibatch(self, generation: int) -> Minibatch:
        size = self.settings.fitness_batch_size
        if size <= 0 or size >= len(self.train_indices):
            return Minibatch("all", self.train_indices)
        return Minibatch(f"g{generation}", tuple(self.rng("batch", generation).sample(self.train_indices, size)))


def apply(unit: Unit, mutation: Mutation, operator: str | None) -> Unit:
    """A unit with the mutation's changes; blank prompts keep the unit's own."""
    changes = {}
    if mutation.prompts:
        changes["prompts"] = {**unit.prompts, **{k: v for k, v in mutation.prompts.items() if v and v.strip()}}
    if mutation.mutation_prompt and mutation.mutation_prompt.strip():
        changes["mutation_prompt"] = mutation.mutation_prompt.strip()
    if mutation.context is not None:
        changes["context"] = mutation.context
    if operator:
        changes["operator"] = operator
    return attrs.evolve(unit, **changes)


def check_contests(contests: list[Contest], population: list[Unit], strategy) -> None:
    problem = contest_problem(contests, population)
    if problem:
        raise PluginFailure("selection strategy", strategy.name, problem)


async def mutate(operator, ctx: MutationContext) -> Mutation | None:
    """``operator.mutate(ctx)``, its result checked. Anything it raises is reported as the operator's
    failure, except OperatorSkipped, a budget stop, a model failure and another plugin's failure."""
    try:
        mutation = await operator.mutate(ctx)
    except (OperatorSkipped, BudgetExhausted, ModelError, PluginFailure):
        raise
    except Exception as exc:
        raise PluginFailure.raised("mutation operator", operator.name, exc) from exc
    if isinstance(mutation, Mutation):
        problem = mutation_problem(mutation, ctx.prompt_fields)
        if problem:
            raise PluginFailure("mutation operator", operator.name, problem)
        return mutation
    if mutation is None and getattr(operator, "stage", None) == POST:
        return None
    raise PluginFailure("mutation operator", operator.name,
                        f"returned {mutation!r:.80} instead of a lpb_core.operators.Mutation")
