"""Offline rosbag replay through the same node core as the live node."""
