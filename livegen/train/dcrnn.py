"""The DCRNN training loop: WGAN-GP on two-bar piano-roll segments, a plain loop with a
progress bar, checkpoints, resume, a seed and a time budget.

One generator update follows `critic_steps` critic updates. The original's bugs are fixed
(GENERATORS.md section 2):
- every generator update draws fresh noise z ~ U[-1, 1] (the original fed one fixed batch
  of 32 codes, so the generator learned 32 points of z);
- the gradient penalty draws one interpolation weight per sample, and the condition is not
  interpolated (it is the same for the real and the fake segment);
- the critic sees fakes as it sees the data, binary: with `binary = "straight_through"`
  the generator's planes are thresholded at 0 in the forward pass and the gradient passes
  through the threshold unchanged (the original compared binary real rolls with continuous
  tanh fakes, which a critic tells apart by their values alone).
A share `no_key` of each batch is trained with the uniform scale (1/12 each) on both sides,
so "no key" is a condition the model knows: it then plays what the data plays.

One addition to the original: `scale_weight` adds to the generator's loss the number of
keys per step that sound outside the scale condition (frames as (x + 1) / 2). A segment's
scale is the set of pitch classes it sounds, so the data never does this and the term is 0
on every real segment: it does not pull the generator away from the data, it teaches the
one hard rule of the condition sooner than the critic alone does on a CPU budget.

Three more terms, each off by default and each measured in README (The DCRNN):
- `feature_weight`: FeatureMatch, the distance between the generated segments' features
  (evaluate.FEATURES, made differentiable by torch_segment_features) and the training
  data's, one feature at a time. The critic's max-pooled convolutions and its
  self-similarity branch see a pattern much the same wherever it lies in pitch and time,
  so on a CPU budget it left the register (mean pitch 57.6 against the data's 62.9) and
  the share of onsets on a beat (0.46 against 0.73) where they fell;
- `autoencode`: an encoder (nets.DCRNNEncoder) gives each real segment of the generator's
  batch a code, the generator rebuilds the segment from it (cross-entropy per cell) and
  the codes are held to the prior U[-1, 1] by an MMD (a Wasserstein autoencoder's terms);
- `ema`: what is validated, kept and exported is a moving average of the weights.

There is no validation loss for a GAN. Every `validate_minutes`, the generator makes
VALID_SEGMENTS segments under the validation pieces' scales, binarised at 0, and `gap`
scores how far their figures lie from the validation segments' own (evaluate.py's roll
figures); best.pt keeps the weights with the smallest gap, last.pt all that resuming needs.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livegen import evaluate
from livegen.errors import LivegenError
from livegen.music import roll as rolls
from livegen.train import roll_data
from livegen.train.charrnn import resolve_device, seed_everything
from livegen.train.nets import DCRNNCritic, DCRNNEncoder, DCRNNGenerator, DCRNNShape

log = logging.getLogger(__name__)

SEGMENT_STEPS = 32  # two 4/4 bars: the length the critic judges
VALID_SEGMENTS = 256
FEATURE_BANK = 4096  # training segments whose feature quantiles the generator is pulled to
BINARY_VIEWS = ("straight_through", "none")
UNIFORM_SCALE = np.full(12, 1 / 12, dtype=np.float32)


@dataclass(slots=True)
class DCRNNOptions:
    """Everything a run depends on; saved in its checkpoints."""

    out: Path = Path("out/dcrnn")
    device: str = "auto"
    minutes: float | None = 20.0
    steps: int = 20000  # generator updates
    batch: int = 32
    critic_steps: int = 5
    lr: float = 2e-4
    gp_weight: float = 10.0
    binary: str = "straight_through"
    no_key: float = 0.1
    scale_weight: float = 1.0
    feature_weight: float = 0.0
    feature_slope: float | None = None  # torch_segment_features' slope
    autoencode: float = 0.0  # weight of the autoencoding term (0: the critic alone)
    code_weight: float = 1.0  # of the codes' distance from U[-1, 1] within that term
    ema: float = 0.0  # the played weights' decay per generator update (0: the last weights)
    noise_size: int = 32
    high_size: int = 128
    frame_size: int = 128
    critic_filters: tuple[int, ...] = (32, 64, 128, 128)
    critic_kernel: int = 5
    scale_gate: bool = True
    seed: int = 1
    workers: int | None = None
    validate_minutes: float = 2.0
    checkpoint_minutes: float = 5.0
    resume: bool = False
    init: Path | None = None  # start from this checkpoint's weights (not its optimizers)
    command: str = ""
    shape: DCRNNShape = field(init=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.critic_filters = tuple(self.critic_filters)
        if self.binary not in BINARY_VIEWS:
            raise ValueError(f"binary {self.binary!r}: use one of {', '.join(BINARY_VIEWS)}")
        self.shape = DCRNNShape(noise_size=self.noise_size, high_size=self.high_size,
                                frame_size=self.frame_size,
                                critic_filters=self.critic_filters,
                                critic_kernel=self.critic_kernel,
                                scale_gate=self.scale_gate)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["out"] = str(self.out)
        values["init"] = str(self.init) if self.init else None
        values["critic_filters"] = list(self.critic_filters)
        values["shape"] = self.shape.to_dict()
        return values


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint written by `train` (weights, shape, options, state, ...)."""
    return torch.load(path, map_location=device, weights_only=False)


def generator_from_checkpoint(checkpoint: dict) -> DCRNNGenerator:
    """The trained generator of a checkpoint (its moving average where the run kept one),
    on the CPU, in eval mode."""
    net = DCRNNGenerator(DCRNNShape.from_dict(checkpoint["shape"]))
    net.load_state_dict(checkpoint.get("generator_ema") or checkpoint["generator"])
    return net.eval()


def _load_matching(net: torch.nn.Module, weights: dict[str, torch.Tensor]) -> list[str]:
    """Load the weights that `net` has (a size mismatch is an error); returns the names of
    the parameters it has and `weights` lacks, which keep their initial values."""
    result = net.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"the checkpoint has weights this net lacks: {result.unexpected_keys}")
    return list(result.missing_keys)


def critic_view(fake: torch.Tensor, binary: str) -> torch.Tensor:
    """The fake planes as the critic sees them: thresholded at 0 with the gradient passed
    straight through, or as they are."""
    if binary == "none":
        return fake
    hard = torch.where(fake > 0, 1.0, -1.0)
    return fake + (hard - fake).detach()


def gradient_penalty(critic: DCRNNCritic, real: torch.Tensor, fake: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's penalty (||grad|| - 1)^2 at points between each real and fake segment, one
    interpolation weight per sample."""
    weight = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    between = (weight * real + (1 - weight) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(between, scale).sum(), between, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def out_of_scale(planes: torch.Tensor, scales: torch.Tensor, low: int) -> torch.Tensor:
    """The mean number of keys per step sounding outside the scale (a pitch class of weight
    0), counting a frame value x as (x + 1) / 2 of a key."""
    keys = planes.shape[-1]
    classes = (torch.arange(keys, device=planes.device) + low) % 12
    outside = (scales == 0).to(planes.dtype)[:, classes]  # (B, keys)
    sounding = (planes[:, 0] + 1) / 2  # (B, T, keys)
    return (sounding * outside[:, None]).sum(dim=(1, 2)).mean() / planes.shape[2]


def _straight(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """`hard`'s values with `soft`'s gradient."""
    return hard + (soft - soft.detach())


def torch_segment_features(planes: torch.Tensor, low: int, slope: float | None = None
                           ) -> torch.Tensor:
    """(B, len(evaluate.FEATURES)) the segment features of evaluate.segment_features, of
    (B, 2, T, K) planes as the runtime binarises them (threshold 0), computed so that the
    gradient reaches the planes: every cell is its thresholded value in the forward pass
    and (x + 1) / 2 in the backward one (straight through), or sigmoid(x / slope), whose
    gradient goes to the cells near the threshold, the ones a small change turns. On
    binary planes it equals segment_features of the rolls exactly (a test checks it)."""
    soft = ((lambda x: (x + 1) / 2) if slope is None
            else (lambda x: torch.sigmoid(x / slope)))
    frames = _straight(soft(planes[:, 0]), (planes[:, 0] > 0).to(planes.dtype))
    onsets = _straight(soft(planes[:, 1]), (planes[:, 1] > 0).to(planes.dtype))
    batch, steps, keys = frames.shape
    bars = steps / evaluate.BAR_STEPS
    before = torch.cat([torch.zeros_like(frames[:, :1]), frames[:, :-1]], dim=1)
    # A note starts where a key sounds and is struck, or did not sound the step before.
    starts = frames * (1 - (1 - onsets) * before)
    notes = starts.sum(dim=(1, 2))
    has_notes = (notes.detach() > 0).to(planes.dtype)
    per_note = notes.clamp(min=1)
    pitch = torch.arange(low, low + keys, dtype=planes.dtype, device=planes.device)
    mean_pitch = (starts * pitch).sum(dim=(1, 2)) / per_note
    struck = starts.amax(dim=1)  # (B, K): keys struck at least once
    highest = (struck * pitch).amax(dim=1)
    lowest = 128 - (struck * (128 - pitch)).amax(dim=1)
    # Pitch classes per bar, over the bars that sound (padding the keys to whole octaves).
    padded = torch.nn.functional.pad(frames, (low % 12, (-(low + keys)) % 12))
    in_bars = padded.reshape(batch, int(bars), evaluate.BAR_STEPS, -1, 12)
    classes = in_bars.amax(dim=(2, 3)).sum(dim=2)  # (B, bars)
    sounding_bars = (classes.detach() > 0).to(planes.dtype)
    pitch_classes = (classes * sounding_bars).sum(dim=1) / sounding_bars.sum(dim=1).clamp(min=1)
    counts = frames.sum(dim=2)  # (B, T) keys sounding
    polyphony = _straight(torch.sigmoid(counts - 2.5), (counts > 2).to(planes.dtype)).mean(dim=1)
    return torch.stack([
        notes / bars,
        pitch_classes,
        polyphony,
        mean_pitch,
        (highest - lowest) * has_notes,
        frames.sum(dim=(1, 2)) / per_note,
        starts[:, ::4].sum(dim=(1, 2)) / per_note,
        counts.mean(dim=1)], dim=1)


class FeatureMatch:
    """How far a batch's segment features lie from the training data's, feature by feature:
    the 1-D Wasserstein distance between the batch's sorted values and the data's
    quantiles at the same levels, in units of the data's spread, averaged over the
    features. evaluate.feature_overlap compares these distributions one feature at a time;
    the critic judges the segments as a whole but, on a CPU budget, left the register, the
    on-beat onsets and the number of sounding keys far from the data's (overlap 0.63)."""

    def __init__(self, reference: np.ndarray, batch: int, device: torch.device) -> None:
        reference = np.asarray(reference, dtype=np.float64)
        levels = (np.arange(batch) + 0.5) / batch
        self.quantiles = torch.tensor(np.quantile(reference, levels, axis=0),
                                      dtype=torch.float32, device=device)  # (batch, F)
        spread = reference.std(axis=0)
        self.spread = torch.tensor(np.where(spread > 0, spread, 1.0), dtype=torch.float32,
                                   device=device)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        ordered, _ = features.sort(dim=0)
        return ((ordered - self.quantiles).abs() / self.spread).mean()


def code_distance(codes: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """The maximum mean discrepancy between two sets of codes (B, n) with inverse
    multiquadratic kernels at seven widths about the U[-1, 1] prior's own (2 n / 3), as
    the Wasserstein autoencoder (Tolstikhin et al. 2018) compares its codes with the
    prior: 0 when the encoder's codes are spread as the noise a performer sends."""
    count, size = codes.shape
    base = 2 * size / 3
    off_diagonal = 1 - torch.eye(count, device=codes.device)
    total = codes.new_zeros(())
    for width in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0):
        c = base * width

        def kernel(a: torch.Tensor, b: torch.Tensor, c: float = c) -> torch.Tensor:
            return c / (c + torch.cdist(a, b) ** 2)

        total = (total + (kernel(codes, codes) * off_diagonal).sum() / (count * (count - 1))
                 + (kernel(prior, prior) * off_diagonal).sum() / (count * (count - 1))
                 - 2 * kernel(codes, prior).mean())
    return total


def rebuilt_loss(rebuilt: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The binary cross-entropy of real planes (+-1) under generated ones read as the
    probability (x + 1) / 2 that a cell is on, averaged over cells."""
    probability = ((rebuilt + 1) / 2).clamp(1e-5, 1 - 1e-5)
    return torch.nn.functional.binary_cross_entropy(probability, (real + 1) / 2)


def noise(batch: int, size: int, device: torch.device,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """z ~ U[-1, 1]: the range the performer's noise controls move in."""
    return torch.rand(batch, size, device=device, generator=generator) * 2 - 1


def drop_scales(scales: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The scales with a random `share` of rows replaced by the uniform "no key" scale."""
    scales = scales.copy()
    scales[rng.random(len(scales)) < share] = UNIFORM_SCALE
    return scales


@torch.no_grad()
def generate_planes(net: DCRNNGenerator, scales: np.ndarray, steps: int, seed: int,
                    device: torch.device | str = "cpu") -> np.ndarray:
    """(N, 2, steps, keys) planes for the scales, with z drawn from `seed`."""
    g = torch.Generator().manual_seed(seed)
    z = noise(len(scales), net.shape.noise_size, torch.device("cpu"), g).to(device)
    was_training = net.training
    net.eval()
    planes = net(z, torch.from_numpy(scales).to(device), steps).cpu().numpy()
    net.train(was_training)
    return planes


def planes_to_rolls(planes: np.ndarray, low: int, **binarise: Any) -> np.ndarray:
    """(N, T, 128) rolls of (N, 2, T, keys) planes (roll.binarise)."""
    return np.stack([rolls.binarise(p, low, **binarise) for p in planes])


def gap(generated: dict[str, Any], reference: dict[str, Any], overlap: float) -> float:
    """How far generated figures lie from the reference's: the mean relative distance of
    pitch classes per bar, polyphony and notes per bar, plus the absolute distance of the
    empty-bar rate and the one-step share, plus what is missing from full feature overlap
    and from a full in-scale ratio. 0 is the data itself."""
    relative = [abs(generated[k] - reference[k]) / max(reference[k], 0.05)
                for k in ("pitch_classes_per_bar", "polyphony_rate", "notes_per_bar")]
    in_scale = generated.get("in_scale_ratio", 1.0)
    return float(np.mean(relative)
                 + abs(generated["empty_bar_rate"] - reference["empty_bar_rate"])
                 + abs(generated["one_step_share"] - reference["one_step_share"])
                 + (1 - overlap) + (1 - (in_scale if math.isfinite(in_scale) else 0.0)))


class Validator:
    """Scores a generator against the validation segments (see the module docstring)."""

    def __init__(self, pieces: roll_data.SegmentSource, seed: int) -> None:
        rng = np.random.default_rng((seed, 7))
        self.segments = pieces.draw(VALID_SEGMENTS, rng, transpose=0)
        self.low = pieces.low
        self.reference = evaluate.roll_figures(self.segments.rolls, self.segments.scales)
        self.reference_features = evaluate.segment_features(self.segments.rolls)
        self.seed = seed

    def score(self, net: DCRNNGenerator, device: torch.device) -> dict[str, Any]:
        planes = generate_planes(net, self.segments.scales, SEGMENT_STEPS, self.seed, device)
        generated = planes_to_rolls(planes, self.low, method="threshold")
        figures = evaluate.roll_figures(generated, self.segments.scales)
        overlap = evaluate.feature_overlap(evaluate.segment_features(generated),
                                           self.reference_features)["mean"]
        figures["feature_overlap"] = overlap
        figures["gap"] = round(gap(figures, self.reference, overlap), 4)
        return figures


def train(options: DCRNNOptions) -> Path:
    """Train per `options`; returns the path of the best checkpoint."""
    from tqdm import tqdm

    command_started = time.monotonic()
    device = resolve_device(options.device)
    seed_everything(options.seed)
    shape = options.shape
    high = shape.low + shape.keys
    corpus = roll_data.load_pieces(options.workers)
    summary = corpus.summary()
    train_source = roll_data.SegmentSource(corpus.train, SEGMENT_STEPS, shape.low, high)
    valid_source = roll_data.SegmentSource(corpus.valid, SEGMENT_STEPS, shape.low, high)
    log.info("training on %d segments of %d pieces, validating on %d segments",
             train_source.segment_count, len(corpus.train), valid_source.segment_count)
    validator = Validator(valid_source, options.seed)
    features = None
    if options.feature_weight:
        bank = train_source.draw(FEATURE_BANK, np.random.default_rng((options.seed, 11)))
        bank_planes = torch.from_numpy(rolls.roll_planes(bank.rolls, shape.low, high))
        features = FeatureMatch(torch_segment_features(bank_planes, shape.low).numpy(),
                                options.batch, device)
    log.info("validation data: %s", validator.reference)

    generator = DCRNNGenerator(shape).to(device)
    critic = DCRNNCritic(shape, SEGMENT_STEPS).to(device)
    betas = (0.5, 0.9)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=options.lr, betas=betas)
    c_optimizer = torch.optim.Adam(critic.parameters(), lr=options.lr, betas=betas)
    log.info("generator %.2fM, critic %.2fM parameters on %s",
             generator.parameter_count() / 1e6, critic.parameter_count() / 1e6, device)
    # With `ema`, what is validated, kept and played is a moving average of the weights
    # (Yazici et al. 2019): the GAN's generator swings between checkpoints (polyphony 0.25
    # to 0.81 two minutes apart), its average does not.
    averaged = copy.deepcopy(generator).requires_grad_(False)
    # With `autoencode`, the generator also learns to rebuild real segments from the codes
    # an encoder gives them, the codes held to the prior's spread (module docstring).
    encoder = DCRNNEncoder(shape).to(device) if options.autoencode else None
    e_optimizer = (torch.optim.Adam(encoder.parameters(), lr=options.lr, betas=betas)
                   if encoder is not None else None)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "best_gap": math.inf,
                             "history": []}
    if options.resume and (out / "last.pt").is_file():
        checkpoint = load_checkpoint(out / "last.pt", device)
        if checkpoint["shape"] != shape.to_dict():
            raise ValueError(f"{out / 'last.pt'} holds a net of shape {checkpoint['shape']}, "
                             f"not {shape.to_dict()}; resume with the same sizes, or drop "
                             "--resume")
        generator.load_state_dict(checkpoint["generator"])
        averaged.load_state_dict(checkpoint.get("generator_ema") or checkpoint["generator"])
        if encoder is not None and "encoder" in checkpoint:
            encoder.load_state_dict(checkpoint["encoder"])
            e_optimizer.load_state_dict(checkpoint["e_optimizer"])
        critic.load_state_dict(checkpoint["critic"])
        g_optimizer.load_state_dict(checkpoint["g_optimizer"])
        c_optimizer.load_state_dict(checkpoint["c_optimizer"])
        state = checkpoint["state"]
        log.info("resuming %s at step %d (%.1f min trained)", out / "last.pt", state["step"],
                 state["elapsed_s"] / 60)
    elif options.init is not None:
        source = load_checkpoint(options.init, device)
        new = (_load_matching(generator, source["generator"])
               + _load_matching(critic, source["critic"]))
        _load_matching(averaged, source.get("generator_ema") or source["generator"])
        if encoder is not None and "encoder" in source:
            encoder.load_state_dict(source["encoder"])
        source_state = source["state"]
        state["initialised_from"] = {
            "path": str(options.init), "steps": source_state["step"],
            "minutes": round(source_state["elapsed_s"] / 60, 1),
            "commands": source_state.get("commands")
            or [{"command": source["options"].get("command", ""), "from_step": 0}],
            "new_parameters": new}
        log.info("starting from the weights of %s (%d steps); new: %s", options.init,
                 source_state["step"], ", ".join(new) or "nothing")
    # Every command that trained these weights, resumed runs included (their options may
    # differ: the manifest shows how the model was made).
    state.setdefault("commands", []).append(
        {"command": options.command, "from_step": state["step"]})

    def save(name: str) -> None:
        checkpoint = {"generator": generator.state_dict(), "critic": critic.state_dict(),
                      **({"generator_ema": averaged.state_dict()} if options.ema else {}),
                      **({"encoder": encoder.state_dict(),
                          "e_optimizer": e_optimizer.state_dict()} if encoder else {}),
                      "g_optimizer": g_optimizer.state_dict(),
                      "c_optimizer": c_optimizer.state_dict(),
                      "shape": shape.to_dict(), "options": options.to_dict(), "state": state,
                      "corpus": summary, "segment_steps": SEGMENT_STEPS,
                      "validation_data": validator.reference, "device": str(device),
                      "torch": torch.__version__}
        partial = out / f"{name}.partial"
        torch.save(checkpoint, partial)
        partial.replace(out / name)

    def validate() -> None:
        figures = validator.score(averaged if options.ema else generator, device)
        figures.update(step=state["step"], minutes=round(state["elapsed_s"] / 60, 2),
                       wasserstein=running.get("wasserstein"),
                       features=running.get("features"), rebuilt=running.get("rebuilt"),
                       codes=running.get("codes"))
        state["history"].append(figures)
        log.info("step %d: gap %.3f (pcs/bar %.2f, polyphony %.2f, notes/bar %.1f, empty "
                 "%.2f, 1-step %.2f, in scale %.3f, overlap %.2f)", state["step"],
                 figures["gap"], figures["pitch_classes_per_bar"], figures["polyphony_rate"],
                 figures["notes_per_bar"], figures["empty_bar_rate"],
                 figures["one_step_share"], figures["in_scale_ratio"],
                 figures["feature_overlap"])
        if figures["gap"] < state["best_gap"]:
            state["best_gap"] = figures["gap"]
            save("best.pt")

    budget_s = options.minutes * 60 if options.minutes else math.inf
    started = command_started - state["elapsed_s"]
    last_save = last_validation = time.monotonic()
    running: dict[str, float] = {}
    bar = tqdm(total=options.steps, initial=state["step"], desc="dcrnn", unit="step",
               dynamic_ncols=True)
    while state["step"] < options.steps and state["elapsed_s"] < budget_s:
        # The data of a step depends only on (seed, step): a resumed run sees the same.
        rng = np.random.default_rng((options.seed, state["step"]))
        for _ in range(options.critic_steps):
            batch = train_source.draw(options.batch, rng)
            scales_np = drop_scales(batch.scales, options.no_key, rng)
            real = torch.from_numpy(rolls.roll_planes(batch.rolls, shape.low, high)).to(device)
            scales = torch.from_numpy(scales_np).to(device)
            with torch.no_grad():
                fake = generator(noise(options.batch, shape.noise_size, device), scales,
                                 SEGMENT_STEPS)
            fake = critic_view(fake, options.binary)
            wasserstein = critic(real, scales).mean() - critic(fake, scales).mean()
            penalty = gradient_penalty(critic, real, fake, scales)
            c_optimizer.zero_grad(set_to_none=True)
            (options.gp_weight * penalty - wasserstein).backward()
            c_optimizer.step()
        # Fresh noise, and scales of a fresh draw, for every generator update.
        drawn = train_source.draw(options.batch, rng)
        scales = torch.from_numpy(drop_scales(drawn.scales, options.no_key, rng)).to(device)
        fake = generator(noise(options.batch, shape.noise_size, device), scales,
                         SEGMENT_STEPS)
        g_loss = -critic(critic_view(fake, options.binary), scales).mean()
        if options.scale_weight:
            g_loss = g_loss + options.scale_weight * out_of_scale(fake, scales, shape.low)
        if features is not None:
            matched = features(torch_segment_features(fake, shape.low, options.feature_slope))
            g_loss = g_loss + options.feature_weight * matched
        if encoder is not None:
            real = torch.from_numpy(rolls.roll_planes(drawn.rolls, shape.low, high)).to(device)
            codes = encoder(real, scales)
            rebuilt = rebuilt_loss(generator(codes, scales, SEGMENT_STEPS), real)
            spread = code_distance(codes, noise(options.batch, shape.noise_size, device))
            g_loss = g_loss + options.autoencode * (rebuilt + options.code_weight * spread)
            e_optimizer.zero_grad(set_to_none=True)
        g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        g_optimizer.step()
        if e_optimizer is not None:
            e_optimizer.step()
        if options.ema:
            with torch.no_grad():
                for mean, weight in zip(averaged.parameters(), generator.parameters(),
                                        strict=True):
                    mean.lerp_(weight, 1 - options.ema)
        state["step"] += 1
        bar.update(1)
        if state["step"] % 10 == 0 or not running:
            running = {"wasserstein": wasserstein.item(), "penalty": penalty.item()}
            if features is not None:
                running["features"] = matched.item()
            if encoder is not None:
                running.update(rebuilt=rebuilt.item(), codes=spread.item())
            bar.set_postfix({k[:4]: f"{v:.3f}" for k, v in running.items()})
        state["elapsed_s"] = time.monotonic() - started
        if time.monotonic() - last_validation > options.validate_minutes * 60:
            validate()
            last_validation = time.monotonic()
        if time.monotonic() - last_save > options.checkpoint_minutes * 60:
            save("last.pt")
            last_save = time.monotonic()
    bar.close()
    validate()
    save("last.pt")
    (out / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")
    log.info("done: %d steps in %.1f min; best gap %.3f; %s", state["step"],
             state["elapsed_s"] / 60, state["best_gap"], out / "best.pt")
    return out / "best.pt"


def train_command(argv: list[str]) -> int:
    """`livegen train dcrnn [options]`."""
    defaults = DCRNNOptions()
    parser = argparse.ArgumentParser(
        prog="livegen train dcrnn",
        description="Train the DCRNN (a WGAN-GP piano-roll generator with a noise code and "
                    "a scale condition) on polyphonic pieces of the music21 corpus. Stops "
                    "after --steps generator updates or --minutes, whichever comes first; "
                    "the checkpoint closest to the validation data is OUT/best.pt.")
    parser.add_argument("--out", type=Path, default=defaults.out, help="checkpoint folder")
    parser.add_argument("--device", default=defaults.device,
                        help="auto (cuda if torch sees a GPU, else cpu), cpu, cuda, cuda:1")
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help="generator updates")
    parser.add_argument("--minutes", type=float, default=defaults.minutes,
                        help="wall-clock budget of the whole command, a first corpus parse "
                             "included (default %(default)s; 0 = none)")
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--critic-steps", type=int, default=defaults.critic_steps,
                        help="critic updates per generator update")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="Adam step size (both)")
    parser.add_argument("--gp-weight", type=float, default=defaults.gp_weight)
    parser.add_argument("--binary", choices=BINARY_VIEWS, default=defaults.binary,
                        help="how the critic sees fakes")
    parser.add_argument("--scale-weight", type=float, default=defaults.scale_weight,
                        help="weight of the keys sounding outside the scale condition in the "
                             "generator's loss (0 = the critic alone)")
    parser.add_argument("--feature-weight", type=float, default=defaults.feature_weight,
                        help="weight of the distance between the generated segments' "
                             "features and the training data's (FeatureMatch) in the "
                             "generator's loss (0 = the critic alone)")
    parser.add_argument("--feature-slope", type=float, default=defaults.feature_slope,
                        help="pass the features' gradient through sigmoid(x / SLOPE), to the "
                             "cells near the threshold (default: (x + 1) / 2, to every cell)")
    parser.add_argument("--autoencode", type=float, default=defaults.autoencode,
                        help="weight of the autoencoding term: an encoder gives real segments "
                             "codes, the generator rebuilds them (cross-entropy), the codes "
                             "are held to U[-1, 1] (MMD) (0 = none)")
    parser.add_argument("--code-weight", type=float, default=defaults.code_weight,
                        help="weight of the codes' MMD from U[-1, 1] in that term")
    parser.add_argument("--ema", type=float, default=defaults.ema,
                        help="keep, validate and ship a moving average of the generator's "
                             "weights with this decay per update, e.g. 0.995 (0 = none)")
    parser.add_argument("--no-key", type=float, default=defaults.no_key,
                        help="share of rows trained with the uniform 'no key' scale")
    parser.add_argument("--noise-size", type=int, default=defaults.noise_size)
    parser.add_argument("--high-size", type=int, default=defaults.high_size, help="RNNa width")
    parser.add_argument("--frame-size", type=int, default=defaults.frame_size,
                        help="RNNb width")
    parser.add_argument("--critic-filters", default=",".join(map(str, defaults.critic_filters)),
                        help="filters of the critic's four conv layers (default %(default)s)")
    parser.add_argument("--critic-kernel", type=int, default=defaults.critic_kernel,
                        help="the critic's conv kernel size (odd)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--validate-minutes", type=float, default=defaults.validate_minutes)
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.pt")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from the weights of this checkpoint (a net of the same "
                             "sizes, which may lack the scale gate), with fresh optimizers")
    parser.add_argument("--no-scale-gate", action="store_true",
                        help="no learned bias against keys outside the scale condition")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for the first corpus parse (default: all cores)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    options = parser.parse_args(argv)
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise LivegenError(f"--device {options.device}: torch {torch.__version__} sees no GPU "
                           "here; use --device cpu (or auto)")
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        filters = tuple(int(f) for f in options.critic_filters.split(","))
        train_options = DCRNNOptions(
            out=options.out, device=options.device, minutes=options.minutes or None,
            steps=options.steps, batch=options.batch, critic_steps=options.critic_steps,
            lr=options.lr, gp_weight=options.gp_weight, binary=options.binary,
            no_key=options.no_key, scale_weight=options.scale_weight,
            feature_weight=options.feature_weight, feature_slope=options.feature_slope,
            ema=options.ema,
            autoencode=options.autoencode, code_weight=options.code_weight,
            noise_size=options.noise_size,
            high_size=options.high_size, frame_size=options.frame_size,
            critic_filters=filters, critic_kernel=options.critic_kernel, seed=options.seed,
            workers=options.workers,
            validate_minutes=options.validate_minutes, resume=options.resume,
            init=options.init, scale_gate=not options.no_scale_gate,
            command=shlex.join(["livegen", "train", "dcrnn", *argv]))
        best = train(train_options)
    except ValueError as exc:
        raise LivegenError(str(exc)) from None
    print(f"best checkpoint: {best}")
    return 0
