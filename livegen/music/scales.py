"""Scales as pitch classes (0 = C .. 11 = B), written once: the mapper's key histogram, the
generators' key steering, training's key estimate and the evaluations' in-key counts all
read the major scale from here.
"""

from __future__ import annotations

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)  # semitones above the root


def major_scale(root: int = 0) -> frozenset[int]:
    """The pitch classes of the major scale on `root` (0 = C; any integer, taken mod 12)."""
    return frozenset((root + step) % 12 for step in MAJOR_SCALE)
