"""mole_vla_ros: the MoLe-VLA policy on a Franka FR3/Panda, as a ROS 2 package with a ROS-free core.

Layout (the folders are the architecture):
    robot/     one definition of the arm: joint names, frames, limits, kinematics
    model/     MoLe-VLA in PyTorch: vision, STAR router, LLaMA layers that are really skipped, DiT head, CogKD
    runtime/   ROS-free node core: observation sync, chunk scheduling, smoothing, IK, gripper, safety
    data/      rosbag2/MCAP episodes, the recorder core, dataset building
    sim/       MuJoCo FR3 tabletop: scripted demonstrations and closed-loop evaluation
    training/  two-stage training (full depth, then STAR + CogKD) and offline evaluation
    replay/    offline rosbag replay through the same node core as the live node
    ros/       the thin rclpy shell (imports rclpy lazily; everything else imports without ROS 2)
"""

__version__ = "0.1.0"
