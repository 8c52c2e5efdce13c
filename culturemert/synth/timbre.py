"""Instrument sounds from simple physical and additive models, vectorised with numpy.

Pitched models take a per-sample fundamental-frequency track (so ornaments, slides and vibrato
are part of the input) and return a waveform of the same length:

- plucked strings: Karplus–Strong with a fractional-delay loop, rendered several periods per
  numpy step, then time-warped to follow the pitch track (oud, guitar, sitar, veena, laouto, kanun);
- bowed strings, reeds, voice and harmonium: wavetable oscillators whose spectra carry the
  timbre (sawtooth-like with body resonances; odd harmonics; vowel formants), plus bow or
  breath noise;
- piano: inharmonic partials with partial-dependent decay.

The tanpura drone is a cycle of long, buzzing plucks. Drums live in ``drums``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from culturemert.synth.dsp import (
    band_noise,
    envelope,
    harmonic_count,
    oscillator,
    resonances,
    vibrato,
    wavetable,
)

# --- plucked strings ---------------------------------------------------------------------------


def _recur(y: np.ndarray, start: int, stop: int, lag: int, taps: np.ndarray) -> None:
    """Run ``y[i] = sum_j taps[j] * y[i - lag - j]`` in place for ``start <= i < stop``, one
    block of ``lag`` samples per numpy call (a block only reads samples before it)."""
    width = len(taps) - 1
    for begin in range(start, stop, lag):
        end = min(begin + lag, stop)
        y[begin:end] = np.convolve(y[begin - lag - width : end - lag], taps, "valid")


def karplus_strong(
    freq: float,
    n: int,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    t60: float,
    brightness: float,
    pluck_position: float,
    periods_per_step: int = 4,
) -> np.ndarray:
    """A plucked string at a fixed pitch: noise burst recirculating through a damped delay loop.

    The loop delay ``N + 0.5 + frac`` (integer delay, two-point average, linear-interpolated
    fraction) equals one period exactly, so the pitch is accurate to a cent. Once the burst has
    passed, the loop applied ``k`` times is itself a filter at lag ``k*N``, so each numpy step
    computes ``k`` periods at once.
    """
    delay = sample_rate / freq - 0.5
    period = int(delay)
    frac = delay - period
    gain = 10.0 ** (-3.0 / (freq * t60))  # -60 dB after t60 seconds
    taps = gain * np.convolve([0.5, 0.5], [1.0 - frac, frac])  # at lags N, N+1, N+2
    burst = rng.uniform(-1.0, 1.0, period)
    burst = brightness * burst + (1 - brightness) * np.convolve(burst, np.ones(5) / 5, "same")
    burst -= np.roll(burst, max(1, int(pluck_position * period)))  # plucking point comb
    burst -= burst.mean()
    y = np.zeros(n + 2 + period)
    y[2 : 2 + period] = burst
    k = periods_per_step
    settled = min(n + 2, 2 + period + (k - 1) * (period + 2))  # where the burst is out of reach
    _recur(y, 2 + period, settled, period, taps)
    k_taps = taps
    for _ in range(k - 1):
        k_taps = np.convolve(k_taps, taps)
    _recur(y, settled, n + 2, k * period, k_taps)
    return y[2 : n + 2]


def follow_pitch(render: Callable[[float, int], np.ndarray], f0: np.ndarray) -> np.ndarray:
    """Render at the track's median pitch, then time-warp the result to follow the track."""
    base = float(np.median(f0))
    if np.allclose(f0, base):
        return render(base, len(f0))
    position = np.concatenate([[0.0], np.cumsum(f0[:-1] / base)])
    source = render(base, int(np.ceil(position[-1])) + 2)
    return np.interp(position, np.arange(len(source)), source)


def plucked(
    f0: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    t60: float,
    brightness: float,
    pluck_position: float,
    buzz: float = 0.0,
) -> np.ndarray:
    """A plucked string (optionally with a sitar-like buzzing bridge) following ``f0``."""
    render = partial(
        karplus_strong,
        sample_rate=sample_rate,
        rng=rng,
        t60=t60,
        brightness=brightness,
        pluck_position=pluck_position,
    )
    y = follow_pitch(render, f0)
    if buzz > 0:  # the jawari bridge: a soft clipper that spreads energy to high harmonics
        y = np.tanh(buzz * y / (np.abs(y).max() + 1e-12))
    return y * envelope(len(y), sample_rate, 0.001, 0.03)


# --- sustained (wavetable) instruments ---------------------------------------------------------


def sustained(
    f0: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    spectrum: Callable[[np.ndarray, float], np.ndarray],
    attack: float,
    release: float,
    vibrato_cents: float = 0.0,
    vibrato_hz: float = 5.5,
    noise: float = 0.0,
    noise_band: tuple[float, float] = (500.0, 6000.0),
) -> np.ndarray:
    """A wavetable voice: ``spectrum(harmonic numbers, median f0)`` gives its harmonic gains."""
    f0 = vibrato(f0, sample_rate, rng, vibrato_cents, vibrato_hz)
    harmonics = np.arange(1, harmonic_count(f0, sample_rate, 40) + 1)
    gains = spectrum(harmonics, float(np.median(f0)))
    y = oscillator(wavetable(gains / np.abs(gains).sum()), f0, sample_rate, rng.uniform())
    if noise > 0:
        y += noise * band_noise(len(f0), sample_rate, rng, *noise_band) * np.abs(y).max()
    return y * envelope(len(y), sample_rate, attack, release)


def bowed_spectrum(k: np.ndarray, f0: float, body: tuple = ()) -> np.ndarray:
    """Sawtooth-like harmonics shaped by the body's resonances."""
    return resonances(k * f0, body) / k


def odd_spectrum(k: np.ndarray, f0: float, even: float, rolloff: float) -> np.ndarray:
    """Clarinet-like: odd harmonics strong, even ones weak, falling as ``1/k**rolloff``."""
    return np.where(k % 2 == 1, 1.0, even) / k**rolloff


def formant_spectrum(k: np.ndarray, f0: float, formants: tuple, tilt: float) -> np.ndarray:
    """Voice-like: a falling source spectrum through vowel formants."""
    return resonances(k * f0, formants) / k**tilt


def flute_spectrum(k: np.ndarray, f0: float, decay: float) -> np.ndarray:
    """Ney/bansuri-like: a strong fundamental and quickly vanishing overtones."""
    return np.exp(-decay * (k - 1))


# --- piano -------------------------------------------------------------------------------------


def piano(f0: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Stretched (inharmonic) partials whose higher members decay faster, hammer-struck."""
    n = len(f0)
    ring = min(n, int(2.5 * sample_rate))  # past 2.5 s the sound is below -40 dB: stay silent
    count = harmonic_count(f0 * 1.1, sample_rate, 10)
    k = np.arange(1, count + 1, dtype=np.float32)[:, None]
    stretch = np.sqrt(1.0 + 3e-4 * k**2)
    t = (np.arange(ring) / sample_rate).astype(np.float32)
    phase = (2 * np.pi * np.cumsum(f0[:ring]) / sample_rate).astype(np.float32)
    offsets = rng.uniform(0, 2 * np.pi, (count, 1)).astype(np.float32)
    partials = np.sin(k * stretch * phase + offsets) * np.exp(-t * (1.2 + 0.6 * k))
    y = np.zeros(n)
    y[:ring] = (1.0 / k**1.1).T @ partials
    return y * envelope(n, sample_rate, 0.002, 0.05)


# --- registry of melodic instruments -----------------------------------------------------------


@dataclass(frozen=True)
class Instrument:
    """A melodic instrument: its model and its register relative to the tradition's tonic."""

    render: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
    octave: int = 0


_VIOLIN_BODY = ((450.0, 150.0, 1.0), (2800.0, 900.0, 1.2))
_CELLO_BODY = ((220.0, 80.0, 1.0), (1500.0, 600.0, 0.8))
_VOWEL_A = ((700.0, 90.0, 1.0), (1200.0, 110.0, 0.6), (2600.0, 160.0, 0.25))


def _plucked(octave: int = 0, **settings) -> Instrument:
    return Instrument(partial(plucked, **settings), octave)


def _sustained(octave: int = 0, **settings) -> Instrument:
    return Instrument(partial(sustained, **settings), octave)


INSTRUMENTS: dict[str, Instrument] = {
    "Guitar": _plucked(t60=2.5, brightness=0.5, pluck_position=0.2),
    "Oud": _plucked(t60=1.2, brightness=0.6, pluck_position=0.12, octave=-1),
    "Laouto": _plucked(t60=1.0, brightness=0.7, pluck_position=0.1, octave=-1),
    "Bouzouki": _plucked(t60=1.8, brightness=0.95, pluck_position=0.08),
    "Kanun": _plucked(t60=2.0, brightness=0.9, pluck_position=0.15),
    "Tanbur": _plucked(t60=2.5, brightness=0.8, pluck_position=0.1, octave=-1),
    "Santouri": _plucked(t60=3.0, brightness=1.0, pluck_position=0.3),
    "Sitar": _plucked(t60=2.5, brightness=0.9, pluck_position=0.05, buzz=2.5),
    "Veena": _plucked(t60=2.0, brightness=0.7, pluck_position=0.1, buzz=1.2, octave=-1),
    "Violin": _sustained(
        spectrum=partial(bowed_spectrum, body=_VIOLIN_BODY),
        attack=0.06,
        release=0.06,
        vibrato_cents=18.0,
        noise=0.03,
        noise_band=(2000.0, 8000.0),
    ),
    "Strings": _sustained(
        spectrum=partial(bowed_spectrum, body=_VIOLIN_BODY),
        attack=0.15,
        release=0.15,
        vibrato_cents=8.0,
        vibrato_hz=4.5,
        noise=0.05,
        noise_band=(1500.0, 7000.0),
    ),
    "Cello": _sustained(
        spectrum=partial(bowed_spectrum, body=_CELLO_BODY),
        attack=0.08,
        release=0.08,
        vibrato_cents=15.0,
        vibrato_hz=5.0,
        noise=0.03,
        noise_band=(800.0, 5000.0),
        octave=-1,
    ),
    "Sarangi": _sustained(
        spectrum=partial(bowed_spectrum, body=((600.0, 200.0, 1.0), (3200.0, 700.0, 1.5))),
        attack=0.05,
        release=0.05,
        vibrato_cents=12.0,
        vibrato_hz=4.0,
        noise=0.06,
        noise_band=(2500.0, 9000.0),
    ),
    "Lyra": _sustained(
        spectrum=partial(bowed_spectrum, body=((700.0, 250.0, 1.0), (2200.0, 500.0, 1.0))),
        attack=0.04,
        release=0.04,
        vibrato_cents=10.0,
        vibrato_hz=6.5,
        noise=0.08,
        noise_band=(1500.0, 6000.0),
    ),
    "Clarinet": _sustained(
        spectrum=partial(odd_spectrum, even=0.08, rolloff=1.0),
        attack=0.04,
        release=0.05,
        noise=0.02,
    ),
    "Klarino": _sustained(
        spectrum=partial(odd_spectrum, even=0.2, rolloff=0.7),
        attack=0.03,
        release=0.04,
        vibrato_cents=25.0,
        vibrato_hz=6.0,
        noise=0.04,
    ),
    "Ney": _sustained(
        spectrum=partial(flute_spectrum, decay=1.4),
        attack=0.09,
        release=0.08,
        vibrato_cents=10.0,
        vibrato_hz=5.0,
        noise=0.35,
        noise_band=(300.0, 5000.0),
    ),
    "Bansuri": _sustained(
        spectrum=partial(flute_spectrum, decay=1.1),
        attack=0.06,
        release=0.06,
        vibrato_cents=8.0,
        vibrato_hz=4.5,
        noise=0.2,
        noise_band=(800.0, 7000.0),
        octave=1,
    ),
    "Voice": _sustained(
        spectrum=partial(formant_spectrum, formants=_VOWEL_A, tilt=1.0),
        attack=0.05,
        release=0.06,
        vibrato_cents=20.0,
        vibrato_hz=5.2,
        noise=0.02,
    ),
    "Harmonium": _sustained(
        spectrum=partial(odd_spectrum, even=0.8, rolloff=0.6),
        attack=0.02,
        release=0.03,
    ),
    "Piano": Instrument(piano),
}


# --- drone -------------------------------------------------------------------------------------


def tanpura(
    n: int, tonic: float, first_string_cents: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """A tanpura: four strings (Pa or Ma below, Sa, Sa, low Sa) plucked in an endless cycle."""
    cycle = rng.uniform(3.2, 4.4)  # slower than any tempo class's pulse
    strings = (tonic * 2.0 ** (first_string_cents / 1200.0), tonic, tonic, tonic / 2.0)
    length = min(n, int(cycle * sample_rate))  # a string rings until it is plucked again
    swell = envelope(length, sample_rate, 0.15, 0.03)  # a soft finger pluck, not a pick
    plucks = [
        swell
        * plucked(
            np.full(length, f),
            sample_rate,
            rng,
            t60=6.0,
            brightness=0.9,
            pluck_position=0.02,
            buzz=3.0,
        )
        for f in strings
    ]
    y = np.zeros(n)
    for start_cycle in np.arange(-cycle, n / sample_rate, cycle):  # start mid-cycle, ringing
        for i, pluck in enumerate(plucks):
            start = int((start_cycle + i * cycle / 4) * sample_rate)
            low, high = max(0, start), min(n, start + length)
            if high > low:
                y[low:high] += pluck[low - start : high - start] * rng.uniform(0.8, 1.0)
    return y
