"""Evidence files that carry identifying metadata, built in the test (no binary fixtures),
and readers that look for it with the same libraries that clean it.

Every marker below is a distinctive string: a test looks for it in what staff receive.
"""

from __future__ import annotations

import io
import zipfile
import zlib

import pikepdf
from lxml import etree
from PIL import Image, ImageDraw

AUTHOR = "Zhang Weiming-AUTHOR-7731"
COMPANY = "Qinxian Water Bureau-COMPANY-7731"
SERIAL = "CAMSERIAL-7731-0042"
CAMERA = "PhoneMaker X9-MODEL-7731"
CREATOR_TOOL = "ScanTool-CREATOR-7731"
XMP_AUTHOR = "xmp-author-7731"
FILE_NAME_SECRET = "zhangweiming-home"
GPS_LAT = (36.0, 45.0, 18.5)  # Qin County, roughly
MARKERS = (AUTHOR, COMPANY, SERIAL, CAMERA, CREATOR_TOOL, XMP_AUTHOR, FILE_NAME_SECRET)

XMP = f"""<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:creator><rdf:Seq><rdf:li>{XMP_AUTHOR}</rdf:li></rdf:Seq></dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>""".encode()


def picture(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    img = Image.new(mode, size, "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((8, 8, size[0] - 8, size[1] // 2), fill="red")
    return img


def exif() -> Image.Exif:
    data = Image.Exif()
    data[0x010F] = "PhoneMaker"  # Make
    data[0x0110] = CAMERA  # Model
    data[0x013B] = AUTHOR  # Artist
    data[0x0131] = CREATOR_TOOL  # Software
    data[0x0112] = 6  # Orientation: rotate 90 CW to view
    ifd = data.get_ifd(0x8769)  # Exif IFD
    ifd[0xA431] = SERIAL  # BodySerialNumber
    ifd[0x9003] = "2026:11:20 09:30:00"  # DateTimeOriginal
    gps = data.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = GPS_LAT
    gps[3] = "E"
    gps[4] = (112.0, 10.0, 59.0)
    return data


def jpeg_with_exif() -> bytes:
    buf = io.BytesIO()
    picture().save(buf, "JPEG", exif=exif(), xmp=XMP, comment=AUTHOR.encode(), quality=90)
    return buf.getvalue()


def png_with_text() -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", AUTHOR)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    buf = io.BytesIO()
    picture(mode="RGBA").save(buf, "PNG", pnginfo=info, exif=exif())
    return buf.getvalue()


def pdf_with_metadata() -> bytes:
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(200, 200))
    pdf.docinfo["/Author"] = AUTHOR
    pdf.docinfo["/Creator"] = CREATOR_TOOL
    pdf.docinfo["/Producer"] = CREATOR_TOOL
    pdf.docinfo["/Title"] = COMPANY
    pdf.Root.Metadata = pdf.make_stream(XMP, Type=pikepdf.Name.Metadata, Subtype=pikepdf.Name.XML)
    page = pdf.pages[0]
    # A photo pasted in, as it came from the phone (EXIF with GPS and the camera's serial),
    # once as a plain DCTDecode stream and once compressed again with Flate on top.
    photo = jpeg_with_exif()
    plain = pdf.make_stream(photo, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=64, Height=48,
                            ColorSpace=pikepdf.Name.DeviceRGB, BitsPerComponent=8, Filter=pikepdf.Name.DCTDecode)
    wrapped = pdf.make_stream(zlib.compress(photo), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                              Width=64, Height=48, ColorSpace=pikepdf.Name.DeviceRGB, BitsPerComponent=8,
                              Filter=pikepdf.Array([pikepdf.Name.FlateDecode, pikepdf.Name.DCTDecode]))
    page.obj["/Resources"] = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im1=plain, Im2=wrapped))
    page.obj["/Contents"] = pdf.make_stream(b"q 64 0 0 48 10 100 cm /Im1 Do Q q 64 0 0 48 100 100 cm /Im2 Do Q")
    page.obj["/Annots"] = pdf.make_indirect(pikepdf.Array([pikepdf.Dictionary(
        Type=pikepdf.Name.Annot, Subtype=pikepdf.Name.Text, Rect=[10, 10, 30, 30],
        Contents=pikepdf.String("note"), T=pikepdf.String(AUTHOR), M=pikepdf.String("D:20261120093000+08'00'"),
    )]))
    buf = io.BytesIO()
    pdf.save(buf)
    return buf.getvalue()


GPS_TEXT = "GPSLatitude 36,45.3083N GPSLongitude 112,10.9833E-7731"


def _box(kind: bytes, body: bytes) -> bytes:
    return (len(body) + 8).to_bytes(4, "big") + kind + body


def j2k_with_comment() -> bytes:
    """A bare JPEG 2000 codestream whose main header has a comment naming its author."""
    buf = io.BytesIO()
    picture().save(buf, "JPEG2000", no_jp2=True, comment=AUTHOR)
    return buf.getvalue()


def jp2_with_metadata() -> bytes:
    """A JP2 file as a scanner might write it: an XML box with GPS, an XMP uuid box, an ICC
    profile naming the company, a resolution box, and a comment in its codestream."""
    buf = io.BytesIO()
    picture().save(buf, "JPEG2000", comment=AUTHOR)
    data, boxes, i = buf.getvalue(), [], 0
    while i < len(data):
        length = int.from_bytes(data[i : i + 4], "big") or len(data) - i
        boxes.append((data[i + 4 : i + 8], data[i + 8 : i + length]))
        i += length
    out = b""
    for kind, body in boxes:
        if kind == b"jp2h":
            ihdr = body[: int.from_bytes(body[:4], "big")]
            icc = b"\x02\x00\x00" + f"fake ICC profile of {COMPANY}".encode()
            body = ihdr + _box(b"colr", icc) + _box(b"res ", _box(b"resc", bytes(10)))
        out += _box(kind, body)
        if kind == b"jp2h":
            out += _box(b"xml ", f"<exif><gps>{GPS_TEXT}</gps></exif>".encode())
            out += _box(b"uuid", bytes.fromhex("BE7ACFCB97A942E89C71999491E3AFAC") + XMP)
    return out


def pdf_with_jpx() -> bytes:
    """A PDF with a JP2 file (its colour space its own) and a bare codestream inside."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(200, 200))
    jp2 = pdf.make_stream(jp2_with_metadata(), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=64,
                          Height=48, Filter=pikepdf.Name.JPXDecode)
    j2k = pdf.make_stream(j2k_with_comment(), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=64,
                          Height=48, ColorSpace=pikepdf.Name.DeviceRGB, BitsPerComponent=8,
                          Filter=pikepdf.Name.JPXDecode)
    page = pdf.pages[0]
    page.obj["/Resources"] = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im1=jp2, Im2=j2k))
    page.obj["/Contents"] = pdf.make_stream(b"q 64 0 0 48 10 100 cm /Im1 Do Q q 64 0 0 48 100 100 cm /Im2 Do Q")
    buf = io.BytesIO()
    pdf.save(buf)
    return buf.getvalue()


CT = "http://schemas.openxmlformats.org/package/2006/content-types"
RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
DOCREL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def docx_with_metadata() -> bytes:
    """A minimal Word document with author, company, a comment by the author, revision ids
    and an embedded photo with EXIF."""
    files = {
        "[Content_Types].xml": f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="{CT}"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/><Default Extension="jpeg" ContentType="image/jpeg"/>
<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
<Override PartName="/docProps/core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>
<Override PartName="/docProps/app.xml" ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/>
<Override PartName="/docProps/custom.xml" ContentType="application/vnd.openxmlformats-officedocument.custom-properties+xml"/>
<Override PartName="/docProps/thumbnail.jpeg" ContentType="image/jpeg"/>
</Types>""",
        "_rels/.rels": f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="{RELS}">
<Relationship Id="rId1" Type="{DOCREL}/officeDocument" Target="word/document.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties" Target="docProps/core.xml"/>
<Relationship Id="rId3" Type="{DOCREL}/extended-properties" Target="docProps/app.xml"/>
<Relationship Id="rId4" Type="{DOCREL}/custom-properties" Target="docProps/custom.xml"/>
<Relationship Id="rId5" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/thumbnail" Target="docProps/thumbnail.jpeg"/>
</Relationships>""",
        "docProps/core.xml": f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<dc:creator>{AUTHOR}</dc:creator><cp:lastModifiedBy>{AUTHOR}</cp:lastModifiedBy>
<dcterms:created xsi:type="dcterms:W3CDTF">2026-11-20T09:30:00Z</dcterms:created></cp:coreProperties>""",
        "docProps/app.xml": f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">
<Application>Microsoft Office Word</Application><Company>{COMPANY}</Company><Manager>{AUTHOR}</Manager>
<Template>C:\\Users\\{FILE_NAME_SECRET}\\Normal.dotm</Template></Properties>""",
        "docProps/custom.xml": f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties" xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">
<property fmtid="{{D5CDD505-2E9C-101B-9397-08002B2CF9AE}}" pid="2" name="Owner"><vt:lpwstr>{AUTHOR}</vt:lpwstr></property></Properties>""",
        "word/_rels/document.xml.rels": f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="{RELS}">
<Relationship Id="rId7" Type="{DOCREL}/image" Target="media/image1.jpeg"/>
<Relationship Id="rId8" Type="{DOCREL}/attachedTemplate" Target="file:///C:\\Users\\{FILE_NAME_SECRET}\\Normal.dotm" TargetMode="External"/>
</Relationships>""",
        "word/document.xml": f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:r="{DOCREL}" xmlns:w14="http://schemas.microsoft.com/office/word/2010/wordml" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" mc:Ignorable="w14">
<w:body><w:p w:rsidR="00A1B2C3" w14:paraId="1A2B3C4D"><w:r><w:t>The meal receipt is attached.</w:t></w:r>
<w:ins w:id="1" w:author="{AUTHOR}" w:date="2026-11-20T09:31:00Z"><w:r><w:t>Added later.</w:t></w:r></w:ins></w:p></w:body></w:document>""",
        "word/media/image1.jpeg": jpeg_with_exif(),
        "docProps/thumbnail.jpeg": jpeg_with_exif(),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in files.items():
            zf.writestr(name, body.encode() if isinstance(body, str) else body)
        zf.comment = AUTHOR.encode()
    return buf.getvalue()


def xlsx_with_metadata() -> bytes:
    from openpyxl import Workbook
    from openpyxl.comments import Comment

    wb = Workbook()
    wb.properties.creator = AUTHOR
    wb.properties.lastModifiedBy = AUTHOR
    wb.properties.title = COMPANY
    ws = wb.active
    ws["A1"] = "Dinner, 20 November"
    ws["B1"] = 1280
    ws["A2"].comment = Comment("checked", AUTHOR)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# --- readers: what a cleaned file still says -----------------------------------------------
def image_metadata(data: bytes) -> dict[str, object]:
    """Every metadata field Pillow can see in an image."""
    with Image.open(io.BytesIO(data)) as img:
        found: dict[str, object] = {k: v for k, v in img.info.items() if k not in ("jfif", "jfif_version",
                                                                                  "jfif_unit", "jfif_density",
                                                                                  "dpi", "progressive",
                                                                                  "progression")}
        ex = img.getexif()
        found.update({f"exif:{k}": v for k, v in ex.items()})
        for ifd in (0x8769, 0x8825):
            found.update({f"exif-ifd{ifd:x}:{k}": v for k, v in ex.get_ifd(ifd).items()})
    return found


def pdf_metadata(data: bytes) -> dict[str, object]:
    found: dict[str, object] = {}
    with pikepdf.open(io.BytesIO(data)) as pdf:
        if "/Metadata" in pdf.Root:
            found["root /Metadata"] = True
        found.update({str(k): str(v) for k, v in pdf.docinfo.items()})
        with pdf.open_metadata(set_pikepdf_as_editor=False, update_docinfo=False) as meta:
            found.update({f"xmp:{k}": str(v) for k, v in meta.items()})
        for page in pdf.pages:
            for annot in page.obj.get("/Annots", []):
                for key in ("/T", "/M"):
                    if key in annot:
                        found[f"annot {key}"] = str(annot[key])
            for name, image in page_images(page).items():  # a JPEG inside: what Pillow sees in it
                filters = image.get("/Filter")
                chain = list(filters) if isinstance(filters, pikepdf.Array) else [filters]
                if chain[-1] != pikepdf.Name.DCTDecode:
                    continue
                jpeg = image.read_raw_bytes()
                if len(chain) == 2 and chain[0] == pikepdf.Name.FlateDecode:
                    jpeg = zlib.decompress(jpeg)
                found.update({f"image {name} {k}": v for k, v in image_metadata(jpeg).items()})
    return found


def page_images(page: pikepdf.Page) -> dict[str, pikepdf.Stream]:
    return page.get_images() if hasattr(page, "get_images") else page.images  # pikepdf 10 renamed it


def office_metadata(data: bytes) -> dict[str, object]:
    """docProps as openpyxl/zip see them, plus every text in the package's XML parts."""
    found: dict[str, object] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        if zf.comment:
            found["zip comment"] = zf.comment
        for name in zf.namelist():
            if name.startswith("docProps/"):
                body = zf.read(name)
                if name.endswith(".xml"):
                    root = etree.fromstring(body)
                    texts = [t for t in root.itertext() if t.strip()]
                    if texts:
                        found[name] = texts
                else:
                    found[name] = len(body)
    return found


def all_text(data: bytes) -> str:
    """The bytes of a file and of every member of it (if a zip), as searchable text."""
    parts = [data.decode("latin-1")]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            parts += [zf.read(n).decode("utf-8", "replace") for n in zf.namelist()]
    except zipfile.BadZipFile:
        pass
    return "\n".join(parts)
