"""Rendering a score to audio: one stem per part, each normalised, then mixed."""

from __future__ import annotations

import numpy as np

from culturemert.synth.compose import Score, pitch_track
from culturemert.synth.drums import DRUMS
from culturemert.synth.timbre import INSTRUMENTS, tanpura

#: The parts of a clip, in mixing order.
PARTS = ("melody", "second", "percussion", "drone")


def _place(stem: np.ndarray, sound: np.ndarray, start: int) -> None:
    """Add ``sound`` into ``stem`` from sample ``start``, cutting what runs past the end."""
    stop = min(len(stem), start + len(sound))
    if stop > start:
        stem[start:stop] += sound[: stop - start]


def render_melody(
    score: Score, instrument: str, sample_rate: int, rng: np.random.Generator, delay: float = 0.0
) -> np.ndarray:
    """The score's melody played by one instrument (in its own register)."""
    model = INSTRUMENTS[instrument]
    stem = np.zeros(int(round(score.duration * sample_rate)))
    for note in score.notes:
        f0 = pitch_track(note, sample_rate) * 2.0**model.octave
        _place(
            stem, model.render(f0, sample_rate, rng), int(round((note.onset + delay) * sample_rate))
        )
    return stem


def render_percussion(score: Score, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One drum sound per stroke letter, placed on every pulse with its accent."""
    kit = DRUMS[score.percussion]
    stem = np.zeros(int(round(score.duration * sample_rate)))
    letters = sorted({stroke.stroke for stroke in score.strokes})  # sorted: a set's order varies
    sounds = {s: kit.render(s, score.tonic_hz, sample_rate, rng) for s in letters}
    for stroke in score.strokes:  # played exactly, like a drum machine: every cycle repeats
        _place(stem, stroke.accent * sounds[stroke.stroke], int(round(stroke.onset * sample_rate)))
    return stem


def render_stems(
    score: Score, sample_rate: int, seed: np.random.SeedSequence
) -> dict[str, np.ndarray]:
    """Every part of the score, each from its own child seed (so one part never shifts another)."""
    rngs = dict(zip(PARTS, (np.random.default_rng(s) for s in seed.spawn(len(PARTS))), strict=True))
    n = int(round(score.duration * sample_rate))
    stems = {
        "melody": render_melody(score, score.lead, sample_rate, rngs["melody"]),
        "percussion": render_percussion(score, sample_rate, rngs["percussion"]),
    }
    if score.second is not None:
        lag = rngs["second"].uniform(0.005, 0.025)  # heterophony: the same line, a little late
        stems["second"] = render_melody(score, score.second, sample_rate, rngs["second"], lag)
    if score.drone is not None:
        stems["drone"] = tanpura(
            n, score.tonic_hz, score.drone_first_string_cents, sample_rate, rngs["drone"]
        )
    return stems


def mix(score: Score, stems: dict[str, np.ndarray], parts: tuple[str, ...]) -> np.ndarray:
    """Sum the chosen stems at the score's levels (each stem at unit RMS first), peak 0.9."""
    total = np.zeros(len(stems["melody"]))
    for part in parts:
        if part in stems:
            stem = stems[part]
            total += score.levels[part] * stem / (np.sqrt(np.mean(stem**2)) + 1e-12)
    peak = np.abs(total).max()
    return (0.9 * total / peak if peak > 0 else total).astype(np.float32)
