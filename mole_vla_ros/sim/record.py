"""Scripted demonstrations recorded exactly as the teleop recorder records a real robot.

Every message goes through `mole_vla_ros.data.recorder_core.RecorderCore`, the same object the recorder node feeds:
serialized CDR bytes per topic with the receive time (here: sim time) as log time, start/save commands, success label.
The result is a directory of episodes (`<name>/` = rosbag2 MCAP + episode.json) that the dataset builder, replay and
`ros2 bag play` cannot tell from real ones, except that episode.json says `"source": "sim"` and carries the seed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mole_vla_ros.data.episode import EpisodeWriter
from mole_vla_ros.data.recorder_core import RecordedTopicConfig, RecorderConfig, RecorderCore
from mole_vla_ros.data.typestore import get_typestore
from mole_vla_ros.robot.franka import Topics
from mole_vla_ros.ros.messages import RosbagsMessages
from mole_vla_ros.sim.config import SimConfig
from mole_vla_ros.sim.env import SimObservation, TabletopSim, apply_gripper
from mole_vla_ros.sim.expert import ExpertAction, ExpertConfig, ScriptedExpert
from mole_vla_ros.sim.messages import SimMessageBuilder, StampedMessage
from mole_vla_ros.sim.takeover import PolicyTakeover

log = logging.getLogger(__name__)

SETTLE_AFTER_SUCCESS_S = 0.5  # keep recording briefly after success, so the data shows a stable end state


def sim_recorder_config(output_dir: str | Path, sim_config: SimConfig, min_free_disk_gb: float = 1.0) -> RecorderConfig:
    """The recorder configuration for the simulator's topics: config/recorder.yaml's names, types and QoS, with
    every rate at the simulator's control rate."""
    hz = sim_config.control_hz
    topics = []
    for cam in sim_config.cameras if sim_config.render else ():
        topics.append(RecordedTopicConfig(Topics.camera_image(cam), "sensor_msgs/msg/Image", "sensor_data", hz, cam))
        topics.append(
            RecordedTopicConfig(Topics.camera_info(cam), "sensor_msgs/msg/CameraInfo", "sensor_data", required=False)
        )
    topics += [
        RecordedTopicConfig(Topics.JOINT_STATES, "sensor_msgs/msg/JointState", "reliable", hz),
        RecordedTopicConfig(Topics.CURRENT_POSE, "geometry_msgs/msg/PoseStamped", "best_effort", hz),
        RecordedTopicConfig(Topics.GRIPPER_JOINT_STATES, "sensor_msgs/msg/JointState", "reliable", hz),
        RecordedTopicConfig(Topics.TELEOP_TARGET_POSE, "geometry_msgs/msg/PoseStamped", "reliable", hz, required=False),
        RecordedTopicConfig(Topics.TELEOP_GRIPPER, "std_msgs/msg/Float32", "reliable", hz, required=False),
        RecordedTopicConfig(Topics.INSTRUCTION, "std_msgs/msg/String", "latched", required=False),
        RecordedTopicConfig("/tf_static", "tf2_msgs/msg/TFMessage", "latched", required=False),
    ]
    return RecorderConfig(
        output_dir=str(output_dir),
        robot_type=sim_config.robot_type,
        topics=topics,
        teleop_device="scripted_expert",
        operator="mole-vla sim record",
        threaded_writer=False,  # the sim waits for nobody; inline writing makes the MCAP bytes reproducible per seed
        min_free_disk_gb=min_free_disk_gb,
    )


@dataclass
class EpisodeResult:
    """What one scripted episode did."""

    seed: int
    instruction: str
    success: bool
    steps: int
    retries: int
    mistake: bool
    path: Path | None = None
    phases: list[str] = field(default_factory=list)
    skipped: str = ""  # why nothing was recorded for this seed (takeover: the policy had succeeded already)
    takeover: dict | None = None  # TakeoverResult.to_dict() for takeover episodes


def run_expert_episode(
    sim: TabletopSim,
    seed: int,
    expert_config: ExpertConfig | None = None,
    on_tick=None,
    resume: bool = False,
) -> EpisodeResult:
    """Roll out the scripted expert for one episode. `on_tick(obs, action)` sees every observation and command
    (action is None for the final observation). `resume`: take the robot over where it is (an episode `seed` some
    policy has been driving) instead of resetting the simulator; the expert gets the task's full time from there."""
    obs = sim.observe() if resume else sim.reset(seed)
    # A generator separate from the scene's: changing expert noise settings does not move the cubes.
    expert = ScriptedExpert(sim, np.random.default_rng([seed, 1]), expert_config)
    gripper_state: float | None = None
    settle_steps = round(SETTLE_AFTER_SUCCESS_S * sim.config.control_hz)
    done_for = 0
    phases: list[str] = []
    steps = 0
    for steps in range(1, sim.max_steps + 1):  # noqa: B007  (steps is reported after the loop)
        action: ExpertAction = expert.act(obs)
        if not phases or phases[-1] != action.phase:
            phases.append(action.phase)
        if on_tick is not None:
            on_tick(obs, action)
        gripper_state = apply_gripper(sim, action.gripper, gripper_state)
        sim.command_pose(action.pose)
        obs = sim.step()
        if expert.done and sim.success():
            done_for += 1
            if done_for > settle_steps:
                break
        else:
            done_for = 0
    if on_tick is not None:
        on_tick(obs, None)
    return EpisodeResult(
        seed, sim.instruction, sim.success(), steps, expert.retries, bool(expert.mistake), phases=phases
    )


class SimEpisodeRecorder:
    """Records scripted episodes of one task into `output_dir` through RecorderCore."""

    def __init__(
        self,
        output_dir: str | Path,
        task: str,
        sim_config: SimConfig | None = None,
        expert_config: ExpertConfig | None = None,
        min_free_disk_gb: float = 1.0,
        takeover: Callable[[TabletopSim], PolicyTakeover] | None = None,
    ):
        """`takeover(sim)` builds a `PolicyTakeover` on the recorder's simulator: every episode is then driven by
        the policy until its takeover time, and only the expert's part from there is recorded."""
        self.sim_config = sim_config or SimConfig()
        self.sim = TabletopSim(self.sim_config, task)
        self.expert_config = expert_config
        self.takeover = takeover(self.sim) if takeover is not None else None
        self.output_dir = Path(output_dir)
        self.config = sim_recorder_config(self.output_dir, self.sim_config, min_free_disk_gb)
        self._now_ns = 0
        self._pending_name = ""
        self.core = RecorderCore(self.config, clock=lambda: self._now_ns, writer_factory=self._make_writer)
        self.factory = RosbagsMessages(get_typestore())
        self.builder = SimMessageBuilder(self.factory, self.sim)
        self.resolve = self.config.resolve

    def _make_writer(self, root, **kwargs) -> EpisodeWriter:
        meta = kwargs["metadata"]
        meta.source = "sim"
        meta.cameras = {
            name: {
                **info,
                "width": self.sim_config.image_size,
                "height": self.sim_config.image_size,
                "encoding": "rgb8",
                "info_topic": self.resolve(Topics.camera_info(name)),
            }
            for name, info in meta.cameras.items()
        }
        # flushes follow simulated time: a recording's bytes depend on its seed, not on how loaded the machine was
        return EpisodeWriter(root, name=self._pending_name, clock=lambda: self._now_ns * 1e-9, **kwargs)

    def _write(self, messages: list[StampedMessage]) -> None:
        for m in messages:
            self._now_ns = round(m.stamp * 1e9)
            self.core.on_message(self.resolve(m.topic), self.factory.serialize(m.msg), self._now_ns)

    def record(self, seed: int, name: str | None = None) -> EpisodeResult:
        """Record one episode (seeded); returns its result with the saved episode's path (None when skipped)."""
        self.sim.reset(seed)  # to know the instruction before `start`; run_expert_episode resets identically
        kind = "takeover_" if self.takeover is not None else ""
        self._pending_name = name or f"sim_{self.sim.task.name}_{kind}seed{seed:06d}"
        if (self.output_dir / self._pending_name).exists():
            raise FileExistsError(
                f"episode {self.output_dir / self._pending_name} exists already: record into another --out, or "
                "start at a --seed whose episodes are not there yet (names are sim_<task>_seed<N>, or "
                "sim_<task>_takeover_seed<N> with an expert takeover)"
            )
        takeover = self.takeover.drive(seed) if self.takeover is not None else None
        if takeover is not None and takeover.policy.success and not self.takeover.config.keep_successes:
            return EpisodeResult(
                seed,
                self.sim.instruction,
                True,
                0,
                0,
                False,
                skipped=f"the policy succeeded after {takeover.policy.seconds:.1f} s, before the takeover",
                takeover=takeover.to_dict(),
            )
        t0 = self.sim.time  # 0, or the takeover time: stamps go on from the policy's part
        self._now_ns = round(t0 * 1e9)
        started = self.core.start(self.sim.instruction)
        if not started.ok:
            raise RuntimeError(f"recorder refused to start: {started.message}")
        self._write([self.builder.tf_static(t0), self.builder.instruction(self.sim.instruction, t0)])

        def on_tick(obs: SimObservation, action: ExpertAction | None) -> None:
            self._write(self.builder.observation(obs))
            if action is not None:
                self._write(self.builder.teleop(obs.stamp, action.pose, action.gripper))

        result = run_expert_episode(self.sim, seed, self.expert_config, on_tick, resume=takeover is not None)
        writer = self.core.writer
        assert writer is not None
        writer.metadata.extra["sim"] = {
            "task": self.sim.task.name,
            "seed": seed,
            "control_hz": self.sim_config.control_hz,
            "sim_config": self.sim_config.to_dict(),
            "cubes": {c: list(v) for c, v in self.sim.setup.cubes.items()},
            "target": self.sim.setup.target,
            "expert_retries": result.retries,
            "expert_mistake": result.mistake,
            "steps": result.steps,
        }
        if takeover is not None:
            result.takeover = {"policy": self.takeover.source, **takeover.to_dict()}
            writer.metadata.extra["sim"]["takeover"] = result.takeover
        saved = self.core.save(result.success)
        if not saved.ok:
            raise RuntimeError(f"recorder could not save the episode: {saved.message}")
        result.path = self.core.last_saved
        return result

    def close(self) -> None:
        if self.takeover is not None:
            self.takeover.close()
        self.core.shutdown()
        self.sim.close()


def record_episodes(
    output_dir: str | Path,
    task: str,
    episodes: int,
    seed: int = 0,
    sim_config: SimConfig | None = None,
    expert_config: ExpertConfig | None = None,
    progress: bool = True,
    takeover: Callable[[TabletopSim], PolicyTakeover] | None = None,
) -> list[EpisodeResult]:
    """Record `episodes` scripted episodes with seeds seed, seed+1, ...; failures are kept, labelled failure.
    With `takeover` (see `SimEpisodeRecorder`) a policy drives each episode first; seeds it solved alone are skipped
    (their results say so, with no path)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    from tqdm import tqdm

    recorder = SimEpisodeRecorder(output_dir, task, sim_config, expert_config, takeover=takeover)
    results = []
    start = time.perf_counter()
    try:
        for i in tqdm(range(episodes), desc=f"sim record {task}", unit="ep", disable=not progress):
            res = recorder.record(seed + i)
            if res.skipped:
                log.info("seed %d: %r not recorded: %s", res.seed, res.instruction, res.skipped)
            else:
                log.info(
                    "episode %s: %r success=%s steps=%d retries=%d%s",
                    res.path,
                    res.instruction,
                    res.success,
                    res.steps,
                    res.retries,
                    f" (expert took over at {res.takeover['after_s']:.1f} s)" if res.takeover else "",
                )
            results.append(res)
    finally:
        recorder.close()
    elapsed = time.perf_counter() - start
    recorded = [r for r in results if not r.skipped]
    log.info(
        "recorded %d episodes (%d successful, %d seeds skipped) into %s in %.1f s (%.1f seeds/min)",
        len(recorded),
        sum(r.success for r in recorded),
        len(results) - len(recorded),
        output_dir,
        elapsed,
        60 * len(results) / max(elapsed, 1e-9),
    )
    return results
