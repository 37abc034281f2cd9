"""config/mole_vla.yaml and the node's parameter loader (ROS-free; the same loader serves replay)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mole_vla_ros.ros import params
from mole_vla_ros.ros.params import NodeConfig, NodeSettings, load_settings, parameter_specs
from mole_vla_ros.runtime.config import RuntimeConfig

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "mole_vla.yaml"


def write_params(tmp_path, body: dict, node: str = "mole_vla_policy") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({node: {"ros__parameters": body}}))
    return path


def test_shipped_config_loads_to_the_defaults():
    settings = load_settings(CONFIG)
    assert settings.to_flat() == NodeSettings(NodeConfig(), RuntimeConfig()).to_flat()
    assert settings.runtime.safety.dry_run is True  # shipped default: nothing moves


def test_shipped_config_lists_every_parameter_exactly_once():
    in_file = set(params.read_params_file(CONFIG))
    declared = {s.name for s in parameter_specs()}
    assert in_file == declared, f"missing: {declared - in_file}, unknown: {in_file - declared}"


def test_shipped_config_values_have_the_declared_ros_types():
    # ROS 2 types a parameter from its YAML literal: `100` is an integer and would clash with a float declaration.
    in_file = params.read_params_file(CONFIG)
    for spec in parameter_specs():
        value = in_file[spec.name]
        if spec.type_name == "float":
            assert type(value) is float, f"{spec.name}: write {value!r} with a decimal point"
        elif spec.type_name == "float[]":
            assert all(type(v) is float for v in value), f"{spec.name}: {value!r} needs decimal points"
        elif spec.type_name == "int":
            assert type(value) is int, spec.name


def test_every_parameter_has_a_description_and_a_ros_type():
    for spec in parameter_specs():
        assert spec.description, f"{spec.name} has no description"
        assert spec.type_name in {"bool", "int", "float", "str", "float[]", "str[]", "int[]"}


def test_nested_and_dotted_spellings_and_overrides(tmp_path):
    path = write_params(tmp_path, {"safety": {"dry_run": False}, "trajectory.command_rate_hz": 50.0})
    s = load_settings(path, overrides={"policy.active_layers": 4, "output_mode": "joint_trajectory"})
    assert s.runtime.safety.dry_run is False
    assert s.runtime.trajectory.command_rate_hz == 50.0
    assert s.node.policy.active_layers == 4
    assert s.runtime.output_mode == "joint_trajectory"


def test_panda_needs_only_robot_type(tmp_path):
    path = write_params(tmp_path, {"frames": {"robot_type": "panda"}})
    assert load_settings(path).runtime.frames.base_frame == "panda_link0"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"saftey": {"dry_run": True}}, r"unknown parameter 'saftey.dry_run'"),
        ({"topics": {"camera": ["a"]}}, r"unknown parameter\(s\) \['camera'\] in section 'topics'"),
        ({"safety": {"bogus": 1}}, r"unknown config key\(s\) \['bogus'\]"),
        ({"safety": {"dry_run": "false"}}, r"'safety.dry_run' must be true or false, got 'false'"),
        ({"policy": {"skip_mode": "deep"}}, r"policy.skip_mode must be one of .*'deep'"),
        ({"policy": {"active_layers": 2.5}}, r"'policy.active_layers' must be an integer"),
        ({"policy": {"device": "gpu"}}, r"policy.device must be .*'gpu'"),
        ({"policy": {"dtype": "float8"}}, r"policy.dtype must be one of .*'float8'"),
        ({"policy": {"cuda_graphs": "no"}}, r"'policy.cuda_graphs' must be true or false"),
        ({"output_mode": "velocity"}, r"output_mode must be one of"),
        ({"trajectory": {"max_lin_vel": [3.0, 3.0, 3.0]}}, r"trajectory.max_lin_vel.*hardware limit"),
        ({"topics": {"camera_transport": "theora"}}, r"camera_transport must be one of"),
        ({"topics": {"joint_states": ""}}, r"topics.joint_states must be a topic name"),
        ({"topics": {"cameras": ["a b"]}}, r"not a valid ROS topic name"),
        ({"markers": {"fade_seconds": 0.0}}, r"fade_seconds must be > 0"),
        ({"diagnostics_period_s": -1.0}, r"diagnostics_period_s must be a number > 0"),
        (
            {"topics": {"cameras": ["camera/front/image_raw", "camera/wrist/image_raw"]}},
            r"observation.camera_names \['front'\] and topics.cameras .* same length",
        ),
    ],
)
def test_bad_parameters_are_rejected_with_the_file_and_key(tmp_path, body, message):
    path = write_params(tmp_path, body)
    with pytest.raises(ValueError, match=message) as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_params_for_another_node_are_named(tmp_path):
    path = write_params(tmp_path, {"safety": {"dry_run": True}}, node="other_node")
    with pytest.raises(ValueError, match="not for node 'mole_vla_policy'"):
        load_settings(path)


def test_wildcard_node_key_is_accepted(tmp_path):
    path = write_params(tmp_path, {"instruction": "stack the cups"}, node="/**")
    assert load_settings(path).runtime.instruction == "stack the cups"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist; pass params_file"):
        load_settings(tmp_path / "nope.yaml")


def test_readme_documents_every_parameter():
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in parameter_specs() if f"`{s.name}`" not in readme]
    assert not missing, f"README Configuration reference lacks {missing}; paste params.markdown_table()"


def test_flatten_is_the_inverse_of_unflatten_for_every_parameter():
    from mole_vla_ros.config_dicts import flatten, unflatten

    assert flatten({"a": {"b": 1, "c": {"d": [2]}}, "e.f": 3, "g": {}}) == {"a.b": 1, "a.c.d": [2], "e.f": 3}
    assert flatten({"x": 1}, "safety.") == {"safety.x": 1}
    flat = NodeSettings(NodeConfig(), RuntimeConfig()).to_flat()
    assert "safety.dry_run" in flat and not any(isinstance(v, dict) for v in flat.values())
    assert flatten(unflatten(flat)) == flat
    assert RuntimeConfig.from_dict(RuntimeConfig().to_flat()) == RuntimeConfig()
