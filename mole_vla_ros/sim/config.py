"""`SimConfig`: the knobs of the simulated FR3 tabletop, validated when built."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

CAMERA_NAMES = ("scene", "wrist")
ROBOT_MESHES = ("collision", "visual")


@dataclass
class SimConfig:
    """Simulator settings. Defaults give a 10 Hz control loop with two 128x128 cameras (the fast test setting).

    robot_type:     "fr3" (the MJCF is an FR3; "panda" only renames frames and joints for panda_* users).
    control_hz:     rate at which observations are produced and pose/gripper commands are applied (10-20 Hz like
                    DROID / Diffusion Policy setups; must divide the physics rate).
    physics_dt:     MuJoCo time step in seconds.
    image_size:     square camera resolution in pixels.
    cameras:        which of the cameras ("scene", "wrist") are rendered; empty renders none (physics only).
    render:         False skips rendering entirely (experts and tests that need no pixels run faster).
    cube_size:      edge of the cubes in metres.
    max_joint_speed: largest joint speed (rad/s) the IK may command; a far target is approached at this speed
                    instead of jumping, as a Cartesian impedance controller clips its error (FR3 limit 2.62).
    gripper_speed:  finger travel speed for `move` commands (m/s, both fingers together), franka_gripper default 0.1.
    grasp_force:    force limit of the simulated hand when grasping (N); the Franka Hand holds 70 N continuous.
    robot_meshes:   what the cameras see of the robot: "collision" (low-poly hulls, about 10x faster to render on a
                    CPU; the default for data and evaluation) or "visual" (the detailed FR3 meshes, for videos).
                    Record and evaluate with the same choice: it changes the pixels a policy learns from.
    """

    robot_type: str = "fr3"
    control_hz: float = 10.0
    physics_dt: float = 0.002
    image_size: int = 128
    cameras: tuple[str, ...] = CAMERA_NAMES
    render: bool = True
    cube_size: float = 0.04
    max_joint_speed: float = 1.5
    gripper_speed: float = 0.1
    grasp_force: float = 40.0
    robot_meshes: str = "collision"

    def __post_init__(self):
        if self.robot_type not in ("fr3", "panda"):
            raise ValueError(f"robot_type must be 'fr3' or 'panda', got {self.robot_type!r}")
        if not 1.0 <= self.control_hz <= 100.0:
            raise ValueError(
                f"control_hz={self.control_hz} is outside [1, 100] Hz; real VLA setups run at 5-30 Hz, use e.g. 10 or 20"
            )
        if not 0.0002 <= self.physics_dt <= 0.01:
            raise ValueError(f"physics_dt={self.physics_dt} s is outside [0.0002, 0.01]; 0.002 is MuJoCo's default")
        substeps = 1.0 / (self.control_hz * self.physics_dt)
        if abs(substeps - round(substeps)) > 1e-6:
            raise ValueError(
                f"control period 1/{self.control_hz} s is not a whole number of physics steps of {self.physics_dt} s "
                f"({substeps:.3f}); pick control_hz so that 1/(control_hz*physics_dt) is an integer (e.g. 10, 20, 25)"
            )
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size={self.image_size} px is outside [32, 1024]; the model uses 224, tests 64-128")
        self.cameras = tuple(self.cameras)
        unknown = [c for c in self.cameras if c not in CAMERA_NAMES]
        if unknown or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras={self.cameras} must be distinct names from {CAMERA_NAMES}")
        if not 0.02 <= self.cube_size <= 0.07:
            raise ValueError(f"cube_size={self.cube_size} m must fit the 0.08 m gripper: use 0.02-0.07")
        if not 0.0 < self.max_joint_speed <= 2.62:
            raise ValueError(
                f"max_joint_speed={self.max_joint_speed} rad/s must be in (0, 2.62] (the FR3's slowest joint limit)"
            )
        if not 0.01 <= self.gripper_speed <= 0.2:
            raise ValueError(f"gripper_speed={self.gripper_speed} m/s is outside the Franka Hand's [0.01, 0.2]")
        if not 1.0 <= self.grasp_force <= 140.0:
            raise ValueError(f"grasp_force={self.grasp_force} N is outside [1, 140] (the Franka Hand's peak)")

        if self.robot_meshes not in ROBOT_MESHES:
            raise ValueError(f"robot_meshes={self.robot_meshes!r} must be one of {ROBOT_MESHES}")

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return round(1.0 / (self.control_hz * self.physics_dt))

    @property
    def control_dt(self) -> float:
        return 1.0 / self.control_hz

    def to_dict(self) -> dict:
        out = asdict(self)
        out["cameras"] = list(self.cameras)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SimConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SimConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)
