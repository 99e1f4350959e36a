"""The playground shows a message's text with its entities as HTML, escaped, and its
buttons, media and flags as the bot sent them."""

from bot.playground.render import entities_html, message_view


def test_entities_become_nested_tags_at_utf16_offsets() -> None:
    text = "😀 bold <x> & link"
    entities = [{"type": "bold", "offset": 3, "length": 4},
                {"type": "text_link", "offset": 14, "length": 4, "url": "https://example.org/?a=1&b=2"},
                {"type": "italic", "offset": 3, "length": 8}]
    html = entities_html(text, entities)
    assert html == ('😀 <i><b>bold</b> &lt;x&gt;</i> &amp; '
                    '<a href="https://example.org/?a=1&amp;b=2" rel="noopener noreferrer" target="_blank">link</a>')


def test_unsafe_links_are_not_links() -> None:
    html = entities_html("click", [{"type": "text_link", "offset": 0, "length": 5, "url": "javascript:alert(1)"}])
    assert "href" not in html and html == "<span>click</span>"


def test_message_view() -> None:
    msg = {"message_id": 7, "from": {"id": 1, "first_name": "bot"}, "chat": {"id": 5}, "date": 0,
           "photo": [{"file_id": "small"}, {"file_id": "big"}], "caption": "<b>", "has_protected_content": True,
           "edit_date": 1, "reply_markup": {"inline_keyboard": [[{"text": "OK", "callback_data": "ok:1"}]]}}
    view = message_view(msg, bot_id=1)
    assert view["from_bot"] and view["protected"] and view["edited"]
    assert view["photo"] == "big" and view["html"] == "&lt;b&gt;"
    assert view["buttons"] == [[{"text": "OK", "data": "ok:1", "url": None}]]
