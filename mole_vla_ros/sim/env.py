"""`TabletopSim`: the simulated FR3 as the rest of the package sees a real one.

It produces what the robot's topics carry (joint states named `fr3_joint1..7` + `fr3_finger_joint1/2`, the
`fr3_hand_tcp` pose in `fr3_link0`, the gripper width, rgb8 camera frames stamped with sim time) as
`mole_vla_ros.interfaces` types, and it obeys what the policy node sends: a target TCP pose (tracked through
damped-least-squares IK, see `ik.py`) and franka_gripper-style `move` / `grasp` commands.

    sim = TabletopSim(SimConfig(), "pick")
    obs = sim.reset(seed=0)            # obs.images["scene"].image is HxWx3 uint8
    sim.command_pose(obs.ee_pose.pose) # hold still
    obs = sim.step()                   # one control period later

Same seed, same commands -> bit-identical observations (MuJoCo is deterministic; all randomness comes from the
seeded generator).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mujoco
import numpy as np

from mole_vla_ros.interfaces import CameraFrame, GripperSample, JointStateSample, Pose, PoseSample
from mole_vla_ros.robot.franka import describe
from mole_vla_ros.sim import gl
from mole_vla_ros.sim.config import SimConfig
from mole_vla_ros.sim.ik import DampedLeastSquaresIK, mat_to_quat_xyzw, quat_xyzw_to_mat
from mole_vla_ros.sim.scene import COLLISION_GROUP, VISUAL_GROUP, build_model, ready_qpos
from mole_vla_ros.sim.tasks import EpisodeSetup, Task, TaskState, get_task

log = logging.getLogger(__name__)

SETTLE_SECONDS = 0.3  # physics run after placing the cubes, so episodes start at rest
START_JOINT_NOISE = 0.03  # rad, per joint: episodes do not all start from the identical pixel-perfect pose
MAX_GRIPPER_WIDTH = 0.08


@dataclass(frozen=True)
class SimObservation:
    """Everything the robot would publish at one control tick (all stamps = sim time in seconds)."""

    stamp: float
    joint_state: JointStateSample
    ee_pose: PoseSample
    gripper: GripperSample
    images: dict[str, CameraFrame]


class TabletopSim:
    """One simulated FR3 tabletop with a task. Not thread-safe: drive it from one thread."""

    def __init__(self, config: SimConfig | None = None, task: str | Task = "pick"):
        self.config = config or SimConfig()
        self.task = get_task(task) if isinstance(task, str) else task
        self.desc = describe(self.config.robot_type)
        self.model, self.ids = build_model(self.config)
        self.data = mujoco.MjData(self.model)
        self.ik = DampedLeastSquaresIK(self.model, self.ids, ready_qpos())
        self._renderer = None
        if self.config.render and self.config.cameras:
            try:
                self._renderer = mujoco.Renderer(self.model, self.config.image_size, self.config.image_size)
            except Exception as exc:  # the GL backend's own errors are opaque; say what to do
                raise RuntimeError(
                    f"MuJoCo could not open a headless OpenGL context (MUJOCO_GL={gl.BACKEND}): {exc}. "
                    "With Mesa: `apt-get install libegl1` for egl, or `apt-get install libosmesa6` and "
                    "MUJOCO_GL=osmesa; or run with render=False (no images)."
                ) from exc
            flags = self._renderer.scene.flags
            for flag in (
                mujoco.mjtRndFlag.mjRND_SHADOW,
                mujoco.mjtRndFlag.mjRND_REFLECTION,
                mujoco.mjtRndFlag.mjRND_SKYBOX,
            ):
                flags[flag] = 0
        self._scene_option = mujoco.MjvOption()
        # Cameras see either the detailed meshes or the collision hulls of the robot (SimConfig.robot_meshes).
        show, hide = (
            (COLLISION_GROUP, VISUAL_GROUP)
            if self.config.robot_meshes == "collision"
            else (VISUAL_GROUP, COLLISION_GROUP)
        )
        self._scene_option.geomgroup[show] = 1
        self._scene_option.geomgroup[hide] = 0
        self.setup: EpisodeSetup | None = None
        self._q_cmd = ready_qpos()
        self._target_pos = np.zeros(3)
        self._target_rot = np.eye(3)
        self._joint_target: np.ndarray | None = None
        self._grip_target = MAX_GRIPPER_WIDTH
        self._grip_speed = self.config.gripper_speed
        self.last_ik_error = 0.0

    # ------------------------------------------------------------------------------------------------------------
    # episode
    def reset(self, seed: int, setup: EpisodeSetup | None = None, start_time: float = 0.0) -> SimObservation:
        """Start an episode: arm near 'ready', gripper open, cubes placed by the task (or by `setup`).

        Sim time (every stamp) starts at `start_time` seconds; a long-running node passes the previous episode's end
        so its clock never runs backwards."""
        rng = np.random.default_rng(seed)
        self.setup = setup or self.task.sample(rng)
        mujoco.mj_resetData(self.model, self.data)
        q0 = ready_qpos() + rng.uniform(-START_JOINT_NOISE, START_JOINT_NOISE, size=7)
        self.data.qpos[self.ids.arm_qpos] = q0
        self.data.qpos[self.ids.finger_qpos] = MAX_GRIPPER_WIDTH / 2
        half = self.config.cube_size / 2
        for color, (x, y, yaw) in self.setup.cubes.items():
            adr = self.ids.cube_qpos[color]
            self.data.qpos[adr : adr + 3] = (x, y, half)
            self.data.qpos[adr + 3 : adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))  # wxyz
        self._q_cmd = q0.copy()
        self.data.ctrl[self.ids.arm_act] = q0
        self.data.ctrl[self.ids.gripper_act] = MAX_GRIPPER_WIDTH
        self._grip_target = MAX_GRIPPER_WIDTH
        self._grip_speed = self.config.gripper_speed
        self.model.actuator_forcerange[self.ids.gripper_act] = (-self.config.grasp_force, self.config.grasp_force)
        mujoco.mj_forward(self.model, self.data)
        self._target_pos, self._target_rot = self.ik.forward(q0)
        self._joint_target = None
        for _ in range(round(SETTLE_SECONDS / self.config.physics_dt)):
            mujoco.mj_step(self.model, self.data)
        self.data.time = float(start_time)  # stamps count from here, like a fresh /clock
        return self.observe()

    @property
    def instruction(self) -> str:
        if self.setup is None:
            raise RuntimeError("call reset(seed) before asking for the instruction")
        return self.setup.instruction

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def max_steps(self) -> int:
        """Control steps the task allows per episode."""
        return round(self.task.episode_seconds * self.config.control_hz)

    # ------------------------------------------------------------------------------------------------------------
    # commands (what the policy node sends)
    def command_pose(self, pose: Pose) -> None:
        """Target pose of the TCP (`fr3_hand_tcp`) in the base frame; tracked until the next command."""
        self._target_pos = np.asarray(pose.position, dtype=np.float64).copy()
        self._target_rot = quat_xyzw_to_mat(pose.quaternion)
        self._joint_target = None

    def command_joints(self, q: np.ndarray) -> None:
        """Joint position targets for fr3_joint1..7 (the JointTrajectory path): tracked joint by joint at the joint
        speed limit, no IK; a later pose command takes over again."""
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"command_joints needs 7 finite joint positions, got {q.tolist()}")
        self._joint_target = np.clip(q, self.ik.q_min, self.ik.q_max)

    def move_gripper(self, width: float, speed: float | None = None) -> None:
        """franka_gripper `move`: open or close to `width` (m, both fingers) at `speed` (m/s)."""
        if not 0.0 <= width <= MAX_GRIPPER_WIDTH + 1e-6:
            raise ValueError(f"gripper width {width} m is outside [0, {MAX_GRIPPER_WIDTH}]")
        self._grip_target = float(width)
        self._grip_speed = float(speed or self.config.gripper_speed)
        self.model.actuator_forcerange[self.ids.gripper_act] = (-self.config.grasp_force, self.config.grasp_force)

    def grasp(self, width: float = 0.0, speed: float | None = None, force: float | None = None) -> None:
        """franka_gripper `grasp`: close toward `width` and hold with `force` (N) once the fingers meet an object."""
        force = float(force or self.config.grasp_force)
        if not 0.0 < force <= 140.0:
            raise ValueError(f"grasp force {force} N is outside (0, 140]")
        if not 0.0 <= width <= MAX_GRIPPER_WIDTH + 1e-6:
            raise ValueError(f"grasp width {width} m is outside [0, {MAX_GRIPPER_WIDTH}]")
        # The servo aims past the object (width 0) so the force limit, not the position error, sets the grip; the
        # expected `width` only matters to the caller's success check (franka_gripper's epsilon test).
        self._grip_target = 0.0
        self._grip_speed = float(speed or self.config.gripper_speed)
        self.model.actuator_forcerange[self.ids.gripper_act] = (-force, force)

    # ------------------------------------------------------------------------------------------------------------
    # stepping
    def step(self, duration: float | None = None, render: bool = True) -> SimObservation:
        """Advance `duration` seconds (default: one control period) toward the commanded targets and observe.

        The IK runs once per call and the joint targets are interpolated over the physics steps, so a caller that
        commands at a higher rate than `control_hz` (the runtime's trajectory rate) passes a shorter duration.
        `render=False` skips the cameras for this observation (state-only ticks).
        """
        cfg = self.config
        duration = cfg.control_dt if duration is None else float(duration)
        n = round(duration / cfg.physics_dt)
        if n < 1 or abs(n * cfg.physics_dt - duration) > 1e-9:
            raise ValueError(
                f"step duration {duration} s must be a positive whole number of physics steps of {cfg.physics_dt} s"
            )
        q_prev = self._q_cmd
        max_step = cfg.max_joint_speed * duration
        if self._joint_target is not None:  # joint trajectory mode: straight to the joint target, speed-limited
            q_new = q_prev + np.clip(self._joint_target - q_prev, -max_step, max_step)
            self.last_ik_error = 0.0
        else:
            q_new, self.last_ik_error = self.ik.solve(q_prev, self._target_pos, self._target_rot, max_step=max_step)
        self._q_cmd = q_new
        grip = float(self.data.ctrl[self.ids.gripper_act])
        grip_step = self._grip_speed * cfg.physics_dt
        for k in range(1, n + 1):
            # Linear interpolation of the joint targets: a smooth reference for the servos, as the real robot's
            # 1 kHz controller interpolates between policy-rate targets.
            self.data.ctrl[self.ids.arm_act] = q_prev + (q_new - q_prev) * (k / n)
            grip += float(np.clip(self._grip_target - grip, -grip_step, grip_step))
            self.data.ctrl[self.ids.gripper_act] = grip
            mujoco.mj_step(self.model, self.data)
        return self.observe(render=render)

    # ------------------------------------------------------------------------------------------------------------
    # observations
    def observe(self, render: bool = True) -> SimObservation:
        """The robot's state now (and camera frames unless `render` is False)."""
        stamp = self.time
        d, ids = self.data, self.ids
        names = self.desc.arm_joint_names + self.desc.finger_joint_names
        qpos = np.concatenate([d.qpos[ids.arm_qpos], d.qpos[ids.finger_qpos]])
        qvel = np.concatenate([d.qvel[ids.arm_dof], d.qvel[ids.finger_dof]])
        effort = np.concatenate([d.qfrc_actuator[ids.arm_dof], d.qfrc_actuator[ids.finger_dof]])
        joint_state = JointStateSample(stamp, names, qpos.copy(), qvel.copy(), effort.copy())
        # The base is at the world origin, but express the pose relative to it anyway (the frame is the contract).
        base_pos, base_rot = d.xpos[ids.base_body], d.xmat[ids.base_body].reshape(3, 3)
        tcp_pos, tcp_rot = d.site_xpos[ids.tcp_site], d.site_xmat[ids.tcp_site].reshape(3, 3)
        pos = base_rot.T @ (tcp_pos - base_pos)
        rot = base_rot.T @ tcp_rot
        ee = PoseSample(stamp, Pose(pos, mat_to_quat_xyzw(rot)), self.desc.base_frame, self.desc.tcp_frame)
        gripper = GripperSample(stamp, float(np.sum(d.qpos[ids.finger_qpos])))
        return SimObservation(stamp, joint_state, ee, gripper, self.render(stamp) if render else {})

    def render(self, stamp: float | None = None) -> dict[str, CameraFrame]:
        """Current frames of the configured cameras ({} when rendering is off)."""
        if self._renderer is None:
            return {}
        stamp = self.time if stamp is None else stamp
        frames = {}
        for name in self.config.cameras:
            self._renderer.update_scene(self.data, camera=self.ids.camera[name], scene_option=self._scene_option)
            frames[name] = CameraFrame(
                name, stamp, self._renderer.render().copy(), frame_id=f"{name}_camera_optical_frame"
            )
        return frames

    def task_state(self) -> TaskState:
        """Privileged state for success checks and scripted experts (never given to a policy)."""
        d, ids = self.data, self.ids
        touching: dict[str, set[int]] = {c: set() for c in ids.cube_geom}
        on_table = dict.fromkeys(ids.cube_geom, False)
        geom_to_cube = {g: c for c, g in ids.cube_geom.items()}
        for i in range(d.ncon):
            g1, g2 = int(d.contact[i].geom1), int(d.contact[i].geom2)
            for a, b in ((g1, g2), (g2, g1)):
                cube = geom_to_cube.get(a)
                if cube is None:
                    continue
                if b in ids.finger_geoms:
                    touching[cube].add(int(self.model.geom_bodyid[b]))
                elif b == ids.table_geom:
                    on_table[cube] = True
        return TaskState(
            cube_pos={c: d.xpos[b].copy() for c, b in ids.cube_body.items()},
            cube_in_hand={c: len(bodies) == 2 for c, bodies in touching.items()},
            cube_on_table=on_table,
            cube_size=self.config.cube_size,
        )

    def cube_yaw(self, color: str) -> float:
        """Yaw of a cube about the table normal (rad)."""
        rot = self.data.xmat[self.ids.cube_body[color]].reshape(3, 3)
        return float(np.arctan2(rot[1, 0], rot[0, 0]))

    def success(self, state: TaskState | None = None) -> bool:
        """Whether the episode's task is done; `state`: a `task_state()` of this tick already taken (saves a scan)."""
        if self.setup is None:
            raise RuntimeError("call reset(seed) before asking for success")
        return self.task.success(self.setup, self.task_state() if state is None else state)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def apply_gripper(sim: TabletopSim, command: float, previous: float | None) -> float:
    """Turn a [0, 1] gripper command (1 = open) into franka_gripper actions on state changes only, as the policy
    node's gripper layer does: closing is a `grasp`, opening a `move` to full width."""
    closed = command < 0.5
    if previous is None or closed != (previous < 0.5):
        if closed:
            sim.grasp()
        else:
            sim.move_gripper(MAX_GRIPPER_WIDTH)
    return command
