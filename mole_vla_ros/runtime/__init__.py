"""ROS-free node core: observation sync, chunk scheduling, trajectory smoothing, IK, gripper, safety."""
