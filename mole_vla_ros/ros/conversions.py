"""ROS 2 messages <-> the core's plain types (mole_vla_ros.interfaces, runtime commands).

Inbound functions read messages of either backend (rclpy objects or rosbags dataclasses: same field names; numeric
sequences are numpy arrays in rosbags and array.array in rclpy, both read through numpy). Outbound functions build
messages through a `MessageFactory` (ros/messages.py), so the live node and offline replay emit identical messages.
No rclpy import happens here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from mole_vla_ros.config_dicts import flatten
from mole_vla_ros.interfaces import CameraFrame, GripperSample, JointStateSample, Pose, PoseSample
from mole_vla_ros.ros.messages import MessageFactory, as_float_array, stamp_to_seconds

# ----------------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------------

# encoding -> (channels, OpenCV conversion to RGB or None when the pixels already are RGB). Decoding is one view of
# the buffer plus one OpenCV pass (or copy): ~as cheap as copying the pixels, far below cv_bridge's Python overhead.
_NUMPY_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, cv2.COLOR_GRAY2RGB),
    "8UC3": (3, cv2.COLOR_BGR2RGB),  # OpenCV's default channel order is BGR
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_NUMPY_ENCODINGS)


def _buffer_u8(data: Any) -> np.ndarray:
    """Message `data` (numpy array, array.array, bytes, list) as a flat uint8 numpy view where possible."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.astype(np.uint8).reshape(-1)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except TypeError:
        return np.asarray(list(data), dtype=np.uint8)


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 RGB (a new array, safe to keep).

    Handles rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8 (replicated to 3 channels) and 8UC1/8UC3, with row
    padding (`step` > width * channels). Other encodings go through cv_bridge when it is installed. Raises ValueError
    for unknown encodings, a `step` too small for the width, or a data buffer shorter than height * step.
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    encoding = str(msg.encoding)
    if height <= 0 or width <= 0:
        raise ValueError(f"image is {width}x{height} pixels; a camera frame needs width > 0 and height > 0")
    spec = _NUMPY_ENCODINGS.get(encoding)
    if spec is None:
        return _image_via_cv_bridge(msg, encoding)
    channels, code = spec
    row_bytes = width * channels
    if step < row_bytes:
        raise ValueError(
            f"image step {step} is smaller than width * channels = {width} * {channels} = {row_bytes} bytes for "
            f"encoding {encoding!r}; the publisher's step, width or encoding is wrong"
        )
    buf = _buffer_u8(msg.data)
    if buf.size < height * step:
        raise ValueError(
            f"image data has {buf.size} bytes but height * step = {height} * {step} = {height * step} are needed "
            f"({width}x{height} {encoding}); the message is truncated or its size fields are wrong"
        )
    rows = buf[: height * step].reshape(height, step)[:, :row_bytes]
    if step != row_bytes:
        rows = np.ascontiguousarray(rows)  # drop the row padding once; OpenCV wants dense rows here
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    if code is None:
        return pixels.copy()  # never alias the message buffer: the caller keeps the frame
    return cv2.cvtColor(pixels, code)


def _image_via_cv_bridge(msg: Any, encoding: str) -> np.ndarray:
    try:
        from cv_bridge import CvBridge
    except ImportError:
        CvBridge = None
    if CvBridge is not None and hasattr(msg, "get_fields_and_field_types"):
        try:
            return np.ascontiguousarray(CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception as exc:  # cv_bridge raises its own CvBridgeError for unsupported conversions
            raise ValueError(f"cv_bridge cannot convert image encoding {encoding!r} to rgb8: {exc}") from exc
    raise ValueError(
        f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)} "
        "(other encodings need cv_bridge on a ROS 2 machine). Configure the camera driver to publish rgb8 or bgr8, "
        "or subscribe to its compressed topic with camera_transport:=compressed"
    )


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> HxWx3 uint8 RGB. Raises ValueError when the bytes do not decode."""
    buf = _buffer_u8(msg.data)
    if buf.size == 0:
        raise ValueError(f"compressed image (format {msg.format!r}) has no data")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(
            f"could not decode compressed image (format {msg.format!r}, {buf.size} bytes); expected jpeg or png "
            "(a compressedDepth or theora stream cannot be used as a camera image)"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def header_seconds(msg: Any) -> float:
    return stamp_to_seconds(msg.header.stamp)


def image_to_frame(msg: Any, camera: str) -> CameraFrame:
    """sensor_msgs/Image -> CameraFrame stamped with the header stamp (never arrival time)."""
    return CameraFrame(camera=camera, stamp=header_seconds(msg), image=image_to_rgb(msg), frame_id=msg.header.frame_id)


def compressed_to_frame(msg: Any, camera: str) -> CameraFrame:
    """sensor_msgs/CompressedImage -> CameraFrame stamped with the header stamp."""
    return CameraFrame(
        camera=camera, stamp=header_seconds(msg), image=compressed_to_rgb(msg), frame_id=msg.header.frame_id
    )


# ----------------------------------------------------------------------------------------------------------------------
# Joint states, poses, robot state, instruction
# ----------------------------------------------------------------------------------------------------------------------


def _index_by_name(names: Sequence[str], wanted: Sequence[str], what: str) -> list[int]:
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise ValueError(
            f"{what} is missing joint(s) {missing}; it has {list(names)}. Check robot_type (fr3 vs panda), the "
            "joint state topic, or a namespace/prefix on the joint names"
        )
    return [index[n] for n in wanted]


def joint_state_to_sample(msg: Any, arm_joint_names: Sequence[str]) -> JointStateSample:
    """sensor_msgs/JointState -> JointStateSample with the arm joints in `arm_joint_names` order (matched by name).

    Extra joints (fingers, other arms) are ignored. Velocity/effort are kept when the message carries one per joint
    and they are finite, else None (franka's merged /joint_states may leave them empty). Raises ValueError for
    missing joints, a position array shorter than the name array, or non-finite positions.
    """
    names = [str(n) for n in msg.name]
    position = as_float_array(msg.position)
    if position.shape[0] != len(names):
        raise ValueError(
            f"JointState has {len(names)} names but {position.shape[0]} positions; every named joint needs a position"
        )
    idx = _index_by_name(names, arm_joint_names, "JointState")
    q = position[idx]
    if not np.all(np.isfinite(q)):
        bad = [arm_joint_names[i] for i in np.flatnonzero(~np.isfinite(q))]
        raise ValueError(f"JointState has non-finite positions for {bad}: {q.tolist()}; the sample is rejected")
    return JointStateSample(
        stamp=header_seconds(msg),
        names=tuple(arm_joint_names),
        position=q,
        velocity=_optional_field(msg.velocity, len(names), idx),
        effort=_optional_field(msg.effort, len(names), idx),
    )


def _optional_field(values: Any, n: int, idx: list[int]) -> np.ndarray | None:
    arr = as_float_array(values)
    if arr.shape[0] != n:
        return None
    out = arr[idx]
    return out if np.all(np.isfinite(out)) else None


def joint_state_to_gripper(msg: Any, finger_joint_names: Sequence[str]) -> GripperSample | None:
    """Gripper width (sum of the finger joints, each = width / 2 in franka_description) or None when absent."""
    names = [str(n) for n in msg.name]
    if not all(n in names for n in finger_joint_names):
        return None
    position = as_float_array(msg.position)
    idx = _index_by_name(names, finger_joint_names, "JointState")
    width = float(np.sum(position[idx]))
    if not math.isfinite(width):
        raise ValueError(f"JointState has non-finite finger positions {position[idx].tolist()}")
    return GripperSample(stamp=header_seconds(msg), width=width)


def pose_msg_to_pose(pose: Any) -> Pose:
    """geometry_msgs/Pose -> Pose (validated: finite, unit quaternion)."""
    p, o = pose.position, pose.orientation
    return Pose(position=np.array([p.x, p.y, p.z]), quaternion=np.array([o.x, o.y, o.z, o.w]))


def pose_difference(a: Pose, b: Pose) -> tuple[float, float]:
    """(distance in m, rotation angle in rad) between two poses in the same frame."""
    dist = float(np.linalg.norm(a.position - b.position))
    dot = abs(float(np.dot(a.quaternion, b.quaternion)))  # q and -q are the same rotation
    return dist, 2.0 * math.acos(min(1.0, dot))


def pose_stamped_to_sample(msg: Any, child_frame_id: str = "") -> PoseSample:
    """geometry_msgs/PoseStamped (e.g. franka current_pose, frame fr3_link0) -> PoseSample."""
    return PoseSample(
        stamp=header_seconds(msg),
        pose=pose_msg_to_pose(msg.pose),
        frame_id=msg.header.frame_id,
        child_frame_id=child_frame_id,
    )


def transform_to_sample(msg: Any) -> PoseSample:
    """geometry_msgs/TransformStamped (a TF lookup base -> ee) -> PoseSample of the child frame in the parent frame."""
    t, r = msg.transform.translation, msg.transform.rotation
    pose = Pose(position=np.array([t.x, t.y, t.z]), quaternion=np.array([r.x, r.y, r.z, r.w]))
    return PoseSample(
        stamp=header_seconds(msg), pose=pose, frame_id=msg.header.frame_id, child_frame_id=msg.child_frame_id
    )


# franka_msgs/FrankaRobotState.robot_mode values (libfranka RobotMode order).
ROBOT_MODES: tuple[str, ...] = (
    "OTHER",
    "IDLE",
    "MOVE",
    "GUIDING",
    "REFLEX",
    "USER_STOPPED",
    "AUTOMATIC_ERROR_RECOVERY",
)


def robot_mode_name(msg_or_value: Any) -> str:
    """FrankaRobotState (or its robot_mode value) -> 'IDLE', 'MOVE', 'REFLEX', ...; unknown values -> 'UNKNOWN_<n>'."""
    value = int(getattr(msg_or_value, "robot_mode", msg_or_value))
    return ROBOT_MODES[value] if 0 <= value < len(ROBOT_MODES) else f"UNKNOWN_{value}"


def instruction_from_msg(msg: Any) -> str:
    """std_msgs/String -> the instruction text, whitespace-trimmed. Raises ValueError on an empty instruction."""
    text = str(msg.data).strip()
    if not text:
        raise ValueError(
            "received an empty instruction; publish a non-empty std_msgs/String such as 'pick up the cube'"
        )
    return text


# ----------------------------------------------------------------------------------------------------------------------
# Outbound: core types -> messages (built through a MessageFactory)
# ----------------------------------------------------------------------------------------------------------------------


def rgb_to_image_msg(factory: MessageFactory, rgb: np.ndarray, t: float, frame_id: str, encoding: str = "rgb8") -> Any:
    """HxWx3 uint8 RGB -> sensor_msgs/Image in `encoding` (rgb8, bgr8 or mono8). Used by the simulator and tests."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got dtype {rgb.dtype} shape {rgb.shape}")
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[:, :, ::-1]
    elif encoding == "mono8":
        # ITU-R 601 luma, what OpenCV's RGB2GRAY computes
        pixels = np.round(rgb @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)[:, :, None]
    else:
        raise ValueError(f"rgb_to_image_msg writes rgb8, bgr8 or mono8, not {encoding!r}")
    pixels = np.ascontiguousarray(pixels)
    h, w, c = pixels.shape
    return factory.make(
        "sensor_msgs/msg/Image",
        header=factory.header(t, frame_id),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * c,
        data=pixels.reshape(-1),
    )


def point_msg(factory: MessageFactory, xyz: Sequence[float]) -> Any:
    return factory.make("geometry_msgs/msg/Point", x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def pose_msg(factory: MessageFactory, pose: Pose) -> Any:
    """Pose -> geometry_msgs/Pose."""
    q = pose.quaternion
    return factory.make(
        "geometry_msgs/msg/Pose",
        position=point_msg(factory, pose.position),
        orientation=factory.make("geometry_msgs/msg/Quaternion", x=q[0], y=q[1], z=q[2], w=q[3]),
    )


def pose_stamped_msg(factory: MessageFactory, pose: Pose, t: float, frame_id: str) -> Any:
    """Pose -> geometry_msgs/PoseStamped: the target-pose command (crisp-style Cartesian impedance `target_pose`)."""
    return factory.make(
        "geometry_msgs/msg/PoseStamped", header=factory.header(t, frame_id), pose=pose_msg(factory, pose)
    )


def transform_msg(factory: MessageFactory, pose: Pose) -> Any:
    q, p = pose.quaternion, pose.position
    return factory.make(
        "geometry_msgs/msg/Transform",
        translation=factory.make("geometry_msgs/msg/Vector3", x=p[0], y=p[1], z=p[2]),
        rotation=factory.make("geometry_msgs/msg/Quaternion", x=q[0], y=q[1], z=q[2], w=q[3]),
    )


def joint_trajectory_msg(
    factory: MessageFactory,
    joint_names: Sequence[str],
    times_from_start: Sequence[float],
    positions: np.ndarray,
    velocities: np.ndarray,
    t: float = 0.0,
    frame_id: str = "",
) -> Any:
    """trajectory_msgs/JointTrajectory with positions AND velocities per point (JTC then interpolates cubically;
    positions alone would give linear, velocity-discontinuous segments).

    t = 0 leaves header.stamp zero, which joint_trajectory_controller reads as "start on receipt": robust when the
    robot PC's clock and ours differ. Raises ValueError on shape mismatches, non-finite values or times that do not
    strictly increase.
    """
    positions = np.asarray(positions, dtype=np.float64)
    velocities = np.asarray(velocities, dtype=np.float64)
    times = np.asarray(times_from_start, dtype=np.float64).reshape(-1)
    n, j = len(times), len(joint_names)
    if positions.shape != (n, j) or velocities.shape != (n, j):
        raise ValueError(
            f"joint trajectory needs positions and velocities of shape ({n} points, {j} joints), got "
            f"{positions.shape} and {velocities.shape}"
        )
    if n == 0:
        raise ValueError("joint trajectory has no points")
    if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(velocities)) and np.all(np.isfinite(times))):
        raise ValueError("joint trajectory has non-finite positions, velocities or times; refusing to publish it")
    if times[0] < 0 or np.any(np.diff(times) <= 0):
        raise ValueError(
            f"joint trajectory times_from_start must be >= 0 and strictly increasing, got {times.tolist()}"
        )
    points = [
        factory.make(
            "trajectory_msgs/msg/JointTrajectoryPoint",
            positions=positions[i],
            velocities=velocities[i],
            time_from_start=factory.duration(float(times[i])),
        )
        for i in range(n)
    ]
    header = factory.header(t, frame_id) if t else factory.make("std_msgs/msg/Header", frame_id=frame_id)
    return factory.make(
        "trajectory_msgs/msg/JointTrajectory", header=header, joint_names=list(joint_names), points=points
    )


def move_goal_msg(factory: MessageFactory, width: float, speed: float) -> Any:
    """franka_msgs/action/Move goal: open (or close without force) to `width` m at `speed` m/s."""
    _check_gripper(width, speed)
    return factory.make("franka_msgs/action/Move_Goal", width=width, speed=speed)


def grasp_goal_msg(
    factory: MessageFactory, width: float, speed: float, force: float, epsilon_inner: float, epsilon_outer: float
) -> Any:
    """franka_msgs/action/Grasp goal: close to `width` and hold with `force` N; succeeds when the final width d
    satisfies width - epsilon_inner < d < width + epsilon_outer."""
    _check_gripper(width, speed)
    if not (force > 0 and epsilon_inner >= 0 and epsilon_outer >= 0):
        raise ValueError(
            f"grasp needs force > 0 N and epsilons >= 0 m, got force={force}, inner={epsilon_inner}, outer={epsilon_outer}"
        )
    epsilon = factory.make("franka_msgs/msg/GraspEpsilon", inner=epsilon_inner, outer=epsilon_outer)
    return factory.make("franka_msgs/action/Grasp_Goal", width=width, epsilon=epsilon, speed=speed, force=force)


def _check_gripper(width: float, speed: float) -> None:
    if not (0.0 <= width <= 0.08 and speed > 0):
        raise ValueError(f"gripper goal needs 0 <= width <= 0.08 m and speed > 0 m/s, got width={width}, speed={speed}")


def chunk_multidof_msg(
    factory: MessageFactory, poses: Sequence[Pose], stamps: Sequence[float], t0: float, frame_id: str, ee_frame: str
) -> Any:
    """Predicted EE poses -> trajectory_msgs/MultiDOFJointTrajectory (one 'joint' = the EE frame). The header stamp
    is `t0` (the observation the chunk was predicted from); point k is due at stamps[k] = t0 + time_from_start."""
    _check_chunk(poses, stamps)
    points = [
        factory.make(
            "trajectory_msgs/msg/MultiDOFJointTrajectoryPoint",
            transforms=[transform_msg(factory, p)],
            time_from_start=factory.duration(max(float(s) - t0, 0.0)),
        )
        for p, s in zip(poses, stamps)
    ]
    return factory.make(
        "trajectory_msgs/msg/MultiDOFJointTrajectory",
        header=factory.header(t0, frame_id),
        joint_names=[ee_frame],
        points=points,
    )


def chunk_path_msg(factory: MessageFactory, poses: Sequence[Pose], stamps: Sequence[float], t0: float, frame_id: str):
    """Predicted EE poses -> nav_msgs/Path; pose k stamped when it is due (stamps[k])."""
    _check_chunk(poses, stamps)
    return factory.make(
        "nav_msgs/msg/Path",
        header=factory.header(t0, frame_id),
        poses=[pose_stamped_msg(factory, p, float(s), frame_id) for p, s in zip(poses, stamps)],
    )


def _check_chunk(poses: Sequence[Pose], stamps: Sequence[float]) -> None:
    if len(poses) != len(stamps):
        raise ValueError(f"a chunk needs one stamp per pose, got {len(poses)} poses and {len(stamps)} stamps")


def _color(factory: MessageFactory, rgba) -> Any:
    return factory.make("std_msgs/msg/ColorRGBA", r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3])


def chunk_markers_msg(
    factory: MessageFactory,
    chunks: Sequence[tuple],
    now: float,
    frame_id: str,
    style: Any,
) -> Any:
    """visualization_msgs/MarkerArray for recent chunks, each (chunk_index, predicted_at, poses, gripper values[,
    executed flags]).

    Per chunk: a LINE_STRIP through the positions and the per-step spheres as SPHERE_LISTs with one colour per step
    (green open / red closed, markers.py): one list for the steps that will run and a smaller, fainter one for steps
    the scheduler skips. Alpha fades with the chunk's age. SPHERE_LIST instead of one SPHERE marker per step keeps a
    5-chunk array at 15 markers instead of 85 (message building in rclpy costs per Marker). All markers are in
    `frame_id` with frame_locked so they stay put in the base frame; ids cycle over `style.history` slots so old
    chunks are overwritten, and a lifetime makes a stopped node's markers vanish.
    """
    from mole_vla_ros.ros import markers

    Marker = "visualization_msgs/msg/Marker"
    line_strip = factory.constant(Marker, "LINE_STRIP")
    sphere_list = factory.constant(Marker, "SPHERE_LIST")
    add = factory.constant(Marker, "ADD")
    delete = factory.constant(Marker, "DELETE")
    lifetime = factory.duration(markers.marker_lifetime(style))
    origin = factory.make("geometry_msgs/msg/Pose", orientation=factory.make("geometry_msgs/msg/Quaternion", w=1.0))
    header = factory.header(now, frame_id)
    out = []

    def marker(ns: str, slot: int, kind: int, scale: float, points: list, color, colors: list | None = None):
        fields = dict(
            header=header,
            ns=ns,
            id=slot,
            type=kind,
            action=add,
            pose=origin,
            scale=factory.make("geometry_msgs/msg/Vector3", x=scale, y=scale, z=scale),
            color=_color(factory, color),
            lifetime=lifetime,
            frame_locked=True,
            points=points,
        )
        if colors is not None:
            fields["colors"] = colors
        return factory.make(Marker, **fields)

    for chunk_index, predicted_at, poses, gripper, *rest in chunks:
        executed = rest[0] if rest else [True] * len(poses)
        if not len(poses) == len(gripper) == len(executed):
            raise ValueError(
                f"chunk {chunk_index} has {len(poses)} poses, {len(gripper)} gripper values and {len(executed)} "
                "executed flags; they must match"
            )
        alpha = markers.age_alpha(now - predicted_at, style)
        slot = markers.chunk_slot(chunk_index, style)
        points = [point_msg(factory, p.position) for p in poses]
        out.append(marker("mole_vla/chunk_line", slot, line_strip, style.line_width, points, markers.line_color(alpha)))
        for run, ns in ((True, "mole_vla/chunk_steps"), (False, "mole_vla/chunk_steps_skipped")):
            scale = markers.step_scale(run, style)
            idx = [k for k, e in enumerate(executed) if bool(e) == run]
            colors = [_color(factory, markers.gripper_color(float(gripper[k]), alpha * scale, style)) for k in idx]
            if not idx:  # RViz flags an empty SPHERE_LIST; DELETE clears what this slot showed for an older chunk
                out.append(factory.make(Marker, header=header, ns=ns, id=slot, action=delete))
                continue
            size = style.sphere_diameter * scale
            out.append(marker(ns, slot, sphere_list, size, [points[k] for k in idx], (1, 1, 1, 1), colors))
    return factory.make("visualization_msgs/msg/MarkerArray", markers=out)


def layer_choice_msgs(factory: MessageFactory, layer_indices: Sequence[int], layer_probs: Sequence[float]) -> tuple:
    """STAR's choice for one prediction as (std_msgs/Int32MultiArray of the layers that ran, ascending;
    std_msgs/Float32MultiArray of the router probability of every layer). The dimension label carries the total
    layer count so a subscriber can tell k out of N."""
    probs = np.asarray(layer_probs, dtype=np.float32).reshape(-1)
    indices = np.asarray(layer_indices, dtype=np.int32).reshape(-1)
    n = int(probs.shape[0])
    if indices.size and (indices.min() < 0 or (n and indices.max() >= n)):
        raise ValueError(f"layer indices {indices.tolist()} fall outside the router's {n} layers")

    def layout(label: str, size: int):
        dim = factory.make("std_msgs/msg/MultiArrayDimension", label=label, size=size, stride=size)
        return factory.make("std_msgs/msg/MultiArrayLayout", dim=[dim], data_offset=0)

    idx_msg = factory.make(
        "std_msgs/msg/Int32MultiArray", layout=layout(f"active_layers_of_{n}", int(indices.size)), data=indices
    )
    prob_msg = factory.make("std_msgs/msg/Float32MultiArray", layout=layout("router_prob_per_layer", n), data=probs)
    return idx_msg, prob_msg


# DiagnosticStatus levels (bytes in ROS 2 Humble: OK=0, WARN=1, ERROR=2, STALE=3)
DIAG_OK, DIAG_WARN, DIAG_ERROR, DIAG_STALE = 0, 1, 2, 3


def diagnostics_msg(
    factory: MessageFactory, t: float, name: str, hardware_id: str, level: int, message: str, values: dict[str, Any]
) -> Any:
    """diagnostic_msgs/DiagnosticArray with one status; `values` become KeyValue pairs (floats with 4 significant
    digits, nested dicts flattened with '.')."""
    if level not in (DIAG_OK, DIAG_WARN, DIAG_ERROR, DIAG_STALE):
        raise ValueError(f"diagnostic level must be 0 (OK), 1 (WARN), 2 (ERROR) or 3 (STALE), got {level}")
    pairs = []
    for key, value in flatten(values).items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        pairs.append(factory.make("diagnostic_msgs/msg/KeyValue", key=key, value=text))
    status = factory.make(
        "diagnostic_msgs/msg/DiagnosticStatus",
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=pairs,
    )
    return factory.make("diagnostic_msgs/msg/DiagnosticArray", header=factory.header(t, ""), status=[status])
