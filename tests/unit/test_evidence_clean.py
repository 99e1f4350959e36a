"""The cleaner on its own: each format loses what names its author and keeps its content;
what cannot be cleaned is refused with a reason. Fixtures are built here (tests/evidence_fixtures.py)."""

from __future__ import annotations

import io
import zipfile

import pikepdf
import pytest
from PIL import Image

from bot import evidence_clean as ec
from tests import evidence_fixtures as fx

FORMATS = {
    "jpeg": (fx.jpeg_with_exif, fx.image_metadata, "jpg"),
    "png": (fx.png_with_text, fx.image_metadata, "png"),
    "pdf": (fx.pdf_with_metadata, fx.pdf_metadata, "pdf"),
    "docx": (fx.docx_with_metadata, fx.office_metadata, "docx"),
    "xlsx": (fx.xlsx_with_metadata, fx.office_metadata, "xlsx"),
}


def markers(data: bytes) -> list[str]:
    text = fx.all_text(data)
    return [m for m in fx.MARKERS if m in text]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_loses_its_metadata(fmt: str) -> None:
    make, read, extension = FORMATS[fmt]
    raw = make()
    assert read(raw) and ec.verify(raw), "the fixture must carry metadata to begin with"
    out = ec.clean(raw)
    assert out.extension == extension
    assert read(out.data) == {}
    assert markers(out.data) == []
    assert ec.verify(out.data) == []


def test_pictures_keep_their_pixels_upright_and_their_transparency() -> None:
    out = ec.clean(fx.jpeg_with_exif())
    with Image.open(io.BytesIO(out.data)) as img:
        assert img.size == (48, 64)  # orientation 6 applied before the tag went
        assert img.getpixel((30, 30))[0] > 200 and img.getpixel((30, 30))[1] < 80  # the red block, turned
        assert min(img.getpixel((30, 4))) > 200  # white above it
    out = ec.clean(fx.png_with_text())
    with Image.open(io.BytesIO(out.data)) as img:
        assert img.mode == "RGBA" and out.extension == "png"


def test_heic_from_a_phone_becomes_a_clean_jpeg() -> None:
    buf = io.BytesIO()
    fx.picture().save(buf, "HEIF", exif=fx.exif().tobytes(), xmp=fx.XMP)
    raw = buf.getvalue()
    assert fx.SERIAL.encode() in raw
    out = ec.clean(raw)
    assert out.extension == "jpg" and markers(out.data) == [] and fx.image_metadata(out.data) == {}


def test_office_package_internals() -> None:
    out = ec.clean(fx.docx_with_metadata())
    with zipfile.ZipFile(io.BytesIO(out.data)) as zf:
        names = zf.namelist()
        assert "docProps/thumbnail.jpeg" not in names
        assert "/docProps/thumbnail.jpeg" not in zf.read("[Content_Types].xml").decode()
        assert "thumbnail" not in zf.read("_rels/.rels").decode()
        doc = zf.read("word/document.xml").decode()
        # prefixes kept (mc:Ignorable names them), revision ids and authors gone, text kept
        assert 'mc:Ignorable="w14"' in doc and "w14:paraId" in doc
        assert "rsidR" not in doc and fx.AUTHOR not in doc and "w:date" not in doc
        assert "The meal receipt is attached." in doc
        assert ec.verify(zf.read("word/media/image1.jpeg")) == []
        assert {i.date_time for i in zf.infolist()} == {ec.NEUTRAL_ZIP_DATE}
        assert not zf.comment

    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(ec.clean(fx.xlsx_with_metadata()).data))
    assert book.active["A1"].value == "Dinner, 20 November" and book.active["B1"].value == 1280
    assert book.active["A2"].comment.author == ec.NEUTRAL_NAME


def _zip(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body.encode() if isinstance(body, str) else body)
    return buf.getvalue()


def test_xlsx_absolute_path_printer_settings_and_nested_workbook() -> None:
    raw = fx.xlsx_with_metadata()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        files: dict[str, bytes | str] = {n: zf.read(n) for n in zf.namelist()}
    wb = files["xl/workbook.xml"].decode()  # type: ignore[union-attr]
    files["xl/workbook.xml"] = wb.replace(
        "<workbookPr", '<mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
        '<mc:Choice Requires="x15"><x15ac:absPath xmlns:x15ac="http://schemas.microsoft.com/office/spreadsheetml/'
        f'2010/11/ac" url="C:\\Users\\{fx.FILE_NAME_SECRET}\\Desktop\\"/></mc:Choice></mc:AlternateContent><workbookPr', 1)
    sheet = files["xl/worksheets/sheet1.xml"].decode()  # type: ignore[union-attr]
    files["xl/worksheets/sheet1.xml"] = sheet.replace(
        "</worksheet>", '<pageSetup xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
        'r:id="rIdP1"/></worksheet>')
    rels = files["xl/worksheets/_rels/sheet1.xml.rels"].decode()  # type: ignore[union-attr]
    files["xl/worksheets/_rels/sheet1.xml.rels"] = rels.replace(
        "</Relationships>", '<Relationship Id="rIdP1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/printerSettings" Target="../printerSettings/printerSettings1.bin"/></Relationships>')
    files["xl/printerSettings/printerSettings1.bin"] = f"PRINTER {fx.COMPANY}".encode("utf-16-le")
    files["xl/embeddings/Book1.docx"] = fx.docx_with_metadata()
    out = ec.clean(_zip(files))
    with zipfile.ZipFile(io.BytesIO(out.data)) as zf:
        assert "xl/printerSettings/printerSettings1.bin" not in zf.namelist()
        assert "rIdP1" not in zf.read("xl/worksheets/sheet1.xml").decode()
        assert "rIdP1" not in zf.read("xl/worksheets/_rels/sheet1.xml.rels").decode()
        assert "absPath" not in zf.read("xl/workbook.xml").decode()
        nested = zf.read("xl/embeddings/Book1.docx")
    assert markers(out.data) == [] and markers(nested) == []


def test_opendocument_meta_and_annotations() -> None:
    office = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
    raw = _zip({
        "mimetype": "application/vnd.oasis.opendocument.text",
        "META-INF/manifest.xml": '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"/>',
        "meta.xml": f'<office:document-meta xmlns:office="{office}" xmlns:meta="urn:oasis:names:tc:opendocument:'
                    f'xmlns:meta:1.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><office:meta>'
                    f'<meta:initial-creator>{fx.AUTHOR}</meta:initial-creator><dc:creator>{fx.AUTHOR}</dc:creator>'
                    f'<meta:generator>{fx.CREATOR_TOOL}</meta:generator></office:meta></office:document-meta>',
        "content.xml": f'<office:document-content xmlns:office="{office}" xmlns:dc="http://purl.org/dc/elements/1.1/"'
                       f' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:text>'
                       f'<text:p>Receipt attached.<office:annotation><dc:creator>{fx.AUTHOR}</dc:creator>'
                       f'<dc:date>2026-11-20T09:30:00</dc:date></office:annotation></text:p>'
                       f'</office:text></office:body></office:document-content>',
        "settings.xml": f'<office:document-settings xmlns:office="{office}" xmlns:config="urn:oasis:names:tc:'
                        f'opendocument:xmlns:config:1.0"><config:config-item config:name="PrinterName" '
                        f'config:type="string">{fx.COMPANY}</config:config-item></office:document-settings>',
        "Pictures/photo.jpg": fx.jpeg_with_exif(),
        "Configurations2/accelerator/current.xml": "",  # LibreOffice writes empty parts and folders
        "Configurations2/toolbar/": "",
        "layout-cache": b"\x00\x01binary",
    })
    out = ec.clean(raw)
    assert out.extension == "odt"
    assert markers(out.data) == []
    with zipfile.ZipFile(io.BytesIO(out.data)) as zf:
        first = zf.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert "Receipt attached." in zf.read("content.xml").decode()
        assert "Configurations2/toolbar/" in zf.namelist()


def test_what_cannot_be_cleaned_says_why() -> None:
    encrypted = io.BytesIO()
    with pikepdf.open(io.BytesIO(fx.pdf_with_metadata())) as pdf:
        pdf.save(encrypted, encryption=pikepdf.Encryption(owner="o", user="secret"))
    cases = {
        ec.ENCRYPTED: encrypted.getvalue(),
        ec.ARCHIVE: _zip({"a.txt": "x", "photo.jpg": fx.jpeg_with_exif()}),
        ec.VIDEO: b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64),
        ec.DAMAGED: b"\xff\xd8\xff\xe0" + bytes(40),
        ec.UNKNOWN: bytes(range(256)) * 4,
    }
    with zipfile.ZipFile(io.BytesIO(fx.docx_with_metadata())) as zf:
        members: dict[str, bytes | str] = {n: zf.read(n) for n in zf.namelist()}
    types = members["[Content_Types].xml"]
    assert isinstance(types, bytes)
    members["[Content_Types].xml"] = types.replace(b"document.main+xml", b"document.macroEnabled.main+xml")
    members["word/vbaProject.bin"] = b"\xd0\xcf\x11\xe0 macro"
    for reason, data in cases.items():
        with pytest.raises(ec.Uncleanable) as caught:
            ec.clean(data)
        assert caught.value.reason == reason, (reason, caught.value)
    with pytest.raises(ec.Uncleanable):
        ec.clean(_zip({"[Content_Types].xml": "<Types/>"}))
    with pytest.raises(ec.Uncleanable):
        ec.clean(_zip(members))  # a docm, whatever its name says


def test_precheck_from_the_message_alone() -> None:
    assert ec.precheck("voice", "audio/ogg", None, 1000) == ec.VOICE
    assert ec.precheck("video", "video/mp4", None, 1000) == ec.VIDEO
    assert ec.precheck("audio", "audio/mpeg", "a.mp3", 1000) == ec.AUDIO
    assert ec.precheck("document", "application/zip", "x.zip", 1000) == ec.ARCHIVE
    assert ec.precheck("document", "video/quicktime", "IMG_1.MOV", 1000) == ec.VIDEO
    assert ec.precheck("document", "application/pdf", "a.pdf", 21 * 1024 * 1024) == ec.TOO_BIG
    assert ec.precheck("document", None, "a.docm", 10) == ec.UNKNOWN
    assert ec.precheck("document", "application/pdf", "a.pdf", 10) is None
    assert ec.precheck("photo", None, None, 10) is None
    assert ec.neutral_name(3, "pdf") == "evidence-3.pdf"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_broken_files_are_refused_never_crash(fmt: str) -> None:
    raw = FORMATS[fmt][0]()
    for cut in (len(raw) // 5, len(raw) // 2, len(raw) - 7):
        for data in (raw[:cut], raw[:cut] + bytes(64) + raw[cut + 64 :]):
            try:
                out = ec.clean(data)
            except ec.Uncleanable as exc:
                assert exc.reason in ec.REASONS
            else:
                assert ec.verify(out.data) == [] and markers(out.data) == []


def test_presentation_comment_authors_and_custom_xml_data() -> None:
    ct = ("application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml")
    raw = _zip({
        "[Content_Types].xml": f'<Types xmlns="{fx.CT}"><Override PartName="/ppt/presentation.xml" '
                               f'ContentType="{ct}"/></Types>',
        "ppt/presentation.xml": '<p:presentation xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"/>',
        "ppt/commentAuthors.xml": '<p:cmAuthorLst xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/'
                                  f'main"><p:cmAuthor id="1" name="{fx.AUTHOR}" initials="ZW" lastIdx="1" '
                                  'clrIdx="0"/></p:cmAuthorLst>',
        "customXml/item1.xml": f'<p:properties xmlns:p="http://schemas.microsoft.com/office/2006/metadata/'
                               f'properties"><Owner><DisplayName>{fx.AUTHOR}</DisplayName></Owner></p:properties>',
    })
    out = ec.clean(raw)
    assert out.extension == "pptx" and markers(out.data) == [] and ec.verify(out.data) == []
    assert ec.verify(raw)


def test_a_jpeg_inside_a_pdf_loses_gps_and_serial_and_keeps_its_pixels() -> None:
    raw = fx.pdf_with_metadata()
    before = fx.pdf_metadata(raw)
    for image in ("/Im1", "/Im2"):  # a plain DCTDecode stream, and one with Flate on top
        assert before[f"image {image} exif-ifd8769:{0xA431}"] == fx.SERIAL
        assert before[f"image {image} exif-ifd8825:2"] == fx.GPS_LAT
    out = ec.clean(raw)
    assert fx.pdf_metadata(out.data) == {} and ec.verify(out.data) == []
    with pikepdf.open(io.BytesIO(raw)) as a, pikepdf.open(io.BytesIO(out.data)) as b:
        for name in ("/Im1", "/Im2"):
            old = pikepdf.PdfImage(fx.page_images(a.pages[0])[name]).as_pil_image()
            new = pikepdf.PdfImage(fx.page_images(b.pages[0])[name]).as_pil_image()
            assert old.tobytes() == new.tobytes()  # the compressed image itself is untouched


def _jpx_images(data: bytes) -> dict[str, bytes]:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        return {name: image.read_raw_bytes() for name, image in fx.page_images(pdf.pages[0]).items()}


def _coded(codestream: bytes) -> bytes:
    """A codestream from its first tile-part on: the coded image itself."""
    return codestream[codestream.index(b"\xff\x90"):]


def test_a_jpeg_2000_inside_a_pdf_loses_its_metadata_and_keeps_its_codestream() -> None:
    raw = fx.pdf_with_jpx()
    secrets = (fx.GPS_TEXT, fx.XMP_AUTHOR, fx.COMPANY, fx.AUTHOR)
    before = _jpx_images(raw)
    assert all(m.encode() in before["/Im1"] for m in secrets) and fx.AUTHOR.encode() in before["/Im2"]
    assert {"JPEG 2000 inside: XML", "JPEG 2000 inside: uuid (XMP, EXIF)", "JPEG 2000 inside: ICC",
            "JPEG 2000 inside: comment"} <= set(ec.verify(raw))
    out = ec.clean(raw)
    assert ec.verify(out.data) == [] and not [m for m in secrets if m in fx.all_text(out.data)]
    after = _jpx_images(out.data)
    for name in ("/Im1", "/Im2"):
        assert not [m for m in secrets if m.encode() in after[name]], name
        with Image.open(io.BytesIO(before[name])) as old, Image.open(io.BytesIO(after[name])) as new:
            assert (new.size, new.mode) == ((64, 48), "RGB") and old.tobytes() == new.tobytes()
    assert after["/Im1"].startswith(ec.JP2_SIGNATURE)  # still a JP2 file, with only the image's own boxes
    assert [kind for kind, _ in ec._jp2_boxes(after["/Im1"])] == [b"jP  ", b"ftyp", b"jp2h", b"jp2c"]
    header = dict(ec._jp2_boxes(after["/Im1"]))[b"jp2h"]
    assert dict(ec._jp2_boxes(header))[b"colr"] == b"\x01\x00\x00\x00\x00\x00\x10"  # the ICC profile: sRGB
    codestream = dict(ec._jp2_boxes(after["/Im1"]))[b"jp2c"]
    assert _coded(codestream) == _coded(dict(ec._jp2_boxes(before["/Im1"]))[b"jp2c"])  # byte for byte
    assert _coded(after["/Im2"]) == _coded(before["/Im2"])


def test_a_comment_in_a_tile_part_header_goes_and_the_tile_part_length_follows() -> None:
    plain = ec.strip_jpx(fx.j2k_with_comment())  # no comment anywhere
    sot = plain.index(b"\xff\x90")
    psot = int.from_bytes(plain[sot + 6 : sot + 10], "big")
    com = b"\xff\x64" + (4 + len(fx.AUTHOR)).to_bytes(2, "big") + b"\x00\x01" + fx.AUTHOR.encode()
    commented = bytearray(plain[: sot + 12] + com + plain[sot + 12 :])
    if psot:
        commented[sot + 6 : sot + 10] = (psot + len(com)).to_bytes(4, "big")
    assert ec.jpx_leftovers(bytes(commented)) == ["comment"]
    assert ec.strip_jpx(bytes(commented)) == plain
    # With an index of tile-part lengths in the main header, that index would go wrong: refused.
    tlm = b"\xff\x55\x00\x06\x00\x00" + bytes(2)
    indexed = bytes(commented[:sot]) + tlm + bytes(commented[sot:])
    with pytest.raises(ec.Uncleanable):
        ec.strip_jpx(indexed)


def test_a_broken_jpeg_2000_inside_a_pdf_is_refused() -> None:
    jp2 = fx.jp2_with_metadata()
    for broken in (jp2[: len(jp2) // 2].replace(b"jp2c", b"jp2x"), b"\xff\x4f\xff\x51\x00", b"not an image"):
        with pytest.raises(ec.Uncleanable):
            ec.strip_jpx(broken)


def test_strip_jpeg_segments_keeps_the_image_and_adobes_colour_coding() -> None:
    jpeg = fx.jpeg_with_exif()
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x01"
    with_adobe = jpeg[:2] + adobe + jpeg[2:]
    out = ec.strip_jpeg_segments(with_adobe)
    assert adobe in out and fx.SERIAL.encode() not in out and ec.jpeg_leftovers(out, adobe=True) == []
    assert out.endswith(jpeg[jpeg.index(b"\xff\xda"):])
    with Image.open(io.BytesIO(out)) as img:
        assert img.getexif() == {} and img.size == (64, 48)
