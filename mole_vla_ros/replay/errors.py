"""What can go wrong when replaying a bag, as exceptions whose message tells the user what to do.

Every error a user can cause with a bad bag or bad arguments is a `ReplayError` (a ValueError), so the CLI can print
the sentence and exit with status 2 instead of a traceback. The subclasses let tests and callers tell them apart.
"""

from __future__ import annotations


class ReplayError(ValueError):
    """A bag or a setting replay cannot work with; the message names the bad value and the fix."""


class BagNotFoundError(ReplayError, FileNotFoundError):
    """The bag path does not exist or is not a rosbag2 bag."""


class CorruptBagError(ReplayError):
    """The bag's files are truncated or damaged (unreadable index, bad magic, undecodable message)."""


class MissingTopicsError(ReplayError):
    """The bag lacks a topic the policy needs; the message lists what the bag has."""


class UnknownMessageTypeError(ReplayError):
    """A needed topic carries a message type the replay cannot decode (or a different type than expected)."""


class ImageEncodingError(ReplayError):
    """A camera image uses an encoding the node cannot turn into RGB."""
