"""The data model: units of the population, contests, and generation records.

All classes are frozen; derive changed copies with ``attrs.evolve``. ``to_dict``/``from_dict`` are
the one place where they meet JSON, and they round-trip without loss.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs


SEED = "seed"  # the ``operator`` of a unit whose prompts the user supplied
TASK_DESCRIPTION = "task_description"  # the ``operator`` of the generation-0 unit whose prompt is the description
COMPLETED = "completed"  # why a run stopped (summary.json's stopped_because) when it bred every generation asked


def unit_id(number: int) -> str:
    """The id of the run's ``number``-th unit: u0000, u0001, ..."""
    return f"u{number:04d}"


def _own_dict(value: Mapping[str, Any] | None) -> dict:
    """A copy: the caller's dict, changed later, does not change the unit (frozen forbids new values, not edits
    of a dict in place: treat these dicts as read-only)."""
    return dict(value or {})


@attrs.frozen
class Working:
    """A fitness-test answer the scorer judged correct: material for Lamarckian mutation and few-shot context."""

    question: str
    reasoning: str
    answer: str

    def as_example(self) -> str:
        """As the fitness template's ``examples`` show it."""
        return f"{self.question}\n{self.reasoning}\n{self.answer}".strip()


@attrs.frozen
class Unit:
    """One member of the population: its prompts plus the mutation prompt that evolves with it."""

    id: str
    prompts: dict = attrs.field(converter=_own_dict)  # e.g. {"task_prompt": ...}, fields set by breeder.lmql
    mutation_prompt: str
    thinking_style: str = ""
    context: tuple[Working, ...] = attrs.field(default=(), converter=tuple)  # few-shot workings shown at test time
    workings: tuple[Working, ...] = attrs.field(default=(), converter=tuple)  # correct workings of its last evaluation
    fitness: float | None = None
    scores: dict = attrs.field(factory=dict, converter=_own_dict)  # per variant, e.g. {"cot": 0.5}
    scored_on: str | None = None  # which minibatch ``fitness`` was measured on
    parents: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    operator: str = "initial"
    born: int = 0  # generation number

    def to_dict(self) -> dict:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Unit":
        data = dict(data)
        for key in ("context", "workings"):
            data[key] = tuple(Working(**w) for w in data.get(key, ()))
        return cls(**data)


@attrs.frozen
class Contest:
    """One tournament: ``loser`` is replaced by a mutated copy of ``winner``."""

    winner: str
    loser: str
    competitors: tuple[str, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class Birth:
    """What a contest produced, for the record and for operator statistics."""

    contest: Contest
    child: str
    operator: str
    post_operators: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    notes: dict = attrs.field(factory=dict, converter=_own_dict)  # operator name -> its Mutation.notes


@attrs.frozen
class Usage:
    """LLM spending, accumulated over a run."""

    llm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_seconds: float = 0.0
    unreadable_answers: int = 0  # fitness answers the scorer could not read (scored as wrong)
    cost_usd: float = 0.0  # estimated, for the calls of models with known prices
    retries: int = 0  # requests sent again after a timeout, lost connection, rate limit or server error
    failed_calls: int = 0  # calls that still failed after their retries
    failed_items: int = 0  # fitness items whose call failed (scored as wrong)

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(*(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other))))

    def __sub__(self, other: "Usage") -> "Usage":
        return Usage(*(a - b for a, b in zip(attrs.astuple(self), attrs.astuple(other))))

    def to_dict(self) -> dict:
        data = attrs.asdict(self)
        data["llm_seconds"] = round(data["llm_seconds"], 3)
        data["cost_usd"] = round(data["cost_usd"], 6)
        return data


@attrs.frozen
class GenerationRecord:
    """Everything about one finished generation; enough to resume right after it."""

    generation: int
    population: tuple[Unit, ...] = attrs.field(converter=tuple)
    minibatch: tuple[int, ...] = attrs.field(converter=tuple)  # indices into the training items
    births: tuple[Birth, ...] = attrs.field(default=(), converter=tuple)
    elites: tuple[str, ...] = attrs.field(default=(), converter=tuple)  # best unit id of each generation so far
    elite_prompts: tuple[dict, ...] = attrs.field(default=(), converter=tuple)  # their prompts, for lineage
    next_unit_number: int = 0
    operator_cycle: int = 0  # position in the operator list under --debug-mode
    usage: Usage = Usage()  # totals at the end of this generation
    wall_seconds: float = 0.0  # totals at the end of this generation

    def best(self) -> Unit:
        return best_unit(self.population)

    def to_dict(self) -> dict:
        fitnesses = [u.fitness for u in self.population if u.fitness is not None]
        return {
            "generation": self.generation,
            "stats": {
                "best_fitness": max(fitnesses, default=None),
                "mean_fitness": sum(fitnesses) / len(fitnesses) if fitnesses else None,
                "best_unit": self.best().id,
            },
            "population": [u.to_dict() for u in self.population],
            "births": [attrs.asdict(b) for b in self.births],
            "minibatch": list(self.minibatch),
            "elites": list(self.elites),
            "elite_prompts": list(self.elite_prompts),
            "resume_state": {"next_unit_number": self.next_unit_number, "operator_cycle": self.operator_cycle},
            "usage": self.usage.to_dict(),
            "wall_seconds": round(self.wall_seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GenerationRecord":
        births = tuple(
            Birth(contest=Contest(**b["contest"]), child=b["child"], operator=b["operator"],
                  post_operators=b.get("post_operators", ()), notes=b.get("notes", {}))
            for b in data.get("births", ())
        )
        return cls(
            generation=data["generation"],
            population=tuple(Unit.from_dict(u) for u in data["population"]),
            minibatch=data["minibatch"],
            births=births,
            elites=data.get("elites", ()),
            elite_prompts=data.get("elite_prompts", ()),
            next_unit_number=data["resume_state"]["next_unit_number"],
            operator_cycle=data["resume_state"]["operator_cycle"],
            usage=Usage(**data.get("usage", {})),
            wall_seconds=data.get("wall_seconds", 0.0),
        )


def contest_problem(contests, population) -> str | None:
    """What makes a selection strategy's contests unusable for ``population``, or None if they are fine."""
    if not isinstance(contests, (list, tuple)):
        return f"returned {type(contests).__name__} instead of a list of Contest"
    ids, losers = {u.id for u in population}, set()
    for contest in contests:
        if not isinstance(contest, Contest):
            return f"returned {contest!r:.80} instead of a Contest"
        for role in ("winner", "loser"):
            unit_id = getattr(contest, role)
            if isinstance(unit_id, Unit):
                return f"returned a contest whose {role} is the unit {unit_id.id}, not its id (contests take unit ids)"
            if not isinstance(unit_id, str) or unit_id not in ids:
                return f"returned a contest whose {role} {unit_id!r:.40} is not a unit id of the population"
        if contest.winner == contest.loser:
            return f"returned a contest that unit {contest.winner!r} both wins and loses"
        if contest.loser in losers:
            return f"returned contests in which unit {contest.loser!r} loses twice"
        losers.add(contest.loser)
    return None


def fitness_key(unit: Unit) -> float:
    return float("-inf") if unit.fitness is None else unit.fitness


def best_unit(units) -> Unit:
    """The fittest unit; ties go to the earliest in order, so the choice is deterministic."""
    return max(units, key=fitness_key)
