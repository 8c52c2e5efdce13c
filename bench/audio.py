"""Benchmark: ``load_audio``'s block decoding against the whole-file way, and PyAV's speed.

Measured in one run on generated files in a temporary folder:

1. A long multichannel high-rate 16-bit WAV (default 60 s, 6 channels, 192 kHz), decoded to
   24 kHz mono by ``load_audio`` (blocks: read, mix down, stream through soxr) and by the old
   way, the baseline: ``sf.read`` of the whole file in float32, the channel mean, one
   ``soxr.resample`` call. Time (best of alternating rounds) and peak memory of each (numpy's
   allocations, by tracemalloc, in a round of their own); the outputs are compared too.
2. The same stereo 44.1 kHz music as AAC in .m4a (decoded by FFmpeg via PyAV) and as FLAC
   (libsndfile), both through ``load_audio``: audio seconds decoded per wall-clock second.

    python bench/audio.py [--seconds 60] [--channels 6] [--rate 192000] [--aac-seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).parent))
from common import best_time, machine_line  # noqa: E402

from culturemert.audio import load_audio  # noqa: E402

TARGET_RATE = 24000


def write_wav_in_blocks(path: Path, seconds: int, channels: int, rate: int) -> Path:
    """16-bit WAV, one tone plus noise per channel, written a second at a time (never whole)."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as out:
        for second in range(seconds):
            t = second + np.arange(rate) / rate
            tones = np.stack([0.3 * np.sin(2 * np.pi * 220 * (c + 1) * t) for c in range(channels)])
            out.write(tones.T + 0.05 * rng.standard_normal((rate, channels)))
    return path


def write_music_pair(folder: Path, seconds: int, rate: int = 44100) -> tuple[Path, Path]:
    """The same stereo int16 music as AAC in .m4a (PyAV, 192 kbit/s) and as FLAC (soundfile)."""
    t = np.arange(seconds * rate) / rate
    phase = 2 * np.pi * np.cumsum(220 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.15
    samples = np.round(np.stack([tone, tone[::-1]]) * 32767).astype(np.int16)  # [2, frames]
    flac, m4a = folder / "music.flac", folder / "music.m4a"
    sf.write(flac, samples.T, rate, subtype="PCM_16")
    with av.open(str(m4a), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="stereo")
        stream.bit_rate = 192000
        for start in range(0, samples.shape[1], 65536):
            block = np.ascontiguousarray(samples[:, start : start + 65536])
            frame = av.AudioFrame.from_ndarray(block, format="s16p", layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return m4a, flac


def whole_file_way(path: Path) -> np.ndarray:
    """The baseline: the whole file in float32, its channel mean, one soxr call."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return soxr.resample(data.mean(axis=1), rate, TARGET_RATE, quality="HQ")


def peak_bytes(function: Callable[[], np.ndarray]) -> tuple[int, np.ndarray]:
    """Peak bytes traced (numpy's buffers included) while ``function`` runs, and its result."""
    tracemalloc.start()
    try:
        result = function()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def alternating_best(functions: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best wall time of each function over ``rounds`` rounds that alternate between them."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            best[name] = min(best[name], best_time(function, 1))
    return best


def main() -> None:
    """Write the files, run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of the multichannel WAV")
    parser.add_argument("--channels", type=int, default=6)
    parser.add_argument("--rate", type=int, default=192000, help="the WAV's sample rate (Hz)")
    parser.add_argument("--aac-seconds", type=int, default=60, help="length of the AAC/FLAC pair")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav_in_blocks(Path(tmp) / "long.wav", args.seconds, args.channels, args.rate)
        m4a, flac = write_music_pair(Path(tmp), args.aac_seconds)
        ways = {
            "load_audio (blocks)": lambda: load_audio(wav, TARGET_RATE),
            "baseline: sf.read whole + mean + soxr": lambda: whole_file_way(wav),
        }
        times = alternating_best(ways, args.rounds)
        peaks, outputs = zip(*(peak_bytes(function) for function in ways.values()), strict=True)
        decoders = {
            "AAC .m4a via PyAV": lambda: load_audio(m4a, TARGET_RATE),
            "FLAC via libsndfile": lambda: load_audio(flac, TARGET_RATE),
        }
        decode_times = alternating_best(decoders, args.rounds)
        aac_peak, aac_result = peak_bytes(decoders["AAC .m4a via PyAV"])

    ours, baseline = outputs
    whole = args.seconds * args.rate * args.channels * 4
    print(
        f"file 1: {args.seconds} s × {args.channels} ch × {args.rate} Hz, 16-bit WAV "
        f"({whole / 2**20:.0f} MiB as float32) → {TARGET_RATE} Hz mono "
        f"({ours.nbytes / 2**20:.1f} MiB); best of {args.rounds} alternating rounds\n"
    )
    print(f"{'method':<40} {'seconds':>8} {'audio-s/s':>10} {'peak MiB':>9} {'peak/result':>12}")
    for (name, seconds), peak in zip(times.items(), peaks, strict=True):
        print(
            f"{name:<40} {seconds:>8.3f} {args.seconds / seconds:>10.1f} "
            f"{peak / 2**20:>9.1f} {peak / ours.nbytes:>12.2f}"
        )
    blocks, old = times.values()
    print(
        f"\n  time:   load_audio / baseline = {blocks / old:.2f}  ({old / blocks:.2f}× the speed)"
    )
    print(
        f"  memory: load_audio / baseline = {peaks[0] / peaks[1]:.3f}; load_audio's peak is "
        f"{peaks[0] / ours.nbytes:.2f}× its result (target ≤ 4×)"
    )
    n = min(len(ours), len(baseline))
    difference = float(np.max(np.abs(ours[:n] - baseline[:n])))
    print(f"  outputs: lengths {len(ours)} and {len(baseline)}, max |difference| {difference:.1e}")

    print(f"\nfile 2: {args.aac_seconds} s stereo 44.1 kHz music, AAC 192 kbit/s vs FLAC\n")
    print(f"{'decoder (through load_audio)':<40} {'seconds':>8} {'audio-s/s':>10}")
    for name, seconds in decode_times.items():
        print(f"{name:<40} {seconds:>8.3f} {args.aac_seconds / seconds:>10.1f}")
    aac, libsndfile = decode_times.values()
    print(f"\n  PyAV AAC / libsndfile FLAC time = {aac / libsndfile:.2f}")
    print(f"  PyAV AAC peak memory: {aac_peak / aac_result.nbytes:.2f}× the result")


if __name__ == "__main__":
    main()
