"""Publishing an encoder folder on the Hugging Face Hub: only a folder that loads and carries a
valid card, and only its encoder files and card."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from culturemert.model.card import CARD_FILE, load_card
from culturemert.model.heads import HEADS_FILE

_METADATA_FILES = ("config.json", "preprocessor_config.json")


class PushError(RuntimeError):
    """A folder that may not be published, or an upload that failed; the message says why."""


@dataclass
class PushOptions:
    """Where and how ``culturemert push`` uploads."""

    private: bool = False  # a new repository is private (an existing one keeps its visibility)
    revision: str | None = None  # a branch, made from main when it does not exist yet
    message: str | None = None  # the commit message


class Pushed(NamedTuple):
    """What an upload made: the commit's URL and the files it holds."""

    url: str
    files: list[str]


def encoder_files(directory: str | os.PathLike) -> list[str]:
    """The files an encoder folder publishes: config, preprocessing, pre-training heads if any,
    weights (every shard), card."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if (directory / "model.safetensors").is_file():
        weights = ["model.safetensors"]
    elif index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        weights = [index.name, *shards]
    else:
        weights = ["pytorch_model.bin"]
    # The pre-training heads of a converted MERT checkpoint travel with it: continual
    # pre-training from the published folder then starts from them too.
    present = [name for name in (*_METADATA_FILES, HEADS_FILE) if (directory / name).is_file()]
    return [*present, *weights, CARD_FILE]


def check_publishable(directory: str | os.PathLike) -> list[str]:
    """The files to upload from ``directory``; :class:`PushError` unless
    :func:`~culturemert.model.load_encoder` loads it and its card is valid."""
    from culturemert.model.card import CardError
    from culturemert.model.checkpoint import load_encoder

    directory = Path(directory)
    if not directory.is_dir():
        raise PushError(f"{directory}: no such folder (expected an encoder in Hugging Face layout)")
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # a check, not a load anyone waits on
    try:
        load_encoder(directory)
    except Exception as error:  # whatever stops loading (config, weights, layout) stops the push
        raise PushError(
            f"{directory}: not a loadable encoder, nothing uploaded ({_reason(error)})"
        ) from None
    finally:
        if shown:
            transformers_logging.enable_progress_bar()
    try:
        load_card(directory)
    except CardError as error:
        raise PushError(f"{error}; nothing uploaded") from None
    return encoder_files(directory)


def push_encoder(
    directory: str | os.PathLike, repo_id: str, options: PushOptions | None = None
) -> Pushed:
    """Upload the encoder folder to the Hub model repository ``repo_id`` (created when missing).

    Refuses a folder :func:`check_publishable` refuses, offline mode,
    and a missing token, with one-line messages."""
    from huggingface_hub import HfApi, constants, get_token

    options = options or PushOptions()
    files = check_publishable(directory)
    offline = (
        f"{repo_id}: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it on a machine "
        "with network access and push again"
    )
    if constants.HF_HUB_OFFLINE:
        raise PushError(offline)
    if get_token() is None:
        raise PushError(
            f"{repo_id}: no Hugging Face token; log in with `hf auth login` or set HF_TOKEN "
            "(a token with write access)"
        )
    api = HfApi()
    try:
        api.create_repo(repo_id, private=options.private, exist_ok=True)
        if options.revision:
            api.create_branch(repo_id, branch=options.revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=directory,
            allow_patterns=files,
            revision=options.revision,
            commit_message=options.message or f"Upload encoder ({', '.join(files)})",
        )
    except Exception as error:  # offline, refused token, unknown org, network: one message
        from huggingface_hub.utils import OfflineModeIsEnabled

        if isinstance(error, OfflineModeIsEnabled):
            raise PushError(offline) from None
        raise PushError(f"{repo_id}: the upload failed ({_reason(error)})") from None
    return Pushed(str(getattr(commit, "commit_url", commit)), files)


def _reason(error: Exception) -> str:
    """The error's kind and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
