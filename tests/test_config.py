"""config.toml validation: every kind of bad value is named by its key path, exit code 2."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from livegen import config, toml_writer
from livegen.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def problems_of(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.loads(text, base_dir=tmp_path, source="t.toml")
    return info.value.problems


def test_shipped_config_is_valid_and_needs_no_hardware() -> None:
    cfg = config.load(ROOT / "config.toml")
    assert {c.type for c in cfg.inputs.values()} == {"sim"}
    assert cfg.generators["charrnn"].model == ROOT / "models" / "charrnn.json"


def test_effective_config_round_trips(tmp_path: Path) -> None:
    cfg = config.load(ROOT / "config.toml")
    again = config.loads(config.dumps(cfg), base_dir=tmp_path, source="x.toml")
    assert again.map == cfg.map
    assert again.inputs == cfg.inputs
    assert again.output == cfg.output and again.engine == cfg.engine


def test_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "c.toml").write_text(
        '[generators.charrnn]\nmodel = "models/m.json"\n[output]\nrecord = "/abs/x.mid"\n')
    cfg = config.load(tmp_path / "etc" / "c.toml")
    assert cfg.generators["charrnn"].model == tmp_path / "etc" / "models" / "m.json"
    assert cfg.output.record == Path("/abs/x.mid")


@pytest.mark.parametrize(("text", "expected"), [
    ("[engine]\nlookahed_ms = 3\n",
     "engine.lookahed_ms: unknown key; did you mean 'lookahead_ms'?"),
    ("[engine]\nlatency_budget_ms = 'fast'\n",
     "engine.latency_budget_ms: expected a number, got 'fast' (string)"),
    ("[engine]\nlatency_budget_ms = 0\n",
     "engine.latency_budget_ms: 0.0 is out of range; expected between 0.5 and 1000.0"),
    ("[engine]\nlookahead_ms = 50\ncommit_ms = 60\n",
     "engine.commit_ms: 60.0 must be smaller than engine.lookahead_ms"),
    ("[output]\napi = 'jak'\n", "output.api: 'jak' (string) is not one of"),
    ("[output]\npanic_channels = [1, 17]\n", "output.panic_channels[1]: 17 is out of range"),
    ("[output]\nchannel = 1.5\n", "output.channel: expected a whole number, got 1.5"),
    ("[output]\nrealtime = 'yes'\n", "output.realtime: expected true or false"),
    ("[output]\nconnect = 'synth'\n", "output.connect: expected an array"),
    ("engine = 3\n", "engine: expected a table, got 3"),
    ("[inputs.cam]\ntype = 'camra'\n", "inputs.cam.type: unknown input type 'camra'"),
    ("[inputs.cam]\nrate = 3\n", "inputs.cam.type: missing"),
    ("[inputs.sim]\ntype = 'sim'\nrate_hz = 0\n", "inputs.sim.rate_hz: 0.0 is out of range"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.hand.y'\ntarget = 'pich'\n",
     "map[0].target: unknown target 'pich'; did you mean 'pitch'?"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.x'\ntarget = 'noise[64]'\n",
     "map[0].target: noise index 64 is out of range"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'cam.x'\ntarget = 'pitch'\n",
     "map[0].source: no input named 'cam'"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.x'\ntarget = 'pitch'\n"
     "in_range = [0, 1, 2]\n", "map[0].in_range: expected 2 values"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.x'\ntarget = 'pitch'\n"
     "curve = 'expo'\n", "map[0].curve: 'expo' (string) is not one of"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.x'\ntarget = 'pitch'\n"
     "smoothing = { min_cutoff = -1 }\n", "map[0].smoothing.min_cutoff: -1.0 is out of range"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\ntarget = 'pitch'\n", "map[0].source: missing"),
    ("[engine]\ngenerator = 'charnn'\n",
     "engine.generator: unknown generator 'charnn'; did you mean 'charrnn'?"),
    ("[engine\n", "not valid TOML"),
])
def test_each_kind_of_bad_value_names_its_key_path(text: str, expected: str,
                                                   tmp_path: Path) -> None:
    problems = problems_of(text, tmp_path)
    assert any(expected in p for p in problems), problems


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    problems = problems_of("[engine]\nlookahed_ms = 3\n[output]\napi = 'x'\nchannel = 99\n",
                           tmp_path)
    assert len(problems) == 3


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livegen.cli", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_check_config_exits_2_with_one_line_per_problem_and_no_traceback(
        tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.hand.y'\n"
                   "target = 'pich'\n[output]\nmax_note_s = -1\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert any("map[0].target: unknown target 'pich'; did you mean 'pitch'?" in line
               for line in lines)
    assert any("output.max_note_s" in line for line in lines)


def test_check_config_prints_the_effective_config() -> None:
    result = run_cli("check-config", str(ROOT / "config.toml"))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "lookahead_ms = 400.0" in result.stdout  # defaults filled in
    assert "[[map]]" in result.stdout


def test_missing_config_file_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- configs that run

SIM = "[inputs.sim]\ntype = 'sim'\n"


def rule(target: str, out_range: str, source: str = "sim.hand.y") -> str:
    return f"[[map]]\nsource = '{source}'\ntarget = '{target}'\nout_range = {out_range}\n"


@pytest.mark.parametrize(("target", "out_range", "expected"), [
    ("temperature", "[0.0, 1.5]",
     "map[0].out_range: [0, 1.5] goes beyond what temperature can take (0.05 .. 5); "
     "keep both ends within it, e.g. [0.05, 1.5]"),
    ("top_p", "[0.0, 1.0]", "what top_p can take (0.01 .. 1)"),
    ("tempo", "[0.0, 120.0]", "what tempo can take (20 .. 300); keep both ends within it, "
                              "e.g. [20, 120]"),
    ("tempo", "[60.0, 1e9]", "e.g. [60, 300]"),
    ("pitch", "[-1e308, 1e308]", "[-1e+308, 1e+308] goes beyond what pitch can take (0 .. 1)"),
    ("velocity", "[-1e308, 1e308]", "what velocity can take (0 .. 2)"),
    ("density", "[0.0, 1.5]", "what density can take (0 .. 1)"),
    ("key", "[0.0, 12.0]", "what key can take (0 .. 11)"),
    ("noise[3]", "[-2.0, 2.0]", "what noise can take (-1 .. 1)"),
    ("generator", "[0.0, 5.0]", "what generator can take (0 .. 2)"),
])
def test_an_out_range_beyond_what_its_target_takes_is_refused(
        target: str, out_range: str, expected: str, tmp_path: Path) -> None:
    problems = problems_of(SIM + rule(target, out_range), tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems


def test_out_ranges_at_the_ends_of_every_target_are_accepted(tmp_path: Path) -> None:
    rules = [("pitch", "[1.0, 0.0]"), ("density", "[0.0, 1.0]"), ("key", "[0.0, 11.0]"),
             ("temperature", "[0.05, 5.0]"), ("top_p", "[0.01, 1.0]"),
             ("velocity", "[0.0, 2.0]"), ("tempo", "[20.0, 300.0]"),
             ("generator", "[0.0, 2.0]"), ("noise[63]", "[-1.0, 1.0]")]
    cfg = config.loads(SIM + "".join(rule(t, r) for t, r in rules), base_dir=tmp_path)
    assert len(cfg.map) == len(rules)


def test_an_in_range_wider_than_a_number_can_hold_is_refused(tmp_path: Path) -> None:
    problems = problems_of(SIM + "[[map]]\nsource = 'sim.hand.y'\ntarget = 'pitch'\n"
                                 "in_range = [-1e308, 1e308]\n", tmp_path)
    assert problems == ["map[0].in_range: [-1e+308, 1e+308] spans more than a number can "
                        "hold; give the range the source really sends"]


@pytest.mark.parametrize(("inputs", "source", "expected"), [
    (SIM, "sim.hand.z", "map[0].source: input 'sim' (sim) yields no key 'hand.z'; did you "
                        "mean 'hand.y'? (it yields hand.x, hand.y, hand.present, hand.size, "
                        "hand.fingers, emg.ch0..emg.ch7, emg.total)"),
    (SIM, "sim.ch3", "yields no key 'ch3'"),
    ("[inputs.cam]\ntype = 'camera'\n", "cam.hand.why", "did you mean 'hand.y'?"),
    ("[inputs.arm]\ntype = 'emg'\nchannels = 4\n", "arm.ch5",
     "input 'arm' (emg) yields no key 'ch5'; did you mean 'ch3'? (it yields ch0..ch3, total)"),
    ("[inputs.knobs]\ntype = 'midi'\nvirtual = true\n", "knobs.cc74", "did you mean 'cc.74'?"),
    ("[inputs.knobs]\ntype = 'midi'\nvirtual = true\n", "knobs.cc.128",
     "(it yields cc.0..cc.127, note.0..note.127, pressure.0..pressure.127, note, velocity, "
     "bend, pressure, program)"),
])
def test_a_rule_reading_a_key_its_input_never_yields_is_refused(
        inputs: str, source: str, expected: str, tmp_path: Path) -> None:
    problems = problems_of(inputs + f"[[map]]\nsource = '{source}'\ntarget = 'pitch'\n",
                           tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems


def test_osc_and_replay_inputs_take_any_key(tmp_path: Path) -> None:
    cfg = config.loads("[inputs.phone]\ntype = 'osc'\n[inputs.trace]\ntype = 'replay'\n"
                       "[[map]]\nsource = 'phone.fader/7'\ntarget = 'pitch'\n"
                       "[[map]]\nsource = 'trace.anything.at.all'\ntarget = 'density'\n",
                       base_dir=tmp_path)
    assert [r.key for r in cfg.map] == ["fader/7", "anything.at.all"]


BREATH_SENSOR = """
from dataclasses import dataclass

from livegen.config import InputConfig, setting
from livegen.inputs.base import Check, InputStats, Reading


@dataclass(frozen=True, slots=True)
class BreathInputConfig(InputConfig):
    rate_hz: float = setting(10.0, lo=1.0, hi=100.0, doc="readings per second")

    def offered_keys(self):
        return ("breath",)

    def describe(self):
        return f"breath, {self.rate_hz:g} Hz"

    def reachable(self):
        return Check(True, "a belt around the chest")


class BreathInput:
    def __init__(self, name, config):
        self.name, self.config, self.stats = name, config, InputStats()

    async def readings(self):
        yield Reading(self.name, 0.0, {"breath": 0.5})
"""


def test_a_sensor_is_one_module_and_one_registry_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from livegen import devices, inputs

    (tmp_path / "breath_sensor.py").write_text(BREATH_SENSOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(inputs.FAMILIES, "breath", inputs.Family(
        "breath_sensor:BreathInputConfig", "breath_sensor:BreathInput"))
    text = "[inputs.belt]\ntype = 'breath'\nrate_hz = 20\n[[map]]\nsource = 'belt.{}'\n" \
           "target = 'density'\n"
    cfg = config.loads(text.format("breath"), base_dir=tmp_path)
    assert cfg.inputs["belt"].rate_hz == 20.0
    with pytest.raises(ConfigError, match="yields no key 'breth'; did you mean 'breath'"):
        config.loads(text.format("breth"), base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"inputs.belt.rate_hz: 0.5 is out of range"):
        config.loads(text.format("breath").replace("20", "0.5"), base_dir=tmp_path)
    assert "[inputs.belt]\ntype = \"breath\"" in config.dumps(cfg)
    assert type(inputs.create("belt", cfg.inputs["belt"])).__name__ == "BreathInput"
    assert devices.configured_inputs(cfg) == [
        "inputs.belt (breath, 20 Hz): reachable: a belt around the chest"]


def test_the_declared_keys_are_the_keys_the_inputs_yield() -> None:
    import mido

    from livegen.inputs.camera import NO_HAND, CameraInputConfig, Hand
    from livegen.inputs.midi_in import MidiInputConfig, values_of
    from livegen.inputs.sim import Performer, SimInputConfig

    sim = SimInputConfig(type="sim").offered_keys()
    assert set(Performer(seed=3).values(5.0)) == set(sim)
    camera = set(Hand(0.1, 0.2, 0.3, 2).values()) | set(NO_HAND)
    assert camera == set(CameraInputConfig(type="camera").offered_keys())
    midi = set(MidiInputConfig(type="midi").offered_keys())
    messages = [mido.Message("control_change", control=127, value=3),
                mido.Message("note_on", note=0, velocity=9),
                mido.Message("note_off", note=127), mido.Message("pitchwheel", pitch=5),
                mido.Message("aftertouch", value=5), mido.Message("polytouch", note=64),
                mido.Message("program_change", program=3)]
    yielded = set().union(*(values_of(m) for m in messages))
    assert yielded <= midi, yielded - midi


def test_a_second_rule_on_the_same_target_is_refused(tmp_path: Path) -> None:
    problems = problems_of(SIM + rule("pitch", "[0.0, 1.0]")
                           + rule("noise[1]", "[-1.0, 1.0]")
                           + rule("pitch", "[0.2, 0.8]", source="sim.hand.x")
                           + rule("noise[01]", "[-1.0, 1.0]", source="sim.emg.total"),
                           tmp_path)
    assert problems == [
        "map[2].target: 'pitch' is already driven by map[0] (source 'sim.hand.y'); one rule "
        "per target: remove one of them or give this one another target",
        "map[3].target: 'noise[01]' is already driven by map[1] (source 'sim.hand.y'); one "
        "rule per target: remove one of them or give this one another target"]
    config.loads(SIM + rule("noise[1]", "[-1.0, 1.0]") + rule("noise[2]", "[-1.0, 1.0]"),
                 base_dir=tmp_path)  # different noise values are different targets


def test_osc_controls_hold_by_default_like_midi(tmp_path: Path) -> None:
    cfg = config.loads("[inputs.phone]\ntype = 'osc'\n[inputs.knobs]\ntype = 'midi'\n"
                       "virtual = true\n[inputs.sim]\ntype = 'sim'\n", base_dir=tmp_path)
    assert cfg.inputs["phone"].stale_after == cfg.inputs["knobs"].stale_after == 3600.0
    assert cfg.inputs["sim"].stale_after == 2.0


# ---------------------------------------------------------------- paths and round trips

def test_a_default_model_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "c.toml").write_text("[inputs.old]\ntype = 'replay'\n")
    cfg = config.load(tmp_path / "etc" / "c.toml")
    assert cfg.generators["charrnn"].model == tmp_path / "etc" / "models" / "charrnn.json"
    assert cfg.inputs["old"].path == tmp_path / "etc" / "recording.jsonl"


@pytest.mark.parametrize("name", ["config.toml", "examples/gesture.toml", "examples/emg.toml",
                                  "examples/daw-clock.toml"])
def test_the_printed_effective_config_reads_back_as_the_same_config(
        name: str, tmp_path: Path) -> None:
    cfg = config.load(ROOT / name)
    elsewhere = tmp_path / "printed" / "effective.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(config.dumps(cfg))
    again = config.load(elsewhere)
    assert dataclasses.replace(again, source=None) == dataclasses.replace(cfg, source=None)
    bare = tmp_path / "bare.toml"  # every default, printed from another folder
    bare.write_text("")
    printed = tmp_path / "printed" / "bare.toml"
    printed.write_text(config.dumps(config.load(bare)))
    assert (dataclasses.replace(config.load(printed), source=None)
            == dataclasses.replace(config.load(bare), source=None))


def test_written_toml_reads_back_as_it_went_in() -> None:
    table = {
        "plain": "arm.total", "quoted": 'say "hi" \\ there', "lines": "one\ntwo\tthree\x01",
        "unicode": "Ätherisch 🎵", "whole": 3, "real": 0.1, "tiny": 1e-07, "big": 1e300,
        "yes": True, "no": False, "array": [1, 2.5, "x"], "empty": {},
        "inline": {"0": 0.5, "a.b": -0.25, "": 1},
        "path": Path("/etc/livegen/config.toml"), "smooth": config.OneEuroConfig(beta=0.5),
        "date": datetime.date(2024, 5, 1),
    }
    read = tomllib.loads("\n".join(toml_writer.assignments(table)) + "\n")
    assert read == {**table, "path": "/etc/livegen/config.toml",
                    "smooth": dataclasses.asdict(config.OneEuroConfig(beta=0.5))}
    specials = tomllib.loads("\n".join(toml_writer.assignments(
        {"up": math.inf, "down": -math.inf, "none": math.nan})))
    assert specials["up"] == math.inf and specials["down"] == -math.inf
    assert math.isnan(specials["none"])
    assert toml_writer.key("lead") == "lead" and toml_writer.key("a b") == '"a b"'
    with pytest.raises(TypeError):
        toml_writer.value(object())


# ---------------------------------------------------------------- check-config, end to end

def check_config(path: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livegen.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_check_config_refuses_a_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("# réglages\n[clock]\nbpm = 90\n".encode("latin-1"))
    line = one_line_error(check_config(path))
    assert line == f"livegen: {path}: not UTF-8 text (byte 0xe9 at offset 3); save it as " \
                   "UTF-8 text"


def test_check_config_refuses_a_binary_profile_in_one_line(tmp_path: Path) -> None:
    profile = tmp_path / "cam.toml"
    profile.write_bytes(bytes(range(256)))
    path = tmp_path / "c.toml"
    path.write_text(f"[inputs.cam]\ntype = 'camera'\nprofile = '{profile}'\n")
    line = one_line_error(check_config(path))
    assert f"inputs.cam.profile: {profile} is not UTF-8 text (byte 0x80" in line


def test_check_config_refuses_arrays_nested_hundreds_deep_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("[output]\nconnect = " + "[" * 600 + "]" * 600 + "\n")
    profile = tmp_path / "deep-profile.toml"
    profile.write_text("[input]\nmin_area = " + "[" * 600 + "]" * 600 + "\n")
    with_profile = tmp_path / "c.toml"
    with_profile.write_text(f"[inputs.cam]\ntype = 'camera'\nprofile = '{profile}'\n")
    assert "nested hundreds of levels deep" in one_line_error(check_config(path))
    assert "deep-profile.toml is not usable TOML" in one_line_error(check_config(with_profile))


def test_check_config_refuses_an_out_range_the_run_could_not_play(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[generators.charrnn]\nmodel = '{ROOT / 'models' / 'charrnn.json'}'\n"
                    + SIM + rule("pitch", "[0.0, 1.0]") + rule("temperature", "[0.0, 1.5]",
                                                              source="sim.hand.x"))
    line = one_line_error(check_config(path))
    assert line.startswith(f"livegen: {path}: map[1].out_range: [0, 1.5] goes beyond")


def test_check_config_refuses_a_missing_model_with_a_fix_for_where_the_config_lives(
        tmp_path: Path) -> None:
    path = tmp_path / "c.toml"  # outside the checkout; the default model is beside it
    path.write_text(SIM)
    line = one_line_error(check_config(path, cwd=ROOT))  # the checkout's models/ is no excuse
    missing = tmp_path / "models" / "charrnn.json"
    shipped = ROOT / "models" / "charrnn.json"
    assert line == (f"livegen: {path}: generators.charrnn.model: {missing} does not exist; "
                    f"point generators.charrnn.model at a manifest, e.g. \"{shipped}\" (the "
                    "shipped one; a relative path starts at the config's folder)")
    assert "git checkout" not in line


def test_check_config_checks_the_manifest_and_the_file_it_names(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    manifest = models / "charrnn.json"
    path = tmp_path / "c.toml"
    path.write_text(SIM)
    manifest.write_text("{ not json")
    assert "is not a model manifest (Expecting property name" in one_line_error(
        check_config(path))
    manifest.write_text(json.dumps({"kind": "dcrnn"}))
    assert "is a manifest of kind 'dcrnn', not 'charrnn'" in one_line_error(check_config(path))
    shipped = json.loads((ROOT / "models" / "charrnn.json").read_text())
    manifest.write_text(json.dumps(shipped))
    line = one_line_error(check_config(path))
    assert f"{models / shipped['files'][shipped['default_variant']]['path']}, the model file " \
           "charrnn.json names, does not exist" in line
    path.write_text(SIM + "[generators.charrnn]\nvariant = 'fp32'\n")
    (models / shipped["files"]["fp32"]["path"]).write_bytes(b"onnx, cut short")
    assert "is 15 bytes, its manifest says" in one_line_error(check_config(path))
    shipped["files"].pop("int8")
    manifest.write_text(json.dumps(shipped))
    path.write_text(SIM + "[generators.charrnn]\nvariant = 'int8'\n")
    assert one_line_error(check_config(path)).endswith(
        "generators.charrnn.variant: " f"{manifest} ships no 'int8' model (it ships fp32); "
        "set variant to one of them")


def test_a_missing_model_in_the_checkout_says_git_checkout(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[generators.charrnn]\nmodel = '{ROOT / 'models' / 'gone.json'}'\n")
    line = one_line_error(check_config(path))
    assert f"does not exist; restore it with `git checkout models/` in {ROOT}" in line


def test_run_refuses_a_missing_model_as_check_config_does(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(SIM + "[output]\nport = ''\n")
    run = subprocess.run([sys.executable, "-m", "livegen.cli", "run", "-c", str(path),
                          "--duration", "5"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert one_line_error(run) == one_line_error(check_config(path))


# ---------------------------------------------------------------- several generators

def test_generators_are_sections_of_a_registered_type_or_a_plugin(tmp_path: Path) -> None:
    cfg = config.loads('[engine]\ngenerators = ["charrnn", "lead"]\nmode = "layer"\n'
                       '[generators.lead]\ntype = "charrnn"\nchannel = 2\ntemperature = 0.7\n',
                       base_dir=tmp_path)
    assert cfg.playing == ("charrnn", "lead")
    assert isinstance(cfg.generators["lead"], config.CharRNNConfig)
    assert cfg.generators["lead"].temperature == 0.7
    # A generator that runs without a section gets one from its defaults, its paths
    # resolved against the config's folder like written ones.
    assert cfg.generators["charrnn"].model == tmp_path / "models" / "charrnn.json"


@pytest.mark.parametrize(("text", "expected"), [
    ('[engine]\ngenerators = ["charrnn", "dcrn"]\n',
     "engine.generators[1]: unknown generator 'dcrn'; did you mean 'dcrnn'?"),
    ('[engine]\ngenerator = "dcrnn"\ngenerators = ["charrnn"]\n',
     "engine.generator: 'dcrnn' is not among engine.generators (charrnn)"),
    ('[engine]\ngenerators = ["charrnn", "dcrnn"]\nmode = "layer"\n',
     "generators.dcrnn.channel: 1 is also charrnn's; in layer mode each generator plays on "
     "its own channel"),
    ('[generators.x]\nplugin = "no_such_module:Thing"\n',
     "generators.x.plugin: cannot load 'no_such_module:Thing'"),
    ('[generators.x]\ntype = "charnn"\n',
     "generators.x.type: unknown generator 'charnn'; did you mean 'charrnn'?"),
    ('[inputs.sim]\ntype = "sim"\n[[map]]\nsource = "sim.hand.y"\ntarget = "lead.pitch"\n',
     "map[0].target: 'lead.pitch' names generator 'lead', which does not run"),
    ('[inputs.sim]\ntype = "sim"\n[[map]]\nsource = "sim.hand.y"\ntarget = "charrnn.tempo"\n',
     "map[0].target: 'tempo' is shared by every generator; give it without 'charrnn.'"),
])
def test_what_cannot_run_together_is_refused_in_one_line(text: str, expected: str,
                                                         tmp_path: Path) -> None:
    found = problems_of(text, tmp_path)
    assert any(problem.startswith(expected) for problem in found), found
