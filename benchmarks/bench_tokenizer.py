"""Why lpb rebuilds a GGUF's tokenizer with `tokenizers` instead of asking llama.cpp for it.

    python benchmarks/bench_tokenizer.py [--model F.gguf] [--rounds 5] [--calls 2000]

LMQL tokenizes every prompt it sends and decodes every token it receives, in Python, on the client: for
an LMTP client (`lpb serve`) and for the in-process engine alike. Two tokenizers give the same ids:
* lpb's: the GGUF's vocabulary and merges rebuilt once as a `tokenizers` (Rust) tokenizer, cached on disk
  (lpb_plugins.llama_cpp.gguf_tokenizer);
* llama.cpp's own, through llama-cpp-python: ``Llama(model, vocab_only=True)`` (no weights), ``tokenize``
  and ``detokenize``.
On the built-in fitness prompt each is timed encoding the whole prompt, decoding it, and decoding 20
tokens one by one (what LMQL does as an answer streams in). Rounds are interleaved; medians are reported,
with the ratio llama.cpp / lpb. Timings only mean something on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the sentiment "
          "of this review?\nReview: The battery died after two days and support never answered my emails. Total "
          "waste of money.<|im_end|>\n<|im_start|>assistant\n")


def per_call(function, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def main() -> None:
    from lpb_plugins.llama_cpp.gguf_tokenizer import GGUFTokenizer, model_identifier, tokenizer_dir_for
    from lpb_plugins.llama_cpp.model_files import resolve_gguf

    import llama_cpp  # after lpb's modules, which set llama.cpp's OpenMP environment first

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a .gguf file (default: the embedded SmolLM2)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    path = resolve_gguf(args.model)
    ours = GGUFTokenizer(tokenizer_dir_for(path), model_identifier(path))
    theirs = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    text = PROMPT.encode()
    ids = theirs.tokenize(text, add_bos=False, special=True)
    assert list(ours.encode(PROMPT)) == list(ids), "the two tokenizers disagree on the prompt"
    cases = {
        "encode the prompt": (lambda: ours.encode(PROMPT),
                              lambda: theirs.tokenize(text, add_bos=False, special=True)),
        "decode the prompt": (lambda: ours.decode(ids), lambda: theirs.detokenize(ids)),
        "decode 20 tokens one by one": (lambda: [ours.decode([i]) for i in ids[:20]],
                                        lambda: [theirs.detokenize([i]) for i in ids[:20]]),
    }
    times = {name: ([], []) for name in cases}
    for _ in range(args.rounds):
        for name, (lpb_call, llama_call) in cases.items():
            times[name][0].append(per_call(lpb_call, args.calls))
            times[name][1].append(per_call(llama_call, args.calls))
    print(f"{path.name}, {len(ids)} prompt tokens, median of {args.rounds} rounds of {args.calls} calls")
    print(f"{'':30} {'lpb (tokenizers)':>18} {'llama.cpp':>12} {'llama.cpp / lpb':>16}")
    for name, (lpb_times, llama_times) in times.items():
        ours_us, theirs_us = statistics.median(lpb_times) * 1e6, statistics.median(llama_times) * 1e6
        print(f"{name:30} {ours_us:>15.0f} us {theirs_us:>9.0f} us {theirs_us / ours_us:>15.1f}x")


if __name__ == "__main__":
    main()
