"""The Char-RNN as a live step generator (the StepGenerator contract of generators/step.py).

One step = one token: feed the last token with the controls for what should follow, sample
the next, decode it to timed note events. The state after each step is an immutable value
(the recurrent state, the last token, the decoder), so the player keeps one per planned
event and a rollback is "carry on from the one saved there".

Two rules keep the music playable whatever the model samples: a note held for
`max_held_s` is ended (a time shift past that moment is cut short there, and a note-off
token is forced instead of sampling), and a run of steps without any time passing is cut
short by a forced time shift, so a model stuck on note events cannot stall the plan.

Steering makes a register change answer at once. The model's pitch control describes the
mean pitch of the next 3 s (as in training), so on its own it glides to a new register
over one to three seconds. While the last few notes played lie far from the register the
control asks for, note-ons outside a band around it are masked before sampling: the model
still chooses rhythm, pitch within the band and when to play, and as its own recent notes
reach the register the mask lifts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from livegen.config import CharRNNConfig
from livegen.control import Controls
from livegen.generators.charrnn import CharRNN, State, control_vector, sample, uniform
from livegen.music import events, features
from livegen.music.events import TimedEvent, TokenDecoder

log = logging.getLogger(__name__)

MAX_HELD_S = 4.0            # longer notes are ended by a forced note-off
MAX_EVENTS_AT_ONCE = 24     # steps in a row without time passing before a forced shift
STEER_AFTER = 4.0           # steer when recent notes are this far (semitones) from the target
STEER_BAND = 12             # note-ons allowed while steering: target +- this many semitones
RECENT_NOTES = 16           # how many note-ons "recent" means (about 4 s of music)
_ONE_STEP_SHIFT = events.TIME_SHIFT_RANGE.token(1)
_NOTE_ON_PITCHES = np.arange(events.MIDI_PITCHES)


@dataclass(frozen=True, slots=True)
class PlayState:
    """The generator's state after a step. `time` is what the player schedules by."""

    rnn: State
    token: int                      # the last token, fed at the next step
    decoder: TokenDecoder           # never mutated once in a PlayState: copied to advance
    onsets: tuple[tuple[int, float], ...]  # (pitch, start time) of the sounding notes
    events_at_once: int = 0         # steps since time last moved
    recent: tuple[int, ...] = ()    # the last RECENT_NOTES note-on pitches

    @property
    def time(self) -> float:
        return self.decoder.time


class CharRNNStep:
    """A loaded Char-RNN that the StepPlayer can run."""

    name = "charrnn"

    def __init__(self, model: CharRNN, *, seed: int, max_held_s: float = MAX_HELD_S,
                 steer: bool = True) -> None:
        self.model = model
        self.seed = seed
        self.max_held_s = max_held_s
        self.steer = steer
        self._vector_cache: tuple[Controls, np.ndarray] | None = None
        # The model's seconds are beats at the tempo its data were played at (the
        # manifest's): at 60 bpm its music goes half as fast as at 120.
        self.seconds_per_beat = 60.0 / model.tempo_bpm

    @classmethod
    def from_config(cls, config: CharRNNConfig, *, seed: int) -> CharRNNStep:
        model = CharRNN.from_config(config)
        log.info("charrnn: %s (%s) on %s", model.path.name, model.variant,
                 ", ".join(model.providers))
        player = cls(model, seed=seed)
        player.warm_up()
        return player

    def warm_up(self, steps: int = 32) -> None:
        """Run a few steps before the show: ONNX Runtime's first runs are slow (memory
        planning, thread pools), and the first control change should not pay for it."""
        state, controls = self.initial(), Controls()
        for index in range(steps):
            state, _ = self.step(state, controls, index)

    # ------------------------------------------------------------ the contract

    def initial(self) -> PlayState:
        decoder = TokenDecoder()
        decoder.feed(self.model.primer_token)
        return PlayState(self.model.initial_state(), self.model.primer_token, decoder, ())

    def step(self, state: PlayState, controls: Controls,
             index: int) -> tuple[PlayState, Sequence[TimedEvent]]:
        vector = self.vector(controls)
        logits, rnn = self.model.step(state.token, vector, state.rnn)
        token = self._forced(state)
        if token is None:
            if self.steer:
                logits = self._steered(logits, state, controls)
            token = self._clipped(state, sample(logits, temperature=controls.temperature,
                                                top_p=controls.top_p,
                                                uniform=uniform(self.seed, index)))
        return self._advance(state, rnn, token)

    def wait_until(self, state: PlayState, time: float, controls: Controls,
                   index: int) -> PlayState:
        steps = events.time_to_step(time) - state.decoder.step
        vector = self.vector(controls)
        while steps > 0:
            shift = min(steps, events.MAX_SHIFT_STEPS)
            _logits, rnn = self.model.step(state.token, vector, state.rnn)
            state, _ = self._advance(state, rnn, events.TIME_SHIFT_RANGE.token(shift))
            steps -= shift
        return state

    def changed(self, old: Controls, new: Controls, threshold: float) -> bool:
        if (old.pitch, old.density, old.key) != (new.pitch, new.density, new.key) and \
                not np.array_equal(self.vector(old), self.vector(new)):
            return True
        return (abs(old.temperature - new.temperature) > threshold
                or abs(old.top_p - new.top_p) > threshold
                or abs(old.velocity - new.velocity) > 5 * threshold)

    # ------------------------------------------------------------ helpers

    def vector(self, controls: Controls) -> np.ndarray:
        """The model's 32-value control input. Controls are immutable and the same snapshot
        serves many steps: the last one is remembered."""
        cached = self._vector_cache
        if cached is not None and cached[0] is controls:
            return cached[1]
        vector = control_vector(controls.pitch, controls.density, controls.key_histogram())
        self._vector_cache = (controls, vector)
        return vector

    def _forced(self, state: PlayState) -> int | None:
        """A token the rules impose instead of sampling, or None."""
        now = state.decoder.time
        for pitch, started in state.onsets:
            if now - started >= self.max_held_s:
                return events.NOTE_OFF_RANGE.token(pitch)
        if state.events_at_once >= MAX_EVENTS_AT_ONCE:
            return _ONE_STEP_SHIFT
        return None

    def _clipped(self, state: PlayState, token: int) -> int:
        """A time shift cut short so that it ends when the longest-held note is due to be
        ended (the next step then ends it)."""
        if token not in events.TIME_SHIFT_RANGE or not state.onsets:
            return token
        due = min(started for _, started in state.onsets) + self.max_held_s
        room = events.time_to_step(due) - state.decoder.step
        if 0 < room < events.TIME_SHIFT_RANGE.value(token):
            return events.TIME_SHIFT_RANGE.token(room)
        return token

    def _steered(self, logits: np.ndarray, state: PlayState, controls: Controls) -> np.ndarray:
        """The logits with note-ons far from the asked-for register masked, while the
        recent notes are far from it (see the module's docstring)."""
        if not state.recent:
            return logits
        target = features.pitch_bin_centre(features.control_bin(controls.pitch,
                                                                features.PITCH_BINS))
        if abs(sum(state.recent) / len(state.recent) - target) <= STEER_AFTER:
            return logits
        steered = logits.copy()
        far = np.abs(_NOTE_ON_PITCHES - target) > STEER_BAND
        steered[events.NOTE_ON_RANGE.first:events.NOTE_ON_RANGE.stop][far] = -np.inf
        return steered

    def _advance(self, state: PlayState, rnn: State,
                 token: int) -> tuple[PlayState, list[TimedEvent]]:
        decoder = state.decoder.copy()
        before = decoder.step
        emitted = decoder.feed(token)
        onsets, recent = state.onsets, state.recent
        if emitted:
            sounding = dict(onsets)
            for event in emitted:
                if event.velocity:
                    sounding[event.pitch] = event.time
                    recent = (*recent, event.pitch)[-RECENT_NOTES:]
                else:
                    sounding.pop(event.pitch, None)
            onsets = tuple(sounding.items())
        at_once = 0 if decoder.step != before else state.events_at_once + 1
        return PlayState(rnn, token, decoder, onsets, at_once, recent), emitted
