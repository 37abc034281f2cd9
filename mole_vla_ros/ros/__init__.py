"""The thin rclpy shell. Modules here import rclpy inside functions, so they import (and skip) without ROS 2."""
