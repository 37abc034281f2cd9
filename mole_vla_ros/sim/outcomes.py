"""Why a simulated episode failed: distances to the cubes, gripper closings and what was held, then one category.

`OutcomeTracker` is fed every control tick of a closed-loop episode (the TCP position from the observation and the
simulator's privileged `TaskState`, the same one the success check reads) and every gripper command the runtime
sends. `classify_failure` turns the summary into one of `FAILURES`:

    ""             success
    "dropped"      the target cube was held (see below) at some point, but the task never succeeded:
                   pick: dropped, or not lifted high enough; stack: not left resting on the other cube
    "wrong_cube"   the other cube was held and the target never was; or the TCP came within REACH_MM of the other
                   cube but never within REACH_MM of the target
    "missed_grasp" the TCP came within REACH_MM of the target and the gripper was commanded closed at least once,
                   but no cube was ever held
    "no_grasp"     the TCP came within REACH_MM of the target but the gripper was never commanded closed
    "no_reach"     the TCP never came within REACH_MM of either cube (and nothing was held)

A cube counts as HELD when it touched both fingers (`TaskState.cube_in_hand`) while off the table, or for at least
HOLD_MIN_S in a row: a cube pinched at one edge tips up between the closing fingers for a few ticks and slips out,
still touching the table, which is a missed grasp, not a drop.

The rules are checked in that order, so every episode gets exactly one category. Holding beats distance: a policy
that got the target into the hand failed later than one that only hovered near it. Distances are horizontal (x-y in
the base frame, TCP to cube centre) and count only while the TCP is low, at most REACH_HEIGHT_MM above the cube's
centre (descending to grasp or grasping): a TCP that passes high over the target on its way elsewhere and descends
beside nothing has not reached it. An episode whose TCP never came that low keeps NaN distances ("no_reach").

Judging is always against the episode's task (`EpisodeSetup.target` / `.other`), never against an instruction given
to the policy instead (`run_episode(instruction=...)`): a policy that follows a swapped instruction is "wrong_cube".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mole_vla_ros.sim.tasks import TaskState

# One cube edge (40 mm, SimConfig.cube_size) = half the open finger span (80 mm): with the TCP this close to the cube
# centre, part of the open hand is over the cube, so descending and closing touches it; a failure there is a grasp
# problem, not a navigation one. The tight capture region (about +-20 mm across the fingers) would call the near
# misses "no reach": the scripted expert's deliberate misses, 25-35 mm off, close on the cube's edge and must count
# as missed grasps. The cubes are at least 100 mm apart (tasks.MIN_CUBE_DISTANCE), so the TCP can never be within
# REACH_MM of both at once.
REACH_MM = 40.0
# The scripted expert hovers 80-130 mm above a cube's centre before it descends (expert.py): below 60 mm the TCP is
# descending onto a cube or grasping, never just travelling over it.
REACH_HEIGHT_MM = 60.0
# A pinched edge slips out within about 0.15 s (7 ticks at 50 Hz in the scripted expert's misses); a real grasp stays
# closed for the expert's 0.6 s close phase before lifting. 0.3 s sits between them.
HOLD_MIN_S = 0.3

FAILURES = ("wrong_cube", "missed_grasp", "dropped", "no_grasp", "no_reach")
HELD = ("", "target", "other", "both")


def classify_failure(
    success: bool,
    closest_target_mm: float,
    closest_other_mm: float,
    grasp_closes: int,
    held: str,
    reach_mm: float = REACH_MM,
) -> str:
    """The failure category of one episode ("" for a success); see the module docstring for the rules.

    held: "target", "other", "both" (each cube was held at some point) or "" (neither was).
    """
    if held not in HELD:
        raise ValueError(f"held={held!r} must be one of {HELD} (which cube was ever held)")
    if grasp_closes < 0:
        raise ValueError(f"grasp_closes={grasp_closes} must be >= 0 (a count of gripper closings)")
    for name, value in (("closest_target_mm", closest_target_mm), ("closest_other_mm", closest_other_mm)):
        if value < 0.0:  # NaN is allowed: the TCP never came low enough to count (not reached)
            raise ValueError(f"{name}={value} must be a distance >= 0 mm, or NaN when the TCP never came low")
    if not reach_mm > 0.0:
        raise ValueError(f"reach_mm={reach_mm} must be > 0 (e.g. REACH_MM = {REACH_MM})")
    if success:
        return ""
    if held in ("target", "both"):
        return "dropped"
    if held == "other":
        return "wrong_cube"
    if closest_target_mm <= reach_mm:
        return "missed_grasp" if grasp_closes > 0 else "no_grasp"
    if closest_other_mm <= reach_mm:
        return "wrong_cube"
    return "no_reach"


@dataclass(frozen=True)
class OutcomeSummary:
    """What `OutcomeTracker` measured over one episode (the new fields of `EpisodeOutcome`)."""

    closest_target_mm: float
    closest_other_mm: float
    grasp_closes: int
    held: str
    failure: str


class OutcomeTracker:
    """Accumulates one episode's trace: closest horizontal TCP distance to each cube while the TCP is low (NaN if it
    never was), gripper closings, held cubes.

    grasp_closes counts open -> closed transitions of the gripper COMMANDS the runtime sent (the hand starts each
    episode open), not of the measured width: a hand closing on a 40 mm cube stops half open, which a width
    threshold cannot tell from a hand that is slowly opening, while the command says what the policy decided.
    """

    def __init__(
        self,
        target: str,
        other: str,
        tick_s: float,
        reach_mm: float = REACH_MM,
        hold_min_s: float = HOLD_MIN_S,
        reach_height_mm: float = REACH_HEIGHT_MM,
    ):
        """tick_s: seconds between `observe` calls (the command period), to time how long a cube stays in hand."""
        if target == other:
            raise ValueError(f"target and other cube must differ, both are {target!r}")
        if not tick_s > 0.0:
            raise ValueError(f"tick_s={tick_s} must be > 0 s (the period between observe() calls, e.g. 0.02)")
        self.target, self.other, self.reach_mm = target, other, float(reach_mm)
        self.reach_height_mm = float(reach_height_mm)
        self.tick_s, self.hold_min_s = float(tick_s), float(hold_min_s)
        self._in_hand_s = {target: 0.0, other: 0.0}  # how long each cube has been between both fingers, in a row
        self.closest_target_mm = math.inf
        self.closest_other_mm = math.inf
        self.grasp_closes = 0
        self._gripper_open = True  # every episode starts with the hand open (TabletopSim.reset)
        self._held_target = False
        self._held_other = False
        self.ticks = 0

    def observe(self, tcp_position: np.ndarray, state: TaskState) -> None:
        """One control tick: the TCP position (base frame, m) and the simulator's privileged state at that tick."""
        tcp = np.asarray(tcp_position, dtype=np.float64)
        for cube in (self.target, self.other):
            if cube not in state.cube_pos:
                raise ValueError(f"cube {cube!r} is not in the simulator state (cubes: {sorted(state.cube_pos)})")
        self.closest_target_mm = min(self.closest_target_mm, self._low_distance_mm(tcp, state.cube_pos[self.target]))
        self.closest_other_mm = min(self.closest_other_mm, self._low_distance_mm(tcp, state.cube_pos[self.other]))
        self._held_target |= self._held(self.target, state)
        self._held_other |= self._held(self.other, state)
        self.ticks += 1

    def _low_distance_mm(self, tcp: np.ndarray, cube: np.ndarray) -> float:
        """Horizontal TCP-to-cube distance, or inf while the TCP is more than reach_height_mm above the cube."""
        if 1e3 * (tcp[2] - cube[2]) > self.reach_height_mm:
            return math.inf
        return 1e3 * math.hypot(*(tcp[:2] - cube[:2]))

    def _held(self, cube: str, state: TaskState) -> bool:
        if not state.cube_in_hand[cube]:
            self._in_hand_s[cube] = 0.0
            return False
        self._in_hand_s[cube] += self.tick_s
        # the first tick in hand counts as its whole period, hence the half-tick tolerance
        return not state.cube_on_table[cube] or self._in_hand_s[cube] >= self.hold_min_s - 0.5 * self.tick_s

    def gripper_command(self, open_: bool) -> None:
        """A gripper command the runtime sent (True: open, False: close / grasp)."""
        if self._gripper_open and not open_:
            self.grasp_closes += 1
        self._gripper_open = bool(open_)

    @property
    def held(self) -> str:
        """Which cube was held at some point (lifted in hand, or in hand HOLD_MIN_S): "target", "other", "both", ""."""
        if self._held_target and self._held_other:
            return "both"
        return "target" if self._held_target else "other" if self._held_other else ""

    def summary(self, success: bool) -> OutcomeSummary:
        """The episode's measurements and its failure category ("" on success)."""
        if self.ticks == 0:
            raise RuntimeError("no tick was observed: call observe() at least once (e.g. with the reset state)")
        failure = classify_failure(
            success, self.closest_target_mm, self.closest_other_mm, self.grasp_closes, self.held, self.reach_mm
        )
        target_mm, other_mm = (
            d if math.isfinite(d) else math.nan for d in (self.closest_target_mm, self.closest_other_mm)
        )
        return OutcomeSummary(target_mm, other_mm, self.grasp_closes, self.held, failure)
