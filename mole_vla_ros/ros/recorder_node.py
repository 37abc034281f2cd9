"""`mole_vla_recorder`: records teleoperated demonstrations into rosbag2/MCAP episodes (thin rclpy shell).

Everything the recorder decides lives in `mole_vla_ros.data.recorder_core.RecorderCore`; this node only wires ROS to
it. rclpy is imported inside functions, so this module imports without ROS 2.

Interface (names relative to the node, e.g. /mole_vla_recorder/start):
    subscriptions  every topic of config/recorder.yaml, SERIALIZED (raw=True): bytes are written unchanged, with
                   the receive time (node clock, so use_sim_time works) as the bag's log time
                   <instruction_topic> (std_msgs/String): sets the instruction of the next episode
                   ~/command (std_msgs/String): "start [instruction]", "stop", "save [success|failure]", "discard",
                   "success", "failure", "instruction <text>" (pedals, keyboards: see record_keyboard.py)
    services       ~/start, ~/stop, ~/save, ~/discard (std_srvs/Trigger); ~/label (std_srvs/SetBool, true = success)
    publications   ~/status (std_msgs/String, JSON, 1 Hz and after every command)
    parameters     config_file (path to recorder.yaml), output_dir / robot_namespace / instruction_topic (overrides)
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from mole_vla_ros.robot.franka import Topics

NODE_NAME = "mole_vla_recorder"


def _qos(spec) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=spec.depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if spec.reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL
        if spec.durability == "transient_local"
        else DurabilityPolicy.VOLATILE,
    )


def _message_class(msgtype: str):
    from rosidl_runtime_py.utilities import get_message

    try:
        return get_message(msgtype)
    except (AttributeError, ModuleNotFoundError, ValueError) as exc:
        pkg = msgtype.split("/")[0]
        raise RuntimeError(
            f"cannot record {msgtype}: its Python message package is not available ({exc}). Install/source "
            f"{pkg} (e.g. `sudo apt install ros-$ROS_DISTRO-{pkg.replace('_', '-')}`) or remove the topic from "
            "the recorder config"
        ) from exc


def build_node(config_file: str | None = None, **overrides):
    """Create the recorder node (rclpy must be initialised). Returns (node, core)."""
    from rclpy.node import Node
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from mole_vla_ros.data.recorder_core import RecorderConfig, RecorderCore

    class RecorderNode(Node):
        def __init__(self):
            super().__init__(NODE_NAME)
            self.declare_parameter("config_file", config_file or "")
            self.declare_parameter("output_dir", overrides.get("output_dir", ""))
            self.declare_parameter("robot_namespace", overrides.get("robot_namespace", ""))
            self.declare_parameter("instruction_topic", overrides.get("instruction_topic", Topics.INSTRUCTION))
            path = self.get_parameter("config_file").value
            if not path:
                raise RuntimeError("parameter config_file is empty: pass config_file:=/path/to/recorder.yaml")
            cfg = RecorderConfig.from_yaml(path)
            if self.get_parameter("output_dir").value:
                cfg.output_dir = self.get_parameter("output_dir").value
            if self.get_parameter("robot_namespace").value:
                cfg = RecorderConfig.from_dict({**vars(cfg), "namespace": self.get_parameter("robot_namespace").value})
            self.core = RecorderCore(cfg, clock=lambda: self.get_clock().now().nanoseconds)

            for name, spec in self.core.specs.items():
                cls = _message_class(spec.msgtype)
                # default args bind the topic per subscription; raw=True hands us the CDR bytes untouched
                self.create_subscription(
                    cls, name, lambda data, topic=name: self.core.on_message(topic, data), _qos(spec.qos), raw=True
                )
                self.get_logger().info(f"recording {name} [{spec.msgtype}] qos={spec.qos.reliability}")

            instruction_topic = cfg.resolve(self.get_parameter("instruction_topic").value)
            from mole_vla_ros.data.recorder_core import QOS_PRESETS

            self.create_subscription(String, instruction_topic, self._on_instruction, _qos(QOS_PRESETS["latched"]))
            self.create_subscription(String, "~/command", self._on_command, 10)
            self.status_pub = self.create_publisher(String, "~/status", 10)
            for verb in ("start", "stop", "save", "discard"):
                self.create_service(Trigger, f"~/{verb}", lambda req, resp, v=verb: self._trigger(v, resp))
            self.create_service(SetBool, "~/label", self._on_label)
            self.create_timer(0.5, self._on_timer)
            self._ticks = 0
            self.get_logger().info(
                f"recorder ready: {len(self.core.specs)} topics -> {self.core.output_dir}; "
                f"send 'start <instruction>' on {self.get_fully_qualified_name()}/command"
            )

        def _report(self, ok: bool, message: str) -> None:
            (self.get_logger().info if ok else self.get_logger().warning)(message)
            self._publish_status(message)

        def _publish_status(self, message: str = "") -> None:
            status = self.core.status()
            status["message"] = message
            self.status_pub.publish(String(data=json.dumps(status)))

        def _on_instruction(self, msg) -> None:
            if msg.data.strip():
                self.core.handle_command(f"instruction {msg.data.strip()}")

        def _on_command(self, msg) -> None:
            result = self.core.handle_command(msg.data)
            self._report(result.ok, result.message)

        def _trigger(self, verb: str, response):
            result = self.core.handle_command(verb)
            response.success, response.message = result.ok, result.message
            self._report(result.ok, result.message)
            return response

        def _on_label(self, request, response):
            result = self.core.handle_command("success" if request.data else "failure")
            response.success, response.message = result.ok, result.message
            self._report(result.ok, result.message)
            return response

        def _on_timer(self) -> None:
            self.core.tick()  # warnings are logged by the core
            self._ticks += 1
            if self._ticks % 2 == 0:
                self._publish_status()

    node = RecorderNode()
    return node, node.core


def main(argv: list[str] | None = None) -> int:
    from mole_vla_ros.ros.spin import spin_node

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return spin_node(lambda: build_node()[0], argv, cleanup=lambda node: node.core.shutdown())


if __name__ == "__main__":
    sys.exit(main())
