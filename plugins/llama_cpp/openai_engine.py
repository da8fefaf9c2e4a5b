"""The llama.cpp engine's interface (``generate``, ``score``) over an OpenAI-compatible ``/v1/completions`` API.

vLLM, llama.cpp's server, llama-cpp-python's server, SGLang, Ollama and TGI all serve ``/v1/completions``;
a batching server decodes the requests of concurrent queries together. Plugged into the same LMQL decoder
model as the in-process engine (:mod:`lpb_plugins.llama_cpp.lmql_model`), so LMQL's masks, EOS handling,
the tokenizer and the chat-template rendering are one code path:

* the prompt goes as token ids where the server takes them (vLLM, llama.cpp's server), else as the text
  those ids decode to (llama-cpp-python's server refuses id prompts), found out by :meth:`probe`;
* LMQL's token mask goes as ``logit_bias`` (+100 for the allowed ids when few are allowed, else -100 for
  the banned ones), which :meth:`probe` checks the server honours; every token read back is checked
  against the mask, so a server that ignores it is an error, never a silently broken constraint;
* OpenAI's API reports tokens as text pieces, not ids: a piece is mapped back to its id through the
  tokenizer's vocabulary; pieces that do not name one token (the bytes of a character split over several
  tokens come back empty) are re-tokenized from the text they span (``token_id:N`` pieces, which vLLM
  sends when asked with ``return_tokens_as_token_ids``, are read directly);
* ``finish_reason == "stop"`` (no stop strings are sent) means the model ended its turn: reported as the
  tokenizer's EOS, as the in-process engine reports any end-of-generation token.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from lpb_core.errors import ModelError
from lpb_plugins.llama_cpp.sampling import allowed_from_mask
from lpb_plugins.remote_calls import JsonClient, RequestRefused

__all__ = ["PieceReader", "CompletionsEngine", "logit_bias_for", "MAX_LOGPROBS"]

# OpenAI's API returns at most 5 alternatives per token.
MAX_LOGPROBS = 5

# A mask allowing at most this many tokens asks for one token per request.
FEW_ALLOWED = 10

_TOKEN_ID_PIECE = re.compile(r"^token_id:(\d+)$")


def logit_bias_for(mask, n_vocab: int) -> tuple[Optional[np.ndarray], Optional[Dict[str, float]]]:
    """LMQL mask (0 = allowed, a very negative number = banned; or an id or id list) -> (allowed array,
    OpenAI ``logit_bias``), both None when every token is allowed."""
    allowed = allowed_from_mask(mask, n_vocab)
    if allowed is None:
        return None, None
    ids = np.flatnonzero(allowed)
    if len(ids) <= n_vocab - len(ids):
        return allowed, {str(int(i)): 100.0 for i in ids}
    return allowed, {str(int(i)): -100.0 for i in np.flatnonzero(~allowed)}


class PieceReader:
    """Token ids from the text pieces an OpenAI-style ``logprobs`` object names."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._ids_of: Optional[Dict[str, int]] = None

    def _table(self) -> Dict[str, int]:
        if self._ids_of is None:
            # Decode each id after an anchor token, as servers do (``prev_tokens``), so a piece keeps the
            # leading space a SentencePiece tokenizer would drop at the start of a text.
            anchor = self.tokenizer.encode("a")
            head = self.tokenizer.decode(anchor)
            seen: Dict[str, int] = {}
            duplicated = set()
            for i in range(self.tokenizer.vocab_size):
                text = self.tokenizer.decode(anchor + [i])
                piece = text[len(head):] if text.startswith(head) else None
                if not piece or "\ufffd" in piece:  # empty, or a part of a character: not one token's name
                    continue
                if piece in seen:
                    duplicated.add(piece)
                seen[piece] = i
            self._ids_of = {piece: i for piece, i in seen.items() if piece not in duplicated}
        return self._ids_of

    def id_of(self, piece: str) -> Optional[int]:
        match = _TOKEN_ID_PIECE.match(piece)
        if match:
            return int(match.group(1))
        return self._table().get(piece)

    def read(self, logprobs: dict, text: str) -> List[tuple[int, float, Dict[int, float], bool]]:
        """(id, logprob, top alternatives, exact) per token; ``exact`` is False for ids re-tokenized from text."""
        pieces = logprobs.get("tokens") or []
        logps = [0.0 if lp is None else float(lp) for lp in (logprobs.get("token_logprobs") or [0.0] * len(pieces))]
        tops = logprobs.get("top_logprobs") or [None] * len(pieces)
        offsets = logprobs.get("text_offset")
        ids = [self.id_of(p) for p in pieces]
        out, i = [], 0
        while i < len(pieces):
            if ids[i] is not None:
                top = {self.id_of(k): float(v) for k, v in (tops[i] or {}).items()}
                top.pop(None, None)
                # before a split character, a piece may be what is left of a token that began the character
                # (" " of " \xf0"): the text is right, the id may not be
                exact = i + 1 == len(pieces) or ids[i + 1] is not None
                out.append((ids[i], logps[i], top, exact))
                i += 1
                continue
            j = i
            while j < len(pieces) and ids[j] is None:
                j += 1
            if offsets is None or len(offsets) != len(pieces):
                raise ModelError("the server's logprobs name tokens that are not in the tokenizer's vocabulary "
                                 f"({pieces[i]!r}) and give no text offsets: is --tokenizer the served model's?")
            start = offsets[i] - offsets[0]
            span = text[start: offsets[j] - offsets[0]] if j < len(pieces) else text[start:]
            run = self.tokenizer.encode(span) if span else []
            # the run's probability, on its first token: the re-tokenized split may differ from the sampled one
            out += [(t, sum(logps[i:j]) if k == 0 else 0.0, {}, False) for k, t in enumerate(run)]
            i = j
        return out


class CompletionsEngine:
    """``generate``/``score`` like :class:`~lpb_plugins.llama_cpp.engine.LlamaEngine`, over HTTP."""

    def __init__(self, client: JsonClient, model: str, tokenizer, *, n_ctx: int = 4096):
        self.client = client
        self.model = model
        self.tokenizer = tokenizer  # GGUFTokenizer-like: encode, decode, vocab_size, bos/eos ids, meta
        self.n_ctx = n_ctx
        self.n_vocab = tokenizer.vocab_size
        self.eos_id = tokenizer.eos_token_id
        self.prompt_as_ids = True  # found out by probe()
        self.honours_logit_bias: Optional[bool] = None  # found out by probe()
        self.pieces = PieceReader(tokenizer)
        self.stats = {"requests": 0, "generated": 0}

    def describe(self) -> dict:
        return {"api_base": self.client.base_url, "model": self.model,
                "prompt": "token ids" if self.prompt_as_ids else "text"}

    def _prompt(self, ids: Sequence[int]):
        ids = [int(t) for t in ids]
        if self.prompt_as_ids:
            return ids
        # as text, the server adds BOS itself where its model wants one (bos_token_id is None where it does not)
        bos = self.tokenizer.bos_token_id
        if bos is not None and ids and ids[0] == bos:
            ids = ids[1:]
        return self.tokenizer.decode(ids)

    async def _complete(self, payload: dict, what: str) -> dict:
        self.stats["requests"] += 1
        response = await self.client.post("completions", {"model": self.model, **payload}, what)
        try:
            return response["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ModelError(f"{self.client.base_url}: an answer without choices: {str(response)[:200]}") from None

    async def generate(self, ids, *, max_tokens, temperature=0.0, mask=None, top_logprobs=1, top_k=0, top_p=1.0,
                       seed: Optional[int] = None):
        """Async generator of token dicts ``{token, logprob, top_logprobs, finish_reason}`` (one request)."""
        allowed, bias = logit_bias_for(mask, self.n_vocab)
        payload = {"prompt": self._prompt(ids), "max_tokens": int(max_tokens), "temperature": float(temperature or 0.0),
                   "logprobs": max(1, min(int(top_logprobs or 1), MAX_LOGPROBS))}
        if bias:
            payload["logit_bias"] = bias
            if len(bias) <= FEW_ALLOWED and next(iter(bias.values())) > 0:
                # a handful of allowed tokens (a label's next piece): the next token's mask is another one, so
                # tokens past the first would be thrown away (LMQL's own OpenAI client cuts such chunks too)
                payload["max_tokens"] = 1
        if top_p is not None and float(top_p) < 1.0:
            payload["top_p"] = float(top_p)
        if top_k:
            payload["top_k"] = int(top_k)  # not OpenAI's, but vLLM's, llama.cpp's and SGLang's
        if seed is not None and temperature:
            # one seed per query (lpb_core.llm's sample seed), moved on by the position each request starts at,
            # so a sampled answer depends on what was asked, not on timing (where the server honours seeds)
            payload["seed"] = (int(seed) + len(ids)) % 2 ** 31
        choice = await self._complete(payload, f"completion of {len(ids)} prompt tokens")
        tokens = self.pieces.read(choice.get("logprobs") or {}, choice.get("text") or "")
        ended = choice.get("finish_reason") == "stop"
        if allowed is not None:
            for token, _, _, exact in tokens:
                if exact and not allowed[token]:
                    raise ModelError(f"{self.client.base_url} ignored logit_bias: it produced "
                                     f"{self.tokenizer.decode([token])!r}, which the constraint bans; this server "
                                     "cannot enforce where constraints")
        if ended:
            eos_allowed = allowed is None or (self.eos_id is not None and allowed[self.eos_id])
            if eos_allowed and self.eos_id is not None:
                tokens.append((self.eos_id, 0.0, {}, True))
        if not tokens:
            raise ModelError(f"{self.client.base_url}: the server generated no token "
                             f"(finish_reason {choice.get('finish_reason')!r})")
        self.stats["generated"] += len(tokens)
        for n, (token, logprob, top, _) in enumerate(tokens):
            last = n + 1 == len(tokens)
            yield {"token": int(token), "logprob": logprob, "top_logprobs": {**top, int(token): logprob},
                   "finish_reason": ("stop" if ended else "length") if last else None}

    async def score(self, prompt, scored) -> List[float]:
        """Logprobs of ``scored`` after ``prompt``, from the server's echo of the whole sequence."""
        scored = [int(t) for t in scored]
        if not scored:
            return []
        choice = await self._complete(
            {"prompt": self._prompt(list(prompt) + scored), "max_tokens": 1, "temperature": 0.0, "echo": True,
             "logprobs": 1}, f"scoring of {len(scored)} tokens")
        logprobs = choice.get("logprobs") or {}
        echoed = [0.0 if lp is None else float(lp) for lp in (logprobs.get("token_logprobs") or [])]
        echoed = echoed[: len(echoed) - 1] if choice.get("finish_reason") == "length" else echoed
        tail = echoed[-len(scored):]
        # a server that tokenized the text otherwise merged tokens: the missing ones score 0, as in LMQL's own client
        return [0.0] * (len(scored) - len(tail)) + tail

    async def probe(self) -> None:
        """Find out whether the server takes token-id prompts and honours ``logit_bias``."""
        ids = self.tokenizer.encode("The capital of France is")
        if self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id] + ids

        def refuses_ids(status: int, body: str) -> bool:
            # llama-cpp-python answers 500 to a prompt it cannot read
            return status != 429 and (status < 500 or "prompt" in body)

        try:
            choice = await self.client.post("completions", {"model": self.model, "prompt": ids, "max_tokens": 1,
                                                            "temperature": 0.0, "logprobs": 1},
                                            "first request", refused=refuses_ids)
        except RequestRefused as refusal:
            if "prompt" not in refusal.body:
                raise
            self.prompt_as_ids = False
            choice = await self._complete({"prompt": self._prompt(ids), "max_tokens": 1, "temperature": 0.0,
                                           "logprobs": 1}, "first request")
        else:
            choice = choice["choices"][0]
        first = self.pieces.read(choice.get("logprobs") or {}, choice.get("text") or "")
        greedy = first[0][0] if first else None
        # ask for a token the model would not choose: a server that honours logit_bias must produce it
        target = next(i for i in self.tokenizer.encode(" 7 zebra ,") if i != greedy)
        choice = await self._complete({"prompt": self._prompt(ids), "max_tokens": 1, "temperature": 0.0,
                                       "logprobs": 1, "logit_bias": {str(target): 100.0}}, "logit_bias check")
        produced = self.pieces.read(choice.get("logprobs") or {}, choice.get("text") or "")
        self.honours_logit_bias = bool(produced) and produced[0][0] == target
