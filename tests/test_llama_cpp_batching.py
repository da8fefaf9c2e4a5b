"""Several sequences per llama_decode call, on the real embedded model: a sequence's logits and tokens must
not depend on what it is batched with, and shared prompt prefixes are copied, not decoded again."""

import asyncio

import numpy as np
import pytest

lmql = pytest.importorskip("lmql")
pytest.importorskip("llama_cpp")

from lpb_core.llm import SAMPLE_SEED_ARG  # noqa: E402
from lpb_plugins.llama_cpp.batch import DecodeBatch, Span  # noqa: E402
from lpb_plugins.llama_cpp.chat import format_chat  # noqa: E402
from lpb_plugins.llama_cpp.gguf_tokenizer import GGUFTokenizer, tokenizer_dir_for  # noqa: E402
from lpb_plugins.llama_cpp.kv_cache import COPY_MIN_TOKENS, common_prefix  # noqa: E402
from lpb_plugins.llama_cpp.llama_context import LlamaContext  # noqa: E402
from lpb_plugins.llama_cpp.lmql_model import load_model  # noqa: E402
from lpb_plugins.llama_cpp.model_files import embedded_model_path  # noqa: E402

pytestmark = pytest.mark.embedded

REVIEWS = ["The food was cold and the waiter was rude.", "Best purchase I have made this year.",
           "It broke after two days.", "A warm, funny and beautifully written novel."]


def chat_ids(user: str):
    tokenizer = GGUFTokenizer(tokenizer_dir_for(embedded_model_path()))
    return tokenizer.encode(format_chat("You classify the sentiment of reviews.", user))


@pytest.fixture(scope="module")
def context():
    ctx = LlamaContext(embedded_model_path(), n_seq=4, n_ctx=256, n_batch=256, n_threads=1, n_threads_batch=1)
    yield ctx
    ctx.close()


def greedy(context, batch, runs, steps, threads=1):
    """Decode each run's prompt, then ``steps`` greedy tokens; every call holds all runs, in the order given
    (one run per call when ``runs`` has one).  ``runs``: [(seq, prompt ids)] -> {seq: [logits per step]}."""
    context.clear()
    context.set_threads(threads, threads)
    logits = {seq: [] for seq, _ in runs}
    spans = [Span(seq, ids, 0, [len(ids) - 1]) for seq, ids in runs]
    for _ in range(steps + 1):
        batch.decode(spans)
        for span in spans:
            logits[span.seq].append(np.array(context.logits(span.rows[0]), copy=True))
        spans = [Span(s.seq, [int(np.argmax(logits[s.seq][-1]))], s.start + len(s.tokens), [0])
                 for s in reversed(spans)]  # another order in the batch every step
    return logits


def test_a_sequences_logits_do_not_depend_on_what_shares_its_decode_calls(context):
    """Bit-identical logits for a prompt and its greedy continuation decoded alone in sequence 0, or in
    sequence 2 beside three other sequences whose prompts have other lengths, at other places in the batch,
    with two threads instead of one."""
    batch = DecodeBatch(context, context.n_batch)
    prompts = [chat_ids(f"Review: {r}") for r in REVIEWS]
    alone = greedy(context, batch, [(0, prompts[0])], steps=6)[0]
    together = greedy(context, batch, [(3, prompts[1]), (2, prompts[0]), (0, prompts[2]), (1, prompts[3])],
                      steps=6, threads=2)
    assert len(alone) == len(together[2]) == 7
    assert all(np.array_equal(a, b) for a, b in zip(alone, together[2]))
    # the other sequences' logits differ: the comparison is not between copies of one row
    assert not np.array_equal(together[3][0], together[2][0])
    batch.close()


def test_a_copied_prefix_gives_the_logits_of_a_decoded_one(context):
    """A sequence started from another's cells (copied whole, then trimmed) continues exactly as if it had
    decoded the prefix itself, also when the copy and the continuation happen in one decode call beside
    the source's own next token."""
    batch = DecodeBatch(context, context.n_batch)
    prompt = chat_ids(f"Review: {REVIEWS[1]}")
    other = chat_ids(f"Review: {REVIEWS[2]}")
    shared = common_prefix(prompt, other)
    assert shared >= COPY_MIN_TOKENS
    context.clear()
    alone = Span(0, prompt, 0, [len(prompt) - 1])
    batch.decode([alone])
    decoded = np.array(context.logits(alone.rows[0]), copy=True)

    context.clear()
    batch.decode([Span(1, other, 0, [len(other) - 1])])
    context.copy_sequence(1, 3)
    context.keep_prefix(3, shared)
    continued = Span(3, prompt[shared:], shared, [len(prompt) - shared - 1])
    batch.decode([continued, Span(1, [42], len(other), [0])])
    assert np.array_equal(decoded, context.logits(continued.rows[0]))
    batch.close()


# --------------------------------------------------------------------------
# through the engine and LMQL
# --------------------------------------------------------------------------

@lmql.query
async def q_answer(prompt):
    '''lmql
    argmax
    "{prompt}[ANSWER]" where len(TOKENS(ANSWER)) < 12 and STOPS_AT(ANSWER, "\\n")
    return ANSWER
    '''


@lmql.query
async def q_sampled(prompt):
    '''lmql
    sample(temperature=1.0)
    "{prompt}[TEXT]" where len(TOKENS(TEXT)) < 16
    return TEXT
    '''


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_queries_decoded_together_give_what_they_give_alone(model):
    prompts = [format_chat("Answer with one word: positive or negative.", f"Review: {r}") for r in REVIEWS]
    engine = model.engine
    alone = [asyncio.run(q_answer(p, model=model)) for p in prompts]

    async def together():
        return await asyncio.gather(*(q_answer(p, model=model) for p in prompts))

    before = engine.stats["most_sequences_in_a_call"]
    engine.stats["most_sequences_in_a_call"] = 0
    assert asyncio.run(together()) == alone
    assert engine.stats["most_sequences_in_a_call"] >= 2  # they were batched
    engine.stats["most_sequences_in_a_call"] = max(before, engine.stats["most_sequences_in_a_call"])


def test_seeded_samples_decoded_together_give_what_they_give_alone(model):
    prompts = [format_chat(None, f"Write about {topic}.") for topic in ("the sea", "a cat", "bread", "rain")]
    alone = [asyncio.run(q_sampled(p, model=model, **{SAMPLE_SEED_ARG: 11 + k})) for k, p in enumerate(prompts)]

    async def together():
        return await asyncio.gather(*(q_sampled(p, model=model, **{SAMPLE_SEED_ARG: 11 + k})
                                      for k, p in enumerate(prompts)))

    assert asyncio.run(together()) == alone
    assert len(set(alone)) == len(alone)


def test_items_of_one_unit_share_their_prompt_prefix(model):
    """Concurrent queries whose prompts start alike decode the common part once and copy it."""
    engine = model.engine
    engine.clear_cache()
    prompts = [format_chat("You classify the sentiment of reviews. " * 4, f"Review: {r}") for r in REVIEWS]
    tokenizer = GGUFTokenizer(tokenizer_dir_for(embedded_model_path()))
    submitted = sum(len(tokenizer.encode(p)) for p in prompts)
    copied, evaluated, generated = (engine.stats[k] for k in ("copied_tokens", "evaluated", "generated"))

    async def together():
        return await asyncio.gather(*(q_answer(p, model=model) for p in prompts))

    asyncio.run(together())
    assert engine.stats["copied_tokens"] - copied >= 3 * COPY_MIN_TOKENS
    prompt_tokens_decoded = (engine.stats["evaluated"] - evaluated) - (engine.stats["generated"] - generated)
    assert prompt_tokens_decoded <= submitted - (engine.stats["copied_tokens"] - copied) + len(prompts)
