"""ROS 2 node `mole_vla_policy`: a thin rclpy shell around the runtime core `PolicyRuntime`.

Wiring (names relative to the node's namespace; `~/` = /<ns>/mole_vla_policy/):

  subscribes  topics.cameras[i]            sensor_msgs/Image (or CompressedImage on <topic>/compressed)  sensor-data QoS
              topics.joint_states          sensor_msgs/JointState (arm joints matched by name)           best effort
              topics.ee_pose               geometry_msgs/PoseStamped (franka current_pose), or TF when ""  best effort
              topics.gripper_state         sensor_msgs/JointState (finger joints -> width)                best effort
              topics.robot_state           franka_msgs/FrankaRobotState (robot_mode interlock)            best effort
              topics.instruction           std_msgs/String                                               transient local
  publishes   topics.pose_command          geometry_msgs/PoseStamped   (output_mode pose, only when not dry run)
              topics.joint_trajectory      trajectory_msgs/JointTrajectory with velocities (joint_trajectory mode)
              ~/target_pose_preview        geometry_msgs/PoseStamped: what would be / is commanded (always)
              ~/joint_trajectory_preview   trajectory_msgs/JointTrajectory: same, joint_trajectory mode
              ~/predicted_trajectory       trajectory_msgs/MultiDOFJointTrajectory of each accepted chunk
              ~/predicted_path             nav_msgs/Path of each accepted chunk
              ~/markers                    visualization_msgs/MarkerArray (chunks, gripper colours, fading)
              ~/active_layers              std_msgs/Int32MultiArray: LLM layers STAR ran for the newest chunk
              ~/layer_probs                std_msgs/Float32MultiArray: router probability per layer
              /diagnostics                 diagnostic_msgs/DiagnosticArray
  actions     topics.gripper_actions/move, /grasp   franka_msgs/action/Move, Grasp (send_goal_async, never blocks)
  services    ~/enable  std_srvs/SetBool    (true: start actuating if allowed; false: stop and hold)
              ~/reset   std_srvs/Trigger    (new episode: forget chunks and history, stay enabled/disabled as is)
  parameters  see config/mole_vla.yaml; `instruction` and `policy.active_layers` may change at run time
              (`ros2 param set`), every other parameter needs a restart.

Nothing moves before `~/enable` is called, and nothing is ever commanded in dry run: the command publishers are not
even created. Model loading and warm-up finish before any subscription exists, so the first observation meets a
ready policy. All message handling (conversions in, the core's outputs out, input-error counting, gripper goals,
the robot-state decimation) is `ros.node_io.NodeIO`, the same object offline replay drives on bag time; this module
only wires it to rclpy and publishes what it returns, on the node clock (sim time under use_sim_time). One
single-threaded executor runs everything, so the core is never called concurrently; inference itself runs on the
core's own worker thread.
"""

from __future__ import annotations

import array
import functools
import time
from typing import Any

from mole_vla_ros.ros.params import NODE_NAME, NodeSettings, parameter_specs, settings_from_flat

OUTPUT_TOPICS: dict[str, str] = {
    "target_pose_preview": "~/target_pose_preview",
    "joint_trajectory_preview": "~/joint_trajectory_preview",
    "predicted_trajectory": "~/predicted_trajectory",
    "predicted_path": "~/predicted_path",
    "markers": "~/markers",
    "layers": "~/active_layers",
    "layer_probs": "~/layer_probs",
}
OUTPUT_TYPES: dict[str, str] = {
    "target_pose_preview": "geometry_msgs/msg/PoseStamped",
    "joint_trajectory_preview": "trajectory_msgs/msg/JointTrajectory",
    "predicted_trajectory": "trajectory_msgs/msg/MultiDOFJointTrajectory",
    "predicted_path": "nav_msgs/msg/Path",
    "markers": "visualization_msgs/msg/MarkerArray",
    "layers": "std_msgs/msg/Int32MultiArray",
    "layer_probs": "std_msgs/msg/Float32MultiArray",
    "pose_command": "geometry_msgs/msg/PoseStamped",
    "joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
}
DIAGNOSTICS_TOPIC = "/diagnostics"
SERVICES: dict[str, tuple[str, str]] = {
    "enable": ("~/enable", "std_srvs/srv/SetBool"),
    "reset": ("~/reset", "std_srvs/srv/Trigger"),
}
# Changeable while running. Everything else shapes subscriptions, the loaded model or the safety limits.
DYNAMIC_PARAMETERS = ("instruction", "policy.active_layers")
# Parameters rclpy itself declares or reads.
_ROS_OWNED_PREFIXES = ("use_sim_time", "qos_overrides.", "start_type_description_service")


# ----------------------------------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------------------------------


def declare_and_read_parameters(node: Any) -> NodeSettings:
    """Declare every parameter (with its description), reject unknown ones, and validate them into NodeSettings.

    Raises ValueError with a message naming the bad parameter; the caller refuses to start.
    """
    from rcl_interfaces.msg import ParameterDescriptor

    specs = parameter_specs()
    for spec in specs:
        # dynamic typing: `command_rate_hz: 100` (an int in YAML) must not crash rclpy's type check; our own
        # validation below gives the readable error for values of a really wrong type.
        descriptor = ParameterDescriptor(
            description=spec.description,
            additional_constraints=f"type {spec.type_name}",
            dynamic_typing=True,
            read_only=spec.name not in DYNAMIC_PARAMETERS,
        )
        node.declare_parameter(spec.name, spec.default, descriptor)
    declared = {s.name for s in specs}
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    unknown = sorted(name for name in overrides if name not in declared and not name.startswith(_ROS_OWNED_PREFIXES))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for node {NODE_NAME}; check the spelling against config/mole_vla.yaml"
        )
    values = {spec.name: _plain_value(node.get_parameter(spec.name).value) for spec in specs}
    return settings_from_flat(values)


def _plain_value(value: Any) -> Any:
    if isinstance(value, (array.array, tuple)):
        return list(value)
    return value


# ----------------------------------------------------------------------------------------------------------------------
# The shell
# ----------------------------------------------------------------------------------------------------------------------


class PolicyNodeShell:
    """Everything the node owns: the core, its publishers, subscriptions, timers and services.

    `policy` may be passed in (tests, a remote client); by default it is loaded from `settings.node.policy`.
    `factory` builds messages (default: rclpy classes); `executor` is the core's inference executor.
    """

    def __init__(
        self, node: Any, settings: NodeSettings, policy: Any = None, executor: str = "thread", factory: Any = None
    ):
        from rclpy.action import ActionClient  # noqa: F401  (fail early, before the model loads, if rclpy is broken)

        from mole_vla_ros.ros.node_io import NodeIO
        from mole_vla_ros.ros.outputs import OutputBuilder
        from mole_vla_ros.runtime.node_core import PolicyRuntime

        self.node = node
        self.settings = settings
        self.log = node.get_logger()
        if factory is None:
            from mole_vla_ros.ros.messages import RclpyMessages

            factory = RclpyMessages()
        self.factory = factory
        cfg, ncfg = settings.runtime, settings.node

        # 1. model + core, warmed up before any input is subscribed
        if policy is None:
            from mole_vla_ros.ros.policy_source import load_policy

            policy = load_policy(ncfg.policy)
        self.policy = policy
        self.runtime = PolicyRuntime(cfg, policy, executor=executor)
        t0 = time.perf_counter()
        self.runtime.warmup()
        self.log.info(f"policy warmed up in {time.perf_counter() - t0:.1f} s")
        self.outputs = OutputBuilder(
            self.factory,
            ncfg.markers,
            cfg.frames.ee_frame,
            node_name=node.get_fully_qualified_name(),
            hardware_id=cfg.frames.robot_type,
        )
        # all message handling (shared with offline replay); this class only wires it to rclpy
        self.io = NodeIO(settings, self.runtime, self.outputs, log=self.log)
        if cfg.instruction:
            self.io.set_instruction(cfg.instruction)

        self._create_publishers()
        self._create_gripper_clients()
        self._create_subscriptions()
        self._create_services()
        self._create_timers()
        node.add_on_set_parameters_callback(self._on_set_parameters)
        mode = "DRY RUN (nothing is commanded)" if cfg.safety.dry_run else f"{cfg.output_mode} commands after ~/enable"
        self.log.info(f"ready: {len(ncfg.topics.cameras)} camera(s), output {mode}")

    # -- wiring --------------------------------------------------------------------------------------------------------
    def _create_publishers(self) -> None:
        from mole_vla_ros.ros.qos import profile

        cfg, topics = self.settings.runtime, self.settings.node.topics
        msg = self.factory.message_class
        self.pub: dict[str, Any] = {
            key: self.node.create_publisher(msg(OUTPUT_TYPES[key]), name, profile("visualization"))
            for key, name in OUTPUT_TOPICS.items()
        }
        self.pub["diagnostics"] = self.node.create_publisher(
            msg("diagnostic_msgs/msg/DiagnosticArray"), DIAGNOSTICS_TOPIC, profile("diagnostics")
        )
        # In dry run the command publishers do not exist: a controller cannot receive a command by mistake, and
        # `ros2 topic info` shows it.
        if not cfg.safety.dry_run:
            if cfg.output_mode == "pose":
                self.pub["pose_command"] = self.node.create_publisher(
                    msg(OUTPUT_TYPES["pose_command"]), topics.pose_command, profile("command")
                )
            else:
                self.pub["joint_trajectory"] = self.node.create_publisher(
                    msg(OUTPUT_TYPES["joint_trajectory"]), topics.joint_trajectory, profile("command")
                )

    def _create_gripper_clients(self) -> None:
        self.gripper_clients: dict[str, Any] = {}
        ns = self.settings.node.topics.gripper_actions
        if not ns or self.settings.runtime.safety.dry_run:
            return
        try:
            from franka_msgs.action import Grasp, Move
        except ImportError:
            self.log.warn("franka_msgs is not installed: gripper commands are disabled (topics.gripper_actions)")
            return
        from rclpy.action import ActionClient

        self.gripper_clients = {
            "move": ActionClient(self.node, Move, f"{ns}/move"),
            "grasp": ActionClient(self.node, Grasp, f"{ns}/grasp"),
        }

    def _create_subscriptions(self) -> None:
        from mole_vla_ros.ros.qos import franka_pose_profile, profile

        cfg, topics = self.settings.runtime, self.settings.node.topics
        msg = self.factory.message_class
        self.subs: list[Any] = []
        compressed = topics.camera_transport == "compressed"
        image_type = msg("sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image")
        for name, topic in zip(cfg.observation.camera_names, topics.cameras):
            topic = f"{topic}/compressed" if compressed else topic
            self.subs.append(
                self.node.create_subscription(
                    image_type, topic, functools.partial(self._on_camera, name, compressed), profile("camera")
                )
            )
        joint_state = msg("sensor_msgs/msg/JointState")
        self.subs.append(
            self.node.create_subscription(joint_state, topics.joint_states, self.io.on_joint_state, profile("state"))
        )
        if topics.gripper_state:
            self.subs.append(
                self.node.create_subscription(
                    joint_state, topics.gripper_state, self.io.on_gripper_state, profile("state")
                )
            )
        self.tf_buffer = None
        self.tf_check = "off"  # one-time EE pose topic vs TF comparison: off | pending | ok | MISMATCH ... | no TF
        if cfg.observation.ee_pose_source == "topic" and topics.ee_pose:
            try:
                from tf2_ros import Buffer, TransformListener
            except ImportError:
                self.log.warn("tf2_ros is not available: the EE pose topic is not cross-checked against TF")
            else:
                self.tf_buffer = Buffer()
                self.tf_listener = TransformListener(self.tf_buffer, self.node)
                self.tf_check = "pending"
                self._tf_check_attempts = 0
        if cfg.observation.ee_pose_source == "fk":
            pass  # the core computes the EE pose from the joint states (forward kinematics)
        elif topics.ee_pose:
            self.subs.append(
                self.node.create_subscription(
                    msg("geometry_msgs/msg/PoseStamped"),
                    topics.ee_pose,
                    self._on_ee_pose,
                    franka_pose_profile(topics.ee_pose_best_effort),
                )
            )
        else:
            from tf2_ros import Buffer, TransformListener

            self.tf_buffer = Buffer()
            self.tf_listener = TransformListener(self.tf_buffer, self.node)
        if topics.robot_state:
            try:
                from franka_msgs.msg import FrankaRobotState
            except ImportError:
                if cfg.safety.require_robot_mode:
                    raise RuntimeError(
                        "safety.require_robot_mode is true but franka_msgs is not installed, so the robot mode can "
                        "never be read; install franka_msgs or set safety.require_robot_mode: false"
                    ) from None
                self.log.warn("franka_msgs is not installed: robot-mode interlock inactive (topics.robot_state)")
            else:
                # 1 kHz of a ~3 kB message: take the bytes raw and decode only those NodeIO.robot_state_due lets
                # through (robot_state_rate_hz per second of node time), else libfranka misses its 1 ms deadlines
                self._robot_state_cls = FrankaRobotState
                self.subs.append(
                    self.node.create_subscription(
                        FrankaRobotState, topics.robot_state, self._on_robot_state_raw, profile("state"), raw=True
                    )
                )
        self.subs.append(
            self.node.create_subscription(
                msg("std_msgs/msg/String"), topics.instruction, self.io.on_instruction, profile("instruction")
            )
        )

    def _create_services(self) -> None:
        from std_srvs.srv import SetBool, Trigger

        self.srv_enable = self.node.create_service(SetBool, SERVICES["enable"][0], self._on_enable)
        self.srv_reset = self.node.create_service(Trigger, SERVICES["reset"][0], self._on_reset)

    def _create_timers(self) -> None:
        cfg, ncfg = self.settings.runtime, self.settings.node
        self.timers = [
            self.node.create_timer(1.0 / cfg.trajectory.command_rate_hz, self._on_control_tick),
            self.node.create_timer(ncfg.diagnostics_period_s, self._on_diagnostics_tick),
            self.node.create_timer(1.0 / ncfg.visualization_rate_hz, self._on_visualization_tick),
        ]
        if self.tf_buffer is not None and not self.settings.node.topics.ee_pose:
            self.timers.append(self.node.create_timer(1.0 / cfg.observation.camera_rate_hz, self._on_tf_tick))

    # -- inputs: convert and hand to the core ---------------------------------------------------------------------
    def now(self) -> float:
        """Node clock in seconds (ROS time: follows /clock with use_sim_time)."""
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _on_camera(self, name: str, compressed: bool, msg: Any) -> None:
        self.io.on_camera(name, msg, compressed)

    def _on_ee_pose(self, msg: Any) -> None:
        sample = self.io.on_ee_pose(msg)
        if sample is not None and self.tf_check == "pending":
            self._check_pose_against_tf(sample)

    def _check_pose_against_tf(self, sample: Any) -> None:
        """Compare one pose-topic sample with TF base_frame -> ee_frame (spec: check current_pose against TF once)."""
        from rclpy.time import Time

        frames = self.settings.runtime.frames
        try:
            tf = self.tf_buffer.lookup_transform(frames.base_frame, frames.ee_frame, Time())
        except Exception:  # TF not there yet (robot_state_publisher starting); give up after a while
            self._tf_check_attempts += 1
            if self._tf_check_attempts >= 2000:  # ~2 s of a 1 kHz pose topic
                self.tf_check = f"no TF {frames.base_frame} -> {frames.ee_frame}"
                self.log.warn(f"EE pose not cross-checked: {self.tf_check}")
            return
        self.tf_check = self.io.check_pose_against_tf(sample, tf)

    def _on_tf_tick(self) -> None:
        from rclpy.time import Time

        frames = self.settings.runtime.frames
        try:
            tf = self.tf_buffer.lookup_transform(frames.base_frame, frames.ee_frame, Time())
        except Exception as exc:  # tf2 raises LookupException / ExtrapolationException / ConnectivityException
            self.io.reject("tf", ValueError(f"no transform {frames.base_frame} -> {frames.ee_frame}: {exc}"))
            return
        self.io.on_transform(tf)

    def _on_robot_state_raw(self, data: bytes) -> None:
        if not self.io.robot_state_due(self.now()):  # node (ROS) time: sim time under use_sim_time, as in replay
            return
        from rclpy.serialization import deserialize_message

        self.io.on_robot_state(deserialize_message(data, self._robot_state_cls))

    # -- outputs ---------------------------------------------------------------------------------------------------
    def _on_control_tick(self) -> None:
        now = self.now()
        if now <= 0.0:
            return  # use_sim_time before the first /clock message: no time base yet
        tick = self.io.control_tick(now)
        for key, message in tick.messages.items():
            publisher = self.pub.get(key)
            if publisher is not None:  # no command publisher exists in dry run
                publisher.publish(message)
        if tick.gripper_goal is not None:
            self._send_gripper(*tick.gripper_goal)

    def _send_gripper(self, kind: str, goal: Any) -> None:
        client = self.gripper_clients.get(kind)
        if client is None:
            self.io.gripper_event("no_client")
            return
        if not client.server_is_ready():
            self.io.gripper_event("server_unavailable")
            self.log.warn(f"gripper action server {kind} is not available; command dropped", throttle_duration_sec=5.0)
            return
        self.io.gripper_event(f"sent/{kind}")
        future = client.send_goal_async(goal)  # never block the control timer on the (slow, blocking) hand
        future.add_done_callback(lambda f, k=kind: self._on_gripper_goal_response(k, f))

    def _on_gripper_goal_response(self, kind: str, future: Any) -> None:
        try:
            handle = future.result()
        except Exception as exc:  # the goal request itself failed (server gone mid-call)
            self.io.gripper_event(f"failed/{kind}")
            self.log.warn(f"gripper {kind} goal could not be sent: {exc}")
            return
        if handle is None or not handle.accepted:
            self.io.gripper_event(f"rejected/{kind}")
            self.log.warn(f"gripper {kind} goal was rejected")

    def _on_diagnostics_tick(self) -> None:
        msg = self.io.diagnostics_tick({"tf_check": self.tf_check})
        if msg is not None:
            self.pub["diagnostics"].publish(msg)

    def _on_visualization_tick(self) -> None:
        markers = self.io.visualization_tick(self.now())
        if markers is not None:
            self.pub["markers"].publish(markers)

    # -- services and parameters -----------------------------------------------------------------------------------
    def _on_enable(self, request: Any, response: Any) -> Any:
        if request.data:
            refusal = self.io.enable()
            if refusal:
                response.success, response.message = False, f"not enabled: {refusal}"
            else:
                response.success = True
                response.message = (
                    "enabled in DRY RUN: predictions only; restart with dry_run:=false to command the robot"
                    if self.settings.runtime.safety.dry_run
                    else "enabled: commanding the robot"
                )
        else:
            self.io.disable("operator request (~/enable false)")
            response.success, response.message = True, "disabled: braking to rest, then holding the commanded pose"
        self.log.info(response.message)
        return response

    def _on_reset(self, request: Any, response: Any) -> Any:
        self.io.reset_episode()
        response.success, response.message = True, "episode reset"
        return response

    def _on_set_parameters(self, params: list) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        for p in params:
            if p.name == "use_sim_time":
                continue
            if p.name not in DYNAMIC_PARAMETERS:
                return SetParametersResult(
                    successful=False,
                    reason=f"{p.name} cannot change while the node runs; restart it with the new value",
                )
            if p.name == "instruction" and not (isinstance(p.value, str) and p.value.strip()):
                return SetParametersResult(successful=False, reason="instruction must be a non-empty string")
            if p.name == "policy.active_layers":
                num_layers = getattr(self.policy, "num_layers", None)
                ok = isinstance(p.value, int) and not isinstance(p.value, bool) and p.value >= 0
                if not ok or (num_layers and p.value > num_layers):
                    return SetParametersResult(
                        successful=False,
                        reason=f"policy.active_layers must be an integer in 0..{num_layers} (0 = default), got {p.value!r}",
                    )
        for p in params:
            if p.name == "instruction":
                self.io.set_instruction(p.value.strip())
            elif p.name == "policy.active_layers":
                self.io.set_active_layers(p.value)
        return SetParametersResult(successful=True)

    def shutdown(self, brake_timeout_s: float = 0.5) -> None:
        """Stop actuating (braking to rest first while ROS still runs) and the core's worker thread."""
        try:
            self.io.disable("node shutting down")
            self._brake_before_exit(brake_timeout_s)
        finally:
            close = getattr(self.runtime, "close", None)
            if close is not None:
                close()

    def _brake_before_exit(self, timeout_s: float) -> None:
        # A command stream that stops mid-motion is a libfranka reflex: while the runtime brakes (state "stopping"),
        # keep ticking for at most timeout_s, as long as the ROS context still lets us publish.
        period = 1.0 / self.settings.runtime.trajectory.command_rate_hz
        deadline = time.monotonic() + timeout_s
        last = self.now()  # the control timer has just ticked at this time
        while self.runtime.state_name() == "stopping" and time.monotonic() < deadline:
            time.sleep(period)
            context = getattr(self.node, "context", None)
            if context is not None and not context.ok():
                self.log.warn("shut down while braking: ROS is gone, the last commands could not be sent")
                return
            if self.now() != last:  # a sim clock that stopped with the bag must not repeat a tick
                last = self.now()
                self._on_control_tick()


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run mole_vla_ros mole_vla_policy`. Exit code 2 when parameters are invalid."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from mole_vla_ros.ros.spin import ros_node

    # Ctrl-C must leave ROS up until shell.shutdown() has braked the arm to rest (see ros_node)
    with ros_node(lambda: rclpy.create_node(NODE_NAME), args, publish_during_cleanup=True) as node:
        try:
            settings = declare_and_read_parameters(node)
        except ValueError as exc:
            node.get_logger().fatal(f"refusing to start, invalid parameters: {exc}")
            return 2
        try:
            shell = PolicyNodeShell(node, settings)
        except (ValueError, RuntimeError, FileNotFoundError) as exc:
            node.get_logger().fatal(f"refusing to start: {exc}")
            return 2
        try:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
        finally:  # before ros_node destroys the node
            shell.shutdown()
    return 0
