"""Composing a clip's score: scale, cycle, tempo, instruments, a melody on the pulse grid with
ornaments, and one percussion stroke per pulse. All randomness comes from one generator, so a
seed fixes the score, and the score fixes the tags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from culturemert.synth.rhythm import TEMPO_CLASSES, Metre
from culturemert.synth.traditions import Tradition
from culturemert.synth.tuning import Scale

# Random walk over scale degrees: mostly steps, some leaps, few repeats.
_STEPS = np.array([-3, -2, -1, 0, 1, 2, 3])
_STEP_PROBABILITIES = np.array([0.04, 0.14, 0.3, 0.04, 0.3, 0.14, 0.04])


@dataclass
class Note:
    """A melody note; ``ornament_cents`` is the ornament's excursion from the note's pitch."""

    onset: float  # seconds
    duration: float  # seconds
    degree: int
    cents: float  # above the tonic
    freq: float  # Hz, before the instrument's octave
    ornament: str = "none"  # none, slide, grace, kampita, andolan
    ornament_cents: float = 0.0


@dataclass
class Stroke:
    """A percussion stroke on one pulse."""

    onset: float
    stroke: str  # D, T, B or k (see rhythm)
    accent: float


@dataclass
class Score:
    """Everything a clip is synthesised from; its tags are read off it."""

    tradition: str
    duration: float
    scale: str
    scale_cents: list[float]
    tonic_hz: float
    metre: str
    metre_groups: list[int]
    tempo_class: str
    tempo_bpm: float
    cycle_offset: int  # pulse of the cycle the clip starts on
    lead: str
    second: str | None
    percussion: str
    drone: str | None
    drone_first_string_cents: float
    levels: dict[str, float]
    notes: list[Note] = field(default_factory=list)
    strokes: list[Stroke] = field(default_factory=list)

    def tags(self, tradition: Tradition) -> list[str]:
        """The clip's labels, ``family--tag``, sorted."""
        instruments = {n for n in (self.lead, self.second, self.percussion, self.drone) if n}
        return sorted(
            [
                f"{tradition.scale_family}--{self.scale}",
                f"{tradition.metre_family}--{self.metre}",
                f"{tradition.tempo_family}--{self.tempo_class}",
            ]
            + [f"{tradition.instrument_family}--{name}" for name in instruments]
        )


def _choose_tonic(tradition: Tradition, rng: np.random.Generator) -> float:
    low, high = tradition.tonic_range
    if tradition.equal_tempered_tonic:
        grid = [440.0 * 2.0 ** (s / 12) for s in range(-36, 24)]
        return float(rng.choice([f for f in grid if low <= f <= high]))
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _drone_first_string(cents: tuple[float, ...]) -> float:
    """Tanpura tuning: Pa below Sa if the raga has Pa, otherwise Ma."""
    has_pa = any(abs(c - 701.955) < 1.0 for c in cents)
    return (701.955 if has_pa else 498.045) - 1200.0


def _ornament(tradition: Tradition, rng: np.random.Generator) -> str:
    draw = rng.random()
    for name, probability in tradition.ornaments:
        if draw < probability:
            return name
        draw -= probability
    return "none"


def compose(tradition: Tradition, rng: np.random.Generator, duration: float) -> Score:
    """Draw a score for a clip of ``duration`` seconds of ``tradition``."""
    scale = tradition.scales[rng.integers(len(tradition.scales))]
    metre = tradition.metres[rng.integers(len(tradition.metres))]
    tempo = TEMPO_CLASSES[rng.integers(len(TEMPO_CLASSES))]
    bpm = float(rng.uniform(tempo.low_bpm, tempo.high_bpm))
    lead, second = rng.choice(tradition.melodic, size=2, replace=False)
    score = Score(
        tradition=tradition.name,
        duration=duration,
        scale=scale.name,
        scale_cents=list(scale.cents),
        tonic_hz=_choose_tonic(tradition, rng),
        metre=metre.name,
        metre_groups=list(metre.groups),
        tempo_class=tempo.name,
        tempo_bpm=bpm,
        cycle_offset=int(rng.integers(metre.pulses)),
        lead=str(lead),
        second=str(second) if rng.random() < 0.5 else None,
        percussion=str(rng.choice(tradition.percussion)),
        drone=tradition.drone,
        drone_first_string_cents=_drone_first_string(scale.cents),
        levels={
            "melody": 1.0,
            "second": float(rng.uniform(0.4, 0.6)),
            "percussion": float(rng.uniform(0.6, 0.9)),
            "drone": float(rng.uniform(0.2, 0.3)),
        },
    )
    period = 60.0 / bpm
    first = min(rng.uniform(0.02, 0.12), 0.25 * duration)  # even a tiny clip gets one pulse
    onsets = np.arange(first, duration - min(0.1, 0.25 * duration), period)
    pulses = [score.cycle_offset + i for i in range(len(onsets))]
    score.strokes = [
        Stroke(float(t), metre.strokes[p % metre.pulses], metre.accent(p))
        for t, p in zip(onsets, pulses, strict=True)
    ]

    score.notes = _melody(tradition, scale, metre, onsets, pulses, score.tonic_hz, duration, rng)
    return score


def _melody(
    tradition: Tradition,
    scale: Scale,
    metre: Metre,
    onsets: np.ndarray,
    pulses: list[int],
    tonic: float,
    duration: float,
    rng: np.random.Generator,
) -> list[Note]:
    """A random walk over the scale's degrees, one note per chosen pulse, with ornaments.

    Notes start on pulses (always on group starts, often elsewhere) and hold until the next.
    """
    starts = [
        float(t)
        for i, (t, p) in enumerate(zip(onsets, pulses, strict=True))
        if i == 0 or metre.is_group_start(p) or rng.random() < 0.5
    ]
    low, high = -2, len(scale.cents) + 4
    degree = int(rng.choice([0, len(scale.cents) // 2 + 1]))
    notes: list[Note] = []
    for i, start in enumerate(starts):
        if i:
            degree += int(rng.choice(_STEPS, p=_STEP_PROBABILITIES))
            degree = low + abs(degree - low) if degree < low else degree
            degree = high - abs(degree - high) if degree > high else degree
        end = starts[i + 1] if i + 1 < len(starts) else duration
        cents = scale.degree_cents(degree)
        note = Note(start, end - start, degree, cents, tonic * 2.0 ** (cents / 1200))
        note.ornament = _ornament(tradition, rng)
        if note.ornament == "slide" and i and notes[-1].degree != degree:
            note.ornament_cents = notes[-1].cents - cents
        elif note.ornament in ("grace", "kampita"):
            note.ornament_cents = scale.degree_cents(degree + 1) - cents
        elif note.ornament == "andolan":
            note.ornament_cents = -float(rng.uniform(20.0, 40.0))
        else:
            note.ornament = "none"
        notes.append(note)
    return notes


def pitch_track(note: Note, sample_rate: int) -> np.ndarray:
    """The note's fundamental frequency, sample by sample, with its ornament."""
    n = max(1, int(round(note.duration * sample_rate)))
    t = np.arange(n) / sample_rate
    excursion = note.ornament_cents
    if note.ornament == "slide":  # meend/jaru: glide in from the previous note
        glide = min(0.3 * note.duration, 0.25)
        x = np.clip(t / glide, 0.0, 1.0)
        cents = excursion * (1.0 - x * x * (3.0 - 2.0 * x))
    elif note.ornament == "grace":  # a quick flick from the upper neighbour
        cents = excursion * np.clip((0.09 - t) / 0.03, 0.0, 1.0)
    elif note.ornament == "kampita":  # oscillation towards the upper neighbour
        cents = excursion * 0.5 * (1.0 - np.cos(2 * np.pi * 6.0 * t))
    elif note.ornament == "andolan":  # a slow sway just below the note
        cents = excursion * 0.5 * (1.0 - np.cos(2 * np.pi * 1.5 * t))
    else:
        return np.full(n, note.freq)
    return note.freq * np.exp2(cents / 1200.0)
