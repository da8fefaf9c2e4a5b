"""What a mutation operator plugin receives (``MutationContext``) and returns (``Mutation``)."""

from __future__ import annotations

import json
import random
from typing import Any

import attrs

from lpb_core.daycare import DayCare, Task
from lpb_core.errors import PluginFailure
from lpb_core.llm import LanguageModel
from lpb_core.units import Unit, Working, fitness_key

# What every operator template can receive, besides the unit's prompt fields.
BASE_ARGS = frozenset({"task_description", "mutation_prompt", "thinking_style"})

MUTATE = "mutate"  # chosen as a contest's operator
POST = "post"  # applied to every child after the chosen operator (crossover, context shuffling)


class OperatorSkipped(Exception):
    """An operator cannot act on this parent (e.g. Lamarckian mutation without a correct working).

    The engine then falls back to another operator and records why.
    """


# The template variable a hyper-mutation writes its new mutation prompt into (prompt fields are written into
# their names in upper case: TASK_PROMPT -> task_prompt).
MUTATION_PROMPT_VARIABLE = "MUTATION_PROMPT"


@attrs.frozen
class Mutation:
    """An operator's result. ``None`` fields are inherited from the parent."""

    prompts: dict | None = None  # new values for some or all prompt fields
    mutation_prompt: str | None = None
    context: tuple[Working, ...] | None = None
    # JSON-ready facts worth keeping (e.g. the hyper-mutation prompt used): recorded with the child's
    # birth in generation_NNN.json, under births[].notes[<operator name>].
    notes: dict = attrs.field(factory=dict)


def mutation_problem(mutation: Mutation, prompt_fields: tuple[str, ...]) -> str | None:
    """What makes an operator's Mutation unusable (a misspelt prompt field would silently change nothing),
    or None."""
    prompts = mutation.prompts
    if prompts is not None:
        if not isinstance(prompts, dict):
            return f"returned prompts={prompts!r:.60}, not a dict of prompt field to text"
        unknown = [k for k in prompts if k not in prompt_fields]
        if unknown:
            return (f"returned prompts for {', '.join(map(repr, unknown))}, which this day care has no prompt field "
                    f"for (its prompt fields: {', '.join(prompt_fields)})")
        for field, text in prompts.items():
            if text is not None and not isinstance(text, str):
                return f"returned prompts[{field!r}] = {text!r:.60}, not a string"
    if mutation.mutation_prompt is not None and not isinstance(mutation.mutation_prompt, str):
        return f"returned mutation_prompt={mutation.mutation_prompt!r:.60}, not a string"
    context = mutation.context
    if context is not None and (not isinstance(context, (tuple, list)) or
                                not all(isinstance(w, Working) for w in context)):
        return f"returned context={context!r:.60}, not a tuple of lpb_core.units.Working"
    if not isinstance(mutation.notes, dict):
        return f"returned notes={mutation.notes!r:.60}, not a dict"
    try:
        json.dumps(mutation.notes)
    except (TypeError, ValueError) as exc:
        return f"returned notes that cannot be written as JSON ({exc})"
    return None


@attrs.frozen
class MutationContext:
    parent: Unit
    population: tuple[Unit, ...]  # as it stood when the generation began
    generation: int
    elite_prompts: tuple[dict, ...]  # prompts of the best unit of each earlier generation, oldest first
    day_care: DayCare
    task: Task
    rng: random.Random
    num_eda_samples: int
    num_lamarckian_reasonings: int
    model: LanguageModel = attrs.field(repr=False)
    similarity_filter: object = None  # the run's registered similarity filter (--similarity-filter)

    def distinct(self, prompts: list[str]) -> list[str]:
        """``prompts`` without near-duplicates, in order, by the run's similarity filter."""
        if self.similarity_filter is None:
            return list(dict.fromkeys(prompts))
        name = self.similarity_filter.name
        try:
            kept = self.similarity_filter.distinct(list(prompts))
        except Exception as exc:
            raise PluginFailure.raised("similarity filter", name, exc) from exc
        if not isinstance(kept, list) or not all(isinstance(p, str) for p in kept):
            raise PluginFailure("similarity filter", name, f"returned {kept!r:.100} instead of a list of strings")
        return kept

    @property
    def prompt_fields(self) -> tuple[str, ...]:
        return self.day_care.breeder.prompt_fields

    def has_template(self, name: str) -> bool:
        return name in self.day_care.breeder.templates

    async def query(self, template_name: str, **args: Any) -> dict:
        """Run a breeder.lmql template with the task's mutation decoder; returns its variables.

        Every template may use the parent's prompts, mutation prompt and thinking style and the
        task description (``BASE_ARGS``); ``args`` add to or override them.
        """
        template = self.day_care.breeder.templates[template_name]
        base = {"task_description": self.task.description, "mutation_prompt": self.parent.mutation_prompt,
                "thinking_style": self.parent.thinking_style, **self.parent.prompts}
        # The key comes from the child's own seeded generator, so sampled outputs are the same in every run.
        result = await self.model.run(template, {**base, **args}, self.task.decoder,
                                      sample_key=f"{self.rng.getrandbits(64):x}")
        return result.variables

    def prompts_from(self, variables: dict) -> dict:
        """Read prompt fields from a template's upper-case variables (TASK_PROMPT -> task_prompt)."""
        found = {}
        for field in self.prompt_fields:
            value = variables.get(field.upper())
            if isinstance(value, str) and value.strip():
                found[field] = clean_prompt(value)
        return found

    def ranked_population(self) -> list[Unit]:
        """Fittest first; ties keep population order."""
        return sorted(self.population, key=fitness_key, reverse=True)


def operator_templates(operator) -> tuple[str, ...]:
    """The breeder.lmql templates an operator runs (none for operators that need no model)."""
    return tuple(getattr(operator, "templates", (operator.name,)))


def clean_prompt(text: str) -> str:
    return " ".join(text.split()).strip(" \"'")
