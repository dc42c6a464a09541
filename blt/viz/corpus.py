"""Pictures and documents made from real data, for the mixed-bytes corpus (`blt.data.mixed`).

matplotlib ships sample data with every install (``mpl-data/sample_data``): a photograph, elevation maps, an
MRI slice, stock prices and EEG traces. These functions turn them into image pixels and into PDF plots.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np

from blt.errors import DataError


def sample_data_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data"


def _sample(name: str) -> Path:
    path = sample_data_dir() / name
    if not path.is_file():
        raise DataError(f"matplotlib's sample data has no {name} (looked in {path.parent})")
    return path


def _colored(values: np.ndarray, cmap: str) -> np.ndarray:
    """(H, W) floats -> (H, W, 3) uint8 through a matplotlib colormap, scaled to the values' range."""
    from matplotlib import colormaps

    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    scaled = (values - lo) / (hi - lo if hi > lo else 1.0)
    return (colormaps[cmap](np.nan_to_num(scaled))[..., :3] * 255).round().astype(np.uint8)


def source_images() -> dict[str, np.ndarray]:
    """Real pictures as (H, W, 3) uint8: a photograph, two elevation maps and an MRI slice."""
    from matplotlib import image

    photo = image.imread(_sample("grace_hopper.jpg"))[..., :3]
    if photo.dtype != np.uint8:
        photo = (photo * 255).round().astype(np.uint8)
    with np.load(_sample("topobathy.npz")) as z:
        topo = _colored(z["topo"].astype(np.float64), "terrain")
    with np.load(_sample("jacksboro_fault_dem.npz")) as z:
        dem = _colored(z["elevation"].astype(np.float64), "gist_earth")
    mri = np.frombuffer(gzip.decompress(_sample("s1045.ima.gz").read_bytes()), np.uint16).reshape(256, 256)
    mri = np.repeat((mri.astype(np.float64) / max(int(mri.max()), 1) * 255).round().astype(np.uint8)[..., None], 3, -1)
    return {"photo": np.ascontiguousarray(photo), "topography": topo, "elevation": dem, "mri": mri}


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as a PNG file (matplotlib's writer, deflate-compressed)."""
    from matplotlib import image

    buffer = io.BytesIO()
    image.imsave(buffer, rgb, format="png")
    return buffer.getvalue()


def series() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Real series to plot: (title, x, y) for stock prices and EEG channels."""
    out = []
    for name in ("msft.csv",):
        with open(_sample(name), newline="") as f:
            rows = list(csv.DictReader(f))
        close = np.array([float(r["Close"]) for r in rows][::-1])
        out.append(("MSFT close", np.arange(len(close), dtype=np.float64), close))
    with np.load(_sample("goog.npz")) as z:
        prices = z["price_data"]
        out.append(("GOOG adjusted close", np.arange(len(prices), dtype=np.float64), prices["adj_close"].astype(np.float64)))
    eeg = np.frombuffer(_sample("eeg.dat").read_bytes(), np.int16).astype(np.float64)
    channels = eeg.reshape(-1, 4)
    for c in range(channels.shape[1]):
        out.append((f"EEG channel {c + 1}", np.arange(len(channels)) / 100.0, channels[:, c]))
    membrane = np.frombuffer(_sample("membrane.dat").read_bytes(), np.float32).astype(np.float64)
    out.append(("membrane potential", np.arange(len(membrane), dtype=np.float64), membrane))
    return out


def pdf_plot(title: str, x: np.ndarray, y: np.ndarray, caption: str) -> bytes:
    """A one-page PDF: a line plot of (x, y) with a title and a caption (matplotlib's PDF backend, with its
    default compressed content streams and embedded font subsets, as PDFs usually are)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(x, y, lw=0.8)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.01, caption, fontsize=6)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="pdf", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return buffer.getvalue()
