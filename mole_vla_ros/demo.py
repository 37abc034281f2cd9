"""`mole-vla demo` (what `make demo` runs): replay the bundled sample bag through the bundled default model.

Until the replay tool, the sample bag and the default model are all present it runs what exists and says what is
missing, rather than pretending.
"""

from __future__ import annotations

import importlib.util

from mole_vla_ros.info import package_root


def run(args) -> int:
    root = package_root()
    model = root / "models" / "default"
    bags = sorted((root / "models" / "samples").glob("*")) if (root / "models" / "samples").is_dir() else []
    missing = []
    if importlib.util.find_spec("mole_vla_ros.replay.cli") is None:
        missing.append("the replay tool (mole_vla_ros/replay)")
    if not (model / "config.json").is_file():
        missing.append(f"the default model ({model})")
    if not bags:
        missing.append(f"a sample bag ({root / 'models' / 'samples'})")
    if missing:
        print("make demo: the full demo (offline replay of the sample bag on the default model) needs:")
        for m in missing:
            print(f"  - {m}")
        print("Running what exists instead: `mole-vla info`.\n")
        from mole_vla_ros import info

        return info.run(args)
    from mole_vla_ros.replay import cli as replay_cli

    return replay_cli.demo(root, model, bags[0], out=args.out)


def register(sub) -> None:
    p = sub.add_parser("demo", help="replay the bundled sample bag on the bundled default model")
    p.add_argument("--out", default="out/demo", help="where the output bag, report and plots go")
    p.set_defaults(func=run)
