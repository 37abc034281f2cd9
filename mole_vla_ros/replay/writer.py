"""The replay's output bag: the input topics unchanged plus everything the live node would have published.

A rosbag2 MCAP directory written with rosbags' `Writer(version=8)`, the version Humble, Iron and Jazzy all play with
`ros2 bag play` (version 9 writes QoS in a form Humble cannot parse). Input messages keep their raw CDR bytes and
their recorded message definitions; node outputs are serialized from the rosbags dataclasses the shared
`OutputBuilder` builds, so they are byte-for-byte what rclpy would publish.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from mole_vla_ros.replay.errors import ReplayError

log = logging.getLogger(__name__)

BAG_VERSION = 8


def _qos(reliable: bool = True, transient_local: bool = False, depth: int = 10):
    from mole_vla_ros.data.episode import QosSpec

    return QosSpec(
        "reliable" if reliable else "best_effort", "transient_local" if transient_local else "volatile", depth
    )


class OutputBag:
    """Writes one rosbag2 MCAP directory at `path` (replacing an earlier replay output there).

    `copy_connection(conn)` registers an input topic, `write_raw(topic, t_ns, data)` copies a message;
    `add_topic(topic, msgtype)` registers an output topic, `write(topic, msg, t_ns)` serializes and writes one.
    `counts` holds messages written per topic.
    """

    def __init__(self, path: str | Path, typestore: Any):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        self.typestore = typestore
        if self.path.exists():
            if not (self.path / "metadata.yaml").is_file() and any(self.path.iterdir()):
                raise ReplayError(
                    f"output bag path {str(self.path)!r} exists and is not a bag from an earlier replay; choose another "
                    "--out directory"
                )
            log.info("replacing the earlier replay output bag %s", self.path)
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()
        self.types: dict[str, str] = {}
        # input topics that cannot be copied: no definition in the bag nor in the type store -> reason
        self.skipped: dict[str, str] = {}

    def copy_connection(self, conn: Any) -> bool:
        """Register input connection `conn` (same topic, type, definition and QoS) for `write_raw`.

        Returns False (and records the topic in `skipped`) when neither the bag nor the type store defines its
        type: a message without its definition would make the output bag unplayable (Humble sqlite3 bags store
        no definitions)."""
        if conn.topic in self._connections or conn.topic in self.skipped:
            return conn.topic in self._connections
        qos = list(getattr(conn.ext, "offered_qos_profiles", []) or [])
        msgdef = getattr(conn, "msgdef", None)
        kwargs: dict[str, Any] = {"offered_qos_profiles": qos}
        if msgdef is not None and getattr(msgdef, "data", "") and conn.digest:
            kwargs.update(msgdef=msgdef.data, rihs01=conn.digest)
        elif conn.msgtype in self.typestore.types:
            kwargs["typestore"] = self.typestore
        else:
            self.skipped[conn.topic] = f"{conn.msgtype}: no message definition in the bag or the type store"
            log.warning(
                "input topic %s (%s) is not copied: its message definition is unknown", conn.topic, conn.msgtype
            )
            return False
        self._connections[conn.topic] = self._writer.add_connection(conn.topic, conn.msgtype, **kwargs)
        self.types[conn.topic] = conn.msgtype
        return True

    def add_topic(self, topic: str, msgtype: str, transient_local: bool = False) -> None:
        """Register an output topic of `msgtype` (a type the project's type store knows)."""
        if topic in self._connections:
            if self.types[topic] != msgtype:
                raise ReplayError(
                    f"output topic {topic!r} would carry {msgtype} but the input bag already has it as "
                    f"{self.types[topic]}; replay with --namespace or rename the input topic"
                )
            return
        qos = [_qos(transient_local=transient_local).to_rosbags()]
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=qos
        )
        self.types[topic] = msgtype

    def write_raw(self, topic: str, t_ns: int, data: bytes | memoryview) -> None:
        conn = self._connections.get(topic)
        if conn is None:  # a skipped topic
            return
        self._writer.write(conn, int(t_ns), data)
        self.counts[topic] += 1

    def write(self, topic: str, msg: Any, t_ns: int) -> None:
        data = self.typestore.serialize_cdr(msg, msg.__msgtype__)
        self._writer.write(self._connections[topic], int(t_ns), data)
        self.counts[topic] += 1

    def close(self) -> None:
        self._writer.close()
