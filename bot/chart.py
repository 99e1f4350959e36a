"""The daily summary's chart: a stacked bar chart drawn into a PNG, in pure Python.

No plotting library is needed (the PNG is written with zlib), so the chart renders the
same offline, in CI and on a bare server. Labels use a small built-in bitmap font of
digits and Latin capitals: the series are numbered (1 = the first category, ...), and the
summary's text, in the reader's language, says which number is which category.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

# 5x7 glyphs, one string of 7 rows of 5 bits each.
_FONT: dict[str, tuple[int, ...]] = {
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14), "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14), "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8), "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12), "-": (0, 0, 0, 31, 0, 0, 0), "/": (1, 1, 2, 4, 8, 16, 16),
    ":": (0, 12, 12, 0, 12, 12, 0), "%": (24, 25, 2, 4, 8, 19, 3), " ": (0,) * 7,
    ".": (0, 0, 0, 0, 0, 12, 12), "=": (0, 0, 31, 0, 31, 0, 0),
    "A": (14, 17, 17, 31, 17, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30), "C": (14, 17, 16, 16, 16, 17, 14),
    "D": (30, 17, 17, 17, 17, 17, 30), "E": (31, 16, 16, 30, 16, 16, 31), "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17), "I": (14, 4, 4, 4, 4, 4, 14),
    "J": (7, 2, 2, 2, 2, 18, 12), "K": (17, 18, 20, 24, 20, 18, 17), "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17), "O": (14, 17, 17, 17, 17, 17, 14),
    "P": (30, 17, 17, 30, 16, 16, 16), "Q": (14, 17, 17, 17, 21, 18, 13), "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4), "U": (17, 17, 17, 17, 17, 17, 14),
    "V": (17, 17, 17, 17, 17, 10, 4), "W": (17, 17, 17, 21, 21, 21, 10), "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 10, 4, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
}

PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
WHITE = (255, 255, 255)
INK = (40, 40, 40)
GRID = (225, 225, 225)


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(WHITE) * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        if x0 >= x1:
            return
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start : start + len(row)] = row

    def text(self, x: int, y: int, value: str, color: tuple[int, int, int] = INK, scale: int = 2) -> int:
        """Draws `value` with its top-left corner at (x, y); returns the x after it."""
        for ch in value.upper():
            glyph = _FONT.get(ch, _FONT[" "])
            for r, bits in enumerate(glyph):
                for c in range(5):
                    if bits & (1 << (4 - c)):
                        self.rect(x + c * scale, y + r * scale, x + (c + 1) * scale, y + (r + 1) * scale, color)
            x += 6 * scale
        return x

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3])
                       for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        # level 6: flat colours compress about as well as at 9, in a fraction of the time
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(
            b"IEND", b"")


def text_width(value: str, scale: int = 2) -> int:
    return len(value) * 6 * scale


def stacked_bars(title: str, day_labels: Sequence[str], series: Sequence[Sequence[int]],
                 width: int = 900, height: int = 520) -> bytes:
    """A PNG: one bar per day (`day_labels`), stacked by series (`series[k][day]`),
    series numbered 1..n in the legend, with the day's total above each bar."""
    days = len(day_labels)
    if any(len(s) != days for s in series):
        raise ValueError("every series needs one value per day")
    canvas = Canvas(width, height)
    canvas.text(20, 14, title, scale=3)
    left, right, top, bottom = 60, width - 20, 70, height - 90
    totals = [sum(s[d] for s in series) for d in range(days)]
    peak = max([*totals, 1])
    step = _nice_step(peak)
    top_value = step * -(-peak // step)
    for v in range(0, top_value + 1, step):
        y = bottom - (bottom - top) * v // top_value
        canvas.rect(left, y, right, y + 1, GRID)
        label = str(v)
        canvas.text(left - 8 - text_width(label), y - 7, label)
    slot = (right - left) // max(days, 1)
    bar = max(4, slot * 2 // 3)
    for d in range(days):
        x0 = left + d * slot + (slot - bar) // 2
        y = bottom
        for k, values in enumerate(series):
            h = (bottom - top) * values[d] // top_value
            if h:
                canvas.rect(x0, y - h, x0 + bar, y, PALETTE[k % len(PALETTE)])
            y -= h
        if totals[d]:
            label = str(totals[d])
            canvas.text(x0 + (bar - text_width(label)) // 2, y - 18, label)
        label = day_labels[d]
        canvas.text(x0 + (bar - text_width(label)) // 2, bottom + 8, label)
    canvas.rect(left, bottom, right, bottom + 2, INK)
    x, y = left, height - 40
    for k in range(len(series)):
        canvas.rect(x, y, x + 16, y + 16, PALETTE[k % len(PALETTE)])
        x = canvas.text(x + 22, y + 1, str(k + 1)) + 18
    return canvas.png()


def _nice_step(peak: int) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000):
        if peak / step <= 6:
            return step
    return 10 ** len(str(peak))
