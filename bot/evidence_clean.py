"""Evidence files cleaned of what can name their author, before staff see them.

Cleaning rebuilds a file rather than deleting fields from it:

- images (JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC/HEIF): decoded with Pillow (HEIC through
  pillow-heif), turned the way the camera's orientation tag said, and the pixels alone
  encoded again (JPEG for photographs, PNG for the rest), so EXIF (GPS, camera serial,
  times), XMP, IPTC, ICC profiles, comments and text chunks do not survive;
- PDF (pikepdf): the Info dictionary (author, creator, producer, dates), every XMP
  /Metadata stream, /PieceInfo, embedded files and the author and dates of annotations
  removed; every JPEG inside (a DCTDecode stream: a scan, a photo pasted into a report)
  loses its EXIF (GPS, camera serial), XMP, IPTC, ICC and comment segments, its
  compressed pixels kept byte for byte; every JPEG 2000 image inside (JPXDecode) keeps
  only the boxes that say how to read it (XML, uuid, rights, URL, resolution and other
  boxes dropped, an ICC profile replaced by the plain colour space it stands for) and its
  codestream without comments, the coded data byte for byte; the file written anew (no
  earlier revisions) with an /ID made from its content;
- OOXML (docx, xlsx, pptx) and ODF (odt, ods, odp): the zip written anew with neutral
  member dates and no comment or extra fields; docProps core/app/custom (OOXML) and
  meta.xml (ODF) replaced by empty ones, the thumbnail dropped (OOXML) or re-encoded (ODF),
  comment and revision authors, initials, dates, revision session ids, the absolute path
  Excel keeps, printer settings and local file links removed (lxml, keeping namespace
  prefixes as Office needs them), and every embedded picture cleaned like an image;
- plain text: kept as it is (it carries nothing but its words).

Then the result is checked by reading it again (`verify`); a file that fails the check
is refused, never passed on. What cannot be cleaned (video, audio, voice, archives,
macros, embedded binary objects, encrypted or damaged files, anything unknown, files over
Telegram's 20 MB download limit) raises `Uncleanable` with a reason the tipster is told.

No Telegram, no database here: bytes in, bytes out.
"""

from __future__ import annotations

import io
import posixpath
import re
import warnings
import zipfile
from dataclasses import dataclass

import pikepdf
from lxml import etree
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (iPhone photos sent as files)
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover - it is a dependency; keep the rest working without it
    HEIF = False

DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API's getFile limit
MAX_PIXELS = 60_000_000  # larger images are refused (decompression bombs)
MAX_ZIP_MEMBERS = 5_000
MAX_ZIP_UNPACKED = 200 * 1024 * 1024
MAX_NESTING = 2  # an xlsx inside a docx inside ...
JPEG_QUALITY = 90
NEUTRAL_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# Reasons a file is refused (each has a sentence in the templates).
VIDEO, AUDIO, VOICE, ARCHIVE, TOO_BIG, ENCRYPTED, DAMAGED, UNKNOWN = (
    "video", "audio", "voice", "archive", "too_big", "encrypted", "damaged", "unknown")
REASONS = (VIDEO, AUDIO, VOICE, ARCHIVE, TOO_BIG, ENCRYPTED, DAMAGED, UNKNOWN)


class Uncleanable(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Cleaned:
    data: bytes
    extension: str  # without the dot: jpg, png, pdf, docx, ...
    mime: str
    photo: bool  # a picture (may be sent as a photo)


# --- what Telegram says about a file, before downloading it ------------------------------
ARCHIVE_EXT = {"zip", "rar", "7z", "tar", "gz", "tgz", "bz2", "xz", "zst", "cab", "iso", "jar", "apk", "dmg"}
AUDIO_EXT = {"mp3", "m4a", "aac", "ogg", "oga", "opus", "wav", "flac", "amr", "wma"}
VIDEO_EXT = {"mp4", "mov", "avi", "mkv", "webm", "3gp", "m4v", "wmv", "flv", "mpg", "mpeg"}
MACRO_EXT = {"docm", "xlsm", "pptm", "dotm", "xltm", "potm"}
OLD_OFFICE_EXT = {"doc", "xls", "ppt", "rtf", "wps", "et", "dps"}


def precheck(kind: str, mime: str | None, file_name: str | None, size: int | None) -> str | None:
    """Why a file cannot be cleaned, judged from the message alone (no download); None if
    it is worth downloading and trying. Size first: Telegram will not hand over more."""
    if size is not None and size > DOWNLOAD_LIMIT:
        return TOO_BIG
    if kind == "voice":
        return VOICE
    if kind in ("video", "video_note", "animation"):
        return VIDEO
    if kind == "audio":
        return AUDIO
    if kind == "photo":
        return None
    ext = (file_name or "").rsplit(".", 1)[-1].lower() if file_name and "." in file_name else ""
    mime = (mime or "").lower()
    if mime.startswith("video/") or ext in VIDEO_EXT:
        return VIDEO
    if mime.startswith("audio/") or ext in AUDIO_EXT:
        return AUDIO
    if ext in ARCHIVE_EXT or mime in ("application/zip", "application/x-7z-compressed", "application/vnd.rar",
                                      "application/x-rar-compressed", "application/x-tar", "application/gzip"):
        return ARCHIVE
    if ext in MACRO_EXT or ext in OLD_OFFICE_EXT:
        return UNKNOWN
    return None  # decided by the content


# --- sniffing --------------------------------------------------------------------------------
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}


def sniff(data: bytes) -> str:
    """The format by content (never by the name or the type the sender's app claimed)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:2] == b"BM":
        return "bmp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in HEIF_BRANDS:
            return "heif"
        return "video"  # mp4, mov, 3gp, m4a: ISO media
    if data.lstrip()[:5] == b"%PDF-" or data[:1024].find(b"%PDF-") >= 0:
        return "pdf"
    if data[:4] == b"PK\x03\x04":
        return "zip"
    if data[:4] in (b"Rar!", b"7z\xbc\xaf") or data[:2] == b"\x1f\x8b":
        return "archive"
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return "ole"  # old Office (doc, xls, ppt)
    if data[:4] in (b"OggS", b"fLaC", b"ID3\x03", b"ID3\x04") or data[:4] == b"\x1aE\xdf\xa3":
        return "media"
    if _is_text(data):
        return "text"
    return "unknown"


def _is_text(data: bytes) -> bool:
    if b"\x00" in data[:8192]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def clean(data: bytes) -> Cleaned:
    """The file rebuilt without metadata and checked; `Uncleanable` if that is not possible
    (a file that makes a library fail in any other way counts as damaged: never a crash)."""
    try:
        return _clean(data)
    except Uncleanable:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile input: any library error means "cannot clean"
        raise Uncleanable(DAMAGED, type(exc).__name__) from None


def _clean(data: bytes) -> Cleaned:
    if len(data) > DOWNLOAD_LIMIT:
        raise Uncleanable(TOO_BIG)
    fmt = sniff(data)
    if fmt in ("jpeg", "png", "webp", "gif", "tiff", "bmp", "heif"):
        out = clean_image(data)
    elif fmt == "pdf":
        out = clean_pdf(data)
    elif fmt == "zip":
        out = clean_package(data)
    elif fmt == "text":
        out = Cleaned(data, "txt", "text/plain", photo=False)
    elif fmt == "video":
        raise Uncleanable(VIDEO)
    elif fmt == "media":
        raise Uncleanable(AUDIO)
    elif fmt == "archive":
        raise Uncleanable(ARCHIVE)
    else:
        raise Uncleanable(UNKNOWN, fmt)
    problems = verify(out.data)
    if problems:
        raise Uncleanable(DAMAGED, "left after cleaning: " + ", ".join(problems))
    return out


def verify(data: bytes) -> list[str]:
    """What identifying metadata a cleaned file still carries (empty: none found)."""
    fmt = sniff(data)
    if fmt == "jpeg":
        return jpeg_leftovers(data)
    if fmt == "png":
        return png_leftovers(data)
    if fmt == "pdf":
        return pdf_leftovers(data)
    if fmt == "zip":
        return package_leftovers(data)
    if fmt == "text":
        return []
    return [f"unexpected format {fmt}"]


# --- images ---------------------------------------------------------------------------------
def clean_image(data: bytes, keep_format: str | None = None) -> Cleaned:
    """Decode, apply the orientation tag, encode the pixels alone. `keep_format` ("jpeg" or
    "png") forces the output format (pictures inside an Office file keep their names)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise Uncleanable(TOO_BIG, "too many pixels")
                if getattr(img, "n_frames", 1) > 1 and img.format not in ("HEIF",):
                    raise Uncleanable(VIDEO, "animated image")
                source = img.format or ""
                img.load()
                upright = ImageOps.exif_transpose(img) or img
                alpha = upright.mode in ("RGBA", "LA", "PA") or (
                    upright.mode == "P" and "transparency" in upright.info)
                if upright.mode in ("1", "L", "I;16", "I", "F"):
                    mode = "L"
                else:
                    mode = "RGBA" if alpha else "RGB"
                pixels = upright.convert(mode)
    except Uncleanable:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise Uncleanable(DAMAGED, type(exc).__name__) from None
    # A new image from the raw pixels: nothing of the source's info dictionary comes along.
    bare = Image.frombytes(mode, pixels.size, pixels.tobytes())
    out_format = keep_format or ("jpeg" if source in ("JPEG", "MPO", "HEIF", "WEBP") and not alpha else "png")
    buf = io.BytesIO()
    if out_format == "jpeg":
        if bare.mode == "RGBA":
            bare = bare.convert("RGB")
        bare.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
        return Cleaned(buf.getvalue(), "jpg", "image/jpeg", photo=True)
    bare.save(buf, "PNG", optimize=False)
    return Cleaned(buf.getvalue(), "png", "image/png", photo=True)


JPEG_ALLOWED = {0xC0, 0xC1, 0xC2, 0xC4, 0xDB, 0xDD, 0xDA, 0xE0} | set(range(0xC5, 0xD0)) - {0xC8, 0xCC}


def jpeg_leftovers(data: bytes, *, adobe: bool = False) -> list[str]:
    """APPn (EXIF, XMP, ICC, IPTC/Photoshop) and COM segments in a JPEG; only the JFIF APP0
    that Pillow writes is allowed (and, with `adobe`, Adobe's APP14 colour coding)."""
    found: list[str] = []
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return found + ["broken JPEG"]
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        body = data[i + 4 : i + 2 + length]
        if marker == 0xE0 and not body.startswith(b"JFIF\x00"):
            found.append("APP0 other than JFIF")
        elif marker == 0xEE and adobe and body.startswith(b"Adobe"):
            pass
        elif 0xE1 <= marker <= 0xEF:
            label = {0xE1: "EXIF/XMP", 0xE2: "ICC", 0xED: "IPTC"}.get(marker, f"APP{marker - 0xE0}")
            found.append(label)
        elif marker == 0xFE:
            found.append("comment")
        elif marker not in JPEG_ALLOWED:
            found.append(f"segment {marker:#x}")
        if marker == 0xDA:  # start of scan: entropy-coded data follows, no more metadata before EOI
            break
        i += 2 + length
    return found


PNG_ALLOWED = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS"}


def png_leftovers(data: bytes) -> list[str]:
    """Chunks other than the image's own (tEXt, iTXt, zTXt, eXIf, iCCP, tIME, ...)."""
    found: list[str] = []
    i = 8
    while i + 8 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        if kind not in PNG_ALLOWED:
            found.append(kind.decode("latin-1"))
        i += 12 + length
    return found


# --- PDF --------------------------------------------------------------------------------------
PDF_DROP_KEYS = ("/Metadata", "/PieceInfo", "/LastModified")
ANNOT_DROP_KEYS = ("/T", "/M", "/CreationDate", "/NM")


def clean_pdf(data: bytes) -> Cleaned:
    try:
        pdf = pikepdf.open(io.BytesIO(data))
    except pikepdf.PasswordError:
        raise Uncleanable(ENCRYPTED) from None
    except pikepdf.PdfError as exc:
        raise Uncleanable(DAMAGED, type(exc).__name__) from None
    with pdf:
        if "/Info" in pdf.trailer:
            del pdf.trailer["/Info"]
        root = pdf.Root
        names = root.get("/Names")
        if isinstance(names, pikepdf.Dictionary) and "/EmbeddedFiles" in names:
            del names["/EmbeddedFiles"]
        for key in ("/Metadata", "/PieceInfo", "/AF"):
            if key in root:
                del root[key]
        for obj in pdf.objects:
            if isinstance(obj, (pikepdf.Dictionary, pikepdf.Stream)):
                for key in PDF_DROP_KEYS:
                    if key in obj:
                        del obj[key]
        for page in pdf.pages:
            annots = page.obj.get("/Annots")
            if not isinstance(annots, pikepdf.Array):
                continue
            keep = pikepdf.Array()
            for annot in annots:
                if not isinstance(annot, pikepdf.Dictionary):
                    continue
                if annot.get("/Subtype") == pikepdf.Name.FileAttachment:
                    continue  # a file inside the file: cannot be cleaned, dropped
                for key in ANNOT_DROP_KEYS:
                    if key in annot:
                        del annot[key]
                keep.append(annot)
            page.obj["/Annots"] = keep
        for obj in pdf.objects:
            if isinstance(obj, pikepdf.Stream) and _image_filters(obj) is not None:
                _strip_pdf_image(obj)
        buf = io.BytesIO()
        pdf.save(buf, deterministic_id=True, fix_metadata_version=False, encryption=False)
    return Cleaned(buf.getvalue(), "pdf", "application/pdf", photo=False)


def _image_filters(stream: pikepdf.Stream) -> list[pikepdf.Name] | None:
    """The stream's filters if its last one is DCTDecode or JPXDecode (its decoded bytes are
    then a JPEG file, or a JPEG 2000 file or codestream)."""
    filters = stream.get("/Filter")
    names = list(filters) if isinstance(filters, pikepdf.Array) else [filters] if filters is not None else []
    if names and names[-1] in (pikepdf.Name.DCTDecode, pikepdf.Name.JPXDecode):
        return names
    return None


def _pdf_image(stream: pikepdf.Stream) -> bytes:
    """The JPEG (2000) image a DCTDecode or JPXDecode stream holds (any filters before undone)."""
    filters = _image_filters(stream) or []
    if len(filters) == 1:
        return stream.read_raw_bytes()
    # qpdf decodes a chain only whole; the filters before DCTDecode are undone in a scratch
    # stream that has only them.
    parms = stream.get("/DecodeParms")
    before_parms = None
    if isinstance(parms, pikepdf.Array):  # (re-parsed: an object of one PDF cannot go into another)
        before_parms = pikepdf.Object.parse(pikepdf.Array(list(parms)[:-1]).unparse())
    with pikepdf.new() as scratch:
        before = scratch.make_stream(b"")
        before.write(stream.read_raw_bytes(), filter=pikepdf.Array([pikepdf.Name(str(f)) for f in filters[:-1]]),
                     decode_parms=before_parms)
        return before.read_bytes()


def _strip_pdf_image(stream: pikepdf.Stream) -> None:
    last = (_image_filters(stream) or [pikepdf.Name.DCTDecode])[-1]
    image = _pdf_image(stream)
    stripped = strip_jpeg_segments(image) if last == pikepdf.Name.DCTDecode else strip_jpx(image)
    if stripped == image:
        return
    parms = stream.get("/DecodeParms")
    if isinstance(parms, pikepdf.Array):
        parms = parms[len(parms) - 1] if len(parms) else None
    if not isinstance(parms, pikepdf.Dictionary):
        parms = None
    stream.write(stripped, filter=last, decode_parms=parms)


def strip_jpeg_segments(data: bytes) -> bytes:
    """A JPEG without its APPn and COM segments, the compressed image untouched. Kept: the
    JFIF APP0 and Adobe's APP14 (it says how CMYK is coded: the colours depend on it)."""
    if not data.startswith(b"\xff\xd8"):
        raise Uncleanable(DAMAGED, "not a JPEG inside the PDF")
    out = bytearray(data[:2])
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise Uncleanable(DAMAGED, "broken JPEG inside the PDF")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            out += data[i : i + 2]
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        body = data[i + 4 : i + 2 + length]
        if marker == 0xDA:  # start of scan: the rest is the image itself
            out += data[i:]
            return bytes(out)
        metadata = (0xE1 <= marker <= 0xEF and not (marker == 0xEE and body.startswith(b"Adobe"))) or (
            marker == 0xFE or (marker == 0xE0 and not body.startswith(b"JFIF\x00")))
        if not metadata:
            out += data[i : i + 2 + length]
        i += 2 + length
    raise Uncleanable(DAMAGED, "truncated JPEG inside the PDF")


# JPEG 2000 (ISO 15444-1/-2): a JP2/JPX file is a run of boxes; a PDF may hold it, or the
# bare codestream, in a JPXDecode stream. Kept: what a reader needs to show the image.
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_START = b"\xff\x4f\xff\x51"  # SOC, then SIZ
JP2_KEEP = {b"jP  ", b"ftyp", b"rreq", b"jp2h", b"jp2c"}
JP2H_KEEP = {b"ihdr", b"bpcc", b"colr", b"pclr", b"cmap", b"cdef"}
JP2_BOX_NAMES = {b"xml ": "XML", b"uuid": "uuid (XMP, EXIF)", b"jp2i": "rights", b"uinf": "URL", b"res ": "resolution"}
ENUM_GREY, ENUM_SRGB = 17, 16
J2K_SOT, J2K_SOD, J2K_EOC, J2K_TLM, J2K_COM = 0x90, 0x93, 0xD9, 0x55, 0x64


def strip_jpx(data: bytes) -> bytes:
    """A JPEG 2000 image (a JP2/JPX file or a bare codestream) without what can name its
    author; the coded image kept byte for byte. `Uncleanable` if it cannot be read."""
    return _jpx(data)[0]


def jpx_leftovers(data: bytes) -> list[str]:
    """What `strip_jpx` would remove from a JPEG 2000 image (empty: nothing)."""
    try:
        return _jpx(data)[1]
    except Uncleanable:
        return ["broken JPEG 2000"]


def _jpx(data: bytes) -> tuple[bytes, list[str]]:
    if data.startswith(J2K_START):
        return _codestream(data)
    if not data.startswith(JP2_SIGNATURE):
        raise Uncleanable(DAMAGED, "not a JPEG 2000 image inside the PDF")
    out, streams = bytearray(), 0
    found: list[str] = []
    for kind, body in _jp2_boxes(data):
        if kind == b"jp2h":
            body, dropped = _jp2_header(body)
            found += dropped
        elif kind == b"jp2c":
            body, dropped = _codestream(body)
            found += dropped
            streams += 1
        elif kind not in JP2_KEEP:
            found.append(JP2_BOX_NAMES.get(kind, "box " + kind.decode("latin-1").strip()))
            continue
        out += _jp2_box(kind, body)
    if not streams:  # (a JPX image kept in fragments elsewhere in the file is not read here)
        raise Uncleanable(DAMAGED, "no codestream in the JPEG 2000 image")
    return bytes(out), found


def _jp2_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    boxes: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(data):
        if i + 8 > len(data):
            raise Uncleanable(DAMAGED, "truncated JPEG 2000 box")
        length, kind, head = int.from_bytes(data[i : i + 4], "big"), data[i + 4 : i + 8], 8
        if length == 1:  # the length follows, in 8 bytes
            length, head = int.from_bytes(data[i + 8 : i + 16], "big"), 16
        elif length == 0:  # to the end of the file
            length = len(data) - i
        if length < head or i + length > len(data):
            raise Uncleanable(DAMAGED, "broken JPEG 2000 box")
        boxes.append((kind, data[i + head : i + length]))
        i += length
    return boxes


def _jp2_box(kind: bytes, body: bytes) -> bytes:
    if len(body) + 8 < 2**32:
        return (len(body) + 8).to_bytes(4, "big") + kind + body
    return (1).to_bytes(4, "big") + kind + (len(body) + 16).to_bytes(8, "big") + body


def _jp2_header(body: bytes) -> tuple[bytes, list[str]]:
    """The JP2 header's boxes that say how to read the image; one colour box, an ICC
    profile (or a vendor's colour method) in it replaced by the enumerated space."""
    boxes = _jp2_boxes(body)
    if not boxes or boxes[0][0] != b"ihdr" or len(boxes[0][1]) < 10:
        raise Uncleanable(DAMAGED, "no image header in the JPEG 2000 image")
    channels = int.from_bytes(boxes[0][1][8:10], "big")
    for kind, box in boxes:
        if kind == b"pclr" and len(box) >= 3:
            channels = box[2]  # the palette's columns
    for kind, box in boxes:
        if kind == b"cdef" and len(box) >= 2:  # alpha and other channels are not colours
            channels = sum(int.from_bytes(box[4 + 6 * n : 6 + 6 * n], "big") == 0
                           for n in range(int.from_bytes(box[:2], "big")))
    out, coloured = bytearray(), False
    found: list[str] = []
    for kind, box in boxes:
        if kind not in JP2H_KEEP:
            found.append(JP2_BOX_NAMES.get(kind, "box " + kind.decode("latin-1").strip()))
            continue
        if kind == b"colr":
            if coloured:
                found.append("second colour box")
                continue
            coloured = True
            if not (box[:1] == b"\x01" and len(box) == 7):  # an ICC profile, or a vendor's method
                found.append("ICC")
                if channels not in (1, 3):
                    raise Uncleanable(DAMAGED, "a JPEG 2000 colour profile with no plain equivalent")
                box = b"\x01\x00\x00" + (ENUM_GREY if channels == 1 else ENUM_SRGB).to_bytes(4, "big")
        out += _jp2_box(kind, box)
    return bytes(out), found


def _codestream(data: bytes) -> tuple[bytes, list[str]]:
    """A JPEG 2000 codestream without its comment (COM) marker segments: in the main header,
    and in tile-part headers (whose lengths are then made right); the coded data untouched."""
    def broken() -> Uncleanable:
        return Uncleanable(DAMAGED, "broken JPEG 2000 codestream")

    if not data.startswith(J2K_START):
        raise broken()
    out, i, indexed = bytearray(data[:2]), 2, False
    found: list[str] = []
    while True:  # the main header: marker segments until the first tile-part
        if i + 4 > len(data) or data[i] != 0xFF:
            raise broken()
        marker = data[i + 1]
        if marker == J2K_SOT:
            break
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if end > len(data) or end < i + 4:
            raise broken()
        indexed |= marker == J2K_TLM
        if marker == J2K_COM:
            found.append("comment")
        else:
            out += data[i:end]
        i = end
    while i + 2 <= len(data):  # tile-parts: SOT, their header, SOD, coded data
        if data[i] != 0xFF:
            raise broken()
        if data[i + 1] == J2K_EOC:
            out += data[i:]
            return bytes(out), found
        if data[i + 1] != J2K_SOT or i + 12 > len(data):
            raise broken()
        psot = int.from_bytes(data[i + 6 : i + 10], "big")
        last = len(data) - 2 if data.endswith(b"\xff\xd9") else len(data)
        end = i + psot if psot else last  # 0: this tile-part runs to the end
        if end > len(data) or end < i + 14:
            raise broken()
        header, j = bytearray(data[i : i + 12]), i + 12
        while True:
            if j + 2 > end or data[j] != 0xFF:
                raise broken()
            if data[j + 1] == J2K_SOD:
                break
            after = j + 2 + int.from_bytes(data[j + 2 : j + 4], "big")
            if after > end or after < j + 4:
                raise broken()
            if data[j + 1] == J2K_COM:
                found.append("comment")
            else:
                header += data[j:after]
            j = after
        removed = (j - i) - len(header)
        if removed and indexed:  # the main header's index of tile-part lengths would be wrong
            raise Uncleanable(DAMAGED, "a comment in a tile of an indexed JPEG 2000 codestream")
        if removed and psot:
            header[6:10] = (psot - removed).to_bytes(4, "big")
        out += header + data[j:end]
        i = end
    if i != len(data):
        raise broken()
    return bytes(out), found  # no end-of-codestream marker: kept as it came


def pdf_leftovers(data: bytes) -> list[str]:
    found: list[str] = []
    try:
        pdf = pikepdf.open(io.BytesIO(data))
    except pikepdf.PdfError:
        return ["unreadable PDF"]
    with pdf:
        info = pdf.trailer.get("/Info")
        if isinstance(info, pikepdf.Dictionary) and len(info.keys()):
            found.append("Info: " + ",".join(sorted(info.keys())))
        names = pdf.Root.get("/Names")
        if isinstance(names, pikepdf.Dictionary) and "/EmbeddedFiles" in names:
            found.append("embedded files")
        for obj in pdf.objects:
            if isinstance(obj, (pikepdf.Dictionary, pikepdf.Stream)):
                for key in PDF_DROP_KEYS:
                    if key in obj:
                        found.append(key)
                if obj.get("/Type") == pikepdf.Name.Metadata:
                    found.append("XMP stream")
        for page in pdf.pages:
            for annot in page.obj.get("/Annots", pikepdf.Array()):
                if isinstance(annot, pikepdf.Dictionary):
                    found += [f"annotation {k}" for k in ANNOT_DROP_KEYS if k in annot]
        for obj in pdf.objects:
            filters = _image_filters(obj) if isinstance(obj, pikepdf.Stream) else None
            if filters is None:
                continue
            if filters[-1] == pikepdf.Name.DCTDecode:
                found += [f"JPEG inside: {what}" for what in jpeg_leftovers(_pdf_image(obj), adobe=True)]
            else:
                found += [f"JPEG 2000 inside: {what}" for what in jpx_leftovers(_pdf_image(obj))]
    return sorted(set(found))


# --- Office packages (OOXML, ODF) -------------------------------------------------------------
REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
DC_NS = "http://purl.org/dc/elements/1.1/"
META_NS = "urn:oasis:names:tc:opendocument:xmlns:meta:1.0"
CONFIG_NS = "urn:oasis:names:tc:opendocument:xmlns:config:1.0"
REL_CORE = ("/metadata/core-properties",)
REL_APP = "/extended-properties"
REL_CUSTOM = "/custom-properties"
REL_THUMB = "/metadata/thumbnail"
REL_PRINTER = "/printerSettings"

NEUTRAL_CORE = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
    b'xmlns:dcmitype="http://purl.org/dc/dcmitype/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>'
)
NEUTRAL_APP = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties" '
    b'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes"/>'
)
NEUTRAL_CUSTOM = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties" '
    b'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes"/>'
)
NEUTRAL_META = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    b'office:version="1.2"><office:meta/></office:document-meta>'
)
NEUTRAL_NAME = "-"
# Attributes (by local name) that name a person, anywhere in an Office XML part.
PERSON_ATTRS = {"author", "initials", "lastModifiedBy", "userId", "providerId", "displayName"}
# ... and that date a person's edit or comment (removed; optional in the schemas).
DATE_ATTRS = {"date", "dateUtc", "dT"}
# Elements whose text names a person or dates their edit.
PERSON_ELEMENTS = {(DC_NS, "creator"), (DC_NS, "date"), (META_NS, "creator-initials"),
                   (META_NS, "printed-by"), (META_NS, "print-date")}
ODF_PRINTER_ITEMS = {"PrinterName", "PrinterSetup", "PrinterPaperFromSetup"}
IMAGE_EXT = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png"}  # other embedded pictures: refused
KEEP_BINARY_EXT = {"emf", "wmf", "odttf", "ttf", "otf", "fntdata", "svg"}
# ODF members without metadata: LibreOffice's layout cache, rendered replacements of charts.
KEEP_ODF = ("layout-cache", "ObjectReplacements/")
# Elements (by local name) whose `name` attribute is a person's (PowerPoint comment authors).
NAMED_PERSONS = {"cmAuthor", "author", "person"}
NESTED_EXT = {"docx", "xlsx", "pptx", "odt", "ods", "odp"}
OOXML_MAIN = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml":
        ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml":
        ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml":
        ("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
}
ODF_TYPES = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False, huge_tree=False)


def clean_package(data: bytes, depth: int = 0) -> Cleaned:
    zf = _open_zip(data)
    names = zf.namelist()
    if "[Content_Types].xml" in names:
        return _clean_ooxml(zf, depth)
    if "mimetype" in names and zf.read("mimetype").decode("ascii", "replace").strip() in ODF_TYPES:
        return _clean_odf(zf, depth)
    raise Uncleanable(ARCHIVE)


def _open_zip(data: bytes) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise Uncleanable(DAMAGED, "bad zip") from None
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS or sum(i.file_size for i in infos) > MAX_ZIP_UNPACKED:
        raise Uncleanable(TOO_BIG, "unpacks too large")
    if any(i.flag_bits & 0x1 for i in infos):
        raise Uncleanable(ENCRYPTED)
    return zf


def _source_of(rels: str) -> str:
    folder, name = posixpath.split(rels)
    return posixpath.join(posixpath.dirname(folder), name[: -len(".rels")])


def _target(source: str, target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(source), target))


def _clean_ooxml(zf: zipfile.ZipFile, depth: int) -> Cleaned:
    names = zf.namelist()
    types = _parse(zf.read("[Content_Types].xml"))
    main = next((o.get("ContentType") for o in types.iter(f"{{{CT_NS}}}Override")
                 if o.get("ContentType") in OOXML_MAIN), None)
    if main is None:  # macro-enabled, templates, or not a document we know
        raise Uncleanable(UNKNOWN, "not a docx/xlsx/pptx")
    extension, mime = OOXML_MAIN[main]
    replace: dict[str, bytes] = {}
    drop: set[str] = set()
    rels = _parse(zf.read("_rels/.rels")) if "_rels/.rels" in names else None
    if rels is not None:
        for rel in rels.iter(f"{{{REL_NS}}}Relationship"):
            kind, target = rel.get("Type", ""), _target("", rel.get("Target", ""))
            if kind.endswith(REL_CORE):
                replace[target] = NEUTRAL_CORE
            elif kind.endswith(REL_APP):
                replace[target] = NEUTRAL_APP
            elif kind.endswith(REL_CUSTOM):
                replace[target] = NEUTRAL_CUSTOM
            elif kind.endswith(REL_THUMB):
                drop.add(target)
    for name in names:
        if name.endswith(".rels"):
            for rel in _parse(zf.read(name)).iter(f"{{{REL_NS}}}Relationship"):
                if rel.get("Type", "").endswith(REL_PRINTER) and rel.get("TargetMode") != "External":
                    drop.add(_target(_source_of(name), rel.get("Target", "")))
    # Relationship ids that point at dropped parts, by the part that uses them.
    dead: dict[str, set[str]] = {}
    for name in names:
        if name.endswith(".rels"):
            source = _source_of(name)
            for rel in _parse(zf.read(name)).iter(f"{{{REL_NS}}}Relationship"):
                if rel.get("TargetMode") != "External" and _target(source, rel.get("Target", "")) in drop:
                    dead.setdefault(source, set()).add(rel.get("Id", ""))
    out: dict[str, bytes] = {}
    for name in names:
        if name in drop:
            continue
        if name.endswith("/"):  # a folder entry: kept, empty
            out[name] = b""
            continue
        if name in replace:
            out[name] = replace[name]
            continue
        out[name] = _clean_member(name, zf.read(name), depth, dropped=drop, dead_ids=dead.get(name, set()))
    # Overrides for dropped parts go too.
    ct = _parse(out["[Content_Types].xml"])
    for o in list(ct.iter(f"{{{CT_NS}}}Override")):
        if o.get("PartName", "").lstrip("/") in drop:
            o.getparent().remove(o)
    out["[Content_Types].xml"] = _dump(ct)
    return Cleaned(_write_zip(list(out.items())), extension, mime, photo=False)


def _clean_odf(zf: zipfile.ZipFile, depth: int) -> Cleaned:
    mimetype = zf.read("mimetype").decode("ascii").strip()
    out: list[tuple[str, bytes]] = [("mimetype", mimetype.encode("ascii"))]
    for name in zf.namelist():
        if name == "mimetype":
            continue
        if name.endswith("/"):  # a folder entry (the manifest may list it): kept, empty
            out.append((name, b""))
            continue
        top = name.split("/", 1)[0]
        if top in ("Basic", "Scripts"):
            raise Uncleanable(UNKNOWN, "macros")
        if name == "meta.xml":
            out.append((name, NEUTRAL_META))
            continue
        out.append((name, _clean_member(name, zf.read(name), depth, dropped=set(), dead_ids=set())))
    return Cleaned(_write_zip(out, stored_first=True), ODF_TYPES[mimetype], mimetype, photo=False)


def _clean_member(name: str, data: bytes, depth: int, *, dropped: set[str], dead_ids: set[str]) -> bytes:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else ""
    if not data.strip():  # LibreOffice writes empty placeholder parts
        return data
    if ext in ("xml", "rels", "rdf", "vml"):
        try:
            root = _parse(data)
        except Uncleanable:
            if ext == "vml":  # legacy drawings (comment boxes) are not always well-formed; shapes only
                return data
            raise
        if re.fullmatch(r"customXml/item\d+\.xml", name):
            # Data stores (SharePoint owners, editors, e-mail addresses): emptied, root kept.
            for child in list(root):
                root.remove(child)
            root.text = None
        _scrub_xml(root, name, dropped, dead_ids=dead_ids)
        return _dump(root)
    if name.startswith(KEEP_ODF):
        return data
    if ext in IMAGE_EXT:  # re-encoded in the format its name and content type say
        return clean_image(data, keep_format=IMAGE_EXT[ext]).data
    if ext in NESTED_EXT:
        if depth >= MAX_NESTING:
            raise Uncleanable(UNKNOWN, "nested too deep")
        return clean_package(data, depth + 1).data
    if ext in KEEP_BINARY_EXT:
        return data
    raise Uncleanable(UNKNOWN, f"embedded {ext or 'object'}")


def _parse(data: bytes) -> etree._Element:
    try:
        return etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError:
        raise Uncleanable(DAMAGED, "XML") from None


def _dump(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def _local(tag: object) -> tuple[str, str]:
    if not isinstance(tag, str):
        return "", ""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _scrub_xml(root: etree._Element, name: str, dropped: set[str], *, dead_ids: frozenset[str] | set[str] = frozenset(),
               detect: bool = False) -> list[str]:
    """Remove (or with `detect`, only list) what names or dates a person in one XML part."""
    found: list[str] = []
    source = _source_of(name) if name.endswith(".rels") else name
    for el in list(root.iter()):
        ns, local = _local(el.tag)
        if not local:
            continue
        if ns == REL_NS and local == "Relationship":
            target = el.get("Target", "")
            if el.get("TargetMode") != "External" and _target(source, target) in dropped:
                found.append("relationship to a dropped part")
                if not detect:
                    el.getparent().remove(el)
                continue
            if el.get("TargetMode") == "External" and target.lower().startswith("file:"):
                if target != "file:///":
                    found.append("local file path")
                    if not detect:
                        el.set("Target", "file:///")
        if ns == W_NS and local == "rsids":
            found.append("revision session ids")
            if not detect:
                el.getparent().remove(el)
            continue
        if local == "absPath":  # Excel's x15ac:absPath: the folder the workbook was saved in
            found.append("absolute path")
            if not detect:
                el.getparent().remove(el)
            continue
        if (ns, local) in PERSON_ELEMENTS and (el.text or "").strip():
            found.append(local)
            if not detect:
                el.text = ""
        if ns == CONFIG_NS and local == "config-item" and el.get(f"{{{CONFIG_NS}}}name") in ODF_PRINTER_ITEMS:
            if (el.text or "").strip():
                found.append("printer")
                if not detect:
                    el.text = ""
        if local == "author" and ns.endswith("/spreadsheetml/2006/main") and (el.text or "") != NEUTRAL_NAME:
            found.append("comment author")
            if not detect:
                el.text = NEUTRAL_NAME
        for attr in list(el.attrib):
            ans, alocal = _local(attr)
            if alocal == "name" and local in NAMED_PERSONS and el.get(attr) != NEUTRAL_NAME:
                found.append(f"{local} name")
                if not detect:
                    el.set(attr, NEUTRAL_NAME)
            elif alocal in PERSON_ATTRS and el.get(attr) not in ("", NEUTRAL_NAME):
                found.append(alocal)
                if not detect:
                    el.set(attr, NEUTRAL_NAME if alocal in ("author", "displayName") else "")
            elif alocal in DATE_ATTRS and ns not in ("", CT_NS, REL_NS):
                found.append(alocal)
                if not detect:
                    del el.attrib[attr]
            elif alocal.startswith("rsid") and ans == W_NS:
                found.append("rsid")
                if not detect:
                    del el.attrib[attr]
            elif ans == R_NS and el.get(attr) in dead_ids:  # e.g. <pageSetup r:id> of dropped printer settings
                found.append("reference to a dropped part")
                if not detect:
                    del el.attrib[attr]
    return found


def _write_zip(members: list[tuple[str, bytes]], *, stored_first: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for i, (name, data) in enumerate(members):
            info = zipfile.ZipInfo(name, date_time=NEUTRAL_ZIP_DATE)
            info.create_system = 0
            info.external_attr = 0
            info.compress_type = zipfile.ZIP_STORED if (stored_first and i == 0) else zipfile.ZIP_DEFLATED
            out.writestr(info, data)
    return buf.getvalue()


def package_leftovers(data: bytes) -> list[str]:
    found: list[str] = []
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return ["unreadable zip"]
    if zf.comment:
        found.append("zip comment")
    for info in zf.infolist():
        if info.date_time != NEUTRAL_ZIP_DATE:
            found.append("zip member date")
        if info.extra:
            found.append("zip extra field")
        name = info.filename
        body = zf.read(name)
        if not body.strip():
            continue
        if name == "docProps/core.xml" and body != NEUTRAL_CORE:
            found.append("core properties")
        elif name == "docProps/app.xml" and body != NEUTRAL_APP:
            found.append("app properties")
        elif name == "docProps/custom.xml" and body != NEUTRAL_CUSTOM:
            found.append("custom properties")
        elif name == "meta.xml" and body != NEUTRAL_META:
            found.append("meta.xml")
        elif name.startswith("docProps/thumbnail"):
            found.append("thumbnail")
        elif "printerSettings" in name:
            found.append("printer settings")
        elif re.fullmatch(r"customXml/item\d+\.xml", name) and len(_parse(body)):
            found.append("custom XML data")
        elif name.endswith((".xml", ".rels")):
            try:
                found += _scrub_xml(_parse(body), name, set(), detect=True)
            except Uncleanable:
                found.append(f"unreadable {name}")
        elif name.rsplit(".", 1)[-1].lower() in ("jpg", "jpeg", "png"):
            found += [f"{name}: {p}" for p in verify(body)]
    return sorted(set(found))


def neutral_name(index: int, extension: str) -> str:
    """evidence-3.pdf: the only name a cleaned file goes out with."""
    return f"evidence-{index}.{extension}"

