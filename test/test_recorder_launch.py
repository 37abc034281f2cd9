"""recorder.launch.py starts the installed recorder executable with the shipped config and parameters it declares."""

from __future__ import annotations

import ast
from pathlib import Path

from test_launch_files import console_scripts, nodes, run_launch

from mole_vla_ros.data.recorder_core import RecorderConfig

ROOT = Path(__file__).resolve().parent.parent


def _declared_node_parameters() -> set[str]:
    tree = ast.parse((ROOT / "mole_vla_ros" / "ros" / "recorder_node.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "declare_parameter"
        and isinstance(node.args[0], ast.Constant)
    }


def test_defaults_use_the_shipped_config(tmp_path, monkeypatch):
    actions, _ = run_launch("recorder.launch.py", tmp_path, monkeypatch)
    (node,) = nodes(actions, "mole_vla_recorder")
    assert "mole_vla_recorder" in console_scripts()
    (params,) = node.kwargs["parameters"]
    assert params["config_file"] == str(tmp_path / "share" / "mole_vla_ros" / "config" / "recorder.yaml")
    assert params["output_dir"] == "" and params["use_sim_time"] is False
    assert set(params) - {"use_sim_time"} <= _declared_node_parameters()
    RecorderConfig.from_yaml(ROOT / "config" / "recorder.yaml")  # the file the default points at is valid


def test_overrides_reach_the_node(tmp_path, monkeypatch):
    actions, _ = run_launch(
        "recorder.launch.py",
        tmp_path,
        monkeypatch,
        config_file="/data/my_recorder.yaml",
        output_dir="/data/demos",
        robot_namespace="fr3_left",
        use_sim_time="true",
    )
    (node,) = nodes(actions, "mole_vla_recorder")
    (params,) = node.kwargs["parameters"]
    assert params["config_file"] == "/data/my_recorder.yaml" and params["output_dir"] == "/data/demos"
    assert params["robot_namespace"] == "fr3_left" and params["use_sim_time"] is True
