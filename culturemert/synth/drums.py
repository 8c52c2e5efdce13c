"""Drums as sums of decaying membrane modes with a falling pitch bend and a noise burst:
tabla, mridangam, ghatam, khanjira, darbuka, kudüm, bendir, a drum kit, the Greek daouli."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from culturemert.synth.dsp import band_noise


@dataclass(frozen=True)
class Membrane:
    """One drum head's sound: mode frequency ratios, their gains and decay times (seconds)."""

    pitch: float  # Hz, or a multiple of the tonic for drums tuned to it
    ratios: tuple[float, ...]
    gains: tuple[float, ...]
    decays: tuple[float, ...]
    bend: float = 0.0  # extra relative pitch at the onset, falling away
    bend_time: float = 0.05
    noise: float = 0.0
    noise_decay: float = 0.03
    noise_band: tuple[float, float] = (1000.0, 8000.0)


def strike(
    head: Membrane, pitch: float, n: int, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """One stroke on a membrane at fundamental ``pitch``: decaying, pitch-bent modes plus noise."""
    t = np.arange(n) / sample_rate
    bent = pitch * (1.0 + head.bend * np.exp(-t / head.bend_time))
    phase = (2 * np.pi * np.cumsum(bent) / sample_rate).astype(np.float32)
    ratios = np.asarray(head.ratios, dtype=np.float32)[:, None]
    decays = np.asarray(head.decays, dtype=np.float32)[:, None]
    modes = np.sin(ratios * phase) * np.exp(-t.astype(np.float32) / decays)
    y = (np.asarray(head.gains, dtype=np.float32) @ modes).astype(np.float64)
    if head.noise > 0:
        burst = band_noise(n, sample_rate, rng, *head.noise_band) * np.exp(-t / head.noise_decay)
        y += head.noise * burst
    return y


@dataclass(frozen=True)
class DrumKit:
    """A percussion instrument: the heads sounded by each stroke letter of a cycle."""

    strokes: dict[str, tuple[Membrane, ...]]
    tuned_to_tonic: bool = False
    length: float = 0.6  # seconds rendered per stroke

    def render(self, stroke: str, tonic: float, sample_rate: int, rng) -> np.ndarray:
        """The sound of one stroke letter (``D``, ``T``, ``B``, ``k``)."""
        n = int(self.length * sample_rate)
        y = np.zeros(n)
        for head in self.strokes[stroke]:
            pitch = head.pitch * tonic if self.tuned_to_tonic else head.pitch
            y += strike(head, pitch * rng.uniform(0.99, 1.01), n, sample_rate, rng)
        return y


def _kit(bass: Membrane, treble: Membrane, light: Membrane, **kwargs) -> DrumKit:
    """A two-headed kit: bass, treble, both together, and a light stroke."""
    strokes = {"D": (bass,), "T": (treble,), "B": (bass, treble), "k": (light,)}
    return DrumKit(strokes=strokes, **kwargs)


_HARMONIC = (1.0, 2.0, 3.0, 4.0, 5.0)  # the loaded (syahi) head of tabla and mridangam
_BESSEL = (1.0, 1.59, 2.14, 2.30, 2.65)  # modes of an unloaded circular membrane

DRUMS: dict[str, DrumKit] = {
    "Tabla": _kit(
        Membrane(0.6, (1.0, 1.5), (1.0, 0.2), (0.45, 0.2), bend=0.3, bend_time=0.04),
        Membrane(1.0, _HARMONIC, (1.0, 0.7, 0.5, 0.3, 0.2), (0.5, 0.4, 0.3, 0.2, 0.15)),
        Membrane(1.0, _HARMONIC, (0.5, 0.3, 0.2, 0.1, 0.1), (0.05,) * 5, noise=0.3),
        tuned_to_tonic=True,
    ),
    "Mridangam": _kit(
        Membrane(0.55, (1.0, 2.0), (1.0, 0.3), (0.35, 0.15), bend=0.2, bend_time=0.08),
        Membrane(1.0, _HARMONIC, (1.0, 0.8, 0.6, 0.4, 0.2), (0.3, 0.25, 0.2, 0.15, 0.1)),
        Membrane(1.0, _HARMONIC, (0.4, 0.4, 0.2, 0.1, 0.1), (0.04,) * 5, noise=0.4),
        tuned_to_tonic=True,
    ),
    "Ghatam": _kit(
        Membrane(180.0, (1.0, 1.7), (1.0, 0.3), (0.2, 0.08), bend=0.1),
        Membrane(420.0, (1.0, 1.6, 2.4), (1.0, 0.5, 0.3), (0.1, 0.06, 0.04), noise=0.3),
        Membrane(420.0, (1.0, 1.6), (0.4, 0.2), (0.04, 0.03), noise=0.4),
    ),
    "Khanjira": _kit(
        Membrane(160.0, _BESSEL[:3], (1.0, 0.4, 0.2), (0.2, 0.1, 0.06), bend=0.3),
        Membrane(
            380.0,
            _BESSEL,
            (1.0, 0.6, 0.4, 0.3, 0.2),
            (0.08,) * 5,
            noise=0.6,
            noise_decay=0.12,
            noise_band=(4000.0, 10000.0),
        ),
        Membrane(
            380.0,
            _BESSEL[:2],
            (0.3, 0.2),
            (0.04, 0.03),
            noise=0.5,
            noise_decay=0.08,
            noise_band=(4000.0, 10000.0),
        ),
    ),
    "Darbuka": _kit(
        Membrane(110.0, _BESSEL[:3], (1.0, 0.5, 0.25), (0.3, 0.15, 0.1), bend=0.15),
        Membrane(700.0, (1.0, 1.5, 2.3), (1.0, 0.5, 0.3), (0.05, 0.04, 0.03), noise=0.5),
        Membrane(700.0, (1.0, 1.5), (0.7, 0.3), (0.04, 0.03), noise=0.5),
    ),
    "Kudüm": _kit(
        Membrane(140.0, _BESSEL[:3], (1.0, 0.4, 0.2), (0.25, 0.12, 0.08), bend=0.1),
        Membrane(330.0, _BESSEL[:3], (1.0, 0.5, 0.3), (0.12, 0.08, 0.05), noise=0.2),
        Membrane(330.0, _BESSEL[:2], (0.7, 0.35), (0.06, 0.04), noise=0.3),
    ),
    "Bendir": _kit(
        Membrane(
            70.0,
            _BESSEL[:3],
            (1.0, 0.5, 0.3),
            (0.45, 0.25, 0.15),
            bend=0.1,
            noise=0.3,
            noise_decay=0.25,
            noise_band=(1000.0, 5000.0),
        ),
        Membrane(
            400.0,
            _BESSEL[:3],
            (0.8, 0.4, 0.2),
            (0.06, 0.04, 0.03),
            noise=0.5,
            noise_decay=0.1,
            noise_band=(1000.0, 5000.0),
        ),
        Membrane(400.0, _BESSEL[:2], (0.6, 0.3), (0.05, 0.03), noise=0.5),
    ),
    "Drums": _kit(
        Membrane(50.0, (1.0,), (1.0,), (0.25,), bend=2.0, bend_time=0.03),
        Membrane(185.0, (1.0, 1.6), (0.6, 0.3), (0.12, 0.08), noise=1.0, noise_decay=0.15),
        Membrane(
            6000.0,
            (1.0,),
            (0.0,),
            (0.01,),
            noise=0.9,
            noise_decay=0.05,
            noise_band=(6000.0, 11000.0),
        ),
    ),
    "Percussion": _kit(  # Greek daouli: a deep boom and a thin stick
        Membrane(75.0, _BESSEL[:3], (1.0, 0.5, 0.3), (0.4, 0.2, 0.1), bend=0.2),
        Membrane(520.0, (1.0, 1.8), (0.5, 0.3), (0.05, 0.03), noise=0.7, noise_decay=0.05),
        Membrane(520.0, (1.0,), (0.5,), (0.04,), noise=0.7, noise_decay=0.04),
    ),
}
