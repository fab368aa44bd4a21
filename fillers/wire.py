"""The protobuf wire format, by hand, for the two places where protobuf's own objects
would cost too much: streaming large float tensors into a file (.caffemodel, .onnx) and
mapping them back without copies."""

from __future__ import annotations


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


def read_varint(buf, i):
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf, start, end):
    """Yield (field number, wire type, value) over a message's bytes; length-delimited
    values are (start, end) offsets."""
    i = start
    while i < end:
        tag, i = read_varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = read_varint(buf, i)
            yield field, wire, v
        elif wire == 2:
            n, i = read_varint(buf, i)
            yield field, wire, (i, i + n)
            i += n
        elif wire == 5:
            yield field, wire, buf[i:i + 4]
            i += 4
        elif wire == 1:
            yield field, wire, buf[i:i + 8]
            i += 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
