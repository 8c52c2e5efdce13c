"""Model cards: the ``README.md`` with Hub metadata that every encoder culturemert writes carries.

One builder serves every writer (``save_encoder``, pre-training exports, merges, ``culturemert
card``): the metadata goes through huggingface_hub's ``ModelCardData``, the body is a title, a
summary and titled sections — the licence and why, how the encoder was made, how to load it,
and the software that wrote it. Writers say what they know in an :class:`EncoderCard`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard import metadata_load

from culturemert.atomic import write_text
from culturemert.model.checkpoint import hub_id

CARD_FILE = "README.md"
TAGS = ("audio", "music", "culturemert")
LICENCE_SECTION = "Licence"
USE_SECTION = "Use"
_SET_LICENCE = "set it with `culturemert card DIR --license ID` before sharing the weights"
_UNKNOWN_LICENCE = (
    "Not stated: no input's card names a licence and none was given. Weights derived from "
    f"MERT or CultureMERT are under CC-BY-NC-4.0; {_SET_LICENCE}."
)
_USE = """Loads as a plain `transformers.HubertModel` (no remote code):

```python
from transformers import HubertModel

model = HubertModel.from_pretrained("PATH_OR_REPO_ID")
```

With culturemert, the model and its preprocessing: `culturemert.open_encoder("PATH_OR_REPO_ID")`."""
_HEADING = re.compile(r"^## (.+?)\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


class CardError(ValueError):
    """A model card that is missing or cannot be read; the message names the file."""


@dataclass
class CardOptions:
    """What ``culturemert card`` sets besides the evaluation: metadata the writer did not know."""

    license: str | None = None  # e.g. cc-by-nc-4.0 (MERT's and CultureMERT's)
    base_model: str | None = None  # the Hub id the encoder derives from
    paper: bool = False  # also the paper's published rows in the evaluation tables


@dataclass(frozen=True)
class Lineage:
    """Where an encoder comes from (a Hub id, for ``base_model``) and its licence, with why."""

    base_model: str | None = None
    license: str | None = None
    note: str = _UNKNOWN_LICENCE


@dataclass(frozen=True)
class EncoderCard:
    """What a writer knows about the encoder it writes; rendered by :func:`render_card`."""

    title: str = "Music encoder"
    summary: str = "An audio encoder in Hugging Face layout (HuBERT), written by culturemert."
    lineage: Lineage = Lineage()
    tags: tuple[str, ...] = ()
    sections: tuple[tuple[str, str], ...] = ()  # (title, Markdown): how the encoder was made


def source_metadata(source: str | os.PathLike) -> dict:
    """The Hub metadata of a source's card: a local folder's README.md or, for a hub id, the
    cached copy of its README.md (never a download); ``{}`` when there is none."""
    from huggingface_hub import try_to_load_from_cache

    path = Path(source).expanduser()
    file: Path | None = None
    if path.is_dir():
        file = path / CARD_FILE
    elif (repo := hub_id(source)) is not None:
        cached = try_to_load_from_cache(repo, CARD_FILE)
        file = Path(cached) if isinstance(cached, str) else None
    if file is None or not file.is_file():
        return {}
    try:
        return metadata_load(file) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}  # an unreadable card states no licence; the note then says none was found


def lineage(
    base: str | os.PathLike | None,
    *,
    inputs: Sequence[str | os.PathLike] = (),
    license: str | None = None,
) -> Lineage:
    """The lineage of weights derived from ``base`` (and, for merges, ``inputs``).

    ``base_model`` is ``base`` when it is a hub id. The licence is the one the inputs' cards
    name; ``license`` when they name none. It is left out when nothing states it (or the
    inputs disagree and none was given): guessing would misstate the terms the weights are
    under, so the card says why instead.
    """
    sources = ([base] if base is not None else []) + list(inputs)
    found: dict[str, list[str]] = {}
    for source in sources:
        named = source_metadata(source).get("license")
        if isinstance(named, str) and named:
            found.setdefault(named, []).append(str(source))
    base_model = hub_id(base) if base is not None else None
    described = "; ".join(f"{name} from {', '.join(where)}" for name, where in found.items())
    if len(found) == 1:
        (inherited,) = found
        note = f"{inherited}, inherited from the card of {', '.join(found[inherited])}."
        if license and license != inherited:
            note += (
                f" The licence given ({license}) was not used: derived weights keep these terms."
            )
        return Lineage(base_model, inherited, note)
    if found and license:
        note = f"{license}, as given; the inputs' cards name different licences ({described})."
        return Lineage(base_model, license, note)
    if found:
        note = (
            f"Not stated: the inputs' cards name different licences ({described}); choose one "
            f"that honours all of them and {_SET_LICENCE}."
        )
        return Lineage(base_model, None, note)
    if license:
        return Lineage(base_model, license, f"{license}, as given (no input's card names one).")
    return Lineage(base_model, None, _UNKNOWN_LICENCE)


def software_versions() -> str:
    """One line naming the versions of the libraries that wrote the weights."""
    names = ("culturemert", "torch", "transformers", "safetensors", "huggingface_hub")
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(parts)


def render_card(card: EncoderCard) -> str:
    """The card as README.md text: Hub metadata front matter, then the Markdown body."""
    data = ModelCardData(
        base_model=card.lineage.base_model,
        license=card.lineage.license,
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=list(dict.fromkeys([*TAGS, *card.tags])),
    )
    sections = [
        (LICENCE_SECTION, card.lineage.note),
        *card.sections,
        (USE_SECTION, _USE),
        ("Software", software_versions()),
    ]
    body = join_sections(f"# {card.title}\n\n{card.summary}", sections)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def write_card(directory: str | os.PathLike, card: EncoderCard) -> Path:
    """Write ``card`` as ``directory/README.md`` (atomically)."""
    return write_text(Path(directory) / CARD_FILE, render_card(card))


def load_card(directory: str | os.PathLike) -> ModelCard:
    """The card of an encoder folder; :class:`CardError` when missing, unreadable or without
    the metadata the Hub needs (``library_name`` and ``license``)."""
    file = Path(directory) / CARD_FILE
    if not file.is_file():
        raise CardError(f"{file}: no model card (write one with `culturemert card {directory}`)")
    card = _read_card(file)
    missing = [key for key in ("library_name", "license") if not card.data.get(key)]
    if missing:
        hint = f"; {_SET_LICENCE}" if "license" in missing else ""
        raise CardError(f"{file}: the card's metadata has no {' or '.join(missing)}{hint}")
    return card


def _read_card(file: Path) -> ModelCard:
    try:
        return ModelCard.load(file)
    except (OSError, ValueError, yaml.YAMLError) as error:
        lines = str(error).strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
        raise CardError(f"{file}: not a readable model card ({reason})") from None


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """A card body as its head (title, summary) and ``## `` sections (code blocks respected)."""
    head: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in text.strip("\n").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else _HEADING.match(line)
        if heading:
            sections.append((heading.group(1), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            head.append(line)
    return "\n".join(head).strip(), [(t, "\n".join(b).strip()) for t, b in sections]


def join_sections(head: str, sections: Sequence[tuple[str, str]]) -> str:
    """The body :func:`split_sections` reads back."""
    parts = [head.strip(), *(f"## {title}\n\n{body.strip()}" for title, body in sections)]
    return "\n\n".join(part for part in parts if part) + "\n"


def revise_card(
    directory: str | os.PathLike,
    *,
    sections: Sequence[tuple[str, str]] = (),
    license: str | None = None,
    base_model: str | None = None,
) -> str:
    """The card of ``directory`` with ``sections`` replacing those of the same title (new ones
    go before "Use"), and the licence and base model set where given; every other section is
    kept. A folder without a card gets a fresh one that says its making is not recorded."""
    directory = Path(directory)
    if not (directory / CARD_FILE).is_file():
        fresh = EncoderCard(
            title=directory.resolve().name,
            summary="An audio encoder in Hugging Face layout (HuBERT). This card was written "
            "after the fact: how the encoder was made is not recorded here.",
            lineage=lineage(directory, license=license),
        )
        card = ModelCard(render_card(fresh))
    else:
        card = _read_card(directory / CARD_FILE)
    head, kept = split_sections(card.text)
    # A card written elsewhere (or without front matter) still gets what the Hub needs.
    card.data.library_name = card.data.library_name or "transformers"
    card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *TAGS]))
    if license:
        card.data.license = license
        sections = [(LICENCE_SECTION, f"{license}, as set by hand."), *sections]
    if base_model:
        card.data.base_model = base_model
    for title, body in sections:
        titles = [t for t, _ in kept]
        if title in titles:
            kept[titles.index(title)] = (title, body)
        else:
            at = titles.index(USE_SECTION) if USE_SECTION in titles else len(kept)
            kept.insert(at, (title, body))
    card.text = "\n" + join_sections(head, kept)
    return str(card)
