"""The recorder without ROS: configuration, the episode state machine, live rate monitoring and drop counting.

`ros/recorder_node.py` only wires rclpy to this: every subscription callback calls `RecorderCore.on_message` with the
serialized bytes and the receive time, services and the command topic call `handle_command`, a timer calls `tick`.

States: idle --start--> recording --stop--> stopped --save/discard--> idle. `save` and `discard` also work straight
from recording. Labels (`success`, `failure`) apply to the open episode, or to the last saved one when idle (so an
operator can save first and judge afterwards).

Commands (service names, `~/command` std_msgs/String payloads and keyboard keys all map to these):
    start [instruction]   open a new episode (instruction defaults to the last one / the config's)
    stop                  stop writing; the episode waits for save or discard
    save [success|failure]  finish the episode (optionally labelled) and move it to the output directory
    discard               delete the open episode
    success | failure     label the open (or last saved) episode
    instruction <text>    set the instruction for the next episode
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mole_vla_ros.data.episode import (
    EpisodeMetadata,
    EpisodeWriter,
    QosSpec,
    TopicSpec,
    normalize_topic,
    relabel_episode,
)
from mole_vla_ros.data.typestore import get_typestore, require_msgtype
from mole_vla_ros.robot.franka import ROBOT_TYPES

log = logging.getLogger(__name__)

QOS_PRESETS = {
    # Recording wants every message: deeper queues than a controller would use.
    "reliable": QosSpec("reliable", "volatile", 100),
    "best_effort": QosSpec("best_effort", "volatile", 100),
    "sensor_data": QosSpec("best_effort", "volatile", 10),
    "latched": QosSpec("reliable", "transient_local", 1),
}


@dataclass
class RecordedTopicConfig:
    """One topic to record.

    name:        topic, relative names are resolved under the recorder's namespace (e.g. the robot namespace)
    type:        full message type, e.g. sensor_msgs/msg/Image
    qos:         one of QOS_PRESETS ('reliable', 'best_effort', 'sensor_data', 'latched')
    expected_hz: nominal publish rate; enables rate warnings and drop counting (None: record only)
    camera:      camera name when this is a camera image topic (stall detection; dataset builder input)
    required:    warn loudly (and refuse `start` when `require_all_topics`) if nothing arrived
    """

    name: str
    type: str
    qos: str = "reliable"
    expected_hz: float | None = None
    camera: str | None = None
    required: bool = True

    def __post_init__(self):
        normalize_topic(self.name)
        require_msgtype(self.type)
        if self.qos not in QOS_PRESETS:
            raise ValueError(f"topic {self.name}: qos must be one of {sorted(QOS_PRESETS)}, got {self.qos!r}")
        if self.expected_hz is not None:
            self.expected_hz = float(self.expected_hz)
            if not self.expected_hz > 0:
                raise ValueError(f"topic {self.name}: expected_hz must be > 0 (or null), got {self.expected_hz}")
        if self.camera is not None and self.type not in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
            raise ValueError(
                f"topic {self.name}: camera={self.camera!r} needs type sensor_msgs/msg/Image or "
                f"sensor_msgs/msg/CompressedImage, got {self.type}"
            )


@dataclass
class RecorderConfig:
    """Everything `config/recorder.yaml` sets. Validated on construction; errors say which key to change."""

    output_dir: str = "~/mole_vla_episodes"
    robot_type: str = "fr3"
    namespace: str = ""
    topics: list[RecordedTopicConfig] = field(default_factory=list)
    default_instruction: str = ""
    operator: str = ""
    teleop_device: str = ""
    flush_interval_s: float = 1.0
    min_free_disk_gb: float = 5.0
    threaded_writer: bool = True
    max_queue_mb: float = 1024.0
    max_episode_s: float = 0.0  # 0 = no limit; otherwise the episode stops itself (operator still saves/discards)
    rate_warn_fraction: float = 0.8  # warn when a topic runs below this fraction of expected_hz
    monitor_window_s: float = 2.0
    camera_stall_s: float = 0.5
    drop_gap_factor: float = 1.5  # a stamp gap longer than this many periods counts as dropped messages
    require_all_topics: bool = False

    def __post_init__(self):
        self.topics = [t if isinstance(t, RecordedTopicConfig) else _topic_from_dict(t) for t in self.topics]
        if not self.topics:
            raise ValueError("recorder config lists no topics: add entries under 'topics:' (name, type, ...)")
        names = [self.resolve(t.name) for t in self.topics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"recorder config lists topic(s) {dupes} more than once")
        cams = [t.camera for t in self.topics if t.camera]
        if len(set(cams)) != len(cams):
            raise ValueError(f"camera names must be unique, got {cams}")
        if self.robot_type not in ROBOT_TYPES:
            raise ValueError(f"robot_type must be one of {ROBOT_TYPES}, got {self.robot_type!r}")
        for key in ("flush_interval_s", "monitor_window_s", "camera_stall_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if not 0 < self.rate_warn_fraction <= 1:
            raise ValueError(f"rate_warn_fraction must be in (0, 1], got {self.rate_warn_fraction!r}")
        if self.drop_gap_factor <= 1:
            raise ValueError(f"drop_gap_factor must be > 1 (periods), got {self.drop_gap_factor!r}")
        if self.min_free_disk_gb < 0 or self.max_episode_s < 0 or self.max_queue_mb <= 0:
            raise ValueError(
                "min_free_disk_gb and max_episode_s must be >= 0 and max_queue_mb > 0, got "
                f"{self.min_free_disk_gb!r}, {self.max_episode_s!r}, {self.max_queue_mb!r}"
            )
        if self.namespace and not self.namespace.startswith("/"):
            self.namespace = "/" + self.namespace

    def resolve(self, topic: str) -> str:
        """Absolute topic name: relative names live under `namespace`."""
        if topic.startswith("/"):
            return topic
        return normalize_topic(f"{self.namespace.rstrip('/')}/{topic}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecorderConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown recorder config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RecorderConfig:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"recorder config {path} does not exist")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of recorder settings, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def topic_specs(self) -> list[TopicSpec]:
        return [TopicSpec(self.resolve(t.name), t.type, QOS_PRESETS[t.qos], t.expected_hz) for t in self.topics]

    def cameras(self) -> dict[str, dict[str, Any]]:
        """camera name -> {"topic", "type", "info_topic" (when its camera_info is recorded)}."""
        names = {self.resolve(t.name) for t in self.topics}
        out = {}
        for t in self.topics:
            if t.camera:
                topic = self.resolve(t.name)
                entry = {"topic": topic, "type": t.type}
                info = camera_info_topic(topic)
                if info in names:
                    entry["info_topic"] = info
                out[t.camera] = entry
        return out


def camera_info_topic(image_topic: str) -> str:
    """The camera_info topic next to an image topic (image_transport convention: same namespace)."""
    base = image_topic.rsplit("/", 1)[0]
    if base.endswith("/compressed") or image_topic.endswith("/compressed"):
        base = image_topic.rsplit("/", 2)[0]
    return f"{base}/camera_info"


def _topic_from_dict(d: Any) -> RecordedTopicConfig:
    if not isinstance(d, dict):
        raise ValueError(f"each topics entry must be a mapping with name and type, got {d!r}")
    known = set(RecordedTopicConfig.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"topic {d.get('name')!r}: unknown key(s) {unknown}; known: {sorted(known)}")
    missing = [k for k in ("name", "type") if k not in d]
    if missing:
        raise ValueError(f"topics entry {d!r} misses {missing}")
    return RecordedTopicConfig(**d)


# ------------------------------------------------------------------------------------------------ monitoring
def header_stamp_ns(data: bytes | memoryview) -> int | None:
    """The std_msgs/Header stamp (ns) at the start of a CDR message whose first field is a header, else None."""
    if len(data) < 12:
        return None
    little = data[1] == 1  # CDR encapsulation: 0x0001 = little endian, 0x0000 = big endian
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", data, 4)
    return sec * 1_000_000_000 + nsec


@functools.lru_cache(maxsize=128)
def has_header(msgtype: str) -> bool:
    """True when the message's first field is a std_msgs/Header (its stamp then sits at a fixed CDR offset)."""
    fields = get_typestore().fielddefs[msgtype][1]
    return bool(fields) and fields[0][0] == "header" and fields[0][1][1] == "std_msgs/msg/Header"


class TopicMonitor:
    """Live statistics of one topic: rate over a sliding window, stalls, and messages lost between two stamps."""

    def __init__(self, topic: str, expected_hz: float | None, has_header: bool, window_s: float, gap_factor: float):
        self.topic = topic
        self.expected_hz = expected_hz
        self.has_header = has_header
        self.window_ns = int(window_s * 1e9)
        self.gap_factor = gap_factor
        self.recv: collections.deque[int] = collections.deque()
        self.count = 0
        self.last_recv_ns: int | None = None
        self.last_stamp_ns: int | None = None
        self.dropped = 0
        self.latency_sum_ns = 0
        self.latency_max_ns = 0
        self.latency_n = 0

    def add(self, data: bytes | memoryview, recv_ns: int) -> int:
        """Record one arrival; returns how many messages were lost just before it (0 without expected_hz)."""
        self.count += 1
        self.recv.append(recv_ns)
        while self.recv and self.recv[0] < recv_ns - self.window_ns:
            self.recv.popleft()
        lost = 0
        t = header_stamp_ns(data) if self.has_header else None
        if t is not None and t > 0:
            lat = recv_ns - t
            self.latency_sum_ns += lat
            self.latency_max_ns = max(self.latency_max_ns, lat)
            self.latency_n += 1
        else:
            t = recv_ns  # no header: judge gaps by arrival time
        if self.last_stamp_ns is not None and t < self.last_stamp_ns - 1_000_000_000:
            self.last_stamp_ns = None  # clock jumped back (bag loop, sim reset): restart gap tracking
        if self.expected_hz and self.last_stamp_ns is not None and t > self.last_stamp_ns:
            periods = (t - self.last_stamp_ns) * self.expected_hz / 1e9
            if periods > self.gap_factor:
                lost = round(periods) - 1
                self.dropped += lost
        if self.last_stamp_ns is None or t > self.last_stamp_ns:
            self.last_stamp_ns = t
        self.last_recv_ns = recv_ns
        return lost

    def rate_hz(self, now_ns: int) -> float:
        while self.recv and self.recv[0] < now_ns - self.window_ns:
            self.recv.popleft()
        return len(self.recv) * 1e9 / self.window_ns

    def reset_episode_counters(self) -> None:
        self.dropped = 0
        self.latency_sum_ns = self.latency_max_ns = self.latency_n = 0

    def latency_ms(self) -> dict[str, float] | None:
        if not self.latency_n:
            return None
        return {
            "mean": round(self.latency_sum_ns / self.latency_n / 1e6, 3),
            "max": round(self.latency_max_ns / 1e6, 3),
        }


@dataclass
class CommandResult:
    ok: bool
    message: str


IDLE, RECORDING, STOPPED = "idle", "recording", "stopped"


def _locked(method):
    """Run a RecorderCore method under its lock: ROS callbacks may come from several executor threads."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


WARN_EVERY_S = 5.0


class RecorderCore:
    """The recorder's behaviour, clock-injectable and ROS-free.

    clock: () -> ns since the epoch; the node passes its ROS clock (sim time aware), tests a fake one.
    """

    def __init__(
        self,
        config: RecorderConfig,
        clock: Callable[[], int] = time.time_ns,
        writer_factory: Callable[..., EpisodeWriter] = EpisodeWriter,
    ):
        self.config = config
        self.clock = clock
        self.writer_factory = writer_factory
        self.output_dir = Path(config.output_dir).expanduser()
        self.specs = {s.name: s for s in config.topic_specs()}
        self.camera_topics = {config.resolve(t.name): t.camera for t in config.topics if t.camera}
        self.required = {config.resolve(t.name) for t in config.topics if t.required}
        cams = config.cameras()
        self._camera_fact_topics = {c["topic"] for c in cams.values()} | {
            c["info_topic"] for c in cams.values() if "info_topic" in c
        }
        self._last_raw: dict[str, bytes | memoryview] = {}
        self.monitors = {
            name: TopicMonitor(
                name, s.expected_hz, has_header(s.msgtype), config.monitor_window_s, config.drop_gap_factor
            )
            for name, s in self.specs.items()
        }
        self._lock = threading.RLock()
        self.state = IDLE
        self.instruction = config.default_instruction
        self.label: bool | None = None
        self.writer: EpisodeWriter | None = None
        self.episode_start_ns: int | None = None
        self.last_saved: Path | None = None
        self.saved_count = 0
        self.started_ns = clock()
        self.error: str | None = None  # last writer failure, reported by tick() and status()
        self._last_warn: dict[str, int] = {}

    # ------------------------------------------------------------------ data path
    @_locked
    def on_message(self, topic: str, data: bytes | memoryview, recv_ns: int | None = None) -> None:
        """Called for every received serialized message (any state: monitoring runs while idle too)."""
        mon = self.monitors.get(topic)
        if mon is None:
            raise ValueError(
                f"recorder got a message on {topic!r}, which is not configured; topics: {sorted(self.monitors)}"
            )
        recv_ns = self.clock() if recv_ns is None else recv_ns
        lost = mon.add(data, recv_ns)
        if topic in self._camera_fact_topics:
            self._last_raw[topic] = data  # a reference only; decoded once, when the episode is saved
        if self.state == RECORDING and self.writer is not None:
            try:
                self.writer.write(topic, data, recv_ns)
                if lost:
                    self.writer.note_dropped(topic, lost)
            except Exception as exc:
                # A failing writer (disk error, writer thread died) must not kill the node or lose the episode
                # silently: stop writing, keep what is on disk, tell the operator.
                self.state = STOPPED
                self.error = f"writing {topic} failed: {exc}"
                log.exception("episode %s: %s; recording stopped (save or discard it)", self.writer.name, self.error)

    # ------------------------------------------------------------------ commands
    @_locked
    def handle_command(self, text: str) -> CommandResult:
        """Run one textual command (see the module docstring); never raises for operator mistakes."""
        text = (text or "").strip()
        verb, _, arg = text.partition(" ")
        verb = verb.lower()
        arg = arg.strip()
        try:
            if verb == "start":
                return self.start(arg or None)
            if verb == "stop":
                return self.stop()
            if verb == "save":
                if arg and arg.lower() not in ("success", "failure"):
                    return CommandResult(False, f"save takes 'success' or 'failure', got {arg!r}")
                return self.save(None if not arg else arg.lower() == "success")
            if verb == "discard":
                return self.discard()
            if verb in ("success", "failure"):
                return self.set_label(verb == "success")
            if verb == "instruction":
                if not arg:
                    return CommandResult(False, "instruction needs text, e.g. 'instruction put the cube in the bowl'")
                self.instruction = arg
                return CommandResult(True, f"instruction for the next episode: {arg!r}")
            if verb == "status":
                return CommandResult(True, json.dumps(self.status()))
        except Exception as exc:  # disk full, bad writer state: report to the operator, keep the node alive
            log.exception("recorder command %r failed", text)
            return CommandResult(False, f"{verb} failed: {exc}")
        return CommandResult(
            False,
            f"unknown command {text!r}; use start [instruction], stop, save [success|failure], discard, success, "
            "failure, instruction <text>, status",
        )

    @_locked
    def start(self, instruction: str | None = None) -> CommandResult:
        if self.state != IDLE:
            return CommandResult(False, f"cannot start: an episode is {self.state}; save or discard it first")
        if instruction:
            self.instruction = instruction
        if not self.instruction:
            return CommandResult(False, "cannot start without an instruction: send 'start <instruction>'")
        silent = sorted(t for t in self.required if self.monitors[t].count == 0)
        if silent and self.config.require_all_topics:
            return CommandResult(False, f"cannot start: no messages yet on required topic(s) {silent}")
        meta = EpisodeMetadata(
            instruction=self.instruction,
            robot_type=self.config.robot_type,
            cameras=self.config.cameras(),
            operator=self.config.operator,
            teleop_device=self.config.teleop_device,
            extra={"recorder_config": _config_summary(self.config)},
        )
        self.writer = self.writer_factory(
            self.output_dir,
            topics=list(self.specs.values()),
            metadata=meta,
            flush_interval_s=self.config.flush_interval_s,
            min_free_disk_gb=self.config.min_free_disk_gb,
            threaded=self.config.threaded_writer,
            max_queue_mb=self.config.max_queue_mb,
        )
        for mon in self.monitors.values():
            mon.reset_episode_counters()
        self.state = RECORDING
        self.label = None
        self.error = None
        self.episode_start_ns = self.clock()
        msg = f"recording episode {self.writer.name}: {self.instruction!r}"
        if silent:
            msg += f" (warning: nothing received yet on {silent})"
        log.info(msg)
        return CommandResult(True, msg)

    @_locked
    def stop(self) -> CommandResult:
        if self.state != RECORDING:
            return CommandResult(False, f"cannot stop: recorder is {self.state}")
        self.state = STOPPED
        assert self.writer is not None
        self.writer.flush()
        return CommandResult(True, f"stopped {self.writer.name}; save (success/failure) or discard it")

    @_locked
    def save(self, success: bool | None = None) -> CommandResult:
        if self.state not in (RECORDING, STOPPED):
            return CommandResult(False, "nothing to save: no episode is open")
        if success is not None:
            self.label = success
        assert self.writer is not None
        self._store_topic_extras()
        self._store_camera_facts()
        path = self.writer.finish(self.label)
        self.writer, self.state = None, IDLE
        self.last_saved = path
        self.saved_count += 1
        return CommandResult(True, f"saved {path} (success={self.label})")

    @_locked
    def discard(self) -> CommandResult:
        if self.state not in (RECORDING, STOPPED):
            return CommandResult(False, "nothing to discard: no episode is open")
        assert self.writer is not None
        name = self.writer.name
        self.writer.discard()
        self.writer, self.state, self.label = None, IDLE, None
        return CommandResult(True, f"discarded {name}")

    @_locked
    def set_label(self, success: bool) -> CommandResult:
        word = "success" if success else "failure"
        if self.state in (RECORDING, STOPPED):
            self.label = success
            return CommandResult(True, f"labelled the open episode {word}")
        if self.last_saved is not None:
            relabel_episode(self.last_saved, success)
            return CommandResult(True, f"labelled {self.last_saved.name} {word}")
        return CommandResult(False, "nothing to label: no open or saved episode")

    def _store_topic_extras(self) -> None:
        assert self.writer is not None
        for topic, mon in self.monitors.items():
            self.writer.set_topic_info(topic, latency_ms=mon.latency_ms(), stamp_gap_dropped=mon.dropped)

    def _store_camera_facts(self) -> None:
        """Image size/encoding and intrinsics (from camera_info) of each camera, into episode.json's cameras."""
        assert self.writer is not None
        store = get_typestore()
        for cam, entry in self.writer.metadata.cameras.items():
            try:
                raw = self._last_raw.get(entry.get("topic", ""))
                if raw is not None and entry.get("type") == "sensor_msgs/msg/Image":
                    img = store.deserialize_cdr(raw, "sensor_msgs/msg/Image")
                    entry.update(width=int(img.width), height=int(img.height), encoding=img.encoding,
                                 frame_id=img.header.frame_id)  # fmt: skip
                elif raw is not None:
                    img = store.deserialize_cdr(raw, "sensor_msgs/msg/CompressedImage")
                    entry.update(format=img.format, frame_id=img.header.frame_id)
                info_raw = self._last_raw.get(entry.get("info_topic", ""))
                if info_raw is not None:
                    info = store.deserialize_cdr(info_raw, "sensor_msgs/msg/CameraInfo")
                    entry["intrinsics"] = {
                        "width": int(info.width),
                        "height": int(info.height),
                        "distortion_model": info.distortion_model,
                        "k": [float(x) for x in info.k],
                        "d": [float(x) for x in info.d],
                        "frame_id": info.header.frame_id,
                    }
            except Exception as exc:  # a malformed message must not block saving the episode
                log.warning("camera %s: could not read image/camera_info facts: %s", cam, exc)

    # ------------------------------------------------------------------ periodic checks
    @_locked
    def tick(self, now_ns: int | None = None) -> list[str]:
        """Rate / stall / disk checks (call at ~1-2 Hz). Returns every current warning; logs each at most every
        WARN_EVERY_S seconds."""
        now = self.clock() if now_ns is None else now_ns
        warnings = []
        warm = now - self.started_ns >= self.config.monitor_window_s * 1e9
        for topic, mon in self.monitors.items():
            if mon.count == 0:
                if warm and topic in self.required:
                    warnings.append(f"{topic}: no messages received yet")
                continue
            cam = self.camera_topics.get(topic)
            if cam and mon.last_recv_ns is not None and now - mon.last_recv_ns > self.config.camera_stall_s * 1e9:
                stall = (now - mon.last_recv_ns) / 1e9
                warnings.append(f"camera {cam} ({topic}) stalled: no frame for {stall:.2f} s")
            elif mon.expected_hz and warm:
                rate = mon.rate_hz(now)
                if rate < self.config.rate_warn_fraction * mon.expected_hz:
                    warnings.append(f"{topic}: {rate:.1f} Hz, expected {mon.expected_hz:g} Hz")
        if self.error:
            warnings.append(f"recording stopped: {self.error}")
        if self.writer is not None and self.writer.low_disk:
            warnings.append("disk almost full: messages are being dropped; save the episode now")
        if (
            self.state == RECORDING
            and self.config.max_episode_s > 0
            and self.episode_start_ns is not None
            and now - self.episode_start_ns >= self.config.max_episode_s * 1e9
        ):
            self.stop()
            warnings.append(f"episode reached max_episode_s={self.config.max_episode_s:g} s and was stopped")
        if self.writer is not None and self.state == RECORDING:
            self.writer.flush_if_due()  # also when no message arrives to trigger it
        for w in warnings:  # the same problem is logged at most every WARN_EVERY_S (tick runs at ~2 Hz)
            key = w.split(":")[0]
            if now - self._last_warn.get(key, -(1 << 62)) >= WARN_EVERY_S * 1e9:
                log.warning(w)
                self._last_warn[key] = now
        return warnings

    @_locked
    def status(self, now_ns: int | None = None) -> dict[str, Any]:
        """A JSON-able snapshot for the status topic and the keyboard CLI."""
        now = self.clock() if now_ns is None else now_ns
        return {
            "state": self.state,
            "episode": self.writer.name if self.writer else None,
            "instruction": self.instruction,
            "label": self.label,
            "elapsed_s": round((now - self.episode_start_ns) / 1e9, 2)
            if self.episode_start_ns and self.state != IDLE
            else 0.0,
            "saved_episodes": self.saved_count,
            "error": self.error,
            "last_saved": str(self.last_saved) if self.last_saved else None,
            "topics": {
                t: {"rate_hz": round(m.rate_hz(now), 1), "expected_hz": m.expected_hz, "dropped": m.dropped}
                for t, m in self.monitors.items()
            },
        }

    @_locked
    def shutdown(self) -> None:
        """On node exit: an open episode is flushed and left recoverable (never silently deleted or faked)."""
        if self.writer is not None:
            self.writer.flush()
            log.warning(
                "recorder shut down with episode %s %s; it stays in %s (mole-vla dataset recover)",
                self.writer.name,
                self.state,
                self.writer.work_dir,
            )


def _config_summary(config: RecorderConfig) -> dict[str, Any]:
    d = asdict(config)
    d.pop("operator", None)
    return d


# Keyboard bindings of ros/record_keyboard.py: key -> command. Kept here so they are documented and tested once.
KEYMAP: dict[str, str] = {
    "r": "start",
    "s": "stop",
    "w": "save",
    "y": "save success",
    "n": "save failure",
    "d": "discard",
    "+": "success",
    "-": "failure",
    "i": "instruction",  # the CLI then prompts for the text
    "?": "status",
}
