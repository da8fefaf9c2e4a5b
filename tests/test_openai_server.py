"""The embedded model on a real OpenAI-compatible server: llama-cpp-python's (``python -m llama_cpp.server``).

The server runs on loopback with one thread; a recording proxy (tests/openai_fake.py) sits in front of it,
so the test sees when each request opened and closed. Label-constrained answers must be labels, greedy
fitness must equal the in-process engine's on the same items, and a breed with 4 requests in flight must
really have had requests open at the same time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("fastapi")  # llama-cpp-python[server]
pytest.importorskip("uvicorn")

from lpb_core.cli_common import default_day_care  # noqa: E402
from lpb_core.daycare import load_day_care, read_suite  # noqa: E402
from lpb_core.fitness import FitnessTest, Minibatch  # noqa: E402
from lpb_core.llm import LanguageModel, ModelHandle  # noqa: E402
from lpb_core.retry import RetryPolicy  # noqa: E402
from lpb_core.units import Unit  # noqa: E402
from lpb_plugins.llama_cpp.lmql_model import load_model  # noqa: E402
from lpb_plugins.llama_cpp.model_files import embedded_model_path  # noqa: E402
from lpb_plugins.llama_cpp.openai_model import served_model, served_tokenizer  # noqa: E402
from lpb_plugins.scorers import BinaryFBeta  # noqa: E402
from tests.openai_fake import FakeOpenAIServer  # noqa: E402

pytestmark = pytest.mark.embedded

START_TIMEOUT = 120
ITEMS = tuple(range(6))
# The server decodes one request at a time and keeps decoding a request its client gave up on, so on a busy
# machine a short timeout only piles up abandoned work: wait as long as it takes.
PATIENT = RetryPolicy(max_retries=0, timeout=1800)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port, gguf = free_port(), str(embedded_model_path())
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                                    "--port", str(port), "--n_threads", "1", "--n_ctx", "2048"],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"llama_cpp.server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
    proxy = FakeOpenAIServer(served_tokenizer(None, "smollm2")[1], upstream=url)
    yield gguf, proxy
    proxy.stop()
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:  # uvicorn waits for queued requests; they are of no use now
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def answer_quality():
    day_care = load_day_care(default_day_care()).for_task("answer_quality")
    task = day_care.task("answer_quality")
    suite = tuple(read_suite(task.suite_path))
    scorer = BinaryFBeta(positive_label="yes", negative_label="no", beta=1.0)
    return FitnessTest(day_care, task, scorer, suite, ("no_cot",))


def test_greedy_answers_are_labels_and_equal_the_in_process_engine(llama_server):
    gguf, proxy = llama_server
    fitness = answer_quality()
    unit = Unit(id="u0", prompts={"task_prompt": "Is the proposed answer a good answer? Say yes or no."},
                mutation_prompt="-")
    batch = Minibatch("b", ITEMS)
    identifier, tokenizer = served_tokenizer(None, gguf)
    served = served_model(proxy.api_base, gguf, identifier, tokenizer, PATIENT)
    assert served.honours_logit_bias

    async def evaluate(model, concurrency):
        language_model = LanguageModel(ModelHandle(description="m", models=(model,), count_tokens=len),
                                       concurrency=concurrency)
        evaluation = await fitness.evaluate_items(unit, batch, language_model)
        answers = []
        template = fitness.day_care.breeder.templates["fitness_test_template"]
        for index in ITEMS:  # served from nothing cached: every call runs
            args = {**fitness.suite[index], "task_prompt": unit.prompts["task_prompt"], "CoT": False, "examples": []}
            answers.append((await language_model.run(template, args, fitness.task.fitness_decoder)).variables["ANSWER"])
        return evaluation, answers

    remote, remote_answers = asyncio.run(evaluate(served, 4))
    local, local_answers = asyncio.run(evaluate(load_model(), 1))
    assert set(remote_answers) <= {"yes", "no"}
    assert remote_answers == local_answers
    assert remote.unit.fitness == local.unit.fitness
    assert remote.correct == local.correct


def test_a_breed_keeps_four_requests_in_flight(llama_server, lpb, tmp_path):
    gguf, proxy = llama_server
    proxy.requests.clear()
    result = lpb("breed", "--model-name-or-path", f"openai/{gguf}", "--api-base", proxy.api_base, "--is-async",
                 "--client-batch-size", "4", "--task", "answer_quality", "--population-size", "4",
                 "--evolution-generations", "1", "--fitness-batch-size", "4", "--test-split", "0",
                 "--validation-split", "0", "--seed", "1", "--max-retries", "0", "--request-timeout", "1800",
                 "--day-care-dir", _copy_day_care(tmp_path))
    assert result.exit_code == 0, result.output
    summary = json.loads(next(tmp_path.glob("day_care/answer_quality/RUN_*/summary.json")).read_text())
    assert summary["failed_calls"] == 0 and summary["generations_completed"] == 1
    # the first request asks whether the server reads token-id prompts (llama-cpp-python's answers 500)
    assert proxy.requests[0]["answer"] in (200, 500)
    assert [r for r in proxy.requests[1:] if r["answer"] != 200] == []
    assert proxy.max_in_flight() >= 2


def _copy_day_care(tmp_path):
    import shutil

    target = tmp_path / "day_care"
    shutil.copytree(default_day_care(), target, ignore=shutil.ignore_patterns("RUN_*", "DEBUG"))
    return target
