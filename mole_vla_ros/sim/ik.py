"""Cartesian pose tracking for the simulated arm: damped-least-squares IK onto the joint position servos.

This stands in for a Cartesian impedance controller (crisp's `target_pose`). The IK integrates on the *commanded*
joint configuration, not the measured one: the position servos always lag a little, and solving from the measured
state would re-add that lag every step (the arm would creep behind the target and never settle).
"""

from __future__ import annotations

import mujoco
import numpy as np

from mole_vla_ros.sim.scene import SceneIds

IK_DAMPING = 0.05  # lambda of the damped pseudo-inverse (m): keeps steps finite near singularities
NULLSPACE_GAIN = 0.1  # pull toward the start posture in the Jacobian's null space, so the elbow does not drift
ROTATION_WEIGHT = 0.5  # metres per radian: weighs orientation against position error


def quat_xyzw_to_mat(q_xyzw: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a quaternion given (x, y, z, w) as geometry_msgs spells it."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, np.array([q[3], q[0], q[1], q[2]]))
    return mat.reshape(3, 3)


def mat_to_quat_xyzw(mat: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion of a 3x3 rotation matrix, with w >= 0 (one sign, so logs do not flip)."""
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(mat, dtype=np.float64).reshape(9))
    if q[0] < 0:
        q = -q
    return np.array([q[1], q[2], q[3], q[0]])


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (rad, world frame) that turns `current` into `target` (both 3x3)."""
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, (target @ current.T).reshape(9))
    err = np.zeros(3)
    mujoco.mju_quat2Vel(err, q, 1.0)
    return err


class DampedLeastSquaresIK:
    """Solves joint targets for a TCP pose on a private MjData, so the simulation state is never touched."""

    def __init__(self, model: mujoco.MjModel, ids: SceneIds, rest_q: np.ndarray):
        self.model = model
        self.ids = ids
        self.data = mujoco.MjData(model)
        self.rest_q = np.asarray(rest_q, dtype=np.float64).copy()
        jnt = [int(model.dof_jntid[d]) for d in ids.arm_dof]
        self.q_min = model.jnt_range[jnt, 0].copy()
        self.q_max = model.jnt_range[jnt, 1].copy()
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position [3] and rotation [3, 3] in the world (= base) frame for arm configuration `q`."""
        self.data.qpos[self.ids.arm_qpos] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.ids.tcp_site].copy(), self.data.site_xmat[self.ids.tcp_site].reshape(
            3, 3
        ).copy()

    def solve(
        self, q_start: np.ndarray, pos: np.ndarray, rot: np.ndarray, max_step: float, iterations: int = 4
    ) -> tuple[np.ndarray, float]:
        """Joint configuration near `q_start` that puts the TCP at (`pos`, `rot`).

        No joint moves more than `max_step` rad in total (a far target is approached over several calls) and every
        joint stays inside its limits. Returns (q, remaining pose error in m + weighted rad).
        """
        q = np.asarray(q_start, dtype=np.float64).copy()
        for _ in range(iterations):
            cur_pos, cur_rot = self.forward(q)
            err = np.concatenate([pos - cur_pos, ROTATION_WEIGHT * rotation_error(rot, cur_rot)])
            err_norm = float(np.linalg.norm(err))
            if err_norm < 1e-5:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.ids.tcp_site)
            jac = np.vstack([self._jacp[:, self.ids.arm_dof], ROTATION_WEIGHT * self._jacr[:, self.ids.arm_dof]])
            jjt = jac @ jac.T + (IK_DAMPING**2) * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, err)
            # Null-space pull toward the rest posture: redundancy resolved the same way every time (determinism).
            pinv = jac.T @ np.linalg.inv(jjt)
            dq += (np.eye(7) - pinv @ jac) @ (NULLSPACE_GAIN * (self.rest_q - q))
            q = q + dq
            total = q - q_start
            scale = np.max(np.abs(total)) / max_step
            if scale > 1.0:
                q = q_start + total / scale
            q = np.clip(q, self.q_min, self.q_max)
        cur_pos, cur_rot = self.forward(q)
        err_norm = float(np.linalg.norm(pos - cur_pos) + ROTATION_WEIGHT * np.linalg.norm(rotation_error(rot, cur_rot)))
        return q, err_norm
