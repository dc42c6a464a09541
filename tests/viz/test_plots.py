"""The plots of `blt.viz.plots` draw what they are given and write a PNG atomically."""

from __future__ import annotations

import numpy as np
import pytest

from blt.viz.plots import plot_entropy_traces

PNG = b"\x89PNG\r\n\x1a\n"


def test_entropy_traces_draw_one_panel_per_excerpt(tmp_path):
    rng = np.random.default_rng(0)
    panels = [{"title": f"kind {k}", "entropies": rng.uniform(0, 5.5, 300).tolist(),
               "starts": (rng.uniform(size=300) < 0.2).tolist()} for k in range(3)]
    out = plot_entropy_traces(panels, 2.5, tmp_path / "traces.png")
    data = out.read_bytes()
    assert out == tmp_path / "traces.png" and data[:8] == PNG
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 3 * 150  # three panels stacked
    assert [p.name for p in tmp_path.iterdir()] == ["traces.png"]  # no temporary file left behind


def test_entropy_traces_refuse_mismatched_panels(tmp_path):
    with pytest.raises(ValueError):
        plot_entropy_traces([{"title": "x", "entropies": [1.0, 2.0], "starts": [True]}], 1.0, tmp_path / "t.png")
