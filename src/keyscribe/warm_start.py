"""Start training from an exported model (the shipped `.onnx`) instead of from random weights.

Run folders are not committed, so a new machine has only the shipped model: warm-starting from it keeps
the hours of training it holds. The ONNX graph stores the front end (convolutions, projection, BiLSTM)
and the linear heads as plain tensors, with each batch norm folded into the convolution before it. The
rebuilt front end therefore gets identity batch norms, which training must keep in eval mode
(`freeze_batch_norm`): batch statistics would renormalise the folded convolutions' outputs.

What is taken: the front end and the pedal head always; the onset/offset/frame/velocity heads when the
exported model is a `cnn_rnn` (its heads are one linear map) and the new model has linear heads (`cnn_rnn`,
or `cnn_rnn_mlp`, whose pair MLP then starts at zero so the new model starts as the exported one).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from keyscribe.errors import ModelError
from keyscribe.model import Transcriber

# ONNX orders an LSTM's gates input, output, forget, cell; torch input, forget, cell, output.
_ONNX_TO_TORCH_GATES = [0, 2, 3, 1]


def exported_state_dict(onnx_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of an exported model, named as in a `cnn_rnn` Transcriber's state dict: `front.*`
    (batch norms as identities), `pedal.*` and, for an exported `cnn_rnn`, `heads.linear.*`."""
    import onnx
    from onnx import numpy_helper

    path = Path(onnx_path)
    try:
        graph = onnx.load(str(path)).graph
        variant = json.loads(path.with_suffix(".json").read_text())["model_config"]["variant"]
    except Exception as exc:  # onnx and json raise many types for unreadable files
        raise ModelError(f"{path.name}: not an exported keyscribe model ({exc})") from None
    tensors = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    nodes = list(graph.node)
    state: dict[str, torch.Tensor] = {}
    convs = [n for n in nodes if n.op_type == "Conv"]
    for i, node in enumerate(convs):
        state |= _conv_with_identity_norm(i, tensors[node.input[1]], tensors[node.input[2]])
    for node in nodes:
        if node.op_type == "MatMul" and node.input[1] in tensors:
            weight = tensors[node.input[1]].T.contiguous()
            name = {"front.project.0": weight.shape[0] == tensors["model.front.project.0.bias"].numel(),
                    "pedal": weight.shape[0] == tensors["model.pedal.bias"].numel(),
                    "heads.linear": variant == "cnn_rnn" and "model.heads.linear.bias" in tensors
                    and weight.shape[0] == tensors["model.heads.linear.bias"].numel()}
            for prefix, match in name.items():
                if match:
                    state[f"{prefix}.weight"] = weight
                    state[f"{prefix}.bias"] = tensors[f"model.{prefix}.bias"]
    (lstm,) = [n for n in nodes if n.op_type == "LSTM"]
    state |= _lstm(*(tensors[name] for name in lstm.input[1:4]))
    return state


def _conv_with_identity_norm(i: int, weight: torch.Tensor, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """The i-th convolution of the front end and, after it, a batch norm that passes values through."""
    conv, norm = f"front.cnn.{i}.conv", f"front.cnn.{i}.norm"  # placeholders, renamed by warm_start
    eps = nn.BatchNorm2d(1).eps
    channels = weight.shape[0]
    return {f"{conv}.weight": weight, f"{conv}.bias": bias,
            f"{norm}.weight": torch.ones(channels), f"{norm}.bias": torch.zeros(channels),
            f"{norm}.running_mean": torch.zeros(channels), f"{norm}.running_var": torch.full((channels,), 1 - eps),
            f"{norm}.num_batches_tracked": torch.tensor(0)}


def _lstm(w: torch.Tensor, r: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """ONNX LSTM W (dirs, 4H, in), R (dirs, 4H, H), B (dirs, 8H) -> torch's `front.rnn.*` tensors."""
    def gates(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.chunk(4)[g] for g in _ONNX_TO_TORCH_GATES]).contiguous()

    state = {}
    for direction, suffix in enumerate(("", "_reverse")):
        bias_ih, bias_hh = b[direction].chunk(2)
        state |= {f"front.rnn.weight_ih_l0{suffix}": gates(w[direction]),
                  f"front.rnn.weight_hh_l0{suffix}": gates(r[direction]),
                  f"front.rnn.bias_ih_l0{suffix}": gates(bias_ih), f"front.rnn.bias_hh_l0{suffix}": gates(bias_hh)}
    return state


def warm_start(model: Transcriber, onnx_path: str | os.PathLike) -> list[str]:
    """Copy an exported model's weights into `model` (see the module docstring); returns the names
    filled. A front end of another shape is a `ModelError`."""
    state = _renamed_for(model, exported_state_dict(onnx_path))
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise ModelError(f"{Path(onnx_path).name}: its front end does not fit this model's config "
                         f"(first mismatch: {wrong[0]})")
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value)
        if model.config.variant == "cnn_rnn_mlp" and "heads.base.linear.weight" in state:
            last = model.heads.pair_mlp[-1]
            last.weight.zero_()
            last.bias.zero_()
    return sorted(state)


def _renamed_for(model: Transcriber, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the placeholder conv/norm names to `model.front.cnn`'s indices and the linear heads to where
    `model` has them (dropped when it has none)."""
    layers = [(name, m) for name, m in model.front.cnn.named_children() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    index = {f"{i // 2}.{'conv' if isinstance(m, nn.Conv2d) else 'norm'}": name for i, (name, m) in enumerate(layers)}
    heads = {"cnn_rnn": "heads.linear", "cnn_rnn_mlp": "heads.base.linear"}.get(model.config.variant)
    renamed = {}
    for key, value in state.items():
        if key.startswith("front.cnn."):
            _, _, layer, kind, param = key.split(".")
            if f"{layer}.{kind}" not in index:
                raise ModelError(f"the exported model has more convolutions than this model ({model.config.conv_channels})")
            key = f"front.cnn.{index[f'{layer}.{kind}']}.{param}"
        elif key.startswith("heads.linear."):
            if heads is None:
                continue
            key = key.replace("heads.linear", heads)
        renamed[key] = value
    return renamed


def freeze_batch_norm(model: nn.Module) -> None:
    """Keep every batch norm in eval mode (running statistics, not the batch's); call after `.train()`."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
