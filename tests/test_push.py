"""``culturemert push`` offline: what would be uploaded (HfApi calls recorded), and one-line
refusals of broken folders, missing cards, offline mode and a missing token."""

from __future__ import annotations

import contextlib
import io
import shutil

import huggingface_hub
import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.utils import filter_repo_objects

from culturemert.cli import main
from culturemert.model import EncoderCard, Lineage, load_encoder, save_encoder

ENCODER_FILES = {"config.json", "preprocessor_config.json", "model.safetensors", "README.md"}


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir, tmp_path_factory):
    """A saved encoder with a licensed card, plus files that are not the encoder's."""
    card = EncoderCard(lineage=Lineage("m-a-p/MERT-v1-95M", "cc-by-nc-4.0", "as given"))
    folder = save_encoder(
        load_encoder(tiny_encoder_dir), tmp_path_factory.mktemp("push") / "enc", card=card
    )
    (folder / "sweep.csv").write_text("lambda,score\n")
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.txt").write_text("private\n")
    return folder


@pytest.fixture
def hub(monkeypatch):
    """Online with a token, every HfApi call that would reach the Hub recorded instead."""
    calls: list[tuple[str, tuple, dict]] = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    for name in ("create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(
            HfApi,
            name,
            lambda self, *args, _name=name, **kwargs: (
                calls.append((_name, args, kwargs)) or "https://huggingface.co/me/enc/commit/abc"
            ),
        )
    return calls


def push(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["push", *argv])
    return code, out.getvalue(), err.getvalue()


def test_uploads_exactly_the_encoder_files_and_card(encoder, hub):
    code, out, err = push(str(encoder), "me/enc", "--private", "--revision", "v1")
    assert code == 0, err
    assert [name for name, _, _ in hub] == ["create_repo", "create_branch", "upload_folder"]
    _, args, kwargs = hub[0]
    assert args == ("me/enc",) and kwargs["private"] is True and kwargs["exist_ok"] is True
    assert hub[1][2]["branch"] == "v1" and hub[1][2]["exist_ok"] is True
    upload = hub[2][2]
    assert upload["repo_id"] == "me/enc" and upload["revision"] == "v1"
    # What upload_folder would send: the folder's files through the Hub's own pattern filter.
    present = [p.relative_to(encoder).as_posix() for p in encoder.rglob("*") if p.is_file()]
    sent = set(filter_repo_objects(present, allow_patterns=upload["allow_patterns"]))
    assert sent == ENCODER_FILES
    assert "https://huggingface.co/me/enc/commit/abc" in out


def test_pretraining_heads_travel_with_the_encoder(encoder, hub, tmp_path):
    converted = shutil.copytree(encoder, tmp_path / "converted")
    (converted / "heads.safetensors").write_bytes(b"heads")
    assert push(str(converted), "me/enc")[0] == 0
    present = [p.relative_to(converted).as_posix() for p in converted.rglob("*") if p.is_file()]
    sent = set(filter_repo_objects(present, allow_patterns=hub[-1][2]["allow_patterns"]))
    assert sent == ENCODER_FILES | {"heads.safetensors"}


def test_refuses_a_broken_folder_and_a_missing_or_unlicensed_card(encoder, hub, tmp_path):
    broken = shutil.copytree(encoder, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    code, _, err = push(str(broken), "me/enc")
    assert code == 2 and err.count("\n") == 1 and "not a loadable encoder" in err

    no_card = shutil.copytree(encoder, tmp_path / "no-card")
    (no_card / "README.md").unlink()
    code, _, err = push(str(no_card), "me/enc")
    assert code == 2 and err.count("\n") == 1 and "README.md: no model card" in err

    unlicensed = shutil.copytree(encoder, tmp_path / "unlicensed")
    text = (unlicensed / "README.md").read_text().replace("license: cc-by-nc-4.0\n", "")
    (unlicensed / "README.md").write_text(text)
    code, _, err = push(str(unlicensed), "me/enc")
    assert code == 2 and err.count("\n") == 1 and "has no license" in err

    bad_yaml = shutil.copytree(encoder, tmp_path / "bad-yaml")
    (bad_yaml / "README.md").write_text("---\nlicense: [unclosed\n---\n# x\n")
    code, _, err = push(str(bad_yaml), "me/enc")
    assert code == 2 and err.count("\n") == 1 and "not a readable model card" in err
    assert hub == []


def test_offline_mode_and_a_missing_token_are_one_clear_line(encoder, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, _, err = push(str(encoder), "me/enc")
    assert code == 2 and err.count("\n") == 1
    assert "HF_HUB_OFFLINE is set, so nothing can be uploaded" in err

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    assert huggingface_hub.get_token() is None
    code, _, err = push(str(encoder), "me/enc")
    assert code == 2 and err.count("\n") == 1 and "no Hugging Face token" in err


def test_an_upload_the_hub_refuses_is_one_line(encoder, hub, monkeypatch):
    def refuse(self, **kwargs):
        raise RuntimeError("403 Forbidden: you cannot write to me/enc\ndetails")

    monkeypatch.setattr(HfApi, "upload_folder", refuse)
    code, _, err = push(str(encoder), "me/enc")
    assert code == 2 and err == (
        "push: me/enc: the upload failed (RuntimeError: 403 Forbidden: you cannot write to "
        "me/enc)\n"
    )
