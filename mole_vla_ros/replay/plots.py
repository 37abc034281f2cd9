"""PNG plots of a replay (matplotlib, Agg backend: no display needed).

- `path.png`: recorded EE path vs the trajectory the runtime commanded, with every predicted chunk, in 3D and from
  above (x-y in the base frame).
- `errors.png`: per-chunk translation / rotation error of the executed actions and gripper agreement over bag time.
- `layers.png`: which LLM layers STAR ran for each chunk (a raster) and how often each layer ran.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mole_vla_ros.replay.engine import ReplayResult


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(result: ReplayResult, report: dict, out_dir: str | Path, title: str = "") -> dict[str, str]:
    """Write the PNGs into `out_dir`; returns {name: path} (also stored in report["outputs"]["plots"])."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    paths = {}
    t0 = result.start_s
    suptitle = title or f"replay of {Path(result.bag_info['path']).name}"

    # -- path: 3D + top view -------------------------------------------------------------------------------------
    fig = plt.figure(figsize=(12, 5.5))
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    ax2 = fig.add_subplot(1, 2, 2)
    rec = np.asarray(result.motion.ee_positions) if result.motion.ee_positions else np.zeros((0, 3))
    cmd = np.asarray(result.command_positions) if result.command_positions else np.zeros((0, 3))
    for i, c in enumerate(result.chunks):
        p = np.asarray(c.positions)
        label = "predicted chunks" if i == 0 else None
        ax3.plot(p[:, 0], p[:, 1], p[:, 2], color="tab:orange", alpha=0.35, lw=1, label=label)
        ax2.plot(p[:, 0], p[:, 1], color="tab:orange", alpha=0.35, lw=1, label=label)
        ax2.plot(p[0, 0], p[0, 1], ".", color="tab:orange", ms=3)
    if len(rec):
        ax3.plot(rec[:, 0], rec[:, 1], rec[:, 2], color="k", lw=2, label="recorded EE")
        ax2.plot(rec[:, 0], rec[:, 1], color="k", lw=2, label="recorded EE")
        ax2.plot(rec[0, 0], rec[0, 1], "o", color="k", ms=5)
    if len(cmd):
        ax3.plot(cmd[:, 0], cmd[:, 1], cmd[:, 2], color="tab:blue", lw=1.5, label="commanded (runtime)")
        ax2.plot(cmd[:, 0], cmd[:, 1], color="tab:blue", lw=1.5, label="commanded (runtime)")
    frame = result.settings.runtime.frames.base_frame
    ax3.set_xlabel("x [m]")
    ax3.set_ylabel("y [m]")
    ax3.set_zlabel("z [m]")
    ax3.set_title(f"EE path in {frame}")
    ax2.set_xlabel("x [m]")
    ax2.set_ylabel("y [m]")
    ax2.set_title("top view")
    ax2.set_aspect("equal", adjustable="datalim")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="best", fontsize=8)
    fig.suptitle(suptitle)
    fig.tight_layout()
    paths["path"] = str(out / "path.png")
    fig.savefig(paths["path"], dpi=90)
    plt.close(fig)

    # -- errors over time ----------------------------------------------------------------------------------------
    per = report.get("per_chunk", [])
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    t = np.array([c["t"] for c in per], dtype=np.float64)

    def col(key, scale):
        return np.array([np.nan if c[key] is None else c[key] * scale for c in per], dtype=np.float64)

    for ax, key, scale, label in (
        (axes[0], "translation_m_executed", 1000.0, "translation error [mm]"),
        (axes[1], "rotation_rad_executed", 180.0 / np.pi, "rotation error [deg]"),
        (axes[2], "gripper_accuracy_executed", 100.0, "gripper agreement [%]"),
    ):
        if len(t):
            ax.plot(t, col(key, scale), "o-", ms=3)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("bag time of the observation [s]")
    axes[0].set_title(
        "error of the executed actions of each chunk vs the recorded motion\n"
        "(vertical lines: gripper commands, red = close, green = open)",
        fontsize=10,
    )
    for cmd_ in result.gripper_commands:
        for ax in axes:
            ax.axvline(cmd_.stamp - t0, color="tab:red" if not cmd_.open else "tab:green", alpha=0.3, lw=1)
    fig.suptitle(suptitle)
    fig.tight_layout()
    paths["errors"] = str(out / "errors.png")
    fig.savefig(paths["errors"], dpi=90)
    plt.close(fig)

    # -- layers ----------------------------------------------------------------------------------------------------
    lay = report.get("layers") or {}
    n = int(lay.get("num_layers", 0))
    fig, (ax_r, ax_h) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    if n and result.chunks:
        grid = np.zeros((n, len(result.chunks)))
        for j, c in enumerate(result.chunks):
            grid[list(c.layer_indices), j] = 1.0
        ax_r.imshow(grid, aspect="auto", origin="lower", cmap="Greys", interpolation="nearest")
        ax_h.barh(np.arange(n), lay["histogram"], color="tab:blue")
    ax_r.set_xlabel("chunk (prediction step)")
    ax_r.set_ylabel("LLM layer")
    ax_r.set_title("active layers per step (black = ran)")
    ax_h.set_xlabel("times run")
    ax_h.set_title("layer usage")
    fig.suptitle(suptitle)
    fig.tight_layout()
    paths["layers"] = str(out / "layers.png")
    fig.savefig(paths["layers"], dpi=90)
    plt.close(fig)

    report.setdefault("outputs", {})["plots"] = paths
    return paths
