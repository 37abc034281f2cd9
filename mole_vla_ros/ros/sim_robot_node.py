"""`mole_vla_sim_robot`: the MuJoCo FR3 tabletop as a stand-in Franka on ROS 2 (rclpy imported lazily).

Publishes what franka_ros2 + cameras publish, and obeys what the policy node sends, so `sim.launch.py` runs the
whole system without a robot. All logic lives in `mole_vla_ros.sim.robot_bridge.SimRobotBridge` (tested without
ROS); this file is wiring.

Published (relative to the node's namespace):
    joint_states                                   sensor_msgs/JointState   fr3_joint1..7 + fr3_finger_joint1/2
    franka_robot_state_broadcaster/current_pose    geometry_msgs/PoseStamped fr3_hand_tcp in fr3_link0 (best effort)
    franka_gripper/joint_states                    sensor_msgs/JointState   fingers, each = width / 2
    camera/<name>/image_raw, camera/<name>/camera_info   rgb8 images (sensor-data QoS) + intrinsics
    /tf_static                                     camera optical frames, fr3_hand_tcp (latched)
    /tf                                            fr3_link0 -> fr3_hand (publish_tf; off with robot_state_publisher)
    mole_vla/instruction                           std_msgs/String, the episode's instruction (latched)
    /clock                                         sim time (run the other nodes with use_sim_time:=true)
    ~/status                                       std_msgs/String JSON: episode, instruction, success, counters
Subscribed / served:
    cartesian_impedance_controller/target_pose     geometry_msgs/PoseStamped target of fr3_hand_tcp
    fr3_arm_controller/joint_trajectory            trajectory_msgs/JointTrajectory
    franka_gripper/move, franka_gripper/grasp      franka_msgs actions (when franka_msgs is installed)
    teleop/target_pose, teleop/gripper             a teleop device's commands (follow_teleop), Float32 1 = open
    ~/reset                                        std_srvs/Trigger: next episode (next seed)
"""

from __future__ import annotations

import json
import sys

from mole_vla_ros.robot.franka import Topics

# name -> (default, description); declared as ROS parameters with these descriptions.
PARAMETERS: dict[str, tuple[object, str]] = {
    "task": ("pick", "tabletop task: pick (red/green cube) or stack"),
    "seed": (0, "seed of the first episode; episode i uses seed + i"),
    "control_hz": (10.0, "simulation control / camera rate (Hz)"),
    "image_size": (224, "square camera resolution (pixels)"),
    "cameras": (["scene", "wrist"], "cameras to render and publish"),
    "robot_type": ("fr3", "fr3 or panda (joint and frame name prefix)"),
    "realtime_factor": (1.0, "sim seconds per wall second; the sim never runs faster than this"),
    "auto_reset": (True, "start the next episode after success (plus 1 s) or after the task's time limit"),
    "publish_clock": (True, "publish /clock from sim time (other nodes then run with use_sim_time:=true)"),
    "follow_teleop": (True, "also obey teleop/target_pose and teleop/gripper (drive or record the sim by hand)"),
    "publish_tf": (True, "publish /tf fr3_link0 -> fr3_hand (false when robot_state_publisher runs)"),
}


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run mole_vla_ros mole_vla_sim_robot`; returns the exit code."""
    from rclpy.clock import Clock, ClockType
    from rclpy.node import Node

    from mole_vla_ros.ros.messages import RclpyMessages
    from mole_vla_ros.ros.qos import profile
    from mole_vla_ros.ros.spin import spin_node
    from mole_vla_ros.sim.config import SimConfig
    from mole_vla_ros.sim.env import TabletopSim
    from mole_vla_ros.sim.robot_bridge import SimRobotBridge

    class SimRobotNode(Node):
        def __init__(self):
            super().__init__("mole_vla_sim_robot")
            from rcl_interfaces.msg import ParameterDescriptor

            for name, (default, description) in PARAMETERS.items():
                self.declare_parameter(name, default, ParameterDescriptor(description=description))
            p = {name: self.get_parameter(name).value for name in PARAMETERS}
            config = SimConfig(
                robot_type=p["robot_type"],
                control_hz=float(p["control_hz"]),
                image_size=int(p["image_size"]),
                cameras=tuple(p["cameras"]),
                render=bool(p["cameras"]),
            )
            self.factory = RclpyMessages()
            self.bridge = SimRobotBridge(
                TabletopSim(config, p["task"]), self.factory, seed=int(p["seed"]), publish_tf=bool(p["publish_tf"])
            )
            self.auto_reset = bool(p["auto_reset"])
            self.publish_clock = bool(p["publish_clock"])
            self._success_since: float | None = None
            self._episode_start = 0.0

            cls = self.factory.message_class
            self.pubs = {
                Topics.JOINT_STATES: self.create_publisher(
                    cls("sensor_msgs/msg/JointState"), Topics.JOINT_STATES, profile("state")
                ),
                Topics.CURRENT_POSE: self.create_publisher(
                    cls("geometry_msgs/msg/PoseStamped"), Topics.CURRENT_POSE, profile("franka_best_effort")
                ),
                Topics.GRIPPER_JOINT_STATES: self.create_publisher(
                    cls("sensor_msgs/msg/JointState"), Topics.GRIPPER_JOINT_STATES, profile("state")
                ),
                Topics.INSTRUCTION: self.create_publisher(
                    cls("std_msgs/msg/String"), Topics.INSTRUCTION, profile("instruction")
                ),
                "/tf_static": self.create_publisher(
                    cls("tf2_msgs/msg/TFMessage"), "/tf_static", profile("instruction")
                ),
                "/tf": self.create_publisher(cls("tf2_msgs/msg/TFMessage"), "/tf", 100),
            }
            for cam in config.cameras:
                self.pubs[Topics.camera_image(cam)] = self.create_publisher(
                    cls("sensor_msgs/msg/Image"), Topics.camera_image(cam), profile("camera")
                )
                self.pubs[Topics.camera_info(cam)] = self.create_publisher(
                    cls("sensor_msgs/msg/CameraInfo"), Topics.camera_info(cam), profile("camera")
                )
            self.clock_pub = self.create_publisher(cls("rosgraph_msgs/msg/Clock"), "/clock", 10)
            self.status_pub = self.create_publisher(cls("std_msgs/msg/String"), "~/status", 10)

            self.create_subscription(
                cls("geometry_msgs/msg/PoseStamped"),
                Topics.CARTESIAN_TARGET_POSE,
                self.bridge.on_target_pose,
                profile("command"),
            )
            self.create_subscription(
                cls("trajectory_msgs/msg/JointTrajectory"),
                Topics.JTC_COMMAND,
                self.bridge.on_joint_trajectory,
                profile("command"),
            )
            if bool(p["follow_teleop"]):
                self.create_subscription(
                    cls("geometry_msgs/msg/PoseStamped"),
                    Topics.TELEOP_TARGET_POSE,
                    self.bridge.on_target_pose,
                    profile("command"),
                )
                self.create_subscription(
                    cls("std_msgs/msg/Float32"),
                    Topics.TELEOP_GRIPPER,
                    self.bridge.on_gripper_command,
                    profile("command"),
                )
            from std_srvs.srv import Trigger

            self.create_service(Trigger, "~/reset", self._on_reset)
            self._make_gripper_servers()

            self._publish(self.bridge.reset())
            self._episode_start = self.bridge.sim.time
            rtf = float(p["realtime_factor"])
            if rtf <= 0:
                raise ValueError(f"realtime_factor must be > 0, got {rtf}")
            # The sim is the clock source, so its timer runs on the steady wall clock, never on /clock.
            self.create_timer(config.control_dt / rtf, self._tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
            self.create_timer(1.0, self._status, clock=Clock(clock_type=ClockType.STEADY_TIME))
            self.get_logger().info(
                f"sim robot ready: task {p['task']!r}, {config.control_hz:g} Hz, cameras {list(config.cameras)}; "
                f"instruction {self.bridge.sim.instruction!r}"
            )

        def _make_gripper_servers(self):
            try:
                from franka_msgs.action import Grasp, Move
                from rclpy.action import ActionServer
            except ImportError:
                self.get_logger().warning(
                    "franka_msgs is not installed: no franka_gripper/move and /grasp action servers (gripper commands "
                    "from the policy node will not reach the sim). Install franka_ros2's franka_msgs."
                )
                return

            def move(goal_handle):
                g = goal_handle.request
                ok = self.bridge.on_gripper_move(g.width, g.speed)
                goal_handle.succeed() if ok else goal_handle.abort()
                return Move.Result(success=ok, error="" if ok else "rejected, see the sim robot's log")

            def grasp(goal_handle):
                g = goal_handle.request
                ok = self.bridge.on_gripper_grasp(g.width, g.speed, g.force)
                goal_handle.succeed() if ok else goal_handle.abort()
                return Grasp.Result(success=ok, error="" if ok else "rejected, see the sim robot's log")

            self._move_server = ActionServer(self, Move, Topics.GRIPPER_MOVE_ACTION, move)
            self._grasp_server = ActionServer(self, Grasp, Topics.GRIPPER_GRASP_ACTION, grasp)

        def _publish(self, messages):
            for m in messages:
                pub = self.pubs.get(m.topic)
                if pub is not None:
                    pub.publish(m.msg)

        def _tick(self):
            messages = self.bridge.tick()
            if self.publish_clock:
                self.clock_pub.publish(self.bridge.clock())
            self._publish(messages)
            if not self.auto_reset:
                return
            sim = self.bridge.sim
            now = sim.time
            if sim.success():
                self._success_since = now if self._success_since is None else self._success_since
            else:
                self._success_since = None
            timed_out = now - self._episode_start >= sim.task.episode_seconds
            if (self._success_since is not None and now - self._success_since >= 1.0) or timed_out:
                self.get_logger().info(f"episode {self.bridge.episode} ended: success={sim.success()}")
                self._start_episode()

        def _start_episode(self):
            self._publish(self.bridge.reset())
            self._episode_start = self.bridge.sim.time
            self._success_since = None

        def _on_reset(self, _request, response):
            self._start_episode()
            response.success = True
            response.message = f"episode {self.bridge.episode}: {self.bridge.sim.instruction}"
            return response

        def _status(self):
            self.status_pub.publish(self.factory.make("std_msgs/msg/String", data=json.dumps(self.bridge.status())))

    return spin_node(SimRobotNode, args, cleanup=lambda node: node.bridge.sim.close())


if __name__ == "__main__":
    sys.exit(main())
