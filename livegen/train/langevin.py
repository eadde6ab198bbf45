"""The Langevin score network's training loop: denoising score matching on bar-aligned crops
of the Bach chorales, one noise level per sample, Adam with warm-up and a cosine decay, an
exponential moving average of the weights (what is validated, saved and shipped),
checkpoints, resume, a seed, a progress bar and a wall-clock budget.

Most crops keep some cells clean, as the sampler gives them: the bar of context (compose),
the context and the soprano throughout (harmonise), the context's soprano (continue), or
a random share of cells (any inpainting); the loss is over the other cells. So the net
learns what to put beside music it can see, which is every live use; the rest of the
crops keep no cell clean (music from nothing).

Noise levels are continuous, so that the sampler may use any schedule inside the trained
range [sigma_min, sigma_max]: log-uniform over it (every level alike), or log-normal around
sigma_centre (EDM's choice: most steps where the pitches are decided, about 0.3 to 2 for
one-hot chorales, fewer where the net only copies its input or sees only noise), clipped
to the range. Each batch holds crops of one length,
cycling through `lengths` (the segment lengths the model is exported for: a bar of context
and one or two bars to make). Validation scores fixed crops of the validation chorales at
fixed noise levels: the loss, and how often the denoised estimate's per-voice argmax is the
true token (comparable between nets that are parametrised differently).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from livegen.music import roll
from livegen.train import chorale_data
from livegen.train.charrnn import resolve_device, seed_everything
from livegen.train.nets import ScoreNet, ScoreShape

log = logging.getLogger(__name__)

VALID_SIGMAS = (0.1, 0.3, 0.6, 1.0, 2.0, 4.0, 10.0)
VALID_CROPS = 128  # per length
HARMONISE_SIGMAS = (1.0, 4.0)
_OFFSETS = torch.tensor([s.start for s in roll.VOICE_SLICES])


@dataclass(slots=True)
class TrainOptions:
    """Everything a run depends on; saved in its checkpoints."""

    out: Path = Path("out/langevin")
    device: str = "auto"
    minutes: float | None = 20.0
    steps: int = 200_000
    width: int = 128
    layers: int = 3
    heads: int = 4
    feedforward: int = 384
    dropout: float = 0.1
    sigma_input: bool = True
    sigma_min: float = 0.02
    sigma_max: float = 30.0
    sigma_distribution: str = "lognormal"
    sigma_centre: float = 0.7
    sigma_spread: float = 1.2  # standard deviation of ln sigma
    given_share: float = 0.7  # crops with clean given cells
    context_steps: int = 16  # the bar of context a live segment continues
    lengths: tuple[int, ...] = (32, 48)
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 200
    ema: float = 0.999
    clip: float = 1.0
    seed: int = 1
    valid_minutes: float = 5.0
    resume: bool = False
    command: str = ""
    shape: ScoreShape = field(init=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.lengths = tuple(int(n) for n in self.lengths)
        self.shape = ScoreShape(width=self.width, layers=self.layers, heads=self.heads,
                                feedforward=self.feedforward, dropout=self.dropout,
                                max_steps=max(64, *self.lengths),
                                sigma_input=self.sigma_input)
        if self.width % self.heads:
            raise ValueError(f"--width {self.width} must be a multiple of --heads {self.heads}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < --sigma-min ({self.sigma_min}) < --sigma-max "
                             f"({self.sigma_max})")
        if self.sigma_distribution not in ("loguniform", "lognormal"):
            raise ValueError(f"--sigma-distribution {self.sigma_distribution!r}: use "
                             "loguniform or lognormal")

    def to_dict(self) -> dict:
        values = asdict(self)
        values["out"] = str(self.out)
        values["lengths"] = list(self.lengths)
        return values


def onehot(tokens: torch.Tensor) -> torch.Tensor:
    """(..., 4) int64 tokens -> (..., 105) float32 concatenated voice one-hots (the batched
    torch twin of music/roll.tokens_to_onehot)."""
    index = tokens + _OFFSETS.to(tokens.device)
    out = torch.zeros((*tokens.shape[:-1], roll.CHORALE_DIM), device=tokens.device)
    return out.scatter_(-1, index, 1.0)


GIVEN_PATTERNS = ("context", "harmonise", "melody_context", "random")


def given_cells(count: int, steps: int, options: TrainOptions, rng: np.random.Generator
                ) -> np.ndarray:
    """(count, steps, 4) bool: the cells each crop keeps clean, drawn per crop: none (with
    probability 1 - given_share), else one of GIVEN_PATTERNS alike."""
    given = np.zeros((count, steps, roll.VOICES), dtype=bool)
    context = min(options.context_steps, steps - 1)
    kinds = rng.integers(len(GIVEN_PATTERNS), size=count)
    chosen = rng.random(count) < options.given_share
    for row in np.flatnonzero(chosen):
        kind = GIVEN_PATTERNS[kinds[row]]
        if kind in ("context", "harmonise"):
            given[row, :context] = True
        if kind == "harmonise":
            given[row, :, 0] = True
        if kind == "melody_context":
            given[row, :context, 0] = True
        if kind == "random":
            given[row] = rng.random((steps, roll.VOICES)) < rng.random()
    return given


def expand(cells: torch.Tensor) -> torch.Tensor:
    """(..., 4) per-cell flags -> (..., 105): each voice's flag over its whole block."""
    sizes = torch.tensor(roll.VOICE_SIZES, device=cells.device)
    return torch.repeat_interleave(cells, sizes, dim=-1)


def sample_sigmas(count: int, options: TrainOptions, generator: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    """`count` noise levels drawn as the options say, within [sigma_min, sigma_max]."""
    low, high = math.log(options.sigma_min), math.log(options.sigma_max)
    if options.sigma_distribution == "loguniform":
        u = torch.rand(count, generator=generator)
        return torch.exp(low + u * (high - low)).to(device)
    z = torch.randn(count, generator=generator)
    logs = math.log(options.sigma_centre) + options.sigma_spread * z
    return torch.exp(logs.clamp(low, high)).to(device)


def valid_set(chorales: chorale_data.Chorales, lengths: tuple[int, ...], seed: int
              ) -> dict[int, torch.Tensor]:
    """Fixed validation crops (tokens) per length."""
    rng = np.random.default_rng((seed, 99))
    return {n: torch.from_numpy(chorale_data.random_crops(chorales.valid, VALID_CROPS, n, rng))
            for n in lengths}


@torch.no_grad()
def validate(net: ScoreNet, crops: dict[int, torch.Tensor], device: torch.device
             ) -> dict[str, float]:
    """Loss and denoised-argmax token accuracy per validation σ, averaged over the lengths
    (fixed noise, so two calls on the same net agree)."""
    net.eval()
    generator = torch.Generator().manual_seed(0)
    result: dict[str, float] = {}
    for sigma in VALID_SIGMAS:
        losses, correct, total, pitch_correct, pitch_total = [], 0, 0, 0, 0
        for tokens in crops.values():
            clean = onehot(tokens.to(device))
            noise = torch.randn(clean.shape, generator=generator).to(device)
            sigmas = torch.full((len(clean),), sigma, device=device)
            # One forward for both figures (validation time is training time lost).
            noisy = clean + sigma * noise
            raw = net.raw(noisy, sigmas)
            losses.append(net.loss_of(raw, clean, sigmas, noise).item())
            _, c_skip, c_out = net.preconditioning(sigmas)
            denoised = c_skip * noisy + c_out * raw
            for voice, block in enumerate(roll.VOICE_SLICES):
                guess = denoised[..., block].argmax(dim=-1).cpu()
                truth = tokens[..., voice]
                correct += int((guess == truth).sum())
                total += guess.numel()
                # Most cells are HOLDs; the pitches are what the music is made of.
                struck = truth >= roll.FIRST_PITCH_TOKEN
                pitch_correct += int((guess[struck] == truth[struck]).sum())
                pitch_total += int(struck.sum())
        result[f"loss@{sigma:g}"] = float(np.mean(losses))
        result[f"accuracy@{sigma:g}"] = correct / total
        result[f"pitch_accuracy@{sigma:g}"] = pitch_correct / max(pitch_total, 1)
        if sigma in HARMONISE_SIGMAS:
            result[f"harmonise_accuracy@{sigma:g}"] = harmonise_accuracy(net, crops, sigma,
                                                                         device)
    for name in ("loss", "accuracy", "pitch_accuracy"):
        result[name] = float(np.mean([result[f"{name}@{s:g}"] for s in VALID_SIGMAS]))
    net.train()
    return result


@torch.no_grad()
def harmonise_accuracy(net: ScoreNet, crops: dict[int, torch.Tensor], sigma: float,
                       device: torch.device) -> float:
    """One denoise of alto, tenor and bass at σ, with the bar of context and the soprano
    given clean: how often the argmax has the true pitch (over cells that strike one)."""
    generator = torch.Generator().manual_seed(1)
    correct = total = 0
    for tokens in crops.values():
        tokens = tokens.to(device)
        given = torch.zeros(tokens.shape, dtype=torch.bool, device=device)
        given[:, :16] = True
        given[:, :, 0] = True
        clean = onehot(tokens)
        noise = torch.randn(clean.shape, generator=generator).to(device)
        sigmas = torch.full((len(clean),), sigma, device=device)
        denoised = net(ScoreNet.noisy(clean, sigmas, noise, expand(given)), sigmas)
        for voice in (1, 2, 3):
            block = roll.VOICE_SLICES[voice]
            guess = denoised[..., block].argmax(dim=-1)
            truth = tokens[..., voice]
            struck = (truth >= roll.FIRST_PITCH_TOKEN) & ~given[..., voice]
            correct += int((guess[struck] == truth[struck]).sum())
            total += int(struck.sum())
    return correct / max(total, 1)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint written by `train`."""
    return torch.load(path, map_location=device, weights_only=False)


def net_from_checkpoint(checkpoint: dict) -> ScoreNet:
    """The shipped (moving-average) weights of a checkpoint, on the CPU, in eval mode."""
    net = ScoreNet(ScoreShape(**checkpoint["shape"]))
    net.load_state_dict(checkpoint["ema"])
    return net.eval()


def train(options: TrainOptions) -> Path:
    """Train per `options`; returns the path of the best checkpoint (by validation loss)."""
    from tqdm import tqdm

    command_started = time.monotonic()
    device = resolve_device(options.device)
    seed_everything(options.seed)
    if device.type == "cpu":
        log.info("torch uses %d CPU thread(s)", torch.get_num_threads())
    chorales = chorale_data.load_chorales()
    summary = chorales.summary()
    log.info("training on %d chorales (%d transposed copies), validating on %d",
             summary["train"]["chorales"], summary["train"]["transposed_copies"],
             summary["valid"]["chorales"])
    valid = valid_set(chorales, options.lengths, options.seed)
    crops = {n: chorale_data.CropIndex(chorales.train, n) for n in options.lengths}

    net = ScoreNet(options.shape).to(device)
    ema = ScoreNet(options.shape).to(device)
    ema.load_state_dict(net.state_dict())
    ema.eval().requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=options.lr)
    log.info("net %s: %.2fM parameters on %s", options.shape, net.parameter_count() / 1e6,
             device)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    state = {"step": 0, "elapsed_s": 0.0, "best_valid": math.inf, "history": []}
    if options.resume and (out / "last.pt").is_file():
        checkpoint = load_checkpoint(out / "last.pt", device)
        if checkpoint["shape"] != options.shape.to_dict():
            raise ValueError(f"{out / 'last.pt'} holds a net of shape {checkpoint['shape']}, "
                             f"not {options.shape.to_dict()}; resume with the same shape "
                             "options, or drop --resume")
        net.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = checkpoint["state"]
        log.info("resuming %s at step %d (%.1f min trained)", out / "last.pt", state["step"],
                 state["elapsed_s"] / 60)

    def save(name: str) -> None:
        checkpoint = {"model": net.state_dict(), "ema": ema.state_dict(),
                      "optimizer": optimizer.state_dict(), "shape": options.shape.to_dict(),
                      "options": options.to_dict(), "state": state, "data": summary,
                      "device": str(device), "torch": torch.__version__}
        partial = out / f"{name}.partial"
        torch.save(checkpoint, partial)
        partial.replace(out / name)

    def check() -> None:
        figures = validate(ema, valid, device)
        state["elapsed_s"] = time.monotonic() - started
        state["history"].append({"step": state["step"], "minutes":
                                 round(state["elapsed_s"] / 60, 2), **figures})
        log.info("step %d: valid loss %.4f, denoised accuracy %.3f, on pitches %.3f (at "
                 "sigma 0.6: %.3f); harmonising at sigma 1 / 4: %.3f / %.3f; at %.1f min",
                 state["step"], figures["loss"], figures["accuracy"],
                 figures["pitch_accuracy"], figures["pitch_accuracy@0.6"],
                 figures["harmonise_accuracy@1"], figures["harmonise_accuracy@4"],
                 state["elapsed_s"] / 60)
        if figures["loss"] < state["best_valid"]:
            state["best_valid"] = figures["loss"]
            save("best.pt")
        save("last.pt")

    budget_s = options.minutes * 60 if options.minutes else math.inf
    started = command_started - state["elapsed_s"]
    last_check = time.monotonic()
    # Each step's crops and noise depend only on (seed, step): a resumed run sees the same.
    bar = tqdm(total=options.steps, initial=state["step"], unit="step", dynamic_ncols=True)
    running = None
    net.train()
    while state["step"] < options.steps and state["elapsed_s"] < budget_s:
        step = state["step"]
        rng = np.random.default_rng((options.seed, step))
        generator = torch.Generator().manual_seed(options.seed * 1_000_003 + step)
        length = options.lengths[step % len(options.lengths)]
        tokens = crops[length].sample(options.batch, rng)
        clean = onehot(torch.from_numpy(tokens).to(device))
        sigmas = sample_sigmas(options.batch, options, generator, device)
        noise = torch.randn(clean.shape, generator=generator).to(device)
        given = expand(torch.from_numpy(given_cells(options.batch, length, options, rng))
                       .to(device))
        progress = max(step / options.steps, state["elapsed_s"] / budget_s)
        lr = options.lr * min(1.0, (step + 1) / options.warmup) * (
            0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = net.loss(clean, sigmas, noise, given)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), options.clip)
        optimizer.step()
        decay = min(options.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, current in zip(ema.parameters(), net.parameters(), strict=True):
                average.lerp_(current, 1 - decay)
        state["step"] = step + 1
        if step % 20 == 0:
            value = loss.item()  # a device sync: not every step
            running = value if running is None else 0.8 * running + 0.2 * value
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.1e}")
        bar.update(1)
        state["elapsed_s"] = time.monotonic() - started
        if time.monotonic() - last_check > options.valid_minutes * 60:
            check()
            last_check = time.monotonic()
    bar.close()
    check()
    (out / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")
    log.info("done: %d steps, best valid loss %.4f after %.1f min; %s", state["step"],
             state["best_valid"], state["elapsed_s"] / 60, out / "best.pt")
    return out / "best.pt"


def train_command(rest: list[str]) -> int:
    """`livegen train langevin [options]`."""
    import argparse
    import shlex

    from livegen.errors import LivegenError

    defaults = TrainOptions()
    parser = argparse.ArgumentParser(
        prog="livegen train langevin",
        description="Train the Langevin chorale score network on music21's Bach chorales. "
                    "Stops after --steps or --minutes, whichever comes first; the best "
                    "checkpoint by validation loss is OUT/best.pt.")
    parser.add_argument("--out", type=Path, default=defaults.out, help="checkpoint folder")
    parser.add_argument("--device", default=defaults.device,
                        help="auto (cuda if torch sees a GPU, else cpu), cpu, cuda, cuda:1")
    parser.add_argument("--minutes", type=float, default=defaults.minutes,
                        help="wall-clock budget of the whole command (default %(default)s; "
                             "0 = none)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--layers", type=int, default=defaults.layers)
    parser.add_argument("--heads", type=int, default=defaults.heads)
    parser.add_argument("--feedforward", type=int, default=defaults.feedforward)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--no-sigma-input", action="store_true",
                        help="the original's form: the net does not see the noise level and "
                             "predicts -z")
    parser.add_argument("--sigma-min", type=float, default=defaults.sigma_min)
    parser.add_argument("--sigma-max", type=float, default=defaults.sigma_max)
    parser.add_argument("--sigma-distribution", choices=["lognormal", "loguniform"],
                        default=defaults.sigma_distribution,
                        help="how training noise levels are drawn (default %(default)s)")
    parser.add_argument("--sigma-centre", type=float, default=defaults.sigma_centre,
                        help="lognormal: the median noise level")
    parser.add_argument("--sigma-spread", type=float, default=defaults.sigma_spread,
                        help="lognormal: standard deviation of ln sigma")
    parser.add_argument("--lengths", default=",".join(map(str, defaults.lengths)),
                        help="crop lengths in 16ths, cycled per batch (the exported segment "
                             "lengths: context bar + bars to make); default %(default)s")
    parser.add_argument("--given-share", type=float, default=defaults.given_share,
                        help="share of crops that keep some cells clean (context, melody)")
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak Adam step size")
    parser.add_argument("--ema", type=float, default=defaults.ema,
                        help="weight moving-average decay")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--valid-minutes", type=float, default=defaults.valid_minutes,
                        help="validate and checkpoint this often")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.pt")
    options = parser.parse_args(rest)
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise LivegenError(f"--device {options.device}: torch {torch.__version__} sees no GPU "
                           "here; use --device cpu (or auto)")
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        lengths = tuple(int(n) for n in options.lengths.split(","))
        train_options = TrainOptions(
            out=options.out, device=options.device, minutes=options.minutes or None,
            steps=options.steps, width=options.width, layers=options.layers,
            heads=options.heads, feedforward=options.feedforward, dropout=options.dropout,
            sigma_input=not options.no_sigma_input, sigma_min=options.sigma_min,
            sigma_max=options.sigma_max, sigma_distribution=options.sigma_distribution,
            sigma_centre=options.sigma_centre, sigma_spread=options.sigma_spread,
            given_share=options.given_share, lengths=lengths, batch=options.batch,
            lr=options.lr, ema=options.ema, seed=options.seed,
            valid_minutes=options.valid_minutes, resume=options.resume,
            command=shlex.join(["livegen", "train", "langevin", *rest]))
        best = train(train_options)
    except ValueError as exc:
        raise LivegenError(str(exc)) from None
    print(f"best checkpoint: {best}")
    return 0
