"""Expert takeover of policy rollouts: demonstrations that start where the policy goes wrong (DAgger-style data).

A policy trained on scripted demonstrations only ever saw the states the expert visits. In closed loop its small
errors compound and it drifts into states no demonstration shows, where it has nothing to imitate (`sim eval`'s
"no reach" failures: flying past the cube, descending beside it). The fix from imitation learning (DAgger, Ross et
al. 2011; HG-DAgger's operator takeover) is to label the policy's *own* states with what the expert would do there.

Here: the policy drives the episode through the runtime core exactly as in `sim eval` (same runtime configuration,
simulated latency, per-episode diffusion noise) until a takeover time drawn per episode; then the scripted expert
takes the robot over from wherever it is (it re-plans from the cubes' poses, so it can start anywhere: holding the
named cube it keeps it and lifts; holding the other one or nothing, it opens and starts over) and only that part is
recorded, through the same recorder as every other episode. The result is an ordinary episode directory whose
episode.json says where the takeover happened and what the policy had done by then.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mole_vla_ros.interfaces import Policy
from mole_vla_ros.runtime.node_core import PolicyRuntime
from mole_vla_ros.sim.env import TabletopSim
from mole_vla_ros.sim.evaluate import (
    NOISE_SEEDS_PER_EPISODE,
    EpisodeOutcome,
    EvalSettings,
    run_episode,
    sim_runtime_config,
)

# The takeover time draws from its own generator ([seed, 2]: the scene uses seed, the expert [seed, 1]).
TAKEOVER_RNG_STREAM = 2


@dataclass(frozen=True)
class TakeoverConfig:
    """When the expert takes over, and how the policy is run before that.

    after_s:            the takeover time is drawn per episode, uniformly in [low, high] seconds of sim time, and
                        rounded to the camera period (the recording starts on a camera frame).
    commands_per_frame: runtime command ticks per camera frame (as `sim eval --commands-per-frame`).
    runtime:            runtime config overrides (as `sim eval --set`).
    active_layers:      STAR's k for the policy (None: the checkpoint's).
    keep_successes:     record an episode whose policy already succeeded before the takeover (default: skip it,
                        there is nothing to correct; the episode counts as skipped).
    """

    after_s: tuple[float, float] = (1.0, 6.0)
    commands_per_frame: int = 5
    runtime: dict = field(default_factory=dict)
    active_layers: int | None = None
    keep_successes: bool = False

    def __post_init__(self):
        if len(self.after_s) != 2:
            raise ValueError(f"after_s must be (low, high) seconds, got {self.after_s!r}")
        low, high = self.after_s
        if not 0.0 <= low <= high:
            raise ValueError(f"takeover window after_s={self.after_s!r} needs 0 <= low <= high (seconds)")
        if self.active_layers is not None and self.active_layers < 1:
            raise ValueError(f"active_layers must be >= 1, got {self.active_layers}")


@dataclass
class TakeoverResult:
    """What the policy did before the expert took over."""

    after_s: float  # sim time of the takeover
    policy: EpisodeOutcome  # the policy's part: success, closest distances, failure category so far

    def to_dict(self) -> dict:
        p = self.policy
        return {
            "after_s": round(self.after_s, 6),
            "policy_success": p.success,
            "policy_failure_so_far": p.failure,
            "policy_closest_target_mm": None if np.isnan(p.closest_target_mm) else round(p.closest_target_mm, 1),
            "policy_grasp_closes": p.grasp_closes,
            "policy_held": p.held,
        }


class PolicyTakeover:
    """Runs a policy through the runtime core on `sim` for the first part of each episode."""

    def __init__(self, policy: Policy, sim: TabletopSim, config: TakeoverConfig | None = None, source: str = ""):
        """`source` names the policy in the episodes' metadata (e.g. the checkpoint path)."""
        self.config = config or TakeoverConfig()
        self.sim = sim
        self.source = source
        self.settings = EvalSettings(
            task=sim.task.name,
            sim=sim.config,
            commands_per_frame=self.config.commands_per_frame,
            runtime=dict(self.config.runtime),
        )
        self.runtime = PolicyRuntime(sim_runtime_config(self.settings, policy), policy, executor="inline")
        if self.config.active_layers is not None:
            self.runtime.set_active_layers(self.config.active_layers)

    def takeover_time(self, seed: int) -> float:
        """The episode's takeover time (s): reproducible per seed, a whole number of camera periods."""
        low, high = self.config.after_s
        dt = self.sim.config.control_dt
        return round(float(np.random.default_rng([seed, TAKEOVER_RNG_STREAM]).uniform(low, high)) / dt) * dt

    def drive(self, seed: int) -> TakeoverResult:
        """Reset the simulator to episode `seed` and let the policy act until the takeover time (or success)."""
        after = self.takeover_time(seed)
        self.runtime.restart_noise(seed * NOISE_SEEDS_PER_EPISODE)  # the noise `sim eval` gives this seed
        outcome = run_episode(self.runtime, self.sim, self.settings, seed, stop_at_s=after)
        return TakeoverResult(self.sim.time, outcome)

    def close(self) -> None:
        self.runtime.close()
