"""Rotation helpers in plain numpy, quaternions in (x, y, z, w) order as geometry_msgs and `Pose` spell them.

Conventions (one place, imported everywhere):
- roll/pitch/yaw are the ROS / tf "sxyz" angles: R = Rz(yaw) @ Ry(pitch) @ Rx(roll), the same as
  scipy's `Rotation.from_euler("xyz", ...)` (lower case = extrinsic). RLBench/CogACT actions use this convention.
- a rotation vector is axis * angle (rad), angle in [0, pi] unless a continuity helper moved it.
- every function accepts a single value or a stack with leading batch dimensions (`[..., 4]`, `[..., 3]`).

Why not scipy: the runtime calls these in its control step; small numpy kernels avoid scipy's per-call overhead and
keep scipy a test-only dependency (the tests cross-check against it).
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-12
# Below this sin(angle/2) the rotation-vector maps switch to their Taylor expansion (no 0/0).
_SMALL_ANGLE = 1e-6


def _as_array(x, last: int, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != last:
        raise ValueError(f"{name} must have a last dimension of {last}, got shape {arr.shape}")
    return arr


def _single(x, n: int) -> bool:
    # fast path: one quaternion / vector as a flat float array. Plain-float arithmetic on 3-4 numbers is ~10x
    # cheaper than numpy's per-call overhead, and the control step does thousands of these per second.
    return type(x) is np.ndarray and x.shape == (n,) and x.dtype == np.float64


def wrap_to_pi(angle):
    """Angles wrapped into [-pi, pi)."""
    return (np.asarray(angle, dtype=np.float64) + np.pi) % (2.0 * np.pi) - np.pi


def quat_normalize(q) -> np.ndarray:
    """Unit quaternion(s); raises on a zero quaternion instead of returning NaN."""
    if _single(q, 4):
        return np.array(_unit_components(q))
    q = _as_array(q, 4, "quaternion")
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < _EPS):
        raise ValueError(f"cannot normalize a zero quaternion: {q.tolist()}")
    return q / n


def _unit_components(q: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of one quaternion [4] scaled to unit length, as floats (the single-quaternion fast paths)."""
    x, y, z, w = q.tolist()
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if n < _EPS:
        raise ValueError(f"cannot normalize a zero quaternion: {q.tolist()}")
    return x / n, y / n, z / n, w / n


def quat_conjugate(q) -> np.ndarray:
    """Inverse of a unit quaternion."""
    if _single(q, 4):
        x, y, z, w = q.tolist()
        return np.array((-x, -y, -z, w))
    q = _as_array(q, 4, "quaternion")
    return np.concatenate([-q[..., :3], q[..., 3:]], axis=-1)


def quat_multiply(a, b) -> np.ndarray:
    """Hamilton product a * b: the rotation b applied first, then a (same as R_a @ R_b)."""
    if _single(a, 4) and _single(b, 4):
        return np.array(_hamilton(*a.tolist(), *b.tolist()))
    a = _as_array(a, 4, "quaternion a")
    b = _as_array(b, 4, "quaternion b")
    return np.stack(_hamilton(*np.moveaxis(a, -1, 0), *np.moveaxis(b, -1, 0)), axis=-1)


def _hamilton(ax, ay, az, aw, bx, by, bz, bw):
    """The product's (x, y, z, w) from the components: floats (one pair, fast path) or arrays (batches)."""
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def quat_rotate(q, v) -> np.ndarray:
    """Vector(s) v rotated by unit quaternion(s) q."""
    q = quat_normalize(q)
    v = _as_array(v, 3, "vector")
    u, w = q[..., :3], q[..., 3:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def quat_to_matrix(q) -> np.ndarray:
    """Rotation matrices [..., 3, 3] of unit quaternions [..., 4]."""
    if _single(q, 4):
        x, y, z, w = _unit_components(q)
        return np.array(
            (
                (1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)),
                (2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)),
                (2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)),
            )
        )
    x, y, z, w = np.moveaxis(quat_normalize(q), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=-2,
    )


def matrix_to_quat(m) -> np.ndarray:
    """Unit quaternions [..., 4] (w >= 0) of rotation matrices [..., 3, 3] (Shepperd's method, stable everywhere)."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape == (3, 3):
        return _matrix_to_quat1(m.tolist())
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrix must be [..., 3, 3], got shape {m.shape}")
    batch = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=1, axis2=2)
    diag = np.stack([m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=-1)
    # choose the largest of (w, x, y, z) to divide by, so no branch divides by a small number
    choice = np.argmax(np.concatenate([diag, tr[:, None]], axis=-1), axis=-1)
    q = np.empty((m.shape[0], 4))
    for i in range(m.shape[0]):
        r = m[i]
        c = choice[i]
        if c == 3:
            s = 2.0 * np.sqrt(max(1.0 + tr[i], _EPS))
            q[i] = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
        elif c == 0:
            s = 2.0 * np.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], _EPS))
            q[i] = [0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
        elif c == 1:
            s = 2.0 * np.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], _EPS))
            q[i] = [(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
        else:
            s = 2.0 * np.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], _EPS))
            q[i] = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s]
    q = quat_normalize(q)
    q = np.where(q[:, 3:] < 0, -q, q)
    return q.reshape(*batch, 4)


def _matrix_to_quat1(r) -> np.ndarray:
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = r
    tr = r00 + r11 + r22
    if tr >= max(r00, r11, r22):
        s = 2.0 * math.sqrt(max(1.0 + tr, _EPS))
        q = ((r21 - r12) / s, (r02 - r20) / s, (r10 - r01) / s, 0.25 * s)
    elif r00 >= r11 and r00 >= r22:
        s = 2.0 * math.sqrt(max(1.0 + r00 - r11 - r22, _EPS))
        q = (0.25 * s, (r01 + r10) / s, (r02 + r20) / s, (r21 - r12) / s)
    elif r11 >= r22:
        s = 2.0 * math.sqrt(max(1.0 + r11 - r00 - r22, _EPS))
        q = ((r01 + r10) / s, 0.25 * s, (r12 + r21) / s, (r02 - r20) / s)
    else:
        s = 2.0 * math.sqrt(max(1.0 + r22 - r00 - r11, _EPS))
        q = ((r02 + r20) / s, (r12 + r21) / s, 0.25 * s, (r10 - r01) / s)
    q = quat_normalize(np.array(q))
    return -q if q[3] < 0 else q


def rpy_to_quat(rpy) -> np.ndarray:
    """Quaternions [..., 4] of roll/pitch/yaw [..., 3] (R = Rz(yaw) Ry(pitch) Rx(roll))."""
    rpy = _as_array(rpy, 3, "rpy")
    half = 0.5 * rpy
    cr, cp, cy = np.moveaxis(np.cos(half), -1, 0)
    sr, sp, sy = np.moveaxis(np.sin(half), -1, 0)
    return np.stack(
        [
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy,
        ],
        axis=-1,
    )


def quat_to_rpy(q) -> np.ndarray:
    """Roll/pitch/yaw [..., 3] of quaternions [..., 4]: roll, yaw in [-pi, pi], pitch in [-pi/2, pi/2].

    At gimbal lock (|pitch| = pi/2) only roll - yaw (or roll + yaw) is defined; roll is then set to 0 and yaw
    carries the whole rotation about z, so rpy_to_quat(quat_to_rpy(q)) is still the same rotation.
    """
    x, y, z, w = np.moveaxis(quat_normalize(q), -1, 0)
    r00 = 1 - 2 * (y * y + z * z)
    r10 = 2 * (x * y + z * w)
    r20 = 2 * (x * z - y * w)
    r21 = 2 * (y * z + x * w)
    r22 = 1 - 2 * (x * x + y * y)
    r01 = 2 * (x * y - z * w)
    r11 = 1 - 2 * (x * x + z * z)
    cos_p = np.hypot(r00, r10)
    pitch = np.arctan2(-r20, cos_p)
    locked = cos_p < 1e-9
    roll = np.where(locked, 0.0, np.arctan2(r21, r22))
    yaw = np.where(locked, np.arctan2(-r01, r11), np.arctan2(r10, r00))
    return np.stack([roll, pitch, yaw], axis=-1)


def rotvec_to_quat(rotvec) -> np.ndarray:
    """Quaternions [..., 4] of rotation vectors [..., 3] (axis * angle)."""
    if _single(rotvec, 3):
        x, y, z = rotvec.tolist()
        angle = math.sqrt(x * x + y * y + z * z)
        scale = 0.5 - angle * angle / 48.0 if angle < _SMALL_ANGLE else math.sin(0.5 * angle) / angle
        return np.array((x * scale, y * scale, z * scale, math.cos(0.5 * angle)))
    rv = _as_array(rotvec, 3, "rotation vector")
    angle = np.linalg.norm(rv, axis=-1, keepdims=True)
    small = angle < _SMALL_ANGLE
    safe = np.where(small, 1.0, angle)
    scale = np.where(small, 0.5 - angle**2 / 48.0, np.sin(0.5 * safe) / safe)
    return np.concatenate([rv * scale, np.cos(0.5 * angle)], axis=-1)


def quat_to_rotvec(q) -> np.ndarray:
    """Rotation vectors [..., 3] with angle in [0, pi] of quaternions [..., 4]."""
    if _single(q, 4):
        x, y, z, w = _unit_components(q)
        if w < 0:  # w >= 0 picks the angle in [0, pi]
            x, y, z, w = -x, -y, -z, -w
        sn = math.sqrt(x * x + y * y + z * z)
        if sn < _SMALL_ANGLE:
            scale = 2.0 / max(w, _EPS) * (1.0 + sn * sn / 6.0)
        else:
            scale = 2.0 * math.atan2(sn, w) / sn
        return np.array((x * scale, y * scale, z * scale))
    q = quat_normalize(q)
    q = np.where(q[..., 3:] < 0, -q, q)  # w >= 0 picks the angle in [0, pi]
    v, w = q[..., :3], q[..., 3:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, w)
    small = s < _SMALL_ANGLE
    scale = np.where(small, 2.0 / np.maximum(w, _EPS) * (1.0 + s**2 / 6.0), angle / np.where(small, 1.0, s))
    return v * scale


def quat_angle(a, b) -> np.ndarray:
    """Geodesic angle (rad, in [0, pi]) between unit quaternions a and b."""
    # atan2 of the relative rotation keeps precision near 0, where arccos(dot) loses half the digits
    rel = quat_multiply(quat_conjugate(quat_normalize(a)), quat_normalize(b))
    return 2.0 * np.arctan2(np.linalg.norm(rel[..., :3], axis=-1), np.abs(rel[..., 3]))


def quat_slerp(a, b, t) -> np.ndarray:
    """Spherical interpolation from a (t=0) to b (t=1) along the shorter arc; t may be an array broadcast over [...]."""
    if _single(a, 4) and _single(b, 4) and isinstance(t, float):
        a, b = quat_normalize(a), quat_normalize(b)
        d = float(a @ b)
        if d < 0:
            b, d = -b, -d
        theta = math.acos(min(d, 1.0))
        sin_t = math.sin(theta)
        if sin_t < 1e-6:
            wa, wb = 1.0 - t, t
        else:
            wa, wb = math.sin((1.0 - t) * theta) / sin_t, math.sin(t * theta) / sin_t
        return quat_normalize(wa * a + wb * b)
    a = quat_normalize(a)
    b = quat_normalize(b)
    t = np.asarray(t, dtype=np.float64)[..., None]
    d = np.sum(a * b, axis=-1, keepdims=True)
    b = np.where(d < 0, -b, b)
    d = np.abs(d)
    theta = np.arccos(np.clip(d, -1.0, 1.0))
    sin_t = np.sin(theta)
    near = sin_t < 1e-6
    safe = np.where(near, 1.0, sin_t)
    wa = np.where(near, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    wb = np.where(near, t, np.sin(t * theta) / safe)
    return quat_normalize(wa * a + wb * b)


def quat_sign_continuity(quats, reference=None) -> np.ndarray:
    """A sequence [T, 4] with signs flipped so consecutive quaternions have a non-negative dot product.

    q and -q are the same rotation; learning or averaging on raw quaternions needs one consistent sign. The first
    element is aligned to `reference` when given (e.g. the current EE orientation).
    """
    q = quat_normalize(quats).reshape(-1, 4).copy()
    prev = None if reference is None else quat_normalize(reference)
    for i in range(q.shape[0]):
        if prev is not None and float(np.dot(q[i], prev)) < 0.0:
            q[i] = -q[i]
        prev = q[i]
    return q.reshape(np.shape(quats))


def unwrap_rpy(rpy, reference=None) -> np.ndarray:
    """A sequence [T, 3] of roll/pitch/yaw without +-2pi jumps (each angle moved by multiples of 2pi).

    RLBench rolls sit near +-pi, so raw angles jump between +3.14 and -3.14 for a tiny rotation; averaging,
    normalizing or interpolating such values is wrong. `reference` ([3]) anchors the first element (e.g. the rpy of
    the current pose) so the result is continuous with it too.
    """
    arr = _as_array(rpy, 3, "rpy").reshape(-1, 3)
    if reference is not None:
        ref = _as_array(reference, 3, "reference rpy").reshape(3)
        arr = np.concatenate([ref[None], arr], axis=0)
        return np.unwrap(arr, axis=0)[1:].reshape(np.shape(rpy))
    return np.unwrap(arr, axis=0).reshape(np.shape(rpy))


def rotvec_continuity(rotvecs, reference=None) -> np.ndarray:
    """A sequence [T, 3] of rotation vectors made continuous (crisp_gym's sign-flip repair, generalised).

    axis*angle and axis*(angle - 2pi) are the same rotation; near angle = pi the canonical vector flips to the
    opposite side. Each element is replaced by the equivalent vector closest to its predecessor (or `reference`).
    """
    rv = _as_array(rotvecs, 3, "rotation vectors").reshape(-1, 3).copy()
    prev = None if reference is None else _as_array(reference, 3, "reference rotation vector").reshape(3)
    for i in range(rv.shape[0]):
        if prev is not None:
            angle = float(np.linalg.norm(rv[i]))
            if angle > _SMALL_ANGLE:
                axis = rv[i] / angle
                candidates = [axis * (angle + 2.0 * np.pi * k) for k in (-2, -1, 0, 1, 2)]
                rv[i] = min(candidates, key=lambda c: float(np.linalg.norm(c - prev)))
        prev = rv[i]
    return rv.reshape(np.shape(rotvecs))


def quat_weighted_mean(quats, weights=None) -> np.ndarray:
    """Weighted average rotation of quaternions [N, 4] (Markley et al.: top eigenvector of sum w q q^T).

    Sign-invariant, so q and -q count as the same rotation; the result has the sign of the heaviest input.
    """
    q = quat_normalize(quats).reshape(-1, 4)
    w = np.ones(q.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != q.shape[0] or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"weights must be {q.shape[0]} non-negative values, not all zero; got {w.tolist()}")
    m = (q * w[:, None]).T @ q
    _, vecs = np.linalg.eigh(m)
    mean = vecs[:, -1]
    if float(np.dot(mean, q[int(np.argmax(w))])) < 0:
        mean = -mean
    return mean / np.linalg.norm(mean)
