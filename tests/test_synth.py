"""The synthetic corpus: determinism, tags that match the audio, and corpus files on disk.

Tempo, scale and metre are re-measured from the audio with estimators written out here
(band-energy onset flux with autocorrelation; YIN pitch), and compared with reference tables
of the named scales and tempo classes written out here too, not read from the generator.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

from culturemert.audio import load_audio
from culturemert.manifest import read_manifest
from culturemert.synth import TRADITIONS, clip_seed, generate_clip, split_counts, write_corpus

SR = 24000
COMMA = 1200 / 53


def _ji(*ratios: str) -> list[float]:
    return [1200 * math.log2(Fraction(r)) for r in ratios]


def _tet(*semitones: int) -> list[float]:
    return [100.0 * s for s in semitones]


def _commas(*positions: int) -> list[float]:
    return [COMMA * p for p in positions]


# Reference scales, cents above the tonic: makams as comma positions (AEU theory), ragas as
# just ratios, Western and Greek modes in 12-TET.
SCALES = {
    "mode--Major": _tet(0, 2, 4, 5, 7, 9, 11),
    "mode--Minor": _tet(0, 2, 3, 5, 7, 8, 10),
    "mode--Pentatonic": _tet(0, 2, 4, 7, 9),
    "makam--Rast": _commas(0, 9, 17, 22, 31, 40, 48),
    "makam--Uşşak": _commas(0, 8, 13, 22, 31, 35, 44),
    "makam--Hüseyni": _commas(0, 8, 13, 22, 31, 39, 44),
    "makam--Hicaz": _commas(0, 5, 17, 22, 31, 39, 44),
    "makam--Nihavent": _commas(0, 9, 13, 22, 31, 36, 48),
    "makam--Kürdi": _commas(0, 4, 13, 22, 31, 35, 44),
    "raga--Yaman": _ji("1", "9/8", "5/4", "45/32", "3/2", "5/3", "15/8"),
    "raga--Bhairabi": _ji("1", "16/15", "6/5", "4/3", "3/2", "8/5", "9/5"),
    "raga--Bageshree": _ji("1", "9/8", "6/5", "4/3", "5/3", "16/9"),
    "raga--Bhupali": _ji("1", "9/8", "5/4", "3/2", "5/3"),
    "raga--kalyani": _ji("1", "9/8", "5/4", "45/32", "3/2", "5/3", "15/8"),
    "raga--thodi": _ji("1", "16/15", "6/5", "4/3", "3/2", "8/5", "9/5"),
    "raga--bhairavi": _ji("1", "9/8", "6/5", "4/3", "3/2", "5/3", "16/9"),
    "raga--shankarabharanam": _ji("1", "9/8", "5/4", "4/3", "3/2", "5/3", "15/8"),
    "raga--mohanam": _ji("1", "9/8", "5/4", "3/2", "5/3"),
    "mode--Dorian": _tet(0, 2, 3, 5, 7, 9, 10),
    "mode--Phrygian": _tet(0, 1, 3, 5, 7, 8, 10),
    "mode--Hitzaz": _tet(0, 1, 4, 5, 7, 8, 10),
    "mode--Mixolydian": _tet(0, 2, 4, 5, 7, 9, 10),
}
TEMPO_RANGES = {"tempo--Slow": (70, 95), "tempo--Medium": (105, 135), "tempo--Fast": (150, 190)}
# Pulses per cycle of each metre, usul and tala.
CYCLE_PULSES = {
    "metre--3/4": 3, "metre--7/8": 7, "metre--9/8": 9, "metre--2/4": 4,
    "usul--Aksak": 9, "usul--Curcuna": 10, "usul--Düyek": 8, "usul--Yürüksemai": 6,
    "tala--Rupak": 7, "tala--Jhaptaal": 10, "tala--Ektaal": 12,
    "tala--adi": 8, "tala--rupaka": 6, "tala--mishra": 7, "tala--khanda": 5,
}  # fmt: skip


def _family(tags: list[str], *families: str) -> str:
    (tag,) = [t for t in tags if t.split("--")[0] in families]
    return tag


def onset_flux(wave: np.ndarray, hop: int = 120, size: int = 1024) -> tuple[np.ndarray, float]:
    """Half-wave-rectified change of log energy in 24 log-spaced bands; frames per second."""
    frames = np.lib.stride_tricks.sliding_window_view(wave, size)[::hop] * np.hanning(size)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(size, 1 / SR)
    edges = np.geomspace(40, 10000, 25)
    bands = np.stack(
        [
            power[:, (freqs >= a) & (freqs < b)].sum(1)
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        ]
    )
    flux = np.maximum(0.0, np.diff(np.log(1e-8 + bands), axis=1)).sum(0)
    return flux - flux.mean(), SR / hop


def estimate_bpm(wave: np.ndarray) -> float:
    """Pulse rate: the shortest autocorrelation lag that is a local maximum within ±15% and
    reaches 30% of the strongest lag between 50 and 240 BPM."""
    flux, fps = onset_flux(wave)
    ac = np.correlate(flux, flux, "full")[len(flux) - 1 :]
    low, high = int(60 * fps / 240), int(60 * fps / 50)
    best = ac[low : high + 1].max()
    lag = next(
        lag
        for lag in range(low, high + 1)
        if ac[lag] >= 0.3 * best and ac[lag] == ac[int(lag * 0.85) : int(lag * 1.15) + 1].max()
    )
    a, b, c = ac[lag - 1 : lag + 2]
    return 60 * fps / (lag + 0.5 * (a - c) / (a - 2 * b + c))


def yin(frame: np.ndarray, fmin: float = 45.0, fmax: float = 1600.0) -> float:
    """YIN fundamental frequency of one frame (de Cheveigné & Kawahara 2002), in Hz."""
    tmax, tmin = int(SR / fmin), int(SR / fmax)
    width = len(frame) - tmax
    x = frame.astype(np.float64)
    size = 1 << (len(x) + width).bit_length()
    cross = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(x[:width], size)), size)
    energy = np.concatenate([[0.0], np.cumsum(x**2)])
    shifted = energy[width : width + tmax + 1] - energy[: tmax + 1]
    diff = energy[width] + shifted - 2 * cross[: tmax + 1]
    cmnd = np.ones_like(diff)
    cmnd[1:] = diff[1:] * np.arange(1, tmax + 1) / np.maximum(np.cumsum(diff[1:]), 1e-12)
    below = np.nonzero(cmnd[tmin:] < 0.15)[0]
    lag = tmin + (below[0] if len(below) else int(np.argmin(cmnd[tmin:])))
    while lag < tmax and cmnd[lag + 1] < cmnd[lag]:
        lag += 1
    a, b, c = cmnd[lag - 1 : lag + 2]
    return SR / (lag + 0.5 * (a - c) / (a - 2 * b + c))


def note_pitches(clip) -> list[tuple[int, float]]:
    """(scale degree, measured pitch class in cents above the tonic) for a melody's steady notes."""
    measured = []
    for note in clip.details.notes:
        if note.ornament in ("kampita", "andolan") or note.duration < 0.25:
            continue  # oscillating ornaments have no single pitch to measure
        start, stop = (
            int((note.onset + 0.45 * note.duration) * SR),
            int(note.onset * SR + note.duration * 0.95 * SR),
        )
        frames = [clip.waveform[i : i + 2048] for i in range(start, stop - 2048, 512)]
        if frames:
            # Circular mean of pitch classes: octave errors of single frames drop out.
            cents = np.array([1200 * math.log2(yin(f) / clip.details.tonic_hz) for f in frames])
            angle = np.angle(np.exp(2j * np.pi * cents / 1200).mean())
            measured.append((note.degree, float(angle * 1200 / (2 * np.pi) % 1200)))
    return measured


def circular_cents(a: float, b: float) -> float:
    return abs((a - b + 600) % 1200 - 600)


def scale_fit(measured: list[tuple[int, float]], scale: list[float]) -> float:
    """Mean distance in cents from each measured pitch to the scale's nearest degree."""
    return float(np.mean([min(circular_cents(c, s) for s in scale) for _, c in measured]))


def clips(count: int, duration: float, **kwargs):
    for tradition in TRADITIONS:
        for index in range(count):
            yield generate_clip(tradition, clip_seed(0, tradition, index), duration, **kwargs)


def _digest(tradition: str, seed: int) -> str:
    clip = generate_clip(tradition, seed, 2.0)
    return hashlib.sha256(clip.waveform.tobytes() + json.dumps(clip.tags).encode()).hexdigest()


def test_same_seed_gives_identical_clips_across_processes():
    here = {t: _digest(t, 11) for t in TRADITIONS}
    code = (
        "import hashlib, json; from culturemert.synth import TRADITIONS, generate_clip\n"
        "for t in TRADITIONS:\n"
        "    c = generate_clip(t, 11, 2.0)\n"
        "    print(t, hashlib.sha256(c.waveform.tobytes() + json.dumps(c.tags).encode()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    there = dict(line.split() for line in out.stdout.strip().splitlines())
    assert there == here
    assert len(set(here.values())) == len(TRADITIONS)


def test_different_seeds_give_different_clips():
    a, b = generate_clip("makam", 1, 2.0), generate_clip("makam", 2, 2.0)
    assert a.waveform.shape == b.waveform.shape == (2 * SR,)
    assert a.waveform.dtype == np.float32
    assert not np.array_equal(a.waveform, b.waveform)


def test_tags_use_each_tradition_families():
    expected = {
        "western": {"mode", "metre", "instrument", "tempo"},
        "makam": {"makam", "usul", "instrument", "tempo"},
        "hindustani": {"raga", "tala", "instrument", "tempo"},
        "carnatic": {"raga", "tala", "instrument", "tempo"},
        "greek-folk": {"mode", "metre", "instruments", "tempo"},
    }
    for clip in clips(2, 1.0):
        families = {t.split("--")[0] for t in clip.tags}
        assert families == expected[clip.details.tradition]
        assert _family(clip.tags, "mode", "makam", "raga") in SCALES


def test_tempo_is_recoverable_from_onsets():
    for clip in clips(6, 6.0):
        bpm = estimate_bpm(clip.waveform)
        low, high = TEMPO_RANGES[_family(clip.tags, "tempo")]
        assert low * 0.97 <= bpm <= high * 1.03, (clip.tags, bpm)
        assert bpm == pytest.approx(clip.details.tempo_bpm, rel=0.03)


def test_scale_intervals_are_recoverable_from_the_pitch_track():
    for clip in clips(3, 6.0, parts=("melody",)):
        scale_tag = _family(clip.tags, "mode", "makam", "raga")
        reference = SCALES[scale_tag]
        measured = note_pitches(clip)
        assert len(measured) >= 2, clip.tags
        for degree, cents in measured:
            assert circular_cents(cents, reference[degree % len(reference)]) < 15, (
                clip.tags,
                degree,
            )

        # The tagged scale explains the pitches at least as well as any other scale.
        assert scale_fit(measured, reference) < 6
        best = min(scale_fit(measured, scale) for scale in SCALES.values())
        assert scale_fit(measured, reference) <= best + 1.0, clip.tags


def band_envelopes(wave: np.ndarray, hop: int = 120, size: int = 512) -> np.ndarray:
    """Amplitude envelopes of 8 log-spaced bands, shape [bands, frames]."""
    frames = np.lib.stride_tricks.sliding_window_view(wave, size)[::hop] * np.hanning(size)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(size, 1 / SR)
    edges = np.geomspace(40, 10000, 9)
    return np.stack(
        [
            np.sqrt(power[:, (freqs >= a) & (freqs < b)].sum(1))
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        ]
    )


def self_similarity(envelopes: np.ndarray, lag: int) -> float:
    """Pearson correlation of the band envelopes with themselves ``lag`` frames later."""
    a, b = envelopes[:, :-lag], envelopes[:, lag:]
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_metre_cycle_is_recoverable_from_percussion_accents():
    """The percussion repeats once per cycle: the shortest lag, in pulses, at which the band
    envelopes correlate (nearly) best with themselves is the tagged metre's cycle length."""
    checked = 0
    for tradition in TRADITIONS:
        for index in range(8):
            seed = clip_seed(1, tradition, index)
            clip = generate_clip(tradition, seed, 10.0, parts=("percussion",))
            tag = _family(clip.tags, "metre", "usul", "tala")
            period = 60 * SR / 120 / clip.details.tempo_bpm  # pulse period in 120-sample frames
            envelopes = band_envelopes(clip.waveform)
            if CYCLE_PULSES.get(tag, 99) * period > envelopes.shape[1] / 2.5:
                continue  # fewer than 2.5 cycles in the clip
            scores = {
                m: max(self_similarity(envelopes, round(m * period) + d) for d in (-1, 0, 1))
                for m in range(2, 13)
                if m * period < envelopes.shape[1] / 2
            }
            cycle = min(m for m in scores if scores[m] >= 0.95 * max(scores.values()))
            assert cycle == CYCLE_PULSES[tag], clip.tags
            checked += 1
    assert checked >= 15


def test_makam_and_raga_pitches_are_not_equal_tempered():
    """Comma and just intervals are audible: notes whose degree lies off the 12-TET grid are
    measured off it too."""
    for tradition, tag in (("makam", "makam--Rast"), ("hindustani", "raga--Yaman")):
        seed = next(
            clip_seed(5, tradition, i)
            for i in range(200)
            if tag in generate_clip(tradition, clip_seed(5, tradition, i), 0.1).tags
        )
        clip = generate_clip(tradition, seed, 8.0, parts=("melody",))
        reference = SCALES[tag]
        off_grid = 0
        for degree, cents in note_pitches(clip):
            nominal = reference[degree % len(reference)]
            if circular_cents(nominal, 100 * round(nominal / 100)) > 10:
                assert circular_cents(cents, 100 * round(cents / 100)) > 6, (tag, degree, cents)
                off_grid += 1
        assert off_grid >= 1, tag


def test_split_counts_honour_fractions():
    for n, fractions in ((10, (0.7, 0.1, 0.2)), (7, (0.5, 0.25, 0.25)), (200, (0.8, 0.2, 0.0))):
        counts = split_counts(n, fractions)
        assert sum(counts) == n
        assert all(abs(c - f * n) < 1 for c, f in zip(counts, fractions, strict=True))
    # Small corpora still get a validation and a test clip.
    assert split_counts(5, (0.7, 0.1, 0.2)) == [3, 1, 1]
    assert split_counts(3, (0.7, 0.1, 0.2)) == [1, 1, 1]
    with pytest.raises(ValueError, match="splits"):
        split_counts(5, (0.5, 0.5, 0.5))


def test_write_corpus_writes_readable_manifests_and_audio(tmp_path):
    paths = write_corpus(
        tmp_path, ["western", "carnatic"], clips_per_tradition=10, clip_seconds=1.0,
        seed=3, progress=False,
    )  # fmt: skip
    assert set(paths) == {"western", "carnatic", "all"}
    everything = read_manifest(paths["all"])
    assert len(everything) == 20
    for tradition in ("western", "carnatic"):
        tracks = read_manifest(paths[tradition])
        assert [t.track_id for t in tracks] == [
            t.track_id for t in everything if t.tradition == tradition
        ]
        splits = [t.split for t in tracks]
        assert (splits.count("train"), splits.count("valid"), splits.count("test")) == (7, 1, 2)
        for index, track in enumerate(tracks):
            assert track.tradition == tradition and track.duration == pytest.approx(1.0)
            audio = load_audio(track.resolve(tmp_path))
            clip = generate_clip(tradition, clip_seed(3, tradition, index), 1.0)
            assert track.tags == clip.tags
            assert audio.shape == clip.waveform.shape
            assert np.abs(audio - clip.waveform).max() < 1e-4  # 16-bit FLAC quantisation
    details = [json.loads(line) for line in (tmp_path / "details.jsonl").read_text().splitlines()]
    assert [d["track_id"] for d in details] == [t.track_id for t in everything]
    assert not list(tmp_path.rglob(".*.tmp"))


def test_write_corpus_hours_share_the_total(tmp_path):
    paths = write_corpus(
        tmp_path, ["makam", "greek-folk"], hours=8 / 3600, clip_seconds=0.5,
        audio_format="wav", progress=False,
    )  # fmt: skip
    tracks = read_manifest(paths["all"])
    assert len(tracks) == 16
    assert sum(t.duration for t in tracks) == pytest.approx(8.0)
    assert all(t.path.endswith(".wav") for t in tracks)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="bollywood"):
        generate_clip("bollywood", 0)
    with pytest.raises(ValueError, match="exactly one"):
        write_corpus("unused", ["makam"], hours=1, clips_per_tradition=3)
    with pytest.raises(ValueError, match="clip_seconds"):
        write_corpus("unused", ["makam"], hours=1, clip_seconds=0)
    with pytest.raises(ValueError, match="parts"):
        generate_clip("makam", 0, 1.0, parts=("vocals",))


def test_synth_command_writes_a_corpus(tmp_path, capsys):
    from culturemert.cli import main

    argv = ["synth", "--out", str(tmp_path), "--traditions", "makam,carnatic"]
    assert main([*argv, "--clips-per-tradition", "2", "--clip-seconds", "0.5"]) == 0
    assert len(read_manifest(tmp_path / "all.jsonl")) == 4
    assert "carnatic" in capsys.readouterr().out
    assert main([*argv, "--hours", "-1"]) == 2
    assert "hours must be positive" in capsys.readouterr().err


def test_synth_command_takes_set_overrides(tmp_path, capsys):
    from culturemert.cli import main

    argv = ["synth", "--out", str(tmp_path), "--traditions", "greek-folk", "--seed", "3"]
    sets = [
        "--set",
        "clips_per_tradition=3",
        "--set",
        "clip_seconds=0.5",
        "--set",
        "splits=[1, 0, 0]",
    ]
    assert main([*argv, *sets]) == 0
    tracks = read_manifest(tmp_path / "all.jsonl")
    assert [t.split for t in tracks] == ["train"] * 3
    assert all(t.duration == 0.5 for t in tracks)
    # the same clip as drawn directly with the seed the flag gave
    expected = generate_clip("greek-folk", clip_seed(3, "greek-folk", 0), 0.5).waveform
    written, _ = sf.read(tmp_path / tracks[0].path, dtype="float32")
    assert np.abs(written - expected).max() < 1e-4  # FLAC's 16 bits
    assert main([*argv, "--set", "clip_seconds=long"]) == 2
    assert "clip_seconds: expected a number" in capsys.readouterr().err
