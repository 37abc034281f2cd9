"""Runtime outputs -> published messages, built as real ROS 2 messages (rosbags typestore) and sent through CDR."""

from __future__ import annotations

import numpy as np
import pytest

from mole_vla_ros.interfaces import Pose
from mole_vla_ros.robot.franka import describe
from mole_vla_ros.ros import conversions as conv
from mole_vla_ros.ros import markers
from mole_vla_ros.ros.markers import MarkerStyle
from mole_vla_ros.ros.messages import RosbagsMessages, stamp_to_seconds
from mole_vla_ros.ros.outputs import OutputBuilder, diagnostic_level
from mole_vla_ros.runtime.commands import (
    ChunkPrediction,
    Diagnostics,
    GripperCommand,
    JointTrajectoryCommand,
    PoseCommand,
    StepOutput,
)

FR3 = describe("fr3")
IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


@pytest.fixture(scope="module")
def msgs() -> RosbagsMessages:
    return RosbagsMessages()


def wire(msgs, msg):
    return msgs.deserialize(msgs.serialize(msg), msg.__msgtype__)


def diagnostics(**kw) -> Diagnostics:
    base = dict(
        stamp=5.0,
        state="running",
        ready=True,
        dry_run=True,
        enabled=False,
        hold_reason="",
        disable_reason="",
        robot_mode="MOVE",
        latency_ms={"total": 41.5, "llm": 20.25},
        rates_hz={"camera/front": 29.9, "command": 100.0},
        counters={"drops/front": 2, "rejected/workspace": 3},
        active_layers=(0, 2, 5),
        num_layers=8,
    )
    base.update(kw)
    return Diagnostics(**base)


def chunk(t0=10.0, n=4, gripper=(1.0, 1.0, 0.0, 0.0), **kw) -> ChunkPrediction:
    positions = np.stack([np.array([0.4 + 0.01 * k, 0.0, 0.3]) for k in range(n)])
    base = dict(
        obs_stamp=t0,
        stamps=t0 + 0.1 * np.arange(1, n + 1),
        positions=positions,
        quaternions=np.tile(IDENTITY, (n, 1)),
        gripper=np.asarray(gripper, dtype=float),
        executed=np.ones(n, dtype=bool),
        frame_id="fr3_link0",
        layer_indices=(0, 2, 5),
        num_layers=8,
        latency_s=0.05,
    )
    base.update(kw)
    return ChunkPrediction(**base)


def step_output(**kw) -> StepOutput:
    base = dict(
        stamp=1.0,
        pose_command=None,
        joint_command=None,
        gripper_command=None,
        preview=None,
        preview_joint=None,
        chunk=None,
        diagnostics=diagnostics(),
    )
    base.update(kw)
    return StepOutput(**base)


def builder(msgs, **style) -> OutputBuilder:
    return OutputBuilder(msgs, MarkerStyle(**style), ee_frame="fr3_hand_tcp")


def test_pose_command_and_preview(msgs):
    pose = Pose(np.array([0.5, 0.1, 0.4]), np.array([1.0, 0.0, 0.0, 0.0]))
    cmd = PoseCommand(stamp=12.25, pose=pose, velocity=np.zeros(6), frame_id="fr3_link0")
    step = step_output(stamp=12.25, pose_command=cmd, preview=cmd)
    out = builder(msgs).commands(step)
    assert set(out) == {"pose_command", "target_pose_preview"}
    msg = wire(msgs, out["pose_command"])
    assert msg.header.frame_id == "fr3_link0" and stamp_to_seconds(msg.header.stamp) == pytest.approx(12.25)
    assert (msg.pose.position.x, msg.pose.position.y, msg.pose.position.z) == (0.5, 0.1, 0.4)
    assert msg.pose.orientation.x == 1.0 and msg.pose.orientation.w == 0.0


def test_dry_run_step_gives_only_the_preview(msgs):
    pose = Pose(np.array([0.5, 0.1, 0.4]), IDENTITY)
    preview = PoseCommand(stamp=1.0, pose=pose, velocity=np.zeros(6), frame_id="fr3_link0")
    out = builder(msgs).commands(step_output(preview=preview))
    assert set(out) == {"target_pose_preview"}


def test_joint_trajectory_has_positions_and_velocities(msgs):
    q = np.tile(np.linspace(-0.5, 0.5, 7), (3, 1)) + np.arange(3)[:, None] * 0.01
    cmd = JointTrajectoryCommand(
        stamp=3.0,
        joint_names=FR3.arm_joint_names,
        time_from_start=np.array([0.02, 0.04, 0.06]),
        positions=q,
        velocities=np.full((3, 7), 0.5),
    )
    out = builder(msgs).commands(step_output(stamp=3.0, joint_command=cmd, preview_joint=cmd))
    assert set(out) == {"joint_trajectory", "joint_trajectory_preview"}
    msg = wire(msgs, out["joint_trajectory"])
    assert list(msg.joint_names) == list(FR3.arm_joint_names)
    assert msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0  # start on receipt
    assert len(msg.points) == 3
    for i, p in enumerate(msg.points):
        np.testing.assert_allclose(p.positions, q[i])
        np.testing.assert_allclose(p.velocities, 0.5)
        assert stamp_to_seconds(p.time_from_start) == pytest.approx(0.02 * (i + 1))


@pytest.mark.parametrize(
    ("times", "positions", "message"),
    [
        ([0.02, 0.02], np.zeros((2, 7)), "strictly increasing"),
        ([0.02], np.full((1, 7), np.nan), "non-finite"),
        ([0.02, 0.04], np.zeros((3, 7)), r"shape \(2 points, 7 joints\)"),
    ],
)
def test_bad_joint_trajectories_are_refused(msgs, times, positions, message):
    with pytest.raises(ValueError, match=message):
        conv.joint_trajectory_msg(msgs, FR3.arm_joint_names, times, positions, np.zeros_like(positions))


def test_gripper_goals(msgs):
    b = builder(msgs)
    kind, goal = b.gripper_goal(GripperCommand(1.0, "move", True, 0.08, 0.1))
    assert kind == "move" and wire(msgs, goal).width == 0.08
    kind, goal = b.gripper_goal(GripperCommand(1.0, "grasp", False, 0.0, 0.05, 30.0, 0.005, 0.08))
    goal = wire(msgs, goal)
    assert kind == "grasp" and goal.force == 30.0 and goal.epsilon.outer == 0.08 and goal.speed == 0.05
    with pytest.raises(ValueError, match="'move' or 'grasp'"):
        b.gripper_goal(GripperCommand(1.0, "homing", True, 0.08, 0.1))
    with pytest.raises(ValueError, match="width"):
        b.gripper_goal(GripperCommand(1.0, "move", True, 0.2, 0.1))


def test_chunk_messages(msgs):
    out = builder(msgs).chunk(chunk())
    traj = wire(msgs, out["predicted_trajectory"])
    assert list(traj.joint_names) == ["fr3_hand_tcp"] and traj.header.frame_id == "fr3_link0"
    assert [round(stamp_to_seconds(p.time_from_start), 6) for p in traj.points] == [0.1, 0.2, 0.3, 0.4]
    assert traj.points[3].transforms[0].translation.x == pytest.approx(0.43)
    path = wire(msgs, out["predicted_path"])
    assert len(path.poses) == 4 and stamp_to_seconds(path.poses[0].header.stamp) == pytest.approx(10.1)
    layers, probs = wire(msgs, out["layers"]), wire(msgs, out["layer_probs"])
    assert layers.data.tolist() == [0, 2, 5] and layers.layout.dim[0].label == "active_layers_of_8"
    assert probs.data.shape == (8,) and probs.data[[0, 2, 5]].tolist() == [1.0, 1.0, 1.0]


def test_router_probabilities_are_published_when_the_runtime_has_them(msgs):
    probs = np.linspace(0.05, 0.2, 8)
    out = builder(msgs).chunk(chunk(layer_probs=probs))
    np.testing.assert_allclose(wire(msgs, out["layer_probs"]).data, probs, rtol=1e-6)
    _idx, prob_msg = conv.layer_choice_msgs(msgs, (1, 7), probs)
    np.testing.assert_allclose(wire(msgs, prob_msg).data, probs, rtol=1e-6)
    with pytest.raises(ValueError, match="outside the router's 8 layers"):
        conv.layer_choice_msgs(msgs, (8,), probs)


def test_markers_line_strip_and_spheres_coloured_by_gripper_fading_with_age(msgs):
    b = builder(msgs, history=2, fade_seconds=1.0, min_alpha=0.1)
    assert b.markers(0.0) is None
    b.chunk(chunk(t0=10.0, gripper=(1.0, 1.0, 0.0, 0.0)))
    b.chunk(chunk(t0=10.5, gripper=(0.0, 0.0, 0.0, 1.0)))
    arr = wire(msgs, b.markers(now=10.5))
    M = "visualization_msgs/msg/Marker"
    line_strip, sphere_list = msgs.constant(M, "LINE_STRIP"), msgs.constant(M, "SPHERE_LIST")
    delete = msgs.constant(M, "DELETE")
    lines = [m for m in arr.markers if m.type == line_strip and m.action != delete]
    spheres = [m for m in arr.markers if m.type == sphere_list and m.action != delete]
    assert len(lines) == 2 and len(spheres) == 2  # one sphere list per chunk (every step executed)
    assert all(m.header.frame_id == "fr3_link0" and m.frame_locked for m in lines + spheres)
    assert len(lines[0].points) == 4 and lines[0].points[2].x == pytest.approx(0.42)
    old_alpha, new_alpha = lines[0].color.a, lines[1].color.a
    assert new_alpha == pytest.approx(1.0) and old_alpha == pytest.approx(markers.age_alpha(0.5, b.style))
    assert len(spheres[0].points) == len(spheres[0].colors) == 4
    colours = [(round(c.r, 2), round(c.g, 2)) for c in spheres[0].colors]
    open_rg = (round(markers.OPEN_COLOR[0], 2), round(markers.OPEN_COLOR[1], 2))
    closed_rg = (round(markers.CLOSED_COLOR[0], 2), round(markers.CLOSED_COLOR[1], 2))
    assert colours == [open_rg, open_rg, closed_rg, closed_rg]
    assert spheres[0].colors[0].a == pytest.approx(old_alpha)
    assert stamp_to_seconds(spheres[0].lifetime) == pytest.approx(1.0)
    # steps the scheduler skips go into a second, smaller and fainter sphere list
    b.chunk(chunk(t0=10.5, executed=np.array([False, True, True, True])))
    arr = wire(msgs, b.markers(now=10.5))
    run, skipped = [m for m in arr.markers if m.type == sphere_list and m.action != delete][-2:]
    assert len(run.points) == 3 and len(skipped.points) == 1 and skipped.ns.endswith("skipped")
    assert skipped.scale.x == pytest.approx(0.5 * run.scale.x)
    assert skipped.colors[0].a == pytest.approx(0.5 * run.colors[0].a)
    # an empty skipped list is sent as DELETE of that slot, never as an empty SPHERE_LIST
    assert [m for m in arr.markers if m.action == delete]
    assert not [m for m in arr.markers if m.type == sphere_list and m.action != delete and not m.points]
    # a further chunk takes the oldest slot: ids stay bounded by the history
    b.chunk(chunk(t0=11.0))
    arr = b.markers(now=11.0)
    assert sorted({m.id for m in arr.markers if m.type == line_strip}) == [0, 1]


def test_diagnostics_message(msgs):
    msg = wire(msgs, builder(msgs).diagnostics(diagnostics(), extra={"subscriptions.cameras": 1}))
    (status,) = msg.status
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == conv.DIAG_OK and "dry run" in status.message
    assert values["dry_run"] == "True" and values["ready"] == "True"
    assert values["active_layers"] == "3/8" and values["latency_ms.total"] == "41.5"
    assert values["rate_hz.camera/front"] == "29.9" and values["count.rejected/workspace"] == "3"
    assert values["subscriptions.cameras"] == "1"


@pytest.mark.parametrize(
    ("kw", "level", "text"),
    [
        ({"ready": False, "state": "warming_up"}, conv.DIAG_WARN, "not ready"),
        ({"state": "holding", "hold_reason": "watchdog"}, conv.DIAG_WARN, "holding pose: watchdog"),
        ({"state": "disabled", "disable_reason": "robot mode REFLEX"}, conv.DIAG_ERROR, "REFLEX"),
        ({"state": "running", "enabled": True, "dry_run": False}, conv.DIAG_OK, "actuating, enabled"),
        ({"state": "stopping", "disable_reason": "operator", "dry_run": False}, conv.DIAG_WARN, "braking to rest"),
    ],
)
def test_diagnostic_levels(kw, level, text):
    got_level, message = diagnostic_level(diagnostics(**kw))
    assert got_level == level and text in message


def test_node_messages_written_to_mcap_decode_with_an_independent_reader(msgs, tmp_path):
    """Replay writes the node's messages into rosbag2 MCAP; mcap_ros2 (not rosbags) must decode them identically."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.rosbag2 import StoragePlugin, Writer

    b = builder(msgs)
    pose = Pose(np.array([0.5, 0.1, 0.4]), IDENTITY)
    preview = PoseCommand(stamp=10.0, pose=pose, velocity=np.zeros(6), frame_id="fr3_link0")
    produced = {"/mole_vla_policy/target_pose_preview": b.commands(step_output(preview=preview))["target_pose_preview"]}
    chunk_out = b.chunk(chunk())
    produced["/mole_vla_policy/predicted_path"] = chunk_out["predicted_path"]
    produced["/mole_vla_policy/predicted_trajectory"] = chunk_out["predicted_trajectory"]
    produced["/mole_vla_policy/active_layers"] = chunk_out["layers"]
    produced["/mole_vla_policy/markers"] = b.markers(10.2)
    produced["/diagnostics"] = b.diagnostics(diagnostics())
    bag = tmp_path / "out"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        for i, (topic, msg) in enumerate(produced.items()):
            conn = writer.add_connection(topic, msg.__msgtype__, typestore=msgs.typestore)
            writer.write(conn, 10_000_000_000 + i, msgs.serialize(msg))
    (mcap_file,) = bag.glob("*.mcap")
    with mcap_file.open("rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        decoded = {channel.topic: ros_msg for _, channel, _, ros_msg in reader.iter_decoded_messages()}
    assert set(decoded) == set(produced)
    path = decoded["/mole_vla_policy/predicted_path"]
    assert [p.pose.position.x for p in path.poses] == pytest.approx([0.4, 0.41, 0.42, 0.43])
    assert list(decoded["/mole_vla_policy/active_layers"].data) == [0, 2, 5]
    markers_back = decoded["/mole_vla_policy/markers"].markers
    assert len(markers_back) == len(produced["/mole_vla_policy/markers"].markers)
    assert markers_back[0].frame_locked and markers_back[0].header.frame_id == "fr3_link0"
    status = decoded["/diagnostics"].status[0]
    assert status.name == "mole_vla_policy: policy" and status.hardware_id == "fr3"
