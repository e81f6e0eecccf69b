"""Start training from an exported model (the shipped `.onnx`) instead of from random weights.

Run folders are not committed, so a new machine has only the shipped model: warm-starting from it keeps
the hours of training it holds. The ONNX graph stores the front end (convolutions, projection, BiLSTM)
and the linear heads as plain tensors, with each batch norm folded into the convolution before it. The
rebuilt front end therefore gets identity batch norms, which training must keep in eval mode
(`freeze_batch_norm`): batch statistics would renormalise the folded convolutions' outputs.

What is taken: the front end and the pedal head always; of the onset/offset/frame/velocity heads, what
both models have: linear heads between `cnn_rnn` and `cnn_rnn_mlp` (a `cnn_rnn_mlp` started from a `cnn_rnn`
gets its pair MLP's last layer at zero, so it starts as the exported model), and all of a `cnn_rnn_mlp`'s
heads into another. A `crgcn` with one embedding dimension per key (`key_embedding` = 88) started from linear
heads gets graph-convolution weights solved to give exactly those classifiers (`solve_graph_classifiers`), so it
starts as the export and what training changes is learnt through the graph (with fewer embedding dimensions it
keeps its own classifiers). A `crgcn` export's classifiers are folded into one constant and are not taken.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from keyscribe.errors import ModelError
from keyscribe.model import HEADS, GraphClassifiers, Transcriber
from keyscribe.notes import N_KEYS

# ONNX orders an LSTM's gates input, output, forget, cell; torch input, forget, cell, output.
_ONNX_TO_TORCH_GATES = [0, 2, 3, 1]


def exported_state_dict(onnx_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of an exported model, named as in its Transcriber's state dict: `front.*` (batch norms as
    identities), `pedal.*`, and the heads that are plain tensors in the graph (a `cnn_rnn`'s linear heads,
    a `cnn_rnn_mlp`'s base heads, key features, pair MLP and neighbours; not a `crgcn`'s, whose classifiers
    the export folds into one constant)."""
    import onnx
    from onnx import numpy_helper

    path = Path(onnx_path)
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises many types for unreadable files
        raise ModelError(f"{path.name}: not an exported keyscribe model ({exc})") from None
    tensors = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    state: dict[str, torch.Tensor] = {}
    for i, node in enumerate(n for n in graph.node if n.op_type == "Conv"):
        state |= _conv_with_identity_norm(i, tensors[node.input[1]], tensors[node.input[2]])
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in tensors:
            state |= _linear(tensors, tensors[node.input[1]].T.contiguous(), readers.get(node.output[0], []))
    if "heads.pair_mlp.partner" in state:  # the first layer reads [key, partner]: join its two halves
        state["heads.pair_mlp.0.weight"] = torch.cat([state["heads.pair_mlp.0.weight"],
                                                      state.pop("heads.pair_mlp.partner")], dim=1)
    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    if len(lstms) != 1:
        raise ModelError(f"{path.name}: not an exported keyscribe model (expected one LSTM, found {len(lstms)})")
    return state | _lstm(*(tensors[name] for name in lstms[0].input[1:4]))


def _linear(tensors: dict, weight: torch.Tensor, readers: list) -> dict[str, torch.Tensor]:
    """A linear layer from its MatMul: named by the parameter its bias Add reads (torch's export keeps those
    names); a MatMul read by Gathers instead is the pair MLP's partner half, gathered once per neighbour."""
    biases = [name for node in readers if node.op_type == "Add" for name in node.input
              if name.startswith("model.") and name.endswith(".bias") and name in tensors]
    if biases:
        prefix = biases[0][len("model."):-len(".bias")]
        return {f"{prefix}.weight": weight, f"{prefix}.bias": tensors[biases[0]]}
    if readers and all(node.op_type == "Gather" for node in readers):
        return {"heads.pair_mlp.partner": weight,
                "heads.neighbours": torch.stack([tensors[node.input[1]] for node in readers], dim=1)}
    return {}


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
    filled. A front end of another shape is a `ModelError`; heads that do not fit `model` are left out."""
    state = _renamed_for(model, exported_state_dict(onnx_path))
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    wrong = [k for k in state if k not in fits and not k.startswith("heads.")]
    if wrong:
        raise ModelError(f"{Path(onnx_path).name}: its front end does not fit this model's config "
                         f"(first mismatch: {wrong[0]})")
    with torch.no_grad():
        for name, value in fits.items():
            own[name].copy_(value)
        if model.config.variant == "cnn_rnn_mlp" and "heads.pair_mlp.2.weight" not in fits:
            last = model.heads.pair_mlp[-1]  # a new pair MLP adds nothing at first: the model starts as the export
            last.weight.zero_()
            last.bias.zero_()
        # with fewer embedding dimensions than keys no weights give linear heads' classifiers: the GCN keeps its own
        one_hot_gcn = isinstance(model.heads, GraphClassifiers) and model.heads.gc1.in_features == N_KEYS
        if one_hot_gcn and "heads.linear.weight" in state:
            solve_graph_classifiers(model.heads, state["heads.linear.weight"], state["heads.linear.bias"])
            fits |= {f"heads.{name}": value for name, value in model.heads.named_parameters()}
    return sorted(fits)


def solve_graph_classifiers(heads: GraphClassifiers, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Set the graph convolutions so that their classifiers equal linear heads' (`weight` (heads * 88, d),
    `bias` (heads * 88,), rows ordered head by head as `LinearHeads` has them).

    The classifiers are A @ gc2(act(A @ gc1(E))). With one-hot key embeddings (E = I), gc1 solved so that the
    first layer's output is M = I + 0.1 (positive, so the LeakyReLU passes it unchanged, and of full rank),
    gc2 is the least-squares solution of A M gc2^T = L, exact because A M has rank 88. Needs key_embedding = 88
    and gcn_hidden >= 88: with fewer dimensions the classifiers have rank below 88 and no solution exists."""
    n_embed, hidden = heads.gc1.in_features, heads.gc1.out_features
    if n_embed != N_KEYS or hidden < N_KEYS:
        raise ModelError(f"a crgcn starts from linear heads only with key_embedding = {N_KEYS} and gcn_hidden >= "
                         f"{N_KEYS} (this one: {n_embed}, {hidden})")
    adjacency = heads.adjacency.double()
    first = torch.eye(N_KEYS, hidden, dtype=torch.float64) + 0.1
    # L[k] = key k's classifiers for every head side by side, as gc2's output is viewed (88, heads, d)
    target = weight.double().view(len(HEADS), N_KEYS, -1).permute(1, 0, 2).reshape(N_KEYS, -1)
    heads.embedding.copy_(torch.eye(N_KEYS))
    heads.gc1.weight.copy_(torch.linalg.solve(adjacency, first).T.float())
    heads.gc2.weight.copy_((torch.linalg.pinv(adjacency @ first) @ target).T.float())
    heads.bias.copy_(bias.view(len(HEADS), N_KEYS))


def _renamed_for(model: Transcriber, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the placeholder conv/norm names to `model.front.cnn`'s indices, and linear heads between a
    `cnn_rnn` (`heads.linear`) and a `cnn_rnn_mlp` (`heads.base.linear`)."""
    layers = [(name, m) for name, m in model.front.cnn.named_children() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    index = {f"{i // 2}.{'conv' if isinstance(m, nn.Conv2d) else 'norm'}": name for i, (name, m) in enumerate(layers)}
    heads = "heads.base.linear." if model.config.variant == "cnn_rnn_mlp" else "heads.linear."
    renamed = {}
    for key, value in state.items():
        if key.startswith("front.cnn."):
            _, _, layer, kind, param = key.split(".")
            if f"{layer}.{kind}" not in index:
                raise ModelError(f"the exported model has more convolutions than this model ({model.config.conv_channels})")
            key = f"front.cnn.{index[f'{layer}.{kind}']}.{param}"
        for linear in ("heads.linear.", "heads.base.linear."):
            if key.startswith(linear):
                key = heads + key[len(linear):]
        renamed[key] = value
    return renamed


def freeze_batch_norm(model: nn.Module) -> None:
    """Keep every batch norm in eval mode (running statistics, not the batch's); call after `.train()`."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
