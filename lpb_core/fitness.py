"""Fitness evaluation: run the fitness template on suite items and let the task's scorer judge."""

from __future__ import annotations

import attrs

from lpb_core.daycare import FITNESS_TEMPLATE, DayCare, Task
from lpb_core.errors import BreedError
from lpb_core.llm import LanguageModel, run_all
from lpb_core.units import Unit, Usage, Working

MAX_WORKINGS = 5  # correct workings kept per unit; enough material for Lamarckian mutation and context


@attrs.frozen
class Minibatch:
    id: str
    indices: tuple[int, ...]


@attrs.frozen
class FitnessTest:
    """How units are scored in this run: the template, the scorer, the variants and the suite."""

    day_care: DayCare
    task: Task
    scorer: object
    suite: tuple[dict, ...]
    variants: tuple[str, ...]  # "cot" and/or "no_cot"

    def question_text(self, item: dict) -> str:
        """The item as a person would read it, without its gold label."""
        return "\n".join(f"{k}: {v}" for k, v in item.items() if not k.startswith("gold_"))

    async def evaluate(self, unit: Unit, batch: Minibatch, model: LanguageModel) -> Unit:
        template = self.day_care.breeder.templates[FITNESS_TEMPLATE]
        examples = [f"{w.question}\n{w.reasoning}\n{w.answer}".strip() for w in unit.context]

        async def answer(index: int, variant: str):
            item = self.suite[index]
            args = {**item, **unit.prompts, "CoT": variant == "cot", "task_description": self.task.description,
                    "examples": examples}
            if self.task.fixed_system_prompt is not None:
                args["system_prompt"] = self.task.fixed_system_prompt
            result = await model.run(template, args, self.task.fitness_decoder)
            if self.task.answer_variable not in result.variables:
                raise BreedError(f"{self.day_care.breeder.path}: {FITNESS_TEMPLATE} produced no "
                                 f"{self.task.answer_variable} variable (task_description.json answer_variable)")
            return index, variant, result.variables

        outcomes = await run_all(answer(i, v) for v in self.variants for i in batch.indices)
        scores, workings, unreadable = {}, [], 0
        can_read = getattr(self.scorer, "can_read", lambda answer: True)
        for variant in self.variants:
            answers, golds = [], []
            for index, v, variables in outcomes:
                if v != variant:
                    continue
                item, response = self.suite[index], str(variables[self.task.answer_variable])
                answers.append(response)
                unreadable += not can_read(response)
                golds.append(item[self.task.gold_field])
                if self.scorer.is_correct(response, item[self.task.gold_field]):
                    workings.append(Working(question=self.question_text(item),
                                            reasoning=str(variables.get(self.task.reasoning_variable, "")).strip(),
                                            answer=response.strip()))
            scores[variant] = round(float(self.scorer.score(answers, golds)), 6)
        model.usage += Usage(unreadable_answers=unreadable)
        # With both variants, a unit is as fit as the mean of the two (documented in the README).
        fitness = round(sum(scores.values()) / len(scores), 6)
        # Workings with reasoning are the better teaching material, so they come first.
        workings.sort(key=lambda w: not w.reasoning)
        return attrs.evolve(unit, fitness=fitness, scores=scores, scored_on=batch.id,
                            workings=tuple(workings[:MAX_WORKINGS]))
