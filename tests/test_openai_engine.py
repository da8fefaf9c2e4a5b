"""The completions engine's pieces: masks as logit_bias, token ids read back from text pieces, a server that
breaks a constraint found out. Uses the embedded GGUF's tokenizer only (no weights)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lpb_core.errors import ModelError
from lpb_core.retry import RetryPolicy
from lpb_plugins.llama_cpp.openai_engine import CompletionsEngine, PieceReader, logit_bias_for
from lpb_plugins.llama_cpp.openai_model import served_tokenizer
from lpb_plugins.remote_calls import JsonClient
from tests.openai_fake import FakeOpenAIServer


@pytest.fixture(scope="module")
def tokenizer():
    return served_tokenizer(None, "smollm2")[1]


def test_few_allowed_tokens_are_sent_as_the_only_ones_many_as_the_banned_ones():
    mask = np.full(10, np.finfo(np.float32).min)
    mask[[3, 7]] = 0
    allowed, bias = logit_bias_for(mask, 10)
    assert bias == {"3": 100.0, "7": 100.0} and allowed.tolist() == [i in (3, 7) for i in range(10)]
    allowed, bias = logit_bias_for(np.where(mask == 0, np.finfo(np.float32).min, 0), 10)
    assert bias == {"3": -100.0, "7": -100.0} and not allowed[3]
    assert logit_bias_for(None, 10) == (None, None)
    assert logit_bias_for(np.zeros(10), 10) == (None, None)
    assert logit_bias_for(4, 10)[1] == {"4": 100.0}


def test_pieces_are_read_back_as_ids_and_split_characters_from_their_text(tokenizer):
    reader = PieceReader(tokenizer)
    text = "Sure 🌟\nI'm"
    ids = tokenizer.encode(text)
    # what llama-cpp-python's server reports: each token's bytes decoded with errors="ignore", so the parts of
    # the emoji split over tokens come back empty; offsets count the characters decoded so far
    pieces = [tokenizer.decode(tokenizer.encode("a") + [token])[1:].replace("\ufffd", "") for token in ids]
    offsets = [100 + len(tokenizer.decode(ids[:i]).replace("\ufffd", "")) for i in range(len(ids))]
    assert "" in pieces  # the test covers a split character
    read = reader.read({"tokens": pieces, "token_logprobs": [-1.0] * len(ids), "text_offset": offsets,
                        "top_logprobs": [{p: -1.0} for p in pieces]}, text)
    assert tokenizer.decode([token for token, *_ in read]) == text
    assert sum(not exact for *_, exact in read) >= pieces.count("")
    assert reader.read({"tokens": ["token_id:42"], "token_logprobs": [-0.1]}, "x")[0][:2] == (42, -0.1)


def test_a_server_that_breaks_the_mask_is_an_error_not_a_wrong_answer(tokenizer):
    fake = FakeOpenAIServer(tokenizer, honour_logit_bias=False)
    engine = CompletionsEngine(JsonClient(fake.api_base, RetryPolicy(max_retries=0, timeout=10)), "m", tokenizer)
    allowed = tokenizer.encode(" yes")[:1] + tokenizer.encode(" no")[:1]

    async def generate():
        try:
            return [item async for item in engine.generate(tokenizer.encode("Say yes or no:"), max_tokens=3,
                                                           mask=allowed)]
        finally:
            await engine.client.aclose()

    try:
        with pytest.raises(ModelError, match="ignored logit_bias: it produced 'Be', which the constraint bans"):
            asyncio.run(generate())
        request = fake.requests[-1]["payload"]
        assert request["logit_bias"] == {str(i): 100.0 for i in allowed}
        assert request["max_tokens"] == 1  # the mask of the token after a label's first piece is another one
    finally:
        fake.stop()


def test_the_end_of_a_turn_is_the_tokenizers_eos(tokenizer):
    fake = FakeOpenAIServer(tokenizer, reply="Yes.")
    engine = CompletionsEngine(JsonClient(fake.api_base, RetryPolicy(max_retries=0, timeout=10)), "m", tokenizer)

    async def generate():
        try:
            return [item async for item in engine.generate([1, 2, 3], max_tokens=8, top_logprobs=3)]
        finally:
            await engine.client.aclose()

    try:
        items = asyncio.run(generate())
        assert [i["token"] for i in items] == tokenizer.encode("Yes.") + [tokenizer.eos_token_id]
        assert [i["finish_reason"] for i in items][-2:] == [None, "stop"]
        assert fake.requests[0]["payload"]["logprobs"] == 3
    finally:
        fake.stop()
