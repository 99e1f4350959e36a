"""The office's case commands (enter, audit, export), run as the office runs them, on a real database."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.cli import main
from bot.clock import FakeClock
from bot.config import load_config
from bot.deps import Deps, make_keyring
from bot.domain.receipt import new_receipt_code, parse_receipt
from bot.services import audit, export, followup, intake, staff
from bot.services.intake import NewTip
from storage.models import AuditEntry, Outcome, Staff, Tip

from .conftest import add_lead, outbox_rows, payload
from .test_cli import config_file  # noqa: F401  (the fixture)

TEXT = "来电人反映窗口工作人员九点半仍未到岗，群众排队很久。"
BOM = b"\xef\xbb\xbf"


@pytest.fixture
def cli(config_file: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `tipline --config ... ARGS` with the tests' clock; returns (status, stdout, stderr)."""
    monkeypatch.setattr("bot.app.SystemClock", lambda: clock)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            status = main(["--config", str(config_file), *args])
        except SystemExit as exc:  # argparse's own errors
            status = int(exc.code or 0)
        out, err = capsys.readouterr()
        return status, out, err

    return run


# --- enter ---------------------------------------------------------------------------------
def test_enter_routes_a_phone_tip_and_prints_a_working_receipt_code(cli: Any, deps: Deps,
                                                                   config_file: Path) -> None:  # noqa: F811
    with deps.sessions.begin() as session:
        add_lead(session, deps, 1, 901, "Lead Zhou", lang="zh-CN")
        add_lead(session, deps, 0, 902, "Office Wu", role="office")
    status, out, err = cli("enter", "--channel", "phone", "--category", "absence", "--unit", "dingchang",
                           "--place", " 3月2日上午，定昌镇便民服务大厅 ", "--text", TEXT, "--office-member", "902")
    assert status == 0, err
    assert "tip #1 entered (phone), routed to team 1 第一督查组" in out
    lines = out.splitlines()
    code_line = next(line for line in lines if line.startswith("receipt code: "))
    code = parse_receipt(code_line.removeprefix("receipt code: "))
    assert code is not None and code_line.endswith(" ".join(code[i:i + 4] for i in range(0, 16, 4)))
    assert "Read the receipt code to the caller" in out and "Do not write it down" in out
    with deps.sessions.begin() as session:
        # the CLI hashes with the file's Argon2 costs, as the bot does
        keyring = make_keyring(load_config(config_file, env={}))
        tip = followup.find_tip(session, keyring.receipt_hash(code))
        assert tip is not None and (tip.id, tip.channel, tip.team_number, tip.state) == (1, "phone", 1, "routed")
        assert deps.keyring.decrypt(tip.place_enc) == "3月2日上午，定昌镇便民服务大厅"  # trimmed
        office = session.scalar(select(Staff.id).where(Staff.telegram_user_id == 902))
        assert [(e.staff_id, e.action, e.detail) for e in audit.trail(session, 1)] == [
            (office, "entered", "cli; channel=phone")]
        card = [payload(deps, r)["text"] for r in outbox_rows(session, purpose="card")]
        assert len(card) == 1 and "（电话举报）" in card[0] and "九点半仍未到岗" in card[0]


def test_enter_reads_the_text_from_a_file_and_takes_another_unit(cli: Any, deps: Deps, tmp_path: Path) -> None:
    letter = tmp_path / "letter.txt"
    letter.write_text(f"{TEXT}\n第二段。\n", encoding="utf-8")
    status, _, err = cli("enter", "--channel", "mail", "--category", "official-car", "--unit", "other",
                           "--unit-other", "县水务中心", "--place", "来信：3月1日", "--text-file", str(letter))
    assert status == 0, err
    with deps.sessions.begin() as session:
        tip = session.get(Tip, 1)
        assert tip is not None and (tip.channel, tip.unit_key, tip.team_number) == ("mail", "other", 7)
        assert deps.keyring.decrypt(tip.text_enc) == f"{TEXT}\n第二段。"
        assert deps.keyring.decrypt(tip.unit_other_enc or "") == "县水务中心"
        assert [(e.who, e.detail) for e in audit.trail(session, 1)] == [("cli", "cli; channel=mail")]


@pytest.mark.parametrize(("args", "option"), [
    (["--channel", "fax"], "--channel"),
    (["--category", "gambling"], "--category"),
    (["--unit", "moon"], "--unit"),
    (["--unit", "other"], "--unit-other"),
    (["--unit-other", "县水务中心"], "--unit-other"),
    (["--place", "地" * 301], "--place"),
    (["--place", "  "], "--place"),
    (["--text", "太短"], "--text"),
    (["--text", "长" * 3001], "--text"),
    (["--office-member", "555"], "--office-member 555"),
    (["--office-member", "903"], "--office-member 903"),  # a lead, not the office
])
def test_enter_refuses_bad_options_by_name_and_stores_nothing(cli: Any, deps: Deps, args: list[str],
                                                              option: str) -> None:
    with deps.sessions.begin() as session:
        add_lead(session, deps, 1, 903, "Lead Zheng")
    base = {"--channel": "phone", "--category": "absence", "--unit": "dingchang", "--place": "大厅", "--text": TEXT}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [x for k, v in {**base, **given}.items() for x in (k, v)]
    status, out, err = cli("enter", *argv)
    assert status == 2
    assert option in err and "receipt code" not in out
    with deps.sessions.begin() as session:
        assert session.scalar(select(func.count(Tip.id))) == 0


def test_enter_text_file_problems_name_the_file_option(cli: Any, deps: Deps, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("太短", encoding="utf-8")
    common = ["enter", "--channel", "mail", "--category", "absence", "--unit", "dingchang", "--place", "大厅"]
    status, _, err = cli(*common, "--text-file", str(short))
    assert status == 2 and "--text-file: too short" in err
    status, _, err = cli(*common, "--text-file", str(tmp_path / "missing.txt"))
    assert status == 2 and "--text-file: cannot read" in err
    status, _, err = cli(*common, "--text", TEXT, "--text-file", str(short))
    assert status == 2 and "not allowed with argument" in err


# --- audit ---------------------------------------------------------------------------------
def test_audit_prints_the_trail_and_the_public_timeline(cli: Any, deps: Deps, clock: FakeClock) -> None:
    with deps.sessions.begin() as session:
        add_lead(session, deps, 1, 911, "王组长", lang="zh-CN")
    assert cli("enter", "--channel", "phone", "--category", "absence", "--unit", "dingchang", "--place", "大厅",
               "--text", TEXT)[0] == 0
    clock.advance(minutes=25)
    with deps.sessions.begin() as session:
        assert staff.acknowledge(session, deps, 1, 911, clock.now()).status is staff.AckStatus.ACKNOWLEDGED
    clock.advance(minutes=5)
    status, out, err = cli("audit", "1")
    assert status == 0, err
    assert out.splitlines() == [
        ("tip #1  phone  received 2026-03-02 09:30  absence 迟到早退脱岗  unit dingchang 定昌镇  "
         "team 1 第一督查组  state acknowledged"),
        "audit trail (times in Asia/Shanghai):",
        "  2026-03-02 09:30  cli            entered        cli; channel=phone",
        "  2026-03-02 09:55  王组长 (lead)  acknowledged",
        "  2026-03-02 10:00  cli            viewed_audit   cli",
        "public timeline (what the tipster sees):",
        "  2026-03-02 09:30  received",
        "  2026-03-02 09:30  routed  team 1 第一督查组",
        "  2026-03-02 09:55  acknowledged  team 1 第一督查组",
    ]
    with deps.sessions.begin() as session:  # the view itself is on record
        assert session.scalar(select(func.count(AuditEntry.id)).where(AuditEntry.action == "viewed_audit")) == 1


def test_audit_and_export_show_a_tip_whose_receipt_never_arrived(cli: Any, deps: Deps, tmp_path: Path) -> None:
    from bot.services import receipts
    from storage.models import PendingReceipt

    assert cli("enter", "--channel", "mail", "--category", "absence", "--unit", "dingchang", "--place", "大厅",
               "--text", TEXT)[0] == 0
    with deps.sessions.begin() as session:  # a receipt kept for delivery, then given up
        receipts.keep(session, deps, 1, receipts.Receipt(chat_id=1, code="0000", lang="zh-CN", kind="citizen"),
                      deps.clock.now())
    with deps.sessions.begin() as session:
        assert receipts.failed(session, deps, 1, deps.clock.now(), permanent=True, reason="Forbidden")
        assert session.get(PendingReceipt, 1) is None
    status, out, err = cli("audit", "1")
    assert status == 0, err
    assert "receipt code: NOT delivered" in out and "receipt_undelivered Forbidden" in out
    out_file = tmp_path / "cases.csv"
    assert cli("export", "--out", str(out_file))[0] == 0
    rows = list(csv.reader(io.StringIO(out_file.read_bytes().decode("utf-8-sig"))))
    assert rows[1][rows[0].index("receipt_delivered")] == "no"


def test_audit_of_an_unknown_tip_is_an_error(cli: Any, deps: Deps) -> None:
    status, out, err = cli("audit", "42")
    assert (status, out) == (2, "") and "no tip #42" in err
    status, _, err = cli("audit", "forty-two")
    assert status == 2 and "not a tip number" in err
    with deps.sessions.begin() as session:
        assert session.scalar(select(func.count(AuditEntry.id))) == 0


# --- export --------------------------------------------------------------------------------
def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def _tip(deps: Deps, category: str, unit: str, *, channel: str = "telegram", other: str | None = None,
         place: str = "大厅", text: str = TEXT) -> int:
    with deps.sessions.begin() as session:
        return intake.submit(session, deps, NewTip(category, unit, other, place, text, channel=channel),
                             deps.keyring.receipt_hash(new_receipt_code()), deps.clock.now())


def _ack(deps: Deps, tip_id: int, user_id: int) -> None:
    with deps.sessions.begin() as session:
        assert staff.acknowledge(session, deps, tip_id, user_id, deps.clock.now()).status is staff.AckStatus.ACKNOWLEDGED


FORMULA = '=HYPERLINK("http://example.invalid","查看")公款吃喝照片'


@pytest.fixture
def cases(deps: Deps, clock: FakeClock) -> Deps:
    """Five tips over three days (times UTC; the campaign is UTC+8)."""
    with deps.sessions.begin() as session:
        add_lead(session, deps, 1, 921, "王组长", lang="zh-CN")
        add_lead(session, deps, 6, 926, "Lead Six")
    clock.set(at(2, 1, 30))
    _tip(deps, "absence", "dingchang")  # 1
    clock.set(at(2, 1, 40))
    _ack(deps, 1, 921)
    with deps.sessions.begin() as session:
        lead = session.scalar(select(Staff.id).where(Staff.telegram_user_id == 921))
        session.add(Outcome(tip_id=1, outcome="verified", unit_key="dingchang", person_name="张三", person_post="科员",
                            breach_category="absence", recorded_by=lead, recorded_at=at(2, 2, 30)))
    clock.set(at(3, 0, 0))
    _tip(deps, "official-car", "other", channel="phone", other="县水务中心")  # 2
    clock.set(at(3, 15, 50))
    _tip(deps, "efficiency", "land", channel="mail")  # 3
    clock.set(at(3, 16, 10))
    _tip(deps, "public-dining", "guocun", place="@某饭店 中午", text=FORMULA)  # 4
    clock.set(at(3, 20, 0))
    _ack(deps, 3, 926)
    clock.set(at(4, 1, 0))
    _tip(deps, "absence", "xindian")  # 5
    clock.set(at(4, 2, 0))
    return deps


EXPECTED = [
    ["tip", "channel", "received", "category", "category_name", "unit", "unit_name", "team", "team_name", "state",
     "acknowledged_at", "acknowledged_by", "ack_due_at", "ack_met", "outcome", "person", "post", "breach",
     "outcome_recorded_at", "receipt_delivered"],
    ["1", "telegram", "2026-03-02 09:30", "absence", "迟到早退脱岗", "dingchang", "定昌镇", "1", "第一督查组",
     "acknowledged", "2026-03-02 09:40", "王组长", "2026-03-02 13:30", "yes", "verified", "张三", "科员", "absence",
     "2026-03-02 10:30", "yes"],
    ["2", "phone", "2026-03-03 08:00", "official-car", "公车私用", "other", "", "7", "第七督查组", "routed", "", "",
     "2026-03-03 12:00", "no", "", "", "", "", "", "yes"],
    ["3", "mail", "2026-03-03 23:50", "efficiency", "办事效率低、制度不执行", "land", "国土局", "6", "第六督查组",
     "acknowledged", "2026-03-04 04:00", "Lead Six", "2026-03-04 03:50", "no", "", "", "", "", "", "yes"],
    ["4", "telegram", "2026-03-04 00:10", "public-dining", "公款吃喝", "guocun", "郭村镇", "7", "第七督查组", "routed",
     "", "", "2026-03-04 04:10", "no", "", "", "", "", "", "yes"],
    ["5", "telegram", "2026-03-04 09:00", "absence", "迟到早退脱岗", "xindian", "新店镇", "2", "第二督查组", "routed",
     "", "", "2026-03-04 13:00", "pending", "", "", "", "", "", "yes"],
]


def test_export_csv_summary_against_hand_built_cases(cli: Any, cases: Deps, tmp_path: Path) -> None:
    out = tmp_path / "cases.csv"
    status, stdout, err = cli("export", "--out", str(out))
    assert status == 0, err
    raw = out.read_bytes()
    assert raw.startswith(BOM) and not raw.startswith(BOM * 2)
    assert raw[len(BOM):].split(b"\r\n", 1)[0] == ",".join(EXPECTED[0]).encode()
    assert list(csv.reader(io.StringIO(raw.decode("utf-8-sig")))) == EXPECTED
    assert TEXT.encode() not in raw and "大厅".encode() not in raw  # no content without --with-content
    assert out.stat().st_mode & 0o077 == 0  # readable by its owner only
    assert "exported 5 tips (summary fields)" in err and stdout == ""
    assert not list(tmp_path.glob(".cases.csv.*"))  # the temporary file is gone
    with cases.sessions.begin() as session:
        rows = session.execute(select(AuditEntry.tip_id, AuditEntry.action, AuditEntry.detail)
                               .where(AuditEntry.action == "exported")).all()
    assert [tuple(r) for r in rows] == [(None, "exported", "cli: 5 tips, csv, summary fields")]


def test_export_with_content_and_a_period(cli: Any, cases: Deps, tmp_path: Path) -> None:
    out = tmp_path / "march3.csv"
    status, _, err = cli("export", "--out", str(out), "--since", "2026-03-03", "--until", "2026-03-04",
                         "--with-content")
    assert status == 0, err
    table = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8-sig"))))
    assert table[0] == EXPECTED[0] + ["unit_other", "place", "text"]
    assert [row[:20] for row in table[1:]] == EXPECTED[2:]
    assert [row[20:] for row in table[1:]] == [
        ["县水务中心", "大厅", TEXT],
        ["", "大厅", TEXT],
        ["", "'@某饭店 中午", "'" + FORMULA],  # a spreadsheet must not run what a tipster typed
        ["", "大厅", TEXT],
    ]
    status, _, _ = cli("export", "--out", str(out), "--since", "2026-03-03", "--until", "2026-03-03")
    assert status == 0
    assert [r[0] for r in csv.reader(io.StringIO(out.read_bytes().decode("utf-8-sig")))] == ["tip", "2", "3"]
    with cases.sessions.begin() as session:
        per_tip = session.execute(select(AuditEntry.tip_id).where(AuditEntry.detail == "cli, with content")
                                  .order_by(AuditEntry.tip_id)).scalars().all()
        assert per_tip == [2, 3, 4, 5]
        assert [e.action for e in audit.trail(session, 4)] == ["exported"]
        assert [e.action for e in audit.trail(session, 1)] == ["acknowledged"]  # outside the period


def test_export_xlsx_reads_back(cli: Any, cases: Deps, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    out = tmp_path / "cases.xlsx"
    status, _, err = cli("export", "--out", str(out), "--with-content")  # the format follows the name
    assert status == 0, err
    sheet = load_workbook(out).active
    values = [[c.value for c in row] for row in sheet.iter_rows()]
    assert values[0] == EXPECTED[0] + ["unit_other", "place", "text"]
    assert values[1][:10] == [1, "telegram", datetime(2026, 3, 2, 9, 30), "absence", "迟到早退脱岗", "dingchang",
                              "定昌镇", 1, "第一督查组", "acknowledged"]
    assert values[1][10:19] == [datetime(2026, 3, 2, 9, 40), "王组长", datetime(2026, 3, 2, 13, 30), "yes", "verified",
                                "张三", "科员", "absence", datetime(2026, 3, 2, 10, 30)]
    assert values[2][11] is None and values[2][19] == "yes" and values[2][20] == "县水务中心"
    formula = sheet.cell(row=5, column=23)
    assert formula.value == FORMULA and formula.data_type == "s"  # text, not a formula
    assert [row[0] for row in values[1:]] == [1, 2, 3, 4, 5]


def test_export_options_are_checked(cli: Any, cases: Deps, tmp_path: Path) -> None:
    status, _, err = cli("export", "--since", "2026-03-32")
    assert status == 2 and "--since" in err
    status, _, err = cli("export", "--since", "2026-03-04", "--until", "2026-03-03")
    assert status == 2 and "--since 2026-03-04 is after --until 2026-03-03" in err
    status, _, err = cli("export", "--format", "pdf")
    assert status == 2 and "--format" in err
    status, _, err = cli("export", "--out", str(tmp_path / "nowhere" / "x.csv"))
    assert status == 2 and "--out" in err
    with cases.sessions.begin() as session:
        assert session.scalar(select(func.count(AuditEntry.id)).where(AuditEntry.action == "exported")) == 0


def test_export_to_stdout_with_a_progress_bar(cli: Any, cases: Deps) -> None:
    status, out, err = cli("export", "--out", "-", "--progress", "--batch-size", "2")
    assert status == 0
    # redrawn in place (\r), one line break at the end
    assert "\rexporting [" + "#" * 30 + "] 100%  5/5 tips\nexported 5 tips" in err
    assert "\rexporting [" + "#" * 12 + "." * 18 + "]  40%  2/5 tips" in err
    # capsys holds text: the BOM arrives decoded
    assert list(csv.reader(io.StringIO(out.removeprefix("\ufeff")))) == EXPECTED


def test_export_in_batches_writes_the_same_bytes(cases: Deps) -> None:
    seen: dict[int, list[int]] = {}
    written: dict[int, bytes] = {}
    for size in (1, 2, 500):
        calls: list[int] = []
        ids: list[list[int]] = []
        buffer = io.BytesIO()
        with cases.sessions.begin() as session:
            result = export.export(session, cases, buffer, fmt="csv", with_content=True, batch_size=size,
                                   progress=calls.append, on_batch=ids.append)
        assert result.tips == 5 and sum(ids, []) == [1, 2, 3, 4, 5] and [len(b) for b in ids] == calls
        seen[size], written[size] = calls, buffer.getvalue()
    assert seen == {1: [1, 1, 1, 1, 1], 2: [2, 2, 1], 500: [5]}
    assert written[1] == written[2] == written[500]
    assert written[1].count(b"\r\n") == 6


def test_progress_bar_draws_in_place() -> None:
    stream = io.StringIO()
    bar = export.ProgressBar(4, stream, interval=0.0, width=4)
    bar(2)
    bar(2)
    bar.finish()
    assert stream.getvalue() == "\rexporting [##..]  50%  2/4 tips\rexporting [####] 100%  4/4 tips\n"
    quiet = io.StringIO()
    silent = export.ProgressBar(4, quiet, enabled=False)
    silent(4)
    silent.finish()
    assert quiet.getvalue() == ""
