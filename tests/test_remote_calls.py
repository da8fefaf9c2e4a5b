"""Failures of remote calls, driven by a fault-injecting OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from lpb_core.retry import CallFailed, RetryPolicy, TransientFailure, call_with_retries, recording
from lpb_plugins.llama_cpp.openai_model import served_model, served_tokenizer
from lpb_plugins.remote_calls import JsonClient, RequestRefused, retry_after_seconds
from tests.openai_fake import FakeOpenAIServer

FAST = RetryPolicy(max_retries=5, timeout=0.5, base_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def tokenizer():
    return served_tokenizer(None, "smollm2")


@pytest.fixture
def server(tokenizer):
    fake = FakeOpenAIServer(tokenizer[1])
    yield fake
    fake.stop()


def post(server, payload=None, policy=FAST):
    async def go():
        client = JsonClient(server.api_base, policy)
        try:
            with recording() as record:
                answer = await client.post("completions", payload or {"prompt": [1, 2], "max_tokens": 2}, "test call")
            return answer, record.retries
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_each_kind_of_transient_failure_is_retried_until_the_answer(server):
    server.faults = [429, 500, 503, "hang", "close"]
    answer, retries = post(server)
    assert answer["choices"][0]["text"]
    assert retries == 5
    assert server.answered()[:5] == [429, 500, 503, None, "close"]  # the hung request never answered
    assert server.answered()[5] == 200


def test_retries_stop_at_the_limit_and_the_call_fails_naming_the_last_failure(server):
    server.faults = [503] * 3
    with pytest.raises(CallFailed, match=r"test call: HTTP 503 from .*/v1/completions: scripted 503 \(after 2 retries\)"):
        post(server, policy=RetryPolicy(max_retries=2, timeout=1, base_delay=0.01))
    assert server.answered() == [503, 503, 503]


def test_a_client_error_is_not_retried(server):
    server.faults = [400]
    with pytest.raises(RequestRefused, match="HTTP 400"):
        post(server)
    assert server.answered() == [400]


def test_retry_after_is_honoured(tokenizer):
    fake = FakeOpenAIServer(tokenizer[1], retry_after="0.3")
    try:
        fake.faults = [429]
        post(fake, policy=RetryPolicy(max_retries=1, timeout=5, base_delay=0.001, max_delay=0.001))
        first, second = fake.requests
        assert second["opened"] - first["closed"] >= 0.29
    finally:
        fake.stop()


def test_backoff_grows_exponentially_with_jitter_and_respects_retry_after():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    rng = random.Random(0)
    delays = [[policy.delay(retry, None, rng) for _ in range(200)] for retry in range(5)]
    assert [max(d) <= bound for d, bound in zip(delays, (1, 2, 4, 8, 8))] == [True] * 5
    assert max(delays[3]) > 4  # the ceiling doubles
    assert len({round(d, 6) for d in delays[2]}) > 100  # jitter: clients do not retry in step
    assert policy.delay(0, 20.0, rng) == 20.0  # the server's Retry-After wins, even beyond max_delay


def test_retry_after_in_seconds_or_as_a_date():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


def test_a_request_that_hangs_counts_as_a_timeout():
    async def hang():
        await asyncio.sleep(10)

    with pytest.raises(CallFailed, match=r"no answer within 0.05s"):
        asyncio.run(call_with_retries(hang, RetryPolicy(max_retries=1, timeout=0.05, base_delay=0.001), "hung"))


def test_retries_are_counted_for_the_call_that_made_them():
    sleeps = []

    async def fake_sleep(seconds):
        sleeps.append(seconds)

    async def flaky(outcomes):
        outcome = outcomes.pop(0)
        if outcome:
            raise TransientFailure("busy", retry_after=outcome)
        return "done"

    async def two_calls():
        async def one(outcomes):
            with recording() as record:
                await call_with_retries(lambda: flaky(outcomes), RetryPolicy(base_delay=0.001), "x", sleep=fake_sleep)
            return record.retries

        return await asyncio.gather(one([2.0, 0]), one([1.0, 1.0, 1.0, 0]))

    assert asyncio.run(two_calls()) == [1, 3]
    assert sorted(sleeps) == [1.0, 1.0, 1.0, 2.0]


def test_the_engine_finds_a_server_that_takes_only_text_prompts(tokenizer):
    fake = FakeOpenAIServer(tokenizer[1], text_prompts=True)
    try:
        model = served_model(fake.api_base, "smollm2", *tokenizer, FAST)
        assert model.engine.prompt_as_ids is False and model.honours_logit_bias is True
        assert isinstance(fake.requests[-1]["payload"]["prompt"], str)
    finally:
        fake.stop()


def test_a_server_that_ignores_logit_bias_is_found_out(tokenizer):
    fake = FakeOpenAIServer(tokenizer[1], honour_logit_bias=False)
    try:
        model = served_model(fake.api_base, "smollm2", *tokenizer, FAST)
        assert model.honours_logit_bias is False
        probe = fake.requests[-1]["payload"]
        assert list(probe["logit_bias"].values()) == [100.0]
        assert json.dumps(probe)  # a plain JSON request
    finally:
        fake.stop()


def test_a_query_to_a_server_that_went_away_fails_after_the_query_timeout_instead_of_hanging():
    """LMQL's LMTP client waits forever for a server that died mid-query; a handle's query_timeout bounds it."""
    from lpb_core.llm import LanguageModel, ModelHandle

    def model(query_timeout):
        handle = ModelHandle(description="lpb serve", models=(), count_tokens=len, query_timeout=query_timeout)
        return LanguageModel(handle, retry_policy=RetryPolicy(max_retries=1, timeout=60, base_delay=0.01))

    calls = []

    async def never_answers():
        calls.append(1)
        await asyncio.sleep(3600)

    with pytest.raises(CallFailed, match=r"no answer within 0.1s"):
        asyncio.run(asyncio.wait_for(model(0.1)._query(never_answers, "fitness_test_template"), 5))
    assert len(calls) == 2  # sent again once (max_retries=1), then given up
    with pytest.raises(asyncio.TimeoutError):  # without a query timeout: waits (here until the test's own limit)
        asyncio.run(asyncio.wait_for(model(None)._query(never_answers, "fitness_test_template"), 0.3))


def test_an_error_body_is_shown_by_its_message():
    from lpb_plugins.remote_calls import _excerpt

    assert _excerpt('{"error": {"message": "model not found"}}') == "model not found"
    assert _excerpt('{"detail": "Not Found"}') == "Not Found"  # FastAPI, as llama-cpp-python's server answers
    assert _excerpt('{"object": "list"}') == '{"object": "list"}'
    assert _excerpt("<html>busy</html>") == "<html>busy</html>"
