"""The loss curve as a PNG in the work dir (people would rather look than read), like LLaMA-Factory's
`plot_loss`: raw step losses faintly, an exponential moving average on top, validation loss as points."""

from __future__ import annotations

from pathlib import Path

from xtune.fileio import atomic_path


def smooth(values: list[float], weight: float | None = None) -> list[float]:
    """Exponential moving average; the weight grows with the number of points (TensorBoard-like)."""
    if not values:
        return []
    if weight is None:
        weight = min(0.95, 1.0 - 1.0 / max(2.0, len(values) ** 0.5))
    out, last = [], values[0]
    for v in values:
        last = weight * last + (1 - weight) * v
        out.append(last)
    return out


def plot_loss(history: list[dict], val_history: list[dict], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    steps = [h["step"] for h in history]
    losses = [h["loss"] for h in history]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, label="loss")
    ax.plot(steps, smooth(losses), color="tab:blue", label="loss (smoothed)")
    if val_history:
        ax.plot([v["step"] for v in val_history], [v["loss"] for v in val_history], "o-", color="tab:orange",
                label="validation loss")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"training loss — {path.parent.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
