"""The text of a PDF that matplotlib wrote, read without a PDF library (for tests).

Enough of PDF for matplotlib's files: objects ``N 0 obj ... endobj``, Flate-compressed
streams, pages in the order of their ``/Kids``, each font's ``/ToUnicode`` map (codes
of one byte, or two for a Type 0 font) and the strings that ``Tj`` / ``TJ`` show. A
``BT ... ET`` block is one text object, which matplotlib writes per line of text: each
becomes one line of the page's text. Kerning numbers in ``TJ`` arrays are dropped.
"""

from __future__ import annotations

import re
import zlib

_OBJECT = re.compile(rb"(\d+) 0 obj\s*(.*?)\s*endobj", re.S)
_STREAM = re.compile(rb"(.*?)stream\r?\n(.*)\r?\nendstream", re.S)
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}
_HEX = rb"<([0-9a-fA-F]+)>"


def _objects(data: bytes) -> dict[int, tuple[bytes, bytes | None]]:
    """Object number -> (dictionary text, decompressed stream or None)."""
    out: dict[int, tuple[bytes, bytes | None]] = {}
    for match in _OBJECT.finditer(data):
        body = match.group(2)
        stream = _STREAM.fullmatch(body)
        if stream is None:
            out[int(match.group(1))] = (body, None)
            continue
        head, raw = stream.groups()
        out[int(match.group(1))] = (head, zlib.decompress(raw) if b"/FlateDecode" in head else raw)
    return out


def _ref(text: bytes, key: bytes) -> int | None:
    match = re.search(rb"/" + key + rb"\s+(\d+) 0 R", text)
    return int(match.group(1)) if match else None


def _utf16(hex_text: bytes) -> str:
    return bytes.fromhex(hex_text.decode()).decode("utf-16-be")


def _unicode_map(cmap: bytes) -> dict[int, str]:
    out: dict[int, str] = {}
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", cmap, re.S):
        for src, dst in re.findall(_HEX + rb"\s*" + _HEX, block):
            out[int(src, 16)] = _utf16(dst)
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", cmap, re.S):
        ranges = re.findall(_HEX + rb"\s*" + _HEX + rb"\s*(\[[^\]]*\]|<[0-9a-fA-F]+>)", block)
        for lo, hi, dst in ranges:
            start, stop = int(lo, 16), int(hi, 16)
            if dst.startswith(b"["):
                for k, item in enumerate(re.findall(_HEX, dst)):
                    out[start + k] = _utf16(item)
            else:
                first = int(dst[1:-1], 16)
                for k in range(stop - start + 1):
                    out[start + k] = chr(first + k)
    return out


def _literal(s: bytes, i: int) -> tuple[bytes, int]:
    """The bytes of the literal string opening at ``s[i] == '('`` and the index past it."""
    out = bytearray()
    depth = 1
    i += 1
    while True:
        c = s[i]
        if c == 0x5C:  # backslash
            n = s[i + 1]
            if 0x30 <= n <= 0x37:  # up to three octal digits
                digits = re.match(rb"[0-7]{1,3}", s[i + 1 : i + 4]).group(0)
                out.append(int(digits, 8) & 0xFF)
                i += 1 + len(digits)
                continue
            if n in (10, 13):  # a line continuation
                i += 2 + (n == 13 and s[i + 2 : i + 3] == b"\n")
                continue
            out.append(_ESCAPES.get(n, n))
            i += 2
            continue
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return bytes(out), i + 1
        out.append(c)
        i += 1


def _decode(raw: bytes, font: tuple[int, dict[int, str]] | None) -> str:
    if font is None:
        return raw.decode("latin-1")
    width, table = font
    codes = [int.from_bytes(raw[k : k + width], "big") for k in range(0, len(raw), width)]
    return "".join(table.get(code, chr(code)) for code in codes)


def _show(content: bytes, fonts: dict[bytes, tuple[int, dict[int, str]]]) -> list[str]:
    """The text of each BT ... ET block of a content stream."""
    lines: list[str] = []
    line: list[str] = []
    operands: list[object] = []
    font = None
    i, n = 0, len(content)
    token = re.compile(rb"[^\s()<>\[\]{}/%]+")
    while i < n:
        c = content[i : i + 1]
        if c.isspace() or c in b"[]":
            i += 1
        elif c == b"(":
            raw, i = _literal(content, i)
            operands.append(raw)
        elif c == b"<" and content[i + 1 : i + 2] != b"<":
            end = content.index(b">", i)
            operands.append(bytes.fromhex(re.sub(rb"\s", b"", content[i + 1 : end]).decode()))
            i = end + 1
        elif c == b"/":
            match = token.match(content, i + 1)
            operands.append(("name", match.group(0) if match else b""))
            i = match.end() if match else i + 1
        elif c == b"%":  # a comment, to the end of the line
            end = content.find(b"\n", i)
            i = n if end < 0 else end + 1
        else:
            match = token.match(content, i)
            if match is None:
                i += 1
                continue
            word = match.group(0)
            i = match.end()
            if re.fullmatch(rb"[-+.0-9]+", word):
                operands.append(float(word))
                continue
            if word == b"Tf":
                names = [o[1] for o in operands if isinstance(o, tuple)]
                font = fonts.get(names[-1]) if names else None
            elif word in (b"Tj", b"TJ", b"'", b'"'):
                line.extend(_decode(o, font) for o in operands if isinstance(o, bytes))
            elif word == b"BT":
                line = []
            elif word == b"ET":
                lines.append("".join(line))
            operands = []
    return lines


def page_texts(data: bytes) -> list[list[str]]:
    """Each page's lines of text, pages in order."""
    objects = _objects(data)
    kids = next(
        head for head, stream in objects.values() if stream is None and b"/Type /Pages" in head
    )
    order = [int(k) for k in re.findall(rb"(\d+) 0 R", kids.split(b"/Kids", 1)[1].split(b"]")[0])]
    pages = []
    for number in order:
        page = objects[number][0]
        resources = objects[_ref(page, b"Resources")][0]
        fonts_ref = _ref(resources, b"Font")
        fonts: dict[bytes, tuple[int, dict[int, str]]] = {}
        if fonts_ref is not None:
            font_dict = objects[fonts_ref][0]
            for name, ref in re.findall(rb"/([^\s/<>]+)\s+(\d+) 0 R", font_dict):
                head = objects[int(ref)][0]
                cmap_ref = _ref(head, b"ToUnicode")
                table = _unicode_map(objects[cmap_ref][1]) if cmap_ref else {}
                fonts[name] = (2 if b"/Type0" in head else 1, table)
        contents = objects[_ref(page, b"Contents")][1] or b""
        pages.append(_show(contents, fonts))
    return pages


def page_count(data: bytes) -> int:
    """How many page objects the file holds (``/Type /Page``, not ``/Pages``)."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


def info(data: bytes) -> dict[str, str]:
    """The document information dictionary's string entries (Title, Author, ...)."""
    ref = re.search(rb"trailer\s*<<.*?/Info\s+(\d+) 0 R", data, re.S)
    head = _objects(data)[int(ref.group(1))][0]
    out = {}
    for match in re.finditer(rb"/(\w+)\s*(\(|<(?!<))", head):
        if match.group(2) == b"(":
            raw, _ = _literal(head, match.end() - 1)
        else:
            raw = bytes.fromhex(head[match.end() : head.index(b">", match.end())].decode())
        text = raw[2:].decode("utf-16-be") if raw.startswith(b"\xfe\xff") else raw.decode("latin-1")
        out[match.group(1).decode()] = text
    return out
