"""The engine's scheduling on a fake in-memory llama.cpp context (no model): requests decoded together, prompt
prefixes kept and copied, masks, EOS, scoring, pre-emption, cancellation and errors."""

import asyncio
import threading

import numpy as np
import pytest

from lpb_plugins.llama_cpp.engine import MIN_TOKENS_BEFORE_PREEMPT, LlamaEngine
from lpb_plugins.llama_cpp.kv_cache import COPY_MIN_TOKENS, SequenceCache

VOCAB = 40
EOS, END_OF_TEXT = 2, 3  # both end a generation, like SmolLM2's <|im_end|> and <|endoftext|>
TRIGGER = 39  # the fake model's next token after it is END_OF_TEXT; it never chooses it itself


def favourite(tokens) -> int:
    """The fake model's likeliest next token after ``tokens``."""
    if tokens[-1] == TRIGGER:
        return END_OF_TEXT
    return (sum(tokens) * 7 + len(tokens)) % (TRIGGER - 4) + 4


def fake_logits(tokens) -> np.ndarray:
    distance = (np.arange(VOCAB) - favourite(tokens)) % VOCAB
    return (-0.5 * distance).astype(np.float32)


class FakeContext:
    """What the engine needs of LlamaContext; checks that every span continues what its sequence holds.

    ``allow(n)`` lets only ``n`` more decode calls through (None: any number); the next one waits."""

    def __init__(self, n_seq=4, n_ctx=200, n_batch=64):
        self.n_seq, self.n_ctx, self.n_batch, self.n_vocab = n_seq, n_ctx, n_batch, VOCAB
        self.eos_id, self.eog_ids = EOS, frozenset({EOS, END_OF_TEXT})
        self.held = [[] for _ in range(n_seq)]
        self.calls = []  # [(seq, number of tokens)] per decode call
        self.rows = {}
        self.fail_next = False
        self._permits = None
        self._permission = threading.Condition()

    def allow(self, n):
        with self._permission:
            self._permits = n
            self._permission.notify_all()

    def decode(self, spans):
        with self._permission:
            self._permission.wait_for(lambda: self._permits != 0)
            if self._permits is not None:
                self._permits -= 1
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("llama_decode failed")
        self.calls.append([(s.seq, len(s.tokens)) for s in spans])
        self.rows, n = {}, 0
        for span in sorted(spans, key=lambda s: s.seq):
            assert span.start == len(self.held[span.seq]), "span does not continue its sequence"
            span.rows = []
            for offset, token in enumerate(span.tokens):
                self.held[span.seq].append(token)
                if offset in span.outputs:
                    self.rows[n] = fake_logits(self.held[span.seq])
                    span.rows.append(n)
                n += 1
        assert n <= self.n_batch

    def logits(self, index):
        return self.rows[index]

    def keep_prefix(self, seq, n):
        del self.held[seq][n:]

    def copy_sequence(self, source, target):
        self.held[target] = list(self.held[source])

    def clear(self):
        self.held = [[] for _ in range(self.n_seq)]

    def set_threads(self, n_threads, n_threads_batch):
        pass


def greedy_alone(prompt, n):
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(favourite(tokens))
        if tokens[-1] in (EOS, END_OF_TEXT):
            break
    return tokens[len(prompt):]


async def collect(engine, ids, **kwargs):
    kwargs.setdefault("max_tokens", 8)
    return [item async for item in engine.generate(ids, **kwargs)]


async def all_at_once(engine, coroutines):
    """Run the coroutines so that the engine takes all their requests in one go: its worker is held inside
    a call until every request is queued."""
    gate = threading.Event()
    hold = asyncio.ensure_future(engine.run(gate.wait))
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    for _ in range(3):
        await asyncio.sleep(0.01)  # every task reaches its first wait, its request queued
    gate.set()
    await hold
    return await asyncio.gather(*tasks)


def make_engine(**kwargs):
    context = FakeContext(**kwargs)
    return LlamaEngine(context, n_threads=1), context


def as_reported(tokens):
    return [EOS if t in (EOS, END_OF_TEXT) else t for t in tokens]


PROMPTS = [[10 + k, 11, 12, 13 + k, 14] for k in range(6)]


def test_concurrent_requests_are_decoded_together_and_give_what_they_give_alone():
    engine, context = make_engine(n_seq=4)
    results = asyncio.run(all_at_once(engine, [collect(engine, p, max_tokens=6) for p in PROMPTS]))
    assert [[i["token"] for i in items] for items in results] == [as_reported(greedy_alone(p, 6)) for p in PROMPTS]
    assert len(context.calls[0]) == 4  # six requests, four sequences
    assert engine.stats["most_sequences_in_a_call"] == 4


def test_finish_reasons_logprobs_and_top_logprobs():
    engine, _ = make_engine()
    items = asyncio.run(collect(engine, [5, 6, 7], max_tokens=3, top_logprobs=3))
    assert [i["finish_reason"] for i in items] == [None, None, "length"]
    logits = fake_logits([5, 6, 7])
    expected = float(logits.max() - np.log(np.exp(logits).sum()))
    assert items[0]["logprob"] == pytest.approx(expected, abs=1e-5)
    assert len(items[0]["top_logprobs"]) == 3 and items[0]["token"] in items[0]["top_logprobs"]


def test_an_end_of_generation_token_ends_the_stream_as_eos():
    engine, _ = make_engine()
    items = asyncio.run(collect(engine, [5, 6, TRIGGER], max_tokens=20))
    assert [(i["token"], i["finish_reason"]) for i in items] == [(EOS, "stop")]
    assert engine.stats["last_finish_reason"] == "stop"


def test_the_mask_decides_which_tokens_may_be_chosen():
    engine, _ = make_engine()
    allowed = [7, 9]
    mask = np.full(VOCAB, np.finfo(np.float32).min, dtype=np.float32)
    mask[allowed] = 0
    items = asyncio.run(collect(engine, [1, 2, 3], max_tokens=5, mask=mask, top_logprobs=4))
    assert {i["token"] for i in items} <= set(allowed)
    assert all(set(i["top_logprobs"]) <= set(allowed) for i in items)
    assert all(sum(np.exp(lp) for lp in i["top_logprobs"].values()) == pytest.approx(1.0) for i in items)


def test_seeded_samples_depend_on_seed_and_position_only():
    engine, _ = make_engine(n_seq=3)

    async def alone(seed):
        return [i["token"] for i in await collect(engine, PROMPTS[0], temperature=1.5, seed=seed, max_tokens=8)]

    async def beside_others(seed):
        others = [collect(engine, p, temperature=1.5, max_tokens=8) for p in PROMPTS[1:4]]
        results = await asyncio.gather(alone(seed), *others)
        return results[0]

    first = asyncio.run(alone(5))
    assert asyncio.run(beside_others(5)) == first
    assert len({tuple(first), *(tuple(asyncio.run(alone(s))) for s in (6, 7, 8))}) > 1


def test_score_gives_the_logprob_of_each_token_after_the_ones_before():
    engine, context = make_engine()
    prompt, scored = [4, 5, 6], [7, 8, 9]
    result = asyncio.run(engine.score(prompt, scored))
    expected = []
    for k, token in enumerate(scored):
        logits = fake_logits(prompt + scored[:k])
        expected.append(float(logits[token] - np.log(np.exp(logits).sum())))
    assert result == pytest.approx(expected, abs=1e-5)
    # scoring the same again re-decodes only the last prompt token and the scored ones
    asyncio.run(engine.score(prompt, scored))
    assert context.calls[-1] == [(context.calls[-1][0][0], 3)]


def test_a_follow_up_request_reuses_the_prefix_its_sequence_holds():
    engine, context = make_engine()
    first = asyncio.run(collect(engine, PROMPTS[0], max_tokens=3))
    grown = PROMPTS[0] + [i["token"] for i in first] + [20, 21]
    asyncio.run(collect(engine, grown, max_tokens=2))
    assert engine.stats["reused_tokens"] >= len(PROMPTS[0]) + 2
    assert sum(n for _, n in context.calls[-2]) <= 3  # only what is new (and the last sampled token)


def test_requests_arriving_together_decode_a_shared_prefix_once_and_copy_it():
    engine, context = make_engine(n_seq=4)
    shared = list(range(4, 4 + COPY_MIN_TOKENS + 5))
    prompts = [shared + [30 + k, 31] for k in range(3)]
    results = asyncio.run(all_at_once(engine, [collect(engine, p, max_tokens=2) for p in prompts]))
    assert [[i["token"] for i in r] for r in results] == [as_reported(greedy_alone(p, 2)) for p in prompts]
    assert engine.stats["copied_tokens"] == 2 * len(shared)
    decoded = sum(n for call in context.calls for _, n in call)
    assert decoded < sum(len(p) for p in prompts)


def test_a_request_continuing_a_running_generation_ends_it():
    engine, context = make_engine()
    prompt = PROMPTS[0]

    async def run():
        context.allow(MIN_TOKENS_BEFORE_PREEMPT + 1)  # the next decode call waits
        stream = engine.generate(prompt, max_tokens=100)
        got = [await anext(stream) for _ in range(MIN_TOKENS_BEFORE_PREEMPT)]
        follow_up = asyncio.ensure_future(collect(engine, prompt + [t["token"] for t in got[:2]] + [25], max_tokens=2))
        await asyncio.sleep(0.01)  # queued while the worker waits
        context.allow(None)
        rest = [item async for item in stream]  # ends early: superseded
        return got + rest, await follow_up

    old, follow_up = asyncio.run(run())
    assert len(follow_up) == 2
    assert len(old) < 10 and old[-1]["finish_reason"] is None
    assert engine.stats["preempted"] == 1


def test_a_closed_stream_stops_being_decoded():
    engine, context = make_engine()

    async def run():
        context.allow(2)
        stream = engine.generate(PROMPTS[0], max_tokens=100)
        await anext(stream)
        await stream.aclose()
        context.allow(None)
        assert await collect(engine, PROMPTS[1], max_tokens=2)  # served after the closed stream is dropped

    asyncio.run(run())
    assert engine.stats["generated"] <= 3 + 2


def test_a_failed_decode_call_fails_its_requests_and_the_engine_goes_on():
    engine, context = make_engine()
    context.fail_next = True
    with pytest.raises(RuntimeError, match="llama_decode failed"):
        asyncio.run(collect(engine, PROMPTS[0]))
    assert len(asyncio.run(collect(engine, PROMPTS[0], max_tokens=3))) == 3


def test_prompts_longer_than_a_sequence_s_context_are_refused():
    engine, _ = make_engine(n_ctx=10)
    with pytest.raises(ValueError, match="context overflow"):
        asyncio.run(collect(engine, list(range(4, 15))))
    with pytest.raises(ValueError, match="context overflow"):
        asyncio.run(collect(engine, list(range(4, 12)), max_tokens=5))


def test_a_prompt_longer_than_a_batch_is_decoded_in_several_calls():
    engine, context = make_engine(n_batch=8)
    prompt = list(range(4, 24))
    items = asyncio.run(collect(engine, prompt, max_tokens=2))
    assert [i["token"] for i in items] == greedy_alone(prompt, 2)
    assert [n for call in context.calls[:3] for _, n in call] == [8, 8, 4]


def test_run_sync_and_clear_cache():
    engine, context = make_engine()
    asyncio.run(collect(engine, PROMPTS[0], max_tokens=2))
    assert engine.run_sync(lambda: 41 + 1) == 42
    engine.clear_cache()
    assert context.held == [[] for _ in range(context.n_seq)]
    asyncio.run(collect(engine, PROMPTS[0], max_tokens=2))
    assert engine.stats["reused_tokens"] == 0


# --------------------------------------------------------------------------
# placement alone
# --------------------------------------------------------------------------

def test_placement_prefers_the_longest_held_prefix_then_the_oldest_sequence():
    context = FakeContext(n_seq=3)
    cache = SequenceCache(context, 3)
    a = cache.place([1, 2, 3])
    cache.decoded(a[0], [1, 2])
    cache.release(a[0])
    b = cache.place([9, 9])
    cache.release(b[0])
    again = cache.place([1, 2, 5])
    assert again == (a[0], 2, None)  # keeps its prefix
    fresh = cache.place([7])
    assert fresh[0] not in (a[0], b[0]) and fresh[1] == 0  # the one never used
    assert cache.place([8]) is not None and cache.place([8]) is None  # all busy


def test_placement_waits_for_a_prefix_being_decoded_and_copies_a_decoded_one():
    context = FakeContext(n_seq=3)
    cache = SequenceCache(context, 3)
    shared = list(range(4, 4 + COPY_MIN_TOKENS))
    first = cache.place(shared + [1])
    assert cache.place(shared + [2]) is None  # the prefix is still to be decoded
    cache.decoded(first[0], shared + [1])
    context.held[first[0]] = shared + [1]
    cache.step_done()
    seq, start, copied_from = cache.place(shared + [2])
    assert (start, copied_from) == (len(shared), first[0])
    assert context.held[seq] == shared


def test_busy_sequences_are_moved_to_consecutive_ids_keeping_what_they_hold():
    context = FakeContext(n_seq=5)
    cache = SequenceCache(context, 5)
    placed = [cache.place(prompt)[0] for prompt in PROMPTS[:5]]
    for seq, prompt in zip(placed, PROMPTS):
        cache.decoded(seq, prompt)
        context.held[seq] = list(prompt)
    cache.step_done()
    cache.release(placed[1])
    cache.release(placed[3])
    moves = cache.compact()
    # ids 0, 2, 4 busy: the first window of three with two of them keeps its own, 4 moves into 1
    assert moves == {placed[4]: placed[1]}
    assert cache.busy == [True, True, True, False, False]
    assert context.held[placed[1]] == cache.held[placed[1]] == PROMPTS[4]
    assert cache.held[placed[4]] == PROMPTS[4]  # the old place still holds it for later requests
    assert cache.compact() == {}


def test_a_generation_moved_to_close_a_gap_goes_on_as_it_would_have():
    engine, context = make_engine(n_seq=4)
    lengths = (8, 1, 8)
    results = asyncio.run(all_at_once(engine, [collect(engine, p, max_tokens=n) for p, n in zip(PROMPTS, lengths)]))
    for prompt, n, result in zip(PROMPTS, lengths, results):
        assert [r["token"] for r in result] == as_reported(greedy_alone(prompt, n))
    assert engine.stats["moved"] == 1
    # once the short one ended, the other two were decoded side by side, at consecutive ids
    later = [sorted(seq for seq, _ in call) for call in context.calls[2:]]
    assert later and all(seqs == list(range(seqs[0], seqs[0] + len(seqs))) for seqs in later)
