"""Pick MuJoCo's headless OpenGL backend before `mujoco` is imported.

MuJoCo reads `MUJOCO_GL` once, at import time, so every module of this package that imports mujoco imports this
one first. The user's choice wins; otherwise EGL (works with Mesa's software renderer, no display needed), and
OSMesa when no libEGL is installed.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys

VALID_BACKENDS = ("egl", "osmesa", "glfw", "glx")


def select_backend() -> str:
    """Set `MUJOCO_GL` (and PyOpenGL's platform) if the user has not, and return the backend in use."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        if chosen not in VALID_BACKENDS:
            raise RuntimeError(
                f"MUJOCO_GL={chosen!r} is not a backend the simulator can render with; expected one of "
                f"{VALID_BACKENDS}. Unset it to let mole_vla_ros pick egl (or osmesa when libEGL is missing)."
            )
        # PyOpenGL fails inside `import mujoco` with an opaque AttributeError when the library is missing.
        needs = {"egl": ("EGL", "libegl1"), "osmesa": ("OSMesa", "libosmesa6")}.get(chosen)
        if needs and not ctypes.util.find_library(needs[0]):
            raise RuntimeError(
                f"MUJOCO_GL={chosen} but lib{needs[0]} is not installed: `apt-get install {needs[1]}`, "
                "or unset MUJOCO_GL to let mole_vla_ros pick an available backend"
            )
        return chosen
    if ctypes.util.find_library("EGL"):
        chosen = "egl"
    elif ctypes.util.find_library("OSMesa"):
        chosen = "osmesa"
    else:
        # Still pick egl: the renderer raises a clear error later, and physics-only use keeps working.
        chosen = "egl"
    if "mujoco" in sys.modules:
        logging.getLogger(__name__).warning(
            "mujoco was imported before mole_vla_ros.sim without MUJOCO_GL set: it picked its display-based default "
            "and headless rendering will fail. Set MUJOCO_GL=%s in the environment, or import mole_vla_ros.sim first.",
            chosen,
        )
    os.environ["MUJOCO_GL"] = chosen
    os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
    return chosen


BACKEND = select_backend()
