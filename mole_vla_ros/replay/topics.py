"""Which bag topic feeds which input of the node, and under which names the node's outputs are written.

The node's topic parameters (`topics.*` in config/mole_vla.yaml) are relative names, resolved in the node's
namespace. A bag stores absolute names, possibly under a robot namespace (`/fr3/joint_states`). `plan_inputs`
resolves each parameter the way ROS would (`/<namespace>/<name>`). Without --namespace, when the node's topics are
not at the root of the bag, it looks for the one namespace under which all of them exist (`detect_namespace`).
Ambiguity, absence or a wrong message type is an error that lists what the bag has.

Outputs keep the node's names (`~/predicted_path` -> `/<ns>/mole_vla_policy/predicted_path`), except the command
streams: they go under `/replay/...`, so `ros2 bag play` of a replay next to a real robot can never move it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mole_vla_ros.replay.bag import InputBag
from mole_vla_ros.replay.errors import MissingTopicsError, UnknownMessageTypeError
from mole_vla_ros.robot.franka import Topics
from mole_vla_ros.ros.params import NODE_NAME, NodeSettings
from mole_vla_ros.ros.policy_node import DIAGNOSTICS_TOPIC, OUTPUT_TOPICS, OUTPUT_TYPES

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
STRING = "std_msgs/msg/String"
FLOAT32 = "std_msgs/msg/Float32"
ROBOT_STATE = "franka_msgs/msg/FrankaRobotState"
REPLAY_PREFIX = "/replay"


def absolute(name: str, namespace: str = "") -> str:
    """A relative topic name resolved in `namespace` ("/" + ns + "/" + name); absolute names pass unchanged."""
    if name.startswith("/"):
        return name
    ns = namespace.strip("/")
    return f"/{ns}/{name}" if ns else f"/{name}"


def private(name: str, namespace: str = "") -> str:
    """`~/x` of node mole_vla_policy in `namespace` -> /<ns>/mole_vla_policy/x."""
    return absolute(f"{NODE_NAME}/{name[2:]}" if name.startswith("~/") else name, namespace)


@dataclass
class InputPlan:
    """Bag topics for each node input. None = not in the bag (and not needed)."""

    cameras: dict[str, str]  # camera name -> topic
    compressed: bool
    joint_states: str | None
    gripper_state: str | None
    ee_pose: str | None
    tf: str | None  # /tf when the EE pose comes from TF (topics.ee_pose: "")
    robot_state: str | None
    instruction: str | None
    # not node inputs: what the demonstrator commanded, used to score the gripper predictions
    teleop_gripper: str | None = None
    namespace: str = ""
    notes: list[str] = field(default_factory=list)

    def dispatch_topics(self) -> set[str]:
        """Every topic whose messages are decoded and handed to the node."""
        topics = set(self.cameras.values())
        for t in (self.joint_states, self.gripper_state, self.ee_pose, self.tf, self.robot_state, self.instruction):
            if t:
                topics.add(t)
        return topics


class _Resolver:
    def __init__(self, bag: InputBag, namespace: str):
        self.bag = bag
        self.namespace = namespace
        self.notes: list[str] = []

    def find(self, name: str) -> str | None:
        if not name:
            return None
        exact = absolute(name, self.namespace)
        return exact if exact in self.bag.topics else None

    def check_type(self, topic: str | None, expected: tuple[str, ...], what: str) -> None:
        if topic is None:
            return
        got = self.bag.topics[topic].msgtype
        if got not in expected:
            raise UnknownMessageTypeError(
                f"{what} topic {topic!r} carries {got}, but the node reads {' or '.join(expected)} there; point "
                f"the topic parameter at the right topic (--params / --camera)"
            )


def _required_names(settings: NodeSettings) -> list[str]:
    topics, rt = settings.node.topics, settings.runtime
    suffix = "/compressed" if topics.camera_transport == "compressed" else ""
    names = [f"{t}{suffix}" for t in topics.cameras]
    if rt.observation.ee_pose_source == "topic" and topics.ee_pose:
        names.append(topics.ee_pose)
    names.append(topics.joint_states)
    return [n for n in names if n and not n.startswith("/")]


def detect_namespace(bag: InputBag, names: list[str]) -> str | None:
    """The one namespace N such that /N/<name> is in the bag for every name found at all; None if none or several."""
    common: set[str] | None = None
    for name in names:
        suffix = "/" + name.strip("/")
        prefixes = {t[: -len(suffix)] for t in bag.topics if t.endswith(suffix) and len(t) > len(suffix)}
        if not prefixes:
            continue
        common = prefixes if common is None else common & prefixes
    if not common or len(common) != 1:
        return None
    return common.pop().strip("/")


def plan_inputs(bag: InputBag, settings: NodeSettings, namespace: str = "") -> InputPlan:
    """Resolve every input the node subscribes to against the bag. Raises MissingTopicsError for a needed topic
    that is absent (listing the bag's topics) and UnknownMessageTypeError for a topic of the wrong type."""
    topics, rt = settings.node.topics, settings.runtime
    notes: list[str] = []
    required = _required_names(settings)
    if not namespace and not all(absolute(n) in bag.topics for n in required):
        found = detect_namespace(bag, required)
        if found:
            namespace = found
            notes.append(f"namespace {found!r} taken from the bag (its topics live under /{found}/)")
    r = _Resolver(bag, namespace)
    r.notes.extend(notes)
    compressed = topics.camera_transport == "compressed"
    missing: list[str] = []

    cameras: dict[str, str] = {}
    for name, topic in zip(rt.observation.camera_names, topics.cameras):
        wanted = f"{topic}/compressed" if compressed else topic
        found = r.find(wanted)
        if found is None:
            missing.append(f"camera {name!r}: {absolute(wanted, namespace)} ({COMPRESSED if compressed else IMAGE})")
        else:
            r.check_type(found, (COMPRESSED,) if compressed else (IMAGE,), f"camera {name!r}")
            cameras[name] = found

    ee_pose = tf = None
    if rt.observation.ee_pose_source == "topic":
        if topics.ee_pose:
            ee_pose = r.find(topics.ee_pose)
            if ee_pose is None:
                missing.append(f"EE pose: {absolute(topics.ee_pose, namespace)} ({POSE_STAMPED})")
        else:
            tf = r.find("/tf")
            if tf is None:
                missing.append(f"EE pose from TF: /tf ({TF_MESSAGE}) (topics.ee_pose is empty)")
    r.check_type(ee_pose, (POSE_STAMPED,), "EE pose")
    r.check_type(tf, (TF_MESSAGE,), "TF")

    joint_states = r.find(topics.joint_states)
    needs_joints = rt.observation.ee_pose_source == "fk" or rt.output_mode == "joint_trajectory"
    if joint_states is None and needs_joints:
        why = (
            "observation.ee_pose_source is fk"
            if rt.observation.ee_pose_source == "fk"
            else "output_mode joint_trajectory"
        )
        missing.append(f"joint states ({why}): {absolute(topics.joint_states, namespace)} ({JOINT_STATE})")
    r.check_type(joint_states, (JOINT_STATE,), "joint state")

    if missing:
        raise MissingTopicsError(
            f"bag {str(bag.path)!r} lacks topic(s) the node needs:\n  - "
            + "\n  - ".join(missing)
            + f"\nThe bag has:\n{bag.describe()}\n"
            "Map the topics with --camera NAME=TOPIC, --namespace NS or a params file (--params) that sets topics.*"
        )

    gripper_state = r.find(topics.gripper_state) if topics.gripper_state else None
    r.check_type(gripper_state, (JOINT_STATE,), "gripper state")
    robot_state = r.find(topics.robot_state) if topics.robot_state else None
    r.check_type(robot_state, (ROBOT_STATE,), "robot state")
    instruction = r.find(topics.instruction)
    r.check_type(instruction, (STRING,), "instruction")
    teleop = r.find(Topics.TELEOP_GRIPPER)
    if teleop is not None and bag.topics[teleop].msgtype != FLOAT32:
        teleop = None
    return InputPlan(
        cameras=cameras,
        compressed=compressed,
        joint_states=joint_states,
        gripper_state=gripper_state,
        ee_pose=ee_pose,
        tf=tf,
        robot_state=robot_state,
        instruction=instruction,
        teleop_gripper=teleop,
        namespace=namespace,
        notes=r.notes,
    )


@dataclass(frozen=True)
class OutputTopics:
    """Output key (policy_node.OUTPUT_TOPICS keys + commands + diagnostics + gripper goals) -> (topic, type)."""

    topics: dict[str, tuple[str, str]]

    def __getitem__(self, key: str) -> tuple[str, str]:
        return self.topics[key]


def output_topics(settings: NodeSettings, namespace: str = "") -> OutputTopics:
    """The names the live node publishes under, with command streams moved under /replay (see module docstring)."""
    t = settings.node.topics
    out = {key: (private(name, namespace), OUTPUT_TYPES[key]) for key, name in OUTPUT_TOPICS.items()}
    out["diagnostics"] = (DIAGNOSTICS_TOPIC, "diagnostic_msgs/msg/DiagnosticArray")
    out["pose_command"] = (REPLAY_PREFIX + absolute(t.pose_command, namespace), OUTPUT_TYPES["pose_command"])
    out["joint_trajectory"] = (
        REPLAY_PREFIX + absolute(t.joint_trajectory, namespace),
        OUTPUT_TYPES["joint_trajectory"],
    )
    gripper_ns = absolute(t.gripper_actions or "franka_gripper", namespace)
    out["gripper/move"] = (f"{REPLAY_PREFIX}{gripper_ns}/move/goal", "franka_msgs/action/Move_Goal")
    out["gripper/grasp"] = (f"{REPLAY_PREFIX}{gripper_ns}/grasp/goal", "franka_msgs/action/Grasp_Goal")
    return OutputTopics(out)
