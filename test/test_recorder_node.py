"""The recorder node: imports without ROS 2; with rclpy it records published messages byte-for-byte on command."""

from __future__ import annotations

import enum
import importlib
import json
import sys
import time
import types
import typing

import numpy as np
import pytest

from mole_vla_ros.ros.record_keyboard import command_for_key


def test_modules_import_without_ros():
    for name in ("mole_vla_ros.ros.recorder_node", "mole_vla_ros.ros.record_keyboard"):
        mod = importlib.import_module(name)
        assert callable(mod.main)


def test_keys_map_to_recorder_commands():
    assert command_for_key("r", ask=lambda _: "open the drawer") == "start open the drawer"
    assert command_for_key("r", ask=lambda _: "") == "start"
    assert command_for_key("y") == "save success"
    assert command_for_key("n") == "save failure"
    assert command_for_key("d") == "discard"
    assert command_for_key("i", ask=lambda _: "") is None
    assert command_for_key("x") is None


def test_node_records_serialized_messages(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from mole_vla_ros.data.episode import EpisodeReader, list_episodes
    from mole_vla_ros.ros.recorder_node import build_node

    cfg = tmp_path / "rec.yaml"
    cfg.write_text(
        f"output_dir: {tmp_path / 'out'}\nmin_free_disk_gb: 0\n"
        "topics:\n  - {name: /test_rec/joint_states, type: sensor_msgs/msg/JointState, expected_hz: 100}\n"
    )
    rclpy.init()
    try:
        node, core = build_node(config_file=str(cfg))
        helper = rclpy.create_node("recorder_test_helper")
        pub = helper.create_publisher(JointState, "/test_rec/joint_states", 10)
        cmd = helper.create_publisher(String, "/mole_vla_recorder/command", 10)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.add_node(helper)

        def spin(seconds):
            end = time.time() + seconds
            while time.time() < end:
                executor.spin_once(timeout_sec=0.01)

        spin(1.0)  # discovery
        cmd.publish(String(data="start wave hello"))
        spin(0.5)
        assert core.state == "recording"
        for i in range(20):
            pub.publish(JointState(name=["fr3_joint1"], position=[float(i)]))
            spin(0.01)
        spin(0.3)
        cmd.publish(String(data="save success"))
        spin(0.5)
        (ep,) = list_episodes(tmp_path / "out")
        with EpisodeReader(ep) as r:
            positions = [m.msg.position[0] for m in r.decoded()]
            assert r.success is True and r.instruction == "wave hello"
        assert positions == [float(i) for i in range(20)]
    finally:
        rclpy.shutdown()


# ------------------------------------------------------------------------------------------------ without ROS 2
# Small stand-ins for the rclpy API the node calls (third-party code, not ours), so the node's own wiring runs here:
# which topics it subscribes serialized and with what QoS, what its services and command topic do.


class _Param:
    def __init__(self, value):
        self.value = value


class _FakeNode:
    PARAMS: typing.ClassVar[dict] = {}
    CLOCK_NS: typing.ClassVar[list[int]] = [1_760_000_000_000_000_000]

    def __init__(self, name):
        self.name, self.params, self.subs, self.pubs, self.services, self.timers = name, {}, {}, {}, {}, []
        self.logged = []

    def declare_parameter(self, name, default):
        self.params[name] = self.PARAMS.get(name, default)

    def get_parameter(self, name):
        return _Param(self.params[name])

    def create_subscription(self, msg_type, topic, callback, qos, raw=False):
        self.subs[topic] = (msg_type, callback, qos, raw)

    def create_publisher(self, msg_type, topic, qos):
        pub = types.SimpleNamespace(sent=[])
        pub.publish = pub.sent.append
        self.pubs[topic] = pub
        return pub

    def create_service(self, srv_type, name, callback):
        self.services[name] = (srv_type, callback)

    def create_timer(self, period, callback):
        self.timers.append(callback)

    def get_logger(self):
        return types.SimpleNamespace(info=self.logged.append, warning=self.logged.append)

    def get_clock(self):
        return types.SimpleNamespace(now=lambda: types.SimpleNamespace(nanoseconds=self.CLOCK_NS[0]))

    def get_fully_qualified_name(self):
        return "/" + self.name


def _stand_in_modules():
    class Reliability(enum.Enum):
        RELIABLE, BEST_EFFORT = 1, 2

    class Durability(enum.Enum):
        VOLATILE, TRANSIENT_LOCAL = 1, 2

    class History(enum.Enum):
        KEEP_LAST = 1

    class String:
        def __init__(self, data=""):
            self.data = data

    mods = {n: types.ModuleType(n) for n in (
        "rclpy", "rclpy.node", "rclpy.qos", "std_msgs", "std_msgs.msg", "std_srvs", "std_srvs.srv",
        "rosidl_runtime_py", "rosidl_runtime_py.utilities",
    )}  # fmt: skip
    mods["rclpy.node"].Node = _FakeNode
    mods["rclpy.qos"].QoSProfile = lambda **kw: types.SimpleNamespace(**kw)
    mods["rclpy.qos"].ReliabilityPolicy, mods["rclpy.qos"].DurabilityPolicy = Reliability, Durability
    mods["rclpy.qos"].HistoryPolicy = History
    mods["std_msgs.msg"].String = String
    mods["std_srvs.srv"].Trigger, mods["std_srvs.srv"].SetBool = type("Trigger", (), {}), type("SetBool", (), {})
    mods["rosidl_runtime_py.utilities"].get_message = lambda t: type(t.replace("/", "_"), (), {"TYPE": t})
    return mods


def test_node_wiring_records_raw_bytes_and_answers_services(tmp_path, monkeypatch):
    from mole_vla_ros.data.episode import EpisodeReader, list_episodes
    from mole_vla_ros.data.typestore import default_message, get_typestore

    for name, mod in _stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    from mole_vla_ros.ros.recorder_node import build_node

    cfg = tmp_path / "rec.yaml"
    cfg.write_text(
        f"output_dir: {tmp_path / 'unused'}\nmin_free_disk_gb: 0\nthreaded_writer: false\n"
        "topics:\n"
        "  - {name: joint_states, type: sensor_msgs/msg/JointState, expected_hz: 100}\n"
        "  - {name: camera/wrist/image_raw, type: sensor_msgs/msg/Image, qos: sensor_data, camera: wrist}\n"
    )
    monkeypatch.setattr(_FakeNode, "PARAMS", {"output_dir": str(tmp_path / "out"), "robot_namespace": "fr3"})
    node, _core = build_node(config_file=str(cfg))

    js_type, js_cb, js_qos, js_raw = node.subs["/fr3/joint_states"]
    assert js_raw and js_type.TYPE == "sensor_msgs/msg/JointState" and js_qos.reliability.name == "RELIABLE"
    _, _cam_cb, cam_qos, cam_raw = node.subs["/fr3/camera/wrist/image_raw"]
    assert cam_raw and cam_qos.reliability.name == "BEST_EFFORT" and cam_qos.depth == 10
    instr_qos = node.subs["/fr3/mole_vla/instruction"][2]
    assert instr_qos.durability.name == "TRANSIENT_LOCAL"
    assert set(node.services) == {"~/start", "~/stop", "~/save", "~/discard", "~/label"}

    String = sys.modules["std_msgs.msg"].String
    node.subs["/fr3/mole_vla/instruction"][1](String("insert the peg"))
    resp = types.SimpleNamespace(success=None, message="")
    assert node.services["~/start"][1](None, resp).success, resp.message
    ts = get_typestore()
    sent = []
    for i in range(5):
        _FakeNode.CLOCK_NS[0] += 10_000_000
        raw = bytes(ts.serialize_cdr(default_message("sensor_msgs/msg/JointState", position=np.array([i * 1.0])),
                                     "sensor_msgs/msg/JointState"))  # fmt: skip
        js_cb(raw)
        sent.append((_FakeNode.CLOCK_NS[0], raw))
    node.timers[0]()
    node.subs["~/command"][1](String("bogus"))
    assert json.loads(node.pubs["~/status"].sent[-1].data)["message"].startswith("unknown command 'bogus'")
    label = types.SimpleNamespace(success=None, message="")
    assert node.services["~/label"][1](types.SimpleNamespace(data=True), label).success
    resp = types.SimpleNamespace(success=None, message="")
    assert node.services["~/save"][1](None, resp).success, resp.message
    (ep,) = list_episodes(tmp_path / "out")
    with EpisodeReader(ep) as r:
        assert r.success is True and r.instruction == "insert the peg"
        assert [(m.log_time_ns, m.data) for m in r.messages(["/fr3/joint_states"])] == sent
