"""Every QoS profile the policy node uses, in one place (rclpy imported lazily).

Why each:
- cameras: sensor-data (best effort, keep last 5, volatile) like camera drivers publish; a reliable subscriber to a
  best-effort camera receives nothing, and we want the newest frame, not a queue of old ones.
- franka convenience topics (current_pose, measured_joint_states): franka_ros2 >= 2.4 publishes them best effort,
  depth 1 (a breaking change in its CHANGELOG); a reliable subscriber silently gets no messages.
- joint states, gripper state, robot state: best effort, depth 1. A best-effort subscriber matches both reliable
  publishers (franka's joint_states, robot_state) and best-effort ones (measured_joint_states, the faster source
  the spec recommends), while a reliable subscriber would silently get nothing from the latter. Only the newest
  sample matters.
- instruction: transient local (latched), so a node that starts after the instruction was published still gets it.
- commands: reliable, depth 1 (a late command is worse than none; crisp's controller subscribes with depth 1).
- visualization/diagnostics: reliable, small depth.
"""

from __future__ import annotations

from typing import Any

# name -> (reliability, durability, depth); a ROS-free table so tests and docs can read it.
PROFILES: dict[str, tuple[str, str, int]] = {
    "camera": ("best_effort", "volatile", 5),
    "franka_best_effort": ("best_effort", "volatile", 1),
    "state": ("best_effort", "volatile", 1),
    "state_reliable": ("reliable", "volatile", 1),
    "instruction": ("reliable", "transient_local", 1),
    "command": ("reliable", "volatile", 1),
    "visualization": ("reliable", "volatile", 2),
    "diagnostics": ("reliable", "volatile", 10),
}


def profile(name: str) -> Any:
    """The rclpy QoSProfile for `name` (a key of PROFILES)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if name not in PROFILES:
        raise ValueError(f"unknown QoS profile {name!r}; known: {sorted(PROFILES)}")
    reliability, durability, depth = PROFILES[name]
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if durability == "transient_local" else DurabilityPolicy.VOLATILE,
    )


def franka_pose_profile(best_effort: bool) -> Any:
    """QoS for the EE pose topic: best effort for franka >= 2.4 convenience topics, reliable for other sources."""
    return profile("franka_best_effort" if best_effort else "state_reliable")
