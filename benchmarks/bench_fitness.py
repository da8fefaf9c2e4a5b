"""Fitness evaluation on the embedded model: what the cache and prefix-aware ordering save.

    python benchmarks/bench_fitness.py [--items 12]

1. Prefix reuse: llama.cpp keeps the longest common prefix of the previous call, and every item of
   one unit shares the prompt up to the item's own text. Scoring unit by unit (what lpb does) is
   compared with item by item (every call switches prompts), counting prompt tokens llama.cpp
   actually evaluated against prompt tokens submitted.
2. Cache: the same evaluation twice with the run's query cache; the second is served from SQLite.
All measurements run side by side in one process; the figures are ratios, not timings to compare
across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from lpb_core.cache import QueryCache
from lpb_core.daycare import FITNESS_TEMPLATE, load_day_care, load_suite
from lpb_core.fitness import FitnessTest, Minibatch
from lpb_core.llm import LanguageModel
from lpb_core.plugins import load_plugins
from lpb_core.settings import BreedSettings
from lpb_core.units import Unit

DAY_CARE = Path(__file__).resolve().parent.parent / "day_care"
PROMPTS = ["What is the sentiment of this review?", "Is this review positive or negative?",
           "Tell me how the writer feels, then say positive or negative.", "Read the review and classify it."]


async def main(items: int) -> None:
    day_care = load_day_care(DAY_CARE).for_task("sentiment")
    task = day_care.task("sentiment")
    plugins = load_plugins()
    scorer = plugins.scorers.get(task.scorer_type)(**task.scorer_params)
    test = FitnessTest(day_care, task, scorer, load_suite(task.suite_path, task), ("no_cot",))
    handle = plugins.backends.get("llama.cpp").open("smollm2", BreedSettings(task="sentiment", day_care_dir=DAY_CARE))
    engine = handle.models[0].engine
    units = [Unit(id=f"u{i}", prompts={"task_prompt": p}, mutation_prompt="-") for i, p in enumerate(PROMPTS)]
    batch = Minibatch("bench", tuple(range(items)))
    template = day_care.breeder.templates[FITNESS_TEMPLATE]

    async def measure(label, work):
        model = LanguageModel(handle)
        before, started = engine.stats["evaluated"], time.perf_counter()
        await work(model)
        seconds = time.perf_counter() - started
        evaluated = engine.stats["evaluated"] - before - model.usage.completion_tokens
        submitted = model.usage.prompt_tokens
        print(f"{label:<34} {submitted:>9} {evaluated:>9} {evaluated / submitted:>8.2f} {seconds:>8.1f}s")
        return seconds

    print(f"{'ordering':<34} {'submitted':>9} {'evaluated':>9} {'fraction':>8} {'time':>9}")

    async def unit_major(model):
        for unit in units:
            await test.evaluate(unit, batch, model)

    async def item_major(model):
        for index in batch.indices:
            for unit in units:
                args = {**test.suite[index], **unit.prompts, "CoT": False, "task_description": task.description,
                        "examples": []}
                await model.run(template, args, task.fitness_decoder)

    # Interleaved twice so a drift in machine speed hits both orderings alike.
    for _ in range(2):
        await measure("item by item (prompt switches)", item_major)
        await measure("unit by unit (lpb's order)", unit_major)

    with tempfile.TemporaryDirectory() as folder:
        cache = QueryCache(Path(folder) / "cache.sqlite")
        model = LanguageModel(handle, cache=cache)
        started = time.perf_counter()
        for unit in units:
            await test.evaluate(unit, batch, model)
        first = time.perf_counter() - started
        started = time.perf_counter()
        for unit in units:
            await test.evaluate(unit, batch, model)
        second = time.perf_counter() - started
        print(f"\ncache: first evaluation {first:.2f}s ({model.usage.llm_calls} calls), "
              f"repeated {second:.3f}s ({model.usage.cache_hits} hits): {first / second:.0f}x faster")
        cache.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=12)
    asyncio.run(main(parser.parse_args().items))
