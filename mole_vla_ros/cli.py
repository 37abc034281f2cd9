"""`mole-vla`: one command line for the ROS-free tools.

Each sub-command lives beside the code it drives and registers itself through a `register(subparsers)` function;
this file only lists them, so adding a tool never means editing another tool's code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# sub-command name -> module with `register(subparsers)`; imported lazily so `mole-vla --help` stays fast.
COMMANDS: dict[str, str] = {
    "info": "mole_vla_ros.info",
    "dataset": "mole_vla_ros.data.cli",
    "sim": "mole_vla_ros.sim.cli",
    "train": "mole_vla_ros.training.cli",
    "evaluate": "mole_vla_ros.training.evaluate_cli",
    "replay": "mole_vla_ros.replay.cli",
    "demo": "mole_vla_ros.demo",
    "bench": "mole_vla_ros.bench",
    "import-cogact": "mole_vla_ros.model.cogact_import",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mole-vla", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # not part of this build yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
