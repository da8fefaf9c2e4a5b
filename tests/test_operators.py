"""Every built-in operator on LMQL's random model: valid children, recorded lineage, evolving mutation
prompts, Lamarckian write-back, crossover and few-shot context."""

import asyncio
import json
import random

import pytest

from lpb_core.daycare import load_day_care
from lpb_core.engine import apply
from lpb_core.hookspecs import hookimpl
from lpb_core.llm import LanguageModel
from lpb_core.operators import Mutation, MutationContext, OperatorSkipped
from lpb_core.plugins import load_plugins
from lpb_core.run import breed
from lpb_core.settings import BreedSettings
from lpb_core.units import Unit, Working

MUTATING = ["zero_order_prompt_gen", "first_order_prompt_gen", "eda_mutation", "eda_rank_index_mutation",
            "lineage_mutation", "zero_order_hypermutation", "first_order_hypermutation", "lamarckian_mutation"]
WORKING = Working(question="text: Loved it.", reasoning="The writer loved it.", answer="positive")


@pytest.fixture
def seen(monkeypatch):
    """The arguments of the last model query made, updated as queries run."""
    last = {}
    original = LanguageModel.run

    async def spy(self, template, args, decoder, **options):
        last.update(args)
        return await original(self, template, args, decoder, **options)

    monkeypatch.setattr(LanguageModel, "run", spy)
    return last


def population():
    return tuple(
        Unit(id=f"u{i}", prompts={"task_prompt": prompt}, mutation_prompt=f"Rewrite it, variant {i}.",
             thinking_style="Think step by step.", fitness=fitness, workings=(WORKING,) if i == 0 else ())
        for i, (prompt, fitness) in enumerate([("Is this review positive or negative?", 0.8),
                                               ("Classify the sentiment.", 0.4),
                                               ("Classify the sentiment!", 0.3),
                                               ("What does the writer feel?", 0.6)]))


def run_operator(day_care, name, parent_index=0, seed=0, units=None):
    plugins = load_plugins()
    operator = plugins.operators.get(name)
    loaded = load_day_care(day_care)
    units = units or population()

    async def go():
        handle = plugins.backends.get("random").open("random", BreedSettings(task="sentiment", day_care_dir=day_care))
        model = LanguageModel(handle)
        try:
            ctx = MutationContext(parent=units[parent_index], population=units, generation=1,
                                  elite_prompts=({"task_prompt": "Say positive or negative."},), day_care=loaded,
                                  task=loaded.task("sentiment"), rng=random.Random(seed), num_eda_samples=3,
                                  num_lamarckian_reasonings=1, model=model)
            return await operator.mutate(ctx), model.usage.llm_calls
        finally:
            await model.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("name", MUTATING)
def test_each_mutating_operator_makes_a_new_task_prompt(day_care, name):
    mutation, calls = run_operator(day_care, name)
    assert isinstance(mutation, Mutation)
    assert mutation.prompts["task_prompt"].strip()
    assert mutation.prompts["task_prompt"] not in [u.prompts["task_prompt"] for u in population()]
    assert calls == (2 if "hypermutation" in name else 1)


@pytest.mark.parametrize("name", ["zero_order_hypermutation", "first_order_hypermutation"])
def test_hypermutation_evolves_the_mutation_prompt(day_care, name):
    mutation, _ = run_operator(day_care, name)
    assert mutation.mutation_prompt and mutation.mutation_prompt != population()[0].mutation_prompt
    child = apply(population()[0], mutation, name)
    assert child.mutation_prompt == mutation.mutation_prompt


def test_lamarckian_needs_a_correct_working(day_care):
    with pytest.raises(OperatorSkipped):
        run_operator(day_care, "lamarckian_mutation", parent_index=1)


def test_lamarckian_prompt_is_written_from_the_working(day_care, seen):
    run_operator(day_care, "lamarckian_mutation", parent_index=0)
    assert seen["workings"] == ["text: Loved it.\nThe writer loved it.\nAnswer: positive"]


def test_eda_rank_index_lists_ascending_fitness(day_care, seen):
    run_operator(day_care, "eda_rank_index_mutation")
    # best three of four, worst first; the near-duplicate "Classify the sentiment!" is filtered out
    assert seen["task_prompts"] == ["Classify the sentiment.", "What does the writer feel?",
                                    "Is this review positive or negative?"]


def test_crossover_takes_a_prompt_from_another_unit(day_care):
    seed = next(s for s in range(100) if random.Random(s).random() < 0.1)
    mutation, calls = run_operator(day_care, "prompt_crossover", seed=seed)
    assert calls == 0
    assert mutation.prompts["task_prompt"] in [u.prompts["task_prompt"] for u in population()[1:]]
    assert mutation.notes["donor"] != "u0"
    no_seed = next(s for s in range(100) if random.Random(s).random() >= 0.1)
    assert run_operator(day_care, "prompt_crossover", seed=no_seed)[0] is None


def test_context_shuffling_adds_a_correct_working(day_care):
    units = population()
    child = Unit(id="u9", prompts={"task_prompt": "x"}, mutation_prompt="m", parents=("u0",))
    seed = next(s for s in range(100) if random.Random(s).random() >= 0.1)
    mutation, _ = run_operator(day_care, "context_shuffling", parent_index=4, seed=seed, units=units + (child,))
    assert mutation.context == (WORKING,)


def test_context_shuffling_shows_an_answer_not_shown_yet(day_care):
    """A full context of three 'positive' examples gives one up for a 'negative' one the parent got right."""
    positive = [Working(question=f"text: Good {n}.", reasoning="", answer="positive") for n in range(5)]
    negative = Working(question="text: Awful.", reasoning="", answer="negative")
    parent = Unit(id="u0", prompts={"task_prompt": "p"}, mutation_prompt="m",
                  workings=(positive[3], negative, positive[4]))
    child = Unit(id="u9", prompts={"task_prompt": "x"}, mutation_prompt="m", parents=("u0",), context=positive[:3])
    others = tuple(Unit(id=f"u{n}", prompts={"task_prompt": "q"}, mutation_prompt="m") for n in range(1, 4))
    for seed in [s for s in range(100) if random.Random(s).random() >= 0.1][:5]:
        mutation, _ = run_operator(day_care, "context_shuffling", parent_index=4, seed=seed,
                                   units=(parent, *others, child))
        assert negative in mutation.context and len(mutation.context) == 3
        assert sum(w.answer == "positive" for w in mutation.context) == 2


def test_workings_kept_for_teaching_take_every_answer_in_turn():
    from lpb_core.fitness import teaching_material

    workings = [Working(question=f"q{n}", reasoning="", answer="positive") for n in range(4)]
    workings += [Working(question="q4", reasoning="", answer=" Negative "),
                 Working(question="q5", reasoning="because", answer="positive")]
    kept = teaching_material(workings, 3)
    assert [w.question for w in kept] == ["q5", "q4", "q0"]  # reasoning first, then the answers in turn
    assert teaching_material(workings, 10) == tuple(kept) + tuple(workings[1:4])


def test_debug_run_uses_every_operator_and_records_lineage(day_care):
    breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=8,
                        evolution_generations=3, fitness_batch_size=4, debug_mode=True, loggers=(), seed=2))
    folder = day_care / "sentiment" / "DEBUG"
    records = [json.loads((folder / f"generation_00{n}.json").read_text()) for n in range(4)]
    births = [b for r in records for b in r["births"]]
    assert {b["operator"] for b in births} >= set(MUTATING) - {"lamarckian_mutation"}
    units = {u["id"]: u for r in records for u in r["population"]}
    for birth in births:
        child = units[birth["child"]]
        assert child["parents"] == [birth["contest"]["winner"]] and child["operator"] == birth["operator"]
    # An evolved mutation prompt is part of the child, and its own children inherit it.
    hyper_children = [units[b["child"]] for b in births if "hypermutation" in b["operator"]]
    assert hyper_children
    for child in hyper_children:
        assert child["mutation_prompt"] != units[child["parents"][0]]["mutation_prompt"]
    inherited = [u for u in units.values() if u["parents"] and u["parents"][0] in {c["id"] for c in hyper_children}
                 and "hypermutation" not in u["operator"]]
    for grandchild in inherited:
        assert grandchild["mutation_prompt"] == units[grandchild["parents"][0]]["mutation_prompt"]
    # Correct workings are recorded during evaluation, so context shuffling has material.
    assert any(u["workings"] for u in units.values())
    summary = json.loads((folder / "summary.json").read_text())
    assert sum(s["children"] for s in summary["operator_statistics"].values()) == len(births)


def test_context_changes_over_generations(day_care):
    breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=6,
                        evolution_generations=4, fitness_batch_size=4, loggers=(), seed=1,
                        operators=("first_order_prompt_gen", "context_shuffling")))
    run = day_care / "sentiment" / "RUN_0"
    contexts = [[tuple(map(json.dumps, u["context"])) for u in json.loads(p.read_text())["population"]]
                for p in sorted(run.glob("generation_*.json"))]
    assert not any(any(c) for c in contexts[0])  # nobody starts with a context
    assert any(any(c) for c in contexts[-1])
    assert len({tuple(c) for c in contexts}) > 2


def test_similarity_filters_drop_near_duplicates_in_order():
    from lpb_plugins.similarity import ExactDuplicateFilter, TrigramCosineFilter

    prompts = ["Classify the sentiment.", "classify  the sentiment.", "Classify the sentiment!", "Is it good?"]
    assert TrigramCosineFilter().distinct(prompts) == ["Classify the sentiment.", "Is it good?"]
    assert ExactDuplicateFilter().distinct(prompts) == ["Classify the sentiment.", "Classify the sentiment!",
                                                        "Is it good?"]


class KeepFirstTwo:
    name = "first_two"

    def distinct(self, prompts):
        return prompts[:2]


class FilterPlugin:
    @hookimpl
    def lpb_register_similarity_filters(self, register):
        register(KeepFirstTwo())


def test_eda_uses_the_similarity_filter_chosen_by_name(day_care, seen):
    breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=4,
                        evolution_generations=1, fitness_batch_size=4, loggers=(), operators=("eda_mutation",),
                        similarity_filter="first_two"), extra_plugins=[FilterPlugin()])
    assert len(seen["task_prompts"]) == 2
