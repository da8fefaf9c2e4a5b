"""Fitness calls per second: the embedded model behind llama-cpp-python's OpenAI-compatible server, with 1, 4
and 8 requests in flight, next to the in-process engine.

    python benchmarks/bench_openai_server.py [--calls 200] [--in-flight 1 4 8] [--server-threads 1]

The same fitness calls each way: the built-in sentiment task's fitness template, greedy, one prompt per
unit over the suite's items, with no query cache. The server is started here on loopback (``python -m
llama_cpp.server``, one model, ``--n_threads``) and stopped at the end. Each setting runs once per round,
in turn, for ``--rounds`` rounds, so a drift in the machine's speed hits them alike; the figures are
calls/s. llama-cpp-python's server decodes one request at a time (a batching server such as vLLM or
llama.cpp's ``llama-server --parallel N`` is what in-flight requests are for): here they measure what
the HTTP path costs and whether keeping requests queued hides it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lpb_core.daycare import FITNESS_TEMPLATE, load_day_care, load_suite
from lpb_core.llm import LanguageModel, ModelHandle, run_all
from lpb_core.retry import RetryPolicy
from lpb_plugins.llama_cpp.lmql_model import load_model
from lpb_plugins.llama_cpp.model_files import embedded_model_path
from lpb_plugins.llama_cpp.openai_model import served_model, served_tokenizer

DAY_CARE = Path(__file__).resolve().parent.parent / "day_care"
PROMPTS = ["What is the sentiment of this review?", "Is this review positive or negative?",
           "Tell me how the writer feels, then say positive or negative.", "Read the review and classify it."]


def start_server(threads: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path()),
                                "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads),
                                "--n_ctx", "2048"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            return process, url
        except OSError:
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)
    raise RuntimeError("llama_cpp.server did not start")


def fitness_calls(calls: int):
    day_care = load_day_care(DAY_CARE).for_task("sentiment")
    task = day_care.task("sentiment")
    suite = load_suite(task.suite_path, task)
    template = day_care.breeder.templates[FITNESS_TEMPLATE]
    per_prompt = -(-calls // len(PROMPTS))
    args = [{**suite[i % len(suite)], "task_prompt": p, "CoT": False, "examples": []}
            for p in PROMPTS for i in range(per_prompt)][:calls]
    return template, args, task.fitness_decoder


async def calls_per_second(model, in_flight: int, template, args, decoder) -> float:
    language_model = LanguageModel(ModelHandle(description="bench", models=(model,), count_tokens=len),
                                   concurrency=in_flight)
    started = time.perf_counter()
    await run_all(language_model.run(template, a, decoder) for a in args)
    return len(args) / (time.perf_counter() - started)


def main(calls: int, in_flight: list[int], server_threads: int, rounds: int) -> None:
    template, args, decoder = fitness_calls(calls)
    process, url = start_server(server_threads)
    try:
        gguf = str(embedded_model_path())
        served = served_model(url, gguf, *served_tokenizer(None, gguf), RetryPolicy())
        local = load_model()
        settings = [(f"server, {n} in flight", served, n) for n in in_flight] + [("in-process", local, 1)]
        figures = {label: [] for label, _, _ in settings}

        async def run():
            for _ in range(rounds):
                for label, model, n in settings:
                    figures[label].append(await calls_per_second(model, n, template, args, decoder))
            await served.aclose()

        asyncio.run(run())
        print(f"{len(args)} fitness calls, server with {server_threads} thread(s), {rounds} round(s)")
        for label, values in figures.items():
            print(f"  {label:<22} " + "  ".join(f"{v:6.2f}" for v in values) + "  calls/s")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--server-threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    options = parser.parse_args()
    main(options.calls, options.in_flight, options.server_threads, options.rounds)
