"""The five synthetic traditions: their scales, cycles, instruments, ornaments and tag families.

Tags follow the real datasets' ``family--tag`` style: the makam corpus's ``makam--``/``usul--``/
``instrument--``, the Indian corpora's ``raga--``/``tala--``, Lyra's ``instruments--``, plus a
``tempo--`` class everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from culturemert.synth import rhythm, tuning
from culturemert.synth.rhythm import Metre
from culturemert.synth.tuning import Scale


@dataclass(frozen=True)
class Tradition:
    """What a synthetic tradition draws from, and how its tags are named."""

    name: str
    scales: tuple[Scale, ...]
    metres: tuple[Metre, ...]
    melodic: tuple[str, ...]  # lead and heterophonic second instruments
    percussion: tuple[str, ...]
    drone: str | None  # tag of the drone instrument, if the tradition has one
    tonic_range: tuple[float, float]  # Hz
    equal_tempered_tonic: bool  # tonic on the A440 equal-tempered grid
    ornaments: tuple[tuple[str, float], ...]  # (ornament, probability per note)
    scale_family: str
    metre_family: str
    instrument_family: str = "instrument"
    tempo_family: str = "tempo"


TRADITIONS: dict[str, Tradition] = {
    t.name: t
    for t in (
        Tradition(
            name="western",
            scales=tuning.WESTERN_MODES,
            metres=rhythm.WESTERN_METRES,
            melodic=("Piano", "Guitar", "Violin", "Strings", "Clarinet"),
            percussion=("Drums",),
            drone=None,
            tonic_range=(196.0, 330.0),
            equal_tempered_tonic=True,
            ornaments=(),
            scale_family="mode",
            metre_family="metre",
        ),
        Tradition(
            name="makam",
            scales=tuning.MAKAMS,
            metres=rhythm.USULS,
            melodic=("Ney", "Oud", "Kanun", "Tanbur", "Cello"),
            percussion=("Kudüm", "Bendir", "Darbuka"),
            drone=None,
            tonic_range=(220.0, 300.0),
            equal_tempered_tonic=False,
            ornaments=(("slide", 0.2), ("grace", 0.15)),
            scale_family="makam",
            metre_family="usul",
        ),
        Tradition(
            name="hindustani",
            scales=tuning.HINDUSTANI_RAGAS,
            metres=rhythm.HINDUSTANI_TALAS,
            melodic=("Sitar", "Sarangi", "Bansuri", "Voice", "Harmonium"),
            percussion=("Tabla",),
            drone="Tambura",
            tonic_range=(130.0, 175.0),
            equal_tempered_tonic=False,
            ornaments=(("slide", 0.35), ("andolan", 0.15)),
            scale_family="raga",
            metre_family="tala",
        ),
        Tradition(
            name="carnatic",
            scales=tuning.CARNATIC_RAGAS,
            metres=rhythm.CARNATIC_TALAS,
            melodic=("Veena", "Violin", "Voice"),
            percussion=("Mridangam", "Ghatam", "Khanjira"),
            drone="Tanpura",
            tonic_range=(130.0, 175.0),
            equal_tempered_tonic=False,
            ornaments=(("kampita", 0.35), ("slide", 0.25)),
            scale_family="raga",
            metre_family="tala",
        ),
        Tradition(
            name="greek-folk",
            scales=tuning.GREEK_MODES,
            metres=rhythm.GREEK_METRES,
            melodic=("Klarino", "Violin", "Laouto", "Lyra", "Santouri", "Bouzouki"),
            percussion=("Percussion",),
            drone=None,
            tonic_range=(220.0, 330.0),
            equal_tempered_tonic=True,
            ornaments=(("grace", 0.25), ("slide", 0.05)),
            scale_family="mode",
            metre_family="metre",
            instrument_family="instruments",
        ),
    )
}


def get_tradition(name: str) -> Tradition:
    """The tradition called ``name``; a clear error lists the known ones."""
    try:
        return TRADITIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown tradition {name!r}; choose from {', '.join(TRADITIONS)}"
        ) from None
