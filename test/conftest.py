"""Suite-wide test settings."""

import os

# If rclpy is present (a ROS 2 install, or the PyPI wheels), DDS must stay on this machine: no multicast discovery
# on external interfaces from a test run.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # Jazzy and later
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")  # Humble
os.environ.setdefault("ROS_DOMAIN_ID", "73")
# Headless rendering for the simulator tests.
os.environ.setdefault("MUJOCO_GL", "egl")

# Property tests explore with hypothesis; on CI (CI=true) the examples are derandomized so a run is reproducible,
# and a failure prints the example that broke it.
try:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    settings.register_profile("dev", print_blob=True)
    settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
except ImportError:  # hypothesis is a dev dependency; without it the property tests are not collected anyway
    pass
