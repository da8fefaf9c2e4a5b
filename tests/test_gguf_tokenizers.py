"""The tokenizers rebuilt from GGUF metadata give llama.cpp's own ids, for every tokenizer family.

Each test writes a tiny GGUF (a vocabulary and no weights, which llama.cpp loads with
``vocab_only=True``): SentencePiece vocabularies trained here in milliseconds with the
``sentencepiece`` package (as Llama 2 / Mistral and as Gemma ship them), and one byte-level BPE
vocabulary trained with ``tokenizers``, written once per pre-tokenizer name.  Nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest

spm = pytest.importorskip("sentencepiece")
gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from lpb_core.errors import InputError  # noqa: E402
from lpb_plugins.llama_cpp import gguf_build, gguf_tokenizer  # noqa: E402
from lpb_plugins.llama_cpp.gguf_bpe import PRE_TOKENIZERS  # noqa: E402
from lpb_plugins.llama_cpp.gguf_tokenizer import (GGUFTokenizer, read_meta, tokenizer_dir_for,  # noqa: E402
                                                  tokenizer_fingerprint)
from lpb_plugins.llama_cpp.gguf_vocab import TokenType  # noqa: E402

# Texts compared with llama.cpp: accents, emoji, CJK, code with indentation and tabs, leading,
# trailing and repeated spaces, newlines, digits, contractions, unusual whitespace and marks.
TEXTS = [
    "Hello world",
    " Hello quixotic école",
    "  two leading spaces",
    "trailing spaces   ",
    "a  b   c    d",
    "Numbers 12345 and 3.14159, -42, 1e-9, 2024-01-31! 1234567",
    "Café naïve résumé façade Ångström Straße ÉCOLE Ünïcödé",
    "Emoji 🎉🚀👍🏽 and CJK 日本語 中文 한국어, Greek αβγ, Cyrillic привет",
    "line1\nline2\n\n\tindented\r\nwindows",
    "def f(x):\n    return x ** 2  # square\n\n\tprint(f(3))\n",
    "I'm sure you're right; they'll've known it's theirs. I'M YOU'RE it'sure 'tis 'llama",
    "Punctuation: !?;:,.()[]{}<>\"'`~@#$%^&*_+=|\\/",
    "tilde ~é ~x a~b $5+3=8 ^_^",
    "x ²³ ½ Ⅻ ٣ CamelCaseWord HTTPServer iPhone",
    "nbsp\u00a0here\u3000ideographic\u2003em",
    "zero\u200bwidth cafe\u0301 『引用』「こんにちは」、。！？",
    "https://example.com/a?b=c&d=e#frag",
    '{"json": [1, 2.5, null], "k": "v"}',
    "new\n\n\n\nlines  \n  \n",
    "   ",
    "\n",
    " ",
    "",
]

# Training text: the texts above plus prose and code, so that merges span letters, marks,
# punctuation, digits and spaces (pre-tokenizers that split differently then give other ids).
CORPUS = "\n".join(TEXTS * 3 + [
    "The quick brown fox jumps over the lazy dog. Hello, hello world! Hello again.",
    "A tilde ~é before an accent ~é and ~é again; money $100+$200; user@example.com.",
    "Le café est très bon. Die Straße ist lang. El niño está aquí. Ça va? Oui!",
    "def greet(name):\n\tif name:\n\t\treturn f'Hello {name}!'\n    return None  # nothing\n",
    "for i in range(10):\n    total += i * 2  # 0, 2, 4 ... 18\nprint(total)",
    "日本語のテキストです。中文文本。한국어 텍스트입니다. Ελληνικά κείμενα. Русский текст.",
    "Numbers: 1, 22, 333, 4444, 55555, 3.14, 2.718, 1,000,000 and 1e10.",
    "I've, you'll, he'd, she's, it's, we're, they've, don't, can't, won't.",
    "it'sure, 'sure, they'sure, 'tis, 'llama",
    "  indented  text  with   odd    spacing\tand\ttabs\n\n\nand blank lines",
] * 4)


def write_gguf(path, *, model, tokens, types, scores=None, merges=None, pre=None, bos=None, eos=None,
               unk=None, add_bos=None, add_space_prefix=None, random_weights=False):
    """A GGUF holding a tokenizer and the hyper-parameters of a one-layer llama; its weights
    (random) only with ``random_weights``, else llama.cpp loads it with ``vocab_only=True`` only."""
    n_embd, n_head, n_ff = 32, 4, 64
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-tokenizer-test")
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    if random_weights:
        rng = np.random.default_rng(0)
        shapes = {"token_embd": (len(tokens), n_embd), "output": (len(tokens), n_embd),
                  "blk.0.attn_q": (n_embd, n_embd), "blk.0.attn_k": (n_embd, n_embd),
                  "blk.0.attn_v": (n_embd, n_embd), "blk.0.attn_output": (n_embd, n_embd),
                  "blk.0.ffn_gate": (n_ff, n_embd), "blk.0.ffn_up": (n_ff, n_embd),
                  "blk.0.ffn_down": (n_embd, n_ff)}
        for name, shape in shapes.items():
            w.add_tensor(f"{name}.weight", (rng.standard_normal(shape) * 0.5).astype(np.float32))
        for norm in ("output_norm", "blk.0.attn_norm", "blk.0.ffn_norm"):
            w.add_tensor(f"{norm}.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    for add, value in ((w.add_bos_token_id, bos), (w.add_eos_token_id, eos), (w.add_unk_token_id, unk),
                       (w.add_add_bos_token, add_bos), (w.add_add_space_prefix, add_space_prefix)):
        if value is not None:
            add(value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_vocab(path):
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def llama_ids(llama, text):
    return llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)


@pytest.fixture(autouse=True)
def tokenizer_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# --------------------------------------------------------------------------
# SentencePiece (tokenizer.ggml.model = "llama")
# --------------------------------------------------------------------------

# How the families ship: Llama 2 / Mistral (space prefix, <s> </s> control), Gemma (no space
# prefix, turn markers as control tokens, user-defined tokens), and a unigram-trained vocabulary
# (scores are log-probabilities, not ranks).
SPM_STYLES = {
    "llama": dict(model_type="bpe", control=[], user_defined=[], add_space_prefix=None,
                  chat="<s>[INST] Be brief.\nHi there! [/INST] Sure.</s><s>[INST] And now? [/INST]"),
    "gemma": dict(model_type="bpe", control=["<start_of_turn>", "<end_of_turn>"],
                  user_defined=["<table>", "\t\t"], add_space_prefix=False,
                  chat="<s><start_of_turn>user\nHi <table> there\t\tx<end_of_turn>\n<start_of_turn>model\n"),
    "unigram": dict(model_type="unigram", control=[], user_defined=["<|sep|>"], add_space_prefix=None,
                    chat="<s>Q: one<|sep|>two <|sep|> three</s>"),
}


def spm_gguf(path, style, **overrides):
    spec = SPM_STYLES[style]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines()), model_writer=model, model_type=spec["model_type"],
        vocab_size=900, hard_vocab_limit=False, byte_fallback=True, character_coverage=1.0, split_digits=True,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, normalization_rule_name="identity",
        control_symbols=spec["control"], user_defined_symbols=spec["user_defined"], minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]

    def token_type(i):
        if sp.is_unknown(i):
            return TokenType.UNKNOWN
        if sp.is_control(i):
            return TokenType.CONTROL
        if sp.is_byte(i):
            return TokenType.BYTE
        return TokenType.USER_DEFINED if tokens[i] in spec["user_defined"] else TokenType.NORMAL

    settings = dict(bos=sp.bos_id(), eos=sp.eos_id(), unk=sp.unk_id(),
                    add_space_prefix=spec["add_space_prefix"])
    settings.update(overrides)
    return write_gguf(path, model="llama", tokens=tokens, types=[token_type(i) for i in range(len(tokens))],
                      scores=[sp.get_score(i) for i in range(len(tokens))], **settings)


@pytest.mark.parametrize("style", sorted(SPM_STYLES))
def test_sentencepiece_gguf_gives_llama_cpp_ids(style, tmp_path):
    path = spm_gguf(tmp_path / f"{style}.gguf", style)
    llama = llama_vocab(path)
    tok = GGUFTokenizer(tokenizer_dir_for(path))
    chat = SPM_STYLES[style]["chat"]
    for text in TEXTS + [chat, chat.replace("<s>", "")]:
        assert tok.encode(text) == llama_ids(llama, text), text
        # LMQL's interface: a piece of a prompt, which decodes back to itself
        assert tok.decode(tok(text)["input_ids"]) == text, text
    # a prompt that starts with BOS as text (chat templates do) gets llama.cpp's ids through LMQL's interface
    assert tok(chat)["input_ids"] == llama_ids(llama, chat)
    assert tok(chat)["input_ids"][0] == tok.bos_token_id == 1


def test_sentencepiece_space_prefix_starts_a_text_but_not_a_continuation(tmp_path):
    llama_style = GGUFTokenizer(tokenizer_dir_for(spm_gguf(tmp_path / "llama.gguf", "llama")))
    gemma_style = GGUFTokenizer(tokenizer_dir_for(spm_gguf(tmp_path / "gemma.gguf", "gemma")))
    assert llama_style.meta["add_space_prefix"] is True and gemma_style.meta["add_space_prefix"] is False
    first = llama_style.tokenize(" Hello")[0]  # what a prompt piece " Hello" starts with
    assert first.startswith("▁") and llama_style.encode("Hello")[0] == llama_style.vocab[first]
    assert not llama_style.tokenize("Hello")[0].startswith("▁")
    assert not gemma_style.tokenize("Hello")[0].startswith("▁")
    assert gemma_style.encode("Hello") == gemma_style("Hello")["input_ids"]


def test_sentencepiece_measured_against_a_unigram_model(tmp_path):
    """Why the tokenizer is a BPE with merges from the scores: a Unigram model over the same
    vocabulary and scores (Viterbi) gives other ids than llama.cpp on most texts."""
    from tokenizers import Tokenizer, models, normalizers

    path = spm_gguf(tmp_path / "llama.gguf", "llama")
    llama = llama_vocab(path)
    reader = gguf.GGUFReader(str(path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    scores = reader.fields["tokenizer.ggml.scores"].contents()
    unigram = Tokenizer(models.Unigram(list(zip(tokens, scores)), unk_id=0, byte_fallback=True))
    unigram.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok = GGUFTokenizer(tokenizer_dir_for(path))
    texts = [t for t in TEXTS if t]
    assert all(tok.encode(t) == llama_ids(llama, t) for t in texts)
    assert sum(unigram.encode(t).ids != llama_ids(llama, t) for t in texts) > len(texts) // 2


@pytest.mark.parametrize("add_bos", [None, True, False])
def test_bos_as_llama_cpp_adds_it(add_bos, tmp_path):
    path = spm_gguf(tmp_path / "llama.gguf", "llama", add_bos=add_bos)
    with_bos = llama_vocab(path).tokenize(b"Hi", add_bos=True, special=True)
    tok = GGUFTokenizer(tokenizer_dir_for(path))
    # SentencePiece GGUFs want BOS unless they say otherwise (llama.cpp's default)
    assert (tok.bos_token_id is not None) == (with_bos[0] == 1) == (add_bos is not False)


def test_lmql_sees_sentencepiece_pieces(tmp_path):
    from lmql.ops.token_set import VocabularyMatcher
    from lmql.runtime.tokenizer import LMQLTokenizer

    tok = GGUFTokenizer(tokenizer_dir_for(spm_gguf(tmp_path / "llama.gguf", "llama")))
    lmql_tok = LMQLTokenizer("lpb-test-spm", tokenizer_impl=tok)
    matcher = VocabularyMatcher(lmql_tok, "lpb-test-spm")
    assert (matcher.space_repr, matcher.nl_repr) == ("▁", "<0x0A>")
    assert lmql_tok.decode(lmql_tok("Hello there")["input_ids"]) == "Hello there"
    # a generated answer " yes" starts with the space marker and decodes with its space
    yes = lmql_tok(" yes")["input_ids"]
    assert lmql_tok.tokenize(" yes")[0].startswith("▁") and lmql_tok.decode(yes) == " yes"
    assert tok.convert_bytes_to_string(tok.decode_tokens_bytes(yes)) == " yes"


def test_lmql_query_on_a_sentencepiece_model(tmp_path):
    """A one-layer llama with random weights and a SentencePiece vocabulary, run by LMQL: label
    constraints hold over '▁' pieces and the text around the variables keeps its spaces."""
    import lmql

    from lpb_plugins.llama_cpp.lmql_model import load_model

    @lmql.query
    async def two_answers(prompt):
        '''lmql
        sample(temperature=1.0)
        "{prompt}[ANSWER]" where ANSWER in ["yes", "no", "maybe not"]
        "\nNext: [B] and [C]" where B in [" fine", "ok"] and len(TOKENS(C)) < 4
        '''

    from lmql.ops.token_set import VocabularyMatcher

    model = load_model(spm_gguf(tmp_path / "tiny.gguf", "llama", random_weights=True), n_ctx=256)
    prompt = "<s>Question: is the sky blue? Answer:"
    try:
        for _ in range(3):
            result = asyncio.run(two_answers(prompt, model=model))[0]
            answer, b, c = (result.variables[v] for v in ("ANSWER", "B", "C"))
            assert answer in {"yes", "no", "maybe not"} and b in {" fine", "ok"}
            assert result.prompt == f"{prompt}{answer}\nNext: {b} and {c}"
    finally:
        # LMQL pickles every vocabulary matcher into ~/.cache/lmql at exit: not this throwaway one's
        for matcher in VocabularyMatcher._instances.values():
            if matcher.model_identifier == model.model_identifier:
                matcher.save = lambda: None


# --------------------------------------------------------------------------
# byte-level BPE (tokenizer.ggml.model = "gpt2")
# --------------------------------------------------------------------------

BPE_CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BPE_CHAT = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
# entries no merge reaches: only a pre-tokenizer that ignores merges (llama-bpe) gives them
UNMERGED = ["ĠHello", "Ġquixotic", "ĠÃ©cole"]


@pytest.fixture(scope="module")
def bpe_vocab():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    # chunks of several lines as words: merges cross letters, digits, marks, spaces and newlines
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    chunks = [CORPUS[i:i + 120] for i in range(0, len(CORPUS), 120)]
    bpe.train_from_iterator(chunks, trainers.BpeTrainer(
        vocab_size=1500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=BPE_CONTROL,
        show_progress=False))
    model = json.loads(bpe.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])] + UNMERGED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [TokenType.CONTROL if t in BPE_CONTROL else TokenType.NORMAL for t in tokens]
    return tokens, types, merges


def bpe_gguf(path, bpe_vocab, **settings):
    tokens, types, merges = bpe_vocab
    return write_gguf(path, model="gpt2", tokens=tokens, types=types, merges=merges,
                      bos=0, eos=tokens.index("<|im_end|>"), **settings)


@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS) + [None])
def test_byte_level_gguf_gives_llama_cpp_ids(pre, bpe_vocab, tmp_path):
    path = bpe_gguf(tmp_path / f"bpe-{pre}.gguf", bpe_vocab, pre=pre)
    llama = llama_vocab(path)
    tok = GGUFTokenizer(tokenizer_dir_for(path))
    for text in TEXTS + [BPE_CHAT]:
        expected = llama_ids(llama, text)
        assert tok.encode(text) == expected, text
        assert tok(text)["input_ids"] == expected, text
        assert tok.decode(expected) == text, text
    assert (tok.bos_token_id is not None) == (llama.tokenize(b"x", add_bos=True, special=True)[0] == 0)


def test_markers_typed_as_text_are_special_as_in_llama_cpp(bpe_vocab, tmp_path):
    """llama.cpp makes end-of-turn and similar markers special whatever type the GGUF gives them
    (here all normal), except "</s>" beside Gemma 4's "<|tool_response>"."""
    tokens, types, merges = bpe_vocab
    tokens = tokens + ["</s>", "<|tool_response>"]
    path = write_gguf(tmp_path / "untyped.gguf", model="gpt2", pre="qwen2", tokens=tokens,
                      types=[TokenType.NORMAL] * len(tokens), merges=merges)
    llama = llama_vocab(path)
    tok = GGUFTokenizer(tokenizer_dir_for(path))
    text = BPE_CHAT + "a</s>b<|tool_response>c<|endoftext|>"
    assert tok.encode(text) == llama_ids(llama, text)
    special = {tokens[i] for i in tok.meta["special_token_ids"]}
    assert special == {"<|im_end|>", "<|endoftext|>", "<|tool_response>"}


def test_pre_tokenizers_differ_on_the_test_texts(bpe_vocab, tmp_path):
    """The comparison above can fail: on these texts the families' regexes give different ids
    (bailingmoe's and minicpm5's regexes split as qwen2's and llama-bpe's do)."""
    ids = {}
    for pre in ("gpt-2", "smollm", "llama-bpe", "dbrx", "qwen2", "qwen35", "gpt-4o", "tekken", "default",
                "deepseek-llm", "deepseek-coder", "deepseek-v3", "laguna", "ufakzeka", "seed-coder",
                "exaone-moe", "falcon", "chameleon", "bloom", "viking"):
        tok = GGUFTokenizer(tokenizer_dir_for(bpe_gguf(tmp_path / f"{pre}.gguf", bpe_vocab, pre=pre)))
        ids[pre] = [tok.encode(text) for text in TEXTS]
    same = [(a, b) for a in ids for b in ids if a < b and ids[a] == ids[b]]
    assert not same


def test_unknown_pre_tokenizer_is_an_input_error_naming_it(bpe_vocab, tmp_path):
    path = bpe_gguf(tmp_path / "odd.gguf", bpe_vocab, pre="no-such-pre")
    with pytest.raises(InputError) as error:
        tokenizer_dir_for(path)
    assert error.value.field == "tokenizer.ggml.pre" and error.value.where == str(path)
    assert "'no-such-pre' is not supported" in str(error.value) and "llama-bpe" in str(error.value)


def test_unknown_tokenizer_model_is_an_input_error_naming_it(tmp_path):
    path = write_gguf(tmp_path / "t5.gguf", model="t5", tokens=["<pad>", "</s>", "<unk>", "▁a"],
                      types=[3, 3, 2, 1], scores=[0.0, 0.0, 0.0, -1.0])
    with pytest.raises(InputError) as error:
        tokenizer_dir_for(path)
    assert error.value.field == "tokenizer.ggml.model" and "'t5' is not supported" in str(error.value)


# --------------------------------------------------------------------------
# Gemma 4 (tokenizer.ggml.model = "gemma4")
# --------------------------------------------------------------------------

GEMMA4_CONTROL = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]


@pytest.fixture(scope="module")
def gemma4_vocab():
    """A BPE over '▁'-escaped text split at newlines, with byte tokens and runs of newlines as
    entries (llama.cpp fails on a run of newlines that is not one)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split(Regex("[^\n]+|[\n]+"), "isolated")
    chunks = [CORPUS[i:i + 120] for i in range(0, len(CORPUS), 120)]
    bpe.train_from_iterator(chunks, trainers.BpeTrainer(vocab_size=1200, special_tokens=GEMMA4_CONTROL,
                                                        show_progress=False))
    model = json.loads(bpe.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    extra = [f"<0x{b:02X}>" for b in range(256)] + ["\n" * n for n in range(1, 9)]
    tokens += [t for t in extra if t not in tokens]
    types = [TokenType.CONTROL if t in GEMMA4_CONTROL else TokenType.BYTE if t in extra[:256] else TokenType.NORMAL
             for t in tokens]
    # no merge of newlines: llama.cpp never merges them (it asserts so), runs are entries or nothing
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, types, [m for m in merges if "\n" not in m]


def test_gemma4_gguf_gives_llama_cpp_ids(gemma4_vocab, tmp_path):
    tokens, types, merges = gemma4_vocab
    path = write_gguf(tmp_path / "gemma4.gguf", model="gemma4", tokens=tokens, types=types, merges=merges,
                      bos=tokens.index("<bos>"), eos=tokens.index("<eos>"), add_bos=False)
    llama = llama_vocab(path)
    tok = GGUFTokenizer(tokenizer_dir_for(path))
    chat = "<bos><start_of_turn>user\nHi  there\n\n\n<end_of_turn>\n<start_of_turn>model\n"
    for text in TEXTS + [chat]:
        assert tok.encode(text) == llama_ids(llama, text), text
        assert tok.decode(tok(text)["input_ids"]) == text, text
    assert tok.encode("a\n\n\nb")[1] == tokens.index("\n\n\n")  # a run of newlines, whole
    # llama.cpp adds BOS to Gemma 4 prompts although this GGUF says add_bos_token = false
    assert llama.tokenize(b"x", add_bos=True, special=True)[0] == tok.bos_token_id == tokens.index("<bos>")


# --------------------------------------------------------------------------
# the cache
# --------------------------------------------------------------------------

def test_cache_key_changes_with_the_gguf_and_the_format(tmp_path, monkeypatch):
    path = spm_gguf(tmp_path / "model.gguf", "llama")
    first = tokenizer_dir_for(path)
    assert read_meta(first)["format"] == gguf_build.TOKENIZER_FORMAT
    assert tokenizer_dir_for(path) == first  # reused
    with monkeypatch.context() as m:
        m.setattr(gguf_tokenizer, "TOKENIZER_FORMAT", gguf_build.TOKENIZER_FORMAT + 1)
        assert tokenizer_dir_for(path) != first
    with monkeypatch.context() as m:  # other code building the tokenizer (here: another digest of it)
        m.setattr(gguf_build, "_builder_digest_cache", ["another version of the builder"])
        assert tokenizer_dir_for(path) != first
    # the same file rewritten without the space prefix: a new tokenizer, other ids, another fingerprint
    spm_gguf(path, "llama", add_space_prefix=False)
    second = tokenizer_dir_for(path)
    assert second != first and read_meta(second)["add_space_prefix"] is False
    assert GGUFTokenizer(first).encode("Hello") != GGUFTokenizer(second).encode("Hello")
    assert tokenizer_fingerprint(first) != tokenizer_fingerprint(second)
