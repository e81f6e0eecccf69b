"""The CR-GCN transcription model and its variants on one shared front end.

front end: log-mel (B, T, n_mels) -> [optional harmonic stack: the log-mel read at h times each
key-aligned frequency, one input channel per harmonic h] -> CNN (conv + batch norm + ReLU, pooling over frequency only, so
time resolution is kept) -> BiLSTM -> frame features (B, T, d).
heads (onset, offset, frame, velocity; 88 keys each), by variant:
- `crgcn`: a graph convolution over the 88 keys, whose adjacency comes from key co-occurrence in the
  training labels, turns key embeddings into one classifier vector per key and head;
  logits[b, t, k] = feature[b, t] . classifier[k] + bias[k].
- `cnn_rnn`: one linear layer per head (the plain CNN-RNN baseline).
- `cnn_rnn_mlp`: linear heads refined by an MLP over pairs of key features (each key with its most
  co-occurring keys), the CNN-RNN-MLP design.
Every variant also has a sustain-pedal head (onset, offset, frame) on the frame features.
With `frame_stack` > 0, the frame logits are refined as in Onsets and Frames: a small BiLSTM reads the
head's frame logits beside the onset and offset probabilities (detached, so the frame loss does not
train the onset detector) and adds a correction to the frame logits.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from keyscribe.features import FeatureConfig, harmonic_stack
from keyscribe.notes import N_KEYS

HEADS = ("onset", "offset", "frame", "velocity")
PEDAL_OUTPUTS = 3  # pedal onset, offset, frame
VARIANTS = ("crgcn", "cnn_rnn", "cnn_rnn_mlp")


@dataclass(frozen=True)
class ModelConfig:
    variant: str = "crgcn"
    n_mels: int = 229
    harmonics: tuple[float, ...] = ()  # harmonic-stack input channels (empty: the log-mel itself, 1 channel)
    bins_per_semitone: int = 3  # frequency resolution of the harmonic stack's key-aligned grid
    conv_channels: tuple[int, ...] = (16, 32, 32)
    pool_after: tuple[bool, ...] = (True, True, True)  # max-pool frequency by 2 after these convs
    cnn_out: int = 256
    lstm_hidden: int = 128
    dropout: float = 0.25
    key_embedding: int = 64
    gcn_hidden: int = 128
    adjacency_threshold: float = 0.1  # binarise P(j|i) here (ML-GCN's tau)
    adjacency_reweight: float = 0.25  # weight given to neighbours vs self (ML-GCN's p)
    pair_neighbours: int = 8  # cnn_rnn_mlp: pairs per key
    pair_hidden: int = 32
    frame_stack: int = 0  # hidden size of the Onsets-and-Frames frame-conditioning BiLSTM (0: none)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown model variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        object.__setattr__(self, "conv_channels", tuple(self.conv_channels))
        object.__setattr__(self, "pool_after", tuple(self.pool_after))
        object.__setattr__(self, "harmonics", tuple(float(h) for h in self.harmonics))

    @property
    def feature_dim(self) -> int:
        return 2 * self.lstm_hidden

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def normalised_adjacency(cooccurrence: np.ndarray, threshold: float, reweight: float) -> np.ndarray:
    """ML-GCN's adjacency from P(j|i): binarise at `threshold`, give neighbours `reweight` of each row
    and the key itself the rest (keeps features from over-smoothing), then symmetric normalisation."""
    probs = np.asarray(cooccurrence, dtype=np.float64)
    n = probs.shape[0]
    edges = (probs >= threshold) & ~np.eye(n, dtype=bool)
    degree = edges.sum(axis=1, keepdims=True)
    adj = np.where(degree > 0, reweight * edges / np.maximum(degree, 1), 0.0)
    adj += np.diag(np.where(degree[:, 0] > 0, 1.0 - reweight, 1.0))
    sym = (adj + adj.T) / 2
    d = 1.0 / np.sqrt(sym.sum(axis=1))
    return (sym * d[:, None] * d[None, :]).astype(np.float32)


def top_neighbours(cooccurrence: np.ndarray, k: int) -> np.ndarray:
    """(88, k) indices of each key's k most co-occurring other keys."""
    probs = np.array(cooccurrence, dtype=np.float64)
    np.fill_diagonal(probs, -1.0)
    return np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int64)


class HarmonicStack(nn.Module):
    """(B, T, n_mels) log-mel -> (B, H, T, F): `features.harmonic_stack` as a fixed linear map."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.n_mels != FeatureConfig().n_mels:
            raise ValueError(f"the harmonic stack reads the default {FeatureConfig().n_mels}-band log-mel, "
                             f"not {config.n_mels} bands")
        weights, offset = harmonic_stack(config.harmonics, config.bins_per_semitone)
        self.register_buffer("weights", torch.from_numpy(weights))
        self.register_buffer("offset", torch.from_numpy(offset))
        self.channels = len(config.harmonics)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        stacked = (mel @ self.weights + self.offset).unflatten(-1, (self.channels, -1))  # (B, T, H, F)
        return stacked.transpose(1, 2)


class FrontEnd(nn.Module):
    """CNN over (time, frequency) then a BiLSTM over time: (B, T, n_mels) -> (B, T, feature_dim)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        self.stack = HarmonicStack(config) if config.harmonics else None
        channels = len(config.harmonics) if config.harmonics else 1
        freq = N_KEYS * config.bins_per_semitone if config.harmonics else config.n_mels
        for out_ch, pool in zip(config.conv_channels, config.pool_after):
            layers += [nn.Conv2d(channels, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU()]
            if pool:
                layers += [nn.MaxPool2d((1, 2)), nn.Dropout(config.dropout)]
                freq //= 2
            channels = out_ch
        self.cnn = nn.Sequential(*layers)
        self.project = nn.Sequential(nn.Linear(channels * freq, config.cnn_out), nn.ReLU(), nn.Dropout(config.dropout))
        self.rnn = nn.LSTM(config.cnn_out, config.lstm_hidden, batch_first=True, bidirectional=True)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.cnn(self.stack(mel) if self.stack is not None else mel.unsqueeze(1))  # (B, C, T, F)
        x = x.permute(0, 2, 1, 3).flatten(2)  # (B, T, C * F)
        x, _ = self.rnn(self.project(x))
        return x


class GraphClassifiers(nn.Module):
    """Two graph convolutions over the keys: key embeddings -> one classifier per key and head."""

    def __init__(self, config: ModelConfig, adjacency: np.ndarray):
        super().__init__()
        self.register_buffer("adjacency", torch.as_tensor(adjacency, dtype=torch.float32))
        # Sized so the classifiers start at the scale of a default nn.Linear head (logit std ~0.045 on
        # the front end's initial features; 0.1 gave 0.010): the features' gradients scale with the
        # classifiers, and with 0.1 the GCN variant learnt far slower early on than cnn_rnn.
        self.embedding = nn.Parameter(torch.randn(N_KEYS, config.key_embedding) * 0.5)
        self.gc1 = nn.Linear(config.key_embedding, config.gcn_hidden, bias=False)
        self.gc2 = nn.Linear(config.gcn_hidden, len(HEADS) * config.feature_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(len(HEADS), N_KEYS))
        self.activation = nn.LeakyReLU(0.2)
        self.feature_dim = config.feature_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.adjacency @ self.gc1(self.embedding))
        classifiers = (self.adjacency @ self.gc2(h)).view(N_KEYS, len(HEADS), self.feature_dim)
        return torch.einsum("btd,khd->bthk", features, classifiers) + self.bias

    def output_bias(self) -> torch.Tensor:
        return self.bias


class LinearHeads(nn.Module):
    """One linear classifier per head: (B, T, d) -> (B, T, heads, 88)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.linear = nn.Linear(config.feature_dim, len(HEADS) * N_KEYS)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).unflatten(-1, (len(HEADS), N_KEYS))

    def output_bias(self) -> torch.Tensor:
        return self.linear.bias.view(len(HEADS), N_KEYS)


class PairRefinedHeads(nn.Module):
    """Linear heads plus an MLP over (key, neighbour) pairs of per-key features, averaged over the
    neighbours: each key's logits see the evidence for the keys that sound with it."""

    def __init__(self, config: ModelConfig, neighbours: np.ndarray):
        super().__init__()
        self.base = LinearHeads(config)
        self.register_buffer("neighbours", torch.as_tensor(neighbours, dtype=torch.long))
        m = config.pair_hidden
        self.key_features = nn.Linear(config.feature_dim, N_KEYS * m)
        self.pair_mlp = nn.Sequential(nn.Linear(2 * m, m), nn.ReLU(), nn.Linear(m, len(HEADS)))
        self.m = m

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """pair_mlp([key, partner]) averaged over the partners, computed without building the pairs: the
        first layer splits into a key's and a partner's part, and the last (linear) commutes with the mean.
        One partner at a time, so inference holds (B, T, 88, m) tensors, not (B, T, 88, K, 2m): the pairs
        took 1.9 GB on a 5-minute recording."""
        keys = self.key_features(features).unflatten(-1, (N_KEYS, self.m))  # (B, T, 88, m)
        first, activation, last = self.pair_mlp
        own = keys @ first.weight[:, : self.m].T + first.bias
        partner = keys @ first.weight[:, self.m:].T
        n_partners = self.neighbours.shape[1]
        hidden = sum(activation(own + partner[:, :, self.neighbours[:, k]]) for k in range(n_partners))
        refine = last(hidden / n_partners)  # (B, T, 88, heads)
        return self.base(features) + refine.transpose(2, 3)

    def output_bias(self) -> torch.Tensor:
        return self.base.output_bias()


class FrameStack(nn.Module):
    """Onsets and Frames' combined stack: (frame logits, onset and offset probabilities) -> frame logits.
    A residual correction of the head's frame logits that starts near zero, so at initialisation the frames
    are the head's (at the label priors) and the front end learns from the frame loss from the first step
    (not exactly zero: the stack's own weights would then get no gradient on that step)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.rnn = nn.LSTM(3 * N_KEYS, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, N_KEYS)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)

    def forward(self, frame: torch.Tensor, onset: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        evidence = torch.cat([frame, torch.sigmoid(onset).detach(), torch.sigmoid(offset).detach()], dim=-1)
        return frame + self.out(self.rnn(evidence)[0])


class Transcriber(nn.Module):
    """(B, T, n_mels) log-mel -> dict of logits: onset/offset/frame/velocity (B, T, 88), pedal (B, T, 3)."""

    def __init__(self, config: ModelConfig, cooccurrence: np.ndarray | None = None):
        super().__init__()
        self.config = config
        if cooccurrence is None:  # rebuilt from a checkpoint, whose state dict holds the real buffers
            cooccurrence = np.eye(N_KEYS, dtype=np.float32)
        self.front = FrontEnd(config)
        if config.variant == "crgcn":
            adjacency = normalised_adjacency(cooccurrence, config.adjacency_threshold, config.adjacency_reweight)
            self.heads = GraphClassifiers(config, adjacency)
        elif config.variant == "cnn_rnn_mlp":
            self.heads = PairRefinedHeads(config, top_neighbours(cooccurrence, config.pair_neighbours))
        else:
            self.heads = LinearHeads(config)
        self.pedal = nn.Linear(config.feature_dim, PEDAL_OUTPUTS)
        self.frame_stack = FrameStack(config.frame_stack) if config.frame_stack else None

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.front(mel)
        logits = self.heads(features)  # (B, T, heads, 88)
        out = {name: logits[:, :, i] for i, name in enumerate(HEADS)}
        if self.frame_stack is not None:
            out["frame"] = self.frame_stack(out["frame"], out["onset"], out["offset"])
        out["pedal"] = self.pedal(features)
        return out


def init_biases_at_priors(model: Transcriber, head_rates: np.ndarray, pedal_rates: np.ndarray) -> None:
    """Start every output at its rate in the training labels ((len(HEADS), 88) and (3,), in 0..1).
    Adam moves a bias by about the learning rate per step, so from 0 (p = 0.5) the logit of a 0.3%
    onset rate (-5.8) is thousands of steps away, steps the network otherwise spends saying "no"."""
    def logit(rates):
        return torch.logit(torch.as_tensor(np.asarray(rates), dtype=torch.float32).clamp(1e-4, 1 - 1e-4))
    with torch.no_grad():
        model.heads.output_bias().copy_(logit(head_rates))
        model.pedal.bias.copy_(logit(pedal_rates))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
