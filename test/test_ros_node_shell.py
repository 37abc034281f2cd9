"""The policy node's shell driven end to end without ROS 2: real runtime core, real conversions, real (rosbags)
ROS 2 messages, a scripted policy, and small recording stand-ins for the handful of rclpy objects the shell touches
(node, publishers, timers, action clients). The same shell runs under rclpy in test_ros_node_rclpy.py.
"""

from __future__ import annotations

import sys
import types
import typing
from types import SimpleNamespace

import numpy as np
import pytest

from mole_vla_ros.interfaces import PolicyInput, PolicyOutput
from mole_vla_ros.robot.franka import READY_Q, describe
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.ros.messages import RosbagsMessages
from mole_vla_ros.ros.params import load_settings

FR3 = describe("fr3")
MSGS = RosbagsMessages()
START = np.array([0.5, 0.0, 0.4])
DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # EE z pointing down: rpy (pi, 0, 0)


class ScriptedPolicy:
    """Moves +x by 5 mm per action with the gripper value `grip`; reports a fixed STAR choice."""

    camera_names = ("front",)
    chunk_size = 8
    action_space = "delta_xyz_abs_rpy"
    control_dt = 0.1
    image_size = 32
    num_layers = 4

    def __init__(self, grip: float = 1.0):
        self.grip = grip
        self.calls: list[PolicyInput] = []

    def infer(self, inp: PolicyInput) -> PolicyOutput:
        self.calls.append(inp)
        actions = np.tile([0.005, 0.0, 0.0, np.pi, 0.0, 0.0, self.grip], (self.chunk_size, 1))
        return PolicyOutput(
            actions=actions,
            layer_indices=(1, 3),
            layer_probs=np.array([0.1, 0.4, 0.1, 0.4]),
            num_layers=4,
            timings_ms={"total": 1.0},
        )


# ------------------------------------------------------------------------------------------- rclpy stand-ins


class FakePublisher:
    def __init__(self, msg_type, topic, qos):
        self.msg_type, self.topic, self.qos, self.sent = msg_type, topic, qos, []

    def publish(self, msg):
        assert isinstance(msg, self.msg_type), f"{self.topic}: published {type(msg).__name__}"
        self.sent.append(msg)


class FakeLogger:
    def __init__(self, lines):
        self.lines = lines

    def _log(self, level, text, **_):
        self.lines.append((level, text))

    def info(self, text, **kw):
        self._log("info", text, **kw)

    def warn(self, text, **kw):
        self._log("warn", text, **kw)

    def error(self, text, **kw):
        self._log("error", text, **kw)

    def fatal(self, text, **kw):
        self._log("fatal", text, **kw)


class FakeNode:
    def __init__(self):
        self.t = 100.0
        self.publishers: dict[str, FakePublisher] = {}
        self.subscriptions: dict[str, tuple] = {}
        self.timers: list[list] = []
        self.services: dict[str, tuple] = {}
        self.param_callbacks: list = []
        self.logs: list = []

    def get_logger(self):
        return FakeLogger(self.logs)

    def get_clock(self):
        node = self
        return SimpleNamespace(now=lambda: SimpleNamespace(nanoseconds=round(node.t * 1e9)))

    def get_fully_qualified_name(self):
        return "/mole_vla_policy"

    def create_publisher(self, msg_type, topic, qos):
        self.publishers[topic] = FakePublisher(msg_type, topic, qos)
        return self.publishers[topic]

    def create_subscription(self, msg_type, topic, callback, qos, raw=False):
        self.subscriptions[topic] = (msg_type, callback, qos, raw)
        return object()

    def create_timer(self, period, callback):
        self.timers.append([period, callback, 0.0])
        return object()

    def create_service(self, srv_type, name, callback):
        self.services[name] = (srv_type, callback)
        return object()

    def add_on_set_parameters_callback(self, callback):
        self.param_callbacks.append(callback)

    # test helpers
    def deliver(self, topic, msg):
        msg_type, callback, _, raw = self.subscriptions[topic]
        assert isinstance(msg, msg_type), f"{topic} expects {msg_type.__name__}"
        callback(MSGS.serialize(msg) if raw else msg)  # raw subscriptions get the CDR bytes, as from DDS

    def advance(self, dt):
        """Move the clock and fire due timers (like an executor would)."""
        self.t += dt
        for timer in self.timers:
            timer[2] += dt
            while timer[2] >= timer[0] - 1e-9:
                timer[2] -= timer[0]
                timer[1]()


class FakeActionClient:
    instances: typing.ClassVar[list] = []

    def __init__(self, node, action_type, name):
        self.name, self.goals = name, []
        FakeActionClient.instances.append(self)

    def server_is_ready(self):
        return True

    def send_goal_async(self, goal):
        self.goals.append(goal)
        return SimpleNamespace(
            add_done_callback=lambda cb: cb(SimpleNamespace(result=lambda: SimpleNamespace(accepted=True)))
        )


@pytest.fixture
def fake_ros(monkeypatch):
    mods = {}
    for name in ("rclpy", "rclpy.qos", "rclpy.action", "rclpy.time", "std_srvs", "std_srvs.srv", "rcl_interfaces",
                 "rcl_interfaces.msg", "franka_msgs", "franka_msgs.msg", "franka_msgs.action"):  # fmt: skip
        mods[name] = types.ModuleType(name)
        mods[name].__path__ = []
    mods["rclpy.qos"].QoSProfile = lambda **kw: dict(kw)
    mods["rclpy.qos"].HistoryPolicy = SimpleNamespace(KEEP_LAST="keep_last")
    mods["rclpy.qos"].ReliabilityPolicy = SimpleNamespace(BEST_EFFORT="best_effort", RELIABLE="reliable")
    mods["rclpy.qos"].DurabilityPolicy = SimpleNamespace(TRANSIENT_LOCAL="transient_local", VOLATILE="volatile")
    FakeActionClient.instances = []
    mods["rclpy.action"].ActionClient = FakeActionClient
    mods["rclpy.time"].Time = object
    mods["std_srvs.srv"].SetBool = type("SetBool", (), {})
    mods["std_srvs.srv"].Trigger = type("Trigger", (), {})
    mods["rcl_interfaces.msg"].SetParametersResult = lambda successful, reason="": SimpleNamespace(
        successful=successful, reason=reason
    )
    mods["franka_msgs.msg"].FrankaRobotState = MSGS.message_class("franka_msgs/msg/FrankaRobotState")
    mods["franka_msgs.action"].Move = type("Move", (), {})
    mods["franka_msgs.action"].Grasp = type("Grasp", (), {})
    mods["rclpy.serialization"] = types.ModuleType("rclpy.serialization")
    mods["rclpy.serialization"].deserialize_message = lambda data, cls: MSGS.deserialize(data, cls.__msgtype__)
    mods["tf2_ros"] = types.ModuleType("tf2_ros")
    mods["tf2_ros"].Buffer = FakeTfBuffer
    mods["tf2_ros"].TransformListener = lambda buffer, node: None
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return mods


class FakeTfBuffer:
    """tf2 buffer holding one transform fr3_link0 -> fr3_hand_tcp, stamped by the test."""

    stamp = 0.0

    def lookup_transform(self, target, source, time):
        if (target, source) != ("fr3_link0", "fr3_hand_tcp"):
            raise LookupError(f"no transform {target} -> {source}")
        return MSGS.make(
            "geometry_msgs/msg/TransformStamped",
            header=MSGS.header(FakeTfBuffer.stamp, target),
            child_frame_id=source,
            transform=conv.transform_msg(MSGS, conv.Pose(START, DOWN)),
        )


def make_shell(fake_ros, policy=None, **overrides):
    from mole_vla_ros.ros.policy_node import PolicyNodeShell

    settings = load_settings(None, overrides={"observation.camera_names": ["front"], **overrides})
    node = FakeNode()
    shell = PolicyNodeShell(node, settings, policy=policy or ScriptedPolicy(), executor="inline", factory=MSGS)
    return node, shell


def feed(node, t, x=START[0], image=None):
    rgb = image if image is not None else np.full((32, 32, 3), 90, np.uint8)
    node.deliver("camera/front/image_raw", conv.rgb_to_image_msg(MSGS, rgb, t, "front_cam"))
    node.deliver(
        "joint_states",
        MSGS.make(
            "sensor_msgs/msg/JointState",
            header=MSGS.header(t, ""),
            name=[*FR3.arm_joint_names, *FR3.finger_joint_names],
            position=[*READY_Q, 0.04, 0.04],
        ),
    )
    pose = conv.pose_stamped_msg(MSGS, conv.Pose(np.array([x, 0.0, 0.4]), DOWN), t, "fr3_link0")
    node.deliver("franka_robot_state_broadcaster/current_pose", pose)
    fingers = MSGS.make(
        "sensor_msgs/msg/JointState", header=MSGS.header(t, ""), name=list(FR3.finger_joint_names), position=[0.04] * 2
    )
    node.deliver("franka_gripper/joint_states", fingers)  # the hand is open


def run(node, seconds, dt=0.01, feed_every=3, follow=None, **feed_kw):
    """Step the node; `follow` = a command publisher whose latest pose the simulated robot reaches (perfect tracking)."""
    for i in range(round(seconds / dt)):
        if i % feed_every == 0:
            if follow is not None and follow.sent:
                feed_kw["x"] = follow.sent[-1].pose.position.x
            feed(node, node.t, **feed_kw)
        node.advance(dt)


def call(node, service, **request):
    _, callback = node.services[service]
    return callback(SimpleNamespace(**request), SimpleNamespace(success=None, message=None))


# ------------------------------------------------------------------------------------------- tests


def test_dry_run_wiring_publishes_predictions_and_never_commands(fake_ros):
    node, shell = make_shell(fake_ros)
    subs = node.subscriptions
    assert subs["camera/front/image_raw"][2]["reliability"] == "best_effort"  # sensor-data QoS
    assert subs["franka_robot_state_broadcaster/current_pose"][2]["reliability"] == "best_effort"
    assert subs["mole_vla/instruction"][2]["durability"] == "transient_local"
    assert subs["joint_states"][2]["reliability"] == "best_effort"  # matches reliable and best-effort publishers
    # dry run: no command publisher exists at all, no gripper clients
    assert "cartesian_impedance_controller/target_pose" not in node.publishers
    assert "fr3_arm_controller/joint_trajectory" not in node.publishers
    assert FakeActionClient.instances == []
    assert set(node.services) == {"~/enable", "~/reset"}

    node.deliver("mole_vla/instruction", MSGS.make("std_msgs/msg/String", data="push the cube"))
    refused = call(node, "~/enable", data=True)
    assert not refused.success and "pose" in refused.message  # the core refuses before it knows where the EE is
    run(node, 0.5)
    response = call(node, "~/enable", data=True)
    assert response.success and "DRY RUN" in response.message
    run(node, 1.0)

    pub = node.publishers
    assert pub["~/predicted_path"].sent and pub["~/predicted_trajectory"].sent and pub["~/markers"].sent
    assert pub["~/target_pose_preview"].sent
    assert shell.policy.calls[-1].instruction == "push the cube"
    path = pub["~/predicted_path"].sent[-1]
    assert path.header.frame_id == "fr3_link0" and len(path.poses) == 8
    xs = [p.pose.position.x for p in path.poses]
    assert xs == sorted(xs) and xs[-1] > xs[0]  # the scripted +x motion
    layers = pub["~/active_layers"].sent[-1]
    assert layers.data.tolist() == [1, 3] and layers.layout.dim[0].label == "active_layers_of_4"
    np.testing.assert_allclose(pub["~/layer_probs"].sent[-1].data, [0.1, 0.4, 0.1, 0.4], rtol=1e-6)
    (status,) = pub["/diagnostics"].sent[-1].status
    values = {kv.key: kv.value for kv in status.values}
    assert values["dry_run"] == "True" and values["ready"] == "True" and values["active_layers"] == "2/4"


def test_actuation_after_enable_sends_pose_commands_and_a_grasp(fake_ros):
    node, _shell = make_shell(fake_ros, policy=ScriptedPolicy(grip=0.0), **{"safety.dry_run": False})
    commands = node.publishers["cartesian_impedance_controller/target_pose"]
    run(node, 0.5)
    assert commands.sent == []  # nothing moves before enable
    assert call(node, "~/enable", data=True).success
    run(node, 2.0, follow=commands)
    assert len(commands.sent) > 50
    xs = np.array([m.pose.position.x for m in commands.sent])
    assert xs[-1] > xs[0] + 0.01 and np.all(np.diff(xs) >= -1e-9)  # the scripted +x motion, smoothly
    assert np.abs(np.diff(xs)).max() <= 0.3 * 0.01 + 1e-9  # trajectory.max_lin_vel * command period
    assert all(m.header.frame_id == "fr3_link0" for m in commands.sent)
    grasp = next(c for c in FakeActionClient.instances if c.name == "franka_gripper/grasp")
    assert len(grasp.goals) == 1 and grasp.goals[0].width == 0.0  # closed once, not every step
    node.advance(1.0)
    (status,) = node.publishers["/diagnostics"].sent[-1].status
    assert {kv.key: kv.value for kv in status.values}["gripper.sent/grasp"] == "1"
    # disable: commands stop
    assert call(node, "~/enable", data=False).success
    n = len(commands.sent)
    run(node, 0.3)
    assert len(commands.sent) == n


def test_reflex_from_franka_robot_state_disables(fake_ros):
    node, _shell = make_shell(fake_ros, **{"safety.dry_run": False})
    run(node, 0.3)
    assert call(node, "~/enable", data=True).success
    run(node, 0.5)
    assert node.subscriptions["franka_robot_state_broadcaster/robot_state"][3]  # raw bytes, decoded when due
    reflex = MSGS.make("franka_msgs/msg/FrankaRobotState", robot_mode=4)
    node.deliver("franka_robot_state_broadcaster/robot_state", reflex)
    n = len(node.publishers["cartesian_impedance_controller/target_pose"].sent)
    run(node, 1.0)
    assert len(node.publishers["cartesian_impedance_controller/target_pose"].sent) == n
    (status,) = node.publishers["/diagnostics"].sent[-1].status
    assert status.level == conv.DIAG_ERROR and "REFLEX" in status.message


def test_bad_inputs_are_counted_and_reported_not_fatal(fake_ros):
    node, _shell = make_shell(fake_ros)
    bad = conv.rgb_to_image_msg(MSGS, np.zeros((4, 4, 3), np.uint8), node.t, "cam")
    bad.encoding = "yuv422"
    node.deliver("camera/front/image_raw", bad)
    nan_q = MSGS.make(
        "sensor_msgs/msg/JointState", header=MSGS.header(node.t, ""), name=list(FR3.arm_joint_names),
        position=[np.nan] * 7,
    )  # fmt: skip
    node.deliver("joint_states", nan_q)
    node.deliver("mole_vla/instruction", MSGS.make("std_msgs/msg/String", data="  "))
    run(node, 1.1, feed_every=1000)  # diagnostics tick without good inputs
    (status,) = node.publishers["/diagnostics"].sent[-1].status
    values = {kv.key: kv.value for kv in status.values}
    assert values["input_errors.camera/front"] == "1"
    assert values["input_errors.joint_states"] == "1" and values["input_errors.instruction"] == "1"
    assert any(level == "error" and "yuv422" in text for level, text in node.logs)


def test_shutdown_while_moving_keeps_commanding_until_at_rest(fake_ros, monkeypatch):
    import mole_vla_ros.ros.policy_node as policy_node

    node, shell = make_shell(fake_ros, policy=ScriptedPolicy(grip=1.0), **{"safety.dry_run": False})
    commands = node.publishers["cartesian_impedance_controller/target_pose"]
    run(node, 0.5)
    assert call(node, "~/enable", data=True).success
    run(node, 1.0, follow=commands)
    assert np.linalg.norm(commands.sent[-1].pose.position.x - commands.sent[-2].pose.position.x) > 1e-6  # moving
    monkeypatch.setattr(policy_node.time, "sleep", lambda s: setattr(node, "t", node.t + s))  # node time = wall
    n = len(commands.sent)
    shell.shutdown()
    braking = commands.sent[n - 1 :]
    assert len(braking) > 2, "shutdown stopped the command stream mid-motion"
    xs = np.array([m.pose.position.x for m in braking])
    steps = np.abs(np.diff(xs))
    assert steps[-1] < 1e-9 and np.all(np.diff(steps) <= 1e-9)  # decelerates to rest, never speeds up
    assert shell.runtime.state_name() != "stopping"


def test_pose_in_the_wrong_frame_is_rejected(fake_ros):
    node, shell = make_shell(fake_ros)
    pose = conv.pose_stamped_msg(MSGS, conv.Pose(START, DOWN), node.t, "world")
    node.deliver("franka_robot_state_broadcaster/current_pose", pose)
    assert shell.io.input_errors["ee_pose"] == 1
    assert any("frames.base_frame" in text for _, text in node.logs)


def test_runtime_parameters_instruction_and_active_layers(fake_ros):
    node, shell = make_shell(fake_ros)
    (callback,) = node.param_callbacks
    ok = callback([SimpleNamespace(name="instruction", value="stack the cups")])
    assert ok.successful and shell.runtime.instruction == "stack the cups"
    assert callback([SimpleNamespace(name="policy.active_layers", value=2)]).successful
    assert shell.runtime.active_layers == 2
    assert callback([SimpleNamespace(name="policy.active_layers", value=0)]).successful
    assert shell.runtime.active_layers is None  # 0 = checkpoint default
    too_many = callback([SimpleNamespace(name="policy.active_layers", value=9)])
    assert not too_many.successful and "0..4" in too_many.reason
    frozen = callback([SimpleNamespace(name="safety.dry_run", value=False)])
    assert not frozen.successful and "restart" in frozen.reason
    assert not callback([SimpleNamespace(name="instruction", value=" ")]).successful


def test_reset_clears_markers(fake_ros):
    node, shell = make_shell(fake_ros)
    run(node, 1.0)
    assert shell.outputs.markers(node.t) is not None
    assert call(node, "~/reset").success
    assert shell.outputs.markers(node.t) is None


def test_joint_trajectory_mode_publishes_jtc_commands(fake_ros):
    node, _shell = make_shell(fake_ros, **{"safety.dry_run": False, "output_mode": "joint_trajectory"})
    assert "cartesian_impedance_controller/target_pose" not in node.publishers
    jtc = node.publishers["fr3_arm_controller/joint_trajectory"]
    run(node, 0.4)
    assert call(node, "~/enable", data=True).success
    run(node, 1.5)
    assert jtc.sent, "no JointTrajectory published while enabled"
    msg = jtc.sent[-1]
    assert list(msg.joint_names) == list(FR3.arm_joint_names)
    assert all(len(p.velocities) == 7 and len(p.positions) == 7 for p in msg.points)
    assert node.publishers["~/joint_trajectory_preview"].sent


def test_ee_pose_from_tf_when_no_pose_topic(fake_ros):
    node, shell = make_shell(fake_ros, **{"topics.ee_pose": ""})
    assert "franka_robot_state_broadcaster/current_pose" not in node.subscriptions
    for _ in range(40):
        FakeTfBuffer.stamp = node.t
        node.deliver(
            "camera/front/image_raw", conv.rgb_to_image_msg(MSGS, np.zeros((32, 32, 3), np.uint8), node.t, "c")
        )
        node.deliver(
            "joint_states",
            MSGS.make(
                "sensor_msgs/msg/JointState", header=MSGS.header(node.t, ""), name=list(FR3.arm_joint_names),
                position=READY_Q,
            ),
        )  # fmt: skip
        node.advance(0.034)
    assert shell.io.input_errors["tf"] == 0
    assert call(node, "~/enable", data=True).success  # the core has an EE pose: it came from TF
    assert node.publishers["~/predicted_path"].sent


def test_forward_kinematics_mode_subscribes_no_pose_source(fake_ros):
    node, _ = make_shell(fake_ros, **{"observation.ee_pose_source": "fk"})
    assert "franka_robot_state_broadcaster/current_pose" not in node.subscriptions
    assert not any(t[0] == pytest.approx(1 / 30.0) for t in node.timers)  # no TF polling timer


def test_pose_topic_is_cross_checked_against_tf_once(fake_ros):
    node, shell = make_shell(fake_ros)
    FakeTfBuffer.stamp = node.t
    feed(node, node.t)
    assert shell.tf_check == "ok"
    # a pose topic for another link (10 cm off, e.g. the flange instead of the hand TCP) is reported
    node, shell = make_shell(fake_ros)
    feed(node, node.t, x=START[0] + 0.1)
    assert shell.tf_check.startswith("MISMATCH 10.0 cm")
    assert any(level == "error" and "flange vs hand TCP" in text for level, text in node.logs)
    node.advance(1.0)
    (status,) = node.publishers["/diagnostics"].sent[-1].status
    assert {kv.key: kv.value for kv in status.values}["tf_check"].startswith("MISMATCH")


def test_robot_state_is_decoded_at_a_limited_rate_of_node_time(fake_ros):
    node, shell = make_shell(fake_ros, **{"robot_state_rate_hz": 50.0})
    decoded = []
    shell.io.on_robot_state = decoded.append  # count what reaches the interlock
    move = MSGS.make("franka_msgs/msg/FrankaRobotState", robot_mode=2)

    def stream(ms):  # a 1 kHz stream on the node's clock (sim time under use_sim_time: the same clock replay uses)
        for _ in range(ms):
            node.deliver("franka_robot_state_broadcaster/robot_state", move)
            node.t += 0.001

    stream(100)
    assert len(decoded) == 5 and conv.robot_mode_name(decoded[0]) == "MOVE"  # 50 Hz
    node.t -= 10.0  # a looping `ros2 bag play --clock` jumps back: the interlock keeps reading
    stream(100)
    assert len(decoded) == 10


def test_callbacks_and_timers_are_the_shared_node_io(fake_ros):
    """The shell is wiring only: its subscriptions call NodeIO (what replay drives) and its timers publish what
    NodeIO returns, so replay exercising NodeIO exercises the node."""
    node, shell = make_shell(fake_ros, **{"safety.dry_run": False})
    subs = node.subscriptions
    assert subs["joint_states"][1] == shell.io.on_joint_state
    assert subs["franka_gripper/joint_states"][1] == shell.io.on_gripper_state
    assert subs["mole_vla/instruction"][1] == shell.io.on_instruction
    ticks = []
    control_tick = shell.io.control_tick
    shell.io.control_tick = lambda now: ticks.append(now) or control_tick(now)
    run(node, 0.3)
    assert call(node, "~/enable", data=True).success
    run(node, 0.5)
    assert ticks and ticks[-1] == pytest.approx(node.t)  # called with the node clock
    assert shell.io.last_diagnostics.enabled
    sent = node.publishers["cartesian_impedance_controller/target_pose"].sent
    assert sent and len(sent) <= len(ticks)
