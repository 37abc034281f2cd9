"""Read what a killed writer left in an MCAP file: every complete chunk, up to the first truncated record.

A rosbag2 MCAP file that was never closed has no summary, footer or rosbag2 metadata record, so ordinary readers
(which seek to the footer) refuse it. Records are length-prefixed, so a forward scan can still walk the file and
keep each record that is complete. `salvage_mcap(path)` does that without any third-party MCAP reader.

Record layout (MCAP spec): opcode u8, length u64 LE, content. Inside a Chunk: start u64, end u64, uncompressed size
u64, crc u32, compression string, records length u64, then Schema (0x03) / Channel (0x04) / Message (0x05) records.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_FOOTER = 0x03, 0x04, 0x05, 0x06, 0x02


@dataclass(frozen=True)
class SalvagedSchema:
    id: int
    name: str
    encoding: str
    data: str


@dataclass(frozen=True)
class SalvagedChannel:
    id: int
    schema_id: int
    topic: str
    message_encoding: str
    metadata: dict[str, str]


@dataclass
class SalvageResult:
    """What survived: schemas and channels by id, messages (channel id, log time ns, data) in file order."""

    schemas: dict[int, SalvagedSchema] = field(default_factory=dict)
    channels: dict[int, SalvagedChannel] = field(default_factory=dict)
    messages: list[tuple[int, int, bytes]] = field(default_factory=list)
    good_bytes: int = 0  # file prefix made of complete records
    total_bytes: int = 0
    has_footer: bool = False

    @property
    def lost_bytes(self) -> int:
        return self.total_bytes - self.good_bytes


class _Buf:
    def __init__(self, data: memoryview):
        self.data, self.pos = data, 0

    def u16(self) -> int:
        (v,) = struct.unpack_from("<H", self.data, self.pos)
        self.pos += 2
        return v

    def u32(self) -> int:
        (v,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        (v,) = struct.unpack_from("<Q", self.data, self.pos)
        self.pos += 8
        return v

    def bytes_(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError("record field runs past the end of its record")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self) -> str:
        return bytes(self.bytes_(self.u32())).decode("utf-8")


def _records(data: memoryview, start: int, end: int) -> Iterator[tuple[int, memoryview, int]]:
    """(opcode, content, end offset) of each complete record in data[start:end]; stops at a truncated one."""
    pos = start
    while pos + 9 <= end:
        op = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        if pos + 9 + length > end:
            return
        yield op, data[pos + 9 : pos + 9 + length], pos + 9 + length
        pos += 9 + length


def _decompress(payload: memoryview, compression: str, size: int) -> memoryview:
    if compression == "":
        return payload
    if compression == "zstd":
        from rosbags.rosbag2.storage_mcap import zstd  # the zstd module rosbags itself writes with

        return memoryview(zstd.decompress(bytes(payload)))
    if compression == "lz4":
        import lz4.frame

        return memoryview(lz4.frame.decompress(bytes(payload)))
    raise ValueError(f"unsupported MCAP chunk compression {compression!r}; expected '', 'zstd' or 'lz4'")


def _inner(content: memoryview, result: SalvageResult, op: int) -> None:
    buf = _Buf(content)
    if op == OP_SCHEMA:
        sid, name, enc = buf.u16(), buf.string(), buf.string()
        data = bytes(buf.bytes_(buf.u32())).decode("utf-8")
        result.schemas[sid] = SalvagedSchema(sid, name, enc, data)
    elif op == OP_CHANNEL:
        cid, sid, topic, enc = buf.u16(), buf.u16(), buf.string(), buf.string()
        meta_len = buf.u32()
        meta_end = buf.pos + meta_len
        meta = {}
        while buf.pos < meta_end:
            key = buf.string()
            meta[key] = buf.string()
        result.channels[cid] = SalvagedChannel(cid, sid, topic, enc, meta)
    elif op == OP_MESSAGE:
        cid, _seq, log_time, _pub = buf.u16(), buf.u32(), buf.u64(), buf.u64()
        result.messages.append((cid, log_time, bytes(content[buf.pos :])))


def salvage_mcap(path: str | Path) -> SalvageResult:
    """Scan `path` and return every schema, channel and message held in complete records.

    Raises ValueError when the file does not start with the MCAP magic (not an MCAP file at all).
    """
    path = Path(path)
    raw = path.read_bytes()
    result = SalvageResult(total_bytes=len(raw))
    if not raw.startswith(MAGIC):
        raise ValueError(f"{path} is not an MCAP file (it does not start with the MCAP magic bytes)")
    data = memoryview(raw)
    result.good_bytes = len(MAGIC)
    for op, content, end in _records(data, len(MAGIC), len(data)):
        if op == OP_CHUNK:
            buf = _Buf(content)
            _start, _end, size, _crc = buf.u64(), buf.u64(), buf.u64(), buf.u32()
            compression = buf.string()
            payload = buf.bytes_(buf.u64())
            inner = _decompress(payload, compression, size)
            for iop, icontent, _ in _records(inner, 0, len(inner)):
                _inner(icontent, result, iop)
        elif op in (OP_SCHEMA, OP_CHANNEL, OP_MESSAGE):
            _inner(content, result, op)
        elif op == OP_FOOTER:
            result.has_footer = True
        result.good_bytes = end
    return result
