"""What one forward pass of the in-process engine costs per token, by how much history it attends to.

Why: the engine keeps flash attention on so that a sequence's logits do not depend on how its tokens were
split into decode calls (`plugins/llama_cpp/llama_context.py`).  This measures what that costs: the
per-token time of a 32-token prompt pass, of a decoding step of 16 sequences x 1 token and of a step of
one token, after 0, 200 and 400 tokens of history, with flash attention on (the engine) and off, and
checks whether logits stay bit-identical across splits with it off.  The per-token costs of the three
kinds of pass also bound what batching can gain over a one-sequence loop (benchmarks/README.md).

    python benchmarks/bench_pass_cost.py [--history 0 200 400] [--rounds 3] [--threads 2] [--model F.gguf]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

N_SEQ = 16
PROMPT_TOKENS = 32


def open_context(flash_attention: bool, threads: int, model: str = "smollm2"):
    import llama_cpp

    from lpb_plugins.llama_cpp import llama_context
    from lpb_plugins.llama_cpp.model_files import resolve_gguf

    # LlamaContext always enables flash attention (its determinism needs it); the "off" row overrides it here.
    make_context = llama_cpp.llama_init_from_model

    def init_from_model(model, params):
        if not flash_attention:
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        return make_context(model, params)

    llama_cpp.llama_init_from_model = init_from_model
    try:
        return llama_context.LlamaContext(resolve_gguf(model), n_seq=N_SEQ, n_ctx=1024,
                                          n_batch=llama_context.MAX_UBATCH, n_threads=threads,
                                          n_threads_batch=threads)
    finally:
        llama_cpp.llama_init_from_model = make_context


def prefill(ctx, tokens, seqs, history):
    from lpb_plugins.llama_cpp.batch import Span

    ctx.clear()
    for seq in seqs:
        for start in range(0, history, PROMPT_TOKENS):
            ctx.decode([Span(seq, tokens[start:min(start + PROMPT_TOKENS, history)], start, [])])


def timed_pass(ctx, tokens, history, n_seqs, n_tokens):
    """Seconds per token of one decode call of ``n_tokens`` new tokens in each of ``n_seqs`` sequences."""
    from lpb_plugins.llama_cpp.batch import Span

    prefill(ctx, tokens, range(n_seqs), history)
    spans = [Span(seq, tokens[history:history + n_tokens], history, [n_tokens - 1]) for seq in range(n_seqs)]
    started = time.perf_counter()
    ctx.decode(spans)
    return (time.perf_counter() - started) / (n_seqs * n_tokens)


def last_logits(ctx, tokens, chunks):
    """Logits after decoding ``tokens[:sum(chunks)]`` in sequence 0, one decode call per chunk."""
    from lpb_plugins.llama_cpp.batch import Span

    ctx.clear()
    position = 0
    for size in chunks:
        span = Span(0, tokens[position:position + size], position, [size - 1])
        ctx.decode([span])
        position += size
    return ctx.logits(span.rows[0]).copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs="+", default=[0, 200, 400])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="smollm2", help="a GGUF file (default: the embedded model)")
    args = parser.parse_args()
    rng = random.Random(0)
    whole_chunks = [PROMPT_TOKENS] * 7 + [8]  # the logits comparison: these decode calls ...
    split_chunks = [PROMPT_TOKENS] * 7 + [1] * 8  # ... against these, over the same tokens
    tokens = [rng.randrange(1000, 40000)
              for _ in range(max(max(args.history) + 2 * PROMPT_TOKENS, sum(whole_chunks)))]

    print("| flash attention | history | 32-token prompt pass, ms/token | 16 sequences x 1 token, ms/token "
          "| 1 token, ms | logits after 232 tokens decoded as 7 x 32 + 8 vs 7 x 32 + 8 x 1 (max abs difference) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for flash_attention in (True, False):
        ctx = open_context(flash_attention, args.threads, args.model)
        try:
            whole = last_logits(ctx, tokens, whole_chunks)
            split = last_logits(ctx, tokens, split_chunks)
            difference = float(np.abs(whole - split).max())
            for history in args.history:
                prompt = statistics.median(timed_pass(ctx, tokens, history, 1, PROMPT_TOKENS)
                                           for _ in range(args.rounds))
                step = statistics.median(timed_pass(ctx, tokens, history, N_SEQ, 1) for _ in range(args.rounds))
                single = statistics.median(timed_pass(ctx, tokens, history, 1, 1) for _ in range(args.rounds))
                print(f"| {'on' if flash_attention else 'off'} | {history} | {prompt * 1e3:.2f} | "
                      f"{step * 1e3:.2f} | {single * 1e3:.2f} | {difference:.3g} |", flush=True)
        finally:
            ctx.close()


if __name__ == "__main__":
    main()
