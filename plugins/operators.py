"""PromptBreeder's mutation operators (Fernando et al. 2023, section 3.2), as built-in plugins.

Each runs the breeder.lmql template of its own name; the template's upper-case variables become
the child's prompts (TASK_PROMPT -> task_prompt) or its new mutation prompt (MUTATION_PROMPT).
"""

from __future__ import annotations

from collections import Counter

from lpb_core.fitness import teaching_material
from lpb_core.hookspecs import hookimpl
from lpb_core.operators import (MUTATE, MUTATION_PROMPT_VARIABLE, POST, Mutation, MutationContext, OperatorSkipped,
                                 clean_prompt)

APPLY_TEMPLATE = "first_order_prompt_gen"  # how a (new) mutation prompt turns into task prompts


class DirectMutation:
    """Runs its own template with the base arguments only; the template's prompt variables make the child."""

    name: str
    stage = MUTATE

    async def mutate(self, ctx: MutationContext) -> Mutation:
        return Mutation(prompts=ctx.prompts_from(await ctx.query(self.name)))


class ZeroOrderPromptGen(DirectMutation):
    """A new task prompt from the problem description alone (the paper's 'list of hints', first taken)."""

    name = "zero_order_prompt_gen"


class FirstOrderPromptGen(DirectMutation):
    """The unit's mutation prompt applied to its task prompt."""

    name = "first_order_prompt_gen"


class EdaMutation:
    """A new prompt continuing a list of the population's current task prompts (deduplicated, shuffled)."""

    name = "eda_mutation"
    stage = MUTATE
    provides = ("task_prompts",)

    async def mutate(self, ctx: MutationContext) -> Mutation:
        field = ctx.prompt_fields[0]
        prompts = ctx.distinct([u.prompts[field] for u in ctx.population])
        ctx.rng.shuffle(prompts)
        return Mutation(prompts=ctx.prompts_from(
            await ctx.query(self.name, task_prompts=prompts[:ctx.num_eda_samples])))


class EdaRankIndexMutation:
    """The paper's misdirection: prompts listed by ascending fitness, but presented as descending."""

    name = "eda_rank_index_mutation"
    stage = MUTATE
    provides = ("task_prompts",)

    async def mutate(self, ctx: MutationContext) -> Mutation:
        field = ctx.prompt_fields[0]
        ranked = ctx.distinct([u.prompts[field] for u in ctx.ranked_population()])[:ctx.num_eda_samples]
        return Mutation(prompts=ctx.prompts_from(await ctx.query(self.name, task_prompts=list(reversed(ranked)))))


class LineageMutation:
    """The chronological list of elites (best unit of each generation) continued by one more."""

    name = "lineage_mutation"
    stage = MUTATE
    provides = ("elite_prompts",)

    async def mutate(self, ctx: MutationContext) -> Mutation:
        field = ctx.prompt_fields[0]
        lineage = [p[field] for p in ctx.elite_prompts if field in p]
        # Consecutive generations often share an elite; repeating it teaches the model nothing.
        lineage = [p for i, p in enumerate(lineage) if i == 0 or p != lineage[i - 1]][-ctx.num_eda_samples:]
        if not lineage:
            raise OperatorSkipped("no elites yet")
        return Mutation(prompts=ctx.prompts_from(await ctx.query(self.name, elite_prompts=lineage)))


async def _apply_new_mutation_prompt(ctx: MutationContext, variables: dict, notes: dict) -> Mutation:
    new_mutation_prompt = clean_prompt(str(variables.get(MUTATION_PROMPT_VARIABLE, "")))
    if not new_mutation_prompt:
        raise OperatorSkipped("the model wrote an empty mutation prompt")
    prompts = ctx.prompts_from(await ctx.query(APPLY_TEMPLATE, mutation_prompt=new_mutation_prompt))
    return Mutation(prompts=prompts, mutation_prompt=new_mutation_prompt, notes=notes)


class ZeroOrderHypermutation:
    """A new mutation prompt from the problem description and a thinking style, then applied."""

    name = "zero_order_hypermutation"
    stage = MUTATE
    templates = (name, APPLY_TEMPLATE)

    async def mutate(self, ctx: MutationContext) -> Mutation:
        style = ctx.rng.choice(ctx.day_care.thinking_styles)
        variables = await ctx.query(self.name, thinking_style=style)
        return await _apply_new_mutation_prompt(ctx, variables, {"thinking_style": style})


class FirstOrderHypermutation:
    """A hyper-mutation prompt improves the unit's mutation prompt, which is then applied."""

    name = "first_order_hypermutation"
    stage = MUTATE
    templates = (name, APPLY_TEMPLATE)
    provides = ("hyper_mutation_prompt",)

    async def mutate(self, ctx: MutationContext) -> Mutation:
        hyper = ctx.rng.choice(ctx.day_care.breeder.hyper_mutation_prompts)
        variables = await ctx.query(self.name, hyper_mutation_prompt=hyper)
        return await _apply_new_mutation_prompt(ctx, variables, {"hyper_mutation_prompt": hyper})


class LamarckianMutation:
    """'Working out to task prompt': a prompt written back from correct workings the unit produced."""

    name = "lamarckian_mutation"
    stage = MUTATE
    provides = ("workings",)

    async def mutate(self, ctx: MutationContext) -> Mutation:
        if not ctx.parent.workings:
            raise OperatorSkipped("the parent has no correct working yet")
        chosen = ctx.rng.sample(list(ctx.parent.workings), min(ctx.num_lamarckian_reasonings, len(ctx.parent.workings)))
        workings = [f"{w.question}\n{w.reasoning}\nAnswer: {w.answer}".replace("\n\n", "\n") for w in chosen]
        return Mutation(prompts=ctx.prompts_from(await ctx.query(self.name, workings=workings)))


class PromptCrossover:
    """After mutation, with probability 0.1, a prompt comes from another unit chosen in proportion to fitness."""

    name = "prompt_crossover"
    stage = POST
    templates = ()
    probability = 0.1

    async def mutate(self, ctx: MutationContext) -> Mutation | None:
        if ctx.rng.random() >= self.probability:
            return None
        others = [u for u in ctx.population if u.id not in ctx.parent.parents and u.id != ctx.parent.id]
        if not others:
            return None
        weights = [max(u.fitness or 0.0, 0.0) + 1e-6 for u in others]
        donor = ctx.rng.choices(others, weights=weights)[0]
        field = ctx.rng.choice(ctx.prompt_fields)
        return Mutation(prompts={field: donor.prompts[field]}, notes={"donor": donor.id})


class ContextShuffling:
    """The few-shot context evolves with the unit: correct workings are added, capped, replaced at random,
    with answers not shown yet preferred (examples that all share one answer teach a small model to give it).

    With probability 0.1 the whole context is redrawn from the population's workings (the paper's reset).
    """

    name = "context_shuffling"
    stage = POST
    templates = ()
    capacity = 3
    reset_probability = 0.1

    async def mutate(self, ctx: MutationContext) -> Mutation | None:
        pool = [w for u in ctx.population for w in u.workings]
        if not pool:
            return None
        if ctx.rng.random() < self.reset_probability:
            ctx.rng.shuffle(pool)
            return Mutation(context=teaching_material(pool, self.capacity))
        # ctx.parent is the child so far; its workings come from the unit it was copied from.
        source = next((u for u in ctx.population if u.id in ctx.parent.parents), None)
        fresh = [w for w in (source.workings if source else ()) if w not in ctx.parent.context]
        if not fresh:
            return None
        context = list(ctx.parent.context)
        # Examples that all share one answer teach a small model to give it: an answer not shown yet comes first,
        # and a full context gives up an example whose answer is shown twice.
        shown = Counter(answer_of(w) for w in context)
        new = [w for w in fresh if answer_of(w) not in shown] or fresh
        working = ctx.rng.choice(new)
        if len(context) < self.capacity:
            context.append(working)
        else:
            repeated = [i for i, w in enumerate(context) if shown[answer_of(w)] > 1] or list(range(len(context)))
            context[ctx.rng.choice(repeated)] = working
        return Mutation(context=tuple(context))


def answer_of(working) -> str:
    return " ".join(working.answer.lower().split())


@hookimpl
def lpb_register_mutation_operators(register):
    for operator in (ZeroOrderPromptGen, FirstOrderPromptGen, EdaMutation, EdaRankIndexMutation, LineageMutation,
                     ZeroOrderHypermutation, FirstOrderHypermutation, LamarckianMutation, PromptCrossover,
                     ContextShuffling):
        register(operator())
