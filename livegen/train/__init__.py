"""Training and export: the only package that imports torch (inside the commands, so that
`livegen.train.data` stays importable by evaluation without torch).

    livegen train charrnn [options]     train (out/charrnn/conditional; --no-controls:
                                        out/charrnn/ablation), resumable with --resume
    livegen export charrnn [options]    best checkpoint -> models/charrnn.int8.onnx (fp32
                                        if int8 does not qualify), the manifest and the
                                        data files, after the torch/ONNX parity check
    livegen train langevin [options]    train the chorale score network (out/langevin)
    livegen export langevin [options]   best checkpoint -> models/langevin-tN.onnx (one
                                        graph per segment length) + models/langevin.json
    livegen train dcrnn [options]       train the DCRNN GAN (out/dcrnn), resumable
    livegen export dcrnn [options]      best checkpoint -> models/dcrnn.16.onnx and
                                        dcrnn.32.onnx (+ int8 if it qualifies),
                                        models/dcrnn.json, and the untrained baseline
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from livegen.errors import LivegenError

log = logging.getLogger(__name__)

DEFAULT_ABLATION = Path("out/charrnn/ablation/best.pt")


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise LivegenError("training needs torch: install the train extra "
                           "(`pip install -e '.[train]'`, or scripts/setup)") from None


def train_command(args: argparse.Namespace) -> int:
    """`livegen train charrnn|langevin [options]`."""
    _need_torch()
    import torch

    if args.model == "dcrnn":
        from livegen.train.dcrnn import train_command as train_dcrnn

        return train_dcrnn(args.rest)
    if args.model == "langevin":
        from livegen.train.langevin import train_command as train_langevin

        return train_langevin(args.rest)

    from livegen.train.charrnn import TrainOptions, train

    defaults = TrainOptions()
    parser = argparse.ArgumentParser(
        prog="livegen train charrnn",
        description="Train the conditional Char-RNN on the music21 corpus (Bach chorales, "
                    "Essen, O'Neill, Ryan). Stops after --epochs or --minutes, whichever "
                    "comes first; the best checkpoint by validation NLL is OUT/best.pt.")
    parser.add_argument("--out", type=Path, default=None,
                        help="checkpoint folder (default out/charrnn/conditional, or "
                             "out/charrnn/ablation with --no-controls)")
    parser.add_argument("--device", default=defaults.device,
                        help="auto (cuda if torch sees a GPU, else cpu), cpu, cuda, cuda:1")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--minutes", type=float, default=defaults.minutes,
                        help="wall-clock budget of the whole command: a first corpus parse, "
                             "training and validation (default %(default)s; 0 = none)")
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="LSTM width")
    parser.add_argument("--layers", type=int, default=defaults.layers, help="LSTM layers")
    parser.add_argument("--embedding", type=int, default=defaults.embedding)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--window", type=int, default=defaults.window,
                        help="events per training window")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="windows per batch")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak Adam step size")
    parser.add_argument("--clip", type=float, default=defaults.clip, help="gradient norm clip")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-controls", action="store_true",
                        help="the ablation: the same net trained with all-zero controls")
    parser.add_argument("--encoding", choices=["soft", "onehot"], default=defaults.encoding,
                        help="control encoding (music/features.py): soft positions with "
                             "unasked parts, or Deep Symphony's one-hot bins")
    parser.add_argument("--no-augment", action="store_true",
                        help="train on the music's own controls only (no held spans, key "
                             "profiles or unasked parts)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from these weights: a checkpoint (.pt) or an exported "
                             "fp32 graph (.onnx) of the same shape")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.pt")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for the first corpus parse (default: all cores)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    options = parser.parse_args(args.rest)
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise LivegenError(f"--device {options.device}: torch {torch.__version__} sees no GPU "
                           "here; use --device cpu (or auto)")
    if options.threads:
        torch.set_num_threads(options.threads)
    out = options.out or Path("out/charrnn") / ("ablation" if options.no_controls
                                                else "conditional")
    train_options = TrainOptions(
        out=out, device=options.device, epochs=options.epochs,
        minutes=options.minutes or None, hidden=options.hidden, layers=options.layers,
        embedding=options.embedding, dropout=options.dropout, window=options.window,
        batch=options.batch, lr=options.lr, clip=options.clip, seed=options.seed,
        no_controls=options.no_controls, encoding=options.encoding,
        augment=not options.no_augment, init=options.init,
        workers=options.workers, resume=options.resume,
        command=shlex.join(["livegen", "train", "charrnn", *args.rest]))
    try:
        best = train(train_options)
    except ValueError as exc:
        raise LivegenError(str(exc)) from None
    print(f"best checkpoint: {best}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """`livegen export charrnn|langevin [options]`."""
    _need_torch()
    if args.model == "dcrnn":
        from livegen.train.dcrnn_ship import export_command as export_dcrnn

        return export_dcrnn(args.rest)
    if args.model == "langevin":
        from livegen.train.langevin_ship import export_command as export_langevin

        return export_langevin(args.rest)
    from livegen.train.ship import refresh_data, ship

    parser = argparse.ArgumentParser(
        prog="livegen export charrnn",
        description="Export the best checkpoint to ONNX (staged beside it); checks "
                    "torch/ONNX parity, quantizes to int8 and ships that if it qualifies "
                    "(else fp32), with the data files the runtime and eval read.")
    parser.add_argument("--checkpoint", type=Path,
                        default=Path("out/charrnn/conditional/best.pt"))
    parser.add_argument("--ablation", default=None,
                        help="the zeroed-controls checkpoint (default: "
                             f"{DEFAULT_ABLATION} if it exists; '' or none: keep the "
                             "ablation's held-out NLL the shipped manifest recorded)")
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="folder to write NAME.onnx and NAME.json to")
    parser.add_argument("--name", default="charrnn")
    parser.add_argument("--int8", choices=["auto", "yes", "no"], default="auto",
                        help="auto: ship int8 only if its held-out NLL is within 1%% of fp32 "
                             "and it is faster")
    parser.add_argument("--staging", type=Path, default=None,
                        help="where the fp32 graph and the ablation are made and kept "
                             "(default: beside the checkpoint, export/)")
    parser.add_argument("--data-only", action="store_true",
                        help="only (re)write the data files beside an already shipped "
                             "MODELS/NAME.json (copy index, guide, eval split)")
    options = parser.parse_args(args.rest)
    if options.data_only:
        refresh_data(options.models, options.name)
        return 0
    if options.ablation is None:
        options.ablation = str(DEFAULT_ABLATION) if DEFAULT_ABLATION.is_file() else ""
    ablation = Path(options.ablation) if options.ablation else None
    for path in (options.checkpoint, ablation):
        if path is not None and not path.is_file():
            raise LivegenError(f"{path}: no such checkpoint; train first "
                               "(`livegen train charrnn`, README: The Char-RNN)")
    ship(options.checkpoint, ablation, options.models, options.name, options.int8,
         options.staging)
    return 0
