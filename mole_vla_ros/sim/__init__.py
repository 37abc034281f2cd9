"""Simulated FR3 tabletop (MuJoCo): scripted demonstrations, closed-loop evaluation, a stand-in robot for ROS.

Importing this package picks MuJoCo's headless OpenGL backend (see `gl.py`) before any of its modules imports
`mujoco`, which reads `MUJOCO_GL` once, at import time.
"""

from mole_vla_ros.sim import gl as _gl  # noqa: F401  (must run before mujoco is imported)
