"""What a training run leaves to read (process 0 only): ``<log_dir>/train.log`` (plain
text, one time-stamped line per event), TensorBoard event files in ``<log_dir>`` when
TensorBoard is installed, and ``<log_dir>/loss.png``, the loss curve (raw and smoothed
over ``average_loss``) with the rate, drawn when training stops (matplotlib, else Pillow).
"""
from __future__ import annotations

import datetime
import os

import numpy as np


class RunLog:
    """Plain-text log, TensorBoard events and the loss history (process 0 only)."""

    def __init__(self, log_dir: str | None, *, enabled: bool, echo, resume: bool):
        self.dir, self.enabled, self.echo = log_dir, enabled and bool(log_dir), echo
        self.file = None
        self.tb = None
        self.notes: list[str] = []
        if not self.enabled:
            return
        os.makedirs(log_dir, exist_ok=True)
        self.file = open(os.path.join(log_dir, "train.log"), "a" if resume else "w", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(log_dir)
        except Exception as e:      # tensorboard not installed: the text log still has everything
            self.notes.append(f"TensorBoard event files are not written ({type(e).__name__}: {e}); "
                              "pip install tensorboard to get them")

    def line(self, text: str, *, echo: bool = True) -> None:
        if self.file:
            stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            self.file.write(f"{stamp} {text}\n")
            self.file.flush()
        if echo and self.echo:
            self.echo(text)

    def scalars(self, it: int, values: dict[str, float]) -> None:
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(k, v, it)

    def close(self) -> None:
        if self.tb:
            self.tb.flush()
            self.tb.close()
        if self.file:
            self.file.close()


def plot_losses(history: dict[str, list], path: str, average: int = 1) -> str:
    """Write the loss curve (raw and smoothed over ``average``) and the rate as a PNG."""
    from ..io.atomic import atomic_path
    its, losses, lrs = history["iter"], history["loss"], history["lr"]
    if not its:
        return ""
    k = max(average, 1)
    cs = np.cumsum(np.insert(np.asarray(losses, np.float64), 0, 0.0))
    smooth = [(cs[i + 1] - cs[max(0, i + 1 - k)]) / min(i + 1, k) for i in range(len(losses))]
    with atomic_path(path) as tmp:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
            ax.plot(its, losses, lw=0.6, alpha=0.4, color="tab:blue", label="loss")
            ax.plot(its, smooth, lw=1.5, color="tab:blue", label=f"loss (mean of {k})")
            ax.set_xlabel("iteration")
            ax.set_ylabel("loss")
            ax2 = ax.twinx()
            ax2.plot(its, lrs, lw=1, color="tab:orange", label="lr")
            ax2.set_ylabel("learning rate")
            ax.legend(loc="upper right")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(tmp, format="png")
            plt.close(fig)
        except ImportError:
            _plot_pillow(its, losses, smooth, tmp)
    return path


def _plot_pillow(its, losses, smooth, path) -> None:
    from PIL import Image, ImageDraw
    w, h, m = 800, 450, 40
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    lo, hi = min(losses), max(losses)
    hi = hi if hi > lo else lo + 1
    x0, x1 = its[0], max(its[-1], its[0] + 1)

    def pt(i, v):
        return m + (i - x0) / (x1 - x0) * (w - 2 * m), h - m - (v - lo) / (hi - lo) * (h - 2 * m)

    d.rectangle([m, m, w - m, h - m], outline="black")
    d.line([pt(i, v) for i, v in zip(its, losses)], fill=(160, 190, 230), width=1)
    d.line([pt(i, v) for i, v in zip(its, smooth)], fill=(20, 80, 180), width=2)
    d.text((m, 10), f"loss  {lo:.4g} .. {hi:.4g}   iterations {x0} .. {its[-1]}", fill="black")
    im.save(path, format="PNG")
