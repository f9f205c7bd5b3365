"""curves.png: loss, learning rate and memory of a run (and, for preference pairs, how far the chosen answer leads),
as one picture for the run folder and the model card."""
from __future__ import annotations

from ..runs import Run


def draw_curves(run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no screen on a workstation service
    import matplotlib.pyplot as plt

    metrics = [m for m in run.metrics() if "step" in m and "event" not in m]
    if not metrics:
        return
    samples = [s for s in run.gpu_samples() if "used_gb" in s]
    pairs = any("reward_margin" in m for m in metrics)
    fig, axes = plt.subplots(1, 5 if pairs else 3, figsize=(21 if pairs else 13, 3.6))
    loss, lr, mem = axes[:3]
    for key, label in (("loss", "train loss"), ("eval_loss", "validation loss")):
        points = [(m["step"], m[key]) for m in metrics if key in m]
        if points:
            loss.plot(*zip(*points), marker="o" if key == "eval_loss" else None, label=label)
    loss.set(title="Loss", xlabel="step")
    loss.legend()
    points = [(m["step"], m["learning_rate"]) for m in metrics if "learning_rate" in m]
    if points:
        lr.plot(*zip(*points))
    lr.set(title="Learning rate", xlabel="step")
    if samples:
        t0 = samples[0]["time"]
        mem.plot([s["time"] - t0 for s in samples], [s["used_gb"] for s in samples])
    mem.set(title="Memory used (GB)", xlabel="seconds")
    if pairs:
        for axis, key, title in ((axes[3], "reward_margin", "Reward margin (chosen - rejected)"),
                                 (axes[4], "reward_accuracy", "How often chosen wins")):
            for name, label in ((key, "train"), (f"eval_{key}", "validation")):
                points = [(m["step"], m[name]) for m in metrics if name in m]
                if points:
                    axis.plot(*zip(*points), marker="o" if label == "validation" else None, label=label)
            axis.set(title=title, xlabel="step")
            axis.legend()
    fig.tight_layout()
    tmp = run.curves_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(run.curves_path)
