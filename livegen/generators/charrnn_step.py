"""The Char-RNN as a live step generator (the StepGenerator contract of generators/step.py).

One step = one token: feed the last token with the controls for what should follow, sample
the next, decode it to timed note events. The state after each step is an immutable value
(the recurrent state, the last token, the decoder, the sounding and recent notes), so the
player keeps one per planned event and a rollback is "carry on from the one saved there".

What the model is told. A control that a rule drives is sent as asked: pitch and density
as positions, a key as the key profile the model learned from (CharRNN.key_histogram). A
control that no rule drives (Controls.undriven; NO_KEY too) is never pinned to a constant
the model did not learn from (`free`): a soft model, trained with such parts zeroed, is
sent zeros ("unasked": it chooses, as it chooses everything when nothing is asked); a
one-hot model follows the guide (charrnn.Guide), the control timeline of real pieces it
was not trained on, so it is told what real music does. "self" (what the model's own last
3 s had) is kept for comparison: with the one-hot model it collapses into a drone, one
pitch answering its own histogram.

The register's edges. Little training music lies below MIDI 58 or above 82, so at the
outer pitch bins the model plays an octave inside them and its notes sound an octave out:
the asked band is reached with music the model knows.

Rules that keep the music playable whatever the model samples, each a mask on the sampled
distribution (a masked note-on's probability goes to the note-ons still allowed, so a rule
changes which note, not whether one is played):
- a note held for `max_held_s` is ended (a forced note-off; a time shift is cut short to
  end there), and so is one left LEFT_BEHIND semitones from an asked register, or one
  still sounding when a rule below brings a note-on forward; a run of steps without time
  passing is cut short by a forced shift;
- no note is struck while it sounds, or to make three sounding notes within CLUSTER_SPAN
  semitones, or over MAX_POLYPHONY sounding notes (no clusters);
- after MAX_REST_S without a note-on only a note-on may follow (no long silences);
- density in its band: where density is asked, the note-ons of every DENSITY_WINDOW_S
  window (the window `livegen eval` judges by) stay inside the asked bin's band: a
  note-on that would make too many is masked, and one is brought forward (ending what
  sounds) when the count would fall below it. After a change of bin the band is reached
  pro rata (between its bottom and top rates), counting only what was played since: the
  new rate is heard at once, with neither a burst to fill the window nor a silence while
  the old notes leave it. The times the band sets fall on the line's 16ths (PULSE_S
  after its last note-on), as the corpus places notes. A note-on held back waits in one
  time shift (small ones would give the model a chance to end what sounds at each), and
  a single note sounding then sounds on until the next note-on is allowed, where it ends
  (legato, as the corpus plays; left to end, it left silences between the notes);
- legato over a change: a single note sounding where a control change cuts the plan
  sounds on until the model strikes the next note, which ends it first (the model, made to
  re-decide in the middle of its note, ended it and rested in one cut in seven);
- steering: while the recent notes lie far from the asked register, note-ons more than
  STEER_BAND semitones from it are masked, and until one has sounded in it the rest before
  it is at most ANSWER_REST_S: a register change is answered by a note at once;
- pitch in its band: where pitch is asked (and not while steering to it), a note-on that
  would take the mean pitch of the last DENSITY_WINDOW_S out of the asked bin is masked
  (one that brings it back is allowed), unless that would leave no note to play;
- no fifth note-on in a row on one pitch, and no DRONE_NOTES note-ons within DRONE_S on
  two pitches or fewer (no drones), unless that would leave no note to play;
- the copy guard: a note that would make the last COPY_RUN note-ons repeat a run of a
  training piece (in any transposition) is masked (charrnn.CopyIndex), and counted.

Dynamics (`dynamics`): the corpus has no dynamics (every note 80), so no net could learn
them; a rule shapes the velocity the player sends from the velocity control, the metric
position in the clock's bar and a four-bar phrase arch, and the note's height.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from livegen.config import CharRNNConfig
from livegen.control import NO_KEY, Controls
from livegen.generators.charrnn import (
    CharRNN,
    CopyIndex,
    Guide,
    State,
    draw,
    nucleus,
    softmax,
    uniform,
)
from livegen.music import events, features
from livegen.music.events import TimedEvent, TokenDecoder

log = logging.getLogger(__name__)

MAX_HELD_S = 2.5            # longer notes are ended (the corpus holds few past 2 s)
MAX_EVENTS_AT_ONCE = 24     # steps in a row without time passing before a forced shift
MAX_REST_S = 4.0            # after this long without a note-on, only a note-on may follow
MAX_POLYPHONY = 4           # no note-on while this many notes sound (four voices)
CLUSTER_SPAN = 3            # no three sounding notes within this many semitones
STEER_AFTER = 4.0           # steer when recent notes are this far (semitones) from the target
STEER_BAND = 7              # note-ons allowed while steering: target +- this many semitones
STEER_NOTES = 16            # the recent notes steering looks at (about 4 s of music)
LEFT_BEHIND = 14            # a note this far from the asked register is ended
REPEATS = 4                 # no fifth note-on in a row on one pitch
DRONE_S = 8.0               # no DRONE_NOTES note-ons on two pitches or fewer in this long
DRONE_NOTES = 4
REGISTER_PULL = 0.0
REGISTER_SPREAD = 6.0
ANSWER_REST_S = 0.25        # while steering, the longest rest before a note in the register
DENSITY_WINDOW_S = 4.0      # density is held in its bin over every window this long
DENSITY_TOP = 36            # the top bin's ceiling: note-ons per window (9 a second)
RECENT_NOTES = 40           # note-ons remembered (density, steering, the copy guard, self)
SELF_WINDOW_S = 3.0         # self-conditioning: the music of the last 3 s
# At pitch positions outside OCTAVE_INSIDE the model plays 3 bins (an octave) further in and
# its notes sound an octave out.
OCTAVE_INSIDE = (2.0, 7.0)
OCTAVE_HOLD = 0.5
PITCH_MARGIN = 1.0          # the window's mean pitch is kept this far inside its bin
OCTAVE_BINS = 3
LEGATO = True               # a note sounding at a control change's cut sounds on (wait_until)
PULSE_S = 0.125             # the model's 16th (its seconds are beats at 120 bpm)
_ONE_STEP_SHIFT = events.TIME_SHIFT_RANGE.token(1)
_ON = slice(events.NOTE_ON_RANGE.first, events.NOTE_ON_RANGE.stop)
_OFF = slice(events.NOTE_OFF_RANGE.first, events.NOTE_OFF_RANGE.stop)
_PITCHES = np.arange(events.MIDI_PITCHES)
_WINDOW_STEPS = events.time_to_step(DENSITY_WINDOW_S)
_DRONE_STEPS = events.time_to_step(DRONE_S)
_SHIFT_FIRST = events.TIME_SHIFT_RANGE.first


@dataclass(frozen=True, slots=True)
class PlayState:
    """The generator's state after a step. `time` is what the player schedules by."""

    rnn: State
    token: int                      # the last token, fed at the next step
    decoder: TokenDecoder           # never mutated once in a PlayState: copied to advance
    # (model pitch, pitch it sounds at, start time) of each sounding note: the model's
    # pitch and the heard one differ by an octave at the register's edges.
    sounding: tuple[tuple[int, int, float], ...] = ()
    events_at_once: int = 0         # steps since time last moved
    recent: tuple[tuple[float, int], ...] = ()  # (time, heard pitch) of the last note-ons
    octave: int = 0                 # the octave the last step's notes sounded at
    band: tuple[int, int] | None = None  # the density band in force (note-ons per window)
    band_since: float = 0.0         # when it came into force
    # The 10 ms step of each of `recent` (in order): the windows the rules count over
    # are found by bisection instead of converting every time at every step.
    recent_steps: tuple[int, ...] = ()
    # The model pitch of a note kept sounding through a density wait (-1: none): it ends
    # when the wait is over, where the model would have struck the next note.
    sustained: int = -1
    # The most note-ons per window the band's pro rata allows: its top, or its middle when
    # the band came down from a denser one (see _density_limits).
    band_pace: float = 0.0
    # The model pitch of the one note sounding at a control change's cut (-1: none): it
    # sounds on until the next note-on, which ends it first (see wait_until).
    legato: int = -1
    # A note-on token that the next step plays (-1: none): the one sampled while the
    # legato note sounded, after that note's end.
    then: int = -1

    @property
    def time(self) -> float:
        return self.decoder.time

    @property
    def last_onset(self) -> float:
        """When the last note-on sounded (0 before any)."""
        return self.recent[-1][0] if self.recent else 0.0

    def window(self, steps: int = 0) -> tuple[tuple[float, int], ...]:
        """The recent note-ons of the last `steps` 10 ms steps (default: DENSITY_WINDOW_S,
        the window `livegen eval` judges by)."""
        start = self.decoder.step - (steps or _WINDOW_STEPS)
        return self.recent[bisect.bisect_right(self.recent_steps, start):]

    def count_since(self, time: float) -> int:
        """How many of the recent note-ons lie at or after `time` (on the 10 ms grid)."""
        since = events.time_to_step(time)
        return len(self.recent_steps) - bisect.bisect_left(self.recent_steps, since)


@dataclass(frozen=True, slots=True)
class Asked:
    """What the performer's controls ask of the model: the driven values encoded
    (`driven` marks them), the register to steer to, the asked note-ons per second."""

    vector: np.ndarray
    driven: np.ndarray
    target: float | None
    band: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Plan:
    """What one step is played under: the model's controls, the octave its notes sound
    at, and the register to steer to (None: the pitch is not asked)."""

    vector: np.ndarray
    octave: int                      # semitones added to the model's pitches
    target: float | None
    band: tuple[int, int] | None = None  # note-ons per window asked (None: not asked)


class CharRNNStep:
    """A loaded Char-RNN that the StepPlayer can run."""

    name = "charrnn"

    def __init__(self, model: CharRNN, *, seed: int, max_held_s: float = MAX_HELD_S,
                 steer: bool = True, copy_index: CopyIndex | None = None,
                 guide: Guide | None = None, free: str | None = None,
                 guards: bool = True) -> None:
        self.model = model
        self.seed = seed
        self.max_held_s = max_held_s
        self.steer = steer
        self.guards = guards
        self.copy_index = copy_index
        self.guide = guide
        self.free = free or default_free(model, guide)
        if self.free not in FREE_POLICIES:
            raise ValueError(f"free {self.free!r}: use one of {', '.join(FREE_POLICIES)}")
        if self.free == "unasked" and not model.understands_unasked:
            raise ValueError(f"{model.path.name} was not trained with unasked controls; "
                             "use free='guide' or 'self'")
        if self.free == "guide" and guide is None:
            raise ValueError("free='guide' needs the guide shipped beside the model")
        self._guide_offset = guide.offset(seed) if guide is not None else 0.0
        self._asked_cache: tuple[Controls, dict[int, Asked]] | None = None
        # Steps (by index) at which each guard changed the note played; a step
        # regenerated after a rollback replaces its entry, so the counts follow the music
        # that is played. A restart (initial()) carries them over.
        self._copy_steps: dict[int, int] = {}
        self._rest_steps: dict[int, int] = {}
        self._carried = {"copy_guard": 0, "rest_guard": 0}
        # The model's seconds are beats at the tempo its data were played at (the
        # manifest's): at 60 bpm its music goes half as fast as at 120.
        self.seconds_per_beat = 60.0 / model.tempo_bpm

    @classmethod
    def from_config(cls, config: CharRNNConfig, *, seed: int) -> CharRNNStep:
        model = CharRNN.from_config(config)
        copy_index, guide = load_copy_index(model), load_guide(model)
        player = cls(model, seed=seed, copy_index=copy_index, guide=guide)
        log.info("charrnn: %s (%s) on %s; undriven controls: %s; copy guard over %d "
                 "training runs of %d notes", model.path.name, model.variant,
                 ", ".join(model.providers), player.free,
                 len(copy_index) if copy_index else 0, copy_index.run if copy_index else 0)
        player.warm_up()
        return player

    def warm_up(self, steps: int = 32) -> None:
        """Run a few steps before the show: ONNX Runtime's first runs are slow (memory
        planning, thread pools), and the first control change should not pay for it."""
        state, controls = self.initial(), Controls()
        for index in range(steps):
            state, _ = self.step(state, controls, index)
        self._copy_steps.clear()
        self._rest_steps.clear()
        self._carried = dict.fromkeys(self._carried, 0)

    def figures(self) -> dict[str, int]:
        """The guards' interventions in the music planned (StepPlayer.figures)."""
        return {"copy_guard": self._carried["copy_guard"] + len(self._copy_steps),
                "rest_guard": self._carried["rest_guard"] + len(self._rest_steps)}

    # ------------------------------------------------------------ the contract

    def initial(self) -> PlayState:
        self._carried["copy_guard"] += len(self._copy_steps)
        self._carried["rest_guard"] += len(self._rest_steps)
        self._copy_steps, self._rest_steps = {}, {}
        decoder = TokenDecoder()
        decoder.feed(self.model.primer_token)
        return PlayState(self.model.initial_state(), self.model.primer_token, decoder)

    def step(self, state: PlayState, controls: Controls,
             index: int) -> tuple[PlayState, Sequence[TimedEvent]]:
        plan = self.plan(state, controls)
        if plan.band != state.band:  # a new density band: reached from here, pro rata
            pace = (0.0 if plan.band is None
                    else plan.band[1] if state.band is None or state.band[0] <= plan.band[0]
                    else sum(plan.band) / 2)
            state = dataclasses.replace(state, band=plan.band, band_since=state.time,
                                        band_pace=pace)
        logits, rnn = self.model.step(state.token, plan.vector, state.rnn)
        if state.then >= 0:  # the note-on that the legato note's end made way for
            return self._advance(state, rnn, state.then, plan.octave)
        held = self._held_over(state)
        if held >= 0:  # it may end only where the next note starts
            logits = logits.copy()
            logits[events.NOTE_OFF_RANGE.token(held)] = -np.inf
        steering = self.steer and self._steering(state, plan)
        deadline = self._rest_deadline(state, plan, steering)
        # A note-on that a rule brings forward (rest, steering, the density band) ends what
        # sounds first, as the corpus ends a note when it strikes the next. (A band's note
        # left sounding on stacked chords: density 0.5 held, 42 % of the time four notes
        # sounded, against 3 % in the held-out music.)
        limits = self._density_limits(state)  # once a step: _sampled reads it too
        if limits is not None and limits[2] is not None:
            deadline = limits[2] if deadline is None else min(deadline, limits[2])
        # The band full: a note-on waits, unless it answers a register change (a pitch jump
        # is answered at once, whatever the density).
        answering = steering and _reached(state, deadline)
        waiting = limits is not None and limits[0] >= limits[1] and not answering
        token = self._forced(state, plan, deadline, waiting)
        sustain = -1
        if (limits is not None and limits[2] is not None and token is None
                and len(state.sounding) >= MAX_POLYPHONY and _reached(state, deadline)):
            # The band's note-on is due and four notes sound: the oldest ends first.
            oldest = min(state.sounding, key=lambda note: note[2])
            token = events.NOTE_OFF_RANGE.token(oldest[0])
        if token is None:
            token, sustain = self._sampled(logits, state, controls, plan, index, steering,
                                           deadline, limits if waiting else None)
            if held >= 0 and token in events.NOTE_ON_RANGE:
                return self._advance(state, rnn, events.NOTE_OFF_RANGE.token(held),
                                     plan.octave, then=token)
        return self._advance(state, rnn, token, plan.octave, sustain)

    def wait_until(self, state: PlayState, time: float, controls: Controls,
                   index: int) -> PlayState:
        """Advanced silently to `time`. A single note sounding there sounds on until the
        model strikes the next (`legato`): the model, made to re-decide at a control
        change's cut in the middle of its note, ended it and rested in one cut in seven
        (13 % of a random walk's time silent, against 2.5 % in the corpus)."""
        steps = events.time_to_step(time) - state.decoder.step
        plan = self.plan(state, controls)
        if state.then >= 0:  # chosen under the old controls: the new ones choose again
            state = dataclasses.replace(state, then=-1)
        while steps > 0:
            shift = min(steps, events.MAX_SHIFT_STEPS)
            _logits, rnn = self.model.step(state.token, plan.vector, state.rnn)
            state, _ = self._advance(state, rnn, events.TIME_SHIFT_RANGE.token(shift),
                                     plan.octave)
            steps -= shift
        if self.guards and LEGATO and len(state.sounding) == 1:
            state = dataclasses.replace(state, legato=state.sounding[0][0])
        return state

    @staticmethod
    def _held_over(state: PlayState) -> int:
        """The legato note's model pitch while it is the one note sounding, else -1."""
        if state.legato >= 0 and len(state.sounding) == 1 and \
                state.sounding[0][0] == state.legato:
            return state.legato
        return -1

    def changed(self, old: Controls, new: Controls, threshold: float) -> bool:
        if old.undriven != new.undriven:
            return True
        if "key" not in new.undriven and old.key != new.key:
            return True
        for name in ("pitch", "density"):
            if name not in new.undriven:
                a, b = getattr(old, name), getattr(new, name)
                if self.model.encoding == "soft":
                    if abs(a - b) > threshold:
                        return True
                elif features.control_bin(a, 10) != features.control_bin(b, 10):
                    return True
        return (abs(old.temperature - new.temperature) > threshold
                or abs(old.top_p - new.top_p) > threshold
                or abs(old.velocity - new.velocity) > 5 * threshold)

    def dynamics(self, event: TimedEvent, beat: float, beats_per_bar: int,
                 controls: Controls) -> int:
        """The velocity a note-on is sent with (see shaped_velocity): the player passes
        the clock beat the note falls on."""
        centre = (features.NEUTRAL_PITCH if "pitch" in controls.undriven
                  else features.pitch_at_position(controls.pitch * (features.PITCH_BINS - 1)))
        return shaped_velocity(event.velocity, event.pitch, beat, beats_per_bar,
                               controls.velocity_scale, centre)

    # ------------------------------------------------------------ what the model is told

    def plan(self, state: PlayState, controls: Controls) -> Plan:
        """The model's controls for the next step, the octave, the register to steer to."""
        octave = self._octave(controls, state.octave)
        asked = self._asked(controls, octave)
        if asked.driven.all() or self.free == "unasked":
            return Plan(asked.vector, octave, asked.target, asked.band)
        if self.free == "guide":
            free = self.guide.at(state.time + self._guide_offset)
        else:
            free = self.model.vector(*self._own_music(state))
        return Plan(np.where(asked.driven, asked.vector, free), octave, asked.target,
                    asked.band)

    def _position(self, controls: Controls) -> float | None:
        """The asked pitch position (a one-hot model's: its bin), None if not asked."""
        if "pitch" in controls.undriven:
            return None
        if self.model.encoding == "onehot":
            return float(features.control_bin(controls.pitch, features.PITCH_BINS))
        return controls.pitch * (features.PITCH_BINS - 1)

    def _octave(self, controls: Controls, current: int) -> int:
        """The octave the model's notes sound at: 0 inside OCTAVE_INSIDE, 12 above, -12
        below; the one in force is kept until the position is OCTAVE_HOLD past the edge,
        so a hand resting near it does not flip the register to and fro."""
        position = self._position(controls)
        if position is None:
            return 0
        low, high = OCTAVE_INSIDE
        if current == 12 and position > high - OCTAVE_HOLD:
            return 12
        if current == -12 and position < low + OCTAVE_HOLD:
            return -12
        if position > high + (OCTAVE_HOLD if current == 0 else 0):
            return 12
        if position < low - (OCTAVE_HOLD if current == 0 else 0):
            return -12
        return 0

    def _asked(self, controls: Controls, octave: int) -> Asked:
        """What the performer asks of the model, encoded for the model playing `octave`
        semitones away from where it sounds, and which values that fills. Controls are
        immutable and one snapshot serves many steps: its encodings are kept."""
        cached = self._asked_cache
        if cached is not None and cached[0] is controls and octave in cached[1]:
            return cached[1][octave]
        model = self.model
        free = set(controls.undriven)
        if controls.key == NO_KEY:
            free.add("key")  # no key: the music chooses its own
        driven = np.ones(features.CONTROL_SIZE, bool)
        middle = (features.PITCH_BINS - 1) / 2
        pitch = density = middle
        position = self._position(controls)
        target = None
        if position is None:
            driven[features.PITCH_SLICE] = False
        else:
            target = features.pitch_at_position(position)
            pitch = position - octave // 12 * OCTAVE_BINS
        band = None
        if "density" in free:
            driven[features.DENSITY_SLICE] = False
        else:
            density = controls.density * (features.DENSITY_BINS - 1)
            if model.encoding == "onehot":
                density = float(features.control_bin(controls.density, features.DENSITY_BINS))
            band = density_band(features.control_bin(controls.density, features.DENSITY_BINS))
        key = None if "key" in free else controls.key
        histogram = np.full(12, 1 / 12) if key is None else model.key_histogram(key)
        if key is None:
            driven[features.HISTOGRAM_SLICE] = False
        vector = model.vector(pitch, density, histogram)
        if self.free == "unasked":
            vector = np.where(driven, vector, 0).astype(np.float32)
        asked = Asked(vector, driven, target, band)
        if cached is None or cached[0] is not controls:
            self._asked_cache = (controls, {})
        self._asked_cache[1][octave] = asked
        return asked

    @staticmethod
    def _own_music(state: PlayState) -> tuple[float, float, np.ndarray]:
        """(pitch position, density position, histogram) of the note-ons of the last
        SELF_WINDOW_S: the controls that would have described that music in training (the
        neutral middle and no key before there is any)."""
        since = state.time - SELF_WINDOW_S
        pitches = [p for t, p in state.recent if t >= since]
        if not pitches:
            middle = (features.PITCH_BINS - 1) / 2
            return middle, middle, np.full(12, 1 / 12)
        histogram = np.bincount(np.asarray(pitches) % 12, minlength=12) / len(pitches)
        return (float(features.pitch_position(sum(pitches) / len(pitches))),
                float(features.density_position(len(pitches) / SELF_WINDOW_S)), histogram)

    # ------------------------------------------------------------ sampling and its rules

    def _forced(self, state: PlayState, plan: Plan, deadline: float | None,
                waiting: bool = False) -> int | None:
        """A token the rules impose instead of sampling, or None: the end of a note held
        too long, or left sounding an octave or more from the asked register (a hand that
        moves lets go of where it was), or struck before a note-on the rules bring forward
        (the model would have ended it when it chose to play on), or a shift after too many
        events at once."""
        now = state.decoder.time
        due = _reached(state, deadline)
        if state.sustained >= 0 and not waiting and any(
                model == state.sustained for model, _, _ in state.sounding):
            return events.NOTE_OFF_RANGE.token(state.sustained)
        for model_pitch, pitch, started in state.sounding:
            held_out = events.time_to_step(started + self.max_held_s) <= state.decoder.step
            if held_out or (self.guards and now > started and (
                    due or (plan.target is not None
                    and abs(pitch - plan.target) >= LEFT_BEHIND))):
                return events.NOTE_OFF_RANGE.token(model_pitch)
        if state.events_at_once >= MAX_EVENTS_AT_ONCE:
            return _ONE_STEP_SHIFT
        return None

    def _sampled(self, logits: np.ndarray, state: PlayState, controls: Controls, plan: Plan,
                 index: int, steering: bool, deadline: float | None,
                 waiting: tuple[int, int, float | None, float] | None) -> tuple[int, int]:
        """Sample the next token under the rules (see the module docstring); `waiting`:
        the density limits when the band holds note-ons back, else None. Returns the token
        and the model pitch it sustains through the wait (-1: none; see PlayState)."""
        heard = _PITCHES + plan.octave  # what each note-on token would sound at
        if plan.target is not None and self.guards and REGISTER_PULL:
            logits = logits.copy()
            logits[_ON] -= REGISTER_PULL * ((heard - plan.target) / REGISTER_SPREAD) ** 2
        p = softmax(logits, controls.temperature)
        allowed = (heard >= 0) & (heard < events.MIDI_PITCHES)
        if steering:
            allowed &= np.abs(heard - plan.target) <= STEER_BAND
        if self.guards:
            allowed &= self._playable(state, heard)
            varied = _not_droning(state, heard)
            if (allowed & varied).any():
                allowed &= varied
            if plan.target is not None and not steering:
                in_band = self._pitch_in_band(state, heard, plan.target)
                if (allowed & in_band).any():
                    allowed &= in_band
        wait_until, sustain = None, -1
        if waiting is not None:
            # One more note-on would leave the density band: the music waits, in one
            # shift, until one is allowed (the note-on mass goes to the time shifts, and a
            # wait taken in small steps would give the model a chance to end what sounds
            # at each). A single note sounding sounds on: the note-off mass goes there too.
            if self.guards and len(state.sounding) == 1:
                sustain = state.sounding[0][0]
            p = _waiting(p, sustain >= 0)
            allowed = ~_ALL_PITCHES
            wait_until = waiting[3]
        base = _keep_note_ons(p, allowed)
        guarded, forbidden = base, None
        if self.copy_index is not None:
            copies = self.copy_index.forbidden([pitch for _, pitch in state.recent])
            if len(copies):
                forbidden = np.zeros(events.MIDI_PITCHES, bool)
                models = copies - plan.octave  # the note-on tokens that sound at them
                forbidden[models[(models >= 0) & (models < events.MIDI_PITCHES)]] = True
                guarded = _keep_note_ons(base, allowed & ~forbidden)
        must_play = _reached(state, deadline)

        releasable = np.zeros(events.MIDI_PITCHES, bool)
        if must_play:
            releasable[[model for model, _, _ in state.sounding]] = True

        def final(q: np.ndarray, play: bool) -> np.ndarray:
            # A note-on is due: nothing but it, or first the end of a sounding note (the
            # corpus ends a note, then strikes the next, at the same moment).
            if play and q[_ON].sum() > 0:
                q = q.copy()
                q[_ON.stop:] = 0
                q[_OFF] *= releasable
            return nucleus(q / q.sum(), controls.top_p)

        u = uniform(self.seed, index)
        token = draw(final(guarded, must_play), u)
        # Each guard is counted where it changed the note: the same draw without it would
        # have struck a forbidden note, or would not have struck one.
        copied = forbidden is not None and _is_one_of(draw(final(base, must_play), u),
                                                      forbidden)
        rested = must_play and not steering and draw(final(guarded, False), u) >= _ON.stop
        for taken, steps in ((copied, self._copy_steps), (rested, self._rest_steps)):
            if taken:
                steps[index] = 1
            elif steps:
                steps.pop(index, None)
        if wait_until is not None and token in events.TIME_SHIFT_RANGE:
            room = min(events.time_to_step(wait_until) - state.decoder.step,
                       events.MAX_SHIFT_STEPS)
            if room > events.TIME_SHIFT_RANGE.value(token):
                token = events.TIME_SHIFT_RANGE.token(room)
        return self._clipped(state, token, deadline), sustain

    def _density_limits(self, state: PlayState
                        ) -> tuple[int, int, float | None, float] | None:
        """Density in its band (see the module docstring): (note-ons counted now, the most
        allowed now, the time by which a note-on must come to keep the fewest, the time
        from which one more is allowed), or None where density is not asked."""
        if state.band is None or not self.guards:
            return None
        fewest, most = state.band
        step = state.decoder.step
        window = _WINDOW_STEPS
        since = events.time_to_step(state.band_since)
        elapsed = step - since
        if elapsed >= window:  # the whole window lies in the band's time
            times = [t for t, _ in state.window()]
            counted = len(times)
            if counted < fewest:
                deadline = state.time
            elif fewest > 0:  # when one too many of the counted notes has left the window
                deadline = times[counted - fewest] + DENSITY_WINDOW_S
            else:
                deadline = None
            free_at = (times[counted - most] + DENSITY_WINDOW_S if counted >= most
                       else state.time)
            return counted, most, *_on_pulse(state, deadline, free_at)
        counted = state.count_since(state.band_since)
        share = elapsed / window
        most_now = max(1, math.ceil(most * share - 1e-9))
        deadline = None
        if fewest > 0:  # pro rata: the k-th note-on since by k / fewest of the window
            deadline = state.band_since + DENSITY_WINDOW_S * min(1.0, (counted + 1) / fewest)
            if counted >= fewest:
                deadline = None
        free_at = state.band_since + DENSITY_WINDOW_S * min(
            1.0, counted / max(state.band_pace, 1))
        return counted, most_now, *_on_pulse(state, deadline, free_at)

    @staticmethod
    def _pitch_in_band(state: PlayState, heard: np.ndarray, target: float) -> np.ndarray:
        """Note-ons that keep the mean pitch of the last DENSITY_WINDOW_S (the window
        `livegen eval` judges by) inside the asked pitch bin, PITCH_MARGIN inside its
        edges, or move it towards the bin when it lies outside."""
        band = features.pitch_bin(target)
        width = features.PITCH_BIN_WIDTH
        low = (features.PITCH_LOW + band * width + PITCH_MARGIN) if band > 0 else -math.inf
        high = (features.PITCH_LOW + (band + 1) * width - PITCH_MARGIN
                if band < features.PITCH_BINS - 1 else math.inf)
        pitches = [p for _, p in state.window()]
        total, count = float(sum(pitches)), len(pitches)
        after = (total + heard) / (count + 1)
        inside = (after >= low) & (after <= high)
        if count:
            mean = total / count
            if mean < low:
                inside |= after > mean
            elif mean > high:
                inside |= after < mean
        return inside

    def _steering(self, state: PlayState, plan: Plan) -> bool:
        """Whether the recent notes lie far from the asked register (see the docstring)."""
        if plan.target is None or not state.recent:
            return False
        recent = state.recent[-STEER_NOTES:]
        return abs(sum(p for _, p in recent) / len(recent) - plan.target) > STEER_AFTER

    @staticmethod
    def _playable(state: PlayState, heard: np.ndarray) -> np.ndarray:
        """Note-ons that strike no sounding note, make no cluster (three notes within
        CLUSTER_SPAN semitones) and stay within MAX_POLYPHONY."""
        if not state.sounding:
            return _not_repeated(state, heard)
        if len(state.sounding) >= MAX_POLYPHONY:
            return ~_ALL_PITCHES
        sounding = sorted(pitch for _, pitch, _ in state.sounding)
        playable = _not_repeated(state, heard).copy()
        for pitch in sounding:
            playable &= heard != pitch
        for i, low in enumerate(sounding):
            for high in sounding[i + 1:]:
                if high - low <= CLUSTER_SPAN:  # a third note between high - 3 and low + 3
                    playable &= (heard < high - CLUSTER_SPAN) | (heard > low + CLUSTER_SPAN)
        return playable

    def _rest_deadline(self, state: PlayState, plan: Plan, steering: bool) -> float | None:
        """The time by which a note-on must come: MAX_REST_S after the last; while
        steering and no note has sounded in the new register, ANSWER_REST_S after it."""
        if not self.guards:
            return None
        deadline = state.last_onset + MAX_REST_S
        if steering and abs(state.recent[-1][1] - plan.target) > STEER_BAND:
            deadline = min(deadline, state.last_onset + ANSWER_REST_S)
        return deadline

    def _clipped(self, state: PlayState, token: int, deadline: float | None) -> int:
        """A time shift cut short so that it ends when the longest-held note is due to be
        ended or a note-on is due (the next step then does it)."""
        if token not in events.TIME_SHIFT_RANGE:
            return token
        dues = [started + self.max_held_s for _, _, started in state.sounding]
        if deadline is not None:
            dues.append(deadline)
        if not dues:
            return token
        room = events.time_to_step(min(dues)) - state.decoder.step
        if 0 < room < events.TIME_SHIFT_RANGE.value(token):
            return events.TIME_SHIFT_RANGE.token(room)
        return token

    def _advance(self, state: PlayState, rnn: State, token: int, octave: int,
                 sustain: int = -1, then: int = -1) -> tuple[PlayState, list[TimedEvent]]:
        decoder = state.decoder.copy()
        before = decoder.step
        emitted = decoder.feed(token)
        sounding, recent, steps = state.sounding, state.recent, state.recent_steps
        heard: list[TimedEvent] = []
        if emitted:
            notes = {model: (pitch, started) for model, pitch, started in sounding}
            for event in emitted:
                if event.velocity:
                    pitch = event.pitch + octave
                    notes[event.pitch] = (pitch, event.time)
                    recent = (*recent, (event.time, pitch))[-RECENT_NOTES:]
                    steps = (*steps, events.time_to_step(event.time))[-RECENT_NOTES:]
                    heard.append(TimedEvent(event.time, pitch, event.velocity))
                else:
                    pitch, _ = notes.pop(event.pitch, (event.pitch, 0.0))
                    heard.append(TimedEvent(event.time, pitch, 0))
            sounding = tuple((model, pitch, started)
                             for model, (pitch, started) in notes.items())
        at_once = 0 if decoder.step != before else state.events_at_once + 1
        # A sustained note stays so through the shifts of its wait, until a note event.
        sustained = -1 if emitted else (sustain if sustain >= 0 else state.sustained)
        legato = state.legato if any(model == state.legato for model, _, _ in sounding) else -1
        return PlayState(rnn, token, decoder, sounding, at_once, recent, octave, state.band,
                         state.band_since, steps, sustained, state.band_pace, legato,
                         then), heard


_ALL_PITCHES = np.ones(events.MIDI_PITCHES, bool)


def density_band(density_bin: int) -> tuple[int, int]:
    """(fewest, most) note-ons per DENSITY_WINDOW_S whose rate lies in `density_bin`
    (features.DENSITY_EDGES; the top bin held to DENSITY_TOP)."""
    edges = features.DENSITY_EDGES
    low = edges[density_bin - 1] if density_bin > 0 else 0.0
    fewest = math.ceil(low * DENSITY_WINDOW_S - 1e-9)
    if density_bin >= len(edges):
        return fewest, DENSITY_TOP
    return fewest, math.ceil(edges[density_bin] * DENSITY_WINDOW_S - 1e-9) - 1


def _not_repeated(state: PlayState, heard: np.ndarray) -> np.ndarray:
    """Note-ons that would not be the (REPEATS + 1)th in a row on one pitch."""
    last = [pitch for _, pitch in state.recent[-REPEATS:]]
    if len(last) < REPEATS or len(set(last)) > 1:
        return _ALL_PITCHES
    return heard != last[0]


def _not_droning(state: PlayState, heard: np.ndarray) -> np.ndarray:
    """Note-ons that would make no drone: DRONE_NOTES or more note-ons on at most two
    pitches in a window of DRONE_S (the failure `livegen eval` counts; at the lowest pitch
    bin the model swung between two bass notes for many seconds).

    A window may start anywhere, so the last DRONE_S is not the only one to judge: each
    run of the latest note-ons that a window could hold alone is. A window starting after
    `previous` (the note-on before the run) holds the run and the new note; it closes
    before a further note-on only if it starts MAX_REST_S or more before now (a note-on
    comes within MAX_REST_S), so later runs are left to the next note-on's turn. Judging
    only the last DRONE_S let four note-ons on one pitch a second apart through (notes
    before them, still in that window, had other pitches): 6 drone windows in 168 runs of
    60 s of `livegen eval`'s conditions, none with every run judged."""
    window = state.window(_DRONE_STEPS)
    banned: set[int] = set()
    pitches: set[int] = set()
    closing = state.time - MAX_REST_S
    for i in range(len(window) - 1, -1, -1):
        start, pitch = window[i]
        pitches.add(pitch)
        if len(pitches) > 2:
            break
        previous = window[i - 1][0] if i else -math.inf
        if len(window) - i + 1 >= DRONE_NOTES and previous < min(start, closing):
            banned |= pitches
    if not banned:
        return _ALL_PITCHES
    return ~np.isin(heard, list(banned))


def _on_pulse(state: PlayState, deadline: float | None, free_at: float
              ) -> tuple[float | None, float]:
    """The band's times moved onto the line's pulse (PULSE_S steps from its last
    note-on), as the corpus places notes: the deadline to the last pulse before it, the
    time a note is free to come to the first pulse after it, where a pulse lies between
    the two (else both stay). The pro rata alone put notes between the 16ths
    (inter-onset intervals of 0.25-0.32 s: 9 % of a random walk's notes, against 4 % in
    the held-out music)."""
    origin = state.last_onset
    free = origin + math.ceil((free_at - origin) / PULSE_S - 1e-6) * PULSE_S
    if deadline is None:
        return None, free
    due = origin + math.floor((deadline - origin) / PULSE_S + 1e-6) * PULSE_S
    if due < free_at:
        return deadline, free_at
    return due, free


def _reached(state: PlayState, deadline: float | None) -> bool:
    """Whether the music stands at or past `deadline` (on the 10 ms grid)."""
    return deadline is not None and events.time_to_step(deadline) <= state.decoder.step


def _is_one_of(token: int, pitches: np.ndarray) -> bool:
    """Whether the token is the note-on of one of the pitches (a mask over note-ons)."""
    return token < _ON.stop and bool(pitches[token - _ON.start])


_SHIFTS = slice(events.TIME_SHIFT_RANGE.first, events.TIME_SHIFT_RANGE.stop)


def _waiting(p: np.ndarray, sustain: bool = False) -> np.ndarray:
    """p with its note-on probability (with `sustain`, its note-off probability too)
    given to the time shifts in proportion."""
    shifts = p[_SHIFTS]
    if shifts.sum() <= 0:
        return p
    p = p.copy()
    moved = p[_ON].sum() + (p[_OFF].sum() if sustain else 0.0)
    p[_SHIFTS] = shifts * (1 + moved / shifts.sum())
    p[_ON] = 0.0
    if sustain:
        p[_OFF] = 0.0
    return p


def _keep_note_ons(p: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """p with the note-ons outside `allowed` removed and their probability given to the
    allowed note-ons in proportion (all of it leaves the note-ons when none is allowed or
    the allowed ones have none)."""
    if allowed.all():
        return p
    on = p[_ON]
    kept = on * allowed
    total, kept_total = on.sum(), kept.sum()
    p = p.copy()
    p[_ON] = kept * (total / kept_total) if kept_total > 0 else 0.0
    return p


FREE_POLICIES = ("guide", "unasked", "self")


def default_free(model: CharRNN, guide: Guide | None) -> str:
    """How undriven controls are sent by default: the manifest's choice, else "unasked"
    where the model learned to read it, else the guide where one ships, else its own
    music."""
    chosen = model.manifest.get("free_controls")
    if chosen in FREE_POLICIES and (chosen != "guide" or guide is not None) \
            and (chosen != "unasked" or model.understands_unasked):
        return chosen
    if model.understands_unasked:
        return "unasked"
    return "guide" if guide is not None else "self"


def load_guide(model: CharRNN) -> Guide | None:
    """The guide from the validation pieces shipped beside the model (None for a model
    that ships none)."""
    if "guide" not in model.manifest.get("data", {}):
        return None
    return Guide.from_file(model, model.data_file("guide"))


def load_copy_index(model: CharRNN) -> CopyIndex | None:
    """The copy guard's index from the training notes shipped beside the model (None,
    logged, for a model that ships none)."""
    if "train_notes" not in model.manifest.get("data", {}):
        log.warning("%s ships no training notes: the copy guard is off",
                    model.manifest_path.name)
        return None
    return CopyIndex.from_file(model.data_file("train_notes"))


# ---------------------------------------------------------------- dynamics
# A rule, not a net: the training scores carry no dynamics. Velocity = the model's velocity
# x the velocity control x (1 + metric accent + phrase arch + height), the shaping held to
# SHAPE_LIMITS so the velocity control stays the loudest influence.
DOWNBEAT, MIDBAR, BEAT, OFFBEAT, OFFGRID = 0.14, 0.07, 0.02, -0.05, -0.10
PHRASE_BARS = 4             # the arch: softer at both ends of four bars, louder in the middle
PHRASE_DEPTH = (-0.08, 0.10)
HEIGHT_PER_SEMITONE = 0.006  # higher notes a little louder than the register's middle
HEIGHT_LIMIT = 0.06
SHAPE_LIMITS = (0.8, 1.25)
_ON_GRID = 0.02             # beats: how close to a beat or an offbeat counts as on it


def metric_accent(beat: float, beats_per_bar: int) -> float:
    """The accent of a note at clock beat `beat`: the bar's downbeat strongest, the
    middle of an even bar next, other beats, offbeat eighths softer, the rest softest."""
    position = beat % beats_per_bar
    nearest = round(position)
    if abs(position - nearest) <= _ON_GRID:
        nearest %= beats_per_bar
        if nearest == 0:
            return DOWNBEAT
        if beats_per_bar % 2 == 0 and beats_per_bar >= 4 and nearest == beats_per_bar // 2:
            return MIDBAR
        return BEAT
    if abs(position % 1 - 0.5) <= _ON_GRID:
        return OFFBEAT
    return OFFGRID


def phrase_arch(beat: float, beats_per_bar: int) -> float:
    """The phrase's dynamic at `beat`: a sine arch over PHRASE_BARS bars of the clock."""
    length = PHRASE_BARS * beats_per_bar
    low, high = PHRASE_DEPTH
    return low + (high - low) * math.sin(math.pi * (beat % length) / length)


def shaped_velocity(velocity: int, pitch: int, beat: float, beats_per_bar: int,
                    scale: float, centre: float) -> int:
    """The MIDI velocity (1..127) of a note-on the model played at `velocity`, at clock
    beat `beat`, under the velocity control's `scale`, with the register's middle at
    `centre`."""
    height = max(-HEIGHT_LIMIT, min(HEIGHT_LIMIT, HEIGHT_PER_SEMITONE * (pitch - centre)))
    shape = 1 + metric_accent(beat, beats_per_bar) + phrase_arch(beat, beats_per_bar) + height
    shape = min(SHAPE_LIMITS[1], max(SHAPE_LIMITS[0], shape))
    return min(127, max(1, round(velocity * scale * shape)))

