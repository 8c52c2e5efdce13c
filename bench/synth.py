"""Synthetic corpus generation speed.

1. The plucked string: the vectorised Karplus–Strong (four periods per numpy step) against the
   same recurrence run sample by sample in pure Python; the outputs are compared too.
2. Whole clips of every tradition: audio seconds generated per wall-clock second (real-time
   factor), one process.

Run: ``.venv/bin/python bench/synth.py [--clips 6] [--seconds 5]``
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from culturemert.synth import SAMPLE_RATE, TRADITIONS, clip_seed, generate_clip
from culturemert.synth.timbre import karplus_strong


def naive_karplus_strong(first_period: np.ndarray, freq: float, n: int, t60: float) -> list:
    """The textbook per-sample loop over the same fractional-delay loop filter."""
    delay = SAMPLE_RATE / freq - 0.5
    period = int(delay)
    frac = delay - period
    gain = 10.0 ** (-3.0 / (freq * t60))
    t0, t1, t2 = gain * 0.5 * (1 - frac), gain * 0.5, gain * 0.5 * frac
    y = [0.0, 0.0, *first_period.tolist()]
    for i in range(period + 2, n + 2):
        y.append(t0 * y[i - period] + t1 * y[i - period - 1] + t2 * y[i - period - 2])
    return y[2:]


def best_of(repeats: int, function: Callable, *args, **kwargs) -> tuple[float, object]:
    """The shortest wall time of several runs (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times), result


def bench_plucked(seconds: float = 2.0, freq: float = 196.0, t60: float = 2.0) -> None:
    """Time one plucked note both ways and check that they agree."""
    n = int(seconds * SAMPLE_RATE)
    settings = dict(t60=t60, brightness=0.7, pluck_position=0.1)
    fast_time, fast = best_of(
        3, karplus_strong, freq, n, SAMPLE_RATE, np.random.default_rng(0), **settings
    )
    period = int(SAMPLE_RATE / freq - 0.5)
    slow_time, slow = best_of(3, naive_karplus_strong, fast[:period], freq, n, t60)
    print(f"plucked string, {seconds:.0f} s at {freq:.0f} Hz")
    print(f"  {'method':<28} {'seconds':>9} {'x real time':>12}")
    print(f"  {'pure-Python per-sample loop':<28} {slow_time:>9.4f} {seconds / slow_time:>12.1f}")
    print(f"  {'numpy, 4 periods per step':<28} {fast_time:>9.4f} {seconds / fast_time:>12.1f}")
    print(
        f"  speed-up {slow_time / fast_time:.1f}x; max |difference| "
        f"{np.abs(fast - np.asarray(slow)).max():.2e}"
    )


def bench_clips(clips: int, seconds: float) -> None:
    """Time whole-clip generation per tradition against real time."""
    print(f"\nwhole clips: {clips} x {seconds:.0f} s per tradition (baseline: real time)")
    print("  (x real time per CPU second is the figure to trust on a busy machine)")
    header = f"{'tradition':<12} {'audio s':>8} {'wall s':>8} {'cpu s':>8} {'x real time':>12}"
    print(f"  {header} {'x per cpu s':>12}")
    totals = np.zeros(3)
    for tradition in TRADITIONS:
        wall, cpu = time.perf_counter(), time.process_time()
        for index in range(clips):
            generate_clip(tradition, clip_seed(0, tradition, index), seconds)
        row = np.array([clips * seconds, time.perf_counter() - wall, time.process_time() - cpu])
        totals += row
        print_row(tradition, *row)
    print_row("all", *totals)


def print_row(name: str, audio: float, wall: float, cpu: float) -> None:
    """One table row: audio seconds, wall and CPU seconds, and the two real-time factors."""
    print(
        f"  {name:<12} {audio:>8.0f} {wall:>8.2f} {cpu:>8.2f} {audio / wall:>12.1f} "
        f"{audio / cpu:>12.1f}"
    )


def main() -> None:
    """Print the machine, then both tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6, help="clips per tradition")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length")
    args = parser.parse_args()
    print(
        f"cores: {os.cpu_count()} (this benchmark uses one); load average {os.getloadavg()[0]:.1f}"
    )
    bench_plucked()
    bench_clips(args.clips, args.seconds)


if __name__ == "__main__":
    main()
