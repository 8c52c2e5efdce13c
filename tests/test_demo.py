"""The README's demo command runs end to end offline on the shared recordings."""

from __future__ import annotations

import numpy as np

from culturemert.cli import main


def test_demo_embeds_shared_recordings(shared_data, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--audio", str(shared_data / "audio")]) == 0
    printed = capsys.readouterr().out
    assert "13 embedded now, 0 reused, 0 failed" in printed
    # 45.8 s of Brahms in 5 s windows: 9 full windows and a 0.8 s tail.
    brahms = np.load(out / "features" / "features" / "hungarian_dance_number_5.hq.npy")
    assert brahms.shape == (5, 10, 128)
    png = (out / "similarity.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert main(["demo", "--out", str(out), "--audio", str(shared_data / "audio")]) == 0
    assert "0 embedded now, 13 reused" in capsys.readouterr().out
