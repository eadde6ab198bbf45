"""The conditional Char-RNN (SEEDS.md section 1) in torch: the training net and the single
step that is exported to ONNX.

    token ─▶ embedding ─┐
                        ├─▶ concat ─▶ LSTM x layers ─▶ linear ─▶ 388 logits
    controls (32) ──────┘

The controls given with input token t describe the music from token t + 1 on (the target),
so at generation time a changed control steers what comes next. The ablation is the same
net trained with all-zero controls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from livegen.music.events import VOCAB_SIZE
from livegen.music.features import CONTROL_SIZE


@dataclass(frozen=True, slots=True)
class NetShape:
    """The size of a Char-RNN; saved in checkpoints and the manifest."""

    vocab_size: int = VOCAB_SIZE
    control_size: int = CONTROL_SIZE
    embedding_size: int = 128
    hidden_size: int = 512
    layers: int = 2
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class CharRNN(nn.Module):
    """The training net: whole windows at once through cuDNN/oneDNN's fused LSTM."""

    def __init__(self, shape: NetShape) -> None:
        super().__init__()
        self.shape = shape
        self.embedding = nn.Embedding(shape.vocab_size, shape.embedding_size)
        self.lstm = nn.LSTM(shape.embedding_size + shape.control_size, shape.hidden_size,
                            shape.layers, batch_first=True,
                            dropout=shape.dropout if shape.layers > 1 else 0.0)
        self.dropout = nn.Dropout(shape.dropout)
        self.head = nn.Linear(shape.hidden_size, shape.vocab_size)

    def forward(self, tokens: torch.Tensor, controls: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """tokens (B, T) int64, controls (B, T, 32) -> logits (B, T, 388), (h, c) each
        (layers, B, hidden). No state = zeros."""
        x = torch.cat([self.embedding(tokens), controls], dim=-1)
        out, state = self.lstm(x, state)
        return self.head(self.dropout(out)), state

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class CharRNNStep(nn.Module):
    """One event step for export: (token (B,), controls (B, 32), h, c (layers, B, hidden))
    -> (logits (B, 388), h', c'). The same function as CharRNN.forward on one step, written
    as one matrix product per layer over [input, h] so that the ONNX graph is a few Gemms
    rather than an LSTM operator with its per-call set-up."""

    def __init__(self, net: CharRNN) -> None:
        super().__init__()
        shape = net.shape
        self.layers = shape.layers
        self.embedding = nn.Parameter(net.embedding.weight.detach().clone())
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in range(shape.layers):
            w_ih = getattr(net.lstm, f"weight_ih_l{layer}").detach()
            w_hh = getattr(net.lstm, f"weight_hh_l{layer}").detach()
            b = (getattr(net.lstm, f"bias_ih_l{layer}").detach()
                 + getattr(net.lstm, f"bias_hh_l{layer}").detach())
            # Stored transposed, (in + hidden, 4 * hidden): x @ W needs no transpose at run time.
            self.weights.append(nn.Parameter(torch.cat([w_ih, w_hh], dim=1).t().contiguous()))
            self.biases.append(nn.Parameter(b.clone()))
        self.head_weight = nn.Parameter(net.head.weight.detach().t().contiguous())
        self.head_bias = nn.Parameter(net.head.bias.detach().clone())

    def forward(self, token: torch.Tensor, controls: torch.Tensor, h: torch.Tensor,
                c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.cat([self.embedding[token], controls], dim=-1)
        hs, cs = [], []
        for layer in range(self.layers):
            gates = torch.cat([x, h[layer]], dim=-1) @ self.weights[layer] + self.biases[layer]
            i, f, g, o = gates.chunk(4, dim=-1)  # torch's LSTM gate order
            c_new = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            hs.append(h_new)
            cs.append(c_new)
            x = h_new
        return x @ self.head_weight + self.head_bias, torch.stack(hs), torch.stack(cs)


# ---------------------------------------------------------------- Langevin score network
# The score network of the Langevin chorale model (SEEDS.md section 2; GENERATORS.md
# section 1): a transformer over the time steps of a fixed-length crop of the 105-value
# chorale encoding. The original's bugs are fixed: crops have a fixed length, so there is
# no padding to attend to or to score; dropout is off whenever the net is used outside
# training (export and sampling call eval()); one noise level per sample.
#
#     x (B, T, 105) ─▶ ×c_in(σ) ─▶ linear ─▶ + position ─▶ + embed(log σ) ─▶ blocks ─▶ F
#     denoised = c_skip(σ)·x + c_out(σ)·F          (sigma_input: EDM's preconditioning)
#     denoised = x + σ·F,  F ≈ −z                  (not sigma_input: the original's form)
#
# The net returns the denoised estimate D(x, σ) ≈ E[x0 | x]; every sampler in numpy
# (annealed Langevin, Euler/DDIM, ancestral) needs only D, since score = (D − x) / σ².

@dataclass(frozen=True, slots=True)
class ScoreShape:
    """The size of a score network; saved in checkpoints and the manifest."""

    dim: int = 105  # music/roll.CHORALE_DIM: four voice one-hots side by side
    width: int = 128
    layers: int = 4
    heads: int = 4
    feedforward: int = 512
    dropout: float = 0.1
    max_steps: int = 64  # longest crop the learned positions cover
    sigma_input: bool = True  # feed log σ and precondition (False: the original's −z form)
    sigma_data: float = 0.2  # the data's per-value spread (one-hots: about 0.19)

    def to_dict(self) -> dict:
        return asdict(self)


class ScoreBlock(nn.Module):
    """Pre-norm transformer block with attention written out (plain MatMul/Softmax in ONNX,
    no fused kernel the exporter has to understand)."""

    def __init__(self, shape: ScoreShape) -> None:
        super().__init__()
        self.heads = shape.heads
        self.norm1 = nn.LayerNorm(shape.width)
        self.qkv = nn.Linear(shape.width, 3 * shape.width)
        self.proj = nn.Linear(shape.width, shape.width)
        self.norm2 = nn.LayerNorm(shape.width)
        self.ff = nn.Sequential(nn.Linear(shape.width, shape.feedforward), nn.GELU(),
                                nn.Linear(shape.feedforward, shape.width))
        self.dropout = nn.Dropout(shape.dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        batch, steps, width = h.shape
        head = width // self.heads
        q, k, v = (self.qkv(self.norm1(h)).reshape(batch, steps, 3, self.heads, head)
                   .permute(2, 0, 3, 1, 4))
        weights = torch.softmax(q @ k.transpose(-1, -2) * head ** -0.5, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, steps, width)
        h = h + self.dropout(self.proj(attended))
        return h + self.dropout(self.ff(self.norm2(h)))


class ScoreNet(nn.Module):
    """(x (B, T, 105) noisy chorale vectors, sigma (B,) their noise levels) -> the denoised
    estimate (B, T, 105). T is at most shape.max_steps."""

    def __init__(self, shape: ScoreShape) -> None:
        super().__init__()
        self.shape = shape
        self.embed = nn.Linear(shape.dim, shape.width)
        self.position = nn.Parameter(torch.randn(shape.max_steps, shape.width) * 0.02)
        if shape.sigma_input:
            self.register_buffer("frequencies", torch.exp(torch.linspace(0, 4, 16)),
                                 persistent=False)
            self.noise_embed = nn.Sequential(nn.Linear(32, shape.width), nn.SiLU(),
                                             nn.Linear(shape.width, shape.width))
        self.blocks = nn.ModuleList(ScoreBlock(shape) for _ in range(shape.layers))
        self.norm = nn.LayerNorm(shape.width)
        self.head = nn.Linear(shape.width, shape.dim)

    def preconditioning(self, sigma: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_in, c_skip, c_out), each (B, 1, 1): D = c_skip·x + c_out·F(c_in·x)."""
        sigma = sigma.reshape(-1, 1, 1)
        if not self.shape.sigma_input:
            return torch.ones_like(sigma), torch.ones_like(sigma), sigma
        data2 = self.shape.sigma_data ** 2
        total = sigma * sigma + data2
        return total.rsqrt(), data2 / total, sigma * self.shape.sigma_data * total.rsqrt()

    def raw(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """F, the network's own output (B, T, 105), before the skip connection."""
        c_in, _, _ = self.preconditioning(sigma)
        h = self.embed(x * c_in) + self.position[: x.shape[1]]
        if self.shape.sigma_input:
            angles = torch.log(sigma).reshape(-1, 1) / 4 * self.frequencies
            h = h + self.noise_embed(torch.cat([angles.sin(), angles.cos()], dim=-1))[:, None]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        _, c_skip, c_out = self.preconditioning(sigma)
        return c_skip * x + c_out * self.raw(x, sigma)

    def loss(self, clean: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
             given: torch.Tensor | None = None) -> torch.Tensor:
        """Denoising score matching at one σ per sample, as the mean square of F against
        its target: −z in the original's form (0.5·MSE, as langevin-music), else EDM's
        (clean − c_skip·x) / c_out, which weights every σ alike. `given` (B, T, 105) bool
        marks values left clean (the context the sampler will give exactly); the loss is
        over the others."""
        return self.loss_of(self.raw(self.noisy(clean, sigma, noise, given), sigma), clean,
                            sigma, noise, given)

    @staticmethod
    def noisy(clean: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
              given: torch.Tensor | None = None) -> torch.Tensor:
        """clean + σ·noise, except where `given`."""
        x = clean + sigma.reshape(-1, 1, 1) * noise
        return x if given is None else torch.where(given, clean, x)

    def loss_of(self, out: torch.Tensor, clean: torch.Tensor, sigma: torch.Tensor,
                noise: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of `loss` for an F already computed at its noisy input."""
        if not self.shape.sigma_input:
            error = 0.5 * (out + noise) ** 2
        else:
            _, c_skip, c_out = self.preconditioning(sigma)
            x = self.noisy(clean, sigma, noise, given)
            error = (out - (clean - c_skip * x) / c_out) ** 2
        if given is None:
            return error.mean()
        free = (~given).float()
        return (error * free).sum() / free.sum().clamp(min=1.0)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------- DCRNN (GAN generator)
# Deep Symphony's DCRNN (SEEDS.md section 1; GENERATORS.md section 2), with the original's
# bugs fixed. The generator makes a piano roll of two planes (frames, onsets) over the keys
# low .. low + 12 * octaves - 1, for T steps of the 16th grid:
#
#   z (noise_size, U[-1,1]) ┐
#   scale (12) ─────────────┴▶ tiled over T / high_every steps ─▶ RNNa (GRU) ─▶ a sparse
#   high-level sequence (one vector a beat), repeated x high_every along time
#   ─▶ [+ position in the beat, + scale] ─▶ RNNb (GRU, one step a 16th) refines it
#   ─▶ dense to (T, octaves, 32) ─▶ transposed conv 1x12 stride 12 ─▶ 2 planes x 12 keys
#   per octave, each block starting at a C ─▶ tanh
#
# The critic reads the planes and their self-similarity (T x T Gram matrices of frames and
# of onsets), each through 4 x [conv 5x5, LeakyReLU 0.2, max-pool 2x2], then the scale,
# then dense 200 -> 1. No normalisation (the gradient penalty is per sample).

@dataclass(frozen=True, slots=True)
class DCRNNShape:
    """The size of a DCRNN generator and its critic; saved in checkpoints and the manifest."""

    noise_size: int = 32
    condition_size: int = 12
    high_size: int = 128  # RNNa width
    high_every: int = 4  # RNNa writes one vector per this many steps (a beat of 16ths)
    frame_size: int = 128  # RNNb width
    low: int = 24  # the lowest key the head writes: C1 (a C, so octave blocks align to C)
    octaves: int = 7  # C1 .. B7, 84 keys: every note of the corpus, with room to transpose
    strip_channels: int = 32
    critic_filters: tuple[int, ...] = (32, 64, 128, 128)
    critic_kernel: int = 5  # odd; 3 costs a third of 5 (the 2-core CPU run's choice)
    # The scale gate: a learned bias added to both planes of every key whose pitch class is
    # outside the scale condition (weight 0), before the tanh. The condition's one hard
    # rule then costs the net one number instead of being learned through the recurrent
    # layers (the first CPU run reached only 60-85% in scale without it).
    scale_gate: bool = False
    critic_dense: int = 200

    @property
    def keys(self) -> int:
        return 12 * self.octaves

    def to_dict(self) -> dict:
        values = asdict(self)
        values["critic_filters"] = list(self.critic_filters)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> DCRNNShape:
        return cls(**{**values, "critic_filters": tuple(values["critic_filters"])})


class DCRNNGenerator(nn.Module):
    """(z (B, noise_size) in [-1, 1], scale (B, 12)) -> planes (B, 2, T, keys) in [-1, 1].
    T must be a multiple of high_every. The recurrent layers run from the zero state, so
    the first T' steps of a longer segment are the segment of T' steps."""

    def __init__(self, shape: DCRNNShape) -> None:
        super().__init__()
        self.shape = shape
        code = shape.noise_size + shape.condition_size
        self.high = nn.GRU(code, shape.high_size, batch_first=True)
        self.frames = nn.GRU(shape.high_size + shape.high_every + shape.condition_size,
                             shape.frame_size, batch_first=True)
        self.dense = nn.Linear(shape.frame_size, shape.octaves * shape.strip_channels)
        # The strip deconvolution: one 12-key block per octave, the same weights for every
        # octave, so a pattern learned in one register can sound in another.
        self.strip = nn.ConvTranspose2d(shape.strip_channels, 2, kernel_size=(1, 12),
                                        stride=(1, 12))
        if shape.scale_gate:
            self.scale_bias = nn.Parameter(torch.tensor(-2.0))
            self.register_buffer("key_classes",
                                 (torch.arange(shape.keys) + shape.low) % 12, persistent=False)

    def forward(self, z: torch.Tensor, scale: torch.Tensor, steps: int) -> torch.Tensor:
        shape = self.shape
        if steps % shape.high_every:
            raise ValueError(f"steps {steps} is not a multiple of {shape.high_every}")
        batch = z.shape[0]
        beats = steps // shape.high_every
        code = torch.cat([z, scale], dim=-1)[:, None].expand(batch, beats, -1)
        high, _ = self.high(code)
        high = high.repeat_interleave(shape.high_every, dim=1)
        # Where in the beat each step falls: the repeated sequence alone does not say.
        phase = torch.eye(shape.high_every, dtype=z.dtype, device=z.device).repeat(beats, 1)
        frame_in = torch.cat([high, phase[None].expand(batch, -1, -1),
                              scale[:, None].expand(batch, steps, -1)], dim=-1)
        frames, _ = self.frames(frame_in)
        strips = self.dense(frames).reshape(batch, steps, shape.octaves,
                                            shape.strip_channels)
        planes = self.strip(strips.permute(0, 3, 1, 2))  # (B, 2, T, 12 * octaves)
        if shape.scale_gate:
            outside = (scale[:, self.key_classes] == 0).to(planes.dtype)  # (B, keys)
            planes = planes + self.scale_bias * outside[:, None, None, :]
        return torch.tanh(planes)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _conv_tower(channels: int, filters: tuple[int, ...], kernel: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in filters:
        layers += [nn.Conv2d(channels, width, kernel, padding=kernel // 2), nn.LeakyReLU(0.2),
                   nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers, nn.Flatten())


def self_similarity(planes: torch.Tensor) -> torch.Tensor:
    """(B, 2, T, K) planes -> (B, 2, T, T): each plane's Gram matrix over the keys divided by
    K, so 1 where two steps sound (or strike) the same keys and -1 where they differ on every
    key. It shows the critic what repeats: a rhythm, a held chord."""
    return planes @ planes.transpose(-1, -2) / planes.shape[-1]


class DCRNNCritic(nn.Module):
    """(planes (B, 2, T, keys), scale (B, 12)) -> (B,) Wasserstein critic values."""

    def __init__(self, shape: DCRNNShape, steps: int) -> None:
        super().__init__()
        self.shape = shape
        self.steps = steps
        pools = 2 ** len(shape.critic_filters)
        if steps < pools or shape.keys < pools:
            raise ValueError(f"{steps} steps x {shape.keys} keys is too small for "
                             f"{len(shape.critic_filters)} max-pools")
        self.roll_tower = _conv_tower(2, shape.critic_filters, shape.critic_kernel)
        self.gram_tower = _conv_tower(2, shape.critic_filters, shape.critic_kernel)
        last = shape.critic_filters[-1]
        flat = last * (steps // pools) * (shape.keys // pools) + last * (steps // pools) ** 2
        self.head = nn.Sequential(nn.Linear(flat + shape.condition_size, shape.critic_dense),
                                  nn.LeakyReLU(0.2), nn.Linear(shape.critic_dense, 1))

    def forward(self, planes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        features = torch.cat([self.roll_tower(planes),
                              self.gram_tower(self_similarity(planes)), scale], dim=-1)
        return self.head(features)[:, 0]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class DCRNNEncoder(nn.Module):
    """(planes (B, 2, T, keys), scale (B, 12)) -> a code (B, noise_size) in (-1, 1): the
    inverse of the generator, trained only to train it (the autoencoding term of
    train/dcrnn.py); nothing plays or ships it. A bidirectional GRU reads the frames and
    onsets of every step with the scale; its two last states give the code."""

    def __init__(self, shape: DCRNNShape) -> None:
        super().__init__()
        self.shape = shape
        self.read = nn.GRU(2 * shape.keys + shape.condition_size, shape.high_size,
                           batch_first=True, bidirectional=True)
        self.code = nn.Linear(2 * shape.high_size, shape.noise_size)

    def forward(self, planes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        batch, _, steps, keys = planes.shape
        per_step = planes.permute(0, 2, 1, 3).reshape(batch, steps, 2 * keys)
        inputs = torch.cat([per_step, scale[:, None].expand(batch, steps, -1)], dim=-1)
        _, last = self.read(inputs)  # (2, B, high_size): forward and backward
        return torch.tanh(self.code(torch.cat([last[0], last[1]], dim=-1)))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
