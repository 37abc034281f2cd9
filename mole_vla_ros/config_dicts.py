"""Validated dataclass configs from nested or dotted dicts (YAML files, ROS 2 parameters), defined once.

Both `runtime.config.RuntimeConfig.from_dict` and the policy node's parameter loader (`ros.params`) build their
dataclasses here, so a key is checked, named and typed the same way wherever a user writes it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any


def build_dataclass(cls, data: dict, path: str = "", noun: str = "config key"):
    """A `cls` instance from a nested dict: unknown keys and wrongly typed scalars raise ValueError naming them.

    `path` is the dotted section name used in messages; `noun` says what a key is called there ("parameter").
    Lists become tuples. Range checks stay in each dataclass's __post_init__.
    """
    if not isinstance(data, dict):
        raise ValueError(f"section {path or '<root>'!r} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"in section {path!r}" if path else "at top level"
        raise ValueError(f"unknown {noun}(s) {unknown} {where}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub, sub_path = hints[name], f"{path}.{name}" if path else name
        if dataclasses.is_dataclass(sub):
            kwargs[name] = build_dataclass(sub, value if value is not None else {}, sub_path, noun)
            continue
        check_scalar(sub, value, sub_path, noun)
        kwargs[name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def check_scalar(hint, value, name: str, noun: str = "config key") -> None:
    """Reject a value of the wrong scalar type (YAML "false" or "0.5" in quotes would otherwise slip through)."""
    if hint is bool and not isinstance(value, bool):
        raise ValueError(f"{noun} {name!r} must be true or false, got {value!r}")
    if hint is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{noun} {name!r} must be a number, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{noun} {name!r} must be an integer, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ValueError(f"{noun} {name!r} must be a string, got {value!r}")


def unflatten(data: dict, noun: str = "config key") -> dict:
    """{"a.b": 1, "c": {"d.e": 2}} -> {"a": {"b": 1}, "c": {"d": {"e": 2}}} (ROS 2 dotted names to sections)."""
    out: dict = {}
    for key, value in data.items():
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"{noun} {key!r} nests under {p!r}, which is already a value")
        if isinstance(value, dict):
            node.setdefault(parts[-1], {}).update(unflatten(value, noun))
        else:
            node[parts[-1]] = value
    return out


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": 2} -> {"a.b": 1, "c": 2}: sections to ROS 2 dotted names (dotted keys pass through);
    `prefix` goes in front of every key. The inverse of `unflatten`."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_assignment(text: str, option: str, example: str) -> tuple[str, Any]:
    """A command line's NAME=VALUE -> (name, value); VALUE is read as JSON (numbers, true/false, lists) and kept as
    a plain string otherwise, so `mode=star` needs no quotes. Raises SystemExit naming `option` on a malformed one."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SystemExit(f"{option} expects NAME=VALUE (e.g. {example}), got {text!r}.")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def plain(value: Any) -> Any:
    """Tuples -> lists, recursively: what YAML and ROS 2 parameters hold."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
