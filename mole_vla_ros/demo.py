"""`mole-vla demo` (what `make demo` runs): replay the bundled sample bag through the bundled default model.

The sample bag is models/samples/<replay.cli.DEMO_BAG> (recorded with `mole-vla sim record`). While models/default
holds no trained model, the replay runs on an UNTRAINED tiny model built on the spot and says so in every output,
rather than pretending.
"""

from __future__ import annotations

from mole_vla_ros.info import package_root


def _is_bag(path) -> bool:
    return path.is_dir() and ((path / "metadata.yaml").is_file() or any(path.glob("*.mcap")))


def run(args) -> int:
    from mole_vla_ros.replay import cli as replay_cli

    root = package_root()
    samples = root / "models" / "samples"
    bag = samples / replay_cli.DEMO_BAG
    if not _is_bag(bag):
        others = sorted(p for p in samples.glob("*") if _is_bag(p)) if samples.is_dir() else []
        if not others:
            print(f"make demo: no sample bag found in {samples}; record one with `mole-vla sim record` (see README).")
            return 2
        bag = others[0]
    return replay_cli.demo(root, root / "models" / "default", bag, out=args.out)


def register(sub) -> None:
    p = sub.add_parser("demo", help="replay the bundled sample bag on the bundled default model")
    p.add_argument("--out", default="out/demo", help="where the output bag, report and plots go")
    p.set_defaults(func=run)
