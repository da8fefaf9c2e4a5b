"""Role-tagged templates rendered in each model's own chat format.

The renderer is checked against llama.cpp's own chat-template tests (the exact prompts its Jinja
path renders for real models' templates), then the built-in day care is rendered through LMQL for
SmolLM2 (its GGUF's template, compared with the ChatML the day care used to write literally) and
for Llama 3, Mistral and Gemma, and for an OpenAI chat model through LMQL's own chat path. No test
here loads model weights except the last one (marked ``embedded``).
"""

import asyncio
import json
import re
from pathlib import Path

import pytest

lmql = pytest.importorskip("lmql")
pytest.importorskip("llama_cpp")

from lpb_core.daycare import load_day_care  # noqa: E402
from lpb_plugins.llama_cpp.chat import ChatTemplateError, format_chat, render_chat  # noqa: E402
from lpb_plugins.llama_cpp.gguf_tokenizer import GGUFTokenizer, tokenizer_dir_for  # noqa: E402
from lpb_plugins.llama_cpp.lmql_model import engine_model  # noqa: E402
from lpb_plugins.llama_cpp.lmql_patches import reserve_role_tag_ids  # noqa: E402

REPO = Path(__file__).parent.parent

# --------------------------------------------------------------------------------------------------
# llama.cpp's tests/test-chat-template.cpp: its conversation, real models' templates, and the prompt
# its Jinja path renders for each (expected_output_jinja where set, else expected_output).
# --------------------------------------------------------------------------------------------------

CONVERSATION = [("system", "You are a helpful assistant"), ("user", "Hello"), ("assistant", "Hi there"),
                ("user", "Who are you"), ("assistant", "   I am an assistant   "), ("user", "Another question")]

CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"  # noqa: E501

# Meta-Llama-3-Instruct
LLAMA_3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"  # noqa: E501

# Mistral-7B-Instruct v0.1/v0.2, "pre-v1": no system role
MISTRAL_V01 = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"  # noqa: E501

# mistralai "v1" template (Mistral-7B-Instruct-v0.2 with a system prompt)
MISTRAL_V1_SYSTEM = "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n"  # noqa: E501

# mistralai "v3" template (Mistral-7B-Instruct-v0.3, Mistral-Large-Instruct-2407): the system prompt
# goes into the last user message
MISTRAL_V3 = "{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = messages[0][\"content\"] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list %}\n\n{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n            {{- raise_exception(\"After the optional system message, conversation roles must alternate user/assistant/user/assistant/...\") }}\n        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- if tools is not none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS] [\" }}\n            {%- for tool in tools %}\n                {%- set tool = tool.function %}\n                {{- '{\"type\": \"function\", \"function\": {' }}\n                {%- for key, val in tool.items() if key != \"return\" %}\n                    {%- if val is string %}\n                        {{- '\"' + key + '\": \"' + val + '\"' }}\n                    {%- else %}\n                        {{- '\"' + key + '\": ' + val|tojson }}\n                    {%- endif %}\n                    {%- if not loop.last %}\n                        {{- \", \" }}\n                    {%- endif %}\n                {%- endfor %}\n                {{- \"}}\" }}\n                {%- if not loop.last %}\n                    {{- \", \" }}\n                {%- else %}\n                    {{- \"]\" }}\n                {%- endif %}\n            {%- endfor %}\n            {{- \"[/AVAILABLE_TOOLS]\" }}\n            {%- endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n        {{- \"[TOOL_CALLS] [\" }}\n        {%- for tool_call in message.tool_calls %}\n            {%- set out = tool_call.function|tojson %}\n            {{- out[:-1] }}\n            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n                {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n            {%- endif %}\n            {{- ', \"id\": \"' + tool_call.id + '\"}' }}\n            {%- if not loop.last %}\n                {{- \", \" }}\n            {%- else %}\n                {{- \"]\" + eos_token }}\n            {%- endif %}\n        {%- endfor %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- \" \" + message[\"content\"]|trim + eos_token}}\n    {%- elif message[\"role\"] == \"tool_results\" or message[\"role\"] == \"tool\" %}\n        {%- if message.content is defined and message.content.content is defined %}\n            {%- set content = message.content.content %}\n        {%- else %}\n            {%- set content = message.content %}\n        {%- endif %}\n        {{- '[TOOL_RESULTS] {\"content\": ' + content|string + \", \" }}\n        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n            {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n        {%- endif %}\n        {{- '\"call_id\": \"' + message.tool_call_id + '\"}[/TOOL_RESULTS]' }}\n    {%- else %}\n        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial optional system message!\") }}\n    {%- endif %}\n{%- endfor %}\n"  # noqa: E501

# google/gemma-7b-it: no system role
GEMMA = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"  # noqa: E501

LLAMA_CPP_CASES = [
    pytest.param(CHATML, "", "", "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n", id="chatml"),  # noqa: E501
    pytest.param(LLAMA_3, "", "", "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", id="llama-3"),  # noqa: E501
    pytest.param(MISTRAL_V01, "", "</s>", "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]", id="mistral-v0.1"),  # noqa: E501
    pytest.param(MISTRAL_V1_SYSTEM, "", "</s>", " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]    I am an assistant   </s> [INST] Another question [/INST]", id="mistral-v1-system"),  # noqa: E501
    pytest.param(MISTRAL_V3, "", "</s>", "[INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST] I am an assistant</s>[INST] You are a helpful assistant\n\nAnother question[/INST]", id="mistral-v3"),  # noqa: E501
    pytest.param(GEMMA, "", "", "<start_of_turn>user\nYou are a helpful assistant\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n", id="gemma"),  # noqa: E501
]


@pytest.mark.parametrize("template, bos, eos, expected", LLAMA_CPP_CASES)
def test_renders_llama_cpps_chat_template_tests(template, bos, eos, expected):
    # the open assistant turn at the end is the generation prompt llama.cpp's test asks for
    assert render_chat(template, bos, eos, [*CONVERSATION, ("assistant", "")]) == expected


def test_an_open_assistant_turn_continues_its_own_text():
    segments = [("system", "Be brief."), ("user", "Hi"), ("assistant", "Answer: \"")]
    assert render_chat(LLAMA_3, "<|begin_of_text|>", "<|eot_id|>", segments) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nAnswer: \"")


def test_an_open_user_turn_is_cut_where_its_content_starts():
    # LMQL generating inside a user turn: the turn is opened, not closed
    assert render_chat(CHATML, "", "", [("system", "S"), ("user", "Review: ")]) == \
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nReview: "
    assert render_chat(GEMMA, "", "", [("system", "S"), ("user", "Review: ")]) == \
        "<start_of_turn>user\nS\nReview: "


def test_text_before_the_first_tag_is_a_user_turn_unless_blank():
    assert render_chat(CHATML, "", "", [(None, "Hi"), ("assistant", "")]) == \
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert render_chat(CHATML, "", "", [(None, " \n"), ("user", "Hi"), ("assistant", "")]) == \
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_a_model_without_chat_template_gets_the_plain_rendering():
    segments = [("system", "Be brief."), ("user", "Hi"), ("assistant", "Answer:")]
    assert render_chat(None, "", "", segments) == "System: Be brief.\n\nUser: Hi\n\nAssistant: Answer:"
    assert format_chat("Be brief.", "Hi", chat_template="") == "System: Be brief.\n\nUser: Hi\n\nAssistant: "


def test_a_template_refusing_the_turns_is_a_clear_error():
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        render_chat(MISTRAL_V01, "", "", [("user", "a"), ("user", "b"), ("assistant", "")])


# --------------------------------------------------------------------------------------------------
# The built-in day care through LMQL: a recording engine stands in for llama.cpp, the tokenizer is
# the embedded GGUF's (built from its metadata, no weights).
# --------------------------------------------------------------------------------------------------

class Recorded(Exception):
    """Raised by the recording engine once it has the prompt: the query stops there."""


class PromptRecorder:
    """The engine interface of LlamaEngine; records the prompt ids and token mask of the first request."""

    n_ctx = 4096

    def __init__(self):
        self.requests = []

    async def generate(self, ids, **options):
        self.requests.append((list(ids), options.get("mask")))
        raise Recorded()
        yield  # an async generator, as LlamaEngine.generate

    async def score(self, prompt, scored):
        raise Recorded()


@pytest.fixture(scope="module")
def smollm2():
    """An LMQL model with the embedded GGUF's tokenizer and chat template, and a recording engine."""
    recorder = PromptRecorder()
    return engine_model("lpb-test-recorder:smollm2", recorder, GGUFTokenizer(tokenizer_dir_for())), recorder


def first_prompt(model, code_or_template, **args):
    """The token ids and the role-tagged text the model gets for the template's first variable."""
    model, recorder = model
    query = code_or_template.compiled() if hasattr(code_or_template, "compiled") else \
        lmql.query(code_or_template, is_async=True, input_variables=list(args))
    prompts = model.get_tokenizer().role_prompts
    seen = []
    original = prompts.ids
    prompts.ids = lambda token_bytes: seen.append(list(token_bytes)) or original(token_bytes)
    try:
        with pytest.raises(Recorded):
            asyncio.run(query(**args, model=model, decoder="argmax"))
    finally:
        del prompts.ids
    ids, _ = recorder.requests.pop()
    return ids, model.get_tokenizer().convert_bytes_to_string(seen[-1])


def decode(model, ids):
    return model[0].get_tokenizer().tokenizer_impl.decode(ids)


SENTIMENT = {"task_prompt": "Classify the sentiment.", "text": "Great!", "CoT": False, "examples": []}

# What the built-in day care wrote literally before it used role tags (SmolLM2's ChatML).
LITERAL_FITNESS = '''
"<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n"
for example in examples:
    "Example:\\n{example}\\n\\n"
"{task_prompt}\\nReview: {text}<|im_end|>\\n<|im_start|>assistant\\n"
if CoT:
    "Let me think step by step. [REASONING]" where len(TOKENS(REASONING)) < 60 and STOPS_AT(REASONING, "\\n")
    "So the answer is: "
"[ANSWER]" where len(TOKENS(ANSWER)) < 12 and STOPS_AT(ANSWER, "\\n")
'''
LITERAL_INITIAL_PROMPT_GEN = '''
"<|im_start|>user\\n{mutation_prompt}\\n{thinking_style}\\n\\nTask: {task_description}\\n"
"Write an instruction for this task in one sentence.<|im_end|>\\n<|im_start|>assistant\\n"
"Instruction: \\"[TASK_PROMPT]" where STOPS_BEFORE(TASK_PROMPT, '"') and STOPS_AT(TASK_PROMPT, "\\n") and len(TOKENS(TASK_PROMPT)) < 40
'''
SYSTEM_TURN = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
# SmolLM2's template adds this system turn to a conversation that has none
SYSTEM_DEFAULT_SMOLLM2 = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                          "<|im_end|>\n")


@pytest.fixture(scope="module")
def templates():
    return load_day_care(REPO / "day_care").breeder.templates


def test_day_care_holds_no_model_specific_marker():
    markers = ["<|im_start|>", "<|im_end|>", "[INST]", "[/INST]", "<start_of_turn>", "<end_of_turn>",
               "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|begin_of_text|>", "<s>", "</s>",
               "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<<SYS>>"]
    found = [(str(path.relative_to(REPO)), marker) for path in sorted((REPO / "day_care").rglob("*"))
             if path.is_file() and path.suffix in {".lmql", ".json", ".py"}
             for marker in markers if marker in path.read_text()]
    assert found == []


def test_fitness_template_gives_smollm2_the_same_ids_as_the_literal_chatml(smollm2, templates):
    tagged_ids, tagged_text = first_prompt(smollm2, templates["fitness_test_template"], **SENTIMENT)
    literal_ids, _ = first_prompt(smollm2, LITERAL_FITNESS, **SENTIMENT)
    assert tagged_ids == literal_ids
    assert decode(smollm2, tagged_ids) == (SYSTEM_TURN + "<|im_start|>user\nClassify the sentiment.\nReview: Great!"
                                           "<|im_end|>\n<|im_start|>assistant\n")
    assert tagged_text == ("<lmql:system/>You are a helpful assistant.<lmql:user/>Classify the sentiment.\n"
                           "Review: Great!<lmql:assistant/>")


def test_mutation_templates_gain_the_fitness_templates_system_turn(smollm2, templates):
    args = {"mutation_prompt": "Improve it.", "thinking_style": "Think.", "task_description": "Sentiment."}
    tagged_ids, _ = first_prompt(smollm2, templates["initial_prompt_gen"], **args)
    literal_ids, _ = first_prompt(smollm2, LITERAL_INITIAL_PROMPT_GEN, **args)
    system_ids = smollm2[0].get_tokenizer().tokenizer_impl.encode(SYSTEM_TURN)
    assert tagged_ids == system_ids + literal_ids


def template_args(template):
    lists = {"examples", "task_prompts", "elite_prompts", "workings"}
    return {name: (False if name == "CoT" else [f"{name} 1", f"{name} 2"] if name in lists else f"<{name}>")
            for name in template.args}


BUILT_IN_TEMPLATES = [*sorted(load_day_care(REPO / "day_care").breeder.templates),
                      "answer_quality:fitness_test_template"]


@pytest.fixture(scope="module")
def tagged_prompts(smollm2):
    """Every built-in template's first prompt, as role-tagged text and as SmolLM2 sees it."""
    day_care = load_day_care(REPO / "day_care")
    out = {}
    for name in BUILT_IN_TEMPLATES:
        task, _, key = name.rpartition(":")
        template = (day_care.for_task(task) if task else day_care).breeder.templates[key]
        ids, text = first_prompt(smollm2, template, **template_args(template))
        out[name] = (text, decode(smollm2, ids))
    return out


@pytest.mark.parametrize("name", BUILT_IN_TEMPLATES)
def test_every_built_in_template_is_one_system_user_assistant_exchange(tagged_prompts, name):
    text, smollm2_prompt = tagged_prompts[name]
    assert text.startswith("<lmql:system/>You are a helpful assistant.<lmql:user/>")
    assert text.count("<lmql:user/>") == text.count("<lmql:assistant/>") == 1
    assistant_text = text.split("<lmql:assistant/>")[1]
    assert smollm2_prompt.startswith(SYSTEM_TURN + "<|im_start|>user\n")
    assert smollm2_prompt.endswith("<|im_end|>\n<|im_start|>assistant\n" + assistant_text)
    assert smollm2_prompt.count("<|im_start|>") == 3 and "<lmql:" not in smollm2_prompt and "((" not in smollm2_prompt


def segments_of(tagged_text):
    from lmql.runtime.bopenai.openai_api import tagged_segments  # LMQL's own splitter (its OpenAI chat path)

    return [(s["tag"], s["text"]) for s in tagged_segments(tagged_text)]


# The built-in fitness template for other models, as llama.cpp renders their templates (see above).
OTHER_MODELS = {
    "llama-3": (LLAMA_3, "<|begin_of_text|>", "<|eot_id|>",
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nClassify the sentiment.\nReview: Great!<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "mistral-v0.1": (MISTRAL_V01, "<s>", "</s>",
                     "<s>[INST] You are a helpful assistant.\nClassify the sentiment.\nReview: Great! [/INST]"),
    "mistral-v3": (MISTRAL_V3, "<s>", "</s>",
                   "<s>[INST] You are a helpful assistant.\n\nClassify the sentiment.\nReview: Great![/INST]"),
    "gemma": (GEMMA, "<bos>", "<eos>",
              "<start_of_turn>user\nYou are a helpful assistant.\nClassify the sentiment.\nReview: Great!"
              "<end_of_turn>\n"
              "<start_of_turn>model\n"),
}
MARKERS = {"chatml": ("<|im_start|>", "<|im_end|>"), "llama-3": ("<|start_header_id|>", "<|eot_id|>"),
           "mistral": ("[INST]", "[/INST]"), "gemma": ("<start_of_turn>", "<end_of_turn>"),
           "lmql": ("<lmql:", "((system))", "((user))", "((assistant))")}


@pytest.mark.parametrize("model", sorted(OTHER_MODELS))
def test_fitness_template_for_other_chat_templates(smollm2, templates, model):
    template, bos, eos, expected = OTHER_MODELS[model]
    _, tagged_text = first_prompt(smollm2, templates["fitness_test_template"], **SENTIMENT)
    assert render_chat(template, bos, eos, segments_of(tagged_text)) == expected


@pytest.mark.parametrize("model", sorted(OTHER_MODELS))
@pytest.mark.parametrize("name", BUILT_IN_TEMPLATES)
def test_no_marker_of_another_format_is_left(tagged_prompts, model, name):
    template, bos, eos, _ = OTHER_MODELS[model]
    text, _ = tagged_prompts[name]
    prompt = render_chat(template, bos, eos, segments_of(text))
    own = model.split("-v")[0]  # mistral-v0.1 -> mistral
    assert [m for family, marks in MARKERS.items() if family != own for m in marks if m in prompt] == []
    assert prompt.endswith(text.split("<lmql:assistant/>")[1])  # the assistant's own text follows the opening


# --------------------------------------------------------------------------------------------------
# What LMQL is told about our models
# --------------------------------------------------------------------------------------------------

def test_int_constraint_keeps_its_digit_mask_with_role_tags(smollm2):
    import lmql.ops.ops as ops
    import lmql.runtime.interpreter as interpreter

    model, recorder = smollm2
    assert interpreter.model_info(model.model_identifier).is_chat_model  # tags are kept...
    assert not ops.model_info(model.model_identifier).is_chat_model  # ...INT masks digits as for local models
    ids, _ = first_prompt(smollm2, '"{:user}How many legs has a spider?{:assistant}[N]" where INT(N)')
    assert decode(smollm2, ids).endswith("<|im_start|>user\nHow many legs has a spider?<|im_end|>\n"
                                         "<|im_start|>assistant\n")
    query = lmql.query('"{:user}How many legs has a spider?{:assistant}[N]" where INT(N)', is_async=True)
    with pytest.raises(Recorded):
        asyncio.run(query(model=model, decoder="argmax"))
    _, mask = recorder.requests.pop()
    tokenizer = model.get_tokenizer().tokenizer_impl
    allowed = [tokenizer.decode([i]) for i in range(len(mask)) if mask[i] > -1e20]
    # LMQL's number tokens for a first digit (a chat model would get no mask at all)
    assert set("123456789") <= set(allowed) and all(re.fullmatch("[ 1-9][0-9]*", t) for t in allowed)


def test_lmtp_clients_render_role_tags_before_sending(smollm2):
    import lmql.runtime.interpreter as interpreter

    from lpb_plugins.llama_cpp.lmtp_client import remote_model

    client = remote_model("127.0.0.1:9")  # connects only when a query runs
    assert interpreter.model_info(client.model_identifier).is_chat_model
    tokenizer = smollm2[0].get_tokenizer()
    token_bytes = tokenizer.decode_bytes(tokenizer("<lmql:user/>Hi<lmql:assistant/>")["input_ids"])
    ids = client.get_tokenizer().convert_bytes_to_ids(token_bytes)  # what LMQL's LMTP client sends
    assert decode(smollm2, ids) == SYSTEM_DEFAULT_SMOLLM2 + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_role_tag_ids_move_above_a_larger_vocabulary(smollm2):
    from lmql.runtime import tokenizer as lmql_tokenizer

    from lpb_plugins import random_model_adapter

    random_model_adapter.install()
    gpt2 = lmql_tokenizer.tokenizer(random_model_adapter.RANDOM_MODEL_TOKENIZER)  # 50257 tokens > SmolLM2's 49152
    reserve_role_tag_ids(gpt2)
    ids = lmql_tokenizer.special_token_mappings
    assert min(ids.values()) > gpt2.model_vocab_size
    assert {i: name for name, i in ids.items()} == lmql_tokenizer.reverse_special_token_mappings
    # SmolLM2's prompts still render (the tags are found at their new ids)
    tagged_ids, _ = first_prompt(smollm2, '"{:user}Hi{:assistant}[X]"')
    assert decode(smollm2, tagged_ids).endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


# --------------------------------------------------------------------------------------------------
# OpenAI chat models: LMQL's own chat path turns the tags into messages. A local server speaking
# /v1/chat/completions records what it is sent.
# --------------------------------------------------------------------------------------------------

async def chat_completions_server(reply: str, requests: list):
    from aiohttp import web

    async def chat_completions(request):
        requests.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for delta, finish in (({"role": "assistant"}, None), ({"content": reply}, None), ({}, "stop")):
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            chunk = {"object": "chat.completion.chunk", "choices": [choice]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.add_routes([web.post("/v1/chat/completions", chat_completions)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"


def test_openai_chat_model_gets_the_turns_as_messages(templates, monkeypatch):
    monkeypatch.setenv("SLOW_TOKENIZER_OK", "1")  # LMQL's warning about the pure-Python gpt2 tokenizer
    requests = []

    async def main():
        runner, url = await chat_completions_server("positive", requests)
        try:
            # gpt2's tokenizer ships with LMQL; gpt-3.5-turbo's (tiktoken) would be downloaded
            model = lmql.model("openai/gpt-3.5-turbo", endpoint=url, tokenizer="gpt2")
            query = templates["fitness_test_template"].compiled()
            return await query(**SENTIMENT, model=model, decoder="argmax")
        finally:
            await runner.cleanup()

    result = asyncio.run(main())
    assert result.variables["ANSWER"].strip() == "positive"
    assert requests[0]["model"] == "gpt-3.5-turbo"
    assert requests[0]["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Classify the sentiment.\nReview: Great!"},
        {"role": "assistant", "content": ""},  # LMQL sends the open assistant turn, empty here
    ]


# --------------------------------------------------------------------------------------------------
# End to end on the embedded model
# --------------------------------------------------------------------------------------------------

LITERAL_ANSWER_QUALITY = '''
"<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n"
for example in examples:
    "Example:\\n{example}\\n\\n"
"{task_prompt}\\nQuestion: {question}\\nProposed answer: {answer}<|im_end|>\\n<|im_start|>assistant\\n"
if CoT:
    "Let me think step by step. [REASONING]" where len(TOKENS(REASONING)) < 60 and STOPS_AT(REASONING, "\\n")
    "So the answer is: "
"[ANSWER]" where ANSWER in ["yes", "no"]
'''


@pytest.mark.embedded
@pytest.mark.parametrize("cot", [False, True], ids=["answer", "reasoning-then-answer"])
def test_role_tagged_query_answers_as_the_literal_chatml_one(cot):
    from lpb_plugins.llama_cpp.lmql_model import load_model

    model = load_model()
    day_care = load_day_care(REPO / "day_care").for_task("answer_quality")
    template = day_care.breeder.templates["fitness_test_template"]
    tagged = template.compiled()
    literal = lmql.query(LITERAL_ANSWER_QUALITY, is_async=True, input_variables=list(template.args))
    args = {"task_prompt": "Is the proposed answer correct? Answer yes or no.",
            "question": "What is the capital of France?",
            "answer": "Paris", "CoT": cot, "examples": ["Question: 2+2?\nProposed answer: 5\nAnswer: no"]}
    prompts = []
    generate = model.engine.generate

    def recording_generate(ids, **options):
        prompts.append(list(ids))
        return generate(ids, **options)

    model.engine.generate = recording_generate
    try:
        tagged_result = asyncio.run(tagged(**args, model=model, decoder="argmax"))
        n_tagged = len(prompts)
        literal_result = asyncio.run(literal(**args, model=model, decoder="argmax"))
    finally:
        del model.engine.generate
    assert tagged_result.variables["ANSWER"] in ("yes", "no")
    assert tagged_result.variables == literal_result.variables
    assert prompts[:n_tagged] == prompts[n_tagged:] and n_tagged > 0
