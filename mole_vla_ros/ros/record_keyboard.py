"""`mole_vla_record_keys`: drive the recorder from a terminal, one key per command.

    r  start (asks for the instruction; Enter keeps the current one)   s  stop
    y  save as success      n  save as failure      w  save unlabelled       d  discard
    +  label success        -  label failure        i  set instruction       ?  status      q  quit

Keys are translated with `mole_vla_ros.data.recorder_core.KEYMAP` into the recorder's text commands and sent on
<recorder>/command (std_msgs/String); the replies come back on <recorder>/status and are printed. The same commands
work from any publisher (foot pedal, `ros2 topic pub`), or through the Trigger/SetBool services.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading

from mole_vla_ros.data.recorder_core import KEYMAP

HELP = __doc__.split("\n\n")[1]


def command_for_key(key: str, ask=input) -> str | None:
    """The recorder command for one key press (None for unbound keys); `ask` prompts for instruction text."""
    cmd = KEYMAP.get(key)
    if cmd == "start":
        text = ask("instruction (Enter = keep current): ").strip()
        return f"start {text}" if text else "start"
    if cmd == "instruction":
        text = ask("instruction: ").strip()
        return f"instruction {text}" if text else None
    return cmd


@contextlib.contextmanager
def _raw_terminal():
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def _read_line_cooked(prompt: str) -> str:
    import termios

    fd = sys.stdin.fileno()
    attrs = termios.tcgetattr(fd)
    cooked = list(attrs)
    cooked[3] |= termios.ECHO | termios.ICANON
    termios.tcsetattr(fd, termios.TCSADRAIN, cooked)
    try:
        return input(prompt)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, attrs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mole_vla_record_keys", description=__doc__.splitlines()[0])
    parser.add_argument("--recorder", default="/mole_vla_recorder", help="recorder node name (with namespace)")
    args, ros_args = parser.parse_known_args(argv if argv is not None else sys.argv[1:])

    import rclpy
    from rclpy.node import Node
    from std_msgs.msg import String

    from mole_vla_ros.ros.spin import ros_node

    with ros_node(lambda: Node("mole_vla_record_keys"), [sys.argv[0], *ros_args]) as node:
        pub = node.create_publisher(String, f"{args.recorder}/command", 10)

        def on_status(msg) -> None:
            try:
                status = json.loads(msg.data)
            except json.JSONDecodeError:
                return
            if status.get("message"):
                print(f"\r[{status['state']}] {status['message']}", flush=True)

        node.create_subscription(String, f"{args.recorder}/status", on_status, 10)
        spinner = threading.Thread(target=rclpy.spin, args=(node,), daemon=True)
        spinner.start()
        print(HELP, flush=True)
        with _raw_terminal():
            while True:
                key = sys.stdin.read(1)
                if key in ("q", "\x04", ""):
                    break
                cmd = command_for_key(key, ask=_read_line_cooked)
                if cmd is None:
                    if key.strip():
                        print(f"\rkey {key!r} is not bound\n{HELP}", flush=True)
                    continue
                pub.publish(String(data=cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
