"""Reports: the numbers of a constructed results file and of the paper end up in the tables,
and the HTML page carries its plots inside it."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from html.parser import HTMLParser

import pytest

from culturemert.cli import main
from culturemert.evaluate.report import (
    Section,
    load_paper_results,
    markdown_report,
    read_tables,
    write_report,
)
from culturemert.evaluate.results import ResultsError, load_results, save_results

# The paper's ROC-AUC / mAP table (culturemert-paper.md §5.2), in its column order.
PAPER = {
    "MERT-v1-95M": [83.2, 53.3, 82.4, 52.9, 74.9, 39.7, 85.7, 56.5, 90.7, 48.1, 89.6, 35.9],
    "CultureMERT-95M": [89.6, 60.6, 88.2, 63.5, 79.2, 43.1, 86.9, 56.7, 90.7, 48.1, 89.4, 35.9],
    "CultureMERT-TA-95M": [89.0, 61.0, 87.5, 59.3, 79.1, 43.3, 87.3, 57.3, 90.8, 49.1, 89.6, 36.4],
}
MERT_F1 = [73.0, 38.9, 71.1, 33.2, 80.1, 30.0, 72.4, 42.6, 57.0, 36.9, 35.7, 21.2]


def summary(mean, std):
    return {"mean": mean, "std": std}


def constructed_results():
    return {
        "model": "my-encoder",
        "culturemert_version": "0.1.0",
        "config": {"seeds": 5},
        "versions": {"torch": "2.13"},
        "tasks": {
            "lyra": {
                "split_checksums": {"train": "ab", "valid": "cd", "test": "ef"},
                "selected": {"layer": 7, "probe": "mlp", "lr": 0.001},
                "metrics": {
                    "roc_auc": summary(0.8612, 0.0041),
                    "map": summary(0.5533, 0.012),
                    "micro_f1": summary(0.7021, 0.003),
                    "macro_f1": summary(0.4077, 0.02),
                },
                "per_tag": {"instruments--Voice": {"roc_auc": 0.9, "map": 0.95, "f1": 0.9}},
                "per_family": {
                    "instruments": {"roc_auc": 0.88, "map": 0.6, "micro_f1": 0.7, "macro_f1": 0.4},
                    "genres": {"roc_auc": 0.84, "map": 0.5, "micro_f1": 0.6, "macro_f1": 0.3},
                },
                "excluded_tags": 2,
                "missing_audio": 3,
                "roc_auc_interval": [0.83, 0.89],
            },
            "makam": {
                "metrics": {
                    "roc_auc": summary(0.9041, 0.002),
                    "map": summary(0.6149, 0.004),
                    "micro_f1": summary(0.7788, 0.001),
                    "macro_f1": summary(0.4512, 0.01),
                },
                "per_family": {"makam": {"roc_auc": 0.91, "map": 0.62}},
                "excluded_tags": 0,
            },
        },
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One ``culturemert report`` run: the constructed results plus the paper's rows."""
    folder = tmp_path_factory.mktemp("report")
    path = save_results(folder / "run.json", constructed_results())
    assert load_results(path) == constructed_results()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", str(path), "--paper", "--out", str(folder / "out")]) == 0
    return folder / "out", printed.getvalue()


def test_report_tables_hold_the_numbers(report):
    out, printed = report
    markdown = (out / "report.md").read_text()
    assert markdown in printed

    sections = {part.split("\n", 1)[0]: part for part in markdown.split("### ")[1:]}
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in sections["ROC-AUC / mAP (%)"].splitlines()
        if line.startswith("| ")
    }
    # ROC-AUC / mAP table: makam column before Lyra (paper order), mean ± std in percent.
    ours = [line for line in markdown.splitlines() if line.startswith("| my-encoder |")]
    assert ours[0] == (
        "| my-encoder | 90.4 ± 0.2 / 61.5 ± 0.4 | – | – | 86.1 ± 0.4 / 55.3 ± 1.2 | – | – | – |"
    )
    assert ours[1] == (
        "| my-encoder | 77.9 ± 0.1 / 45.1 ± 1.0 | – | – | 70.2 ± 0.3 / 40.8 ± 2.0 | – | – | – |"
    )
    for model, values in PAPER.items():
        line = rows[f"{model} (paper)"]
        cells = [f"{values[k]:.1f} / {values[k + 1]:.1f}" for k in range(0, 12, 2)]
        assert " | ".join(cells) in line
        assert line.endswith(f"| {sum(values) / 12:.1f} |")
    assert "| 66.1 |" in rows["MERT-v1-95M (paper)"]  # the paper's own Avg. column
    f1_table = sections["Micro-F1 / Macro-F1 (%)"]
    mert_f1 = next(line for line in f1_table.splitlines() if line.startswith("| MERT-v1-95M"))
    assert mert_f1.endswith(f"| {sum(MERT_F1) / 12:.1f} |") and "| 49.3 |" in mert_f1
    assert "layer 7, mlp, lr 0.001" in markdown
    assert "test tracks spans up to Lyra ±3.0 points" in markdown
    assert "a negative test example: Lyra 2 (my-encoder)." in markdown
    assert "without an audio file, not evaluated: Lyra 3 (my-encoder)." in markdown
    assert "arXiv:2506.17818" in markdown


def test_counts_shared_by_every_model_are_noted_once():
    other = constructed_results()
    other["model"] = "other-encoder"
    other["tasks"]["makam"]["excluded_tags"] = 1
    notes = markdown_report([constructed_results(), other]).split("\n\n")[-1].splitlines()
    assert notes[1] == (
        "- Tags left out of the averages for want of a positive or a negative test example: "
        "Lyra 2; Turkish-makam 1 (other-encoder)."
    )


def test_html_is_self_contained_with_plots(report):
    page = (report[0] / "report.html").read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    # two heatmaps (ROC-AUC, mAP) and per-family bars for the two tasks that have families
    assert [alt for alt, _ in images] == [
        "roc_auc heatmap",
        "map heatmap",
        "makam per family",
        "lyra per family",
    ]
    for _, data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert 'src="http' not in page and "<link" not in page
    assert "<td>86.1 ± 0.4 / 55.3 ± 1.2</td>" in page


def test_paper_numbers_are_fractions_with_their_source():
    runs = load_paper_results()
    assert [run["model"] for run in runs] == [f"{m} (paper)" for m in PAPER]
    mert = runs[0]["tasks"]
    assert mert["carnatic"]["metrics"]["roc_auc"]["mean"] == pytest.approx(0.749)
    assert mert["mtat"]["metrics"]["macro_f1"]["mean"] == pytest.approx(0.212)
    assert "ntua-slp/CultureMERT-TA-95M" in runs[2]["source"]


def test_bad_results_files_are_clear_errors(tmp_path, capsys):
    percent = constructed_results()
    percent["tasks"]["lyra"]["metrics"]["roc_auc"]["mean"] = 86.12
    with pytest.raises(ResultsError, match=r"tasks\.lyra\.metrics\.roc_auc\.mean .*\[0, 1\]"):
        save_results(tmp_path / "bad.json", percent)
    assert not (tmp_path / "bad.json").exists()
    (tmp_path / "broken.json").write_text("{")
    assert main(["report", str(tmp_path / "broken.json"), "--out", str(tmp_path / "o")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (tmp_path / "nomodel.json").write_text(json.dumps({"tasks": {}}))
    with pytest.raises(ResultsError, match="string 'model'"):
        load_results(tmp_path / "nomodel.json")
    assert main(["report", "--out", str(tmp_path / "o")]) == 2


class _Outline(HTMLParser):
    """Headings, paragraphs and table sizes of a page, read by the standard library's parser."""

    def __init__(self):
        super().__init__()
        self.items: list[tuple[str, str]] = []
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2", "p", "title", "li"):
            self._open, self._text = tag, ""
        elif tag == "table":
            self.items.append(("table", ""))

    def handle_data(self, data):
        if self._open:
            self._text += data

    def handle_endtag(self, tag):
        if tag == self._open:
            self.items.append((tag, self._text))
            self._open = None


def test_title_intro_and_extra_sections_are_placed_and_their_tables_kept(tmp_path):
    runs = [constructed_results()]
    extra = [
        Section("Change <from> base", [["Model", "Lyra"], ["my-encoder", "+1.0"]]),
        Section("Limits", items=("Few tracks & one seed.",)),
    ]
    markdown, page = write_report(runs, tmp_path, title="Makam & more", intro="Why.", extra=extra)
    outline = _Outline()
    outline.feed(page.read_text())
    assert outline.items[:3] == [("title", "Makam & more"), ("h1", "Makam & more"), ("p", "Why.")]
    headings = [text for tag, text in outline.items if tag == "h2"]
    assert headings[-2:] == ["Change <from> base", "Limits"]
    assert headings[0] == "ROC-AUC / mAP (%)"
    assert ("li", "Few tracks & one seed.") in outline.items
    text = markdown.read_text()
    assert text.startswith("# Makam & more\n\nWhy.\n\n### ROC-AUC / mAP (%)")
    assert text.rstrip().endswith("- Few tracks & one seed.")
    tables = read_tables(tmp_path)
    assert list(tables) == [
        "ROC-AUC / mAP (%)",
        "Micro-F1 / Macro-F1 (%)",
        "Selected on validation",
        "Change <from> base",
    ]
    assert tables["ROC-AUC / mAP (%)"][1][1:3] == [
        "90.4 ± 0.2 / 61.5 ± 0.4",
        "86.1 ± 0.4 / 55.3 ± 1.2",
    ]
    assert tables["Change <from> base"] == extra[0].table


def test_report_command_takes_a_title_by_flag_or_set(tmp_path, capsys):
    path = save_results(tmp_path / "run.json", constructed_results())
    out = tmp_path / "out"
    assert main(["report", str(path), "--out", str(out), "--set", "title=Set title"]) == 0
    assert "<h1>Set title</h1>" in (out / "report.html").read_text()
    assert main(["report", str(path), "--out", str(out), "--set", "paper=maybe"]) == 2
    assert "paper: expected true or false" in capsys.readouterr().err
