"""Build the MuJoCo tabletop: franky-sim's FR3 + Franka hand, a table, two cubes, a scene and a wrist camera.

The FR3 MJCF is edited in memory (MjSpec), never copied:
- names follow franka_description: bodies `fr3_link0..7`, `fr3_hand`, `fr3_leftfinger`/`fr3_rightfinger`, joints
  `fr3_joint1..7`, `fr3_finger_joint1/2`, plus a site `fr3_hand_tcp` 0.1034 m along the hand's z axis;
- the finger joints get the Panda hand's values (no friction loss): the FR3 file gives them the arm's frictionloss
  (1.137 N), which cancels the grip force of the hand's actuator;
- the hand actuator is replaced by a width servo (ctrl = finger opening in metres) with a force limit, so `move` and
  `grasp` behave like franka_gripper's;
- the arm and hand are gravity compensated (gravcomp), as the real robot's controllers are;
- shadows, reflections and MSAA are off: they cost 25x the render time on a CPU and add nothing a policy needs.

World frame = robot base frame (`fr3_link0` at the origin), table top at z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from mole_vla_ros.robot.franka import READY_Q, describe
from mole_vla_ros.sim.assets import fr3_mjcf
from mole_vla_ros.sim.config import SimConfig

# Cube colours (RGBA) by the word an instruction uses for them.
CUBE_COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.12, 0.10, 1.0),
    "green": (0.12, 0.65, 0.15, 1.0),
}
TABLE_HALF = (0.55, 0.6, 0.02)  # x, y, z half sizes of the table top
TABLE_CENTER = (0.45, 0.0, -0.02)
# Menagerie panda.xml finger joints: damping 1, armature 0.1, no frictionloss.
FINGER_DAMPING, FINGER_ARMATURE = 1.0, 0.1
GRIPPER_KP = 2000.0  # N/m on the finger tendon: the grip saturates at the force limit within a few mm of squeeze
GRIPPER_KV = 40.0
VISUAL_GROUP, COLLISION_GROUP = 2, 3  # geom groups of the FR3 file's visual meshes and collision hulls


@dataclass(frozen=True)
class SceneIds:
    """MuJoCo ids resolved once after compiling, so the hot loop never looks names up."""

    arm_qpos: np.ndarray  # [7] qpos addresses of fr3_joint1..7
    arm_dof: np.ndarray  # [7] dof addresses
    finger_qpos: np.ndarray  # [2]
    finger_dof: np.ndarray  # [2]
    arm_act: np.ndarray  # [7] actuator ids
    gripper_act: int
    tcp_site: int
    base_body: int
    hand_body: int
    finger_geoms: frozenset[int]
    cube_body: dict[str, int]
    cube_qpos: dict[str, int]  # qpos address of each cube's free joint (pos 3 + quat 4)
    cube_dof: dict[str, int]
    cube_geom: dict[str, int]
    table_geom: int
    camera: dict[str, int]


def _look_at_xyaxes(eye, target, up=(0.0, 0.0, 1.0)) -> list[float]:
    """MuJoCo `xyaxes` of a camera at `eye` looking at `target` (cameras look along their -z)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, forward)
    return [*x.tolist(), *y.tolist()]


def build_spec(config: SimConfig) -> mujoco.MjSpec:
    """The edited scene as an MjSpec (call `.compile()` for a model; `.to_xml()` to inspect it)."""
    desc = describe(config.robot_type)
    prefix = config.robot_type
    path = fr3_mjcf()
    # Renamed in the text: tendons and equalities refer to joints by name, so editing the spec would leave them
    # pointing at the old names.
    text = path.read_text(encoding="utf-8")
    renames = {
        '"finger_joint1"': f'"{desc.finger_joint_names[0]}"',
        '"finger_joint2"': f'"{desc.finger_joint_names[1]}"',
        '"left_finger"': f'"{prefix}_leftfinger"',
        '"right_finger"': f'"{prefix}_rightfinger"',
        '<body name="hand"': f'<body name="{desc.hand_frame}"',
        '<general class="fr3" name="hand"': f'<general class="fr3" name="{prefix}_gripper"',
    }
    if prefix != "fr3":
        renames['"fr3_'] = f'"{prefix}_'
    for old, new in renames.items():
        if old not in text:
            raise RuntimeError(f"{path} no longer contains {old}; the franky-sim FR3 model changed, pin franky-sim")
        text = text.replace(old, new)
    spec = mujoco.MjSpec.from_string(text)
    spec.meshdir = str(path.parent / "meshes")  # the file says "assets", relative to a layout it was not shipped in
    spec.modelname = f"mole_vla_{prefix}_tabletop"
    spec.option.timestep = config.physics_dt
    for name in desc.finger_joint_names:
        joint = spec.joint(name)
        joint.frictionloss = 0.0
        try:
            joint.damping = [FINGER_DAMPING, 0.0, 0.0]  # mujoco >= 4: polynomial damping coefficients
        except TypeError:
            joint.damping = FINGER_DAMPING  # mujoco 3.x: one coefficient
        joint.armature = FINGER_ARMATURE
    spec.delete(spec.key("home"))  # its qpos has no room for the cubes

    # Collision hulls double as the fast camera model of the robot (SimConfig.robot_meshes="collision"): light grey
    # like the FR3's covers instead of MuJoCo's default mid grey.
    for geom in spec.geoms:
        if geom.group == COLLISION_GROUP:
            geom.rgba = [0.82, 0.82, 0.84, 1.0]

    hand = spec.body(desc.hand_frame)
    hand.add_site(name=desc.tcp_frame, pos=[0.0, 0.0, 0.1034], size=[0.005, 0.005, 0.005], group=4)
    for body in spec.bodies:
        if body.name.startswith(prefix):
            body.gravcomp = 1.0

    # --- gripper: width servo on the finger tendon (tendon length = one finger = width / 2) --------------------
    act = spec.actuator(f"{prefix}_gripper")
    act.ctrlrange = [0.0, 0.08]
    act.gainprm[0] = GRIPPER_KP / 2.0
    act.biasprm[:3] = [0.0, -GRIPPER_KP, -GRIPPER_KV]
    act.forcerange = [-config.grasp_force, config.grasp_force]

    # --- the world --------------------------------------------------------------------------------------------
    spec.visual.quality.shadowsize = 0
    spec.visual.quality.offsamples = 0
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]
    spec.visual.map.znear = 0.01
    world = spec.worldbody
    world.add_light(name="top", pos=[0.4, 0.0, 1.5], dir=[0.0, 0.0, -1.0], castshadow=False, diffuse=[0.5, 0.5, 0.5])
    world.add_geom(
        name="table",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=list(TABLE_HALF),
        pos=list(TABLE_CENTER),
        rgba=[0.55, 0.45, 0.35, 1.0],
        friction=[1.0, 0.005, 0.0001],
    )
    world.add_geom(
        name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], pos=[0, 0, -0.75], rgba=[0.3, 0.3, 0.32, 1]
    )
    half = config.cube_size / 2.0
    for i, (color, rgba) in enumerate(CUBE_COLORS.items()):
        cube = world.add_body(name=f"{color}_cube", pos=[0.5, -0.1 + 0.2 * i, half])
        cube.add_freejoint(name=f"{color}_cube_joint")
        cube.add_geom(
            name=f"{color}_cube",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[half, half, half],
            rgba=list(rgba),
            mass=0.05,
            friction=[1.5, 0.01, 0.001],
            condim=4,  # torsional friction: a held cube does not spin about the fingers' axis
        )

    scene_eye, scene_target = (1.25, 0.5, 0.75), (0.45, 0.0, 0.05)
    world.add_camera(name="scene", pos=list(scene_eye), xyaxes=_look_at_xyaxes(scene_eye, scene_target), fovy=42.0)
    # Wrist camera: on the hand, 7 cm off its axis, looking along the hand's z (the approach direction) tilted 12 deg
    # back toward the fingers, so fingertips and the object below both stay in view (like a D405 on a hand mount).
    hand.add_camera(name="wrist", pos=[0.07, 0.0, 0.02], xyaxes=[0, 1, 0, 0.978, 0, 0.208], fovy=65.0)
    return spec


def build_model(config: SimConfig) -> tuple[mujoco.MjModel, SceneIds]:
    """Compile the scene (about 1 s: mesh loading) and resolve the ids the simulator uses."""
    model = build_spec(config).compile()
    desc = describe(config.robot_type)

    def jid(name):
        return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)

    def bid(name):
        return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)

    arm_j = [jid(n) for n in desc.arm_joint_names]
    fin_j = [jid(n) for n in desc.finger_joint_names]
    fingers = {bid(f"{config.robot_type}_leftfinger"), bid(f"{config.robot_type}_rightfinger")}
    cube_joint = {c: jid(f"{c}_cube_joint") for c in CUBE_COLORS}
    ids = SceneIds(
        arm_qpos=np.array([model.jnt_qposadr[j] for j in arm_j]),
        arm_dof=np.array([model.jnt_dofadr[j] for j in arm_j]),
        finger_qpos=np.array([model.jnt_qposadr[j] for j in fin_j]),
        finger_dof=np.array([model.jnt_dofadr[j] for j in fin_j]),
        arm_act=np.array([mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in desc.arm_joint_names]),
        gripper_act=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, f"{config.robot_type}_gripper"),
        tcp_site=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, desc.tcp_frame),
        base_body=bid(desc.base_frame),
        hand_body=bid(desc.hand_frame),
        finger_geoms=frozenset(g for g in range(model.ngeom) if model.geom_bodyid[g] in fingers),
        cube_body={c: bid(f"{c}_cube") for c in CUBE_COLORS},
        cube_qpos={c: int(model.jnt_qposadr[j]) for c, j in cube_joint.items()},
        cube_dof={c: int(model.jnt_dofadr[j]) for c, j in cube_joint.items()},
        cube_geom={c: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"{c}_cube") for c in CUBE_COLORS},
        table_geom=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "table"),
        camera={c: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, c) for c in ("scene", "wrist")},
    )
    missing = [k for k, v in {"tcp": ids.tcp_site, "gripper": ids.gripper_act}.items() if v < 0]
    if missing or min(arm_j + fin_j) < 0:
        raise RuntimeError(f"the compiled FR3 scene lacks {missing or 'arm/finger joints'}; franky-sim changed?")
    return model, ids


def ready_qpos() -> np.ndarray:
    """The arm's start configuration (franka 'ready')."""
    return np.array(READY_Q, dtype=np.float64)
