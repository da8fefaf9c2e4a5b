"""Raw llama-cpp-python vs. LMQL through lpb_plugins.llama_cpp (the in-process model).

Same chat prompts, greedy decoding, in one run:

* raw-99:       ``Llama.generate(temp=0)`` until 99 tokens or an EOG token
* lmql+constr.: ``argmax "{p}[X]" where len(TOKENS(X)) < 100``  (vs raw-99)
* raw-eos:      ``Llama.generate(temp=0)`` until an EOG token
* lmql free:    ``argmax "{p}[X]"`` (no where clause, ends at EOS; vs raw-eos)

The prompts are chosen so that SmolLM2 ends its answer by itself after
~80-250 tokens (LMQL's ``max_len`` is a hard assertion, not a limit, so an
unconstrained variable can only be bounded by EOS).

for each requested ``n_threads``.  Every measurement starts from an empty KV
cache (prompt evaluation included on both sides) and counts the tokens
actually produced.

    python benchmarks/bench_backend.py [--threads 1 2] [--repeat 2] [--profile out.prof]
    python benchmarks/bench_backend.py --sentiment    # chat template vs raw prompt accuracy

Needs ``lpb_plugins`` importable (installed project, or PYTHONPATH pointing
to a folder with a ``lpb_plugins -> plugins`` link).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time

import lmql

from lpb_plugins.llama_cpp.chat import format_chat
from lpb_plugins.llama_cpp.cpu import usable_cores
from lpb_plugins.llama_cpp.lmql_model import load_model
from lpb_plugins.llama_cpp.model_files import embedded_model_path

QUESTIONS = [
    "Give me three tips for better sleep.",
    "What is photosynthesis?",
    "Explain what a hash table is.",
]
PROMPTS = [format_chat(None, q) for q in QUESTIONS]
N_TOKENS = 100  # len(TOKENS(X)) < 100  ->  at most 99 generated tokens
RAW_CAP = 1000


@lmql.query
async def constrained(p):
    '''lmql
    argmax
    "{p}[X]" where len(TOKENS(X)) < 100
    return X
    '''


@lmql.query
async def unconstrained(p):
    '''lmql
    "{p}[X]"
    return X
    '''


def raw_run(llm, prompt: str, eog, cap: int) -> int:
    llm.reset()
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    n = 0
    for tok in llm.generate(ids, temp=0.0):
        if tok in eog:
            break
        n += 1
        if n >= cap:
            break
    return n


async def lmql_run(model, prompt: str, with_constraint: bool) -> int:
    model.engine.clear_cache()  # cold KV cache, like raw
    tok = model.adapter.get_tokenizer().tokenizer_impl
    if with_constraint:
        x = await constrained(prompt, model=model)
    else:
        x = await unconstrained(prompt, model=model, decoder="argmax")
    return len(tok.encode(x))


async def bench(threads, repeat, warmup=2, profile=None):
    from llama_cpp import Llama

    path = embedded_model_path()
    # Load every configuration first and interleave them inside each round:
    # this VM's speed drifts a lot over seconds (fresh processes start slow),
    # so sequential phases per n_threads would compare different machines.
    raws, models = {}, {}
    for nt in threads:
        # same prompt-eval threads as the engine uses
        raws[nt] = Llama(model_path=str(path), n_ctx=2048, n_threads=nt,
                         n_threads_batch=max(nt, usable_cores()), verbose=False)
        models[nt] = load_model(path, n_threads=nt)
    eog = models[threads[0]].engine.eog_ids
    res = {nt: {"raw-99": [], "lmql+constraint": [], "raw-eos": [], "lmql free": []} for nt in threads}

    def timed(nt, key, fn):
        t = time.perf_counter()
        n = fn()
        res[nt][key].append((n, time.perf_counter() - t))

    async def atimed(nt, key, coro):
        t = time.perf_counter()
        n = await coro
        res[nt][key].append((n, time.perf_counter() - t))

    # warm-up: page in weights/buffers, compile queries, build LMQL's vocabulary matcher
    for _ in range(warmup):
        for nt in threads:
            raw_run(raws[nt], PROMPTS[0], eog, N_TOKENS - 1)
            await lmql_run(models[nt], PROMPTS[0], True)
            await lmql_run(models[nt], PROMPTS[0], False)

    for _ in range(repeat):
        for p in PROMPTS:
            for nt in threads:
                llm, model = raws[nt], models[nt]
                timed(nt, "raw-99", lambda: raw_run(llm, p, eog, N_TOKENS - 1))
                if profile is not None:
                    profile.enable()
                await atimed(nt, "lmql+constraint", lmql_run(model, p, True))
                if profile is not None:
                    profile.disable()
                timed(nt, "raw-eos", lambda: raw_run(llm, p, eog, RAW_CAP))
                await atimed(nt, "lmql free", lmql_run(model, p, False))
    rows = []
    for nt in threads:
        tps = {k: sum(n for n, _ in v) / sum(d for _, d in v) for k, v in res[nt].items()}
        ntok = {k: statistics.mean(n for n, _ in v) for k, v in res[nt].items()}
        # paired ratios (each LMQL run vs the raw run just before it) are robust to drift
        r = res[nt]
        paired = {
            "constr": statistics.median((a[0] / a[1]) / (b[0] / b[1]) for a, b in zip(r["lmql+constraint"], r["raw-99"])),
            "free": statistics.median((a[0] / a[1]) / (b[0] / b[1]) for a, b in zip(r["lmql free"], r["raw-eos"])),
        }
        rows.append((nt, tps, ntok, paired))
    return rows


REVIEWS = [
    ("An absolute delight from start to finish. I laughed and cried.", "positive"),
    ("The food was cold, the waiter was rude and we waited an hour.", "negative"),
    ("Best purchase I have made this year, it works perfectly.", "positive"),
    ("It broke after two days and support never answered my emails.", "negative"),
    ("The hotel room was spotless and the staff were wonderful.", "positive"),
    ("Boring plot, wooden acting, and far too long. Avoid.", "negative"),
    ("My kids love this game and so do I. Highly recommended!", "positive"),
    ("Terrible sound quality and the battery dies within an hour.", "negative"),
    ("A warm, funny and beautifully written novel.", "positive"),
    ("The worst customer service I have ever experienced.", "negative"),
    ("Fast shipping, great price, and it looks even better in person.", "positive"),
    ("I regret buying this; it is cheap plastic junk.", "negative"),
    ("The concert was amazing, the band played all my favourites.", "positive"),
    ("The app crashes constantly and deletes my notes.", "negative"),
    ("Comfortable shoes, I wore them all day without any pain.", "positive"),
    ("The movie was a complete waste of time and money.", "negative"),
]
SENTIMENT_SYSTEM = "You classify the sentiment of reviews. Answer with one word: positive or negative."


@lmql.query
async def label_constrained(p, options):
    '''lmql
    argmax
    "{p}[LABEL]" where LABEL in options
    return LABEL
    '''


@lmql.query
async def label_free(p):
    '''lmql
    argmax
    "{p}[ANSWER]" where len(TOKENS(ANSWER)) < 20
    return ANSWER
    '''


async def sentiment(model):
    """Accuracy of raw-text vs chat-template prompts on REVIEWS (greedy)."""
    def raw_prompt(review):
        return f"Review: {review}\nIs the sentiment of this review positive or negative?\nAnswer:"

    def chat_prompt(review):
        return format_chat(SENTIMENT_SYSTEM, f"Review: {review}")

    def free_ok(answer, gold):
        a = answer.lower()
        other = "negative" if gold == "positive" else "positive"
        return gold in a and other not in a

    out = {}
    for name, fmt, options in [("raw", raw_prompt, [" positive", " negative"]),
                               ("chat", chat_prompt, ["positive", "negative"])]:
        constrained_hits = free_hits = 0
        examples = []
        for review, gold in REVIEWS:
            label = (await label_constrained(fmt(review), options, model=model)).strip()
            answer = await label_free(fmt(review), model=model)
            constrained_hits += label == gold
            free_hits += free_ok(answer, gold)
            examples.append(answer.strip().replace("\n", " ")[:60])
        out[name] = (constrained_hits, free_hits, examples)
    n = len(REVIEWS)
    print(f"\nsentiment on {n} reviews (greedy)   constrained acc | free-text acc")
    for name, (c, f, ex) in out.items():
        print(f"  {name:5s} {c:>10d}/{n} ({c / n:.0%})   | {f:>3d}/{n} ({f / n:.0%})   e.g. {ex[:3]}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--profile", help="write a cProfile of the constrained LMQL runs to this file")
    ap.add_argument("--sentiment", action="store_true", help="only run the chat-vs-raw sentiment comparison")
    args = ap.parse_args(argv)

    if args.sentiment:
        asyncio.run(sentiment(load_model()))
        return 0

    prof = cProfile.Profile() if args.profile else None
    rows = asyncio.run(bench(args.threads, args.repeat, args.warmup, prof))

    print(f"\n{'n_threads':>9} | {'raw-99':>7} | {'lmql+constr':>11} | {'ratio':>5} | "
          f"{'raw-eos':>7} | {'lmql free':>9} | {'ratio':>5} | avg tokens raw-99/constr/raw-eos/free   (tok/s)")
    for nt, tps, ntok, paired in rows:
        print(f"{nt:>9} | {tps['raw-99']:7.1f} | {tps['lmql+constraint']:11.1f} | "
              f"{tps['lmql+constraint'] / tps['raw-99']:5.2f} | {tps['raw-eos']:7.1f} | {tps['lmql free']:9.1f} | "
              f"{tps['lmql free'] / tps['raw-eos']:5.2f} | "
              f"{ntok['raw-99']:.0f}/{ntok['lmql+constraint']:.0f}/{ntok['raw-eos']:.0f}/{ntok['lmql free']:.0f}")
    print("median paired ratio (lmql / adjacent raw run): " + ", ".join(
        f"n_threads={nt}: constr {p['constr']:.2f} free {p['free']:.2f}" for nt, _, _, p in rows))
    if prof is not None:
        prof.dump_stats(args.profile)
        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    sys.exit(main())
