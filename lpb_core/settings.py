"""The resolved arguments of one breed. The CLI builds this; the library takes it."""

from __future__ import annotations

from pathlib import Path

import attrs

# Settings that may differ when a run is resumed: they change neither which calls are made nor their results.
RESUMABLE_CHANGES = frozenset({
    "evolution_generations", "verbose", "use_wandb", "wandb_project", "continue_run_number", "loggers",
    "is_async", "client_batch_size", "server_batch_size", "endpoints", "max_llm_calls", "max_tokens", "max_cost", "n_threads",
    "api_base", "max_retries", "request_timeout",
})

# Validation items are where the winner is chosen; with fewer, one answer moves a finalist's fitness by
# more than finalists differ.  Measured (benchmarks/README.md, bench_quality): with 15 validation items a
# breed chose the hand prompt that scored 0.075 lower on the 40 held-out items.
MIN_VALIDATION_ITEMS = 30
# The finalists are compared on the validation items pooled with training items, up to this many in all:
# enough to tell prompts a few answers apart (standard error about 0.045 at 100 items), at a cost of at
# most this many calls per finalist.
FINALS_ITEMS = 100

# Loggers every `lpb breed` enables: progress on the console (not with --quiet), then the event log.
DEFAULT_LOGGERS = ("console", "events")


@attrs.frozen
class BreedSettings:
    task: str
    day_care_dir: Path = attrs.field(converter=Path)
    model_name_or_path: str = "smollm2"
    decoder_options_override: str | None = None
    fitness_test_suite: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    is_async: bool = False
    client_batch_size: int = 1
    server_batch_size: int | None = None  # sequences an in-process model decodes together; None: its default
    population_size: int = 50  # the paper's
    initial_prompts_per_unit: int = 1
    evolution_generations: int = 20
    num_eda_samples: int = 10
    num_lamarckian_reasonings: int = 1
    chunk_size: int | None = None
    test_cot: bool = False
    test_no_cot: bool = False
    verbose: bool = False
    seed: int = 0
    continue_run_number: int | None = None
    debug_mode: bool = False
    use_wandb: bool = False
    wandb_project: str = "llama-day-care"
    # Beyond the seed's table:
    selection_strategy: str = "binary_tournament"
    similarity_filter: str = "trigram_cosine"
    operators: tuple[str, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))
    disabled_plugins: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    loggers: tuple[str, ...] = attrs.field(default=DEFAULT_LOGGERS, converter=tuple)
    fitness_batch_size: int = 100  # the paper's; 0 means every training item
    test_split: float = 0.2
    test_suite: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))  # replaces the split
    endpoints: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    n_threads: int | None = None
    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None  # USD, hosted models with known prices
    cache: bool = True  # reuse results of deterministic queries (SQLite in the run directory)
    # Beating the user's own prompt:
    initial_prompts: tuple[str, ...] = attrs.field(default=(), converter=tuple)  # seeds, beside the task's own
    task_description_unit: bool = True  # generation 0 includes the task description itself as a prompt
    mutation_model: str | None = None  # writes the prompts; None: the model being optimised does
    validation_split: float = 0.25  # share of the training items kept back to choose the winner
    finalists: int = 4  # units of the last generation, by training fitness, that compete in the final
    # OpenAI-compatible servers and remote calls:
    api_base: str | None = None  # e.g. http://127.0.0.1:8000/v1; None: $OPENAI_BASE_URL, else OpenAI's own API
    tokenizer: str | None = None  # the served model's tokenizer: a .gguf file or a Hugging Face tokenizer folder
    max_retries: int = 5  # per request, after a timeout, lost connection, HTTP 429 or 5xx
    request_timeout: float = 120.0  # seconds one request may take

    @property
    def variants(self) -> tuple[str, ...]:
        """Which fitness-test variants run; the direct answer when neither flag is given."""
        chosen = tuple(v for v, on in (("cot", self.test_cot), ("no_cot", self.test_no_cot)) if on)
        return chosen or ("no_cot",)

    @property
    def concurrency(self) -> int | None:
        """Queries run at once: --client-batch-size with --is-async, else None (what the model serves best)."""
        return self.client_batch_size if self.is_async else None

    @classmethod
    def known(cls, saved: dict) -> dict:
        """The entries of a run's saved settings that are settings of this version (older runs may hold others)."""
        names = {f.name for f in attrs.fields(cls)}
        return {k: v for k, v in saved.items() if k in names}

    def to_dict(self) -> dict:
        def plain(value):
            return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value

        return {field.name: plain(getattr(self, field.name)) for field in attrs.fields(BreedSettings)}
