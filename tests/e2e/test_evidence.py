"""Evidence reaches staff cleaned of metadata, under neutral names; what cannot be cleaned
is said plainly first and can be withdrawn; voice messages are refused.

What staff receive is read back as bytes from the fake Bot API (the files the bot
uploaded) and searched with the same libraries that build the fixtures.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from storage.models import Evidence
from tests import evidence_fixtures as fx
from tests.e2e.conftest import Harness, e2e_config, plain
from tests.fakebot import FakeBotAPI, SentRecord

CITIZEN = 5_770_001
LEAD = 7_770_001
OFFICE = 7_770_002
CLEAN_COPY = "督查组将收到的正是这份文件"
WARNING = "这个文件无法清理"
NEUTRAL = re.compile(r"^evidence-\d+\.(jpg|png|pdf|docx|xlsx|txt)$")

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


async def to_evidence_step(h: Harness, user: dict[str, Any]) -> None:
    menu = await h.say(user, "/start", expect="查询码")
    cats = await h.press(user, menu, "📝", expect="1")
    units = await h.press(user, cats, "迟到早退脱岗", expect="2")
    await h.press(user, units, "定昌镇", expect="3")
    await h.say(user, "11月20日晚，县城某酒店", expect="4")
    prompt = await h.say(user, "单位负责人用公款宴请，附上照片和账单。", expect="5")
    assert prompt is not None and "去掉其中隐藏的位置" in plain(prompt)  # said before anything is sent


async def submit(h: Harness, user: dict[str, Any], count: int) -> SentRecord:
    ack = await h.expect(user["id"], f"已收到 {count} 个证据")
    await h.press(user, ack, "完成", expect="核对")
    review = await h.expect_button(user["id"], "提交")
    await h.press(user, review, "提交", expect="您的查询码")
    return review


def media_to(srv: FakeBotAPI, chat_id: int) -> list[SentRecord]:
    return [r for r in srv.sent_to(chat_id) if r.get("media_type") in ("photo", "document", "video", "voice")]


def file_name(record: SentRecord) -> str | None:
    doc = record["message"].get("document")
    return doc.get("file_name") if doc else None


def assert_clean(srv: FakeBotAPI, record: SentRecord) -> bytes:
    data = srv.file_content(record["file_id"] or "")
    assert data is not None, "staff got a file the bot did not upload"
    text = fx.all_text(data)
    assert not [m for m in fx.MARKERS if m in text], [m for m in fx.MARKERS if m in text]
    if data.startswith(b"%PDF"):
        assert fx.pdf_metadata(data) == {}
    elif data.startswith(b"PK"):
        assert fx.office_metadata(data) == {}
    else:
        assert fx.image_metadata(data) == {}
    return data


async def test_staff_receive_files_without_metadata_and_under_neutral_names(harness: Harness) -> None:
    h, srv = harness, harness.server
    h.add_staff(srv.user(LEAD, "Lead"), "lead", 1)
    citizen = srv.user(CITIZEN, "Tipster")
    await to_evidence_step(h, citizen)

    secret = fx.FILE_NAME_SECRET
    files = [
        (f"IMG_0042 {secret}.jpg", fx.jpeg_with_exif(), "image/jpeg"),
        (f"{secret} report.docx", fx.docx_with_metadata(), DOCX),
        (f"scan {secret}.pdf", fx.pdf_with_metadata(), "application/pdf"),
        (f"{secret}.xlsx", fx.xlsx_with_metadata(), XLSX),
    ]
    originals = []
    for name, data, mime in files:
        # each fixture really carries what must go
        assert [m for m in fx.MARKERS if m in fx.all_text(data)]
        update = srv.push_message(citizen, document=name, content=data, mime_type=mime)
        originals.append(update["message"]["document"]["file_id"])
        copy = await h.expect(CITIZEN, CLEAN_COPY)
        assert NEUTRAL.match(file_name(copy) or ""), file_name(copy)
    update = srv.push_message(citizen, photo=True, content=fx.jpeg_with_exif(), caption="包厢里的照片")
    originals += [p["file_id"] for p in update["message"]["photo"]]
    copy = await h.expect(CITIZEN, CLEAN_COPY)
    assert copy["media_type"] == "photo"
    await submit(h, citizen, 5)

    await h.expect(LEAD, "举报 #1")
    sent = await srv.wait_for(lambda: media_to(srv, LEAD) if len(media_to(srv, LEAD)) == 5 else None, 15,
                              message="five evidence messages to the lead")
    names = sorted(file_name(r) or "" for r in sent if r["media_type"] == "document")
    assert names == ["evidence-1.jpg", "evidence-2.docx", "evidence-3.pdf", "evidence-4.xlsx"]
    kinds = {}
    for record in sent:
        data = assert_clean(srv, record)
        kinds[record["media_type"], data[:4]] = True
        assert record["file_id"] not in originals
    assert ("photo", b"\xff\xd8\xff\xe0") in kinds  # the photo sent as a photo was re-encoded too
    assert "包厢里的照片" in str([plain(r) for r in sent])  # the tipster's caption is content: kept
    # The picture itself survives, turned upright as its orientation tag said.
    from io import BytesIO

    from PIL import Image

    photo = next(r for r in sent if r["media_type"] == "photo")
    with Image.open(BytesIO(srv.file_content(photo["file_id"] or "") or b"")) as img:
        assert img.size == (48, 64)

    # Only the clean copies' ids are kept.
    keyring = h.deps.keyring
    with h.deps.sessions.begin() as session:
        kept = [keyring.decrypt(e.file_ref_enc) for e in session.scalars(select(Evidence))]
    assert len(kept) == 5 and not set(kept) & set(originals)


async def test_uncleanable_files_are_announced_and_can_be_withdrawn(harness: Harness) -> None:
    h, srv = harness, harness.server
    h.add_staff(srv.user(LEAD, "Lead"), "lead", 1)
    citizen = srv.user(CITIZEN + 1, "Tipster")
    await to_evidence_step(h, citizen)

    archive = srv.push_message(citizen, document="photos.zip", content=b"PK\x05\x06" + bytes(18),
                               mime_type="application/zip")
    warning = await h.expect(citizen["id"], WARNING)
    assert "压缩包" in plain(warning)
    await h.press(citizen, warning, "撤回", expect="已撤回")

    big = srv.push_message(citizen, document="scan.pdf", mime_type="application/pdf", file_size=25 * 1024 * 1024)
    warning = await h.expect(citizen["id"], WARNING)
    assert "20 MB" in plain(warning)
    await h.press(citizen, warning, "撤回", expect="已撤回")

    video = srv.push_message(citizen, video=True)
    warning = await h.expect(citizen["id"], WARNING)
    assert "视频" in plain(warning)
    await h.press(citizen, warning, "按原样保留", expect="已保留")

    await h.say(citizen, voice=True, expect="不接受语音消息")

    await submit(h, citizen, 1)
    review = [r for r in srv.sent_to(citizen["id"]) if "请核对" in plain(r)][-1]
    assert "1 个未经清理" in plain(review)

    await h.expect(LEAD, "举报 #1")
    sent = await srv.wait_for(lambda: media_to(srv, LEAD) or None, 10, message="the video to the lead")
    assert [r["media_type"] for r in sent] == ["video"]
    assert sent[0]["file_id"] == video["message"]["video"]["file_id"]
    given = {archive["message"]["document"]["file_id"], big["message"]["document"]["file_id"]}
    assert not given & {r.get("file_id") for r in srv.sent}, "a withdrawn file was sent"


async def test_additions_are_cleaned_and_voice_may_be_accepted(database_url: str, server: FakeBotAPI) -> None:
    h = Harness(server, e2e_config(database_url, server, intake={"voice": "accept"}))
    await h.start()
    try:
        srv = server
        h.add_staff(srv.user(LEAD, "Lead"), "lead", 1)
        citizen = srv.user(CITIZEN + 2, "Tipster")
        code = await h.report(citizen)
        await h.expect(LEAD, "举报 #1")
        timeline = await h.say(citizen, code.replace(" ", ""), expect="举报 #1")
        prompt = await h.press(citizen, timeline, "补充", expect="发送给督查组")
        assert prompt is not None and "语音消息带有您本人的声音" in plain(prompt)
        srv.push_message(citizen, document=f"{fx.FILE_NAME_SECRET}.pdf", content=fx.pdf_with_metadata(),
                         mime_type="application/pdf")
        await h.expect(citizen["id"], CLEAN_COPY)
        srv.push_message(citizen, voice=True)
        warning = await h.expect(citizen["id"], WARNING)
        assert "声音" in plain(warning)
        await h.press(citizen, warning, "撤回", expect="已撤回")
        await h.expect(citizen["id"], "证据 1 个")
        await h.press(citizen, srv.sent_to(citizen["id"])[-1], "发送给督查组", expect="已送达督查组")

        await h.expect(LEAD, "举报人补充了情况")
        [doc] = await srv.wait_for(lambda: media_to(srv, LEAD) or None, 10, message="the addition's file")
        assert file_name(doc) == "evidence-1.pdf"
        assert_clean(srv, doc)
    finally:
        await h.stop()


async def test_office_attachments_are_cleaned(harness: Harness) -> None:
    h, srv = harness, harness.server
    office = srv.user(OFFICE, "Office Wu")
    h.add_staff(office, "office", None)
    h.add_staff(srv.user(LEAD, "Lead"), "lead", 1)
    channel = await h.say(office, "/enter", expect="怎么收到的")
    cats = await h.press(office, channel, "举报邮箱", expect="举报类别")
    units = await h.press(office, cats, "迟到早退脱岗", expect="哪个单位")
    await h.press(office, units, "定昌镇", expect="时间和地点")
    await h.say(office, "来信称：11月20日晚，县城某酒店", expect="反映了什么情况")
    await h.say(office, "来信反映单位负责人用公款宴请，附账单。", expect="附件")
    srv.push_message(office, document=f"{fx.FILE_NAME_SECRET} letter.docx", content=fx.docx_with_metadata(),
                     mime_type=DOCX)
    await h.expect(OFFICE, CLEAN_COPY)
    ack = await h.expect(OFFICE, "已收到 1 个")
    review = await h.press(office, ack, "完成", expect="请核对录入的邮件举报")
    await h.press(office, review, "提交", expect="查询码")

    await h.expect(LEAD, "举报 #1")
    [doc] = await srv.wait_for(lambda: media_to(srv, LEAD) or None, 10, message="the letter to the lead")
    assert file_name(doc) == "evidence-1.docx"
    assert_clean(srv, doc)
