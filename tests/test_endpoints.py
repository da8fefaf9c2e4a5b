"""Remote inference: two LMTP servers (``python -m lpb_core serve``) on loopback.

Checks that ``where`` constraints are enforced by the server (through LMQL queries and at the
LMTP protocol level), that a breed with ``endpoints=`` spreads its queries over both servers, and
that its results look like an in-process run's.  Servers bind to 127.0.0.1 only, on ports the OS
picks (``--port 0``); they are killed (whole process group) when the module ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

lmql = pytest.importorskip("lmql")
pytest.importorskip("llama_cpp")

from lpb_plugins.llama_cpp import lmql_model  # noqa: E402
from lpb_plugins.llama_cpp.chat import format_chat  # noqa: E402
from lpb_plugins.llama_cpp.gguf_tokenizer import GGUFTokenizer  # noqa: E402
from lpb_plugins.llama_cpp.lmtp_client import remote_model  # noqa: E402

pytestmark = pytest.mark.embedded

REPO = Path(__file__).parent.parent
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 90
REQUEST_LINE = re.compile(r"^\[lpb-serve\] request \d+: (generate|score) ", re.M)


class Server:
    def __init__(self, name: str, log_dir: Path, extra_args=()):
        self.name = name
        self.out_path = log_dir / f"{name}.out"
        self.err_path = log_dir / f"{name}.err"
        self.endpoint = None
        args = [sys.executable, "-m", "lpb_core", "serve", "--host", LOOPBACK, "--port", "0",
                "--n-threads", "1", *extra_args]
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            # own process group: teardown kills the server and anything it started
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=log_dir)

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            match = re.search(r"^serving smollm2 on (127\.0\.0\.1):(\d+)$", self.out_path.read_text(), re.M)
            if match:
                self.endpoint = f"{match.group(1)}:{match.group(2)}"
                return
            if self.proc.poll() is not None:
                pytest.fail(f"server {self.name} exited with {self.proc.returncode}:\n{self.err_path.read_text()}")
            time.sleep(0.1)
        pytest.fail(f"server {self.name} not ready after {START_TIMEOUT}s:\n{self.err_path.read_text()}")

    def requests(self) -> int:
        """Generate/score requests the server has logged (one stderr line each)."""
        return len(REQUEST_LINE.findall(self.err_path.read_text()))

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("lmtp_servers")
    # One core each when there are two: unpinned, two servers' multi-threaded prompt evaluations
    # stall each other on a 2-core machine (see docs/serving.md).
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = [["--cpus", str(cores[i])] for i in range(2)] if len(cores) >= 2 else [[], []]
    started = []
    try:
        # the second one groups queued requests in batches of 2 (still decoded one at a time)
        for name, extra in (("a", pin[0]), ("b", pin[1] + ["--server-batch-size", "2"])):
            started.append(Server(name, log_dir, extra))
        deadline = time.monotonic() + START_TIMEOUT
        for server in started:
            server.wait_ready(deadline)
        yield started
    finally:
        for server in started:
            server.stop()


# --------------------------------------------------------------------------
# constraints
# --------------------------------------------------------------------------

@lmql.query
async def q_yes_no(prompt):
    '''lmql
    sample(temperature=2.0)
    "{prompt}[ANSWER]" where ANSWER in ["yes", "no"]
    return ANSWER
    '''


@lmql.query
async def q_int(prompt):
    '''lmql
    sample(temperature=1.5)
    "{prompt}[N]" where INT(N) and len(TOKENS(N)) < 6
    return N
    '''


def test_remote_model_loads_no_weights(servers):
    loaded = dict(lmql_model._models)
    model = remote_model(servers[0].endpoint)
    assert lmql_model._models == loaded  # no llama.cpp model was loaded for the client
    assert not hasattr(model, "engine")
    assert model.endpoint == servers[0].endpoint
    tokenizer = model.get_tokenizer()
    assert tokenizer.tokenizer_impl.__class__ is GGUFTokenizer
    assert tokenizer.bos_token_id is None  # SmolLM2's GGUF: add_bos_token = false
    assert tokenizer.eos_token_id == 2  # <|im_end|>


def test_constraints_enforced_remotely(servers):
    prompt = format_chat(None, "Tell me a story about a dragon.")

    async def run():
        answers, numbers = [], []
        for server in servers:
            model = remote_model(server.endpoint)
            for _ in range(4):
                answers.append(await asyncio.wait_for(q_yes_no(prompt, model=model), 60))
            numbers.append(await asyncio.wait_for(q_int(prompt + "My favourite number is ", model=model), 60))
        return answers, numbers

    before = [s.requests() for s in servers]
    answers, numbers = asyncio.run(run())
    assert set(answers) <= {"yes", "no"}, answers
    assert all(isinstance(n, int) for n in numbers), numbers  # INT(N) values are parsed as int
    assert all(s.requests() > b for s, b in zip(servers, before))


def test_server_applies_masks_as_hard_constraints(servers):
    """At the protocol level, as LMQL's LMTPDcModel sends them: +100 = only these, -100 = banned."""
    import aiohttp
    from lmql.models.lmtp.errors import LMTPStreamError
    from lmql.models.lmtp.lmtp_client import LMTPWebSocketClient

    model = remote_model(servers[1].endpoint)
    tokenizer = model.get_tokenizer().tokenizer_impl
    ids = tokenizer.encode(format_chat(None, "Write a long poem about the sea."))
    allowed = {tokenizer.encode("yes")[0], tokenizer.encode("no")[0]}
    reserved = tokenizer.vocab_size + 5  # LMQL's reserved tag ids lie beyond the vocabulary

    async def run():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://{servers[1].endpoint}") as ws:
                client = LMTPWebSocketClient(model.model_identifier, ws)
                client.connect()

                async def tokens(**kwargs):
                    return [t async for t in client.generate(ids, **kwargs)]

                free = await tokens(max_tokens=1, temperature=0.0)
                # concurrent requests: the batch-size-2 server groups them, then decodes one by one
                only, banned = await asyncio.gather(
                    tokens(max_tokens=12, temperature=2.0, top_logprobs=3,
                           logit_bias={**{t: 100 for t in allowed}, reserved: 100}),
                    tokens(max_tokens=1, temperature=0.0, logit_bias={free[0]["token"]: -100, reserved: -100}))
                info = await client.request("MODEL_INFO", {})
            # a client whose GGUF tokenizer differs is refused (LMQL's own server would never answer)
            async with session.ws_connect(f"http://{servers[1].endpoint}") as ws:
                other = LMTPWebSocketClient("lpb-llama.cpp:not-this-tokenizer", ws)
                other.connect()
                with pytest.raises(LMTPStreamError, match="use the same GGUF"):
                    await asyncio.wait_for(anext(other.generate(ids, max_tokens=2)), 30)
            return free, only, banned, info

    free, only, banned, info = asyncio.run(asyncio.wait_for(run(), 120))
    assert {t["token"] for t in only} <= allowed, only
    assert all(set(map(int, t["top_logprobs"])) <= allowed for t in only), only
    assert only[-1]["finish_reason"] in ("stop", "length")
    assert banned[0]["token"] != free[0]["token"]
    assert info["model_info"]["model_identifier"] == model.model_identifier
    assert info["model_info"]["max_batch_size"] == 2


# --------------------------------------------------------------------------
# a breed over both servers
# --------------------------------------------------------------------------

def test_breed_spreads_queries_over_both_endpoints(servers, tmp_path):
    from lpb_core.run import breed
    from lpb_core.settings import BreedSettings

    day_care = tmp_path / "day_care"
    shutil.copytree(REPO / "day_care", day_care, ignore=shutil.ignore_patterns("RUN_*", "__pycache__"))
    before = [s.requests() for s in servers]
    endpoints = tuple(s.endpoint for s in servers)
    summary = breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="smollm2",
                                  endpoints=endpoints, population_size=4, evolution_generations=1,
                                  fitness_batch_size=4, is_async=True, client_batch_size=2, loggers=()))
    served = [s.requests() - b for s, b in zip(servers, before)]
    assert all(n > 0 for n in served), served  # both servers got queries

    assert all(e in summary["model"] for e in endpoints)
    assert summary["stopped_because"] == "completed" and summary["generations_completed"] == 1
    best = summary["best_train_fitness"]
    assert isinstance(best, (int, float)) and 0.0 <= best <= 1.0
    assert summary["llm_calls"] > 0 and summary["completion_tokens"] > 0
    run = Path(summary["run_dir"])
    assert (run / "summary.json").exists() and (run / "config.json").exists()
    generations = sorted(run.glob("generation_*.json"))
    assert [g.name for g in generations] == ["generation_000.json", "generation_001.json"]
    for path in generations:
        population = json.loads(path.read_text())["population"]
        assert len(population) == 4
        for unit in population:
            text = unit["prompts"]["task_prompt"]
            assert isinstance(text, str) and text.strip() and "\ufffd" not in text
            assert 0.0 <= unit["fitness"] <= 1.0
            for working in unit["workings"]:  # answers the scorer read as correct
                assert working["answer"].strip() and "\ufffd" not in working["answer"]



def test_a_server_that_goes_away_mid_query_fails_the_query_at_once_without_a_traceback(tmp_path, capfd):
    import aiohttp
    from lmql.models.lmtp.errors import LMTPStreamError
    from lmql.models.lmtp.lmtp_client import LMTPWebSocketClient

    server = Server("lost", tmp_path)
    try:
        server.wait_ready(time.monotonic() + START_TIMEOUT)
        model = remote_model(server.endpoint)  # installs lpb's handling of a lost connection
        tokenizer = model.get_tokenizer().tokenizer_impl
        ids = tokenizer.encode(format_chat(None, "Tell me a long story."))

        async def run():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"http://{server.endpoint}") as ws:
                    client = LMTPWebSocketClient(model.model_identifier, ws)
                    client.connect()
                    # end of sequence banned: the server is still generating when it goes away
                    stream = client.generate(ids, max_tokens=100_000, temperature=1.0,
                                             logit_bias={tokenizer.eos_token_id: -100})
                    await anext(stream)
                    server.stop()
                    # LMQL alone waits for the lost server forever: the bound only keeps a failing test finite
                    async for _ in stream:
                        pass

        with pytest.raises(LMTPStreamError, match="connection to the LMTP server closed"):
            asyncio.run(asyncio.wait_for(run(), 120))
        # the next query finds nothing at the endpoint: LMQL's error, without LMQL printing its traceback
        with pytest.raises(RuntimeError, match="attempting to communicate with lmtp endpoint"):
            asyncio.run(asyncio.wait_for(q_yes_no("Yes or no? ", model=model), 120))
        assert "File " not in capfd.readouterr().err
    finally:
        server.stop()


def test_serve_names_the_option_of_what_it_cannot_do(lpb, tmp_path):
    import socket

    assert lpb("serve", "--model", tmp_path / "nope.gguf").output.strip() == \
        f"Error: --model: no GGUF file at {tmp_path / 'nope.gguf'}"
    assert lpb("serve", "--cpus", "0,x").output.strip() == \
        "Error: --cpus: '0,x' is not a comma-separated list of core numbers"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = lpb("serve", "--port", port, "--quiet")
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: --host/--port (127.0.0.1:{port}): ") and "in use" in result.output
    assert len(result.output.strip().splitlines()) == 1
