"""Episodes as rosbag2/MCAP, the recorder core, and episode -> training-sample conversion."""
