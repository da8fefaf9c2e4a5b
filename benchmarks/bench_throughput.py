"""Fitness throughput of the in-process engine, and how a breed shares the CPU.

    python benchmarks/bench_throughput.py [--units 8] [--items 10] [--batch 2 4 8 16] [--rounds 3] [--model F.gguf]
    python benchmarks/bench_throughput.py --threads 1,1 1,2 2,2      # (decode, prompt) threads, batched
    python benchmarks/bench_throughput.py --breeds 2                 # determinism and contention of a small breed

1. Throughput: the same fitness calls (the built-in sentiment task's fitness template, greedy, at most 11
   answer tokens; ``--units`` task prompts x ``--items`` suite items) made by
   * raw: a plain sequential llama-cpp-python loop (``Llama.generate``, which keeps the longest common
     prefix of the previous call, stopping where the template's constraints stop the answer), on one
     thread (the issue's baseline) and with the engine's thread counts;
   * lpb sequential: lpb's fitness evaluation with one query at a time;
   * lpb batched N: the same with N queries at once, decoded together by the engine;
   * llama.cpp alone: the tokens lpb decoded (its prompts and the answers it produced), decoded in waves
     of the engine's sequences with no interpreter and no scheduling: what llama.cpp itself allows.
   Every configuration starts from an empty KV cache; they run interleaved, round after round, so a
   drift in machine speed hits them alike.  Reported: calls/s (median over rounds) and the median of each
   round's ratio to raw.  lpb's answers must be the same in every configuration.
2. ``--threads``: lpb batched at the default N with each (decode, prompt) thread pair, and raw beside.
3. ``--breeds``: rounds of two small breeds with the same seed in fresh processes, one idle and one beside
   a CPU-bound process: their generation files must be identical once timings are stripped, and the
   wall-time ratio is the contention figure.

Timings only mean something on an otherwise idle machine; on a shared one, read only the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lpb_core.daycare import FITNESS_TEMPLATE, load_day_care, load_suite
from lpb_core.fitness import FitnessTest, Minibatch
from lpb_core.llm import LanguageModel, run_all
from lpb_core.plugins import load_plugins
from lpb_core.settings import BreedSettings
from lpb_core.units import Unit
from lpb_plugins.llama_cpp.engine import DEFAULT_SEQUENCES

DAY_CARE = Path(__file__).resolve().parent.parent / "day_care"
TASK = "sentiment"
PROMPTS = ["What is the sentiment of this review?", "Is this review positive or negative?",
           "Tell me how the writer feels, then say positive or negative.", "Read the review and classify it.",
           "Decide whether the customer liked it. Answer positive or negative.",
           "Classify the review's overall feeling as positive or negative.",
           "Would this reviewer recommend it? Say positive or negative.", "Sentiment (positive/negative):"]
MAX_ANSWER_TOKENS = 11  # the fitness template's len(TOKENS(ANSWER)) < 12


def fitness_setup(units: int, items: int, n_seq: int, model: str = "smollm2"):
    day_care = load_day_care(DAY_CARE).for_task(TASK)
    task = day_care.task(TASK)
    plugins = load_plugins()
    scorer = plugins.scorers.get(task.scorer_type)(**task.scorer_params)
    test = FitnessTest(day_care, task, scorer, load_suite(task.suite_path, task), ("no_cot",))
    settings = BreedSettings(task=TASK, day_care_dir=DAY_CARE, is_async=True, client_batch_size=n_seq)
    handle = plugins.backends.get("llama.cpp").open(model, settings)
    if not 0 < units <= len(PROMPTS):
        raise SystemExit(f"--units: 1 to {len(PROMPTS)}")
    population = [Unit(id=f"u{k}", prompts={"task_prompt": PROMPTS[k]}, mutation_prompt="-") for k in range(units)]
    return test, handle, population, Minibatch("bench", tuple(range(items)))


async def lpb_answers(test, handle, population, batch, concurrency: int) -> list:
    """Every unit scored on the batch, as Breeder.evaluate_all does: all at once, bounded by ``concurrency``."""
    model = LanguageModel(handle, concurrency=concurrency)
    template = test.day_care.breeder.templates[FITNESS_TEMPLATE]
    answers = {}

    async def answer(unit, index):
        args = {**test.suite[index], **unit.prompts, "CoT": False, "task_description": test.task.description,
                "examples": []}
        result = await model.run(template, args, test.task.fitness_decoder)
        answers[unit.id, index] = result

    await run_all(answer(u, i) for u in population for i in batch.indices)
    return [answers[u.id, i] for u in population for i in batch.indices]


def recorded_requests(engine):
    """Wrap ``engine.generate`` to record each request's prompt ids and the tokens it produced."""
    requests = []
    generate = engine.generate

    async def recording(ids, **options):
        produced = []
        requests.append((list(ids), produced))
        async for item in generate(ids, **options):
            produced.append(item["token"])
            yield item

    engine.generate = recording
    return requests


def llama_cpp_alone(context, requests, n_seq: int) -> tuple[int, int]:
    """The engine's work for ``requests`` with no interpreter and no scheduling: llama.cpp alone.

    Waves of ``n_seq`` requests: the prompt of the first request of each group sharing a prefix is decoded,
    copied to the others of its group (as the engine's cache does) and their suffixes decoded, all in
    one call per phase; then each step decodes the next produced token of every request still
    producing, one token per sequence (generation cannot batch a sequence's own tokens), logits only
    where a token is chosen.  The tokens are the ones lpb produced, so the work is the same as lpb's.
    Returns how many of the chosen positions' greedy tokens equal lpb's, and how many there are.
    """
    import numpy as np

    from lpb_plugins.llama_cpp.batch import Span
    from lpb_plugins.llama_cpp.kv_cache import common_prefix

    agree = outputs = 0

    def decode(pairs):
        """Decode (span, the token lpb chose after it) pairs in calls of at most n_batch tokens."""
        nonlocal agree, outputs
        chunk, size = [], 0
        for pair in pairs + [None]:
            if chunk and (pair is None or size + len(pair[0].tokens) > context.n_batch):
                context.decode([span for span, _ in chunk])
                for span, chosen in chunk:
                    agree += int(np.argmax(context.logits(span.rows[-1]))) == chosen
                outputs += len(chunk)
                chunk, size = [], 0
            if pair is not None:
                chunk.append(pair)
                size += len(pair[0].tokens)

    context.clear()
    for first in range(0, len(requests), n_seq):
        wave = requests[first:first + n_seq]
        leaders, followers = [], []
        for seq, (ids, _) in enumerate(wave):
            shared = max(((common_prefix(ids, wave[lead][0]), lead) for lead in leaders), default=(0, None))
            (followers.append((seq, *shared)) if shared[0] else leaders.append(seq))
        for seq in range(len(wave)):
            context.keep_prefix(seq, 0)
        decode([(Span(seq, wave[seq][0], 0, [len(wave[seq][0]) - 1]), wave[seq][1][0]) for seq in leaders])
        for seq, shared, lead in followers:
            context.copy_sequence(lead, seq)
            context.keep_prefix(seq, shared)
        decode([(Span(seq, wave[seq][0][shared:], shared, [len(wave[seq][0]) - shared - 1]), wave[seq][1][0])
                for seq, shared, _ in followers])
        for step in range(max(len(produced) for _, produced in wave) - 1):
            decode([(Span(seq, [produced[step]], len(ids) + step, [0]), produced[step + 1])
                    for seq, (ids, produced) in enumerate(wave) if step < len(produced) - 1])
    return agree, outputs


def rendered_chat(prompt: str, chat) -> str:
    """A prompt with LMQL's ``<lmql:ROLE/>`` tags as text, rendered in the model's chat format."""
    parts = re.split(r"<lmql:(\w+)/>", prompt)
    return chat.render([(None, parts[0]), *zip(parts[1::2], parts[2::2])])


def raw_loop(llm, prompts, eog) -> list:
    """The plain loop: greedy, at most 11 tokens, stopping at an end-of-generation token or a newline."""
    out = []
    for prompt in prompts:
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        tokens = []
        for token in llm.generate(ids, temp=0.0):
            if token in eog:
                break
            tokens.append(token)
            if len(tokens) >= MAX_ANSWER_TOKENS or b"\n" in llm.detokenize(tokens):
                break
        out.append(llm.detokenize(tokens).decode("utf-8", "replace"))
    return out


def throughput(args) -> None:
    from llama_cpp import Llama

    batches = sorted(set(args.batch))
    test, handle, population, batch = fitness_setup(args.units, args.items, max(batches + [DEFAULT_SEQUENCES]), args.model)
    engine = handle.models[0].engine
    configs = {"lpb sequential": 1, **{f"lpb batched {n}": n for n in batches}}
    if args.threads:
        configs = {f"lpb batched {DEFAULT_SEQUENCES}, threads {d},{p}": (DEFAULT_SEQUENCES, (d, p))
                   for d, p in args.threads}
    # lpb's own prompts (each call's whole interaction minus its answer), with LMQL's role tags rendered in
    # the model's chat template as the engine renders them, are what the raw loop sends
    requests = recorded_requests(engine)
    reference = asyncio.run(lpb_answers(test, handle, population, batch, 1))
    del engine.generate  # the engine's own method again
    chat = handle.models[0].chat
    prompts = [rendered_chat(r.prompt[:len(r.prompt) - len(r.variables["ANSWER"])], chat) for r in reference]
    calls = len(prompts)
    default_threads = (engine.n_threads, engine.n_threads_batch)
    # the baseline is the raw loop on one thread; beside it, the raw loop with lpb's own threads
    raw_threads = {"raw, 1 thread": (1, 1)}
    if default_threads != (1, 1):
        raw_threads["raw, threads {},{}".format(*default_threads)] = default_threads
    raws = {name: Llama(model_path=str(engine.gguf_path), n_ctx=2048, n_threads=d, n_threads_batch=p, verbose=False)
            for name, (d, p) in raw_threads.items()}
    baseline = next(iter(raws))
    print(f"{calls} fitness calls ({args.units} units x {args.items} items); engine: {engine.n_seq} sequences, "
          f"threads {default_threads}")

    alone = f"llama.cpp alone, waves of {engine.n_seq}"
    seconds = {name: [] for name in [*raws, *configs, alone]}
    mismatches = {name: 0 for name in configs}
    raw_agree = []
    for round_number in range(args.rounds):
        for name, raw in raws.items():
            raw.reset()
            started = time.perf_counter()
            raw_answers = raw_loop(raw, prompts, engine.eog_ids)
            seconds[name].append(time.perf_counter() - started)
            raw_agree.append(sum(a.strip() == r.variables["ANSWER"].strip() for a, r in zip(raw_answers, reference)))
        for name, config in configs.items():
            concurrency, threads = config if isinstance(config, tuple) else (config, default_threads)
            engine.set_threads(*threads)
            engine.clear_cache()
            started = time.perf_counter()
            results = asyncio.run(lpb_answers(test, handle, population, batch, concurrency))
            seconds[name].append(time.perf_counter() - started)
            mismatches[name] += sum(a.variables != b.variables for a, b in zip(results, reference))
        engine.set_threads(*default_threads)

        def work_alone():
            engine.context.set_threads(*default_threads)
            started = time.perf_counter()
            agreement = llama_cpp_alone(engine.context, requests, engine.n_seq)
            return time.perf_counter() - started, agreement

        spent, alone_agree = engine.run_sync(work_alone)
        seconds[alone].append(spent)
        engine.clear_cache()
        print(f"round {round_number + 1}: " + ", ".join(f"{n} {calls / s[-1]:.2f}/s" for n, s in seconds.items()),
              flush=True)

    print(f"\n| configuration | calls/s (median) | x {baseline} (median of rounds) | answers unlike lpb sequential |")
    print("| --- | --- | --- | --- |")
    for name, values in seconds.items():
        ratio = statistics.median(r / v for r, v in zip(seconds[baseline], values))
        unlike = mismatches.get(name, "-")
        print(f"| {name} | {calls / statistics.median(values):.2f} | {ratio:.2f} | {unlike} |")
    print("llama.cpp alone's greedy token equals the token lpb chose at {} of {} outputs (lpb's constraints can "
          "mask the greedy one)".format(*alone_agree))
    print(f"raw loop answers equal to lpb's: {min(raw_agree)}/{calls} (the raw loop runs without flash attention, "
          "which changes some greedy answers)")


# ---------------------------------------------------------------------------------------------------------
# determinism and contention
# ---------------------------------------------------------------------------------------------------------

BREED = ["--task", TASK, "--population-size", "6", "--evolution-generations", "2", "--fitness-batch-size", "8",
         "--test-split", "0.1", "--seed", "3"]


def strip_timings(value):
    """A generation file without what depends on timing."""
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items() if k not in ("wall_seconds", "llm_seconds")}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value


def breed_once(folder: Path, neighbour: bool) -> tuple[float, dict]:
    """A small breed in a fresh process (beside a CPU-bound one if asked); its wall time and generation files."""
    day_care = folder / "day_care"
    shutil.copytree(DAY_CARE, day_care, ignore=shutil.ignore_patterns("RUN_*", "DEBUG", "__pycache__"))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lpb_core", "breed", "--day-care-dir", str(day_care), *BREED],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    run = day_care / TASK / "RUN_0"
    files = {p.name: strip_timings(json.loads(p.read_text())) for p in sorted(run.glob("generation_*.json"))}
    return wall, files


def breeds(rounds: int) -> None:
    print(f"small breed: lpb breed {' '.join(BREED)}; each run in a fresh process")
    walls = {"idle": [], "beside a CPU-bound process": []}
    reference, identical = None, True
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            for name in walls:
                folder = Path(tmp) / f"{k}-{len(walls[name])}-{name[:4]}"
                folder.mkdir()
                wall, files = breed_once(folder, neighbour=name != "idle")
                walls[name].append(wall)
                reference = reference or files
                identical = identical and files == reference
                print(f"round {k + 1}, {name}: {wall:.1f} s, {len(files)} generation files, "
                      f"{'identical' if files == reference else 'DIFFERENT'}", flush=True)
    ratios = [b / a for a, b in zip(walls["idle"], walls["beside a CPU-bound process"])]
    print(f"\ngeneration files identical in all {2 * rounds} runs (timings stripped): {identical}")
    print(f"wall time beside one CPU-bound process / idle: median {statistics.median(ratios):.2f} "
          f"({', '.join(f'{r:.2f}' for r in ratios)}); {os.cpu_count()} cores")


def thread_pair(text: str) -> tuple[int, int]:
    decode, prompt = text.split(",")
    return int(decode), int(prompt)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="smollm2", help="a GGUF file for both lpb and the raw loop (default: the embedded model)")
    parser.add_argument("--threads", type=thread_pair, nargs="+", help="(decode,prompt) thread pairs to compare")
    parser.add_argument("--breeds", type=int, default=0, help="rounds of the determinism/contention breeds")
    args = parser.parse_args(argv)
    if args.breeds:
        breeds(args.breeds)
    else:
        throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
