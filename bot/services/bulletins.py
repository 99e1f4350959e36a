"""Bulletins (通报 第N期): compiled from verified breaches, approved by the office, published.

- `compile_draft` takes the verified breaches (`in_bulletin`, no `bulletin_id`) not yet in
  the open draft. With none open it makes draft N = next gapless number; with one open
  (a draft or a held one) the new cases join it, so numbers are published in order.
- `publish` (the office's button, or at once with `officials.bulletin_auto_publish`)
  marks the cases (`breaches.bulletin_id`), archives the bulletin and queues it, text and
  HTML document, `protect_content`, to every bulletin subscriber.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import Integer, String, any_, bindparam, cast, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from bot.deps import Deps
from bot.domain.bulletins import BulletinCase, next_bulletin_number, select_cases
from bot.domain.ladder import Ladder
from bot.services import broadcast, outbox
from bot.services.office import office_targets
from bot.services.officials import recipients
from bot.services.outbox import Button
from bot.splitting import split_html
from storage.db import is_postgres
from storage.models import Breach, OutboxMessage, RequiredAction
from storage.models_officials import Blob, Broadcast, Bulletin

OPEN = ("draft", "held")


class CaseLine(NamedTuple):  # a tuple: ten thousand made per bulletin, cheaply
    breach_id: int
    unit_key: str
    person_name: str
    person_post: str
    category: str
    breach_number: int
    penalties: tuple[str, ...]
    occurred_on: str


def _among(session: Session, column: Any, ids: list[int]) -> Any:
    """column IN ids, the ids as one parameter: an IN list of ten thousand parameters
    costs more to build, send and plan than the rows cost to read."""
    if is_postgres(session):
        # as the array's text, made by str.join: the driver checks and quotes a list's
        # items one by one in Python (25 ms for ten thousand ids, per statement)
        listed = "{" + ",".join(str(int(i)) for i in ids) + "}"
        return column == any_(cast(bindparam("ids", listed, type_=String), ARRAY(Integer)))
    listed = func.json_each(bindparam("ids", json.dumps(ids))).table_valued("value")  # SQLite's JSON1
    return column.in_(select(listed.c.value))


def ids_of(b: Bulletin) -> list[int]:
    return [int(i) for i in json.loads(b.breach_ids)]


def open_draft(session: Session) -> Bulletin | None:
    return session.scalar(select(Bulletin).where(Bulletin.status.in_(OPEN)).order_by(Bulletin.number))


def compile_draft(session: Session, deps: Deps, now: datetime, period: str) -> tuple[str, Bulletin | None]:
    """("new" | "updated" | "empty", the open draft)."""
    draft = open_draft(session)
    taken = set(ids_of(draft)) if draft else set()
    breaches = session.scalars(
        select(Breach).where(Breach.in_bulletin.is_(True), Breach.bulletin_id.is_(None), Breach.created_at <= now)
    ).all()
    cases = select_cases(
        [BulletinCase(b.id, b.unit_key, b.person_name, b.person_post, b.category, (), b.created_at) for b in breaches],
        taken, now,
    )
    if not cases:
        return "empty", draft
    if draft is not None:
        draft.breach_ids = json.dumps(ids_of(draft) + [c.case_id for c in cases])
        draft.period = period
        draft.issued_on = _local_date(deps, now)
        return "updated", draft
    numbers = session.scalars(select(Bulletin.number)).all()
    b = Bulletin(number=next_bulletin_number(numbers), status="draft", period=period,
                 breach_ids=json.dumps([c.case_id for c in cases]), created_at=now, issued_on=_local_date(deps, now))
    session.add(b)
    session.flush()
    return "new", b


def _local_date(deps: Deps, now: datetime) -> str:
    return now.astimezone(deps.config.campaign.tz).date().isoformat()


def case_lines(session: Session, deps: Deps, b: Bulletin) -> list[CaseLine]:
    ids = ids_of(b)
    if not ids:
        return []
    # Columns through Core, not ORM objects, the ids as one parameter (_among), the rows
    # fetched at once and unpacked as tuples: ten thousand cases are read per bulletin.
    conn = session.connection()
    cols = (Breach.id, Breach.unit_key, Breach.person_name, Breach.person_post, Breach.category,
            Breach.breach_number, Breach.occurred_on, Breach.referral, Breach.leader_accountable)
    breaches = {r[0]: r for r in conn.execute(select(*cols).where(_among(session, Breach.id, ids))).all()}
    kinds: dict[int, list[str]] = {}
    for breach_id, kind in conn.execute(
        select(RequiredAction.breach_id, RequiredAction.kind).where(_among(session, RequiredAction.breach_id, ids))
        .order_by(RequiredAction.id)
    ).all():
        found = kinds.get(breach_id)
        if found is None:
            kinds[breach_id] = [kind]
        else:
            found.append(kind)
    ladder = Ladder.from_config([r.model_dump() for r in deps.config.ladder.rungs])
    lines = []
    for i in ids:
        x = breaches.get(i)
        if x is None:
            continue
        breach_id, unit_key, name, post, category, number, occurred_on, referral, leader = x
        penalties = kinds.get(i) or list(_ladder_keys(ladder, number))
        if referral and "discipline_referral" not in penalties:
            penalties.append("discipline_referral")
        if leader and "leader_accountability" not in penalties:
            penalties.append("leader_accountability")
        lines.append(CaseLine(breach_id, unit_key, name, post, category, number, tuple(penalties),
                              occurred_on.isoformat()))
    return lines


_LADDER_KEY = {"refer_to_discipline": "discipline_referral", "hold_leader_accountable": "leader_accountability"}


def _ladder_keys(ladder: Ladder, breach_number: int) -> tuple[str, ...]:
    keys = ladder.penalty_for(max(0, breach_number - 1)).summary_keys()
    return tuple(_LADDER_KEY.get(k, k) for k in keys)


def note_of(deps: Deps, b: Bulletin) -> str | None:
    """The office's note on the bulletin (stored encrypted)."""
    return deps.keyring.decrypt_opt(b.note_enc)


def render_message(deps: Deps, lang: str, b: Bulletin, lines: list[CaseLine], *, draft: bool) -> str:
    # The cases through bulletin_case.html's macro, rendered once and filled per case (a
    # Jinja call per case was most of the job with ten thousand cases); names and penalty
    # lists are the same few dozen values, made once each.
    texts = deps.texts
    units: dict[str, str] = {}
    categories: dict[str, str] = {}
    penalties: dict[tuple[str, ...], str] = {}
    listed = texts.macro(lang, "bulletin_case", "penalties")
    rows = []
    for i, c in enumerate(lines, 1):
        unit = units.get(c.unit_key)
        if unit is None:
            unit = units[c.unit_key] = texts.unit_name(c.unit_key, lang)
        category = categories.get(c.category)
        if category is None:
            category = categories[c.category] = texts.category_name(c.category, lang)
        kinds = penalties.get(c.penalties)
        if kinds is None:
            kinds = penalties[c.penalties] = listed(list(c.penalties))
        rows.append((i, unit, c.person_name, c.person_post, category, c.occurred_on, c.breach_number, kinds))
    cases = texts.render_each(lang, "bulletin_case", "case", rows)
    return texts.render(lang, "bulletin", b=b, note=note_of(deps, b), cases=cases, draft=draft)


def render_document(deps: Deps, lang: str, b: Bulletin, lines: list[CaseLine]) -> bytes:
    return deps.texts.render(lang, "bulletin_document", b=b, note=note_of(deps, b), cases=lines).encode("utf-8")


def draft_buttons(deps: Deps, lang: str, b: Bulletin) -> list[list[Button]]:
    sign = deps.keyring.sign
    return [[Button(deps.texts.button(lang, "bulletin_publish"), sign(f"bl:pub:{b.id}")),
             Button(deps.texts.button(lang, "bulletin_note"), sign(f"bl:note:{b.id}")),
             Button(deps.texts.button(lang, "bulletin_hold"), sign(f"bl:hold:{b.id}"))]]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Ten thousand cases are some 100k short-lived tuples, lists and rows, none in a
    cycle; the cyclic collector, run every 700 allocations, went over the whole heap
    several times meanwhile: 40-60% of reading the cases. It runs again after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def send_draft(session: Session, deps: Deps, now: datetime, b: Bulletin) -> int:
    """The draft, with Publish / Edit note / Hold, to the office. Returns the rows queued."""
    with _collector_paused():
        return _send_draft(session, deps, now, b)


def _send_draft(session: Session, deps: Deps, now: datetime, b: Bulletin) -> int:
    lines = case_lines(session, deps, b)
    revision = hashlib.sha256(f"{b.breach_ids}|{note_of(deps, b)}|{b.status}".encode()).hexdigest()[:12]
    # Rendered and split once per language, not once per office member, and queued in one
    # statement: with thousands of cases waiting, rendering, splitting and a round trip per
    # row were nearly all of the job's time.
    # The same payload objects go to every member, so the outbox encrypts each part once
    # and sends it to the database once.
    rendered: dict[str, list[dict[str, Any]]] = {}
    rows: list[outbox.Row] = []
    for target in office_targets(session, deps):
        payloads = rendered.get(target.lang)
        if payloads is None:
            parts = split_html(render_message(deps, target.lang, b, lines, draft=True))
            buttons = outbox.keyboard_payload(draft_buttons(deps, target.lang, b))
            payloads = rendered[target.lang] = [{"text": part, "buttons": buttons if i == len(parts) - 1 else None}
                                                for i, part in enumerate(parts)]
        rows += [outbox.Row(f"draft:{b.id}:{revision}:{target.chat_id}:{i}", target.chat_id, "send_message", payload)
                 for i, payload in enumerate(payloads)]
    keys = [r.dedupe_key for r in rows]
    queued = set()  # the same revision sent before: not again
    for start in range(0, len(keys), 1000):
        queued |= set(session.scalars(select(OutboxMessage.dedupe_key)
                                      .where(OutboxMessage.dedupe_key.in_(keys[start:start + 1000]))))
    outbox.enqueue_many(session, deps.keyring, now, [r for r in rows if r.dedupe_key not in queued],
                        purpose="bulletin_draft")
    return len(rows)


class Decision(StrEnum):
    DONE = "done"
    ALREADY = "already"  # published before
    NOT_FOUND = "not_found"


def publish(session: Session, deps: Deps, now: datetime, bulletin_id: int, staff_id: int | None
            ) -> tuple[Decision, Bulletin | None, Broadcast | None]:
    b = session.get(Bulletin, bulletin_id, with_for_update=True)
    if b is None:
        return Decision.NOT_FOUND, None, None
    if b.status == "published":
        return Decision.ALREADY, b, None
    b.status, b.published_at, b.published_by = "published", now, staff_id
    ids = ids_of(b)
    session.execute(update(Breach).where(Breach.id.in_(ids), Breach.bulletin_id.is_(None)).values(bulletin_id=b.id)
                    .execution_options(synchronize_session=False))
    session.flush()
    return Decision.DONE, b, push(session, deps, now, b)


def push(session: Session, deps: Deps, now: datetime, b: Bulletin) -> Broadcast | None:
    with _collector_paused():
        return _push(session, deps, now, b)


def _push(session: Session, deps: Deps, now: datetime, b: Bulletin) -> Broadcast | None:
    lines = case_lines(session, deps, b)
    who = recipients(session, "bulletins")
    parts_for: dict[str, list[broadcast.Part]] = {}
    for lang in sorted({r.lang for r in who} | {deps.config.campaign.default_language}):
        blob = document_blob(session, deps, now, b, lang, lines)
        parts: list[broadcast.Part] = [
            ("send_message", {"text": t, "protect": True})
            for t in split_html(render_message(deps, lang, b, lines, draft=False))
        ]
        parts.append(("send_document", {"blob_id": blob, "protect": True,
                                        "caption": deps.texts.msg(lang, "bulletin_document_caption", number=b.number)}))
        parts_for[lang] = parts
    return broadcast.send(session, deps, now, kind="bulletin", ref=str(b.number), recipients=who, parts_for=parts_for)


def document_blob(session: Session, deps: Deps, now: datetime, b: Bulletin, lang: str, lines: list[CaseLine]) -> int:
    """The archived document of a published bulletin (made once per language)."""
    name = document_name(b, lang)
    found = session.scalar(select(Blob.id).where(Blob.filename == name).order_by(Blob.id).limit(1))
    if found is not None:
        return int(found)
    return broadcast.store_blob(session, now, name, render_document(deps, lang, b, lines))


def document_name(b: Bulletin, lang: str) -> str:
    return f"bulletin-{b.number:03d}-{lang}.html"


def hold(session: Session, bulletin_id: int) -> tuple[Decision, Bulletin | None]:
    b = session.get(Bulletin, bulletin_id, with_for_update=True)
    if b is None:
        return Decision.NOT_FOUND, None
    if b.status == "published":
        return Decision.ALREADY, b
    b.status = "held"
    return Decision.DONE, b


def set_note(session: Session, deps: Deps, bulletin_id: int, note: str) -> tuple[Decision, Bulletin | None]:
    b = session.get(Bulletin, bulletin_id, with_for_update=True)
    if b is None:
        return Decision.NOT_FOUND, None
    if b.status == "published":
        return Decision.ALREADY, b
    b.note_enc = deps.keyring.encrypt_opt(note.strip() or None)
    b.status = "draft"
    return Decision.DONE, b


def published(session: Session, limit: int = 20) -> list[Bulletin]:
    return list(session.scalars(
        select(Bulletin).where(Bulletin.status == "published").order_by(Bulletin.number.desc()).limit(limit)))


def open_for(session: Session, deps: Deps, now: datetime, bulletin_id: int, chat_id: int, lang: str) -> bool:
    """Send one published bulletin to one official again (/bulletins), protected."""
    b = session.get(Bulletin, bulletin_id)
    if b is None or b.status != "published":
        return False
    lines = case_lines(session, deps, b)
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S%f")
    for i, part in enumerate(split_html(render_message(deps, lang, b, lines, draft=False))):
        outbox.enqueue(session, deps.keyring, now, dedupe_key=f"reopen:{b.id}:{chat_id}:{stamp}:{i}", chat_id=chat_id,
                       method="send_message", payload={"text": part, "protect": True}, purpose="bulletin_copy")
    blob = document_blob(session, deps, now, b, lang, lines)
    outbox.enqueue(session, deps.keyring, now, dedupe_key=f"reopen:{b.id}:{chat_id}:{stamp}:doc", chat_id=chat_id,
                   method="send_document", purpose="bulletin_copy",
                   payload={"blob_id": blob, "protect": True,
                            "caption": deps.texts.msg(lang, "bulletin_document_caption", number=b.number)})
    return True
