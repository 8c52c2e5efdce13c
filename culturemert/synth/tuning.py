"""Scales as cents above the tonic: 12-tone equal temperament, 53-comma makam intervals,
just-intonation ragas and Greek modes.

A scale lists one octave of degrees; degree ``d`` beyond the octave wraps with an octave shift,
so melodies can range over several octaves of the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

#: The Holdrian comma: one 53rd of an octave, the unit of Arel–Ezgi–Uzdilek makam theory.
HOLDRIAN_COMMA = 1200.0 / 53


@dataclass(frozen=True)
class Scale:
    """One octave of scale degrees in cents above the tonic (ascending, first 0)."""

    name: str
    cents: tuple[float, ...]

    def degree_cents(self, degree: int) -> float:
        """Cents above the tonic of ``degree`` (negative or past the octave: octave-shifted)."""
        octave, step = divmod(degree, len(self.cents))
        return 1200.0 * octave + self.cents[step]


def ratio_to_cents(ratio: float) -> float:
    """Size of a frequency ratio in cents."""
    return 1200.0 * math.log2(ratio)


def equal_tempered(name: str, semitones: tuple[int, ...]) -> Scale:
    """A 12-TET scale from semitone offsets above the tonic."""
    return Scale(name, tuple(100.0 * s for s in semitones))


def from_commas(name: str, steps: tuple[int, ...]) -> Scale:
    """A makam scale from its successive steps in Holdrian commas (they must fill 53)."""
    if sum(steps) != 53:
        raise ValueError(f"makam {name}: steps {steps} sum to {sum(steps)} commas, not 53")
    degrees = [0, *[sum(steps[: i + 1]) for i in range(len(steps) - 1)]]
    return Scale(name, tuple(HOLDRIAN_COMMA * d for d in degrees))


def just(name: str, ratios: tuple[str, ...]) -> Scale:
    """A just-intonation scale from frequency ratios written as fractions ("9/8")."""
    return Scale(name, tuple(ratio_to_cents(float(Fraction(r))) for r in ratios))


WESTERN_MODES = (
    equal_tempered("Major", (0, 2, 4, 5, 7, 9, 11)),
    equal_tempered("Minor", (0, 2, 3, 5, 7, 8, 10)),
    equal_tempered("Pentatonic", (0, 2, 4, 7, 9)),
)

# Steps: T = 9 commas (whole tone), K = 8, S = 5, B = 4, A = 12 (augmented second);
# each makam is its lower tetrachord/pentachord joined to its upper one.
MAKAMS = (
    from_commas("Rast", (9, 8, 5, 9, 9, 8, 5)),  # Rast pentachord + Rast tetrachord
    from_commas("Uşşak", (8, 5, 9, 9, 4, 9, 9)),  # Uşşak tetrachord + Buselik pentachord
    from_commas("Hüseyni", (8, 5, 9, 9, 8, 5, 9)),  # Hüseyni pentachord + Uşşak tetrachord
    from_commas("Hicaz", (5, 12, 5, 9, 8, 5, 9)),  # Hicaz tetrachord + Rast pentachord
    from_commas("Nihavent", (9, 4, 9, 9, 5, 12, 5)),  # Buselik pentachord + Hicaz tetrachord
    from_commas("Kürdi", (4, 9, 9, 9, 4, 9, 9)),  # Kürdi tetrachord + Buselik pentachord
)

HINDUSTANI_RAGAS = (
    just("Yaman", ("1", "9/8", "5/4", "45/32", "3/2", "5/3", "15/8")),
    just("Bhairabi", ("1", "16/15", "6/5", "4/3", "3/2", "8/5", "9/5")),
    just("Bageshree", ("1", "9/8", "6/5", "4/3", "5/3", "16/9")),
    just("Bhupali", ("1", "9/8", "5/4", "3/2", "5/3")),
)

CARNATIC_RAGAS = (
    just("kalyani", ("1", "9/8", "5/4", "45/32", "3/2", "5/3", "15/8")),
    just("thodi", ("1", "16/15", "6/5", "4/3", "3/2", "8/5", "9/5")),
    just("bhairavi", ("1", "9/8", "6/5", "4/3", "3/2", "5/3", "16/9")),
    just("shankarabharanam", ("1", "9/8", "5/4", "4/3", "3/2", "5/3", "15/8")),
    just("mohanam", ("1", "9/8", "5/4", "3/2", "5/3")),
)

GREEK_MODES = (
    equal_tempered("Dorian", (0, 2, 3, 5, 7, 9, 10)),
    equal_tempered("Phrygian", (0, 1, 3, 5, 7, 8, 10)),
    equal_tempered("Hitzaz", (0, 1, 4, 5, 7, 8, 10)),
    equal_tempered("Mixolydian", (0, 2, 4, 5, 7, 9, 10)),
)
