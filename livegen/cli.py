"""The `livegen` command. Each subcommand is a thin call into the module that does the work;
modules are imported on use, so `livegen panic` does not load ONNX Runtime."""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import math
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from livegen import __version__
from livegen.errors import LivegenError

log = logging.getLogger("livegen")

EXIT_USAGE = 2


def _handler(target: str) -> Callable[[argparse.Namespace], int | None]:
    """'module:function' -> a handler that imports the module only when it runs."""
    module_name, function_name = target.split(":")

    def handle(args: argparse.Namespace) -> int | None:
        return getattr(importlib.import_module(module_name), function_name)(args)

    return handle


class _Parser(argparse.ArgumentParser):
    """argparse with errors in one line, like every other livegen error (exit 2)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def _seconds(*, zero_ok: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, above 0 (or at least 0)."""
    wanted = "0 or more" if zero_ok else "more than 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(f"{text} seconds: give {wanted}")
        return value

    return parse


def _logging_options() -> argparse.ArgumentParser:
    """-v and -q again after the command (`livegen run -v`); they add to those before it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    common.add_argument("-q", "--quiet", dest="sub_quiet", action="store_true",
                        help="warnings and errors only")
    return common


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=None, metavar="PATH",
                        help="config file (default: $LIVEGEN_CONFIG, ./config.toml, "
                             "/etc/livegen/config.toml, then the checkout's config.toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="livegen",
        description="A live generative MIDI instrument: body and controllers steer neural "
                    "generators that play into a virtual MIDI port.")
    parser.add_argument("--version", action="version", version=f"livegen {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    command = functools.partial(sub.add_parser, parents=[_logging_options()])

    p = command("run", help="run the daemon until SIGINT/SIGTERM (SIGHUP reloads)")
    _config_option(p)
    p.add_argument("--record", type=Path, metavar="PATH",
                   help="write every input reading to this JSONL trace (for replay)")
    p.add_argument("--replay", type=Path, metavar="PATH",
                   help="replace every input by a replay of this trace")
    p.add_argument("--stats", type=_seconds(zero_ok=True), metavar="SECONDS", default=0.0,
                   help="log timing, CPU, memory and dropped-data figures every SECONDS "
                        "(0: never, the default)")
    p.add_argument("--stats-json", type=Path, metavar="PATH",
                   help="write the same figures as JSON at exit")
    p.add_argument("--duration", type=_seconds(zero_ok=False), metavar="SECONDS",
                   help="stop by itself after SECONDS, more than 0 (default: run until "
                        "signalled)")
    p.set_defaults(handler=run_command)

    p = command("demo", help="the simulated performer through the engine: "
                            "plays to the port if there is one, writes out/demo.mid, "
                            "out/demo.wav (with FluidSynth) and out/demo.png")
    _config_option(p)
    p.add_argument("--seconds", type=_seconds(zero_ok=False), default=20.0,
                   help="length, more than 0 (default 20)")
    p.add_argument("--out", type=Path, default=Path("out"),
                   help="folder for demo.mid/.wav/.png")
    p.add_argument("--seed", type=int, default=1, help="sampling and performer seed")
    p.add_argument("--soundfont", type=Path, metavar="SF2",
                   help="the General MIDI soundfont FluidSynth renders demo.wav with "
                        "(default: $LIVEGEN_SOUNDFONT, else Debian's FluidR3_GM)")
    p.set_defaults(handler=_handler("livegen.demo:demo_command"))

    p = command("render", help="play a trace through the engine on a virtual clock, "
                              "faster than real time, into a MIDI file (no MIDI port)")
    p.add_argument("--replay", type=Path, metavar="TRACE", required=True,
                   help="the JSONL trace (from `livegen run --record`) that replaces every "
                        "input")
    p.add_argument("--out", type=Path, metavar="FILE.mid", required=True,
                   help="the MIDI file to write")
    _config_option(p)
    p.add_argument("--seed", type=int, help="sampling seed (default: engine.seed)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="seconds of music (default: up to the trace's last reading)")
    p.set_defaults(handler=_handler("livegen.render:render_command"))

    p = command("check-config", help="validate a config and print the effective one")
    p.add_argument("path", nargs="?", type=Path, help="config file (default as for run)")
    p.set_defaults(handler=check_config_command)

    p = command("devices", help="list MIDI ports, cameras, serial ports, OSC settings "
                               "and ONNX Runtime execution providers")
    _config_option(p)
    p.set_defaults(handler=_handler("livegen.devices:devices_command"))

    p = command("learn", help="move a control on a MIDI controller; "
                             "writes a [[map]] entry for it")
    _config_option(p)
    p.add_argument("target", help="what the control should drive: pitch, density, noise[3], ...")
    p.add_argument("--input", help="the [inputs.NAME] of type midi to listen on "
                                   "(default: the first one)")
    p.add_argument("--timeout", type=_seconds(zero_ok=False), default=30.0,
                   help="seconds to wait (default 30)")
    p.add_argument("--write", action="store_true",
                   help="append the entry to the config file (default: print it)")
    p.set_defaults(handler=_handler("livegen.inputs.midi_in:learn_command"))

    p = command("calibrate", help="guided calibration of a sensor")
    p.add_argument("what", choices=["emg"], help="what to calibrate")
    _config_option(p)
    p.add_argument("--input", help="the [inputs.NAME] to calibrate (default: the first emg)")
    p.add_argument("--seconds", type=_seconds(zero_ok=False), default=5.0,
                   help="seconds per phase (default 5)")
    p.set_defaults(handler=_handler("livegen.inputs.emg.calibrate:calibrate_command"))

    p = command("panic", help="send all-notes-off (and note-offs) to a MIDI port")
    _config_option(p)
    p.add_argument("--port", help="existing port to send to (name substring); default: "
                                  "what a running livegen plays to, and output.connect")
    p.add_argument("--every-note", action="store_true",
                   help="note-offs for all 128 notes on every panic channel, not only on "
                        "the channels livegen plays on")
    p.set_defaults(handler=_handler("livegen.panic:panic_command"))

    p = command("play", help="play a MIDI file through the configured output "
                            "(to test a rig); SIGINT/SIGTERM end every note")
    p.add_argument("file", type=Path, help="the .mid file")
    _config_option(p)
    p.add_argument("--loop", action="store_true",
                   help="play it again and again until SIGINT/SIGTERM")
    p.add_argument("--channel", type=int, choices=range(1, 17), metavar="1..16",
                   help="play every message on this channel (default: each on its own)")
    p.set_defaults(handler=_handler("livegen.play:play_command"))

    p = command("install-service", help="install the systemd unit, config, models "
                                       "and udev rules (under --root, default /)")
    p.add_argument("--root", type=Path, default=Path("/"),
                   help="install into this folder instead of / (packaging, tests)")
    p.add_argument("--executable", type=Path, metavar="PATH",
                   help="the livegen the unit runs, an absolute path (default: the one "
                        "beside this Python; give it when packaging for another machine)")
    p.set_defaults(handler=_handler("livegen.service:install_command"))

    p = command("train", help="train a model (needs the [train] extra: torch)")
    p.add_argument("model", choices=["charrnn", "langevin", "dcrnn"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options; see livegen train MODEL -h")
    p.set_defaults(handler=_handler("livegen.train:train_command"))

    p = command("export", help="export a trained checkpoint to models/ (ONNX + manifest)")
    p.add_argument("model", choices=["charrnn", "langevin", "dcrnn"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options; see livegen export MODEL -h")
    p.set_defaults(handler=_handler("livegen.train:export_command"))

    p = command("eval", help="evaluate a shipped model: held-out NLL, "
                            "controllability, copying, BLEU")
    p.add_argument("model", choices=["charrnn", "langevin", "dcrnn"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options; see livegen eval MODEL -h")
    p.set_defaults(handler=_handler("livegen.evaluate:eval_command"))

    p = command("bench", help="measure timing and memory; prints figures")
    p.add_argument("what", choices=["output", "charrnn", "engine", "camera"])
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options; see livegen bench WHAT -h")
    p.set_defaults(handler=_handler("livegen.bench:bench_command"))
    return parser


def check_config_command(args: argparse.Namespace) -> int:
    from livegen import config

    cfg = config.load(args.path)
    config.check_runnable(cfg)  # what `run` would refuse, refused here first
    print(f"# {cfg.source}: valid\n")
    print(config.dumps(cfg), end="")
    return 0


def run_command(args: argparse.Namespace) -> int | None:
    from livegen import config

    # The model is checked as check-config checks it, with the same fix, before the
    # engine starts anything (the engine reads the config itself).
    config.check_runnable(config.load(args.config))
    return _handler("livegen.engine:run_command")(args)


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose + args.sub_verbose, args.quiet or args.sub_quiet)
    try:
        return args.handler(args) or 0
    except LivegenError as exc:
        for line in str(exc).splitlines():
            print(f"livegen: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
