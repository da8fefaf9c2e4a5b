"""Chat turns rendered in a model's own chat format: LMQL's role tags -> the GGUF's chat template.

A day care writes chat turns with LMQL's role tags (``{:system}``, ``{:user}``, ``{:assistant}``).
LMQL turns each tag into ``<lmql:ROLE/>`` and, for models it keeps tags for (see
:func:`lpb_plugins.llama_cpp.lmql_patches.keep_role_tags`), into a reserved token id.  Where LMQL's
token ids become the model's prompt, :class:`RolePrompts` splits them at the tags into turns and
renders them with the model's own chat template (``tokenizer.chat_template`` of the GGUF), through
llama-cpp-python's ``Jinja2ChatFormatter``:

* complete turns become the template's messages;
* the last, open turn (the one LMQL is generating in) is opened: for ``assistant`` with the
  template's generation prompt, for another role by rendering the turn and cutting where its
  content starts; then the open turn's own token ids follow unchanged, so the tokens LMQL
  generated stay the tokens the model sees;
* a template that refuses a system message (Gemma, Mistral v0.1) gets the system text at the
  start of the first user message, separated by a newline, as llama.cpp's Jinja path does;
* a model without a chat template gets the plain rendering ``System: …\\n\\nUser: …\\n\\nAssistant: ``.

A prompt without tags (a day care that writes a model's markers literally) is passed through as it
is.  :func:`render_chat` is the same rendering as text, for tests and for other engines.
"""

from __future__ import annotations

import functools
import os
from typing import Iterable, List, Optional, Sequence, Tuple

import attrs

from lpb_plugins.llama_cpp.gguf_tokenizer import read_meta, tokenizer_dir_for

__all__ = ["ChatTemplateError", "ChatFormat", "RolePrompts", "render_chat", "chat_format_for",
           "chat_template_for", "format_chat", "role_tokenizer"]

# What an open turn's content is replaced with to find where the template puts it.
_CONTENT_MARK = "LPB_OPEN_TURN_CONTENT_3f9c1"

# Between the system text and the user text when a template has no system role (llama.cpp's Jinja
# path does the same: tests/test-chat-template.cpp, Gemma and Mistral v0.2 expectations).
_SYSTEM_FOLD_SEPARATOR = "\n"

_TAG_PREFIX = b"<lmql:"
_TAG_SUFFIX = b"/>"

Turn = Tuple[Optional[str], str]  # (role, text); role None: text before the first tag


class ChatTemplateError(ValueError):
    """The model's chat template cannot render these turns (its own message, e.g. roles must alternate)."""


@functools.lru_cache(maxsize=32)
def _formatter(template: str, bos_token: str, eos_token: str, add_generation_prompt: bool):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template=template, bos_token=bos_token, eos_token=eos_token,
                               add_generation_prompt=add_generation_prompt)


def _render(template: str, bos_token: str, eos_token: str, messages: List[dict],
            add_generation_prompt: bool) -> str:
    import jinja2

    try:
        return _formatter(template, bos_token, eos_token, add_generation_prompt)(messages=messages).prompt
    except (ValueError, jinja2.TemplateError) as exc:  # raise_exception(...) in a template is a ValueError
        roles = ", ".join(m["role"] for m in messages)
        raise ChatTemplateError(f"the model's chat template refuses the turns ({roles}): {exc}") from None


@functools.lru_cache(maxsize=32)
def supports_system_role(template: str, bos_token: str = "", eos_token: str = "") -> bool:
    """Whether the template renders a system message (it may raise, or drop the text silently)."""
    try:
        text = _render(template, bos_token, eos_token, [{"role": "system", "content": _CONTENT_MARK},
                                                        {"role": "user", "content": "Hi"}], False)
    except ChatTemplateError:
        return False
    return _CONTENT_MARK in text


def _fold_system(messages: List[dict]) -> List[dict]:
    """System messages joined to the start of the next user message (a user message if none follows)."""
    out: List[dict] = []
    pending: List[str] = []
    for m in messages:
        if m["role"] == "system":
            pending.append(m["content"])
            continue
        if pending:
            system = _SYSTEM_FOLD_SEPARATOR.join(pending)
            pending = []
            if m["role"] == "user":
                m = {"role": "user", "content": system + _SYSTEM_FOLD_SEPARATOR + m["content"]}
            else:
                out.append({"role": "user", "content": system})
        out.append(m)
    if pending:
        out.append({"role": "user", "content": _SYSTEM_FOLD_SEPARATOR.join(pending)})
    return out


@attrs.frozen
class ChatFormat:
    """A model's chat template and the BOS/EOS texts it may use; ``template=None``: no chat template."""

    template: Optional[str]
    bos_token: str = ""
    eos_token: str = ""

    def _messages(self, turns: Iterable[Turn]) -> List[dict]:
        messages = [{"role": role, "content": text} for role, text in turns]
        if self.template and not supports_system_role(self.template, self.bos_token, self.eos_token):
            messages = _fold_system(messages)
        return messages

    def complete(self, turns: Sequence[Turn]) -> str:
        """The text of complete ``turns``, without opening another."""
        if not self.template:
            return "".join(f"{_plain_opening(role)}{text}\n\n" for role, text in turns)
        return _render(self.template, self.bos_token, self.eos_token, self._messages(turns), False)

    def open_turn(self, turns: Sequence[Turn], role: str) -> str:
        """The text of the complete ``turns`` followed by the opening of a ``role`` turn."""
        if not self.template:
            return self.complete(turns) + _plain_opening(role)
        if role == "assistant":
            return _render(self.template, self.bos_token, self.eos_token, self._messages(turns), True)
        # Render the turn with a marker as its content and keep what comes before the marker.
        text = _render(self.template, self.bos_token, self.eos_token,
                       self._messages([*turns, (role, _CONTENT_MARK)]), False)
        if _CONTENT_MARK not in text:
            raise ChatTemplateError(f"the model's chat template drops the text of a {role} turn; "
                                    "end the prompt with an {:assistant} turn")
        return text[:text.index(_CONTENT_MARK)]

    def render(self, segments: Sequence[Turn]) -> str:
        """The whole prompt: complete turns as messages, the last turn opened and followed by its text."""
        turns = _as_turns(segments)
        if not turns:
            return ""
        *complete, (role, text) = turns
        return self.open_turn(complete, role) + text


def _plain_opening(role: str) -> str:
    """A turn's opening without a chat template: "User: ", "Assistant: "."""
    return f"{role.capitalize()}: "


def _as_turns(segments: Sequence[Turn]) -> List[Tuple[str, str]]:
    """Text before the first tag is a user turn (as in LMQL's OpenAI chat path), unless it is blank."""
    turns = list(segments)
    if turns and turns[0][0] is None:
        role, text = turns.pop(0)
        if text.strip():
            turns.insert(0, ("user", text))
    return turns


def render_chat(chat_template: Optional[str], bos_token: str, eos_token: str, segments: Sequence[Turn]) -> str:
    """Render role-tagged ``segments`` ([(role, text), ...]) as a prompt in the given chat template."""
    return ChatFormat(chat_template, bos_token, eos_token).render(segments)


def _tag_role(token: bytes) -> Optional[str]:
    if token.startswith(_TAG_PREFIX) and token.endswith(_TAG_SUFFIX):
        return bytes(token[len(_TAG_PREFIX):-len(_TAG_SUFFIX)]).decode()
    return None


class RolePrompts:
    """LMQL's prompt token bytes -> the model's prompt ids, role tags rendered by ``chat``.

    ``tokenizer_impl`` is the model's tokenizer with LMQL's tokenizer interface (``GGUFTokenizer``):
    its ``convert_token_bytes_to_ids`` reads LMQL's token bytes, calling it encodes text (parsing
    the template's special tokens), ``decode`` gives a turn's text back.  Renderings of the complete
    turns are cached: every chunk LMQL asks for within one query, and every query of a template
    with the same leading turns, repeats them.
    """

    def __init__(self, chat: ChatFormat, tokenizer_impl, cache_size: int = 256):
        self.chat = chat
        self.tokenizer_impl = tokenizer_impl
        self._opening = functools.lru_cache(maxsize=cache_size)(self._opening_ids)

    def _opening_ids(self, complete: Tuple[Tuple[Optional[str], Tuple[int, ...]], ...], role: str) -> Tuple[int, ...]:
        turns = _as_turns([(r, self.tokenizer_impl.decode(list(ids))) for r, ids in complete])
        return tuple(self.tokenizer_impl(self.chat.open_turn(turns, role))["input_ids"])

    def ids(self, token_bytes) -> List[int]:
        to_ids = self.tokenizer_impl.convert_token_bytes_to_ids
        segments: List[Tuple[Optional[str], list]] = [(None, [])]
        for token in token_bytes:
            role = _tag_role(token)
            if role is None:
                segments[-1][1].append(token)
            else:
                segments.append((role, []))
        if len(segments) == 1:  # no tags: the prompt is already in the model's format
            return to_ids(segments[0][1])
        complete = tuple((role, tuple(to_ids(tokens))) for role, tokens in segments[:-1])
        role, tokens = segments[-1]
        return list(self._opening(complete, role)) + to_ids(tokens)


_role_tokenizer_cls = None


def role_tokenizer(model_identifier: str, tokenizer_impl, chat: ChatFormat):
    """An LMQL tokenizer whose ``convert_bytes_to_ids`` renders role tags with ``chat``.

    LMQL's LMTP decoder models (LMQL's own, used by the LMTP client, and ours) turn a sequence's
    token bytes into the model's prompt ids with ``convert_bytes_to_ids``; LMQL leaves tags there
    unhandled ("TODO: handle special IDs, i.e. tags").  ``tokenizer_impl``: see :class:`RolePrompts`.
    """
    global _role_tokenizer_cls
    if _role_tokenizer_cls is None:
        from lmql.runtime.tokenizer import LMQLTokenizer

        class RoleRenderingTokenizer(LMQLTokenizer):
            def convert_bytes_to_ids(self, token_bytes):
                return self.role_prompts.ids(token_bytes)

            def __reduce__(self):  # LMQL pickles tokenizers inside its vocabulary cache
                return role_tokenizer, (self.model_identifier, self.tokenizer_impl, self.role_prompts.chat)

        _role_tokenizer_cls = RoleRenderingTokenizer
    tokenizer = _role_tokenizer_cls(model_identifier, tokenizer_impl=tokenizer_impl)
    tokenizer.role_prompts = RolePrompts(chat, tokenizer_impl)
    return tokenizer


def chat_format_for(tokenizer_impl, chat_template: Optional[str] = None) -> ChatFormat:
    """The model's chat format: its template (or ``chat_template``) and BOS/EOS texts, as llama-cpp-python
    passes them to the template. ``tokenizer_impl``: a GGUFTokenizer or alike (its ``meta`` tells)."""
    meta = tokenizer_impl.meta
    template = chat_template if chat_template is not None else meta.get("chat_template")

    def text(token_id):
        return tokenizer_impl.decode([token_id]) if token_id is not None else ""

    return ChatFormat(template or None, text(meta.get("bos_token_id")), text(meta.get("eos_token_id")))


def chat_template_for(gguf_path: os.PathLike | str | None = None) -> Optional[str]:
    """The Jinja chat template stored in the GGUF (``tokenizer.chat_template``)."""
    return read_meta(tokenizer_dir_for(gguf_path)).get("chat_template")


def format_chat(system: Optional[str], user: str, *, gguf_path: os.PathLike | str | None = None,
                chat_template: Optional[str] = None, add_generation_prompt: bool = True) -> str:
    """A one-turn chat (as text) in the model's own chat template.

    ``system=None`` lets the template insert its default system prompt (for SmolLM2: "You are a
    helpful AI assistant named SmolLM, ..."); ``chat_template=""`` means none (the plain rendering).
    The result ends with the opening of the assistant's turn unless ``add_generation_prompt=False``.
    BOS/EOS texts are left empty: the model's tokenizer adds BOS where the GGUF says so.
    """
    template = chat_template if chat_template is not None else chat_template_for(gguf_path)
    chat = ChatFormat(template or None)
    turns = ([("system", system)] if system is not None else []) + [("user", user)]
    return chat.open_turn(turns, "assistant") if add_generation_prompt else chat.complete(turns)
