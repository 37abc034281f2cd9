"""Suite-wide test settings."""

import os

# If rclpy is present (a ROS 2 install, or the PyPI wheels), DDS must stay on this machine: no multicast discovery
# on external interfaces from a test run.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # Jazzy and later
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")  # Humble
os.environ.setdefault("ROS_DOMAIN_ID", "73")
# Headless rendering for the simulator tests.
os.environ.setdefault("MUJOCO_GL", "egl")
