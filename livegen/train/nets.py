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
