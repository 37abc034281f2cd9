"""The robot, defined once: joint names, frames, limits (franka.py) and kinematics."""
