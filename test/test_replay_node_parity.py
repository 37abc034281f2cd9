"""Replay publishes what the live node publishes: the same bag through `mole-vla replay` and through the node's own
shell (`PolicyNodeShell`, driven by the rclpy stand-ins of test_ros_node_shell.py, messages delivered in bag order,
its timers stepped on bag time, ~/enable called after the first control tick as replay does) gives the same topics,
the same message counts, the same predicted chunks, the same command stream and the same gripper goals.

Both shells drive the same `ros.node_io.NodeIO` (message conversions, runtime steps, output messages, counters), so
for that part this is close to true by construction. What it still guards is the part each shell does itself: which
bag topic reaches which input, timer order and phase on the clock (ticks at start + k * period; a message at a tick's
instant is handed over first), when ~/enable happens, the clock handed to NodeIO (the node clock = bag time under
use_sim_time), the output topic names, and the two message backends (rclpy-style classes vs rosbags dataclasses).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from test_ros_node_shell import MSGS, FakeActionClient, FakeNode, fake_ros  # noqa: F401  (fixture)

from mole_vla_ros.interfaces import PolicyOutput
from mole_vla_ros.replay.bag import InputBag
from mole_vla_ros.replay.engine import ReplayOptions, run_replay
from mole_vla_ros.replay.synthetic import write_synthetic_bag
from mole_vla_ros.ros.params import load_settings

DT = 0.01  # trajectory.command_rate_hz = 100


class DriftPolicy:
    """Moves +x by 3 mm per action, closes the gripper from the 3rd inference on; fixed STAR choice."""

    camera_names = ("scene", "wrist")
    chunk_size = 8
    action_space = "delta_xyz_abs_rpy"
    control_dt = 0.1
    image_size = 16
    num_layers = 4

    def __init__(self):
        self.calls = 0

    def infer(self, inp):
        self.calls += 1
        grip = 1.0 if self.calls < 5 else 0.0  # the first 2 calls are the warm-up
        actions = np.tile([0.003, 0.0, 0.0, np.pi, 0.0, 0.0, grip], (self.chunk_size, 1))
        return PolicyOutput(actions, (1, 3), np.array([0.1, 0.4, 0.1, 0.4]), 4, {"total": 1.0})


PARAMS = (
    "mole_vla_policy:\n  ros__parameters:\n"
    "    topics: {cameras: [camera/scene/image_raw, camera/wrist/image_raw]}\n"
    "    observation: {camera_names: [scene, wrist], camera_rate_hz: 10.0}\n"
    "    safety: {dry_run: false}\n"
)


def _node_run(bag, params):
    """The bag through PolicyNodeShell: {topic: [messages]} and the gripper goals it sent."""
    from mole_vla_ros.ros.policy_node import PolicyNodeShell

    settings = load_settings(params)
    node = FakeNode()
    PolicyNodeShell(node, settings, policy=DriftPolicy(), executor="inline", factory=MSGS)  # wires itself to node
    with InputBag(bag) as b:
        # decoded with the node's own message classes (AnyReader builds its own)
        messages = [(t, c.topic.lstrip("/"), MSGS.deserialize(bytes(raw), c.msgtype)) for c, t, raw in b.messages()]
        start, end = b.start_ns * 1e-9, b.end_ns * 1e-9
    # the node's timers on bag time, fired like an executor under `ros2 bag play --clock` (and like replay): due
    # times start + n * period in integer nanoseconds; a timer due strictly before a message fires first
    start_ns, end_ns = round(start * 1e9), round(end * 1e9)
    clock = SimpleNamespace(ns=start_ns)
    node.get_clock = lambda: SimpleNamespace(now=lambda: SimpleNamespace(nanoseconds=clock.ns))
    timers = [[round(period * 1e9), callback, 1] for period, callback, _ in node.timers]
    enabled = False

    def fire_until(t_end_ns: int, inclusive: bool) -> None:
        nonlocal enabled
        while True:
            order, timer = min(enumerate(timers), key=lambda x: (start_ns + x[1][2] * x[1][0], x[0]))
            due = start_ns + timer[2] * timer[0]
            if not (due <= t_end_ns if inclusive else due < t_end_ns):
                return
            clock.ns = due
            timer[1]()
            timer[2] += 1
            if order == 0 and not enabled:  # ~/enable right after the first control tick, as replay does
                _, callback = node.services["~/enable"]
                enabled = callback(SimpleNamespace(data=True), SimpleNamespace(success=None, message=None)).success

    for t_ns, topic, msg in messages:
        fire_until(t_ns, inclusive=False)
        if topic in node.subscriptions:
            node.deliver(topic, msg)
    # replay keeps ticking after the last message for the simulated latency + one action period (0.1 + 0.1 s)
    fire_until(end_ns + round(0.2 * 1e9), inclusive=True)
    assert enabled
    published = {topic: pub.sent for topic, pub in node.publishers.items()}
    goals = [(c.name.rsplit("/", 1)[-1], g) for c in FakeActionClient.instances for g in c.goals]
    return published, goals


def _replay_run(bag, params, out):
    result = run_replay(ReplayOptions(bag=bag, out=out, params=params, progress=False), policy=DriftPolicy())
    published: dict[str, list] = {}
    with InputBag(out / "bag") as b:
        for c, _t, raw in b.messages():
            published.setdefault(c.topic, []).append(b.deserialize(raw, c.msgtype))
    return result, published


def _positions(msgs):
    return np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for m in msgs])


def test_replay_and_the_node_shell_publish_the_same(tmp_path, fake_ros):  # noqa: F811
    bag = write_synthetic_bag(tmp_path / "bag", duration_s=2.5)
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    node_pub, node_goals = _node_run(bag, params)
    result, replay_pub = _replay_run(bag, params, tmp_path / "out")

    pairs = {
        "~/target_pose_preview": "/mole_vla_policy/target_pose_preview",
        "cartesian_impedance_controller/target_pose": "/replay/cartesian_impedance_controller/target_pose",
        "~/predicted_path": "/mole_vla_policy/predicted_path",
        "~/predicted_trajectory": "/mole_vla_policy/predicted_trajectory",
        "~/active_layers": "/mole_vla_policy/active_layers",
        "~/layer_probs": "/mole_vla_policy/layer_probs",
        "~/markers": "/mole_vla_policy/markers",
        "/diagnostics": "/diagnostics",
    }
    for node_topic, replay_topic in pairs.items():
        assert len(node_pub[node_topic]) == len(replay_pub.get(replay_topic, [])), node_topic
    assert len(replay_pub["/mole_vla_policy/predicted_path"]) >= 3

    # the same command stream and previews, sample by sample
    for node_topic, replay_topic in list(pairs.items())[:2]:
        np.testing.assert_allclose(_positions(node_pub[node_topic]), _positions(replay_pub[replay_topic]), atol=1e-9)
    # the same predicted chunks
    for a, b in zip(node_pub["~/predicted_path"], replay_pub["/mole_vla_policy/predicted_path"]):
        np.testing.assert_allclose(_positions(a.poses), _positions(b.poses), atol=1e-9)
        assert (a.header.stamp.sec, a.header.stamp.nanosec) == (b.header.stamp.sec, b.header.stamp.nanosec)
    for a, b in zip(node_pub["~/layer_probs"], replay_pub["/mole_vla_policy/layer_probs"]):
        np.testing.assert_allclose(a.data, b.data)

    # the same diagnostics, value by value, but for wall-clock step latencies and the node's one-time TF check
    def values(msg):
        (status,) = msg.status
        return {kv.key: kv.value for kv in status.values if not kv.key.startswith(("latency_ms.step/", "tf_check"))}

    assert replay_pub["/diagnostics"]
    for a, b in zip(node_pub["/diagnostics"], replay_pub["/diagnostics"]):
        assert values(a) == values(b)
        assert (a.status[0].level, a.status[0].message) == (b.status[0].level, b.status[0].message)
    assert values(replay_pub["/diagnostics"][-1])["gripper.sent/grasp"] == "1"  # counted alike by both shells
    # the same gripper goals (the node sends them to franka_gripper action servers, replay writes them)
    replay_goals = [
        (topic.split("/")[-2], m) for topic, msgs in replay_pub.items() if topic.startswith("/replay/franka_gripper")
        for m in msgs
    ]  # fmt: skip
    assert sorted(k for k, _ in node_goals) == sorted(k for k, _ in replay_goals)
    assert [k for k, _ in node_goals] == ["grasp"] and result.gripper_commands[0].action == "grasp"
