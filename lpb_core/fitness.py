"""Fitness evaluation: run the fitness template on suite items and let the task's scorer judge."""

from __future__ import annotations

import itertools
import math
import numbers
import random
from typing import Callable

import attrs

from lpb_core.daycare import FITNESS_TEMPLATE, DayCare, Task
from lpb_core.errors import BreedError, PluginFailure
from lpb_core.llm import LanguageModel, run_all
from lpb_core.retry import CallFailed
from lpb_core.settings import FINALS_ITEMS, MIN_VALIDATION_ITEMS, BreedSettings
from lpb_core.units import Unit, Usage, Working

MAX_WORKINGS = 5  # correct workings kept per unit; enough material for Lamarckian mutation and context
# A suite whose gold answers take at most this many values is a labelling task, where answering one label
# every time is the baseline a prompt must beat to show the model read the items at all.
MAX_CONSTANT_LABELS = 10


@attrs.frozen
class Minibatch:
    id: str
    indices: tuple[int, ...]




@attrs.frozen
class Split:
    train: tuple[int, ...]  # minibatches are drawn from these
    validation: tuple[int, ...]  # kept back from training to choose the winner
    test: tuple[int, ...]  # held out until the very end
    finals_train: tuple[int, ...] = ()  # training items the finalists are scored on besides the validation items


def split(suite_size: int, settings: BreedSettings, held_out: int = 0) -> Split:
    """Suite indices for training, validation and the held-out test, all fixed by the seed.

    The test items are the --test-suite items, or a --test-split share of the suite; validation
    items are a --validation-split share of what is left, but at least ``MIN_VALIDATION_ITEMS`` (or half
    of what is left, if that is fewer), and at least one item stays for training. With validation items,
    a sample of the training items tops them up to ``FINALS_ITEMS`` for the final.
    """
    if held_out:
        rest, test = list(range(suite_size - held_out)), tuple(range(suite_size - held_out, suite_size))
    else:
        indices = list(range(suite_size))
        random.Random(f"{settings.seed}:split").shuffle(indices)
        n_test = min(int(round(settings.test_split * suite_size)), suite_size - 1)
        rest, test = indices[n_test:], tuple(sorted(indices[:n_test]))
    random.Random(f"{settings.seed}:validation").shuffle(rest)
    n_validation = int(round(settings.validation_split * len(rest)))
    if n_validation:
        n_validation = max(n_validation, min(MIN_VALIDATION_ITEMS, len(rest) // 2))
    n_validation = min(n_validation, len(rest) - 1)
    train, validation = rest[n_validation:], rest[:n_validation]
    finals_train = train[:max(0, FINALS_ITEMS - n_validation)] if validation else []  # in shuffled order: a sample
    return Split(train=tuple(sorted(train)), validation=tuple(sorted(validation)), test=test,
                 finals_train=tuple(sorted(finals_train)))


@attrs.frozen
class Evaluation:
    """A unit scored on a minibatch, with each item's outcome (for paired comparisons) and answer."""

    unit: Unit
    correct: dict  # variant -> tuple of bools, in the minibatch's item order
    answers: dict = attrs.field(factory=dict)  # variant -> tuple of the answers read, in the same order
    unreadable: int = 0  # answers the scorer could not read (scored as wrong)


@attrs.frozen
class ConstantAnswer:
    """The same answer to every item: the gold label that scores best that way (a majority-class baseline)."""

    answer: str
    fitness: float  # the scorer's aggregate, as a unit's fitness
    correct: tuple[bool, ...]  # per item, variant after variant, as Evaluation.correct lists them

    def to_dict(self) -> dict:
        return {"answer": self.answer, "fitness": self.fitness, "correct": list(self.correct)}


def unit_arguments(task: Task, unit: Unit, variant: str) -> dict:
    """What the fitness template receives besides the suite item's fields: the unit's prompts and few-shot
    examples, the variant, the task description and the fixed system prompt."""
    args = {**unit.prompts, "CoT": variant == "cot", "task_description": task.description,
            "examples": [w.as_example() for w in unit.context]}
    if task.fixed_system_prompt is not None:
        args["system_prompt"] = task.fixed_system_prompt
    return args


def teaching_material(workings: list[Working], limit: int) -> tuple[Working, ...]:
    """Up to ``limit`` workings, every answer given represented in turn, those with reasoning first.

    A unit that favours one answer is right mostly on items with that answer; examples that all share
    it teach a small model to give it every time, so the answers are taken in turn.
    """
    by_answer: dict[str, list[Working]] = {}
    for working in sorted(workings, key=lambda w: not w.reasoning):
        by_answer.setdefault(" ".join(working.answer.lower().split()), []).append(working)
    in_turn = [w for row in itertools.zip_longest(*by_answer.values()) for w in row if w is not None]
    return tuple(in_turn[:limit])


Progress = Callable[[Unit, int, int, int], None]  # after each evaluation: the unit scored, items, done, total


async def evaluate_each(pairs: list[tuple[Unit, Minibatch]], evaluate, progress: Progress | None) -> list:
    """``evaluate(unit, batch)`` for every pair at once, in order, telling ``progress`` as each one ends."""
    done = 0

    async def one(unit: Unit, batch: Minibatch):
        nonlocal done
        result = await evaluate(unit, batch)
        done += 1
        if progress is not None:
            progress(getattr(result, "unit", result), len(batch.indices), done, len(pairs))
        return result

    return await run_all(one(unit, batch) for unit, batch in pairs)


@attrs.frozen
class FitnessTest:
    """How units are scored in this run: the template, the scorer, the variants and the suite."""

    day_care: DayCare
    task: Task
    scorer: object
    suite: tuple[dict, ...]
    variants: tuple[str, ...]  # "cot" and/or "no_cot"

    def question_text(self, item: dict) -> str:
        """The item as the fitness template shows it, field by field: only the fields it reads, so that a suite's
        other fields (an annotator's note, an id, the gold label) never reach a few-shot example."""
        shown = self.day_care.item_fields(self.task)
        return "\n".join(f"{k}: {v}" for k, v in item.items() if k in shown)

    def constant_answer(self, indices: tuple[int, ...]) -> ConstantAnswer | None:
        """The best fixed answer on these items, scored as a unit's answers are; None unless the gold answers
        are a few labels (a numeric or free answer has no sensible constant)."""
        golds = [self.suite[i][self.task.gold_field] for i in indices]
        labels = sorted({str(gold) for gold in golds})
        # a labelling task by its whole suite: a few held-out items of a numeric task take few values too
        if not golds or len({str(item[self.task.gold_field]) for item in self.suite}) > MAX_CONSTANT_LABELS:
            return None
        best = None
        try:
            for label in labels:
                score = self.checked(self.scorer.score([label] * len(golds), golds))
                if best is None or score > best.fitness:
                    correct = tuple(bool(self.scorer.is_correct(label, gold)) for gold in golds)
                    best = ConstantAnswer(label, score, correct * len(self.variants))
        except PluginFailure:
            raise
        except Exception as exc:  # the scorer is a plugin: its failure names it
            raise PluginFailure.raised("fitness scorer", self.task.scorer_type, exc) from exc
        return best

    def checked(self, score) -> float:
        """A scorer's fitness, refused (naming the scorer) unless it is a number from 0 to 1."""
        if not isinstance(score, numbers.Real) or math.isnan(score):
            raise PluginFailure("fitness scorer", self.task.scorer_type,
                                f"score returned {score!r:.60} instead of a number")
        if not 0 <= score <= 1:
            raise PluginFailure("fitness scorer", self.task.scorer_type,
                                f"score returned {score!r:.60}, outside 0 to 1")
        return round(float(score), 6)

    async def evaluate(self, unit: Unit, batch: Minibatch, model: LanguageModel) -> Unit:
        return (await self.evaluate_items(unit, batch, model)).unit

    async def evaluate_items(self, unit: Unit, batch: Minibatch, model: LanguageModel) -> Evaluation:
        template = self.day_care.breeder.templates[FITNESS_TEMPLATE]

        async def answer(index: int, variant: str):
            args = {**self.suite[index], **unit_arguments(self.task, unit, variant)}
            try:
                result = await model.run(template, args, self.task.fitness_decoder)
            except CallFailed:  # counted by the model; the item is scored as a wrong answer
                return index, variant, None
            if self.task.answer_variable not in result.variables:
                raise BreedError(f"{self.day_care.breeder.path}: {FITNESS_TEMPLATE} produced no "
                                 f"{self.task.answer_variable} variable (task_description.json answer_variable)")
            return index, variant, result.variables

        outcomes = await run_all(answer(i, v) for v in self.variants for i in batch.indices)
        try:
            scores, correct, answers, workings, unreadable = self.judge(outcomes)
        except PluginFailure:
            raise
        except Exception as exc:  # the scorer is a plugin: its failure names it
            raise PluginFailure.raised("fitness scorer", self.task.scorer_type, exc) from exc
        failed = sum(variables is None for _, _, variables in outcomes)
        model.usage += Usage(unreadable_answers=unreadable, failed_items=failed)
        # With both variants, a unit is as fit as the mean of the two (documented in the README).
        fitness = round(sum(scores.values()) / len(scores), 6)
        scored = attrs.evolve(unit, fitness=fitness, scores=scores, scored_on=batch.id,
                              workings=teaching_material(workings, MAX_WORKINGS))
        return Evaluation(unit=scored, correct=correct, answers=answers, unreadable=unreadable)

    def judge(self, outcomes) -> tuple[dict, dict, dict, list[Working], int]:
        """The scorer's verdict on each variant's answers: scores, per-item correctness, the answers, correct
        workings and unreadable answers."""
        scores, correct, answered, workings, unreadable = {}, {}, {}, [], 0
        can_read = getattr(self.scorer, "can_read", lambda answer: True)
        for variant in self.variants:
            answers, golds, right = [], [], []
            for index, v, variables in outcomes:
                if v != variant:
                    continue
                item = self.suite[index]
                if variables is None:  # the call failed: no answer, which no scorer counts as right
                    answers.append("")
                    golds.append(item[self.task.gold_field])
                    right.append(False)
                    continue
                response = str(variables[self.task.answer_variable])
                answers.append(response)
                unreadable += not can_read(response)
                golds.append(item[self.task.gold_field])
                right.append(bool(self.scorer.is_correct(response, item[self.task.gold_field])))
                if right[-1]:
                    workings.append(Working(question=self.question_text(item),
                                            reasoning=str(variables.get(self.task.reasoning_variable, "")).strip(),
                                            answer=response.strip()))
            scores[variant] = self.checked(self.scorer.score(answers, golds))
            correct[variant] = tuple(right)
            answered[variant] = tuple(answers)
        return scores, correct, answered, workings, unreadable
