"""Changes to LMQL 0.7.3, each installed where a model is opened, never at import:

* :func:`install_fast_token_set_eq`: a result-identical speed-up of its constraint evaluation;
* :func:`keep_role_tags`: role tags kept for our models, for their chat templates to render;
* :func:`fail_queries_when_lmtp_server_goes`: a lost `lpb serve` fails its queries at once.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["fail_queries_when_lmtp_server_goes", "install_fast_token_set_eq", "keep_role_tags", "reserve_role_tag_ids",
           "ROLE_TAGS"]

_fast_token_sets_installed = False


def install_fast_token_set_eq() -> None:
    """Speed up LMQL's ``TokenSetConcrete.__eq__`` (same results, ~5x less CPU).

    Profiling a constrained query shows ~60% of LMQL's per-token interpreter
    time in this method: every comparison with "*" or "∅" runs
    ``mask.sum()`` over the 49k-entry vocabulary mask, ~150 times per token,
    and ``other == "∅"`` recurses into the other set first.  This replacement
    answers with ``mask.any()``/``mask.all()``/``np.array_equal`` (no int64
    accumulation), in the original's order of checks, and compares strings
    without recursion.  Process-wide, idempotent; installed where a model is
    opened (``load_model`` unless ``fast_lmql_ops=False``, ``remote_model``,
    the LMTP server, lpb's ``random`` backend).
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


# LMQL's role tags, reserved as token ids when a model keeping tags is opened (see keep_role_tags).
ROLE_TAGS = ("system", "user", "assistant")

_tag_models: set = set()


def keep_role_tags(model_identifier: str, tokenizer) -> None:
    """Make LMQL keep role tags (``{:user}`` ...) in the prompts of this model, as for its chat models.

    LMQL 0.7.3 asks a hard-coded ``model_info(identifier).is_chat_model`` whether to keep a tag
    as a reserved token id (OpenAI's chat models) or write it as the text ``\\n((ROLE)):``.  Only
    the interpreter's name for that function is wrapped, so the other uses of ``is_chat_model``
    (the ``INT`` constraint in ``lmql.ops``, which gives chat models no digit mask; the OpenAI API
    paths) still see our models as what they are.  Our tokenizers then render the tags with the
    model's chat template (:mod:`lpb_plugins.llama_cpp.chat`).  Called where a model is opened;
    idempotent.  ``tokenizer`` is the model's LMQL tokenizer (see :func:`reserve_role_tag_ids`).
    """
    import lmql.runtime.interpreter as interpreter
    from lmql.models.model_info import ModelInfo

    _tag_models.add(model_identifier)
    if not getattr(interpreter.model_info, "keeps_role_tags", False):
        lmql_model_info = interpreter.model_info

        def model_info(identifier):
            return ModelInfo(is_chat_model=True) if identifier in _tag_models else lmql_model_info(identifier)

        model_info.keeps_role_tags = True
        model_info.__wrapped__ = lmql_model_info
        interpreter.model_info = model_info
    reserve_role_tag_ids(tokenizer)


def reserve_role_tag_ids(tokenizer) -> None:
    """Give LMQL's role tags token ids beyond this tokenizer's vocabulary.

    LMQL numbers tags in one process-wide table, from the vocabulary size of the first tokenizer
    that meets a tag: a larger vocabulary used later (another GGUF as the mutation model, an
    OpenAI model) would read its own tokens of those ids as tags.  Called when a model is opened,
    before its queries run, this moves every tag above ``tokenizer``'s vocabulary if needed (above
    the others' too, as they were numbered above theirs).
    """
    from lmql.runtime import tokenizer as lmql_tokenizer

    tokenizer.tokenizer_impl  # waits for a tokenizer LMQL loads in the background (its size is unknown till then)
    for role in ROLE_TAGS:
        tokenizer.special_token_id("lmql:" + role)
    ids = lmql_tokenizer.special_token_mappings
    lowest = min(ids.values())
    if lowest > tokenizer.model_vocab_size:
        return
    shift = tokenizer.model_vocab_size + 1 - lowest
    for name in ids:
        ids[name] += shift
    reverse = lmql_tokenizer.reverse_special_token_mappings
    reverse.clear()
    reverse.update({i: name for name, i in ids.items()})


# LMQL 0.7.3 decides which models are chat models from a hard-coded list (lmql.models.model_info):
# gpt-4 and gpt-3.5-turbo, so gpt-4o-mini would be sent to /v1/completions. Modules import the function
# by name, so each of them gets the wrapper.
_MODEL_INFO_USERS = ("lmql.models.model_info", "lmql.runtime.interpreter", "lmql.ops.ops",
                     "lmql.runtime.bopenai.openai_api", "lmql.runtime.bopenai.batched_openai",
                     "lmql.runtime.openai_integration")
_chat_models: set = set()


def mark_chat_model(name: str) -> None:
    """Make LMQL treat ``openai/<name>`` (and ``<name>``, as its OpenAI client names it) as a chat model."""
    import importlib

    from lmql.models.model_info import ModelInfo

    _chat_models.update({name, "openai/" + name.removeprefix("openai/"), name.removeprefix("openai/")})
    for module_name in _MODEL_INFO_USERS:
        module = importlib.import_module(module_name)
        original = module.model_info
        if getattr(original, "lpb_chat_models", False):
            continue

        def model_info(identifier, _original=original):
            if isinstance(identifier, str) and identifier in _chat_models:
                return ModelInfo(is_chat_model=True)
            return _original(identifier)

        model_info.lpb_chat_models = True
        module.model_info = model_info


_bopenai_fixed = False


def install_bopenai_loop_fix() -> None:
    """LMQL's OpenAI client works from a new event loop too (each breed runs on one of its own).

    LMQL 0.7.3 keeps one request scheduler per process, bound to the loop that made it.  Once that loop
    has ended, ``Completion.create`` makes a new one and asserts at once that its worker tasks run on the
    current loop, before they have had a chance to start: the first request of a second breed in one
    process fails.  Here a scheduler made for this loop gets one turn of the loop first.  Idempotent.
    """
    global _bopenai_fixed
    if _bopenai_fixed:
        return
    import asyncio

    from lmql.runtime import bopenai
    from lmql.runtime.bopenai.batched_openai import AsyncOpenAIAPI

    async def create(*args, **kwargs):
        api = bopenai._api
        if api is None or not api.is_available() or asyncio.get_running_loop() not in api.worker_loops:
            api = bopenai._api = AsyncOpenAIAPI()
            await asyncio.sleep(0)  # its workers start, registering this loop
        return await api.complete(*args, **kwargs)

    bopenai.Completion.create = staticmethod(create)
    _bopenai_fixed = True


_lmtp_losses_handled = False


def fail_queries_when_lmtp_server_goes() -> None:
    """Queries on an LMTP server that goes away fail at once, with one message and no traceback.

    LMQL 0.7.3's websocket client stops reading when the server's connection closes but leaves the queries
    waiting on it unanswered: a breed would sit out the request timeout (two minutes by default) and then
    print the traceback of LMQL's next failed connection attempt before lpb's own message. Here the end of
    the connection ends every stream still waiting on it with an error, and the failed connection attempt,
    which LMQL raises to the query with its message anyway, is not printed. Idempotent.
    """
    global _lmtp_losses_handled
    # LMQL's query cache warns, with a stack line, of each stream that ended in that error: the query's own failure
    # says it once. (Installed on every call: a warnings filter can be reset, as tests do, where the patches stay.)
    from lmql.runtime.dclib.dclib_cache import CacheWarning

    warnings.filterwarnings("ignore", category=CacheWarning)
    if _lmtp_losses_handled:
        return
    import types

    from lmql.models.lmtp import lmtp_client, lmtp_dcmodel

    original = lmtp_client.LMTPWebSocketClient.connect

    def connect(self):
        original(self)

        def closed(_task):
            # a stream that already ended never reads its queue again, so this reaches only those waiting
            for queues in self.iterators.values():
                for queue in queues:
                    queue.put_nowait({"error": "the connection to the LMTP server closed (has `lpb serve` stopped?)"})

        self.handler.add_done_callback(closed)

    lmtp_client.LMTPWebSocketClient.connect = connect
    lmtp_dcmodel.traceback = types.SimpleNamespace(print_tb=lambda tb: None)
    _lmtp_losses_handled = True
