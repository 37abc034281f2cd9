"""The one rclpy life cycle every node's `main()` runs: init, build the node, spin, clean up, destroy, shut down.

    def main(args=None) -> int:
        return spin_node(MyNode, args, cleanup=lambda node: node.close())

    with ros_node(lambda: rclpy.create_node("my_node"), args) as node:  # when main() spins in its own way
        executor.spin()

Ctrl-C and an external shutdown (`ros2 lifecycle`, the launch system's SIGINT) end the node quietly; any other
exception still propagates, after the node was cleaned up and rclpy shut down. rclpy is imported inside the
functions, so this module imports without ROS 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

N = TypeVar("N")


@contextmanager
def ros_node(
    build: Callable[[], N],
    args: list[str] | None = None,
    cleanup: Callable[[N], Any] | None = None,
    publish_during_cleanup: bool = False,
) -> Iterator[N]:
    """`rclpy.init(args=args)`, then yield `build()`; on leaving (normally, on Ctrl-C or an external shutdown, both
    swallowed, or on an error, re-raised) call `cleanup(node)`, destroy the node and shut rclpy down if it is still
    up. `args` None means `sys.argv`, as for `rclpy.init`.

    publish_during_cleanup: rclpy's own SIGINT handler shuts the context down before `cleanup` runs, so nothing can
    be published any more; with True, Ctrl-C is left to Python (KeyboardInterrupt out of spin) and the context stays
    up until cleanup has finished (the policy node brakes the arm to rest there)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    options = {}
    if publish_during_cleanup:
        try:
            from rclpy.signals import SignalHandlerOptions

            options["signal_handler_options"] = SignalHandlerOptions.NO
        except ImportError:  # rclpy older than Humble: its handler stays, cleanup cannot publish
            pass
    rclpy.init(args=args, **options)
    node = None
    try:
        node = build()
        yield node
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            if node is not None and cleanup is not None:
                cleanup(node)
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()


def spin_node(
    build: Callable[[], Any], args: list[str] | None = None, cleanup: Callable[[Any], Any] | None = None
) -> int:
    """Run `build()`'s node with `rclpy.spin` until Ctrl-C or shutdown inside `ros_node`; returns exit code 0."""
    import rclpy

    with ros_node(build, args, cleanup) as node:
        rclpy.spin(node)
    return 0
