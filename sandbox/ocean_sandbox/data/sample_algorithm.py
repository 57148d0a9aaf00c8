"""Sample C2D algorithm: per-station statistics of a numeric CSV column.

Portable between the sandbox, Ocean's v4 Kubernetes C2D and Ocean Node: it walks the inputs folder,
reads optional custom data, writes flat files into the outputs folder and logs to stdout.
Custom data (``algocustomdata``): ``{"column": "temperature_c", "group_by": "station"}``.

Outputs: ``summary.json``, ``summary.csv`` and ``summary.png`` (a bar chart of the per-group mean with
min-max whiskers). The PNG is drawn with the standard library only (zlib + struct and a built-in 5x8
bitmap font) because C2D images such as ``python:3.11-slim`` have no plotting library.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import struct
import sys
import zlib

INPUTS = os.environ.get("INPUTS", "/data/inputs")
OUTPUTS = os.environ.get("OUTPUTS", "/data/outputs")


def load_custom_data():
    path = os.path.join(INPUTS, "algoCustomData.json")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        data = json.load(handle)
    return data if isinstance(data, dict) else {}


def input_files():
    for root, _dirs, files in os.walk(INPUTS):
        for name in sorted(files):
            if name != "algoCustomData.json":
                yield os.path.join(root, name)


# -- summary.png --------------------------------------------------------------------------------------
# 5x8 bitmap font for ASCII 0x20..0x7E: 5 columns of 2 hex digits per glyph, bit 0 = top row.
_FONT_HEX = (
    "000000000000005F00000007000700147F147F14242A7F2A12231308646236495620500008070300"
    "001C2241000041221C002A1C7F1C2A08083E08080080703000080808080800006060002010080402"
    "3E5149453E00427F400072494949462141494D331814127F1027454545393C4A4949314121110907"
    "3649494936464949291E000014000000403400000008142241141414141400412214080201590906"
    "3E415D594E7C1211127C7F494949363E414141227F4141413E7F494949417F090909013E41415173"
    "7F0808087F00417F41002040413F017F081422417F404040407F021C027F7F0408107F3E4141413E"
    "7F090909063E4151215E7F09192946264949493203017F01033F4040403F1F2040201F3F4038403F"
    "631408146303047804036159494D43007F4141410204081020004141417F04020102044040404040"
    "000307080020545478407F284444383844444428384444287F385454541800087E090218A4A49C78"
    "7F0804047800447D40002040403D007F1028440000417F40007C047804787C080404783844444438"
    "FC1824241818242418FC7C08040408485454542404043F44243C4040207C1C2040201C3C4030403C"
    "44281028444C9090907C4464544C440008364100000077000000413608000201020402"
)
MAX_BARS = 40
WHITE = (255, 255, 255)
INK = (33, 37, 41)
GRID = (222, 226, 230)
AXIS = (108, 117, 125)
BAR = (76, 132, 196)
WHISKER = (200, 60, 40)


class Canvas:
    """An RGB image in memory with the few drawing operations the chart needs."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(WHITE * (width * height))

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: tuple[int, int, int]) -> None:
        """Fill the rectangle between two corners (any order), clipped to the image."""
        left, right = sorted((int(round(x0)), int(round(x1))))
        top, bottom = sorted((int(round(y0)), int(round(y1))))
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, self.width - 1), min(bottom, self.height - 1)
        if left > right or top > bottom:
            return
        row = bytes(color) * (right - left + 1)
        for y in range(top, bottom + 1):
            start = (y * self.width + left) * 3
            self.pixels[start : start + len(row)] = row

    def text(self, x: float, y: float, text: str, color: tuple[int, int, int], scale: int = 1) -> None:
        """Draw ``text`` with its top-left corner at (x, y); characters outside ASCII print as '?'."""
        x, y = int(round(x)), int(round(y))
        for position, char in enumerate(text):
            code = ord(char) if 32 <= ord(char) <= 126 else ord("?")
            glyph = _FONT_HEX[(code - 32) * 10 : (code - 32) * 10 + 10]
            for column in range(5):
                bits = int(glyph[column * 2 : column * 2 + 2], 16)
                for row in range(8):
                    if bits >> row & 1:
                        left = x + (position * 6 + column) * scale
                        top = y + row * scale
                        self.rect(left, top, left + scale - 1, top + scale - 1, color)

    def png(self) -> bytes:
        """Encode as an 8-bit RGB PNG (no filter, zlib level 9, no timestamp: same input, same bytes)."""
        stride = self.width * 3
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            crc = zlib.crc32(kind + data) & 0xFFFFFFFF
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def text_width(text: str, scale: int = 1) -> int:
    return (len(text) * 6 - 1) * scale if text else 0


def fit(text: str, width: float, scale: int) -> str:
    """``text`` cut (with '..') to fit ``width`` pixels at ``scale``; empty if nothing fits."""
    if text_width(text, scale) <= width:
        return text
    while text and text_width(text + "..", scale) > width:
        text = text[:-1]
    return text + ".." if text else ""


def number(value: float) -> str:
    return f"{value:.4g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value = first + step * len(ticks)
    return ticks


def draw_summary(summary: dict, group_by: str, width: int = 760, height: int = 440) -> bytes:
    """A bar chart of each group's mean with min-max whiskers, as PNG bytes."""
    column = summary["column"]
    groups = [
        (str(key), stats)
        for key, stats in summary["groups"].items()
        if all(math.isfinite(stats[k]) for k in ("mean", "min", "max"))
    ]
    total = len(groups)
    groups = groups[:MAX_BARS]
    canvas = Canvas(width, height)
    title = f"{column} by {group_by}: mean (bar) and min-max (whisker)"
    if total > len(groups):
        title += f", first {len(groups)} of {total} groups"
    canvas.text((width - text_width(fit(title, width - 20, 2), 2)) / 2, 14, fit(title, width - 20, 2), INK, 2)
    if not groups:
        canvas.text(20, height / 2, "no finite values to plot", INK, 2)
        return canvas.png()

    ticks = nice_ticks(
        min(0.0, *(stats["min"] for _key, stats in groups)),
        max(0.0, *(stats["max"] for _key, stats in groups)),
    )
    labels = [number(t) for t in ticks]
    left = 24 + max(text_width(label, 2) for label in labels)
    right, top, bottom = width - 20, 76, height - 64

    def y_of(value: float) -> float:
        return bottom - (value - ticks[0]) / (ticks[-1] - ticks[0]) * (bottom - top)

    for index, tick in enumerate(ticks):
        label = labels[index]
        y = y_of(tick)
        canvas.rect(left, y, right, y, AXIS if tick == 0 else GRID)
        canvas.text(left - 10 - text_width(label, 2), y - 7, label, INK, 2)
    canvas.rect(left, top, left + 1, bottom, AXIS)

    slot = (right - left) / len(groups)
    bar = max(2.0, min(90.0, slot * 0.55))
    for position, (key, stats) in enumerate(groups):
        center = int(round(left + slot * (position + 0.5)))
        canvas.rect(center - bar / 2, y_of(0.0), center + bar / 2, y_of(stats["mean"]), BAR)
        cap = max(2.0, bar * 0.25)
        canvas.rect(center - 1, y_of(stats["max"]), center, y_of(stats["min"]), WHISKER)
        for end in ("min", "max"):
            canvas.rect(center - cap, y_of(stats[end]) - 1, center + cap, y_of(stats[end]), WHISKER)
        mean_label = f"mean {number(stats['mean'])}"
        if text_width(mean_label, 2) > slot - 4:
            mean_label = number(stats["mean"])
        scale = 2 if text_width(mean_label, 2) <= slot - 4 else 1
        mean_label = fit(mean_label, slot - 4, scale)
        label_y = y_of(max(stats["max"], 0.0)) - 8 * scale - 6
        canvas.text(center - text_width(mean_label, scale) / 2, label_y, mean_label, INK, scale)
        scale = 2 if text_width(key, 2) <= slot - 4 else 1
        name = fit(key, slot - 4, scale)
        canvas.text(center - text_width(name, scale) / 2, bottom + 10, name, INK, scale)
        count = f"n={stats['count']}"
        count_scale = 2 if text_width(count, 2) <= slot - 4 else 1
        count = fit(count, slot - 4, count_scale)
        canvas.text(
            center - text_width(count, count_scale) / 2, bottom + 14 + 8 * scale, count, AXIS, count_scale
        )
    return canvas.png()


def main():
    custom = load_custom_data()
    column = custom.get("column", "temperature_c")
    group_by = custom.get("group_by", "station")
    print("custom data:", json.dumps(custom, sort_keys=True))
    groups = {}
    files = list(input_files())
    for path in files:
        print("reading", os.path.relpath(path, INPUTS))
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    value = float(row[column])
                except (KeyError, TypeError, ValueError):
                    continue
                groups.setdefault(row.get(group_by, "all"), []).append(value)
    if not groups:
        print(f"error: no numeric values in column {column!r}", file=sys.stderr)
        with open(os.path.join(OUTPUTS, "error.txt"), "w") as handle:
            handle.write(f"no numeric values in column {column!r}\n")
        return 1
    summary = {
        "column": column,
        "inputs": len(files),
        "groups": {
            key: {
                "count": len(values),
                "mean": round(statistics.fmean(values), 4),
                "min": min(values),
                "max": max(values),
            }
            for key, values in sorted(groups.items())
        },
    }
    with open(os.path.join(OUTPUTS, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
    with open(os.path.join(OUTPUTS, "summary.csv"), "w") as handle:
        handle.write(f"{group_by},count,mean,min,max\n")
        for key, stats in summary["groups"].items():
            handle.write(f"{key},{stats['count']},{stats['mean']},{stats['min']},{stats['max']}\n")
    print("wrote summary for", len(groups), "groups")
    try:
        image = draw_summary(summary, group_by)
    except Exception as exc:  # the statistics above are the result; the picture is a bonus
        print(f"warning: could not draw summary.png: {type(exc).__name__}: {exc}")
    else:
        with open(os.path.join(OUTPUTS, "summary.png"), "wb") as handle:
            handle.write(image)
        print("wrote summary.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
