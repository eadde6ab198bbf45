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

    def loss(self, clean: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
             ) -> torch.Tensor:
        """Denoising score matching at one σ per sample, as the mean square of F against
        its target: −z in the original's form (0.5·MSE, as langevin-music), else EDM's
        (clean − c_skip·x) / c_out, which weights every σ alike."""
        x = clean + sigma.reshape(-1, 1, 1) * noise
        out = self.raw(x, sigma)
        if not self.shape.sigma_input:
            return 0.5 * torch.mean((out + noise) ** 2)
        _, c_skip, c_out = self.preconditioning(sigma)
        return torch.mean((out - (clean - c_skip * x) / c_out) ** 2)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
