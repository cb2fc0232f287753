"""Measure what a real training step holds in memory, on CPU, tensor by tensor.

CPU PyTorch has no ``max_memory_allocated``, so the probe counts the bytes of the real tensors that
the planner's estimate is made of, while the real entrypoint trains (recipe, Trainer, optimizer):

* weights: every parameter and buffer of the trained model (unique storages; bitsandbytes 4-bit
  weights as stored, plus their quantization state: absmax, nested absmax, code);
* gradients: every ``.grad`` just before each optimizer step (``on_pre_optimizer_step``);
* optimizer: every tensor in ``optimizer.state`` after the last step;
* activations: the storages saved for backward during a micro-batch's forward pass
  (``torch.autograd.graph.saved_tensors_hooks`` around ``compute_loss``), parameter storages
  excluded, largest over the micro-batches; with gradient checkpointing, PyTorch's own hooks take
  over inside each checkpointed layer, so what is counted there is the layer inputs the checkpoint
  keeps (module pre-hooks) and whatever is saved outside the layers (embeddings, head, loss).

Not counted: allocator temporaries that are freed before backward. The estimate's comparable
figure is its ``tensors`` total (no GPU overhead on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .jobtree import make_job

#: Plain-text rows (every token trained) long enough that every micro-batch is truncated to max_length.
PROBE_SETTINGS = {
    "max_steps": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
    "max_length": 64, "validation_split": 0.0, "logging_steps": 1, "save_steps": 0,
}  # fmt: skip


@dataclass
class Measured:
    weights: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    seq_len: int = 0
    micro_batch: int = 0
    trainable_parameters: int = 0
    detail: dict = field(default_factory=dict)

    @property
    def tensors(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def _storage_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None or not hasattr(t, "untyped_storage"):
            continue
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _quant_state_tensors(param):
    state = getattr(param, "quant_state", None)
    out = []
    while state is not None:
        out += [getattr(state, "absmax", None), getattr(state, "code", None), getattr(state, "offset", None)]
        state = getattr(state, "state2", None)
    return [t for t in out if t is not None]


def measure(tmp: Path, model_dir: Path, monkeypatch, **hyperparameters) -> Measured:
    """Train ``max_steps`` steps through the real entrypoint in-process and count its tensors."""
    import torch
    import transformers
    from transformers.modeling_layers import GradientCheckpointingLayer

    from ftcloud.contract import ROOT_ENV
    from ftcloud_train.entrypoint import main as entrypoint_main
    from ftcloud_train.tiny import make_rows, write_jsonl

    paths = make_job(tmp, model_dir, **{**PROBE_SETTINGS, **hyperparameters})
    write_jsonl(paths.channel("train") / "data.jsonl", make_rows(32, "text", seed=0, filler=(10, 12)))
    m = Measured()
    original = transformers.Trainer.train

    class Probe(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            grads = [p.grad for p in trainer_ref[0].model.parameters() if p.grad is not None]
            m.gradients = max(m.gradients, _storage_bytes(grads))

    trainer_ref = []

    def train(self, *args, **kwargs):
        trainer_ref.append(self)
        self.add_callback(Probe())
        model = self.model
        params = list(model.parameters())
        param_ptrs = {p.untyped_storage().data_ptr() for p in params}
        param_ptrs |= {t.untyped_storage().data_ptr() for p in params for t in _quant_state_tensors(p)}
        layer_inputs: dict[int, int] = {}

        def keep_input(module, args):  # what a checkpointed layer keeps: its input hidden states
            if torch.is_grad_enabled() and args and torch.is_tensor(args[0]):
                layer_inputs[id(module)] = args[0].untyped_storage().nbytes()

        for module in model.modules():
            if isinstance(module, GradientCheckpointingLayer):
                module.register_forward_pre_hook(keep_input)
        inner = self.compute_loss

        def compute_loss(model_, inputs, *a, **k):
            saved: dict[int, int] = {}
            shapes: dict[int, tuple] = {}
            layer_inputs.clear()

            def pack(t):
                st = t.untyped_storage()
                if st.data_ptr() not in param_ptrs:
                    saved[st.data_ptr()] = st.nbytes()
                    shapes[st.data_ptr()] = (tuple(t.shape), str(t.dtype))
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = inner(model_, inputs, *a, **k)
            checkpointed = sum(layer_inputs.values()) if getattr(model_, "is_gradient_checkpointing", False) else 0
            if sum(saved.values()) + checkpointed > m.activations:
                m.detail["saved"] = sorted(((shapes[k], v) for k, v in saved.items()), key=lambda x: -x[1])
            m.activations = max(m.activations, sum(saved.values()) + checkpointed)
            shape = tuple(inputs["input_ids"].shape)
            m.micro_batch, m.seq_len = max(m.micro_batch, shape[0]), max(m.seq_len, shape[1])
            return out

        self.compute_loss = compute_loss
        result = original(self, *args, **kwargs)
        m.weights = _storage_bytes(
            [*params, *model.buffers(), *[t for p in params for t in _quant_state_tensors(p)]]
        )
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        m.optimizer = _storage_bytes(
            [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
        )
        m.trainable_parameters = sum(p.numel() for p in params if p.requires_grad)
        return result

    monkeypatch.setattr(transformers.Trainer, "train", train)
    monkeypatch.setenv(ROOT_ENV, str(paths.root))
    code = entrypoint_main(["train"])
    assert code == 0, paths.failure_file.read_text() if paths.failure_file.exists() else f"exit {code}"
    return m
