"""launch_testing smoke test: the installed `mole_vla_policy` executable starts from a launch description with a
tiny checkpoint, reports through /diagnostics, creates no command publisher in dry run, and shuts down cleanly.

Runs under `colcon test` on a ROS 2 machine (launch_testing's pytest plugin collects `generate_test_description`);
skipped where launch_testing / rclpy are missing.
"""

from __future__ import annotations

import tempfile
import time
import unittest
from pathlib import Path

import pytest

pytest.importorskip("launch_testing")
pytest.importorskip("launch_ros")
rclpy = pytest.importorskip("rclpy")
pytest.importorskip("diagnostic_msgs")

import launch  # noqa: E402
import launch_ros.actions  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402

pytestmark = pytest.mark.ros


def _tiny_checkpoint() -> str:
    import torch

    from mole_vla_ros.model.checkpoint import save_checkpoint
    from mole_vla_ros.model.configuration import MoLeVLAConfig
    from mole_vla_ros.model.modeling import build_model
    from mole_vla_ros.model.normalization import ActionNormalizer

    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp(prefix="mole_vla_smoke_")) / "tiny"
    save_checkpoint(
        str(path), build_model(MoLeVLAConfig.preset("tiny", camera_names=("front",))), ActionNormalizer.identity(7)
    )
    return str(path)


@pytest.mark.launch_test
def generate_test_description():
    node = launch_ros.actions.Node(
        package="mole_vla_ros",
        executable="mole_vla_policy",
        name="mole_vla_policy",
        output="screen",
        parameters=[
            {
                "policy.checkpoint": _tiny_checkpoint(),
                "policy.device": "cpu",
                "observation.camera_names": ["front"],
                "instruction": "lift the cube",
            }
        ],
    )
    return launch.LaunchDescription([node, launch_testing.actions.ReadyToTest()]), {"policy": node}


class TestPolicyNodeRuns(unittest.TestCase):
    def test_reports_ready_in_dry_run(self, proc_output):
        from diagnostic_msgs.msg import DiagnosticArray

        rclpy.init()
        probe = rclpy.create_node("mole_vla_smoke_probe")
        received: list = []
        probe.create_subscription(DiagnosticArray, "/diagnostics", received.append, 10)
        try:
            deadline = time.monotonic() + 120.0  # model import + warm-up on a slow CI machine
            while time.monotonic() < deadline and not received:
                rclpy.spin_once(probe, timeout_sec=0.2)
            self.assertTrue(received, "mole_vla_policy published no diagnostics")
            values = {kv.key: kv.value for kv in received[-1].status[0].values}
            self.assertEqual(values["dry_run"], "True")
            self.assertEqual(values["ready"], "True")
            self.assertEqual(probe.count_publishers("/cartesian_impedance_controller/target_pose"), 0)
        finally:
            probe.destroy_node()
            rclpy.shutdown()
        proc_output.assertWaitFor("ready:", timeout=5)


@launch_testing.post_shutdown_test()
class TestPolicyNodeShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        # SIGINT from launch -> the node's KeyboardInterrupt path returns 0
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
