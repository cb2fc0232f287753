"""The model runner: loads what training wrote and completes a batch of prompts.

Testable without a socket::

    runner = ModelRunner.load(model_dir)
    prepared = [runner.prepare(task) for task in tasks]      # tokenize, check context, pick adapter
    answers = runner.generate(prepared)                       # one left-padded ``generate`` call
    for item in runner.stream(prepared[0], timeout_s=55):     # one answer, piece by piece (SSE)
        ...

What ``model/`` may hold (``recipe.save_artifacts``), see :meth:`Artifact.inspect`:

* an adapter (``adapter_config.json``) + optional extra adapters in ``adapters/<name>/``: loaded on
  the base model, chosen per request (PEFT ``adapter_names`` mixes LoRA adapters in one batch;
  DoRA adapters cannot be mixed, so their requests are batched per adapter);
* full weights (``config.json``), or ``merged/`` (the adapter merged into its base);
* the tokenizer with its chat template, and ``generation_config.json`` with the EOS ids (a list for
  models that end a turn and a text differently); an answer stops at any of them or at a stop sequence.

torch / transformers / peft are imported inside the functions: the server binds its port first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcloud.contract import (
    ADAPTERS_DIR,
    ADDITIONAL_MODEL_DATA_DIR,
    BASE_ADAPTER,
    BASE_MODEL_DIR,
    DEFAULT_ADAPTER,
)
from ftcloud_train.serving.protocol import Generation, GenerationTask, RequestError

#: ``max_new_tokens`` when neither the request nor generation_config.json says.
DEFAULT_MAX_NEW_TOKENS = 256
#: Ampere and newer run bf16 natively (same threshold as training's precision plan).
BF16_MIN_CAPABILITY = (8, 0)


class ModelLoadError(Exception):
    """model/ does not hold something the server can load; the message says what to fix."""


def serving_dtype(cuda_capability: tuple[int, int] | None, load_in: str) -> str:
    """The dtype the (non-quantized) weights and the quantized layers' compute run in.

    CPU: fp32 (CPU half-precision matmuls are slow or missing). GPU: bf16 from Ampere on, else fp16
    (T4/V100 emulate bf16 slowly). Quantization does not change it: it is the bitsandbytes compute dtype.
    """
    del load_in  # same answer for every load mode; kept in the signature so the table test names it
    if cuda_capability is None:
        return "fp32"
    return "bf16" if tuple(cuda_capability) >= BF16_MIN_CAPABILITY else "fp16"


def cpu_threads(cpus: int, omp_num_threads: str | None) -> int | None:
    """torch intra-op threads for CPU serving; ``None``: leave torch's choice (OMP_NUM_THREADS is set).

    One core stays free for the event loop (HTTP parsing, tokenization, /ping): OpenMP workers spin
    while they wait, and when they compete with that thread a step of a tiny model went from 3 ms to
    250 ms here (2 cores: batch of 16, 32 tokens, 8.3 s with 2 threads, 0.13 s with 1).
    """
    if omp_num_threads:
        return None
    return max(1, cpus - 1)


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


@dataclass(frozen=True)
class Artifact:
    """What to load, decided from files alone (no heavy imports): the server checks it before binding."""

    model_dir: Path
    weights: str  # full/merged weights dir, or the base model (path or id) of the adapters
    adapters: dict[str, Path] = field(default_factory=dict)  # name -> dir; empty for full weights
    base_source: str = ""  # where ``weights`` came from, for the log

    @classmethod
    def inspect(cls, model_dir: Path, ml_root: Path | None = None, base_model: str | None = None) -> Artifact:
        model_dir = Path(model_dir)
        if not model_dir.is_dir() or not any(model_dir.iterdir()):
            raise ModelLoadError(
                f"no model in {model_dir}: it must hold a training job's model/ (adapter_config.json or "
                f"config.json). Locally, point FTCLOUD_ML_ROOT at a directory whose model/ holds it."
            )
        extra = model_dir / ADAPTERS_DIR
        adapters: dict[str, Path] = {}
        if _is_adapter_dir(model_dir):
            adapters[DEFAULT_ADAPTER] = model_dir
        if extra.is_dir():
            for sub in sorted(extra.iterdir()):
                if _is_adapter_dir(sub):
                    adapters[sub.name] = sub
        if not adapters:
            for candidate, label in ((model_dir, "model/"), (model_dir / "merged", "model/merged/")):
                if _is_model_dir(candidate):
                    return cls(model_dir, str(candidate), {}, label)
            raise ModelLoadError(
                f"{model_dir} has neither adapter_config.json (an adapter) nor config.json (full weights); "
                f"files there: {', '.join(sorted(p.name for p in model_dir.iterdir())[:20])}"
            )
        first = adapters.get(DEFAULT_ADAPTER) or next(iter(adapters.values()))
        declared = json.loads((first / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
        candidates = []
        if base_model:
            candidates.append((base_model, "FTCLOUD_BASE_MODEL"))
        candidates.append((str(model_dir / BASE_MODEL_DIR), f"model/{BASE_MODEL_DIR}/"))
        if ml_root is not None:
            candidates.append((str(Path(ml_root) / ADDITIONAL_MODEL_DATA_DIR / BASE_MODEL_DIR),
                               f"additional model data source '{BASE_MODEL_DIR}'"))
        for source, label in candidates:
            if label == "FTCLOUD_BASE_MODEL" or _is_model_dir(Path(source)):
                return cls(model_dir, source, adapters, label)
        if declared and _is_model_dir(Path(declared)):
            return cls(model_dir, declared, adapters, "adapter_config.json")
        # No base on disk: the merged weights are self-contained (one model, no per-request adapters).
        if _is_model_dir(model_dir / "merged"):
            return cls(model_dir, str(model_dir / "merged"), {}, "model/merged/ (no base model on disk)")
        if declared and not declared.startswith(("/", ".")):
            return cls(model_dir, declared, adapters, "adapter_config.json (model id)")
        raise ModelLoadError(
            f"the adapter in {first} needs its base model {declared!r}, which is not on disk. Provide it as "
            f"model/{BASE_MODEL_DIR}/, as a SageMaker additional model data source named '{BASE_MODEL_DIR}', "
            f"or set FTCLOUD_BASE_MODEL to its path or model id."
        )

    @property
    def is_adapter(self) -> bool:
        return bool(self.adapters)


def resolve_load_in(requested: str, artifact: Artifact) -> str:
    """The base's load mode. ``auto``: an adapter is served on the base quantization it was
    trained against (QLoRA/QDoRA adapters learned to correct the 4-bit base's rounding, so an
    unquantized base answers differently); full or merged weights load unquantized."""
    if requested != "auto":
        return requested
    if not artifact.is_adapter:
        return "none"
    try:
        spec = json.loads((artifact.model_dir / "ftcloud_spec.json").read_text())
    except (OSError, ValueError):
        return "none"  # an adapter trained elsewhere: nothing says it was quantized
    mode = (spec.get("resolved") or {}).get("quantization") or spec.get("quantization") or "none"
    return mode if mode in ("4bit", "8bit") else "none"


def model_version(model_dir: Path) -> str:
    """A short fingerprint of the artifact (names, sizes, mtimes): cache keys change with the model."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).rglob("*")):
        if path.is_file():
            st = path.stat()
            digest.update(f"{path.relative_to(model_dir)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class Prepared:
    """A task after tokenization: what ``generate`` needs, nothing more."""

    task: GenerationTask
    input_ids: list[int]
    adapter: str | None  # adapter name, BASE_ADAPTER, or None for a model without adapters
    max_new_tokens: int
    prompt: str

    @property
    def sampling(self):
        return self.task.sampling


class ModelRunner:
    def __init__(self, model, tokenizer, artifact: Artifact, eos_ids: list[int], context_length: int,
                 default_max_new_tokens: int, dora_adapters: set[str], version: str, name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.artifact = artifact
        self.eos_ids = eos_ids
        self.context_length = context_length
        self.default_max_new_tokens = default_max_new_tokens
        self.dora_adapters = dora_adapters
        self.version = version
        self.name = name
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        self.generate_calls = 0  # model calls (tests: cache hits must not add to it)
        self.generated_rows = 0
        self._tokenizer_lock = threading.Lock()  # fast tokenizers refuse concurrent mutable use
        self._adapter_modes = _ModeGate()

    # -- loading -----------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: Path | str, ml_root: Path | str | None = None, base_model: str | None = None,
             load_in: str = "none", artifact: Artifact | None = None) -> ModelRunner:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, GenerationConfig

        artifact = artifact or Artifact.inspect(Path(model_dir), Path(ml_root) if ml_root else None, base_model)
        cuda = torch.cuda.is_available()
        if not cuda:
            threads = cpu_threads(len(os.sched_getaffinity(0)), os.environ.get("OMP_NUM_THREADS"))
            if threads:
                torch.set_num_threads(threads)
        dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[
            serving_dtype(torch.cuda.get_device_capability(0) if cuda else None, load_in)])
        kwargs: dict[str, Any] = {"dtype": dtype}
        if load_in == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype)
        elif load_in == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        if load_in != "none" or cuda:
            kwargs["device_map"] = {"": 0 if cuda else "cpu"}
        try:
            model = AutoModelForCausalLM.from_pretrained(artifact.weights, **kwargs)
        except Exception as exc:  # noqa: BLE001 - OSError, SafetensorError, ValueError...: say where
            raise ModelLoadError(f"cannot load model weights from {artifact.weights!r} ({artifact.base_source}): "
                                 f"{type(exc).__name__}: {exc}") from exc
        dora: set[str] = set()
        if artifact.is_adapter:
            from peft import PeftModel

            names = list(artifact.adapters)
            model = PeftModel.from_pretrained(model, str(artifact.adapters[names[0]]), adapter_name=names[0])
            for name in names[1:]:
                model.load_adapter(str(artifact.adapters[name]), adapter_name=name)
            dora = {n for n in names if getattr(model.peft_config[n], "use_dora", False)}
            model.set_adapter(names[0])
        model.eval()
        model.config.use_cache = True  # training saves use_cache=False (checkpointing); generation needs it
        if not cuda and load_in == "none":
            model.to("cpu")

        tok_dir = artifact.model_dir if (artifact.model_dir / "tokenizer_config.json").is_file() else artifact.weights
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        gen_dir = artifact.model_dir if (artifact.model_dir / "generation_config.json").is_file() else artifact.weights
        try:
            gen = GenerationConfig.from_pretrained(str(gen_dir))
        except OSError:
            gen = GenerationConfig()
        eos = gen.eos_token_id
        eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
            eos_ids.append(tokenizer.eos_token_id)
        if not eos_ids:
            raise ModelLoadError(f"neither generation_config.json nor the tokenizer in {tok_dir} names an EOS token")
        base_config = model.get_base_model().config if artifact.is_adapter else model.config
        context = int(getattr(base_config, "max_position_embeddings", 0) or 0) or 2048
        if tokenizer.model_max_length and tokenizer.model_max_length < context:
            context = int(tokenizer.model_max_length)
        spec_file = artifact.model_dir / "ftcloud_spec.json"
        name = Path(artifact.weights).name
        if spec_file.is_file():
            name = json.loads(spec_file.read_text()).get("model") or name
        return cls(model, tokenizer, artifact, eos_ids, context, int(gen.max_new_tokens or DEFAULT_MAX_NEW_TOKENS),
                   dora, model_version(artifact.model_dir), str(name))

    # -- per request -------------------------------------------------------------------
    @property
    def adapter_names(self) -> list[str]:
        return list(self.artifact.adapters)

    def resolve_adapter(self, requested: str | None, field: str = "parameters.adapter_id") -> str | None:
        """The adapter a request runs with (``None``: the server's default). 422 naming ``field`` if unknown."""
        if not self.artifact.is_adapter:
            if requested not in (None, BASE_ADAPTER):
                raise RequestError(422, f"{field}: {requested!r} is not available: this model has no adapters "
                                        f"(full or merged weights)", field=field)
            return None
        name = requested or DEFAULT_ADAPTER
        if name == DEFAULT_ADAPTER and DEFAULT_ADAPTER not in self.artifact.adapters:
            name = self.adapter_names[0]
        if name != BASE_ADAPTER and name not in self.artifact.adapters:
            raise RequestError(422, f"{field}: unknown adapter {name!r}; available: "
                                    f"{', '.join(self.adapter_names + [BASE_ADAPTER])}", field=field)
        return name

    def render(self, task: GenerationTask) -> str:
        """The prompt text: raw ``inputs``, or chat messages through the tokenizer's chat template."""
        if task.messages is None:
            return task.text or ""
        if not self.tokenizer.chat_template:
            raise RequestError(422, "messages: this model has no chat template; send \"inputs\" text instead",
                               field="messages")
        messages = [{"role": role, "content": content} for role, content in task.messages]
        with self._tokenizer_lock:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prepare(self, task: GenerationTask, prompt: str | None = None) -> Prepared:
        adapter = self.resolve_adapter(task.adapter)
        prompt = self.render(task) if prompt is None else prompt
        with self._tokenizer_lock:
            # A chat template already writes every special token the model expects.
            ids = self.tokenizer(prompt, add_special_tokens=task.messages is None)["input_ids"]
        if not ids:
            raise RequestError(422, "inputs: the prompt encodes to no tokens", field="inputs")
        max_new = task.sampling.max_new_tokens or min(self.default_max_new_tokens, max(1, self.context_length - len(ids)))
        if len(ids) + max_new > self.context_length:
            raise RequestError(
                413, f"prompt too long: {len(ids)} tokens + max_new_tokens {max_new} exceed the model's context of "
                     f"{self.context_length} tokens; shorten the prompt or lower max_new_tokens", field="inputs")
        return Prepared(task, ids, adapter, max_new, prompt)

    def batch_key(self, prepared: Prepared):
        """Batcher key: sampling compatibility, plus the adapter for DoRA (PEFT cannot mix those)."""
        key = prepared.sampling.batch_key()
        if key is None:
            return None
        if prepared.adapter in self.dora_adapters:
            return (*key, "dora", prepared.adapter)
        return key

    # -- the batch ---------------------------------------------------------------------
    def generate(self, batch: list[Prepared]) -> list[Generation]:
        """One left-padded ``generate`` for the whole batch; each row stops at EOS, a stop sequence or
        its own ``max_new_tokens``. Rows must share a :meth:`batch_key`."""
        import torch

        self.generate_calls += 1
        self.generated_rows += len(batch)
        kwargs, width = self._generate_kwargs(batch)
        with torch.inference_mode():
            out = self._call_generate(kwargs, [p.adapter for p in batch])
        return [self._decode(p, out[i, width:].tolist()) for i, p in enumerate(batch)]

    def _generate_kwargs(self, batch: list[Prepared], extra_stops: list | None = None) -> tuple[dict[str, Any], int]:
        import torch

        device = self._device()
        width = max(len(p.input_ids) for p in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, p in enumerate(batch):  # left padding: every row's last prompt token sits at the same column
            ids[i, width - len(p.input_ids):] = torch.tensor(p.input_ids)
            mask[i, width - len(p.input_ids):] = 1
        s = batch[0].sampling
        kwargs: dict[str, Any] = dict(
            input_ids=ids.to(device), attention_mask=mask.to(device),
            max_new_tokens=max(p.max_new_tokens for p in batch),
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id, use_cache=True,
            do_sample=s.do_sample, repetition_penalty=s.repetition_penalty,
        )
        if s.do_sample:
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        else:  # the model's generation_config may carry sampling knobs; greedy ignores them, say so
            kwargs.update(temperature=None, top_p=None, top_k=None)
        stops = list(extra_stops or [])
        if any(p.sampling.stop for p in batch) or len({p.max_new_tokens for p in batch}) > 1:
            stops.append(_RowStops(self, batch, width))
        if stops:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(stops)
        if s.do_sample and s.seed is not None:
            torch.manual_seed(s.seed)
        return kwargs, width

    # -- one streamed answer -------------------------------------------------------------
    def stream(self, p: Prepared, timeout_s: float, cancel: threading.Event | None = None
               ) -> Iterator[StreamPiece | Generation]:
        """Generate one answer piece by piece: yields :class:`StreamPiece` items as text becomes final,
        then the :class:`Generation` (the full text is exactly the pieces joined).

        ``generate`` runs in its own thread feeding a ``TextIteratorStreamer``; this iterator only reads
        its queue, so a caller on another thread never holds the model. Text that may be the start of a
        stop sequence is held back until it is not; once the text holds a stop sequence the answer ends
        before it and generation is cancelled. ``cancel`` (client gone) and ``timeout_s`` (the whole
        answer, as for batched requests) end generation too; a timeout raises :class:`TimeoutError`.
        """
        import torch

        cancel = cancel or threading.Event()
        deadline = time.monotonic() + timeout_s
        self.generate_calls += 1
        self.generated_rows += 1
        streamer = _piece_streamer(self.tokenizer, self._tokenizer_lock, self.eos_ids)
        kwargs, _ = self._generate_kwargs([p], extra_stops=[_Cancelled(cancel)])
        kwargs["streamer"] = streamer
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self._call_generate(kwargs, [p.adapter])
            except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="ftcloud-stream", daemon=True)
        worker.start()
        stops = p.sampling.stop
        text, sent, token_id, stopped = "", 0, None, False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no complete answer within {timeout_s:g} s (FTCLOUD_REQUEST_TIMEOUT_S)")
                try:
                    item = streamer.text_queue.get(timeout=remaining)
                except queue.Empty:
                    continue
                if item is streamer.stop_signal:
                    break
                piece, token_id = item
                text += piece
                cut = _first_stop(text, stops)
                if cut is not None:
                    if cut > sent:
                        yield StreamPiece(text[sent:cut], token_id)
                    text, sent, stopped = text[:cut], cut, True
                    cancel.set()
                    break
                ready = len(text) - _stop_prefix_len(text, stops)
                if ready > sent:
                    yield StreamPiece(text[sent:ready], token_id)
                    sent = ready
        finally:
            cancel.set()  # an early exit (timeout, client gone) stops the model too
            worker.join()
        if failure:
            raise failure[0]
        if not stopped and sent < len(text):
            yield StreamPiece(text[sent:], token_id)
        tokens = streamer.tokens
        ended_by_eos = bool(tokens) and tokens[-1] in self.eos_ids
        completion = len(tokens) - 1 if ended_by_eos else len(tokens)
        finish = "length" if completion >= p.max_new_tokens and not (stopped or ended_by_eos) else "stop"
        yield Generation(text=text, finish_reason=finish, prompt_tokens=len(p.input_ids),
                         completion_tokens=completion)

    def _device(self):
        return next(self.model.parameters()).device

    def _call_generate(self, kwargs: dict, adapters: list[str | None]):
        if not self.artifact.is_adapter:
            return self.model.generate(**kwargs)
        names = set(adapters)
        mode = adapters[0] if len(names) == 1 else _MIXED
        # A stream generates beside the batches: the adapter switch is model-wide state, so a
        # generation holds its mode for its whole run and another mode waits for it.
        with self._adapter_modes.hold(mode):
            if mode == BASE_ADAPTER:
                with self.model.disable_adapter():
                    return self.model.generate(**kwargs)
            if mode != _MIXED:  # one adapter for all rows: the fast path, no per-row routing
                self.model.set_adapter(mode)
                return self.model.generate(**kwargs)
            return self.model.generate(**kwargs, adapter_names=list(adapters))

    def _decode(self, p: Prepared, tokens: list[int]) -> Generation:
        tokens = tokens[: p.max_new_tokens]
        while tokens and tokens[-1] == self.pad_id:  # a row stopped early is padded while others go on
            tokens.pop()
        finish = "length"
        for j, t in enumerate(tokens):
            if t in self.eos_ids:
                tokens, finish = tokens[:j], "stop"
                break
        with self._tokenizer_lock:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = _first_stop(text, p.sampling.stop)
        if cut is not None:
            text, finish = text[:cut], "stop"
        if finish == "length" and len(tokens) < p.max_new_tokens:
            finish = "stop"  # ended by the stopping criterion on a stop sequence
        return Generation(text=text, finish_reason=finish, prompt_tokens=len(p.input_ids),
                          completion_tokens=len(tokens))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "weights": self.artifact.weights,
            "weights_from": self.artifact.base_source,
            "adapters": self.adapter_names,
            "dora_adapters": sorted(self.dora_adapters),
            "context_length": self.context_length,
            "eos_token_ids": self.eos_ids,
            "device": str(self._device()),
        }


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that begins some stop sequence (held back while streaming)."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


@dataclass(frozen=True)
class StreamPiece:
    """A piece of a streamed answer; ``token_id``: the last token it decodes."""

    text: str
    token_id: int | None


_MIXED = object()  # per-row adapters (PEFT adapter_names): a mode of its own


class _ModeGate:
    """Generations in the same adapter mode run together; a different mode waits until they end.

    Once someone waits, newcomers of the running mode wait too, so a steady flow of streams on one
    adapter cannot starve a batch on another."""

    def __init__(self):
        self._cond = threading.Condition()
        self._mode: Any = None
        self._users = 0
        self._waiting = 0

    @contextlib.contextmanager
    def hold(self, mode: Any):
        with self._cond:
            if not (self._users == 0 or (self._mode == mode and self._waiting == 0)):
                self._waiting += 1
                self._cond.wait_for(lambda: self._users == 0)
                self._waiting -= 1
            self._mode = mode
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()


@functools.lru_cache(maxsize=1)
def _piece_streamer_class():
    from transformers import TextIteratorStreamer

    class PieceStreamer(TextIteratorStreamer):
        """``TextIteratorStreamer`` that queues ``(text, last token id)``, keeps the generated ids, does
        not decode EOS ids (a list may hold non-special tokens) and decodes under the runner's lock."""

        def __init__(self, tokenizer, lock: threading.Lock, eos_ids: list[int]):
            super().__init__(_LockedDecoder(tokenizer, lock), skip_prompt=True, skip_special_tokens=True)
            self.eos_ids = set(eos_ids)
            self.tokens: list[int] = []

        def put(self, value):
            if self.next_tokens_are_prompt:
                return super().put(value)
            ids = value.reshape(-1).tolist()
            self.tokens.extend(ids)
            kept = [t for t in ids if t not in self.eos_ids]
            if kept:
                super().put(value.new_tensor(kept))

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                self.text_queue.put((text, self.tokens[-1] if self.tokens else None), timeout=self.timeout)
            if stream_end:
                self.text_queue.put(self.stop_signal, timeout=self.timeout)

    return PieceStreamer


def _piece_streamer(tokenizer, lock: threading.Lock, eos_ids: list[int]):
    return _piece_streamer_class()(tokenizer, lock, eos_ids)


class _LockedDecoder:
    """The tokenizer's ``decode`` under the runner's tokenizer lock (the streamer decodes in its thread)."""

    def __init__(self, tokenizer, lock: threading.Lock):
        self._tokenizer, self._lock = tokenizer, lock

    def decode(self, *args, **kwargs):
        with self._lock:
            return self._tokenizer.decode(*args, **kwargs)


class _Cancelled:
    """Stopping criterion: ends generation once ``event`` is set (stop sequence seen, client gone)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _RowStops:
    """Per-row stopping for a batch: a row ends at its own max_new_tokens or when its text holds a
    stop sequence (transformers then pads that row while the others continue)."""

    def __init__(self, runner: ModelRunner, batch: list[Prepared], width: int):
        self.runner = runner
        self.batch = batch
        self.width = width
        # Only the tail can hold a new stop sequence: decode a window, not the whole answer.
        self.window = max((len(s) for p in batch for s in p.sampling.stop), default=0) + 8

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        generated = input_ids.shape[1] - self.width
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for i, p in enumerate(self.batch):
            if generated >= p.max_new_tokens:
                done[i] = True
            elif p.sampling.stop:
                tail = input_ids[i, self.width:][-self.window:].tolist()
                with self.runner._tokenizer_lock:
                    text = self.runner.tokenizer.decode(tail, skip_special_tokens=True)
                done[i] = _first_stop(text, p.sampling.stop) is not None
        return done
