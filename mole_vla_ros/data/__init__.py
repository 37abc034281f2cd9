"""Episodes as rosbag2/MCAP, the recorder core, and episode -> training-sample conversion.

    typestore.py      the one rosbags type store: ROS 2 Humble + franka_msgs (FrankaRobotState, gripper actions), ...
    episode.py        EpisodeWriter / EpisodeReader / recover_episode: one crash-safe rosbag2 MCAP + episode.json
    mcap_salvage.py   forward scan of an MCAP file a killed writer left behind
    recorder_core.py  RecorderConfig (config/recorder.yaml), RecorderCore: commands, labels, rate/stall/drop checks
    alignment.py      newest-earlier-within-tolerance alignment of multi-rate streams, gap runs
    dataset.py        build_dataset (`mole-vla dataset build`), TrainingDataset
    lerobot_export.py LeRobotDataset v3.0 export
    cli.py            `mole-vla dataset build|recover|info|list`
The ROS shell around the recorder is ros/recorder_node.py (+ ros/record_keyboard.py).
"""
