"""One way to build ROS 2 messages for both the live node (rclpy classes) and offline replay (rosbags dataclasses).

`conversions.py` builds every outgoing message through a `MessageFactory`, so the message a replay writes into an
MCAP file is field-for-field the message the live node publishes. Two factories share one small API:

    factory.make("geometry_msgs/msg/PoseStamped", header=..., pose=...)   # unspecified fields get ROS defaults
    factory.time(12.5)        # builtin_interfaces/msg/Time
    factory.duration(0.1)     # builtin_interfaces/msg/Duration
    factory.header(12.5, "fr3_link0")

Type names may be written `pkg/msg/Name`, `pkg/Name` (msg assumed), or `pkg/action/Name_Goal` (also
`pkg/srv/Name_Request`), which is how rosbags names action and service parts. `RosbagsMessages` needs no ROS
installation; `RclpyMessages` imports the generated Python classes lazily and is only usable where ROS 2 is sourced.
"""

from __future__ import annotations

import array
import importlib
import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

# ROS IDL primitive name -> numpy dtype. rosbags stores every primitive array/sequence as a numpy array.
_NUMPY_DTYPES: dict[str, str] = {
    "bool": "bool",
    "byte": "uint8",
    "octet": "uint8",
    "char": "uint8",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "int64": "int64",
    "uint64": "uint64",
    "float32": "float32",
    "float64": "float64",
    # rclpy spells these the IDL way
    "float": "float32",
    "double": "float64",
    "boolean": "bool",
}
_FLOAT_TYPES = {"float32", "float64", "float", "double"}
# array.array typecodes rclpy accepts for numeric sequences (rosidl_generator_py checks the typecode).
_ARRAY_TYPECODES: dict[str, str] = {
    "float32": "f",
    "float": "f",
    "float64": "d",
    "double": "d",
    "int8": "b",
    "uint8": "B",
    "octet": "B",
    "byte": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
}
_SUFFIXES = ("_Goal", "_Result", "_Feedback", "_Request", "_Response")


def normalize_type_name(type_name: str) -> str:
    """`sensor_msgs/Image` -> `sensor_msgs/msg/Image`; `pkg/msg/Name` and `pkg/action/Name_Goal` pass unchanged."""
    parts = type_name.strip().split("/")
    if len(parts) == 2 and all(parts):
        return f"{parts[0]}/msg/{parts[1]}"
    if len(parts) == 3 and all(parts) and parts[1] in ("msg", "srv", "action"):
        return "/".join(parts)
    raise ValueError(
        f"message type {type_name!r} is not a ROS 2 type name; expected 'package/msg/Name' "
        "(e.g. 'sensor_msgs/msg/Image') or 'package/action/Name_Goal'"
    )


def seconds_to_stamp(t: float) -> tuple[int, int]:
    """Split seconds into (sec, nanosec) with 0 <= nanosec < 1e9, as builtin_interfaces wants (negative t allowed)."""
    if not math.isfinite(t):
        raise ValueError(f"cannot turn time {t!r} into a ROS stamp; it must be a finite number of seconds")
    total_ns = round(t * 1e9)
    sec, nanosec = divmod(total_ns, 1_000_000_000)
    return int(sec), int(nanosec)


def stamp_to_seconds(stamp: Any) -> float:
    """builtin_interfaces Time/Duration (either backend) -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


class MessageFactory(Protocol):
    """What conversions need from a message backend."""

    def make(self, type_name: str, **fields: Any) -> Any: ...

    def time(self, t: float) -> Any: ...

    def duration(self, t: float) -> Any: ...

    def header(self, t: float, frame_id: str) -> Any: ...

    def constant(self, type_name: str, name: str) -> Any: ...


class _FactoryHelpers:
    """Stamp helpers shared by both backends (they only call `make`)."""

    def time(self, t: float) -> Any:
        sec, nanosec = seconds_to_stamp(t)
        return self.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)

    def duration(self, t: float) -> Any:
        sec, nanosec = seconds_to_stamp(t)
        return self.make("builtin_interfaces/msg/Duration", sec=sec, nanosec=nanosec)

    def header(self, t: float, frame_id: str) -> Any:
        return self.make("std_msgs/msg/Header", stamp=self.time(t), frame_id=frame_id)

    def make(self, type_name: str, **fields: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError


class RosbagsMessages(_FactoryHelpers):
    """Messages as rosbags dataclasses (ROS 2 Humble definitions plus franka_msgs), ready for `serialize`.

    rosbags dataclasses need every field; `make` fills the ones not given with ROS defaults (0, "", False, empty
    sequences, zero-filled fixed arrays, nested default messages) and turns lists into the numpy arrays rosbags
    expects for primitive arrays.
    """

    def __init__(self, typestore: Any | None = None):
        if typestore is None:
            typestore = default_typestore()
        self.typestore = typestore
        # type name as written -> (message class, ((field, fielddef), ...), field names); makes `make` cheap enough
        # for a MarkerArray of ~100 markers per visualization tick
        self._specs: dict[str, tuple[type, tuple, frozenset]] = {}

    def message_class(self, type_name: str) -> type:
        """The rosbags dataclass for `type_name` (the counterpart of RclpyMessages.message_class)."""
        return self._spec(type_name)[0]

    def _spec(self, type_name: str) -> tuple[type, tuple, frozenset]:
        spec = self._specs.get(type_name)
        if spec is None:
            full = normalize_type_name(type_name)
            try:
                defs = tuple(self.typestore.fielddefs[full][1])
            except KeyError:
                raise ValueError(
                    f"message type {type_name!r} is not registered in the rosbags typestore; register its .msg "
                    "definition in mole_vla_ros/data/typestore.py"
                ) from None
            spec = (self.typestore.types[full], defs, frozenset(name for name, _ in defs))
            self._specs[type_name] = spec
        return spec

    def make(self, type_name: str, **fields: Any) -> Any:
        cls, defs, names = self._spec(type_name)
        if not names.issuperset(fields):
            raise ValueError(
                f"{cls.__msgtype__} has no field(s) {sorted(set(fields) - names)}; its fields are "
                f"{[n for n, _ in defs]}"
            )
        values = {}
        for name, desc in defs:
            values[name] = self._coerce(desc, fields[name]) if name in fields else self._default(desc)
        if cls.__msgtype__ == "geometry_msgs/msg/Quaternion" and "w" not in fields:
            values["w"] = 1.0  # the .msg default (`float64 w 1`), which rosbags' definitions drop; rclpy keeps it
        return cls(**values)

    def constant(self, type_name: str, name: str) -> Any:
        type_name = normalize_type_name(type_name)
        consts = dict((c[0], c[2]) for c in self.typestore.fielddefs[type_name][0])
        if name not in consts:
            raise ValueError(f"{type_name} has no constant {name!r}; constants: {sorted(consts)}")
        return consts[name]

    def serialize(self, msg: Any) -> bytes:
        """CDR bytes, exactly what rclpy would put on the wire and rosbag2 would store."""
        return bytes(self.typestore.serialize_cdr(msg, msg.__msgtype__))

    def deserialize(self, data: bytes, type_name: str) -> Any:
        return self.typestore.deserialize_cdr(data, normalize_type_name(type_name))

    # Nodetype values in rosbags fielddefs: 1 BASE, 2 NAME (nested message), 3 ARRAY (fixed), 4 SEQUENCE.
    def _default(self, desc) -> Any:
        kind, detail = int(desc[0]), desc[1]
        if kind == 1:
            base = detail[0]
            if base == "string" or base == "wstring":
                return ""
            if base in ("bool", "boolean"):
                return False
            if base in _FLOAT_TYPES:
                return 0.0
            return 0
        if kind == 2:
            return self.make(detail)
        sub, size = detail
        if int(sub[0]) == 1 and sub[1][0] in _NUMPY_DTYPES:
            return np.zeros(size if kind == 3 else 0, dtype=_NUMPY_DTYPES[sub[1][0]])
        return [self._default(sub) for _ in range(size if kind == 3 else 0)]

    def _coerce(self, desc, value: Any) -> Any:
        kind, detail = int(desc[0]), desc[1]
        if kind in (3, 4):
            sub, size = detail
            if int(sub[0]) == 1 and sub[1][0] in _NUMPY_DTYPES:
                arr = np.asarray(value, dtype=_NUMPY_DTYPES[sub[1][0]]).reshape(-1)
                if kind == 3 and arr.shape[0] != size:
                    raise ValueError(f"fixed array field needs exactly {size} values, got {arr.shape[0]}")
                return arr
            return list(value)
        if kind == 1:
            base = detail[0]
            if base in _FLOAT_TYPES:
                return float(value)
            if base in ("bool", "boolean"):
                return bool(value)
            if base in ("string", "wstring"):
                return str(value)
            return int(value)
        return value


class RclpyMessages(_FactoryHelpers):
    """Messages as the generated rclpy classes (needs a sourced ROS 2). Same `make` contract as `RosbagsMessages`.

    rclpy's generated setters are strict (a float field rejects an int, a float64[] sequence rejects a numpy array),
    so values are coerced with `coerce_for_rclpy` using the class's own field type table.
    """

    def __init__(self):
        self._classes: dict[str, type] = {}
        self._field_types: dict[type, dict[str, str]] = {}

    def message_class(self, type_name: str) -> type:
        """The rclpy class for `type_name` (e.g. franka_msgs/action/Move_Goal -> franka_msgs.action.Move.Goal)."""
        type_name = normalize_type_name(type_name)
        if type_name not in self._classes:
            pkg, kind, name = type_name.split("/")
            module = importlib.import_module(f"{pkg}.{kind}")
            part = None
            if kind in ("action", "srv"):
                for suffix in _SUFFIXES:
                    if name.endswith(suffix):
                        name, part = name[: -len(suffix)], suffix[1:]
                        break
            cls = getattr(module, name)
            self._classes[type_name] = getattr(cls, part) if part else cls
        return self._classes[type_name]

    def make(self, type_name: str, **fields: Any) -> Any:
        cls = self.message_class(type_name)
        types = self._field_types.get(cls)
        if types is None:
            types = self._field_types[cls] = cls.get_fields_and_field_types()
        unknown = sorted(set(fields) - set(types))
        if unknown:
            raise ValueError(f"{type_name} has no field(s) {unknown}; its fields are {sorted(types)}")
        msg = cls()
        for name, value in fields.items():
            setattr(msg, name, coerce_for_rclpy(value, types[name]))
        return msg

    def constant(self, type_name: str, name: str) -> Any:
        cls = self.message_class(type_name)
        if not hasattr(cls, name):
            raise ValueError(f"{type_name} has no constant {name!r}")
        return getattr(cls, name)


def coerce_for_rclpy(value: Any, idl_type: str) -> Any:
    """Turn numpy arrays/scalars and ints into what rclpy's strict setters accept for a field of `idl_type`.

    idl_type is rclpy's `get_fields_and_field_types()` spelling: 'double', 'sequence<double>', 'double[9]',
    'sequence<geometry_msgs/Point>', 'string', ...
    """
    inner, is_sequence, fixed = _parse_idl(idl_type)
    if is_sequence or fixed is not None:
        if inner in _NUMPY_DTYPES:
            arr = np.asarray(value, dtype=_NUMPY_DTYPES[inner]).reshape(-1)
            if fixed is not None:
                # rclpy keeps fixed-size primitive arrays as numpy arrays of the exact dtype
                if arr.shape[0] != fixed:
                    raise ValueError(f"field of type {idl_type} needs exactly {fixed} values, got {arr.shape[0]}")
                return arr
            code = _ARRAY_TYPECODES.get(inner)
            if code is None:  # bool sequences: a list of Python bools
                return [bool(v) for v in arr]
            out = array.array(code)
            out.frombytes(np.ascontiguousarray(arr).tobytes())
            return out
        return list(value)
    if isinstance(value, np.generic):
        value = value.item()
    if inner in ("octet", "byte"):  # rclpy types a single byte as bytes of length 1 (DiagnosticStatus.level)
        return value if isinstance(value, bytes) else bytes([int(value)])
    if inner in _FLOAT_TYPES:
        return float(value)
    if inner in ("bool", "boolean"):
        return bool(value)
    if inner in _NUMPY_DTYPES:
        return int(value)
    return value


def _parse_idl(idl_type: str) -> tuple[str, bool, int | None]:
    t = idl_type.strip()
    if t.startswith("sequence<"):
        inner = t[len("sequence<") : -1].split(",")[0].strip()
        return inner, True, None
    if t.endswith("]") and "[" in t:
        inner, _, n = t[:-1].partition("[")
        return inner, False, int(n) if n.isdigit() else None
    return t, False, None


def default_typestore() -> Any:
    """The project's typestore (ROS 2 Humble + franka_msgs) from data/typestore.py, else plain Humble."""
    try:
        from mole_vla_ros.data.typestore import get_typestore
    except ImportError:
        from rosbags.typesys import Stores
        from rosbags.typesys import get_typestore as _rosbags_get

        return _rosbags_get(Stores.ROS2_HUMBLE)
    return get_typestore()


def as_float_array(values: Any) -> np.ndarray:
    """A numeric sequence field (numpy array, array.array, list) as float64 numpy, without copying when possible."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    return np.asarray(list(values) if not isinstance(values, array.array) else values, dtype=np.float64)


def fields_of(msg: Any) -> Mapping[str, Any]:
    """Field name -> value for a message of either backend (debugging and tests)."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: getattr(msg, name) for name in msg.get_fields_and_field_types()}
    return {name: getattr(msg, name) for name in msg.__dataclass_fields__ if not name.startswith("__")}
