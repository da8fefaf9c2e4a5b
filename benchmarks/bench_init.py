"""How good are the prompts a template writes? Generate a population's worth with one template, score them.

    python benchmarks/bench_init.py --task app_reviews [--template initial_prompt_gen] [--variants FILE.hjson]
        [--units 16] [--items 20] [--seed 1]

For each variant of the template (the day care's own, plus every entry of --variants, an hjson object
of name -> LMQL template with the same arguments), the script draws --units (mutation prompt,
thinking style) pairs as a breed's initialisation does, writes one prompt per pair with the embedded
model, and scores each prompt with the task's fitness test on the same --items training items.
It prints, per variant: mean and best fitness, how many prompts score 0, and the prompts themselves.
Used to choose the built-in day care's templates (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_quality  # noqa: E402  (the benchmark tasks' day care)


async def score_variant(name, template, day_care, task, fitness, model, draws, batch):
    from lpb_core.operators import clean_prompt
    from lpb_core.units import Unit

    prompts = []
    for number, (mutation_prompt, thinking_style) in enumerate(draws):
        result = await model.run(template, {"mutation_prompt": mutation_prompt, "thinking_style": thinking_style,
                                            "task_description": task.description, "candidate": 0, "attempt": 0},
                                 task.decoder, sample_key=f"init:{number}")
        prompts.append(clean_prompt(str(result.variables.get("TASK_PROMPT", ""))) or task.description)
    scores = []
    for number, prompt in enumerate(prompts):
        unit = Unit(id=f"u{number}", prompts={"task_prompt": prompt}, mutation_prompt="")
        scores.append((await fitness.evaluate(unit, batch, model)).fitness)
    return prompts, scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--template", default="initial_prompt_gen")
    parser.add_argument("--variants", type=Path, default=None)
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    import hjson

    from lpb_core.daycare import load_day_care, read_suite
    from lpb_core.fitness import FitnessTest, Minibatch
    from lpb_core.llm import LanguageModel, open_model
    from lpb_core.plugins import load_plugins
    from lpb_core.settings import BreedSettings
    from lpb_core.templates import Template

    with tempfile.TemporaryDirectory() as tmp:
        root = bench_quality.day_care_with(args.task, Path(tmp))
        day_care = load_day_care(root).for_task(args.task)
        task = day_care.task(args.task)
        suite = read_suite(task.suite_path)
        plugins = load_plugins()
        scorer = plugins.scorers.get(task.scorer_type)(**task.scorer_params)
        fitness = FitnessTest(day_care, task, scorer, tuple(suite), ("no_cot",))
        rng = random.Random(f"{args.seed}:init")
        draws = [(rng.choice(day_care.mutation_prompts), rng.choice(day_care.thinking_styles)) for _ in range(args.units)]
        batch = Minibatch("b", tuple(sorted(random.Random(args.seed).sample(range(len(suite)), args.items))))
        own = day_care.breeder.templates[args.template]
        variants = {"day care": own}
        if args.variants:
            for name, code in hjson.loads(args.variants.read_text()).items():
                variants[name] = Template(args.template, code.strip("\n"), own.args)
        settings = BreedSettings(task=args.task, day_care_dir=root, seed=args.seed, loggers=())
        handle = open_model(plugins.backends, "smollm2", settings)

        async def run():
            model = LanguageModel(handle)
            results = {}
            for name, template in variants.items():
                results[name] = await score_variant(name, template, day_care, task, fitness, model, draws, batch)
            await model.aclose()
            return results

        for name, (prompts, scores) in asyncio.run(run()).items():
            print(f"== {name}: mean {statistics.mean(scores):.3f}, best {max(scores):.3f}, "
                  f"zero {sum(s == 0 for s in scores)}/{len(scores)}")
            for prompt, score in sorted(zip(prompts, scores), key=lambda p: -p[1]):
                print(f"   {score:.2f}  {prompt[:140]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
