"""ros/spin.py: the rclpy life cycle the nodes' main() share (init, build, spin, cleanup, destroy, shutdown).

rclpy cannot be installed here, so a stand-in `rclpy` module that logs each call is put in sys.modules; what is
checked is the order of the calls and which exceptions end a node quietly, i.e. our code, not rclpy's.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from mole_vla_ros.ros.spin import ros_node, spin_node


class _ExternalShutdown(Exception):
    pass


@pytest.fixture
def calls(monkeypatch):
    """The log of rclpy calls; `calls.spin_raises` makes rclpy.spin raise that exception."""
    log: list = []
    log_ns = types.SimpleNamespace(log=log, spin_raises=None)
    rclpy = types.ModuleType("rclpy")
    executors = types.ModuleType("rclpy.executors")
    executors.ExternalShutdownException = _ExternalShutdown
    rclpy.executors = executors
    rclpy.init = lambda args=None: log.append(("init", args))
    rclpy.try_shutdown = lambda: log.append("shutdown")

    def spin(node):
        log.append(("spin", node.name))
        if log_ns.spin_raises is not None:
            raise log_ns.spin_raises

    rclpy.spin = spin
    monkeypatch.setitem(sys.modules, "rclpy", rclpy)
    monkeypatch.setitem(sys.modules, "rclpy.executors", executors)
    return log_ns


class _Node:
    def __init__(self, log, name="n"):
        self.log, self.name = log, name
        log.append(("build", name))

    def destroy_node(self):
        self.log.append("destroy")


def test_spin_node_runs_the_whole_life_cycle_in_order(calls):
    code = spin_node(lambda: _Node(calls.log), ["prog", "--ros-args"], cleanup=lambda n: calls.log.append("cleanup"))
    assert code == 0
    assert calls.log == [
        ("init", ["prog", "--ros-args"]),
        ("build", "n"),
        ("spin", "n"),
        "cleanup",
        "destroy",
        "shutdown",
    ]


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), _ExternalShutdown()])
def test_ctrl_c_and_external_shutdown_end_the_node_quietly(calls, stop):
    calls.spin_raises = stop
    assert spin_node(lambda: _Node(calls.log), cleanup=lambda n: calls.log.append("cleanup")) == 0
    assert calls.log[-3:] == ["cleanup", "destroy", "shutdown"]


def test_an_error_propagates_after_cleanup_destroy_and_shutdown(calls):
    calls.spin_raises = RuntimeError("callback bug")
    with pytest.raises(RuntimeError, match="callback bug"):
        spin_node(lambda: _Node(calls.log), cleanup=lambda n: calls.log.append("cleanup"))
    assert calls.log[-3:] == ["cleanup", "destroy", "shutdown"]


def test_a_node_that_fails_to_build_still_shuts_rclpy_down(calls):
    def build():
        raise ValueError("bad parameter")

    with pytest.raises(ValueError, match="bad parameter"):
        spin_node(build, cleanup=lambda n: calls.log.append("cleanup"))
    assert calls.log == [("init", None), "shutdown"]  # nothing built: nothing to clean up or destroy


def test_a_failing_cleanup_still_destroys_the_node_and_shuts_down(calls):
    def cleanup(_node):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        spin_node(lambda: _Node(calls.log), cleanup=cleanup)
    assert calls.log[-2:] == ["destroy", "shutdown"]


def test_returning_from_inside_ros_node_cleans_up(calls):
    """policy_node's main returns exit code 2 from inside the block when its parameters are invalid."""

    def main() -> int:
        with ros_node(lambda: _Node(calls.log, "policy"), [], cleanup=lambda n: calls.log.append("cleanup")):
            return 2
        return 0  # pragma: no cover - not reached

    assert main() == 2
    assert calls.log == [("init", []), ("build", "policy"), "cleanup", "destroy", "shutdown"]


@pytest.mark.parametrize("module", ["record_keyboard", "recorder_node", "sim_robot_node", "policy_node", "spin"])
def test_node_modules_import_without_rclpy(module):
    mod = importlib.import_module(f"mole_vla_ros.ros.{module}")
    assert callable(getattr(mod, "main", None) or mod.spin_node)
    assert "rclpy" not in mod.__dict__


def test_publish_during_cleanup_keeps_rclpy_off_sigint_so_cleanup_can_still_publish(calls, monkeypatch):
    signals = types.ModuleType("rclpy.signals")
    signals.SignalHandlerOptions = types.SimpleNamespace(NO="no-handlers", ALL="all")
    monkeypatch.setitem(sys.modules, "rclpy.signals", signals)
    rclpy = sys.modules["rclpy"]
    rclpy.init = lambda args=None, signal_handler_options="all": calls.log.append(("init", signal_handler_options))
    with ros_node(
        lambda: _Node(calls.log), [], cleanup=lambda n: calls.log.append("cleanup"), publish_during_cleanup=True
    ):
        raise KeyboardInterrupt  # Ctrl-C arrives as a Python exception, the context is still up for cleanup
    assert calls.log == [("init", "no-handlers"), ("build", "n"), "cleanup", "destroy", "shutdown"]
