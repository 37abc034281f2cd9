"""Opening a recorded rosbag2 bag for replay, without ROS: sqlite3 or MCAP, Humble or Jazzy metadata.

`InputBag(path)` accepts what users have at hand: a bag directory (metadata.yaml + .db3/.mcap files), an episode
directory written by the recorder or `mole-vla sim record`, the metadata.yaml itself, or a bare .mcap file. It
reads through rosbags' AnyReader with the project's type store (ROS 2 Humble + franka_msgs), and turns every way a
bag can be unusable into a `ReplayError` that says what is wrong and what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mole_vla_ros.replay.errors import BagNotFoundError, CorruptBagError, UnknownMessageTypeError

log = logging.getLogger(__name__)

_RECOVER_HINT = (
    "If a recorder was killed while writing it, `mole-vla dataset recover PATH` salvages the complete part; "
    "otherwise copy the bag again"
)


@dataclass(frozen=True)
class TopicInfo:
    """One topic of the bag: name (absolute, as stored), message type and message count."""

    name: str
    msgtype: str
    count: int


def resolve_bag_path(path: str | Path) -> Path:
    """The path AnyReader should open for `path` (a bag dir, an episode dir, metadata.yaml or a .mcap file).

    Raises BagNotFoundError for a missing path or one that holds no bag, CorruptBagError for a directory whose
    metadata.yaml is missing while its data file is present (an unfinished recording)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BagNotFoundError(
            f"bag {str(p)!r} does not exist; pass a rosbag2 directory, an episode directory or a .mcap file"
        )
    if p.is_file():
        if p.name == "metadata.yaml":
            return p.parent
        if p.suffix == ".mcap":
            return p.parent if (p.parent / "metadata.yaml").is_file() else p
        if p.suffix == ".db3":
            if (p.parent / "metadata.yaml").is_file():
                return p.parent
            raise BagNotFoundError(
                f"{str(p)!r} is an sqlite3 bag file without its metadata.yaml; pass the bag directory that holds both"
            )
        raise BagNotFoundError(
            f"{str(p)!r} is not a rosbag2 bag; expected a directory with metadata.yaml, an episode directory or a "
            ".mcap file"
        )
    if (p / "metadata.yaml").is_file():
        return p
    mcaps = sorted(p.glob("*.mcap"))
    if len(mcaps) == 1:
        log.warning("%s has no metadata.yaml (unfinished recording?); reading %s directly", p, mcaps[0].name)
        return mcaps[0]
    if mcaps or list(p.glob("*.db3")):
        raise CorruptBagError(
            f"bag directory {str(p)!r} has data files but no metadata.yaml: the recording was never finished. "
            + _RECOVER_HINT.replace("PATH", str(p))
        )
    raise BagNotFoundError(
        f"{str(p)!r} holds no rosbag2 bag (no metadata.yaml, .mcap or .db3 inside); pass the bag or episode directory"
    )


class InputBag:
    """A bag opened for reading. Use as a context manager or call `close()`.

    Attributes: `path` (what was opened), `topics` {name: TopicInfo}, `start_ns`, `end_ns`, `storage` ("mcap" or
    "sqlite3"), `metadata_version` (5 = Humble, 8/9 = Jazzy; 0 for a bare .mcap).
    """

    def __init__(self, path: str | Path, typestore: Any | None = None):
        from rosbags.highlevel import AnyReader

        if typestore is None:
            from mole_vla_ros.data.typestore import get_typestore

            typestore = get_typestore()
        self.typestore = typestore
        self.path = resolve_bag_path(path)
        self.requested_path = Path(path)
        self._reader = AnyReader([self.path], default_typestore=typestore)
        try:
            self._reader.open()
        except Exception as exc:  # rosbags raises AnyReaderError / ReaderError / OSError variants
            raise CorruptBagError(
                f"bag {str(self.path)!r} cannot be read ({type(exc).__name__}: {exc}); the file is truncated or "
                f"damaged. " + _RECOVER_HINT.replace("PATH", str(self.path))
            ) from exc
        self.topics: dict[str, TopicInfo] = {}
        for c in self._reader.connections:
            old = self.topics.get(c.topic)
            if old is not None and old.msgtype != c.msgtype:
                raise UnknownMessageTypeError(
                    f"topic {c.topic!r} appears with two message types ({old.msgtype}, {c.msgtype}) in "
                    f"{str(self.path)!r}; replay needs one type per topic"
                )
            self.topics[c.topic] = TopicInfo(c.topic, c.msgtype, (old.count if old else 0) + int(c.msgcount))
        self.start_ns = int(self._reader.start_time) if self.topics else 0
        self.end_ns = int(self._reader.end_time) if self.topics else 0
        self.storage = "mcap" if self.path.suffix == ".mcap" or list(self.path.glob("*.mcap")) else "sqlite3"
        self.metadata_version = self._metadata_version()

    def _metadata_version(self) -> int:
        meta = self.path / "metadata.yaml"
        if not meta.is_file():
            return 0
        import yaml

        try:
            info = yaml.safe_load(meta.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
            return int(info.get("version", 0))
        except (yaml.YAMLError, KeyError, TypeError, ValueError):
            return 0

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def connections(self) -> list:
        return list(self._reader.connections)

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics.values())

    @property
    def duration_s(self) -> float:
        return max(0.0, (self.end_ns - self.start_ns) * 1e-9)

    def messages(
        self, topics: Iterable[str] | None = None, start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, log_time_ns, raw CDR bytes) in log-time order, for `topics` (all when None), with log time
        in [start_ns, stop_ns) when given.

        A damaged chunk in the middle of the file raises CorruptBagError naming where reading stopped."""
        if topics is None:
            conns = self.connections
        else:
            wanted = set(topics)
            conns = [c for c in self.connections if c.topic in wanted]
            if not conns:
                return
        last_t = self.start_ns
        it = self._reader.messages(connections=conns, start=start_ns, stop=stop_ns)
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise CorruptBagError(
                    f"bag {str(self.path)!r} is damaged: reading stopped after log time {last_t * 1e-9:.3f} s "
                    f"({type(exc).__name__}: {exc}). " + _RECOVER_HINT.replace("PATH", str(self.path))
                ) from exc
            conn, t, raw = item
            last_t = t
            yield conn, int(t), raw

    def deserialize(self, raw: bytes, msgtype: str, topic: str = "", log_time_ns: int = 0) -> Any:
        """The message as a rosbags dataclass (rclpy field names). Raises UnknownMessageTypeError / CorruptBagError."""
        try:
            return self._reader.deserialize(raw, msgtype)
        except KeyError as exc:
            raise UnknownMessageTypeError(
                f"topic {topic!r} has message type {msgtype!r}, which neither the bag nor the type store defines; "
                "register its .msg definition in mole_vla_ros/data/typestore.py"
            ) from exc
        except Exception as exc:
            raise CorruptBagError(
                f"message on {topic!r} at log time {log_time_ns * 1e-9:.3f} s does not decode as {msgtype} "
                f"({type(exc).__name__}: {exc}); the bag is damaged or the type definition differs from the recorder's"
            ) from exc

    def describe(self) -> str:
        """One line per topic: name, type, count (for error messages and the report)."""
        if not self.topics:
            return "  (no topics)"
        width = max(len(t) for t in self.topics)
        return "\n".join(
            f"  {t.name:<{width}}  {t.msgtype}  ({t.count} msgs)"
            for t in sorted(self.topics.values(), key=lambda t: t.name)
        )

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> InputBag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
