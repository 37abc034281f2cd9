"""ROS-free runtime core: from stamped observations and action chunks to smooth, safe Franka commands.

Modules (import them directly; this package imports nothing so `robot.kinematics` can use `rotations`):
    node_core    PolicyRuntime, the one core the ROS node, offline replay and the simulator drive
    config       RuntimeConfig (validated dataclass tree, from_dict / from_yaml / to_dict / to_flat)
    action_space named action spaces (encode / decode / decode_chunk / encode_trajectory)
    rotations    quaternion (x, y, z, w), rpy (sxyz), rotation vector helpers and continuity fixes
    observation  pairing camera frames with robot state by header stamps; staleness, drops, refusals
    scheduler    due times from observation stamps, dropped past actions, receding horizon, CogACT ensemble
    trajectory   velocity/acceleration-limited, workspace-aware Cartesian tracker at the command rate
    joint_output IK of the tracker's future into JointTrajectory messages (positions + velocities), cached
    gripper      hysteresis + debounce, commands on state changes only
    safety       dry run, enable, interlocks, workspace, max step, hold, rejection counters
    commands     PoseCommand, JointTrajectoryCommand, GripperCommand, ChunkPrediction, Diagnostics, StepOutput
    metered_policy MeteredPolicy, any Policy with a record of each inference's wall time, FLOPs and layers
"""
