"""One-turn chat prompts rendered with the model's own chat template (the GGUF's Jinja template)."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from lpb_plugins.llama_cpp.gguf_tokenizer import read_meta, tokenizer_dir_for

__all__ = ["chat_template_for", "format_chat"]


def chat_template_for(gguf_path: os.PathLike | str | None = None) -> Optional[str]:
    """The Jinja chat template stored in the GGUF (``tokenizer.chat_template``)."""
    return read_meta(tokenizer_dir_for(gguf_path)).get("chat_template")


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
