"""The Char-RNN training loop: plain Adam on cross-entropy, gradient clipping, a validation
pass after every epoch, checkpoints, resume, a seed and a progress bar.

An epoch is one pass over the training pieces, each transposed at random (data.py). The
learning rate follows a cosine from `lr` down to lr/10 over the run, measured by whichever
runs out first: epochs or minutes (wall clock of the whole command, parsing included).
`best.pt` keeps the weights with the lowest validation NLL, `last.pt` everything needed to
resume (weights, Adam, epoch, batch, elapsed time, the history). Checkpoints are also
written every `checkpoint_minutes` inside an epoch, so an interrupted CPU run loses little.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from livegen.train import data
from livegen.train.nets import CharRNN, NetShape

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TrainOptions:
    """Everything a run depends on; saved in its checkpoints."""

    out: Path = Path("out/charrnn/conditional")
    device: str = "auto"
    epochs: int = 40
    minutes: float | None = 55.0
    hidden: int = 512
    layers: int = 2
    embedding: int = 128
    dropout: float = 0.1
    window: int = 256
    batch: int = 64
    lr: float = 2e-3
    clip: float = 1.0
    seed: int = 1
    no_controls: bool = False
    workers: int | None = None
    checkpoint_minutes: float = 5.0
    resume: bool = False
    command: str = ""
    shape: NetShape = field(init=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.shape = NetShape(embedding_size=self.embedding, hidden_size=self.hidden,
                              layers=self.layers, dropout=self.dropout)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["out"] = str(self.out)
        return values


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when torch sees a GPU, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _to_device(batch: data.Windows, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    non_blocking = device.type == "cuda"
    return (torch.from_numpy(batch.inputs).to(device, non_blocking=non_blocking),
            torch.from_numpy(batch.controls).to(device, non_blocking=non_blocking),
            torch.from_numpy(batch.targets).to(device, non_blocking=non_blocking))


@torch.no_grad()
def evaluate_nll(net: CharRNN, windows: data.Windows, device: torch.device,
                 batch: int = 128) -> float:
    """Mean cross-entropy (nats per event) of the net over the windows, each from the zero
    state, dropout off."""
    net.eval()
    total, count = 0.0, 0
    for part in data.batches(windows, batch):
        inputs, controls, targets = _to_device(part, device)
        logits, _ = net(inputs, controls)
        total += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                             reduction="sum").item()
        count += targets.numel()
    net.train()
    return total / count


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint written by `train` (weights, shape, options, history, ...)."""
    return torch.load(path, map_location=device, weights_only=False)


def net_from_checkpoint(checkpoint: dict) -> CharRNN:
    """The trained net of a checkpoint, on the CPU, in eval mode."""
    net = CharRNN(NetShape(**checkpoint["shape"]))
    net.load_state_dict(checkpoint["model"])
    return net.eval()


def train(options: TrainOptions) -> Path:
    """Train per `options`; returns the path of the best checkpoint."""
    from tqdm import tqdm

    # The budget covers the whole command, the first corpus parse included, so that
    # `--minutes 55` on a fresh checkout still ends within the hour.
    command_started = time.monotonic()
    device = resolve_device(options.device)
    seed_everything(options.seed)
    if device.type == "cpu":
        log.info("torch uses %d CPU threads", torch.get_num_threads())
    corpus = data.load_corpus(options.workers)
    summary = corpus.summary()
    log.info("training on %d pieces (%d tokens), validating on %d pieces (%d tokens)",
             summary["train"]["pieces"], summary["train"]["tokens"],
             summary["valid"]["pieces"], summary["valid"]["tokens"])
    valid = data.windows(data.stream(corpus.valid), options.window,
                         zero_controls=options.no_controls)

    net = CharRNN(options.shape).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=options.lr)
    log.info("net %s: %.2fM parameters on %s", options.shape, net.parameter_count() / 1e6,
             device)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "batch": 0, "step": 0, "elapsed_s": 0.0, "best_valid": math.inf,
             "history": []}
    if options.resume and (out / "last.pt").is_file():
        checkpoint = load_checkpoint(out / "last.pt", device)
        if checkpoint["shape"] != options.shape.to_dict():
            raise ValueError(f"{out / 'last.pt'} holds a net of shape {checkpoint['shape']}, "
                             f"not {options.shape.to_dict()}; resume with the same --hidden, "
                             "--layers, --embedding and --dropout, or drop --resume")
        net.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = checkpoint["state"]
        log.info("resuming %s at epoch %d, batch %d (%.1f min trained)", out / "last.pt",
                 state["epoch"] + 1, state["batch"], state["elapsed_s"] / 60)

    def save(name: str) -> None:
        checkpoint = {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                      "shape": options.shape.to_dict(), "options": options.to_dict(),
                      "state": state, "corpus": summary, "device": str(device),
                      "torch": torch.__version__}
        partial = out / f"{name}.partial"
        torch.save(checkpoint, partial)
        partial.replace(out / name)

    budget_s = options.minutes * 60 if options.minutes else math.inf
    started = command_started - state["elapsed_s"]
    last_save = time.monotonic()
    net.train()
    while state["epoch"] < options.epochs and state["elapsed_s"] < budget_s:
        epoch = state["epoch"]
        # Each epoch's windows depend only on (seed, epoch): a resumed run sees the same ones.
        epoch_data = data.training_epoch(corpus.train, options.window,
                                         np.random.default_rng((options.seed, epoch)),
                                         zero_controls=options.no_controls)
        total_batches = math.ceil(len(epoch_data.inputs) / options.batch)
        bar = tqdm(range(state["batch"], total_batches), total=total_batches,
                   initial=state["batch"], desc=f"epoch {epoch + 1}/{options.epochs}",
                   unit="batch", dynamic_ncols=True)
        running = None
        lr = options.lr
        for index in bar:
            rows = slice(index * options.batch, (index + 1) * options.batch)
            batch = data.Windows(epoch_data.inputs[rows], epoch_data.controls[rows],
                                 epoch_data.targets[rows])
            progress = max((epoch + index / total_batches) / options.epochs,
                           state["elapsed_s"] / budget_s)
            lr = options.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1))))
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, controls, targets = _to_device(batch, device)
            logits, _ = net(inputs, controls)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), options.clip)
            optimizer.step()
            state["batch"] = index + 1
            state["step"] += 1
            if state["step"] % 20 == 0 or running is None:
                value = loss.item()  # a device sync: not every step
                running = value if running is None else 0.9 * running + 0.1 * value
                bar.set_postfix(loss=f"{running:.3f}", lr=f"{lr:.1e}")
            state["elapsed_s"] = time.monotonic() - started
            if state["elapsed_s"] >= budget_s:
                log.info("time budget of %.1f min reached in epoch %d", options.minutes,
                         epoch + 1)
                break
            if time.monotonic() - last_save > options.checkpoint_minutes * 60:
                save("last.pt")
                last_save = time.monotonic()
        bar.close()
        finished_epoch = state["batch"] >= total_batches
        valid_nll = evaluate_nll(net, valid, device)
        state["elapsed_s"] = time.monotonic() - started
        state["history"].append({"epoch": epoch + 1, "batches": state["batch"],
                                 "train_loss": running, "valid_nll": valid_nll,
                                 "minutes": round(state["elapsed_s"] / 60, 2), "lr": lr})
        log.info("epoch %d: valid NLL %.4f nats/event (train loss %.4f) at %.1f min",
                 epoch + 1, valid_nll, running or math.nan, state["elapsed_s"] / 60)
        if valid_nll < state["best_valid"]:
            state["best_valid"] = valid_nll
            save("best.pt")
        if finished_epoch:
            state["epoch"] += 1
            state["batch"] = 0
        save("last.pt")
        last_save = time.monotonic()
    (out / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")
    log.info("done: best valid NLL %.4f after %.1f min; %s", state["best_valid"],
             state["elapsed_s"] / 60, out / "best.pt")
    return out / "best.pt"
