"""One demonstration episode on disk: a rosbag2 (MCAP, metadata version 8) plus `episode.json`, written crash-safely.

Layout under a recording root:

    root/
      <name>/                      a finished episode; `ros2 bag play root/<name>` plays it (Humble, Iron, Jazzy)
        metadata.yaml              rosbag2 metadata (version 8)
        <name>.mcap                every message, unchanged serialized bytes, log time = receive time
        episode.json               instruction, success, robot/cameras, start/end, per-topic counts/rates, drops
      _incomplete/<name>/          an episode being recorded, or one whose recorder died (episode.json says
                                   "status": "recording"); `recover_episode()` turns it into root/<name>

The writer closes an MCAP chunk and flushes it to the OS every `flush_interval_s`, so a killed process loses at most
that interval; everything before it is recovered by `recover_episode`. Nothing is ever half-renamed: the episode
directory only appears under `root/` once the bag is closed and `episode.json` says "complete" (or "recovered").

Header stamps stay inside the messages; the bag's log time is the time the recorder received each message.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from mole_vla_ros import __version__
from mole_vla_ros.data.mcap_salvage import salvage_mcap
from mole_vla_ros.data.typestore import get_typestore, require_msgtype

log = logging.getLogger(__name__)

EPISODE_FORMAT = "mole_vla_episode"
EPISODE_FORMAT_VERSION = 1
EPISODE_JSON = "episode.json"
INCOMPLETE_DIR = "_incomplete"
BAG_VERSION = 8  # version 9 writes QoS in a form Humble's `ros2 bag play` cannot parse
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOPIC_RE = re.compile(r"^/?[A-Za-z_~][A-Za-z0-9_/~{}]*$")


class InsufficientDiskSpace(OSError):
    """The recording root has less free space than the writer was told to keep."""


class IncompleteEpisodeError(RuntimeError):
    """The episode was never finished (its recorder died); recover it first."""


@dataclass(frozen=True)
class QosSpec:
    """The QoS a topic is recorded with (stored in the bag so `ros2 bag play` offers the same).

    reliability: 'reliable' or 'best_effort' (franka_ros2 convenience topics and most cameras are best_effort).
    durability:  'volatile' or 'transient_local' (latched topics such as the instruction).
    """

    reliability: str = "reliable"
    durability: str = "volatile"
    depth: int = 10

    def __post_init__(self):
        if self.reliability not in ("reliable", "best_effort"):
            raise ValueError(f"QoS reliability must be 'reliable' or 'best_effort', got {self.reliability!r}")
        if self.durability not in ("volatile", "transient_local"):
            raise ValueError(f"QoS durability must be 'volatile' or 'transient_local', got {self.durability!r}")
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"QoS depth must be an integer >= 1, got {self.depth!r}")

    @classmethod
    def sensor_data(cls) -> QosSpec:
        """rclpy's qos_profile_sensor_data: best effort, volatile, depth 5."""
        return cls("best_effort", "volatile", 5)

    def to_rosbags(self) -> Qos:
        zero = QosTime(0, 0)
        return Qos(
            QosHistory.KEEP_LAST,
            self.depth,
            QosReliability.RELIABLE if self.reliability == "reliable" else QosReliability.BEST_EFFORT,
            QosDurability.VOLATILE if self.durability == "volatile" else QosDurability.TRANSIENT_LOCAL,
            zero,
            zero,
            QosLiveliness.AUTOMATIC,
            zero,
            False,
        )


def normalize_topic(name: str) -> str:
    """`name` as an absolute ROS topic ('/joint_states'); raises ValueError for names ROS would reject."""
    if not isinstance(name, str) or not _TOPIC_RE.match(name) or "//" in name or name.endswith("/"):
        raise ValueError(
            f"invalid topic name {name!r}: expected letters, digits, '_' and '/' separators, e.g. '/camera/wrist/image_raw'"
        )
    return name if name.startswith("/") else "/" + name


@dataclass(frozen=True)
class TopicSpec:
    """One recorded topic. `expected_hz` (optional) is what rate monitoring and drop counting compare against."""

    name: str
    msgtype: str
    qos: QosSpec = field(default_factory=QosSpec)
    expected_hz: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "name", normalize_topic(self.name))
        require_msgtype(self.msgtype)
        if isinstance(self.qos, dict):
            object.__setattr__(self, "qos", QosSpec(**self.qos))
        if self.expected_hz is not None and not (self.expected_hz > 0):
            raise ValueError(f"topic {self.name}: expected_hz must be > 0 or None, got {self.expected_hz!r}")


@dataclass
class EpisodeMetadata:
    """What the operator and the configuration know about an episode before it starts.

    cameras: camera name -> {"topic": ..., "info_topic": ..., "width": ..., "height": ..., "encoding": ...}
             (whatever is known; the dataset builder reads image topics from here).
    """

    instruction: str
    robot_type: str = "fr3"
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)
    operator: str = ""
    teleop_device: str = ""
    source: str = "real"  # 'real' robot or 'sim'
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.instruction, str):
            raise ValueError(f"instruction must be a string, got {type(self.instruction).__name__}")
        from mole_vla_ros.robot.franka import ROBOT_TYPES

        if self.robot_type not in ROBOT_TYPES:
            raise ValueError(f"robot_type must be one of {ROBOT_TYPES}, got {self.robot_type!r}")
        if self.source not in ("real", "sim"):
            raise ValueError(f"source must be 'real' or 'sim', got {self.source!r}")


@dataclass
class _TopicStats:
    msgtype: str
    qos: dict
    expected_hz: float | None
    count: int = 0
    bytes: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    max_gap_ns: int = 0
    dropped: int = 0  # dropped by the writer (queue full, disk low) or reported by the recorder (publisher gaps)

    def add(self, t_ns: int, nbytes: int) -> None:
        if self.last_ns is not None:
            self.max_gap_ns = max(self.max_gap_ns, t_ns - self.last_ns)
        if self.first_ns is None:
            self.first_ns = t_ns
        self.last_ns = t_ns if self.last_ns is None else max(self.last_ns, t_ns)
        self.count += 1
        self.bytes += nbytes

    def summary(self) -> dict[str, Any]:
        span = (self.last_ns - self.first_ns) / 1e9 if self.count > 1 else 0.0
        return {
            "msgtype": self.msgtype,
            "qos": self.qos,
            "count": self.count,
            "bytes": self.bytes,
            "rate_hz": round((self.count - 1) / span, 3) if span > 0 else None,
            "expected_hz": self.expected_hz,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "max_gap_s": round(self.max_gap_ns / 1e9, 6),
            "dropped": self.dropped,
        }


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def free_disk_gb(path: str | Path) -> float:
    """Free space (GB) on the file system holding `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free / 1e9


class EpisodeWriter:
    """Write one episode: raw CDR messages into a rosbag2 MCAP bag, plus `episode.json`.

    Use `write(topic, cdr_bytes, log_time_ns)` for messages received serialized (the recorder) or
    `write_message(topic, msg, log_time_ns)` for rosbags message objects (the simulator). End with
    `finish(success)` (returns the episode directory) or `discard()`.

    threaded=True moves disk I/O to a background thread: `write` only queues the bytes, and a message that would
    grow the queue beyond `max_queue_mb` is dropped and counted (never blocks the caller).

    `clock` (seconds) times the flushes every `flush_interval_s`: time.monotonic by default; the simulator
    passes its own time, so that where the bag's chunks end, and so its bytes, do not depend on how busy the CPU was.
    """

    def __init__(
        self,
        root_dir: str | Path,
        name: str | None = None,
        topics: Iterable[TopicSpec] = (),
        metadata: EpisodeMetadata | None = None,
        flush_interval_s: float = 1.0,
        min_free_disk_gb: float = 5.0,
        fsync: bool = True,
        threaded: bool = False,
        max_queue_mb: float = 512.0,
        clock: Callable[[], float] | None = None,
    ):
        topics = list(topics)
        if not topics:
            raise ValueError("EpisodeWriter needs at least one TopicSpec; pass topics=[TopicSpec(name, msgtype), ...]")
        if metadata is None:
            raise ValueError("EpisodeWriter needs metadata=EpisodeMetadata(instruction=...)")
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0 seconds, got {flush_interval_s!r}")
        if min_free_disk_gb < 0:
            raise ValueError(f"min_free_disk_gb must be >= 0, got {min_free_disk_gb!r}")
        names = [t.name for t in topics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"topics listed twice: {dupes}; each topic may appear once")

        self.root = Path(root_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        free = free_disk_gb(self.root)
        if free < min_free_disk_gb:
            raise InsufficientDiskSpace(
                f"only {free:.1f} GB free under {self.root}, the recorder keeps at least {min_free_disk_gb:.1f} GB "
                "(min_free_disk_gb): free some space, record to another disk, or lower min_free_disk_gb"
            )
        self.name = name or datetime.now().strftime("episode_%Y%m%d_%H%M%S_%f")
        if not _NAME_RE.match(self.name) or self.name == INCOMPLETE_DIR:
            raise ValueError(f"invalid episode name {self.name!r}: use letters, digits, '_', '-' and '.'")
        self.final_dir = self.root / self.name
        if self.final_dir.exists():
            raise FileExistsError(f"episode {self.final_dir} exists already; choose another name")
        self.work_dir = self.root / INCOMPLETE_DIR / self.name
        if self.work_dir.exists():
            raise FileExistsError(
                f"an unfinished episode {self.work_dir} exists: recover it (mole-vla dataset recover) or delete it"
            )
        self.work_dir.parent.mkdir(parents=True, exist_ok=True)

        self.metadata = metadata
        self.topics = {t.name: t for t in topics}
        self.flush_interval_s = float(flush_interval_s)
        self.min_free_disk_gb = float(min_free_disk_gb)
        self.fsync = fsync
        self._store = get_typestore()
        self._stats = {t.name: _TopicStats(t.msgtype, asdict(t.qos), t.expected_hz) for t in topics}
        self._topic_extra: dict[str, dict[str, Any]] = {}
        self._wall_start = _utc_now()
        self._flushes = 0
        self._clock = clock if clock is not None else time.monotonic
        self._last_flush = self._clock()
        self._state = "recording"
        self._low_disk = False
        self._lock = threading.Lock()

        self._writer = Writer(self.work_dir, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        storage = self._writer.storage
        if not (hasattr(storage, "close_chunk") and hasattr(storage, "chunk") and hasattr(storage, "bio")):
            # Periodic flushing closes rosbags' pending MCAP chunk; fail now, not after an hour of unflushed data.
            self._writer.abort()
            shutil.rmtree(self.work_dir, ignore_errors=True)
            from importlib.metadata import version

            raise RuntimeError(
                f"rosbags {version('rosbags')} changed its MCAP writer (no close_chunk/chunk/bio); the recorder needs "
                "it to flush regularly. Install the pinned version: pip install -c requirements/constraints.txt rosbags"
            )
        self._conns = {
            t.name: self._writer.add_connection(
                t.name, t.msgtype, typestore=self._store, offered_qos_profiles=[t.qos.to_rosbags()]
            )
            for t in topics
        }
        self._write_json("recording")
        self._flush_storage()  # header, schemas and channels reach the disk before the first message

        self._queue: queue.Queue | None = None
        self._queued_bytes = 0
        self._max_queue_bytes = int(max_queue_mb * 1e6)
        self._thread_error: BaseException | None = None
        if threaded:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._drain, name=f"episode-writer-{self.name}", daemon=True)
            self._thread.start()
        log.info("recording episode %s (%d topics) into %s", self.name, len(topics), self.work_dir)

    # ------------------------------------------------------------------ writing
    @property
    def state(self) -> str:
        """'recording', 'finished' or 'discarded'."""
        return self._state

    @property
    def low_disk(self) -> bool:
        """True once free space fell below half of min_free_disk_gb; from then on messages are dropped."""
        return self._low_disk

    def _topic(self, topic: str) -> str:
        if topic in self._conns:
            return topic
        alt = "/" + topic if not topic.startswith("/") else topic
        if alt in self._conns:
            return alt
        raise ValueError(f"topic {topic!r} is not part of this episode; recorded topics are {sorted(self._conns)}")

    def write(self, topic: str, serialized_cdr: bytes | bytearray | memoryview, log_time_ns: int) -> None:
        """Store one serialized message of `topic` received at `log_time_ns` (ns since the epoch)."""
        if self._state != "recording":
            raise RuntimeError(f"episode {self.name} is {self._state}; start a new EpisodeWriter to record more")
        topic = self._topic(topic)
        if not isinstance(serialized_cdr, bytes | bytearray | memoryview):
            raise TypeError(
                f"write() takes serialized CDR bytes, got {type(serialized_cdr).__name__}; use write_message() for "
                "message objects"
            )
        if not isinstance(log_time_ns, int) or log_time_ns < 0:
            raise ValueError(f"log_time_ns must be a non-negative int (ns since the epoch), got {log_time_ns!r}")
        if self._thread_error is not None:
            raise RuntimeError(f"episode writer thread failed: {self._thread_error}") from self._thread_error
        if self._low_disk:
            with self._lock:
                self._stats[topic].dropped += 1
            return
        if self._queue is not None:
            n = len(serialized_cdr)
            with self._lock:
                if self._queued_bytes + n > self._max_queue_bytes:
                    self._stats[topic].dropped += 1
                    return
                self._queued_bytes += n
            self._queue.put((topic, bytes(serialized_cdr), log_time_ns))
            return
        self._write_now(topic, serialized_cdr, log_time_ns)

    def write_message(self, topic: str, msg: object, log_time_ns: int) -> None:
        """Serialize `msg` (a rosbags message of the topic's type) and store it like `write`."""
        topic = self._topic(topic)
        msgtype = self.topics[topic].msgtype
        actual = getattr(msg, "__msgtype__", None)
        if actual != msgtype:
            raise TypeError(f"topic {topic} records {msgtype}, got a message of type {actual or type(msg).__name__}")
        self.write(topic, bytes(self._store.serialize_cdr(msg, msgtype)), log_time_ns)

    def set_topic_info(self, topic: str, **fields: Any) -> None:
        """Extra per-topic facts for episode.json (e.g. header-stamp latency); merged into its 'topics' entry."""
        topic = self._topic(topic)
        with self._lock:
            self._topic_extra.setdefault(topic, {}).update(fields)

    def note_dropped(self, topic: str, count: int = 1) -> None:
        """Count messages the recorder knows were lost before reaching the writer (e.g. camera sequence gaps)."""
        topic = self._topic(topic)
        with self._lock:
            self._stats[topic].dropped += int(count)

    def _write_now(self, topic: str, data, log_time_ns: int) -> None:
        with self._lock:
            self._writer.write(self._conns[topic], log_time_ns, data)
            self._stats[topic].add(log_time_ns, len(data))
            due = self._clock() - self._last_flush >= self.flush_interval_s
        if due:
            self.flush()

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                topic, data, t = item
                with self._lock:
                    self._queued_bytes -= len(data)
                self._write_now(topic, data, t)
            except BaseException as exc:  # surfaced to the caller on its next write/finish
                self._thread_error = exc
                log.exception("episode writer thread failed")
                return
            finally:
                self._queue.task_done()

    def _flush_storage(self) -> None:
        storage = self._writer.storage
        # rosbags buffers messages in an in-memory chunk (1 MiB); closing it writes a complete, self-contained
        # chunk record that salvage_mcap can read back after a crash.
        if storage.chunk.bio.tell():
            storage.close_chunk()
        storage.bio.flush()
        if self.fsync:
            os.fsync(storage.bio.fileno())

    def flush(self) -> None:
        """Push everything written so far to disk and refresh episode.json (runs every flush_interval_s anyway)."""
        with self._lock:
            if self._state != "recording":
                return
            self._flush_storage()
            self._flushes += 1
            self._last_flush = self._clock()
            self._write_json("recording")
        if free_disk_gb(self.work_dir) < self.min_free_disk_gb / 2 and not self._low_disk:
            self._low_disk = True
            log.error(
                "episode %s: free disk space fell below %.1f GB; dropping further messages. Stop and save now.",
                self.name,
                self.min_free_disk_gb / 2,
            )

    def flush_if_due(self) -> None:
        """flush() when flush_interval_s has passed since the last one (for periodic timers)."""
        if self._clock() - self._last_flush >= self.flush_interval_s:
            self.flush()

    # ------------------------------------------------------------------ ending
    def _stop_thread(self) -> None:
        if self._queue is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._thread_error is not None:
            raise RuntimeError(f"episode writer thread failed: {self._thread_error}") from self._thread_error

    def finish(self, success: bool | None = None) -> Path:
        """Close the bag, write the final episode.json and move the episode to root/<name>. Returns that path."""
        if self._state != "recording":
            raise RuntimeError(f"episode {self.name} is already {self._state}")
        if success is not None and not isinstance(success, bool):
            raise ValueError(f"success must be True, False or None (unlabelled), got {success!r}")
        self._stop_thread()
        with self._lock:
            self._writer.close()
            if self.fsync:  # the finished episode must survive a power cut right after "saved"
                _fsync_file(self.work_dir / f"{self.name}.mcap")
                _fsync_file(self.work_dir / "metadata.yaml")
            self._state = "finished"
            self._write_json("complete", success=success)
            os.replace(self.work_dir, self.final_dir)
        _remove_if_empty(self.root / INCOMPLETE_DIR)
        summary = ", ".join(f"{t}={s.count}" for t, s in self._stats.items())
        log.info("saved episode %s (success=%s): %s", self.final_dir, success, summary)
        return self.final_dir

    def discard(self) -> None:
        """Stop and delete everything written for this episode."""
        if self._state != "recording":
            raise RuntimeError(f"episode {self.name} is already {self._state}")
        try:
            self._stop_thread()
        finally:
            self._writer.abort()
            self._state = "discarded"
            shutil.rmtree(self.work_dir, ignore_errors=True)
            _remove_if_empty(self.root / INCOMPLETE_DIR)
        log.info("discarded episode %s", self.name)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._state != "recording":
            return
        if exc_type is None:
            self.finish(None)
        else:
            # Keep what was recorded: flushed, marked incomplete, recoverable with recover_episode().
            try:
                self._stop_thread()
            except RuntimeError:
                pass
            self.flush()
            log.warning("episode %s left incomplete at %s after %s", self.name, self.work_dir, exc_type.__name__)

    # ------------------------------------------------------------------ metadata
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-topic counts, rates, gaps and drops so far."""
        with self._lock:
            return {t: s.summary() for t, s in self._stats.items()}

    def _write_json(self, status: str, success: bool | None = None) -> None:
        topics = {t: {**s.summary(), **self._topic_extra.get(t, {})} for t, s in self._stats.items()}
        firsts = [s.first_ns for s in self._stats.values() if s.first_ns is not None]
        lasts = [s.last_ns for s in self._stats.values() if s.last_ns is not None]
        data = {
            "format": EPISODE_FORMAT,
            "format_version": EPISODE_FORMAT_VERSION,
            "name": self.name,
            "status": status,
            "success": success,
            **{k: v for k, v in asdict(self.metadata).items()},
            "recorder_version": __version__,
            "wall_start": self._wall_start,
            "wall_end": _utc_now() if status != "recording" else None,
            "start_time_ns": min(firsts) if firsts else None,
            "end_time_ns": max(lasts) if lasts else None,
            "duration_s": round((max(lasts) - min(firsts)) / 1e9, 6) if firsts else 0.0,
            "message_count": sum(s.count for s in self._stats.values()),
            "dropped_total": sum(s.dropped for s in self._stats.values()),
            "topics": topics,
            "bag": {"storage": "mcap", "version": BAG_VERSION, "file": f"{self.name}.mcap"},
            "flushes": self._flushes,
            "flush_interval_s": self.flush_interval_s,
        }
        _write_json_atomic(self.work_dir / EPISODE_JSON, data)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


# ---------------------------------------------------------------------- reading
class RawMessage(NamedTuple):
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


class DecodedMessage(NamedTuple):
    topic: str
    msgtype: str
    log_time_ns: int
    msg: Any


def _find_bag_dir(path: Path) -> Path:
    if (path / "metadata.yaml").exists():
        return path
    if (path / EPISODE_JSON).exists() or list(path.glob("*.mcap")):
        raise IncompleteEpisodeError(
            f"episode {path} was never finished (no metadata.yaml: the recorder stopped without saving). "
            f"Run `mole-vla dataset recover {path}` (or mole_vla_ros.data.episode.recover_episode) to salvage it."
        )
    raise FileNotFoundError(f"{path} is not an episode directory (no metadata.yaml or {EPISODE_JSON} inside)")


class EpisodeReader:
    """Read a finished episode: `metadata` (episode.json), `topics`, raw or decoded messages in log-time order.

    Works on any rosbag2 directory too (metadata then only holds what the bag says).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"episode {self.path} does not exist or is not a directory")
        bag_dir = _find_bag_dir(self.path)
        meta_path = self.path / EPISODE_JSON
        self.metadata: dict[str, Any] = (
            json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {"name": self.path.name}
        )
        self._store = get_typestore()
        self._reader = Reader(bag_dir)
        self._reader.open()
        self.topics: dict[str, str] = {c.topic: c.msgtype for c in self._reader.connections}
        self.message_counts: dict[str, int] = {}
        for c in self._reader.connections:
            self.message_counts[c.topic] = self.message_counts.get(c.topic, 0) + c.msgcount

    @property
    def name(self) -> str:
        return self.metadata.get("name", self.path.name)

    @property
    def instruction(self) -> str:
        return self.metadata.get("instruction", "")

    @property
    def success(self) -> bool | None:
        return self.metadata.get("success")

    @property
    def status(self) -> str:
        return self.metadata.get("status", "complete")

    def _connections(self, topics: Iterable[str] | None):
        if topics is None:
            return list(self._reader.connections)
        wanted = {normalize_topic(t) for t in topics}
        missing = sorted(wanted - set(self.topics))
        if missing:
            raise KeyError(f"episode {self.name} has no topic(s) {missing}; it has {sorted(self.topics)}")
        return [c for c in self._reader.connections if c.topic in wanted]

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[RawMessage]:
        """Raw messages (unchanged CDR bytes) of `topics` (all when None), in log-time order."""
        for conn, t, data in self._reader.messages(connections=self._connections(topics)):
            yield RawMessage(conn.topic, conn.msgtype, t, bytes(data))

    def decoded(self, topics: Iterable[str] | None = None) -> Iterator[DecodedMessage]:
        """Messages deserialized with the shared type store (same field names as rclpy messages)."""
        for conn, t, data in self._reader.messages(connections=self._connections(topics)):
            yield DecodedMessage(conn.topic, conn.msgtype, t, self._store.deserialize_cdr(data, conn.msgtype))

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def relabel_episode(path: str | Path, success: bool | None) -> None:
    """Set the success label of a finished episode (rewrites its episode.json atomically)."""
    meta_path = Path(path) / EPISODE_JSON
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} is not a finished episode (no {EPISODE_JSON})")
    if success is not None and not isinstance(success, bool):
        raise ValueError(f"success must be True, False or None, got {success!r}")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["success"] = success
    _write_json_atomic(meta_path, meta)


# ---------------------------------------------------------------------- recovery
def incomplete_episodes(root: str | Path) -> list[Path]:
    """Unfinished episodes (recorder died or still running) under `root`."""
    d = Path(root) / INCOMPLETE_DIR
    return sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def list_episodes(root: str | Path) -> list[Path]:
    """Finished episodes directly under `root` (directories holding episode.json and metadata.yaml), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"episode root {root} does not exist")
    return sorted(p for p in root.iterdir() if (p / EPISODE_JSON).exists() and (p / "metadata.yaml").exists())


def recover_episode(path: str | Path) -> Path:
    """Turn an unfinished episode (root/_incomplete/<name>) into a finished one at root/<name>.

    Every message in a complete MCAP chunk (all but at most the last flush interval) is copied into a fresh bag;
    episode.json gets "status": "recovered" and a "recovery" section (messages kept, bytes lost). Returns the path.
    Raises FileNotFoundError when `path` holds no MCAP file, ValueError when the file is not MCAP.
    """
    path = Path(path)
    if (path / "metadata.yaml").exists() and path.parent.name != INCOMPLETE_DIR:
        return path  # already finished
    mcaps = sorted(path.glob("*.mcap"))
    if not mcaps:
        raise FileNotFoundError(f"{path} holds no .mcap file: nothing to recover (delete the directory)")
    name = path.name
    root = path.parent.parent if path.parent.name == INCOMPLETE_DIR else path.parent
    final = root / name
    if final.exists():
        raise FileExistsError(f"cannot recover {path}: {final} exists already")
    meta_path = path / EPISODE_JSON
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {"name": name}

    salvage = salvage_mcap(mcaps[0])
    store = get_typestore()
    staging = path.parent / f".{name}.recovering"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    bag_dir = staging / name
    writer = Writer(bag_dir, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    from rosbags.rosbag2.storage_mcap import get_qos

    conns = {}
    for cid, ch in sorted(salvage.channels.items()):
        schema = salvage.schemas.get(ch.schema_id)
        msgtype = schema.name if schema else ""
        if msgtype not in store.fielddefs:
            log.warning("recover %s: skipping topic %s of unknown type %r", name, ch.topic, msgtype)
            continue
        qos = get_qos(b"".join(_mcap_string(k) + _mcap_string(v) for k, v in ch.metadata.items()))
        conns[cid] = writer.add_connection(ch.topic, msgtype, typestore=store, offered_qos_profiles=qos)
    stats: dict[str, _TopicStats] = {}
    for cid, t, data in sorted(salvage.messages, key=lambda m: m[1]):
        conn = conns.get(cid)
        if conn is None:
            continue
        writer.write(conn, t, data)
        st = stats.setdefault(conn.topic, _TopicStats(conn.msgtype, {}, None))
        st.add(t, len(data))
    writer.close()

    old_topics = meta.get("topics", {})
    topics = {}
    for topic, st in stats.items():
        s = st.summary()
        prev = old_topics.get(topic, {})
        s["qos"], s["expected_hz"], s["dropped"] = prev.get("qos", {}), prev.get("expected_hz"), prev.get("dropped", 0)
        topics[topic] = s
    for topic, prev in old_topics.items():
        topics.setdefault(topic, {**prev, "count": 0, "rate_hz": None, "first_ns": None, "last_ns": None})
    firsts = [s["first_ns"] for s in topics.values() if s.get("first_ns") is not None]
    lasts = [s["last_ns"] for s in topics.values() if s.get("last_ns") is not None]
    meta.update(
        status="recovered",
        topics=topics,
        start_time_ns=min(firsts) if firsts else None,
        end_time_ns=max(lasts) if lasts else None,
        duration_s=round((max(lasts) - min(firsts)) / 1e9, 6) if firsts else 0.0,
        message_count=sum(s["count"] for s in topics.values()),
        recovery={
            "recovered_at": _utc_now(),
            "messages": sum(st.count for st in stats.values()),
            "lost_tail_bytes": salvage.lost_bytes,
            "file_had_footer": salvage.has_footer,
        },
    )
    meta.setdefault("format", EPISODE_FORMAT)
    meta.setdefault("format_version", EPISODE_FORMAT_VERSION)
    meta.setdefault("success", None)
    meta["bag"] = {"storage": "mcap", "version": BAG_VERSION, "file": f"{name}.mcap"}
    _write_json_atomic(bag_dir / EPISODE_JSON, meta)
    os.replace(bag_dir, final)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    _remove_if_empty(root / INCOMPLETE_DIR)
    log.info(
        "recovered episode %s: %d messages kept, %d trailing bytes lost",
        final,
        meta["recovery"]["messages"],
        salvage.lost_bytes,
    )
    return final


def _mcap_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return len(b).to_bytes(4, "little") + b
