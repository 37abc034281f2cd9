"""Named end-effector action spaces: what the numbers in a policy's action vector mean, defined once.

Every space ends with one gripper dimension, `gripper_open` in [0, 1] (1 = open, 0 = closed), as in CogACT/RLBench.
Positions are metres and rotations radians, both expressed in the robot base frame (`fr3_link0` by default).

| name                 | dim | layout                                 | meaning                                         |
|----------------------|-----|----------------------------------------|-------------------------------------------------|
| delta_xyz_abs_rpy    | 7   | dx dy dz roll pitch yaw g              | paper / CogACT RLBench (default): delta position, absolute orientation |
| abs_pose_rpy         | 7   | x y z roll pitch yaw g                 | absolute target pose                            |
| delta_pose_rpy       | 7   | dx dy dz droll dpitch dyaw g           | delta pose, rotation delta applied in the base frame |
| abs_pose_rotvec      | 7   | x y z rx ry rz g                       | absolute pose, rotation vector                  |
| delta_pose_rotvec    | 7   | dx dy dz drx dry drz g                 | delta pose, rotation-vector delta in the base frame |
| abs_pose_quat        | 8   | x y z qx qy qz qw g                    | absolute pose, quaternion                       |

Delta semantics ("in the base frame"): p_target = p_current + dp and R_target = R_delta @ R_current, i.e. the
rotation delta is expressed in base-frame axes (left-multiplied), not in the EE frame.

Chunks (`decode_chunk`): CogACT trains on chunks whose k-th action was computed in the dataset from the robot state
at step k (RLBench: `target_k - current_k`, where current_k is where the previous action left the robot). So the deltas
of one chunk CHAIN: pose_0 = decode(start, a_0), pose_k = decode(pose_{k-1}, a_k). Absolute spaces ignore the chain.
The dataset builder must produce training actions with `encode(pose_t, pose_{t+1}, g)` (or `encode_trajectory`)
so that `decode_chunk` of a predicted chunk reproduces the demonstrated poses exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mole_vla_ros.interfaces import Pose
from mole_vla_ros.runtime import rotations as rot

DEFAULT_ACTION_SPACE = "delta_xyz_abs_rpy"


@dataclass(frozen=True)
class ActionSpace:
    """One named action space. `encode`/`decode` round-trip: decode(c, encode(c, t, g)) == (t, g)."""

    name: str
    position: str  # "delta" | "absolute"
    rotation: str  # "delta" | "absolute"
    rotation_repr: str  # "rpy" | "rotvec" | "quat"
    description: str

    @property
    def dim(self) -> int:
        """Length of one action vector, gripper included."""
        return 3 + (4 if self.rotation_repr == "quat" else 3) + 1

    @property
    def gripper_index(self) -> int:
        return self.dim - 1

    @property
    def is_delta(self) -> bool:
        """True when any part of the action is relative to the current pose (chunks then chain)."""
        return self.position == "delta" or self.rotation == "delta"

    # -- rotation representation <-> quaternion --------------------------------------------------------------------
    def _rot_to_quat(self, values: np.ndarray) -> np.ndarray:
        if self.rotation_repr == "rpy":
            return rot.rpy_to_quat(values)
        if self.rotation_repr == "rotvec":
            return rot.rotvec_to_quat(values)
        return rot.quat_normalize(values)

    def _quat_to_rot(self, q: np.ndarray) -> np.ndarray:
        if self.rotation_repr == "rpy":
            return rot.quat_to_rpy(q)
        if self.rotation_repr == "rotvec":
            return rot.quat_to_rotvec(q)
        return rot.quat_normalize(q)

    # -- checks ------------------------------------------------------------------------------------------------------
    def check_actions(self, actions, what: str = "action") -> np.ndarray:
        """`actions` as float64 [..., dim]; raises naming the shape or the non-finite entries otherwise."""
        arr = np.asarray(actions, dtype=np.float64)
        if arr.ndim == 0 or arr.shape[-1] != self.dim:
            raise ValueError(
                f"{what} for action space {self.name!r} must have last dimension {self.dim}, got shape {arr.shape}; "
                f"check that the checkpoint's action_space matches the runtime config"
            )
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr)).tolist()
            raise ValueError(f"{what} contains NaN/inf at indices {bad[:8]} (action space {self.name!r})")
        return arr

    # -- encode / decode --------------------------------------------------------------------------------------------
    def encode(self, current: Pose, target: Pose, gripper_open: float, reference=None) -> np.ndarray:
        """The action [dim] that moves the EE from `current` to `target` with gripper command `gripper_open`.

        `reference` (an earlier action of this space, e.g. its neighbour in the sequence) picks, among equivalent
        rotation values (rpy +-2pi, rotation vector across pi, quaternion sign), the one closest to it: use it for
        padding or appended actions so they continue an `encode_trajectory` sequence without a jump.
        """
        g = float(gripper_open)
        if not 0.0 <= g <= 1.0:
            raise ValueError(f"gripper_open must be in [0, 1] (1 = open), got {gripper_open!r}")
        if self.position == "delta":
            pos = target.position - current.position
        else:
            pos = target.position.copy()
        if self.rotation == "delta":
            q = rot.quat_multiply(target.quaternion, rot.quat_conjugate(current.quaternion))
        else:
            q = target.quaternion
        r = self._quat_to_rot(q)
        if reference is not None:
            ref = self.check_actions(reference, "reference action").reshape(-1)[3 : self.dim - 1]
            r = self._continue_rotation(r[None], ref)[0]
        return np.concatenate([pos, r, [g]])

    def _continue_rotation(self, r: np.ndarray, reference=None) -> np.ndarray:
        """Rotation values [T, n] made continuous along T (and with `reference` before the first)."""
        if self.rotation_repr == "rpy":
            return rot.unwrap_rpy(r, reference=reference)
        if self.rotation_repr == "rotvec":
            return rot.rotvec_continuity(r, reference=reference)
        return rot.quat_sign_continuity(r, reference=reference)

    def decode_arrays(self, current_position, current_quaternion, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised chunk decode: positions [T, 3], quaternions [T, 4], gripper [T] from actions [T, dim].

        Deltas chain (see the module docstring); this is the fast path the control loop uses.
        """
        a = self.check_actions(actions, "actions").reshape(-1, self.dim)
        p0 = np.asarray(current_position, dtype=np.float64).reshape(3)
        q0 = rot.quat_normalize(current_quaternion).reshape(4)
        n_rot = self.dim - 4
        if self.position == "delta":
            positions = p0 + np.cumsum(a[:, :3], axis=0)
        else:
            positions = a[:, :3].copy()
        rq = self._rot_to_quat(a[:, 3 : 3 + n_rot])
        if self.rotation == "delta":
            quats = np.empty_like(rq)
            prev = q0
            for k in range(rq.shape[0]):
                prev = rot.quat_multiply(rq[k], prev)
                quats[k] = prev
            quats = rot.quat_normalize(quats)
        else:
            quats = rq
        # one consistent sign along the chunk, starting next to the current orientation
        quats = rot.quat_sign_continuity(quats, reference=q0)
        return positions, quats, a[:, -1].copy()

    def decode(self, current: Pose, action) -> tuple[Pose, float]:
        """The target pose and the raw gripper value (not yet thresholded) of one action [dim] taken at `current`."""
        a = self.check_actions(action).reshape(-1)
        if a.shape[0] != self.dim:
            raise ValueError(f"decode takes one action of length {self.dim}, got shape {np.shape(action)}")
        p, q, g = self.decode_arrays(current.position, current.quaternion, a[None])
        return Pose(p[0], q[0]), float(g[0])

    def decode_chunk(self, start: Pose, actions) -> tuple[list[Pose], np.ndarray]:
        """Target poses (one per action) and raw gripper values [T] of a chunk [T, dim] predicted at `start`."""
        a = self.check_actions(actions, "action chunk")
        if a.ndim != 2:
            raise ValueError(f"decode_chunk takes actions [T, {self.dim}], got shape {a.shape}")
        p, q, g = self.decode_arrays(start.position, start.quaternion, a)
        return [Pose(p[k], q[k]) for k in range(p.shape[0])], g

    def encode_trajectory(self, poses: list[Pose], gripper_open) -> np.ndarray:
        """Training actions [T-1, dim] for a recorded pose sequence: action t moves poses[t] to poses[t+1].

        `gripper_open` holds T values; action t carries gripper_open[t+1] (the state the action leads to). Rotation
        values are made continuous along the sequence (rpy unwrapped, rotation vectors and quaternions without sign
        flips), so a learned regression never sees a +-2pi jump for a small motion. decode_chunk of the result
        reproduces poses[1:] exactly.
        """
        if len(poses) < 2:
            raise ValueError(f"encode_trajectory needs at least 2 poses, got {len(poses)}")
        g = np.asarray(gripper_open, dtype=np.float64).reshape(-1)
        if g.shape[0] != len(poses):
            raise ValueError(f"gripper_open must have one value per pose ({len(poses)}), got {g.shape[0]}")
        acts = np.stack([self.encode(poses[t], poses[t + 1], g[t + 1]) for t in range(len(poses) - 1)])
        acts[:, 3 : self.dim - 1] = self._continue_rotation(acts[:, 3 : self.dim - 1])
        return acts


ACTION_SPACES: dict[str, ActionSpace] = {
    s.name: s
    for s in (
        ActionSpace(
            "delta_xyz_abs_rpy",
            "delta",
            "absolute",
            "rpy",
            "paper/CogACT RLBench: delta xyz in the base frame + absolute roll/pitch/yaw + gripper_open",
        ),
        ActionSpace("abs_pose_rpy", "absolute", "absolute", "rpy", "absolute xyz + roll/pitch/yaw + gripper_open"),
        ActionSpace(
            "delta_pose_rpy", "delta", "delta", "rpy", "delta xyz + delta roll/pitch/yaw (base frame) + gripper_open"
        ),
        ActionSpace("abs_pose_rotvec", "absolute", "absolute", "rotvec", "absolute xyz + rotation vector + gripper"),
        ActionSpace(
            "delta_pose_rotvec", "delta", "delta", "rotvec", "delta xyz + rotation-vector delta (base frame) + gripper"
        ),
        ActionSpace("abs_pose_quat", "absolute", "absolute", "quat", "absolute xyz + quaternion (x,y,z,w) + gripper"),
    )
}


def get_action_space(name: str) -> ActionSpace:
    """The action space called `name`; raises listing the known names otherwise."""
    try:
        return ACTION_SPACES[name]
    except KeyError:
        raise ValueError(
            f"unknown action space {name!r}; expected one of {sorted(ACTION_SPACES)} "
            f"(set it in the checkpoint config or the runtime YAML)"
        ) from None
