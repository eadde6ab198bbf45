"""The Char-RNN training loop: plain Adam on cross-entropy, gradient clipping, a validation
pass after every epoch, checkpoints, resume, a seed and a progress bar.

An epoch is one pass over the training pieces, each transposed at random (data.py), with
controls made like the engine's (data.Augment: held spans, key profiles, unasked parts) in
the soft encoding; `--no-augment` keeps the music's own controls, `--encoding onehot` Deep
Symphony's bins. The validation NLL is measured under the music's own controls (as the
eval's); a second figure under augmented ones. `--init` starts from another model's
weights (a checkpoint, or an exported fp32 graph). The
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from livegen.train import data
from livegen.train.nets import CharRNN, NetShape

log = logging.getLogger(__name__)

VALID_STREAM = 1 << 30  # the validation's augmented controls: a seed no epoch uses


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
    encoding: str = "soft"
    augment: bool = True
    init: Path | None = None
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
        values["init"] = None if self.init is None else str(self.init)
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


def initial_weights(path: Path, shape: NetShape) -> dict:
    """The state dict of a checkpoint (.pt) or an exported fp32 graph (.onnx) to start
    from; ValueError when its net has another shape."""
    if path.suffix == ".onnx":
        from livegen.train.export import net_from_onnx

        return net_from_onnx(path, shape).state_dict()
    checkpoint = load_checkpoint(path)
    found = {k: v for k, v in checkpoint["shape"].items() if k != "dropout"}
    wanted = {k: v for k, v in shape.to_dict().items() if k != "dropout"}
    if found != wanted:
        raise ValueError(f"--init {path} holds a net of shape {checkpoint['shape']}, not "
                         f"{shape.to_dict()}; give the same --hidden, --layers, --embedding")
    return checkpoint["model"]


def _epoch_data(options: TrainOptions, corpus: data.Corpus, keys: data.Keys | None,
                epoch: int) -> data.Windows:
    """Each epoch's windows depend only on (seed, epoch): a resumed run sees the same ones."""
    return data.training_epoch(corpus.train, options.window,
                               np.random.default_rng((options.seed, epoch)),
                               zero_controls=options.no_controls, encoding=options.encoding,
                               augment=data.Augment() if keys is not None else None,
                               keys=keys)


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
    if options.augment and options.encoding != "soft" and not options.no_controls:
        raise ValueError("augmented controls need the soft encoding; give --encoding soft "
                         "or --no-augment")
    keys = (data.Keys.of(corpus.train) if options.augment and not options.no_controls
            else None)
    if keys is not None:
        log.info("key profile of the training music (C..B): %s; %.1f%% of note-ons in "
                 "their piece's major scale", np.round(keys.profile, 3).tolist(),
                 100 * keys.in_scale)
    valid = data.windows(data.stream(corpus.valid), options.window,
                         zero_controls=options.no_controls, encoding=options.encoding)
    valid_held = None
    if keys is not None:
        laid = data.laid_out(corpus.valid)
        rng = np.random.default_rng((options.seed, VALID_STREAM))
        valid_held = data.windows(laid.tokens, options.window, controls=data.training_controls(
            laid, data.Keys.of(corpus.valid).roots, keys.profile, rng, data.Augment()))

    net = CharRNN(options.shape)
    if options.init is not None and not options.resume:
        net.load_state_dict(initial_weights(options.init, options.shape))
        log.info("starting from the weights of %s", options.init)
    net = net.to(device)
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
    # The next epoch's windows are made in a thread while this one trains (numpy lets go
    # of the GIL for most of it; on a GPU the loop mostly waits for kernels).
    prefetch = ThreadPoolExecutor(1)
    upcoming = prefetch.submit(_epoch_data, options, corpus, keys, state["epoch"])
    while state["epoch"] < options.epochs and state["elapsed_s"] < budget_s:
        epoch = state["epoch"]
        epoch_data = upcoming.result()
        if epoch + 1 < options.epochs:
            upcoming = prefetch.submit(_epoch_data, options, corpus, keys, epoch + 1)
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
        held_nll = None if valid_held is None else evaluate_nll(net, valid_held, device)
        state["elapsed_s"] = time.monotonic() - started
        state["history"].append({"epoch": epoch + 1, "batches": state["batch"],
                                 "train_loss": running, "valid_nll": valid_nll,
                                 "valid_nll_augmented": held_nll,
                                 "minutes": round(state["elapsed_s"] / 60, 2), "lr": lr})
        log.info("epoch %d: valid NLL %.4f nats/event (augmented controls %s; train loss "
                 "%.4f) at %.1f min", epoch + 1, valid_nll,
                 "-" if held_nll is None else f"{held_nll:.4f}", running or math.nan,
                 state["elapsed_s"] / 60)
        if valid_nll < state["best_valid"]:
            state["best_valid"] = valid_nll
            save("best.pt")
        if finished_epoch:
            state["epoch"] += 1
            state["batch"] = 0
        save("last.pt")
        last_save = time.monotonic()
    upcoming.cancel()
    prefetch.shutdown(wait=True)
    (out / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")
    log.info("done: best valid NLL %.4f after %.1f min; %s", state["best_valid"],
             state["elapsed_s"] / 60, out / "best.pt")
    return out / "best.pt"
