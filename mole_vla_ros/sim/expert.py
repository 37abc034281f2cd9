"""Scripted experts for the tabletop tasks: noisy, and they recover from their own mistakes.

An expert plays the teleoperator: every control step it outputs the commanded TCP pose (what a teleop device would
publish on `teleop/target_pose`) and a gripper command in [0, 1] (1 = open, `teleop/gripper`). It re-plans from the
cubes' current poses each step (privileged state, like a human who sees the table), so a nudged cube is followed.

Not trivially clean, on purpose (demonstrations that only show perfect motions teach a policy nothing about
getting back on track):
- per-episode: speed scale, grasp offset of a few mm, grasp yaw error, approach height;
- per-step: position jitter on the command;
- with probability `mistake_prob`, the first grasp is misplaced by 2.5-3.5 cm. The expert notices the miss the way
  an operator would, from the gripper width (fingers closed on nothing), opens, backs up and tries again. A stacked
  cube that slides off is picked up again the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mole_vla_ros.interfaces import Pose
from mole_vla_ros.sim.env import SimObservation, TabletopSim
from mole_vla_ros.sim.ik import mat_to_quat_xyzw, quat_xyzw_to_mat
from mole_vla_ros.sim.tasks import EpisodeSetup

# TCP pointing straight down with the fingers opening along the base y axis (the FR3 'ready' orientation).
DOWN = np.diag([1.0, -1.0, -1.0])


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


@dataclass(frozen=True)
class ExpertConfig:
    """Noise and speed of the scripted expert (defaults give varied but mostly successful demonstrations)."""

    speed: float = 0.25  # m/s TCP speed toward the current waypoint
    yaw_rate: float = 1.5  # rad/s
    speed_jitter: float = 0.25  # per-episode speed scale drawn from [1 - j, 1 + j]
    grasp_offset_std: float = 0.004  # m
    yaw_error_std: float = 0.08  # rad
    command_noise_std: float = 0.0015  # m, per step
    mistake_prob: float = 0.3
    max_attempts: int = 4

    def __post_init__(self):
        if not 0.02 <= self.speed <= 1.0:
            raise ValueError(f"expert speed {self.speed} m/s is outside [0.02, 1.0]")
        if not 0.0 <= self.mistake_prob <= 1.0:
            raise ValueError(f"mistake_prob {self.mistake_prob} must be a probability in [0, 1]")
        if not 0.0 <= self.speed_jitter < 1.0:
            raise ValueError(f"speed_jitter {self.speed_jitter} must be in [0, 1)")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts {self.max_attempts} must be at least 1")


@dataclass(frozen=True)
class ExpertAction:
    """One teleop command: the TCP target pose in the base frame and the gripper command (1 open, 0 closed)."""

    pose: Pose
    gripper: float
    phase: str


class ScriptedExpert:
    """A pick / stack expert as a small state machine over waypoints. Call `act(obs)` once per control step."""

    def __init__(
        self,
        sim: TabletopSim,
        rng: np.random.Generator,
        config: ExpertConfig | None = None,
        setup: EpisodeSetup | None = None,
    ):
        """`setup` (default: the episode's) says which cube to act on; a scripted policy passes the one it read from
        the instruction, so the instruction decides what it does."""
        if sim.setup is None:
            raise RuntimeError("reset the simulator before creating an expert for the episode")
        self.sim = sim
        self.cfg = config or ExpertConfig()
        self.rng = rng
        self.task = sim.task.name
        self.setup = setup or sim.setup
        self.dt = sim.config.control_dt
        self.half = sim.config.cube_size / 2
        cfg = self.cfg
        self.speed = cfg.speed * rng.uniform(1 - cfg.speed_jitter, 1 + cfg.speed_jitter)
        self.grasp_offset = rng.normal(0.0, cfg.grasp_offset_std, size=2)
        self.yaw_error = float(rng.normal(0.0, cfg.yaw_error_std))
        self.hover = float(rng.uniform(0.08, 0.13))
        self.mistake = rng.uniform() < cfg.mistake_prob
        self.attempts = 0
        self.retries = 0
        self.phase = "approach"
        self.phase_steps = 0
        self._offset = self._plan_attempt()
        self.pos: np.ndarray | None = None
        self.yaw = 0.0
        self.gripper = 1.0
        self.done = False

    # ------------------------------------------------------------------------------------------------------------
    def _goto(self, goal: np.ndarray, goal_yaw: float, speed_scale: float = 1.0) -> bool:
        """Move the commanded pose one step toward the goal; True once there."""
        step = self.speed * speed_scale * self.dt
        delta = goal - self.pos
        dist = float(np.linalg.norm(delta))
        self.pos = goal.copy() if dist <= step else self.pos + delta * (step / dist)
        dyaw = _wrap(goal_yaw - self.yaw)
        max_dyaw = self.cfg.yaw_rate * self.dt
        self.yaw += float(np.clip(dyaw, -max_dyaw, max_dyaw))
        return dist <= step and abs(dyaw) <= max_dyaw

    def _grasp_yaw(self, color: str) -> float:
        """Cube yaw folded to the finger orientation closest to the current one (a cube has 4-fold symmetry)."""
        yaw = self.sim.cube_yaw(color) + self.yaw_error
        candidates = [yaw + k * np.pi / 2 for k in range(-2, 3)]
        return min(candidates, key=lambda a: abs(_wrap(a - self.yaw)) + 0.01 * abs(a))

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.phase_steps = 0

    def act(self, obs: SimObservation) -> ExpertAction:
        """The teleop command for this control step, given the robot's observation."""
        if self.pos is None:
            self.pos = obs.ee_pose.pose.position.copy()
            rot = quat_xyzw_to_mat(obs.ee_pose.pose.quaternion) @ DOWN.T
            self.yaw = float(np.arctan2(rot[1, 0], rot[0, 0]))
            if self.sim.task_state().cube_in_hand[self.setup.target]:
                # taking over a robot that already holds the named cube (expert takeover of a policy rollout): keep
                # holding it and lift, as an operator would, instead of opening and starting over
                self.gripper = 0.0
                self.attempts = 1
                self._set_phase("lift")
        state = self.sim.task_state()
        target = self.setup.target
        cube = state.cube_pos[target]
        width = obs.gripper.width
        self.phase_steps += 1
        secs = self.phase_steps * self.dt

        if self.phase == "approach":
            self.gripper = 1.0
            offset = self._offset
            goal = np.array([cube[0] + offset[0], cube[1] + offset[1], self.half + self.hover])
            if self._goto(goal, self._grasp_yaw(target)):
                self._set_phase("descend")
        elif self.phase == "descend":
            goal = np.array([cube[0] + self._offset[0], cube[1] + self._offset[1], max(self.half - 0.01, 0.012)])
            if self._goto(goal, self._grasp_yaw(target), speed_scale=0.5):
                self._set_phase("close")
        elif self.phase == "close":
            self.gripper = 0.0
            if secs >= 0.6:
                self.attempts += 1
                self._set_phase("lift")
        elif self.phase == "lift":
            lift_z = self.half + (0.12 if self.task == "pick" else 0.10)
            reached = self._goto(np.array([self.pos[0], self.pos[1], lift_z]), self.yaw)
            if width < self.sim.config.cube_size * 0.5:  # fingers closed on nothing: missed
                self._retry()
            elif reached:
                self._set_phase("hold" if self.task == "pick" else "carry")
        elif self.phase == "carry":
            other = state.cube_pos[self.setup.other]
            goal = np.array([other[0], other[1], other[2] + 2 * self.half + 0.04])
            if width < self.sim.config.cube_size * 0.5:
                self._retry()
            elif self._goto(goal, self._grasp_yaw(self.setup.other)):
                self._set_phase("place")
        elif self.phase == "place":
            other = state.cube_pos[self.setup.other]
            goal = np.array([other[0], other[1], other[2] + 2 * self.half + 0.003])
            if self._goto(goal, self.yaw, speed_scale=0.4):
                self._set_phase("release")
        elif self.phase == "release":
            self.gripper = 1.0
            if secs >= 0.6:
                self._set_phase("retreat")
        elif self.phase == "retreat":
            goal = np.array([self.pos[0], self.pos[1], self.half + 0.15])
            if self._goto(goal, self.yaw):
                if self.sim.task.success(self.setup, self.sim.task_state()):
                    self._set_phase("hold")
                else:
                    self._retry()  # the cube slid off or missed the other one: pick it up again
        elif self.phase == "hold":
            self.done = True
            if self.task == "pick":
                self._goto(np.array([self.pos[0], self.pos[1], self.half + 0.15]), self.yaw)

        noisy = self.pos + self.rng.normal(0.0, self.cfg.command_noise_std, size=3)
        quat = mat_to_quat_xyzw(_rot_z(self.yaw) @ DOWN)
        return ExpertAction(Pose(noisy, quat), self.gripper, self.phase)

    def _plan_attempt(self) -> np.ndarray:
        """Grasp offset (m, x/y) for the next attempt: the episode's small bias, plus the deliberate miss."""
        offset = self.grasp_offset.copy()
        if self.mistake and self.attempts == 0:
            angle = self.rng.uniform(0.0, 2.0 * np.pi)
            offset += self.rng.uniform(0.025, 0.035) * np.array([np.cos(angle), np.sin(angle)])
        return offset

    def _retry(self) -> None:
        """Open, back up and start over (counts as a recovery in the episode's metadata)."""
        self.retries += 1
        self.gripper = 1.0
        if self.attempts >= self.cfg.max_attempts:
            self._set_phase("hold")  # give up; the episode ends as a failure
            return
        self._offset = self._plan_attempt()
        self._set_phase("approach")
