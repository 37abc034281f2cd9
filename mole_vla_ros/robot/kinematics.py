"""Forward and inverse kinematics of the Franka FR3 / Panda arm, from the published DH parameters.

FK uses the modified (Craig) DH table from Franka's "Robot and interface specifications" (identical for FR3 and
Panda): frame i follows frame i-1 by RotX(alpha_{i-1}) TransX(a_{i-1}) RotZ(theta_i) TransZ(d_i). The flange
(`link8`) sits d = 0.107 m along joint 7's z; the hand is turned -45 deg about z; the TCP (`hand_tcp`) is 0.1034 m
further along z (franka_description).

IK is numerical damped least squares on the geometric Jacobian, started from (and pulled in the nullspace toward)
the current configuration so the arm keeps its elbow. It respects joint position limits (with a margin) and, when
a time step is given, joint velocity limits; a pose it cannot reach within tolerance is REPORTED (`IKResult.success`
False with a reason), never silently clamped into a jump.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mole_vla_ros.interfaces import Pose
from mole_vla_ros.robot.franka import FLANGE_TO_HAND_YAW, HAND_TCP_OFFSET_Z, FrankaLimits, describe
from mole_vla_ros.runtime import rotations as rot

# (a_{i-1}, d_i, alpha_{i-1}) per joint, metres / radians (Franka docs, Craig convention); then the flange.
DH_PARAMS = np.array(
    [
        [0.0, 0.333, 0.0],
        [0.0, 0.0, -np.pi / 2],
        [0.0, 0.316, np.pi / 2],
        [0.0825, 0.0, np.pi / 2],
        [-0.0825, 0.384, -np.pi / 2],
        [0.0, 0.0, np.pi / 2],
        [0.088, 0.0, np.pi / 2],
    ]
)
FLANGE_D = 0.107
# singular values below this start damping the IK step (typical Franka values away from singularities: 0.1-1)
_SINGULAR_ZONE = 0.05
# cos/sin of alpha, rounded so that the +-pi/2 entries are exactly 0 (no 6e-17 residue in the transforms)
_CA = np.round(np.cos(DH_PARAMS[:, 2]), 15)
_SA = np.round(np.sin(DH_PARAMS[:, 2]), 15)

EE_LINKS = ("flange", "hand", "tcp")


def _dh(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    ca, sa, ct, st = np.cos(alpha), np.sin(alpha), np.cos(theta), np.sin(theta)
    return np.array(
        [
            [ct, -st, 0.0, a],
            [st * ca, ct * ca, -sa, -d * sa],
            [st * sa, ct * sa, ca, d * ca],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _ee_offset(ee: str) -> np.ndarray:
    if ee not in EE_LINKS:
        raise ValueError(f"ee must be one of {EE_LINKS} (link8, hand, hand_tcp), got {ee!r}")
    t = np.eye(4)
    t[2, 3] = FLANGE_D
    if ee == "flange":
        return t
    c, s = np.cos(FLANGE_TO_HAND_YAW), np.sin(FLANGE_TO_HAND_YAW)
    hand = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    t = t @ hand
    if ee == "tcp":
        tcp = np.eye(4)
        tcp[2, 3] = HAND_TCP_OFFSET_Z
        t = t @ tcp
    return t


@dataclass(frozen=True)
class IKResult:
    """Outcome of one IK solve.

    q:        [7] joint positions (the solution if success, else the best iterate, for diagnostics only).
    success:  True when the pose was reached within tolerance inside all limits.
    reason:   "" on success, else "unreachable" (no solution within joint limits / workspace),
              "velocity_limit" (a solution exists but needs more joint speed than allowed in dt) or "non_finite".
    position_error / rotation_error: final errors (m / rad).
    """

    q: np.ndarray
    success: bool
    reason: str
    position_error: float
    rotation_error: float
    iterations: int


class FrankaKinematics:
    """FK, Jacobian and IK for one arm model and end-effector link ("tcp" = <robot>_hand_tcp by default)."""

    def __init__(self, robot_type: str = "fr3", ee: str = "tcp", limits: FrankaLimits | None = None):
        self.robot_type = robot_type
        self.limits = limits or describe(robot_type).limits
        self.ee = ee
        self._ee_offset = _ee_offset(ee)

    # -- forward ---------------------------------------------------------------------------------------------------
    def joint_frames(self, q) -> np.ndarray:
        """[8, 4, 4]: the frames of joints 1..7 (z = joint axis) and the end effector, in the base frame."""
        q = self._check_q(q)
        # all seven link transforms at once (one cos/sin call), then the chain: ~4x faster than per-joint _dh()
        ct, st = np.cos(q), np.sin(q)
        links = np.zeros((7, 4, 4))
        links[:, 0, 0] = ct
        links[:, 0, 1] = -st
        links[:, 0, 3] = DH_PARAMS[:, 0]
        links[:, 1, 0] = st * _CA
        links[:, 1, 1] = ct * _CA
        links[:, 1, 2] = -_SA
        links[:, 1, 3] = -DH_PARAMS[:, 1] * _SA
        links[:, 2, 0] = st * _SA
        links[:, 2, 1] = ct * _SA
        links[:, 2, 2] = _CA
        links[:, 2, 3] = DH_PARAMS[:, 1] * _CA
        links[:, 3, 3] = 1.0
        frames = np.empty((8, 4, 4))
        t = links[0]
        frames[0] = t
        for i in range(1, 7):
            t = t @ links[i]
            frames[i] = t
        frames[7] = t @ self._ee_offset
        return frames

    def fk_matrix(self, q) -> np.ndarray:
        """Homogeneous transform [4, 4] of the end effector in the base frame."""
        return self.joint_frames(q)[7]

    def fk(self, q) -> Pose:
        """End-effector pose in the base frame (`<robot>_link0`)."""
        t = self.fk_matrix(q)
        return Pose(t[:3, 3], rot.matrix_to_quat(t[:3, :3]))

    def jacobian(self, q, frames: np.ndarray | None = None) -> np.ndarray:
        """Geometric Jacobian [6, 7]: rows 0-2 linear, 3-5 angular velocity of the EE, in the base frame."""
        f = self.joint_frames(q) if frames is None else frames
        z = f[:7, :3, 2]
        o = f[:7, :3, 3]
        p = f[7, :3, 3]
        return np.vstack([np.cross(z, p - o).T, z.T])

    # -- inverse ---------------------------------------------------------------------------------------------------
    def ik(
        self,
        target: Pose,
        q_current,
        *,
        dt: float | None = None,
        velocity_fraction: float = 0.5,
        joint_limit_margin: float = 0.05,
        damping: float = 0.05,
        max_iterations: int = 60,
        position_tolerance: float = 1e-4,
        rotation_tolerance: float = 1e-3,
        nullspace_gain: float = 0.1,
    ) -> IKResult:
        """Joint positions reaching `target`, starting from and staying near `q_current`.

        With `dt`, the solution must also be reachable from q_current within dt at velocity_fraction x qd_max;
        otherwise reason="velocity_limit" and q is the best solution (never used silently by the runtime).
        """
        q0 = self._check_q(q_current)
        lo = self.limits.q_min + joint_limit_margin
        hi = self.limits.q_max - joint_limit_margin
        q = np.clip(q0, lo, hi)
        tp, tq = target.position, target.quaternion
        t_rot = rot.quat_to_matrix(tq)
        pos_err = rot_err = best = np.inf
        it = stalled = 0
        for it in range(1, max_iterations + 1):
            frames = self.joint_frames(q)
            ee = frames[7]
            e_p = tp - ee[:3, 3]
            e_r = rot.quat_to_rotvec(rot.matrix_to_quat(t_rot @ ee[:3, :3].T))
            pos_err, rot_err = float(np.linalg.norm(e_p)), float(np.linalg.norm(e_r))
            if pos_err < position_tolerance and rot_err < rotation_tolerance:
                it -= 1
                break
            # stalled (no 0.1 % progress in 8 iterations): this is as close as the arm gets, the pose is out of reach
            score = pos_err + 0.1 * rot_err
            if score < best * (1.0 - 1e-3):
                best, stalled = score, 0
            else:
                stalled += 1
                if stalled >= 8:
                    break
            j = self.jacobian(q, frames)
            err = np.concatenate([e_p, e_r])
            # joints resting on a limit that the step would push further out are taken out of the Jacobian and the
            # step re-solved with the others (active set), instead of clipping and stalling against the limit
            locked = np.zeros(7, dtype=bool)
            for _ in range(3):
                dq = self._dls_step(j, err, locked, damping, nullspace_gain * (q0 - q))
                pushing = ((q <= lo + 1e-9) & (dq < 0)) | ((q >= hi - 1e-9) & (dq > 0))
                if not np.any(pushing & ~locked):
                    break
                locked |= pushing
            # limit one iteration's step so a bad linearisation cannot throw the arm across its range
            step = float(np.max(np.abs(dq)))
            if step > 0.3:
                dq *= 0.3 / step
            q = np.clip(q + dq, lo, hi)
        else:
            frames = self.joint_frames(q)
            ee = frames[7]
            pos_err = float(np.linalg.norm(tp - ee[:3, 3]))
            rot_err = float(np.linalg.norm(rot.quat_to_rotvec(rot.matrix_to_quat(t_rot @ ee[:3, :3].T))))
        if not np.all(np.isfinite(q)):
            return IKResult(q, False, "non_finite", pos_err, rot_err, it)
        if pos_err > position_tolerance or rot_err > rotation_tolerance:
            return IKResult(q, False, "unreachable", pos_err, rot_err, it)
        if dt is not None:
            vmax = self.limits.qd_max * velocity_fraction
            if np.any(np.abs(q - q0) > vmax * dt + 1e-12):
                return IKResult(q, False, "velocity_limit", pos_err, rot_err, it)
        return IKResult(q, True, "", pos_err, rot_err, it)

    @staticmethod
    def _dls_step(j: np.ndarray, err: np.ndarray, locked: np.ndarray, damping: float, pull: np.ndarray) -> np.ndarray:
        """One damped-least-squares step for the unlocked joints, plus `pull` projected into the nullspace."""
        if np.any(locked):
            j = j.copy()
            j[:, locked] = 0.0
        # damping only where the smallest singular value gets small (near a singularity); elsewhere the step is the
        # exact pseudo-inverse and converges quadratically
        u, sv, vt = np.linalg.svd(j)
        lam2 = damping * damping * max(0.0, 1.0 - (sv[-1] / _SINGULAR_ZONE) ** 2)
        dq = vt[:6].T @ ((sv / (sv * sv + lam2)) * (u.T @ err))
        if np.any(pull):
            # the 7th right-singular vector spans the nullspace: moving along it does not disturb the EE
            n = vt[6]
            dq += n * float(n @ pull)
        dq[locked] = 0.0
        return dq

    def joint_velocity(self, q, twist, damping: float = 1e-3) -> np.ndarray:
        """Joint velocities [7] producing the EE twist [6] (linear, angular; base frame) at q (damped pseudo-inverse)."""
        j = self.jacobian(q)
        return j.T @ np.linalg.solve(j @ j.T + damping * damping * np.eye(6), np.asarray(twist, dtype=np.float64))

    def within_limits(self, q, margin: float = 0.0) -> bool:
        """True when every joint is inside [q_min + margin, q_max - margin]."""
        q = self._check_q(q)
        return bool(np.all(q >= self.limits.q_min + margin) and np.all(q <= self.limits.q_max - margin))

    @staticmethod
    def _check_q(q) -> np.ndarray:
        arr = np.asarray(q, dtype=np.float64).reshape(-1)
        if arr.shape != (7,):
            raise ValueError(f"joint positions must be 7 values (joint1..joint7), got shape {np.shape(q)}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"joint positions contain NaN/inf: {arr.tolist()}")
        return arr
