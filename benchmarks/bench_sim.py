"""Simulated FR3: time per control step and episodes per minute, for data generation and closed-loop evaluation.

    .venv/bin/python benchmarks/bench_sim.py [--episodes 3] [--sizes 128 224] [--task pick]

Rows (all at 10 Hz control, scripted expert, same seeds; medians over episodes):
  physics only            IK + MuJoCo, no cameras: the baseline every other row is compared with (ratio column)
  2 cams S px collision   + scene and wrist cameras rendered with the robot's collision hulls (the default)
  2 cams S px visual      + the detailed FR3 meshes instead (what the default avoids)
  record S px             the collision row + serializing every message and writing MCAP episodes (RecorderCore)
  eval S px (runtime)     closed loop through PolicyRuntime at 50 Hz commands with the scripted policy
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mole_vla_ros.sim.config import SimConfig
from mole_vla_ros.sim.env import TabletopSim
from mole_vla_ros.sim.evaluate import EvalSettings, ScriptedPolicy, evaluate
from mole_vla_ros.sim.record import SimEpisodeRecorder, run_expert_episode


def bench_expert(config: SimConfig, task: str, seeds: list[int]) -> tuple[list[float], list[float]]:
    """(ms per control step, seconds per episode) of scripted episodes, one value per episode."""
    ms, secs = [], []
    with TabletopSim(config, task) as sim:
        run_expert_episode(sim, seeds[0])  # warm caches (renderer, first allocation)
        for seed in seeds:
            t0 = time.perf_counter()
            result = run_expert_episode(sim, seed)
            dt = time.perf_counter() - t0
            ms.append(1e3 * dt / result.steps)
            secs.append(dt)
    return ms, secs


def bench_record(config: SimConfig, task: str, seeds: list[int]) -> tuple[list[float], list[float]]:
    ms, secs = [], []
    with tempfile.TemporaryDirectory() as out:
        rec = SimEpisodeRecorder(out, task, config, min_free_disk_gb=0.0)
        try:
            for seed in seeds:
                t0 = time.perf_counter()
                result = rec.record(seed)
                dt = time.perf_counter() - t0
                ms.append(1e3 * dt / result.steps)
                secs.append(dt)
        finally:
            rec.close()
    return ms, secs


def bench_eval(config: SimConfig, task: str, seeds: list[int]) -> tuple[list[float], list[float]]:
    ms, secs = [], []
    with TabletopSim(config, task) as sim:
        for seed in seeds:
            settings = EvalSettings(task=task, episodes=1, seed=seed, sim=config)
            t0 = time.perf_counter()
            res = evaluate(ScriptedPolicy(sim), settings, sim, ("scripted", None), progress=False)
            dt = time.perf_counter() - t0
            ms.append(res.ms_per_control_step)
            secs.append(dt)
    return ms, secs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--task", default="pick", choices=["pick", "stack"])
    args = parser.parse_args()
    seeds = list(range(args.episodes))

    rows: list[tuple[str, list[float], list[float]]] = []
    rows.append(("physics only", *bench_expert(SimConfig(render=False), args.task, seeds)))
    for size in args.sizes:
        rows.append((f"2 cams {size}px collision", *bench_expert(SimConfig(image_size=size), args.task, seeds)))
        visual = SimConfig(image_size=size, robot_meshes="visual")
        rows.append((f"2 cams {size}px visual", *bench_expert(visual, args.task, seeds)))
        rows.append((f"record {size}px", *bench_record(SimConfig(image_size=size), args.task, seeds)))
        rows.append((f"eval {size}px (runtime)", *bench_eval(SimConfig(image_size=size), args.task, seeds)))

    base = statistics.median(rows[0][1])
    print(f"task {args.task}, {args.episodes} episodes per row, 10 Hz control; medians")
    print(f"{'setting':28} {'ms/step':>8} {'x physics':>9} {'episodes/min':>12}")
    for name, ms, secs in rows:
        med = statistics.median(ms)
        print(f"{name:28} {med:>8.1f} {med / base:>9.1f} {60.0 / statistics.median(secs):>12.1f}")


if __name__ == "__main__":
    main()
