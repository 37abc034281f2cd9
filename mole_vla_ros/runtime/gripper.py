"""Gripper: a continuous policy value in [0, 1] (1 = open) becomes rare open/close goals for the Franka hand.

Franka hand actions are slow and block their action server (franka_ros #281, #238: repeated goals are not
preempted), so the runtime never streams widths: a threshold with hysteresis decides the wanted state, a debounce
requires `debounce_count` consecutive scheduled actions to agree, `min_interval_s` spaces commands, and only a
CHANGE of state produces a `GripperCommand` (open = move to open_width, close = grasp or move to close_width).
"""

from __future__ import annotations

from mole_vla_ros.runtime.commands import GripperCommand
from mole_vla_ros.runtime.config import GripperConfig


class GripperLogic:
    """Stateful threshold + hysteresis + debounce. Feed one value per executed action with `update`."""

    def __init__(self, config: GripperConfig):
        self.config = config
        self.is_open: bool | None = None  # unknown until the first measurement or command
        self._streak = 0
        self._last_command_stamp = -float("inf")
        self.commands_sent = 0

    def sync_to_width(self, width: float) -> None:
        """Adopt the measured state (open if wider than half the open width) so enabling never toggles the hand."""
        self.is_open = width > 0.5 * self.config.open_width
        self._streak = 0

    def reset(self) -> None:
        self.is_open = None
        self._streak = 0
        self._last_command_stamp = -float("inf")

    def wanted(self, value: float) -> bool | None:
        """True (open), False (close) or None (inside the hysteresis band: keep the current state)."""
        if value >= self.config.open_threshold:
            return True
        if value <= self.config.close_threshold:
            return False
        return None

    def update(self, value: float, stamp: float) -> GripperCommand | None:
        """A command when the debounced state changes at `stamp`, else None."""
        want = self.wanted(float(value))
        if want is None or want == self.is_open:
            self._streak = 0
            return None
        self._streak += 1
        if self._streak < self.config.debounce_count:
            return None
        if stamp - self._last_command_stamp < self.config.min_interval_s:
            return None  # keep the streak: the change goes out as soon as the interval has passed
        self._streak = 0
        self.is_open = want
        self._last_command_stamp = stamp
        self.commands_sent += 1
        return self.command(want, stamp)

    def command(self, open_: bool, stamp: float) -> GripperCommand:
        """The goal that opens (True) or closes (False) the hand under this config."""
        c = self.config
        if open_:
            return GripperCommand(stamp, "move", True, c.open_width, c.speed)
        if c.close_mode == "grasp":
            return GripperCommand(
                stamp, "grasp", False, c.close_width, c.speed, c.force, c.epsilon_inner, c.epsilon_outer
            )
        return GripperCommand(stamp, "move", False, c.close_width, c.speed)
