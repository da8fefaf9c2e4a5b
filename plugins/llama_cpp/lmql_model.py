"""The in-process llama.cpp model for LMQL 0.7.3: an ``lmql.LLM`` whose queries talk to the engine.

It replaces LMQL's own ``llama.cpp:`` LMTP backend, broken on llama-cpp-python 0.3 (see
:mod:`lpb_plugins.llama_cpp.engine` for the generation fixes):

* LMQL hard-codes ``eos_token_id = 2`` and adds BOS although the GGUF may say
  ``add_bos_token = false``.  Here both come from the GGUF's tokenizer
  (:mod:`lpb_plugins.llama_cpp.gguf_tokenizer`).
* The LMTP in-process transport polls queues with ``asyncio.sleep`` and batches with a 0.1 s
  window.  Here LMQL's decoder model (a subclass of ``LMTPDcModel``) calls the engine directly.
* LMQL writes role tags (``{:user}`` ...) as the text ``((user)):`` for any model but OpenAI's
  chat models.  Here they are kept and rendered with the GGUF's chat template
  (:mod:`lpb_plugins.llama_cpp.chat`) where the prompt's token ids are made (``_ids``).

Usage::

    from lpb_plugins.llama_cpp.lmql_model import load_model
    m = load_model()                          # lmql.LLM, one per settings
    prompt = m.format_chat("Be brief.", "Is the sky blue?")
    result = await my_query(prompt, model=m)  # any lmql.query function

See ``load_model`` for threading/event-loop notes and decoder options.
"""

from __future__ import annotations

import os
import pathlib
import threading
import warnings
from typing import Any, Dict, List, Optional

import numpy as np

from lpb_core.llm import SAMPLE_SEED_ARG
from lpb_plugins.llama_cpp.chat import ChatFormat, chat_format_for, format_chat, role_tokenizer
from lpb_plugins.llama_cpp.cpu import default_threads
from lpb_plugins.llama_cpp.engine import DEFAULT_SEQUENCES, IGNORED_DECODER_OPTIONS, LlamaEngine
from lpb_plugins.llama_cpp.gguf_tokenizer import GGUFTokenizer, tokenizer_dir_for
from lpb_plugins.llama_cpp.llama_context import LlamaContext
from lpb_plugins.llama_cpp.lmql_patches import install_fast_token_set_eq, keep_role_tags
from lpb_plugins.llama_cpp.model_files import BACKEND_NAME, embedded_model_path

__all__ = ["DEFAULT_CHUNKSIZE", "default_n_threads", "load_model", "engine_model"]

# LMQL's default speculative chunk (16) forces a new request, and thus a
# decoder round trip, every 16 tokens of an unbounded variable.  Speculation
# is cheap here (it is pre-empted or cancelled when not needed), so ask for
# larger chunks unless the caller sets ``chunksize`` explicitly.
DEFAULT_CHUNKSIZE = 64


def default_n_threads() -> int:
    """Default llama.cpp thread count for decoding (see :func:`lpb_plugins.llama_cpp.cpu.default_threads`)."""
    return default_threads()[0]


def _make_dcmodel_class():
    import lmql.runtime.dclib as dc
    from lmql.models.lmtp.lmtp_dcmodel import LMTPDcModel

    class LlamaCppDcModel(LMTPDcModel):
        """LMTPDcModel whose 'client' is our engine (no LMTP transport)."""

        sample_seed = None  # set per query (SAMPLE_SEED_ARG): tokens are sampled from (seed, position)

        def __init__(self, model, tokenizer, engine: LlamaEngine, **kwargs):
            kwargs.setdefault("chunksize", DEFAULT_CHUNKSIZE)
            super().__init__(model, tokenizer, endpoint=None, inprocess=False, **kwargs)
            self.engine = engine
            self.add_bos = tokenizer.bos_token_id is not None
            unsupported = set(kwargs) & set(IGNORED_DECODER_OPTIONS)
            if unsupported:
                warnings.warn(f"{BACKEND_NAME} ignores decoder options {sorted(unsupported)}")

        async def ensure_connected(self):
            return None

        def close(self):
            pass

        def __del__(self):
            pass

        async def model_info(self):
            if hasattr(self.engine, "describe"):  # an engine over HTTP (openai_engine)
                return {"model_identifier": self.model_identifier, **self.engine.describe()}
            return {"model_identifier": self.model_identifier, "model_type": "llama.cpp (lpb adapter)",
                    "gguf": str(self.engine.gguf_path), "n_threads": self.engine.n_threads,
                    "n_seq": self.engine.n_seq}

        def _ids(self, s_ids) -> List[int]:
            # the tokenizer (chat.role_tokenizer) renders role tags with the chat template here
            ids = self.tokenizer.convert_bytes_to_ids(s_ids)
            if self.add_bos and (len(ids) == 0 or ids[0] != self.tokenizer.bos_token_id):
                ids = [self.tokenizer.bos_token_id] + ids
            return ids

        async def stream_and_return_first(self, s, iterator, sampling_mode):
            # LMTPDcModel buffers 4 tokens before answering; one is enough and
            # lets the decoder start while the engine keeps producing.
            try:
                first = await anext(iterator)
            except StopAsyncIteration:
                raise RuntimeError("llama.cpp engine produced no token")
            self.requests += 1

            async def token_stream():
                self.tokens += 1
                yield self.make_cache_entry(s, first, sampling_mode)
                async for item in iterator:
                    self.tokens += 1
                    yield self.make_cache_entry(s, item, sampling_mode)

            self.register_token_stream(token_stream)
            return first

        async def generate(self, s, temperature, top_logprobs=1, chunk_size=None, **kwargs):
            if chunk_size is None:
                chunk_size = self.model.chunk_size
            kwargs = {**self.model_args, **kwargs}

            constrained_seqs = np.array([s.is_query_constrained], dtype=np.bool_)
            mask_result = await self.compute_logits_mask(s.input_ids.reshape(1, -1), [s.user_data],
                                                         constrained_seqs, [s], **kwargs)
            mask = mask_result.logits_mask[0]

            assert kwargs.get("num_samples", 1) == 1, "use n=... on the decoder instead of num_samples"
            if s.user_data is None:
                s.user_data = {}
            s.user_data = dc.deepmerge(dc.deepcopy(s.user_data), mask_result.user_data[0])
            s.user_data["set_by"] = "where"

            if mask is not None:
                if isinstance(mask, (int, np.integer)) or np.isscalar(mask):
                    return self.singleton_result(int(mask), 0.0)
                if isinstance(mask, list):
                    if len(mask) == 1:
                        return self.singleton_result(int(mask[0]), 0.0)
                else:
                    allowed = np.flatnonzero(np.asarray(mask) > -1e20)
                    if len(allowed) == 1:
                        return self.singleton_result(int(allowed[0]), 0.0)

            ids = self._ids(s.input_ids)
            max_tokens = mask_result.max_tokens_hints[0] or chunk_size
            if max_tokens == -1:
                max_tokens = max(chunk_size, 128)
            max_tokens = max(1, min(max_tokens, self.engine.n_ctx - len(ids)))
            extra = self.extra_decoding_parameters
            return self.engine.generate(ids, max_tokens=max_tokens, temperature=temperature, mask=mask,
                                        top_logprobs=top_logprobs, top_k=extra.get("top_k", 0),
                                        top_p=extra.get("top_p", 1.0), seed=self.sample_seed)

        async def _score_next_tokens(self, s, next_tokens, noscore=False):
            if noscore:
                return np.zeros(len(next_tokens), dtype=np.float32)
            ids = self._ids(s.input_ids)
            nxt = self.tokenizer.convert_bytes_to_ids(next_tokens)
            return np.array(await self.engine.score(ids, nxt), dtype=np.float32)

    return LlamaCppDcModel


_dcmodel_cls = None


def _make_adapter(identifier: str, engine, tokenizer_impl, chat: ChatFormat):
    """An LMQL model adapter whose queries run on ``engine`` (LlamaEngine, or anything with its
    ``generate``/``score``/``n_ctx``), tokenized by ``tokenizer_impl`` (a GGUFTokenizer or alike), role tags
    rendered with ``chat``."""
    from lmql.api.llm import ModelAPIAdapter

    global _dcmodel_cls
    if _dcmodel_cls is None:
        _dcmodel_cls = _make_dcmodel_class()
    dcmodel_cls = _dcmodel_cls

    class LlamaCppAdapter(ModelAPIAdapter):
        def __init__(self):
            self.model_identifier = identifier
            self.engine = engine
            self.decoder_args: Dict[str, Any] = {}
            self.num_queries = 0
            self.chunk_size = DEFAULT_CHUNKSIZE
            self.chat = chat
            self._tokenizer = role_tokenizer(identifier, tokenizer_impl, chat)

        def __str__(self):
            return f"<LlamaCppAdapter {identifier}>"

        def get_tokenizer(self):
            return self._tokenizer

        def get_dclib_model(self):
            # decoder_args are set by the interpreter for each query run
            args = dict(self.decoder_args)
            for key in ("inprocess", "endpoint", "lmtp_server_kwargs", "inprocess_client_constructor",
                        "model", "tokenizer"):
                args.pop(key, None)
            seed = args.pop(SAMPLE_SEED_ARG, None)  # this query's own sampling seed (lpb_core.llm)
            dcmodel = dcmodel_cls(self, self._tokenizer, engine, **args)
            dcmodel.sample_seed = seed
            return dcmodel

        async def tokenize(self, text):
            return self._tokenizer.tokenize(text, asbytes=True)

        async def detokenize(self, input_ids):
            return self._tokenizer.decode(input_ids)

    return LlamaCppAdapter()


_models: Dict[tuple, Any] = {}
_models_lock = threading.Lock()


def load_model(gguf_path: os.PathLike | str | None = None, *, n_threads: Optional[int] = None,
               n_ctx: int = 2048, chat_template: Optional[str] = None, n_batch: int = 512,
               seed: Optional[int] = None, fast_lmql_ops: bool = True, n_seq: Optional[int] = None,
               n_threads_batch: Optional[int] = None):
    """An ``lmql.LLM`` running the GGUF in-process with llama.cpp.

    Pass it as ``model=`` to any LMQL query function::

        m = load_model()
        res = await query_fn(..., model=m)                 # decoder from the query text
        res = await query_fn(..., model=m, decoder="sample", temperature=0.7)

    * ``gguf_path=None`` uses :func:`embedded_model_path` (SmolLM2-135M-Instruct).
    * ``n_threads``/``n_threads_batch``: llama.cpp threads for decode steps of single tokens and for
      steps with prompts; None: :func:`lpb_plugins.llama_cpp.cpu.default_threads`.
    * ``n_seq``: sequences decoded together (concurrent queries beyond that wait for a free one);
      None: ``DEFAULT_SEQUENCES``.  ``n_ctx`` is each sequence's context (the KV cache holds
      ``n_seq * n_ctx`` tokens).
    * One instance per (path, threads, n_ctx, n_batch, n_seq, seed, chat_template)
      per process: calling again returns the same object (and llama.cpp
      context).  ``chat_template=None`` means the GGUF's own template, ``""``
      none (role tags get the plain rendering of :mod:`lpb_plugins.llama_cpp.chat`).
    * Decoder options: the usual LMQL ones (``argmax``/``sample(temperature=)``
      /``beam``..., ``max_len``, ``n``) plus ``top_k``/``top_p`` for sampling
      and ``chunksize`` (speculative tokens per engine request, default 64).
    * Event loops: the model is not bound to a loop.  All llama.cpp work runs
      on one background thread per model; each request delivers its tokens
      to the loop that made it.  Concurrent queries are decoded together on
      that thread.  A long-lived loop is still the cheapest way to run many queries.

    * ``fast_lmql_ops`` installs :func:`install_fast_token_set_eq` (a
      result-identical, process-wide speed-up of LMQL's constraint evaluation).

    The returned object is made by :func:`engine_model`: it carries ``.engine``
    (the :class:`LlamaEngine`), ``.tokenizer_dir``, ``.chat`` and ``.format_chat(system, user)``.
    """
    path = pathlib.Path(gguf_path) if gguf_path is not None else embedded_model_path()
    path = path.resolve()
    if not path.exists():
        raise FileNotFoundError(path)
    decode_threads, prompt_threads = default_threads()
    n_threads = int(n_threads) if n_threads else decode_threads
    n_threads_batch = int(n_threads_batch) if n_threads_batch else max(n_threads, prompt_threads)
    n_seq = int(n_seq) if n_seq else DEFAULT_SEQUENCES
    key = (str(path), n_threads, n_threads_batch, int(n_ctx), int(n_batch), n_seq, seed, chat_template)
    with _models_lock:
        m = _models.get(key)
        if m is not None:
            return m
        tok_dir = tokenizer_dir_for(path)
        context = LlamaContext(path, n_seq=n_seq, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads,
                               n_threads_batch=n_threads_batch)
        engine = LlamaEngine(context, n_threads=n_threads, n_threads_batch=n_threads_batch, seed=seed)
        identifier = f"{BACKEND_NAME}:{tok_dir.name}:t{n_threads}:c{n_ctx}"
        m = engine_model(identifier, engine, GGUFTokenizer(tok_dir, identifier), chat_template=chat_template,
                         configuration={"gguf": str(path), "n_threads": n_threads, "n_ctx": n_ctx, "n_seq": n_seq},
                         fast_lmql_ops=fast_lmql_ops)
        _models[key] = m
        return m


def engine_model(identifier: str, engine, tokenizer_impl, *, chat_template: Optional[str] = None,
                 configuration: Optional[dict] = None, fast_lmql_ops: bool = True):
    """An ``lmql.LLM`` whose queries run on ``engine`` (a :class:`LlamaEngine` or anything with its
    ``generate``/``score``/``n_ctx`` interface, e.g. ``openai_engine.CompletionsEngine``), tokenized by
    ``tokenizer_impl`` (a :class:`GGUFTokenizer` or alike, with ``.meta`` and ``.tokenizer_dir``).

    Role tags in its queries are rendered with ``chat_template`` (None: the tokenizer's own).  The object
    carries ``.engine``, ``.tokenizer_dir``, ``.chat`` (its :class:`ChatFormat`) and
    ``.format_chat(system, user)``.  ``fast_lmql_ops``: as for :func:`load_model`.
    """
    import lmql

    if fast_lmql_ops:
        install_fast_token_set_eq()
    chat = chat_format_for(tokenizer_impl, chat_template)
    adapter = _make_adapter(identifier, engine, tokenizer_impl, chat)
    keep_role_tags(identifier, adapter.get_tokenizer())
    m = lmql.LLM(identifier, adapter=adapter, configuration=configuration or {})
    m.engine = engine
    m.tokenizer_dir = tokenizer_impl.tokenizer_dir
    m.chat = chat
    m.format_chat = lambda system, user, add_generation_prompt=True: format_chat(
        system, user, chat_template=chat.template or "", add_generation_prompt=add_generation_prompt)
    return m
