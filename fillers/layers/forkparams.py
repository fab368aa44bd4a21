"""Fork parameters: fields of a layer's text that BVLC's schema lacks, parsed for the
layer type that declares them (``LayerType.fork_params``).

The reader blanks such a field out of the text before protobuf parses it and keeps its
value text (``"{ group: 3 }"``).  A layer type names, per field, a protobuf message class
(generated from a fork's schema, under ``proto/forks/``) or ``None``; the value is then
parsed as that message (text format) or into a plain dict:

>>> parse_fork_field(None, "{ scale: 2  pad { h: 1 w: 0 }  mode: NEAREST  v: 0.5 v: 1 }", "p")
{'scale': 2, 'pad': {'h': 1, 'w': 0}, 'mode': 'NEAREST', 'v': [0.5, 1]}
"""

from __future__ import annotations

import re

from .base import ShapeError

_TOKEN = re.compile(r"""\s+|\#[^\n]*|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
                    r"""|(?P<punct>[{}<>\[\]:,;])|(?P<word>[^\s{}<>\[\]:,;"'#]+)""")


def parse_fork_field(message_class, text, field_name: str):
    """``text`` (a field's value as written: a ``{...}`` block or a scalar) parsed as
    ``message_class`` (None: a dict; a scalar value comes back as a Python value).
    ``text`` None gives the message's defaults (an empty dict)."""
    if text is None:
        return {} if message_class is None else message_class()
    body = text.strip()
    block = body[:1] in "{<" and body[-1:] in "}>"
    if message_class is None:
        try:
            return _parse_dict(body[1:-1]) if block else _scalar(body)
        except ValueError as exc:
            raise ShapeError(f"cannot read the fork field {field_name} {_short(body)}: {exc}") from None
    from google.protobuf import text_format

    msg = message_class()
    if not block:
        raise ShapeError(f"the fork field {field_name} must be a {{...}} block of "
                         f"{message_class.DESCRIPTOR.name}, not {_short(body)}")
    try:
        text_format.Parse(body[1:-1], msg)
    except text_format.ParseError as exc:
        raise ShapeError(f"cannot read the fork field {field_name} as {message_class.DESCRIPTOR.name} "
                         f"({re.sub(r'^[0-9:]+ : ', '', str(exc))})") from None
    return msg


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:37] + "..."


def _scalar(word: str):
    if word[:1] in "\"'":
        return word[1:-1]
    low = word.lower()
    if low in ("true", "t"):
        return True
    if low in ("false", "f"):
        return False
    for conv in (int, float):
        try:
            return conv(word)
        except ValueError:
            pass
    return word  # an enum value name


def _tokens(text: str):
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() != pos:
            raise ValueError(f"unexpected text at {text[pos:pos + 10]!r}")
        pos = m.end()
        if m.lastgroup:
            yield m.lastgroup, m.group(m.lastgroup)
    if pos != len(text):
        raise ValueError(f"unexpected text at {text[pos:pos + 10]!r}")


def _parse_dict(text: str) -> dict:
    toks = list(_tokens(text))
    out, i = _fields(toks, 0, None)
    if i != len(toks):
        raise ValueError("unbalanced braces")
    return out


def _add(d: dict, key: str, value) -> None:
    if key in d:
        if not isinstance(d[key], list):
            d[key] = [d[key]]
        d[key].append(value)
    else:
        d[key] = value


def _fields(toks, i, close):
    out: dict = {}
    while i < len(toks):
        kind, tok = toks[i]
        if kind == "punct" and tok in ",;":
            i += 1
            continue
        if kind == "punct" and tok in "}>":
            if close is None:
                raise ValueError(f"unexpected {tok!r}")
            return out, i + 1
        if kind != "word":
            raise ValueError(f"expected a field name, got {tok!r}")
        key, i = tok, i + 1
        if i < len(toks) and toks[i] == ("punct", ":"):
            i += 1
        if i >= len(toks):
            raise ValueError(f"field {key} has no value")
        kind, tok = toks[i]
        if kind == "punct" and tok in "{<":
            value, i = _fields(toks, i + 1, tok)
            _add(out, key, value)
        elif kind == "punct" and tok == "[":
            i += 1
            while i < len(toks) and toks[i] != ("punct", "]"):
                if toks[i][0] != "punct":
                    _add(out, key, _scalar(toks[i][1]))
                i += 1
            i += 1
        elif kind in ("word", "str"):
            _add(out, key, _scalar(tok))
            i += 1
        else:
            raise ValueError(f"field {key} has no value")
    if close is not None:
        raise ValueError("a block is not closed")
    return out, i
