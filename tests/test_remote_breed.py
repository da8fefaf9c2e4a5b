"""A breed against an OpenAI-compatible server that fails: failed items counted, a server that stays down
stops the breed with the command that resumes it. The fake server (tests/openai_fake.py) needs no model."""

from __future__ import annotations

import json
import shlex
import socket
import threading

import pytest

from lpb_core.retry import CONSECUTIVE_FAILURES_TO_STOP
from lpb_plugins.llama_cpp.openai_model import served_tokenizer
from tests.openai_fake import FakeOpenAIServer

BREED = ["--model-name-or-path", "openai/smollm2", "--task", "sentiment", "--population-size", "4",
         "--fitness-batch-size", "4", "--test-split", "0.2", "--seed", "2", "--request-timeout", "5"]


@pytest.fixture
def server():
    tokenizer = served_tokenizer(None, "smollm2")[1]
    fake = FakeOpenAIServer(tokenizer)
    fake.decode = lambda payload: tokenizer.decode(payload["prompt"]) if isinstance(payload["prompt"], list) \
        else payload["prompt"]
    yield fake
    fake.stop()


def test_calls_that_keep_failing_count_as_failed_items_and_the_breed_goes_on(lpb, day_care, server, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    suite = json.loads((day_care / "sentiment" / "fitness_test_suite.json").read_text())
    doomed = suite[0]["text"]
    server.fail_when = lambda payload: doomed in server.decode(payload)
    result = lpb("breed", "--day-care-dir", day_care, *BREED, "--evolution-generations", "1",
                 "--fitness-batch-size", "0", "--max-retries", "1", "--api-base", server.api_base)
    assert result.exit_code == 0, result.output
    summary = json.loads((day_care / "sentiment" / "RUN_0" / "summary.json").read_text())
    failed = [r for r in server.requests if r["answer"] == 503]
    assert summary["failed_calls"] == len(failed) // 2 > 0  # each failed call: the request and its one retry
    assert summary["retries"] == summary["failed_calls"]
    assert summary["failed_items"] == summary["failed_calls"]  # only fitness items mention the review
    config = json.loads((day_care / "sentiment" / "RUN_0" / "config.json").read_text())
    assert config["model"].startswith(f"openai/smollm2 at {server.api_base} (completions")
    assert config["unenforced_constraints"] == {}  # the server honours logit_bias: every constraint holds


def test_a_server_that_stays_down_ends_the_breed_resumably(lpb, day_care, server, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    run = day_care / "sentiment" / "RUN_0"
    server.fail_when = lambda payload: (run / "generation_000.json").exists()
    result = lpb("breed", "--day-care-dir", day_care, *BREED, "--evolution-generations", "2", "--max-retries", "0",
                 "--api-base", server.api_base)
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: the model stopped answering: "
                           f"{CONSECUTIVE_FAILURES_TO_STOP} calls in a row failed; the last: ")
    assert "HTTP 503" in line and "; the run is saved: resume with lpb breed " in line
    assert sorted(p.name for p in run.glob("generation_*.json")) == ["generation_000.json"]

    server.fail_when = None  # the server is back
    resume = shlex.split(line.split("resume with ", 1)[1])
    assert resume[:2] == ["lpb", "breed"] and resume[-2:] == ["--continue-run-number", "0"]
    result = lpb(*resume[1:])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["generations_completed"] == 2


def test_an_eval_whose_every_call_fails_ends_with_one_line_not_a_score(lpb, day_care, monkeypatch):
    """Fewer calls than the run of failures that stops a breed: without this, a server that is down scored 0.000."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    suite = day_care / "two.json"
    suite.write_text(json.dumps([{"text": "Great!", "gold_sentiment": "positive"},
                                 {"text": "Awful.", "gold_sentiment": "negative"}]))
    with socket.socket() as rude:  # a server that takes each connection and closes it at once
        rude.bind(("127.0.0.1", 0))
        rude.listen(8)
        port = rude.getsockname()[1]

        def hang_up():
            while True:
                try:
                    rude.accept()[0].close()
                except OSError:  # the socket closed: the test is over
                    return

        threading.Thread(target=hang_up, daemon=True).start()
        result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "openai/model",
                     "--api-base", f"http://127.0.0.1:{port}/v1", "--prompt", "Positive or negative?", "--suite",
                     suite, "--max-retries", "0", "--request-timeout", "2")
    assert result.exit_code == 1
    # beside the progress and the warnings said before scoring (a chat model cannot enforce the label constraint)
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(result.stderr.strip().splitlines()) == 1 + sum(
        1 for line in result.stderr.splitlines() if line.startswith(("  scored ", "Warning: ")))
    assert line.startswith("Error: every one of the 2 calls failed; the last: fitness_test_template on openai/model "
                           f"at http://127.0.0.1:{port}/v1 (chat): ")


def test_an_eval_with_some_failed_calls_says_so_beside_the_score(lpb, day_care, server, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    server.fail_when = lambda payload: "Awful." in server.decode(payload)
    suite = day_care / "two.json"
    suite.write_text(json.dumps([{"text": "Great!", "gold_sentiment": "positive"},
                                 {"text": "Awful.", "gold_sentiment": "negative"}]))
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "openai/smollm2",
                 "--api-base", server.api_base, "--prompt", "Positive or negative?", "--suite", suite,
                 "--max-retries", "0")
    assert result.exit_code == 0, result.output
    assert "Warning: 1 of 2 calls failed after their retries and are scored as wrong; the last: " in result.stderr
    assert "HTTP 503" in result.stderr


def test_an_eval_on_a_chat_server_says_which_constraints_it_cannot_enforce(lpb, day_care, server, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("SLOW_TOKENIZER_OK", "1")
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path",
                 "openai/gpt-4o-mini", "--api-base", server.api_base, "--prompt", "Positive or negative?")
    assert result.exit_code == 0, result.output
    warning = ("Warning: fitness_test_template: the model cannot enforce ANSWER in ['positive', 'negative']; the "
               "answer is generated short and read by the scorer")
    assert warning in result.stderr
    assert result.stderr.index(warning) < result.stderr.index("scored 1/1 prompts")  # before the scoring, not after


def test_a_base_url_without_v1_is_one_line_with_a_hint(lpb, day_care, server, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = lpb("breed", "--day-care-dir", day_care, *BREED, "--evolution-generations", "0", "--max-retries", "0",
                 "--api-base", server.api_base.removesuffix("/v1"))
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "--api-base" in line and "HTTP 404" in line
    assert line.endswith("(an OpenAI-compatible base URL usually ends in /v1)")


def test_an_endpoint_where_no_server_answers_is_one_line_before_any_query(lpb, day_care):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--endpoint", f"127.0.0.1:{port}",
                 "--prompt", "Positive or negative?")
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"Error: command line: --endpoint: nothing answers at 127.0.0.1:{port} (")
    assert line.endswith("is `lpb serve` running there?")


def test_openai_base_url_from_the_environment(lpb, day_care, server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.api_base)
    result = lpb("breed", "--day-care-dir", day_care, *BREED, "--evolution-generations", "0")
    assert result.exit_code == 0, result.output
    assert len(server.requests) > 2


def test_a_wrong_tokenizer_option_is_an_input_error(lpb, day_care, server, tmp_path):
    result = lpb("breed", "--day-care-dir", day_care, *BREED, "--evolution-generations", "0", "--api-base",
                 server.api_base, "--tokenizer", tmp_path / "nothing.gguf")
    assert result.exit_code == 2
    assert f"--tokenizer: {tmp_path / 'nothing.gguf'}: no such file or folder" in result.output
    (tmp_path / "notes.txt").write_text("not a tokenizer")
    result = lpb("breed", "--day-care-dir", day_care, *BREED, "--evolution-generations", "0", "--api-base",
                 server.api_base, "--tokenizer", tmp_path / "notes.txt")
    assert result.exit_code == 2
    assert "--tokenizer" in result.output and "neither a .gguf file" in result.output
    result = lpb("breed", "--day-care-dir", day_care, *BREED[2:], "--model-name-or-path", "smollm3", "--api-base",
                 server.api_base)
    assert "no model backend accepts 'smollm3' (backends: llama.cpp, openai, random); a model of the --api-base " \
           "server is given as openai/smollm3" in result.output


def test_a_server_without_a_known_tokenizer_gets_chat_messages_and_unenforced_constraints_are_reported(
        lpb, day_care, server, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("SLOW_TOKENIZER_OK", "1")  # LMQL counts tokens with GPT-2's pure-Python tokenizer here
    result = lpb("breed", "--day-care-dir", day_care, *BREED, "--model-name-or-path", "openai/gpt-4o-mini",
                 "--evolution-generations", "1", "--api-base", server.api_base)
    assert result.exit_code == 0, result.output
    assert ("fitness_test_template: the model cannot enforce ANSWER in ['positive', 'negative']; the answer is "
            "generated short and read by the scorer") in result.output
    config = json.loads((day_care / "sentiment" / "RUN_0" / "config.json").read_text())
    assert config["model"] == f"openai/gpt-4o-mini at {server.api_base} (chat)"
    assert config["unenforced_constraints"] == {"fitness_test_template": ["ANSWER in ['positive', 'negative']"]}
    chats = [r["payload"] for r in server.requests if "messages" in r["payload"]]
    assert chats and all(p["model"] == "gpt-4o-mini" and "logit_bias" not in p for p in chats)
    summary = json.loads((day_care / "sentiment" / "RUN_0" / "summary.json").read_text())
    # the short answer stops at the newline and the scorer reads the label from the words
    assert summary["best_train_fitness"] > 0 and summary["failed_calls"] == 0


UNLUCKY_OPERATOR = """
    from lpb_core.hookspecs import hookimpl
    from lpb_core.retry import CallFailed

    class Unlucky:
        name = "unlucky"
        templates = ()

        async def mutate(self, ctx):
            raise CallFailed("completion of 12 prompt tokens: HTTP 503 (after 5 retries)")

    @hookimpl
    def lpb_register_mutation_operators(register):
        register(Unlucky())
"""


@pytest.mark.parametrize("operators, expected", [("unlucky,zero_order_prompt_gen", "zero_order_prompt_gen"),
                                                 ("unlucky", "copy")])
def test_a_failed_mutation_call_falls_back_to_another_operator_or_leaves_a_copy(lpb, day_care, install_plugin,
                                                                                operators, expected):
    from tests.conftest import SMALL_RUN

    install_plugin(UNLUCKY_OPERATOR)
    result = lpb("breed", "--day-care-dir", day_care, *SMALL_RUN, "--operators", operators)
    assert result.exit_code == 0, result.output
    births = [b for n in (1, 2) for b in json.loads(
        (day_care / "sentiment" / "RUN_0" / f"generation_{n:03d}.json").read_text())["births"]]
    assert births and {b["operator"] for b in births} == {expected}
    if expected == "copy":
        assert all(b["notes"]["copy"]["failed_calls"] == ["unlucky: completion of 12 prompt tokens: HTTP 503 "
                                                          "(after 5 retries)"] for b in births)


def test_is_async_keeps_several_requests_in_flight(lpb, day_care, server, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = lpb("breed", "--day-care-dir", day_care, *BREED, "--evolution-generations", "0", "--is-async",
                 "--client-batch-size", "4", "--api-base", server.api_base)
    assert result.exit_code == 0, result.output
    assert 2 <= server.max_in_flight() <= 4


def test_lmqls_cache_warning_for_a_failed_stream_is_not_shown_beside_the_querys_own_error():
    import warnings

    from lmql.runtime.dclib.dclib_cache import CacheWarning

    from lpb_plugins.llama_cpp.lmql_patches import fail_queries_when_lmtp_server_goes

    fail_queries_when_lmtp_server_goes()  # what opening an lpb serve model installs
    with warnings.catch_warnings(record=True) as shown:
        warnings.warn("CachedDcModel: underlying model raised an exception", category=CacheWarning)
    assert not shown
