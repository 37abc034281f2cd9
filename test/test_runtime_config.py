"""RuntimeConfig: defaults from the robot type, round trips through dict / flat ROS parameters / YAML, clear errors."""

import pytest
import yaml

from mole_vla_ros.runtime.config import RuntimeConfig


def test_defaults_are_valid_and_safe():
    cfg = RuntimeConfig()
    assert cfg.safety.dry_run is True  # nothing moves until someone turns dry run off
    assert cfg.frames.base_frame == "fr3_link0" and cfg.frames.ee_frame == "fr3_hand_tcp"
    assert cfg.output_mode == "pose"


def test_panda_frames_follow_the_robot_type():
    cfg = RuntimeConfig.from_dict({"frames": {"robot_type": "panda"}})
    assert cfg.frames.base_frame == "panda_link0" and cfg.frames.ee_frame == "panda_hand_tcp"
    with pytest.raises(ValueError, match="belongs to another robot type"):
        RuntimeConfig.from_dict({"frames": {"robot_type": "panda", "base_frame": "fr3_link0"}})


def test_round_trip_nested_flat_and_yaml(tmp_path):
    cfg = RuntimeConfig.from_dict(
        {
            "safety": {"dry_run": False, "workspace_min": [0.1, -0.4, 0.0]},
            "scheduling.ensemble.enabled": True,
            "scheduling": {"execute_horizon": 4},
            "output_mode": "joint_trajectory",
        }
    )
    assert cfg.scheduling.ensemble.enabled and cfg.scheduling.execute_horizon == 4
    assert cfg.safety.workspace_min == (0.1, -0.4, 0.0)
    assert RuntimeConfig.from_dict(cfg.to_dict()) == cfg
    flat = cfg.to_flat()
    assert flat["safety.dry_run"] is False and flat["scheduling.ensemble.alpha"] == 0.1
    assert RuntimeConfig.from_dict(flat) == cfg
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(cfg.to_dict()))
    assert RuntimeConfig.from_yaml(plain) == cfg
    ros = tmp_path / "ros.yaml"
    ros.write_text(yaml.safe_dump({"mole_vla_policy": {"ros__parameters": cfg.to_flat()}}))
    assert RuntimeConfig.from_yaml(ros) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"safety": {"dryrun": True}}, r"unknown config key\(s\) \['dryrun'\] in section 'safety'"),
        ({"bogus": 1}, r"unknown config key\(s\) \['bogus'\] at top level"),
        ({"safety": {"dry_run": "false"}}, "must be true or false"),
        ({"gripper": {"close_threshold": 0.7, "open_threshold": 0.6}}, "close_threshold < open_threshold"),
        ({"safety": {"workspace_min": [0.5, 0, 0], "workspace_max": [0.4, 1, 1]}}, "must be below workspace_max"),
        ({"trajectory": {"max_lin_vel": 2.0}}, "above 50% of the fr3 hardware limit 3.0"),
        ({"trajectory": {"command_rate_hz": 0}}, r"trajectory.command_rate_hz must be a finite number > 0"),
        ({"output_mode": "torque"}, "output_mode must be one of"),
        ({"action_space": "euler"}, "unknown action space 'euler'"),
        ({"safety": {"interlock_modes": ["PANIC"]}}, "unknown robot modes"),
        ({"observation": {"camera_names": []}}, "camera_names must be non-empty"),
        ({"scheduling": {"execute_horizon": 2.5}}, "must be an integer"),
        ({"gripper": {"open_width": 0.12}}, r"open_width must be in \(0, 0.08\]"),
        ({"trajectory": {"command_rate_hz": 10.0}}, "below what one sample may legitimately move"),
    ],
)
def test_bad_values_are_rejected_with_a_sentence(data, message):
    with pytest.raises(ValueError, match=message):
        RuntimeConfig.from_dict(data)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("safety:\n  dry_runn: false\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key"):
        RuntimeConfig.from_yaml(bad)
