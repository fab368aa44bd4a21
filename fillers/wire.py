"""The protobuf wire format, by hand, for the two places where protobuf's own objects
would cost too much: streaming large float tensors into a file (.caffemodel, .onnx) and
mapping them back without copies.

Reading is bounded: every length and varint is checked against the end of the message it
belongs to, so malformed or truncated bytes raise :class:`WireError` (a ``ValueError``)
with the offset, never an ``IndexError`` or a read past the message."""

from __future__ import annotations

# Wire types
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5

_MAX_GROUP_DEPTH = 100  # protobuf's default recursion limit
_U64 = (1 << 64) - 1


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message.

    ``offset`` is where the problem was found; ``truncated`` tells that a field runs past
    the end of the bytes it belongs to."""

    def __init__(self, message: str, offset: int, truncated: bool = False):
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset
        self.truncated = truncated


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def read_varint(buf, i, end=None):
    """(value, next offset) of the varint at ``i``, an unsigned 64-bit value."""
    if end is None:
        end = len(buf)
    result = shift = 0
    start = i
    while True:
        if i >= end:
            raise WireError("a varint runs past the end", start, truncated=True)
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & _U64, i
        shift += 7
        if shift >= 70:
            raise WireError("a varint longer than 10 bytes", start)


def signed64(v: int) -> int:
    """A varint's unsigned value read as int64 (how int32/int64 fields are encoded)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _skip_group(buf, i, end, field, depth):
    """Offset just past the end-group tag of ``field``, from ``i`` (after its start tag)."""
    if depth > _MAX_GROUP_DEPTH:
        raise WireError("groups nested too deeply", i)
    while True:
        tag_at = i
        tag, i = read_varint(buf, i, end)
        f, w = tag >> 3, tag & 7
        if w == EGROUP:
            if f != field:
                raise WireError(f"end of group {f} inside group {field}", tag_at)
            return tag_at, i
        i = _skip_value(buf, i, end, f, w, tag_at, depth)


def _skip_value(buf, i, end, field, wire, tag_at, depth):
    if field == 0:
        raise WireError("field number 0", tag_at)
    if wire == VARINT:
        return read_varint(buf, i, end)[1]
    if wire == LEN:
        n, i = read_varint(buf, i, end)
        if n > end - i:
            raise WireError(f"field {field} needs {n} bytes, {end - i} remain", tag_at, truncated=True)
        return i + n
    if wire == I32 or wire == I64:
        n = 4 if wire == I32 else 8
        if n > end - i:
            raise WireError(f"field {field} needs {n} bytes, {end - i} remain", tag_at, truncated=True)
        return i + n
    if wire == SGROUP:
        return _skip_group(buf, i, end, field, depth + 1)[1]
    if wire == EGROUP:
        raise WireError(f"end of group {field} outside any group", tag_at)
    raise WireError(f"invalid wire type {wire} (field {field})", tag_at)


def fields(buf, start, end):
    """Yield (field number, wire type, value) over a message's bytes: varints as ints,
    fixed32/fixed64 as bytes, length-delimited values and groups as (start, end) offsets.

    Raises :class:`WireError` on malformed bytes (after yielding the fields before them).
    """
    i = start
    while i < end:
        tag_at = i
        tag, i = read_varint(buf, i, end)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise WireError("field number 0", tag_at)
        if wire == VARINT:
            v, i = read_varint(buf, i, end)
            yield field, wire, v
        elif wire == LEN:
            n, i = read_varint(buf, i, end)
            if n > end - i:
                raise WireError(f"field {field} needs {n} bytes, {end - i} remain", tag_at, truncated=True)
            yield field, wire, (i, i + n)
            i += n
        elif wire == I32 or wire == I64:
            n = 4 if wire == I32 else 8
            if n > end - i:
                raise WireError(f"field {field} needs {n} bytes, {end - i} remain", tag_at, truncated=True)
            yield field, wire, bytes(buf[i:i + n])
            i += n
        elif wire == SGROUP:
            content_end, after = _skip_group(buf, i, end, field, 1)
            yield field, wire, (i, content_end)
            i = after
        elif wire == EGROUP:
            raise WireError(f"end of group {field} outside any group", tag_at)
        else:
            raise WireError(f"invalid wire type {wire} (field {field})", tag_at)
