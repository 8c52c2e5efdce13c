"""Metres, usul and tala cycles as accented pulse patterns, and tempo classes.

A cycle is a string with one character per pulse (the metre's unit: eighth note, matra,
akshara), naming the percussion stroke played on it:

- ``D`` bass stroke (düm, thom, kick, the bayan's ge),
- ``T`` treble stroke (tek, ta/na, snare, the dayan's open stroke),
- ``B`` both heads together (dha, tham),
- ``k`` a light filler stroke (ka, hi-hat, a ghost note).

Every pulse carries a stroke, so the pulse rate is audible; the grouping (2+2+2+3 against
3+2+2, the khali of teentaal) is carried by where the bass strokes and accents fall.
"""

from __future__ import annotations

from dataclasses import dataclass

STROKES = frozenset("DTBk")


@dataclass(frozen=True)
class Metre:
    """A rhythmic cycle: its name, its pulse groups and the stroke on each pulse."""

    name: str
    groups: tuple[int, ...]
    strokes: str

    def __post_init__(self) -> None:
        if len(self.strokes) != sum(self.groups):
            raise ValueError(
                f"metre {self.name}: {len(self.strokes)} strokes for groups {self.groups}"
            )
        if not set(self.strokes) <= STROKES:
            raise ValueError(f"metre {self.name}: strokes must be among {sorted(STROKES)}")

    @property
    def pulses(self) -> int:
        """Pulses in one cycle."""
        return len(self.strokes)

    @property
    def group_starts(self) -> frozenset[int]:
        """The pulses that begin a group."""
        return frozenset(sum(self.groups[:i]) for i in range(len(self.groups)))

    def accent(self, pulse: int) -> float:
        """Loudness of a pulse: strongest on the first of the cycle, then on group starts;
        filler strokes are ghost notes, quieter wherever they fall."""
        pulse %= self.pulses
        level = 1.0 if pulse == 0 else 0.75 if pulse in self.group_starts else 0.5
        return level * (0.6 if self.strokes[pulse] == "k" else 1.0)

    def is_group_start(self, pulse: int) -> bool:
        """Whether a pulse begins one of the cycle's groups."""
        return pulse % self.pulses in self.group_starts


@dataclass(frozen=True)
class TempoClass:
    """A named tempo range, in pulses per minute."""

    name: str
    low_bpm: float
    high_bpm: float


# Gaps between the ranges keep every class distinguishable from the audio's pulse rate.
TEMPO_CLASSES = (
    TempoClass("Slow", 70.0, 95.0),
    TempoClass("Medium", 105.0, 135.0),
    TempoClass("Fast", 150.0, 190.0),
)

WESTERN_METRES = (
    Metre("4/4", (2, 2), "DTDT"),
    Metre("3/4", (3,), "DTT"),
)

USULS = (
    Metre("Aksak", (2, 2, 2, 3), "DkTkTkDkk"),  # 9/8
    Metre("Curcuna", (3, 2, 2, 3), "DkkTkDkTkk"),  # 10/8
    Metre("Düyek", (2, 2, 2, 2), "DTkTDkTk"),  # 8/8
    Metre("Yürüksemai", (3, 3), "DkTDTk"),  # 6/8
)

HINDUSTANI_TALAS = (
    # dha dhin dhin dha | dha dhin dhin dha | dha tin tin ta | ta dhin dhin dha
    Metre("Teentaal", (4, 4, 4, 4), "BBBBBBBBBTTTTBBB"),
    Metre("Ektaal", (2, 2, 2, 2, 2, 2), "BBBkTTTTBkBT"),
    Metre("Jhaptaal", (2, 3, 2, 3), "BTBBTTTBBT"),
    Metre("Rupak", (3, 2, 2), "TTTBTBT"),
)

CARNATIC_TALAS = (
    Metre("adi", (4, 2, 2), "BkTkDTBT"),
    Metre("rupaka", (2, 4), "BTDkTk"),
    Metre("mishra", (3, 2, 2), "BkTBTBT"),  # mishra chapu
    Metre("khanda", (2, 3), "BTBkT"),  # khanda chapu
)

GREEK_METRES = (
    Metre("7/8", (3, 2, 2), "DkkTkTk"),  # kalamatianos
    Metre("9/8", (2, 2, 2, 3), "DkTkTkTkk"),  # karsilamas
    Metre("2/4", (2, 2), "DkTk"),  # syrtos
)
