"""Signal building blocks shared by the instrument models: envelopes, band-limited noise,
wavetable oscillators, resonance curves and vibrato."""

from __future__ import annotations

import numpy as np

TABLE_SIZE = 2048


def envelope(n: int, sample_rate: int, attack: float, release: float) -> np.ndarray:
    """Linear attack and release ramps around a flat sustain, ``n`` samples long."""
    env = np.ones(n, dtype=np.float64)
    a = min(n, max(1, int(attack * sample_rate)))
    r = min(n - a, max(1, int(release * sample_rate)))
    env[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
    if r > 0:
        env[n - r :] *= np.linspace(1.0, 0.0, r)
    return env


def band_noise(
    n: int, sample_rate: int, rng: np.random.Generator, low: float, high: float
) -> np.ndarray:
    """White noise band-limited to ``[low, high]`` Hz by masking its spectrum."""
    size = 1 << max(0, n - 1).bit_length()  # a power of two keeps the FFT fast for any n
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    noise = np.fft.irfft(spectrum, size)[:n]
    return noise / (np.abs(noise).max() + 1e-12)


def wavetable(amplitudes: np.ndarray) -> np.ndarray:
    """One period of a waveform whose k-th harmonic has amplitude ``amplitudes[k-1]``."""
    spectrum = np.zeros(TABLE_SIZE // 2 + 1, dtype=np.complex128)
    spectrum[1 : len(amplitudes) + 1] = -0.5j * TABLE_SIZE * np.asarray(amplitudes)
    table = np.fft.irfft(spectrum, TABLE_SIZE)
    return np.append(table, table[0])  # wrap-around sample for interpolation


def oscillator(
    table: np.ndarray, f0: np.ndarray, sample_rate: int, phase: float = 0.0
) -> np.ndarray:
    """Read a wavetable along the running phase of a pitch track (linear interpolation)."""
    position = (phase + np.cumsum(f0) / sample_rate) % 1.0 * TABLE_SIZE
    index = position.astype(np.int64)
    frac = position - index
    return table[index] * (1.0 - frac) + table[index + 1] * frac


def harmonic_count(f0: np.ndarray, sample_rate: int, limit: int) -> int:
    """How many harmonics stay below 0.45 of the sample rate for the highest pitch."""
    return int(max(1, min(limit, 0.45 * sample_rate // max(float(f0.max()), 1.0))))


def resonances(freqs: np.ndarray, peaks: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """Gain at ``freqs`` of a set of resonances ``(centre Hz, bandwidth Hz, gain)``."""
    gain = np.full_like(freqs, 0.05, dtype=np.float64)
    for centre, width, height in peaks:
        gain += height / (1.0 + ((freqs - centre) / width) ** 2)
    return gain


def vibrato(
    f0: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    depth_cents: float,
    rate_hz: float,
) -> np.ndarray:
    """Apply a sinusoidal vibrato that fades in over the first 0.3 s."""
    if depth_cents <= 0:
        return f0
    t = np.arange(len(f0)) / sample_rate
    fade = np.minimum(1.0, t / 0.3)
    wobble = depth_cents * fade * np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 2 * np.pi))
    return f0 * np.exp2(wobble / 1200.0)
