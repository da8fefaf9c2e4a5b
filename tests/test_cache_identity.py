"""The query cache is keyed on what decides a model's outputs, not on settings a resume may change."""

import asyncio

import attrs
import pytest

from lpb_core.cache import QueryCache
from lpb_core.daycare import load_day_care
from lpb_core.decoding import parse_decoder
from lpb_core.llm import LanguageModel, ModelHandle
from lpb_core.plugins import load_plugins
from lpb_core.settings import RESUMABLE_CHANGES, BreedSettings

# A value for every setting a resume may change, unlike the defaults.
RESUMED = dict(evolution_generations=9, verbose=True, use_wandb=True, wandb_project="other", continue_run_number=0,
               loggers=("console", "wandb"), is_async=True, client_batch_size=4, server_batch_size=3,
               endpoints=("localhost:1",), max_llm_calls=5, max_tokens=6, max_cost=7.0, n_threads=3,
               api_base="http://127.0.0.1:1/v1", max_retries=2, request_timeout=3.0)


def settings(day_care, **changes):
    return BreedSettings(**{"task": "sentiment", "day_care_dir": day_care, "model_name_or_path": "random", **changes})


def test_every_resumable_setting_is_covered_here():
    assert set(RESUMED) == RESUMABLE_CHANGES


def ask_twice(day_care, tmp_path, first_handle, second_handle):
    """The same deterministic query through two handles sharing one cache; the usage of the second."""
    template = load_day_care(day_care).breeder.templates["first_order_prompt_gen"]
    args = {"mutation_prompt": "Shorter.", "task_prompt": "Is it positive?"}

    async def go():
        models = [LanguageModel(h, cache=QueryCache(tmp_path / "cache.sqlite")) for h in (first_handle, second_handle)]
        results = [await model.run(template, args, parse_decoder("argmax")) for model in models]
        for model in models:
            await model.aclose()
        return results, models[1].usage

    return asyncio.run(go())


def random_handle(day_care, **changes) -> ModelHandle:
    return load_plugins().backends.get("random").open("random", settings(day_care, **changes))


def test_a_handle_that_differs_only_in_resumable_settings_is_served_from_the_cache(day_care, tmp_path):
    first = random_handle(day_care)
    second = random_handle(day_care, **RESUMED)
    assert second.identity == first.identity
    # Say the backend describes the thread count and endpoints, as the llama.cpp one does.
    second = attrs.evolve(second, description=first.description + " (3 threads, at localhost:1)")
    (result, again), usage = ask_twice(day_care, tmp_path, first, second)
    assert again == result
    assert usage.cache_hits == 1 and usage.llm_calls == 0


def test_another_model_identity_is_not_served_from_the_cache(day_care, tmp_path):
    first = random_handle(day_care)
    other = attrs.evolve(first, identity="some other weights")
    _, usage = ask_twice(day_care, tmp_path, first, other)
    assert usage.cache_hits == 0 and usage.llm_calls == 1


def test_the_random_model_identity_is_its_seed(day_care):
    assert random_handle(day_care, seed=1).identity != random_handle(day_care, seed=2).identity


def test_a_backend_without_an_identity_keeps_working_keyed_on_its_description():
    handle = ModelHandle(description="my model", models=(), count_tokens=len)
    assert handle.identity == "my model"


def test_a_gguf_fingerprint_follows_the_content_not_the_name(tmp_path):
    from lpb_plugins.llama_cpp.model_files import gguf_fingerprint

    content = bytes(range(256)) * (40 << 10)  # 10 MiB: a head and sampled blocks
    a, b, c = tmp_path / "a.gguf", tmp_path / "copy.gguf", tmp_path / "changed.gguf"
    a.write_bytes(content)
    b.write_bytes(content)
    c.write_bytes(content[:-1] + b"\x00")  # the last byte, which was 0xff
    assert gguf_fingerprint(a) == gguf_fingerprint(b)
    assert gguf_fingerprint(c) != gguf_fingerprint(a)
    d = tmp_path / "longer.gguf"
    d.write_bytes(content + b"\0")
    assert gguf_fingerprint(d) != gguf_fingerprint(a)


@pytest.mark.embedded
def test_the_embedded_model_resumed_with_other_threads_is_served_from_the_cache(day_care, tmp_path):
    backend = load_plugins().backends.get("llama.cpp")
    one = backend.open("smollm2", settings(day_care, model_name_or_path="smollm2", n_threads=1))
    two = backend.open("smollm2", settings(day_care, model_name_or_path="smollm2", n_threads=2))
    assert one.description != two.description and one.identity == two.identity
    (result, again), usage = ask_twice(day_care, tmp_path, one, two)
    assert again == result
    assert usage.cache_hits == 1 and usage.llm_calls == 0
