"""livegen: a live generative MIDI instrument."""

__version__ = "0.1.0"
