"""The engine's one narrow door to language models: run this LMQL template with these arguments.

Backends (plugins) open a ``ModelHandle``; ``LanguageModel`` compiles templates once, bounds
concurrency, spreads queries over the handle's models and counts what was spent.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import json
import time
from typing import Callable

import attrs

from lpb_core import constraints, retry
from lpb_core.cache import QueryCache, cache_key
from lpb_core.decoding import Decoder
from lpb_core.errors import BreedError, InputError, ModelError, PluginFailure
from lpb_core.templates import Template, TemplateError
from lpb_core.units import Usage


class BudgetExhausted(Exception):
    """The next call would pass --max-llm-calls or --max-tokens; the run stops after its last full generation."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class Budget:
    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None  # USD, for models whose handles know their prices

    def check(self, usage: Usage) -> None:
        if self.max_llm_calls is not None and usage.llm_calls >= self.max_llm_calls:
            raise BudgetExhausted(f"max_llm_calls ({self.max_llm_calls}) reached")
        if self.max_tokens is not None and usage.prompt_tokens + usage.completion_tokens >= self.max_tokens:
            raise BudgetExhausted(f"max_tokens ({self.max_tokens}) reached")
        if self.max_cost is not None and usage.cost_usd >= self.max_cost:
            raise BudgetExhausted(f"max_cost (${self.max_cost:g}) reached")


@attrs.define
class Meter:
    """What a run has spent over all its models (totals of earlier sessions included), and its budget."""

    budget: Budget = Budget()
    usage: Usage = Usage()
    consecutive_failures: int = 0  # calls failed after their retries since the last that succeeded
    last_failure: str | None = None  # why the last failed call failed


def cost_of(usage: Usage, prices: tuple[float, float] | None) -> float:
    """USD for these tokens at (prompt, completion) prices per million; 0 for models without prices."""
    if prices is None:
        return 0.0
    return (usage.prompt_tokens * prices[0] + usage.completion_tokens * prices[1]) / 1e6


async def run_all(coroutines) -> list:
    """Run concurrently and keep order; the first failure cancels the rest and is raised as it is."""
    coroutines = list(coroutines)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]
    except BaseExceptionGroup as failures:
        first = failures.exceptions[0]
        first.__suppress_context__ = True  # not `from None`: that would drop the failure's own cause
        raise first
    return [task.result() for task in tasks]


def _caused_by(exc: BaseException, kinds) -> BaseException | None:
    """``exc`` or the first of its causes that is one of ``kinds`` (LMQL may wrap what a backend raised)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _call_failure(exc: BaseException) -> retry.CallFailed | None:
    return _caused_by(exc, retry.CallFailed)


@attrs.frozen
class ModelHandle:
    """An opened model, as a backend plugin returns it.

    ``seeded_sampling``: the models take the query keyword ``SAMPLE_SEED_ARG`` (an int) and draw every
    sampled token from it and the token's position, so a sampled answer depends on the run's seed and
    what was asked, never on timing or on the order concurrent queries reach the model.

    ``identity`` names what decides the model's outputs, and nothing else: it keys the query cache,
    so it must stay the same when only settings declared resumable change (thread count, endpoints,
    concurrency) and must change when the weights, tokenizer or sampling seed do. Backends should
    set it (a content fingerprint of a weights file, a hosted model's id); without it the
    description is used, which is safe but may miss the cache after such a resumable change.

    ``concurrency``: how many queries the models serve best at once (an in-process engine that decodes
    concurrent queries together); ``LanguageModel`` runs that many unless the user chose a number.
    """

    description: str  # what config.json and summary.json record (never a secret)
    models: tuple  # LMQL model objects (lmql.model(...)); queries are spread round-robin over them
    count_tokens: Callable[[str], int]
    close: Callable[[], object] = lambda: None  # may return an awaitable; called once, inside the run's loop
    query_kwargs: dict = attrs.field(factory=dict)  # extra keyword arguments every query call gets
    prices: tuple[float, float] | None = None  # USD per million prompt and completion tokens, where known
    seeded_sampling: bool = False
    identity: str = attrs.field(default=attrs.Factory(lambda handle: handle.description, takes_self=True))
    # What the backend enforces of a template's where clauses (lpb_core.constraints: STOPS_AT, LENGTH); None:
    # every constraint. Templates are run with the rest dropped and their answers bounded (reported at start).
    enforces: tuple[str, ...] | None = None
    # Exceptions of a query (anywhere in its causes) that mean "send it again": the whole query is retried by
    # the run's retry policy. For backends that do not retry their own requests (LMQL's OpenAI client).
    transient_errors: tuple[type, ...] = ()
    # Which of the model-specific settings (SERVER_OPTIONS, IN_PROCESS_OPTIONS) this backend read. A server
    # option no model of the run reads is a mistake (a model spec without its openai/ prefix) and refused; an
    # in-process option none reads is a warning (a resume may move the model to lpb serve, where it is set).
    reads_options: tuple[str, ...] = ()
    # how many queries the models serve best at once (an in-process engine decoding them together)
    concurrency: int | None = None
    # Seconds a whole query may take before it counts as failed (and is retried), for clients that cannot
    # notice a lost server themselves (LMQL's LMTP client waits forever); None: no limit.
    query_timeout: float | None = None


SAMPLE_SEED_ARG = "lpb_sample_seed"


def sample_seed(key: str) -> int:
    """A 63-bit seed from a text key (stable across processes, unlike hash())."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") >> 1


@attrs.frozen
class QueryResult:
    variables: dict
    prompt: str  # the whole interaction as the model saw and wrote it


SERVER_OPTIONS = {"api_base": "--api-base", "tokenizer": "--tokenizer"}  # a model served over HTTP
LMTP_OPTIONS = {"endpoints": "--endpoint"}  # a GGUF model served by lpb serve
IN_PROCESS_OPTIONS = {"n_threads": "--n-threads", "server_batch_size": "--server-batch-size"}


def _unread(settings, options: dict, handles) -> list[tuple[str, str]]:
    """(option, the run's models) for each option set that none of ``handles`` reads."""
    models = ", ".join(sorted({h.description for h in handles}))
    return [(option, models) for field, option in options.items()
            if getattr(settings, field) and not any(field in h.reads_options for h in handles)]


def check_server_options(settings, *handles: ModelHandle) -> None:
    """An InputError for --api-base, --tokenizer or --endpoint given to a run whose models all ignore it."""
    for options, hint in ((SERVER_OPTIONS, "a model served over HTTP is given as openai/<name>"),
                          (LMTP_OPTIONS, "--endpoint is for a GGUF model (or smollm2) served by lpb serve")):
        for option, models in _unread(settings, options, handles):
            raise InputError("command line", f"no model of this run reads it ({models}); {hint}", option)


def unread_option_warnings(settings, *handles: ModelHandle) -> list[str]:
    """One line for each in-process model option (threads, sequences decoded together) that no model of the run
    reads: a served model's are set where it is served (lpb serve takes the same options)."""
    return [f"{option} has no effect on {models}: it is for a model llama.cpp runs in this process (a served "
            f"model's is set where it is served, e.g. lpb serve {option})"
            for option, models in _unread(settings, IN_PROCESS_OPTIONS, handles)]


def open_model(backends, spec: str, settings, option: str = "--model-name-or-path") -> ModelHandle:
    """The model named by ``spec``, from the first registered backend that accepts it."""
    for backend in (b for _, b in backends.items()):
        try:
            if not backend.accepts(spec):
                continue
            handle = backend.open(spec, settings)
        except InputError:
            raise
        except Exception as exc:  # the backend is a plugin: its failure names it
            raise PluginFailure.raised("model backend", backend.name, exc, when="while opening the model") from exc
        if not isinstance(handle, ModelHandle):
            raise PluginFailure("model backend", backend.name,
                                f"returned {handle!r:.80} instead of a lpb_core.llm.ModelHandle")
        if settings.max_cost is not None and handle.prices is None:
            raise InputError("command line", f"no known prices for {handle.description}, so a cost cannot be "
                             "capped; use --max-tokens or --max-llm-calls", "--max-cost")
        return handle
    known = ", ".join(backends.names()) or "none"
    served = f"; a model of the --api-base server is given as openai/{spec}" if getattr(settings, "api_base", None) \
        else ""
    raise InputError("command line", f"no model backend accepts {spec!r} (backends: {known}){served}", option)


class LanguageModel:
    """``concurrency``: queries run at once; None: as many as the handle serves best (else one)."""

    def __init__(self, handle: ModelHandle, *, concurrency: int | None = None, chunk_size: int | None = None,
                 cache: QueryCache | None = None, meter: Meter | None = None,
                 retry_policy: retry.RetryPolicy = retry.RetryPolicy()):
        self.handle = handle
        self.retry_policy = retry_policy
        self.concurrency = max(1, concurrency or handle.concurrency or 1)
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._next_model = itertools.cycle(handle.models)
        self._chunk_size = chunk_size
        self.cache = cache
        self.meter = meter or Meter()  # shared by every model of a run

    @property
    def usage(self) -> Usage:
        """The run's totals over all its models, including earlier sessions of a resumed run."""
        return self.meter.usage

    @usage.setter
    def usage(self, value: Usage) -> None:
        self.meter.usage = value

    async def run(self, template: Template, args: dict, decoder: Decoder, sample_key: str | None = None) -> QueryResult:
        """Run ``template`` on ``args``. ``sample_key`` names this call among the run's sampled calls (e.g. the
        run's seed, the unit and the attempt), so identical arguments asked for twice can differ."""
        missing = [a for a in template.args if a not in args]
        if missing:
            raise BreedError(f"breeder.lmql: {template.name}: no value for {', '.join(missing)}")
        try:
            query = self.compiled(template)  # normally compiled already, by lpb_core.preflight
        except TemplateError as exc:
            raise BreedError(f"{template.source or 'breeder.lmql'}: $.{template.name}: {exc}") from None
        options = dict(decoder.options)
        if self._chunk_size:
            options.setdefault("chunksize", self._chunk_size)
        call_args = {name: args[name] for name in template.args}
        key = None
        if self.cache is not None and decoder.deterministic:
            key = cache_key(self.handle.identity, template.code, call_args, decoder.clause)
            cached = self.cache.get(key)
            if cached is not None:
                self.usage += Usage(cache_hits=1)
                return QueryResult(variables=cached["variables"], prompt=cached["prompt"])
        async with self._semaphore:
            self.meter.budget.check(self.usage)
            model = next(self._next_model)
            started = time.perf_counter()
            seeded = {}
            if self.handle.seeded_sampling and not decoder.deterministic:
                material = sample_key or json.dumps([template.code, call_args, decoder.clause], sort_keys=True,
                                                    default=str)
                seeded[SAMPLE_SEED_ARG] = sample_seed(material)
            with retry.recording() as record:
                try:
                    result = await self._query(lambda: query(**call_args, model=model, decoder=decoder.name, **options,
                                                             **self.handle.query_kwargs, **seeded), template.name)
                except Exception as exc:
                    failed = _call_failure(exc)
                    if failed is None:
                        raise ModelError(f"{template.name}: model query failed: {type(exc).__name__}: {exc}") from exc
                    self._count_failure(failed, record.retries, time.perf_counter() - started)
                    raise failed from None
            elapsed = time.perf_counter() - started
            self.meter.consecutive_failures = 0
        if isinstance(result, list):  # decoders with n > 1 return one result per sequence; keep the best
            result = result[0]
        variables = {k: v for k, v in result.variables.items() if not k.startswith("P(")}
        generated = sum(self.handle.count_tokens(v) for v in variables.values() if isinstance(v, str))
        total = self.handle.count_tokens(result.prompt)
        spent = Usage(llm_calls=1, prompt_tokens=max(0, total - generated), completion_tokens=generated,
                      llm_seconds=elapsed, retries=record.retries)
        self.usage += attrs.evolve(spent, cost_usd=cost_of(spent, self.handle.prices))
        if key is not None:
            self.cache.put(key, {"variables": variables, "prompt": result.prompt})
        return QueryResult(variables=variables, prompt=result.prompt)

    async def _query(self, call, name: str):
        if not self.handle.transient_errors and self.handle.query_timeout is None:
            return await call()

        async def attempt():
            try:
                return await call()
            except Exception as exc:
                if _caused_by(exc, self.handle.transient_errors):
                    raise retry.TransientFailure(f"{type(exc).__name__}: {exc}") from exc
                raise

        # LMQL's OpenAI clients time out a stalled stream themselves: there a whole query has no fixed time limit
        policy = attrs.evolve(self.retry_policy, timeout=self.handle.query_timeout)
        return await retry.call_with_retries(attempt, policy, f"{name} on {self.handle.description}")

    def compiled(self, template: Template):
        """The template's LMQL query, with the constraints this backend cannot enforce dropped."""
        if self.handle.enforces is None:
            return template.compiled()
        code, _ = constraints.degrade(template.code, self.handle.enforces)
        return attrs.evolve(template, code=code).compiled()

    def _count_failure(self, failed: retry.CallFailed, retries: int, elapsed: float) -> None:
        self.usage += Usage(failed_calls=1, retries=retries, llm_seconds=elapsed)
        self.meter.consecutive_failures += 1
        self.meter.last_failure = str(failed)
        if self.meter.consecutive_failures >= retry.CONSECUTIVE_FAILURES_TO_STOP:
            raise retry.ServerUnavailable(f"the model stopped answering: {self.meter.consecutive_failures} calls in "
                                          f"a row failed; the last: {failed}") from None

    async def aclose(self) -> None:
        """Close the model; the cache belongs to whoever opened it."""
        result = self.handle.close()
        if inspect.isawaitable(result):
            await result
