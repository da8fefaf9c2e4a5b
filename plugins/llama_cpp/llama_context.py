"""One GGUF model in a llama.cpp context holding several sequences, through llama-cpp-python's low-level API.

``llama_cpp.Llama`` opens a single-sequence context; the engine needs ``n_seq_max`` sequences, each with
its own KV cache of ``n_ctx`` cells (``kv_unified=False``), so this opens the model and the context
itself.  The settings are chosen so that a sequence's logits are bit-identical however it is batched:

* flash attention: without it, the logits at a position differ (by up to 0.8) with how the tokens
  before it were split into decode calls;
* one KV stream per sequence: in a unified cache a sequence's cells land wherever other sequences left
  holes, and attention sums over cells in cell order, so its logits would depend on its neighbours'
  history.  In its own stream a sequence's cells are always in position order.

* at most ``MAX_UBATCH`` tokens per forward pass: from 64 tokens on, llama.cpp's CPU kernels take
  another path whose results differ (the logits at a prompt's last position by up to 0.5 from those of
  the same tokens decoded in smaller passes), so a prompt reused from the cache would not give what it
  gave fresh.  Below that, every split gives bit-identical logits.  It costs 13 % (1 thread) to 27 %
  (2 threads) of prompt-evaluation speed, measured on a 115-token prompt.

``tests/test_llama_cpp_batching.py`` checks these properties with ``np.array_equal``.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Sequence

import numpy as np

from lpb_plugins.llama_cpp.batch import DecodeBatch, Span
from lpb_plugins.llama_cpp.cpu import quiet_openmp

__all__ = ["LlamaContext", "MAX_UBATCH"]

MAX_UBATCH = 32  # tokens per forward pass (see above); llama.cpp splits longer decode calls


class LlamaContext:
    """The model, its vocabulary and a context of ``n_seq`` sequences of up to ``n_ctx`` tokens each.

    Only the engine's worker thread may call anything but the constructor.
    """

    def __init__(self, gguf_path: pathlib.Path, *, n_seq: int, n_ctx: int, n_batch: int, n_threads: int,
                 n_threads_batch: int):
        quiet_openmp()  # before llama.cpp's libraries (and OpenMP with them) are loaded
        import llama_cpp

        self._lib = llama_cpp
        self.gguf_path = pathlib.Path(gguf_path)
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's load log, as Llama(verbose=False)
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(str(gguf_path).encode("utf-8"),
                                                          llama_cpp.llama_model_default_params())
        if not self.model:
            raise ValueError(f"llama.cpp could not load {gguf_path}")
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = n_seq
        params.kv_unified = False
        params.n_ctx = n_ctx * n_seq  # split evenly: each sequence gets its own n_ctx cells
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, MAX_UBATCH)
        params.n_threads, params.n_threads_batch = n_threads, n_threads_batch
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise ValueError(f"llama.cpp could not make a context of {n_seq} x {n_ctx} tokens for {gguf_path}")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_seq = n_seq
        self.n_ctx = llama_cpp.llama_n_ctx_seq(self.ctx)
        self.n_batch = llama_cpp.llama_n_batch(self.ctx)
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.eos_id = int(llama_cpp.llama_vocab_eos(vocab))
        self.eog_ids = frozenset(i for i in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i))
        self._threads = (n_threads, n_threads_batch)
        self._batch = DecodeBatch(self, self.n_batch)

    # ---------------- KV cache ----------------
    def keep_prefix(self, seq: int, n: int) -> None:
        """Drop the sequence's cells from position ``n`` on."""
        if not self._lib.llama_memory_seq_rm(self.memory, seq, n, -1):
            raise RuntimeError(f"llama.cpp could not trim sequence {seq} to {n} tokens")

    def copy_sequence(self, source: int, target: int) -> None:
        """Make ``target`` hold what ``source`` holds (another stream: the cells are copied before the next decode)."""
        self._lib.llama_memory_seq_rm(self.memory, target, -1, -1)
        self._lib.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def clear(self) -> None:
        self._lib.llama_memory_clear(self.memory, True)

    # ---------------- decoding ----------------
    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        """llama.cpp uses ``n_threads`` for a decode call of one token, ``n_threads_batch`` for more."""
        if (n_threads, n_threads_batch) != self._threads:
            self._lib.llama_set_n_threads(self.ctx, n_threads, n_threads_batch)
            self._threads = (n_threads, n_threads_batch)
        self._batch = DecodeBatch(self, self.n_batch)

    def decode(self, spans: Sequence[Span]) -> None:
        """One ``llama_decode`` call over ``spans`` (at most ``n_batch`` tokens); fills each span's ``rows``."""
        self._batch.decode(spans)

    def logits(self, index: int) -> np.ndarray:
        """Zero-copy view of the logits of the token at ``index`` in the last decoded batch (valid until the next)."""
        return np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))

    def close(self) -> None:
        self._batch.close()
        if self.ctx:
            self._lib.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self._lib.llama_model_free(self.model)
            self.model = None
