"""Language-conditioned tabletop tasks. Both cubes are always on the table, so only the instruction says which to use.

- `pick`:  "pick up the red cube" | "pick up the green cube"; success = the named cube is held between the fingers
  at least 6 cm above the table while the other cube still rests on it.
- `stack`: "put the red cube on the green cube" | "put the green cube on the red cube"; success = the named cube
  rests on the other (centred within half a cube, one cube higher), released, and the bottom cube is on the table.

A task samples an `EpisodeSetup` from a seeded generator (instruction + cube poses) and judges success from the
simulator's privileged state (`TaskState`), which the policy never sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

COLORS = ("red", "green")
# Reachable, camera-visible region of the table for cube centres (base frame, metres).
X_RANGE = (0.40, 0.62)
Y_RANGE = (-0.20, 0.20)
MIN_CUBE_DISTANCE = 0.10  # centre to centre: room for the open fingers (8 cm) beside a cube


@dataclass(frozen=True)
class EpisodeSetup:
    """What one episode starts from: the instruction and each cube's (x, y, yaw) on the table."""

    instruction: str
    cubes: dict[str, tuple[float, float, float]]
    target: str  # the cube the instruction names first (picked / moved)
    other: str


@dataclass(frozen=True)
class TaskState:
    """Privileged simulator state a task judges success from (positions in the base frame)."""

    cube_pos: dict[str, np.ndarray]
    cube_in_hand: dict[str, bool]  # touching both fingers
    cube_on_table: dict[str, bool]
    cube_size: float


class Task(Protocol):
    name: str
    episode_seconds: float

    def sample(self, rng: np.random.Generator) -> EpisodeSetup: ...

    def success(self, setup: EpisodeSetup, state: TaskState) -> bool: ...

    def parse(self, instruction: str) -> tuple[str, str]: ...


def _sample_cubes(rng: np.random.Generator) -> dict[str, tuple[float, float, float]]:
    """Two cube poses at least MIN_CUBE_DISTANCE apart (rejection sampling; a handful of draws on average)."""
    for _ in range(1000):
        xy = rng.uniform((X_RANGE[0], Y_RANGE[0]), (X_RANGE[1], Y_RANGE[1]), size=(2, 2))
        if np.linalg.norm(xy[0] - xy[1]) >= MIN_CUBE_DISTANCE:
            yaw = rng.uniform(-np.pi / 4, np.pi / 4, size=2)
            return {c: (float(xy[i, 0]), float(xy[i, 1]), float(yaw[i])) for i, c in enumerate(COLORS)}
    raise RuntimeError("could not place two cubes apart; the table region is too small for MIN_CUBE_DISTANCE")


class _TwoCubeTask:
    """Sampling and parsing shared by the tasks: `instruction_form` names the cubes as {target} (and {other})."""

    instruction_form: ClassVar[str]

    def sample(self, rng: np.random.Generator) -> EpisodeSetup:
        """Cube poses, then the cube the instruction names first (draws in this order, so a seed gives one
        episode)."""
        cubes = _sample_cubes(rng)
        target = COLORS[int(rng.integers(2))]
        other = next(c for c in COLORS if c != target)
        return EpisodeSetup(self.instruction_form.format(target=target, other=other), cubes, target, other)

    def parse(self, instruction: str) -> tuple[str, str]:
        """(target, other) named by an instruction of this task: the cube to pick / move, and the other one."""
        color = f"({'|'.join(COLORS)})"
        pattern = self.instruction_form.format(target=color, other=color)  # {target} comes before {other}
        match = re.fullmatch(pattern, instruction.strip().lower())
        if match is None:
            raise ValueError(f"instruction {instruction!r} does not match this task's form {pattern!r}")
        first = match.group(1)
        second = match.group(2) if match.lastindex and match.lastindex > 1 else next(c for c in COLORS if c != first)
        if first == second:
            raise ValueError(f"instruction {instruction!r} names the same cube twice")
        return first, second


@dataclass(frozen=True)
class PickTask(_TwoCubeTask):
    name: str = "pick"
    episode_seconds: float = 10.0
    lift_height: float = 0.06

    instruction_form: ClassVar[str] = "pick up the {target} cube"

    def success(self, setup: EpisodeSetup, state: TaskState) -> bool:
        lifted = state.cube_pos[setup.target][2] > state.cube_size / 2 + self.lift_height
        return bool(lifted and state.cube_in_hand[setup.target] and state.cube_on_table[setup.other])


@dataclass(frozen=True)
class StackTask(_TwoCubeTask):
    name: str = "stack"
    episode_seconds: float = 14.0

    instruction_form: ClassVar[str] = "put the {target} cube on the {other} cube"

    def success(self, setup: EpisodeSetup, state: TaskState) -> bool:
        top, bottom = state.cube_pos[setup.target], state.cube_pos[setup.other]
        centred = np.linalg.norm(top[:2] - bottom[:2]) < state.cube_size / 2
        one_up = abs((top[2] - bottom[2]) - state.cube_size) < 0.01
        released = not state.cube_in_hand[setup.target]
        return bool(centred and one_up and released and state.cube_on_table[setup.other])


TASKS: dict[str, Task] = {"pick": PickTask(), "stack": StackTask()}


def get_task(name: str) -> Task:
    """The task called `name` (see TASKS)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]
