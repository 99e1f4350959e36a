"""How long cleaning one evidence file takes, by kind and size. Prints figures; asserts nothing.

    python -m bench.evidence [--repeat 5]

Files are made here: a phone-sized photo (12 MP JPEG with EXIF), a PNG screenshot, a
multi-page PDF with metadata, a DOCX with embedded photos, an XLSX of 5,000 rows. Each is
cleaned `repeat` times; the median and the slowest run are printed with the sizes before
and after. The machine is shared: compare runs by ratio.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
import zipfile

import pikepdf
from PIL import Image

from bot import evidence_clean
from tests import evidence_fixtures as fx


def photo(width: int, height: int) -> bytes:
    rng = random.Random(7)
    img = Image.effect_noise((width // 8, height // 8), 40).convert("RGB").resize((width, height))
    img.putpixel((rng.randrange(width), rng.randrange(height)), (255, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88, exif=fx.exif(), xmp=fx.XMP)
    return buf.getvalue()


def screenshot() -> bytes:
    img = fx.picture((1170, 2532))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def pdf(pages: int) -> bytes:
    raw = pikepdf.open(io.BytesIO(fx.pdf_with_metadata()))
    for _ in range(pages - 1):
        raw.add_blank_page()
    buf = io.BytesIO()
    raw.save(buf)
    return buf.getvalue()


def docx_with_photos(count: int) -> bytes:
    with zipfile.ZipFile(io.BytesIO(fx.docx_with_metadata())) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    shot = photo(2000, 1500)
    for i in range(count):
        files[f"word/media/image{i + 2}.jpeg"] = shot
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return buf.getvalue()


def xlsx(rows: int) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    wb.properties.creator = fx.AUTHOR
    ws = wb.active
    for r in range(rows):
        ws.append([f"row {r}", r, r * 1.5, "县城某酒店"])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = {
        "JPEG 12 MP photo": photo(4000, 3000),
        "PNG phone screenshot": screenshot(),
        "PDF 50 pages": pdf(50),
        "DOCX with 5 photos": docx_with_photos(5),
        "XLSX 5,000 rows": xlsx(5000),
    }
    print(f"{'file':<22} {'in KiB':>8} {'out KiB':>8} {'median s':>9} {'max s':>7}")
    for name, data in cases.items():
        times = []
        out = b""
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = evidence_clean.clean(data).data
            times.append(time.perf_counter() - start)
        print(f"{name:<22} {len(data) / 1024:>8.0f} {len(out) / 1024:>8.0f} {statistics.median(times):>9.3f} "
              f"{max(times):>7.3f}")


if __name__ == "__main__":
    main()
