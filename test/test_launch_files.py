"""Launch files parse, name executables that setup.py installs, override parameters that exist, and use config files
that ship. Runs without ROS 2: the launch API is replaced by small recording stand-ins (they are not our code), so
the launch files' own logic (overrides, namespace, RViz, `ros2 bag play` command) is executed for real.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from mole_vla_ros.ros.params import load_settings, parameter_specs

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
OUR_LAUNCH_FILES = ("mole_vla.launch.py", "replay.launch.py")


def console_scripts() -> set[str]:
    text = (ROOT / "setup.py").read_text()
    return set(re.findall(r'"([\w\-]+) = mole_vla_ros[\w.]*:\w+"', text))


# ------------------------------------------------------------------------------------------------ stand-ins for launch


class Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def fake_launch_modules(share: Path) -> dict[str, types.ModuleType]:
    mods = {name: types.ModuleType(name) for name in (
        "launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions",
        "launch_ros.parameter_descriptions", "ament_index_python", "ament_index_python.packages",
    )}  # fmt: skip
    mods["launch"].LaunchDescription = lambda entities: list(entities)
    for cls in ("DeclareLaunchArgument", "ExecuteProcess", "OpaqueFunction"):
        setattr(mods["launch.actions"], cls, type(cls, (Recorder,), {}))
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch.substitutions"].Command = type("Command", (Recorder,), {})
    mods["launch.substitutions"].FindExecutable = type("FindExecutable", (Recorder,), {})
    mods["launch_ros.actions"].Node = type("Node", (Recorder,), {})
    mods["launch_ros.parameter_descriptions"].ParameterValue = type("ParameterValue", (Recorder,), {})
    mods["ament_index_python.packages"].get_package_share_directory = lambda pkg: str(share / pkg)
    return mods


def run_launch(name: str, tmp_path: Path, monkeypatch, **args):
    """generate_launch_description() + the OpaqueFunction with `args` over the declared defaults -> actions."""
    share = tmp_path / "share"
    for mod_name, mod in fake_launch_modules(share).items():
        monkeypatch.setitem(sys.modules, mod_name, mod)
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description()
    declared = {e.kwargs["name"] if "name" in e.kwargs else e.args[0]: e for e in entities if type(e).__name__ ==
                "DeclareLaunchArgument"}  # fmt: skip
    for e in declared.values():
        assert e.kwargs["description"], f"{name}: argument {e.args[0]} has no description"
    context = {n: e.kwargs["default_value"] for n, e in declared.items()}
    unknown = set(args) - set(context)
    assert not unknown, f"{name} declares no argument(s) {unknown}"
    context.update(args)
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    return opaque.kwargs["function"](context), declared


def nodes(actions, executable=None):
    out = [a for a in actions if type(a).__name__ == "Node"]
    return [a for a in out if executable is None or a.kwargs["executable"] == executable]


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", OUR_LAUNCH_FILES)
def test_launch_file_parses_and_names_installed_executables(name):
    tree = ast.parse((LAUNCH / name).read_text())
    constants = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.targets[0], ast.Name)
    }
    assert constants["PACKAGE"] == "mole_vla_ros"
    assert constants["EXECUTABLE"] in console_scripts()
    assert "generate_launch_description" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_policy_launch_defaults_use_the_shipped_params_and_dry_run(tmp_path, monkeypatch):
    actions, _ = run_launch("mole_vla.launch.py", tmp_path, monkeypatch)
    (node,) = nodes(actions, "mole_vla_policy")
    params_file, overrides, sim = node.kwargs["parameters"]
    assert params_file == str(tmp_path / "share" / "mole_vla_ros" / "config" / "mole_vla.yaml")
    assert overrides == {}  # empty arguments keep the file's values
    assert sim == {"use_sim_time": False}
    assert node.kwargs["name"] == "mole_vla_policy" and node.kwargs["namespace"] == ""
    assert not nodes(actions, "rviz2")
    assert load_settings(ROOT / "config" / "mole_vla.yaml").runtime.safety.dry_run is True


def test_policy_launch_overrides_map_to_real_parameters(tmp_path, monkeypatch):
    actions, _declared = run_launch(
        "mole_vla.launch.py",
        tmp_path,
        monkeypatch,
        checkpoint="/data/ckpt",
        instruction="pick up the red cube",
        camera_topics="[camera/front/image_raw, camera/wrist/image_raw]",
        camera_names="[front, wrist]",
        output_mode="joint_trajectory",
        dry_run="false",
        active_layers="8",
        namespace="fr3_left",
        use_rviz="true",
        use_sim_time="true",
    )
    (node,) = nodes(actions, "mole_vla_policy")
    _, overrides, sim = node.kwargs["parameters"]
    assert overrides["instruction"] == "pick up the red cube"
    assert overrides["safety.dry_run"] is False and overrides["policy.active_layers"] == 8
    assert overrides["topics.cameras"] == ["camera/front/image_raw", "camera/wrist/image_raw"]
    assert sim == {"use_sim_time": True} and node.kwargs["namespace"] == "fr3_left"
    # every override is a declared parameter and the result validates
    names = {s.name for s in parameter_specs()}
    assert set(overrides) <= names
    settings = load_settings(ROOT / "config" / "mole_vla.yaml", overrides=overrides)
    assert settings.runtime.observation.camera_names == ("front", "wrist")
    (rviz,) = nodes(actions, "rviz2")
    assert rviz.kwargs["arguments"][1].endswith("config/mole_vla.rviz")


def test_policy_launch_argument_table_names_existing_parameters():
    tree = ast.parse((LAUNCH / "mole_vla.launch.py").read_text())
    (table,) = [
        n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ARGUMENTS"
    ]
    params = [ast.literal_eval(t.elts[3]) for t in table.elts]
    names = {s.name for s in parameter_specs()}
    assert [p for p in params if p is not None and p not in names] == []
    args = {ast.literal_eval(t.elts[0]) for t in table.elts}
    assert {"checkpoint", "instruction", "camera_topics", "joint_states_topic", "namespace", "output_mode", "dry_run",
            "use_rviz", "params_file"} <= args  # fmt: skip


def test_replay_launch_plays_the_bag_with_clock_and_runs_the_node_on_sim_time(tmp_path, monkeypatch):
    actions, _ = run_launch(
        "replay.launch.py", tmp_path, monkeypatch, bag="/bags/ep1", rate="0.5", topics="/joint_states /camera/a"
    )
    (play,) = [a for a in actions if type(a).__name__ == "ExecuteProcess"]
    cmd = play.kwargs["cmd"]
    assert cmd[:4] == ["ros2", "bag", "play", "/bags/ep1"] and "--clock" in cmd
    assert cmd[cmd.index("--rate") + 1] == "0.5"
    assert cmd[cmd.index("--topics") + 1 :] == ["/joint_states", "/camera/a"]
    (node,) = nodes(actions, "mole_vla_policy")
    overrides = node.kwargs["parameters"][1]
    assert overrides["use_sim_time"] is True and overrides["safety.dry_run"] is True
    (rviz,) = nodes(actions, "rviz2")
    assert rviz.kwargs["parameters"] == [{"use_sim_time": True}]
    assert set(overrides) - {"use_sim_time"} <= {s.name for s in parameter_specs()}


def test_replay_launch_without_bag_says_what_to_pass(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="bag:="):
        run_launch("replay.launch.py", tmp_path, monkeypatch)


def test_rviz_config_is_valid_yaml_showing_the_node_outputs():
    from mole_vla_ros.ros.policy_node import OUTPUT_TOPICS

    rviz = yaml.safe_load((ROOT / "config" / "mole_vla.rviz").read_text())
    displays = {d["Class"]: d for d in rviz["Visualization Manager"]["Displays"]}
    for cls in ("rviz_default_plugins/Image", "rviz_default_plugins/RobotModel", "rviz_default_plugins/TF",
                "rviz_default_plugins/Path", "rviz_default_plugins/MarkerArray"):  # fmt: skip
        assert cls in displays, f"mole_vla.rviz lacks a {cls} display"
    node_topics = {f"/mole_vla_policy/{t.removeprefix('~/')}" for t in OUTPUT_TOPICS.values()}
    for cls in ("rviz_default_plugins/Path", "rviz_default_plugins/MarkerArray", "rviz_default_plugins/Pose"):
        assert displays[cls]["Topic"]["Value"] in node_topics, cls
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "fr3_link0"


def test_config_files_named_by_launch_files_exist():
    for name in OUR_LAUNCH_FILES:
        for ref in re.findall(r'"(mole_vla\.(?:yaml|rviz))"', (LAUNCH / name).read_text()):
            assert (ROOT / "config" / ref).is_file(), f"{name} refers to config/{ref}, which does not exist"
