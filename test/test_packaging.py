"""The package installs the way ROS 2 and pip users expect, and imports without ROS 2."""

from __future__ import annotations

import configparser
import importlib
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import mole_vla_ros

ROOT = Path(__file__).resolve().parent.parent
SHARE = "mole_vla_ros-0.1.0.data/data/share/mole_vla_ros"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        cwd=out,
    )
    (whl,) = out.glob("mole_vla_ros-*.whl")
    return zipfile.ZipFile(whl)


def test_share_directory_holds_launch_config_models_and_markers(wheel):
    names = set(wheel.namelist())
    assert f"{SHARE}/package.xml" in names
    assert "mole_vla_ros-0.1.0.data/data/share/ament_index/resource_index/packages/mole_vla_ros" in names
    for folder, pattern in (("launch", "*.launch.py"), ("config", "*.yaml"), ("config", "*.rviz")):
        for f in (ROOT / folder).glob(pattern):
            assert f"{SHARE}/{folder}/{f.name}" in names, f"{folder}/{f.name} is not installed into share/"
    model_files = [p for p in (ROOT / "models").rglob("*") if p.is_file() and not p.name.startswith(".")]
    for f in model_files:
        rel = f.relative_to(ROOT).as_posix()
        assert f"{SHARE}/{rel}" in names, f"{rel} is not installed into share/"


def test_launch_and_config_exist():
    assert sorted((ROOT / "launch").glob("*.launch.py")), "no launch files"
    assert sorted((ROOT / "config").glob("*.yaml")), "no config files"


def test_console_scripts_resolve_to_callables(wheel):
    (ep_name,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(ep_name).decode())
    scripts = dict(parser["console_scripts"])
    assert {"mole-vla", "mole_vla_policy", "mole_vla_recorder"} <= set(scripts)
    for name, target in scripts.items():
        module_name, _, attr = target.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        assert callable(obj), f"console script {name} -> {target} is not callable"


def test_every_module_imports_without_rclpy():
    blocked = {"rclpy"}
    code = (
        "import importlib, pkgutil, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}: raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mole_vla_ros\n"
        "for m in pkgutil.walk_packages(mole_vla_ros.__path__, 'mole_vla_ros.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'rclpy' not in sys.modules\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")


def test_cli_help_lists_the_tools():
    res = subprocess.run([sys.executable, "-m", "mole_vla_ros.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "info" in res.stdout


def test_package_xml_declares_every_ros_dependency():
    xml = (ROOT / "package.xml").read_text()
    assert "<build_type>ament_python</build_type>" in xml
    for dep in (
        "rclpy",
        "sensor_msgs",
        "geometry_msgs",
        "trajectory_msgs",
        "visualization_msgs",
        "nav_msgs",
        "std_msgs",
        "std_srvs",
        "diagnostic_msgs",
        "cv_bridge",
        "tf2_ros",
        "franka_msgs",
        "launch",
        "launch_ros",
        "rviz2",
    ):
        assert f"<exec_depend>{dep}</exec_depend>" in xml, dep


def test_all_modules_listed():
    mods = [m.name for m in pkgutil.walk_packages(mole_vla_ros.__path__, "mole_vla_ros.")]
    assert "mole_vla_ros.interfaces" in mods


def test_info_says_which_accelerator_torch_sees():
    res = subprocess.run([sys.executable, "-m", "mole_vla_ros.cli", "info"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    import torch

    if torch.cuda.is_available():
        assert f"accelerator: cuda:0 {torch.cuda.get_device_name(0)}" in res.stdout
    else:
        assert "accelerator: none, " in res.stdout and "the policy runs on the CPU" in res.stdout
