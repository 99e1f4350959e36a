"""The playground in a real browser: headless Chromium (Debian's chromium and
chromium-driver, installed by scripts/test) drives the page as a trainer would.

A citizen reports a tip with a photo, the card appears in team 1's group, the lead
presses Acknowledge and sees the alert, the citizen checks the receipt code; a second
tip is left unacknowledged, the trainer moves the clock past its deadline and the office
sees the escalation; then to the daily summary, and the official sees it with its chart.
Screenshots of each step go to test-artifacts/playground/ (gitignored).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.chart import stacked_bars
from bot.playground.core import CITIZEN_ID, Playground
from tests.conftest import ROOT, example_data

ARTIFACTS = ROOT / "test-artifacts" / "playground"
WAIT = 40.0


def chrome() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert driver_path and browser, "Debian's chromium and chromium-driver are needed: scripts/test installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1900,1000", "--lang=zh-CN", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    # The system chromedriver, never Selenium Manager (no browser downloads reach this machine).
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


class Background:
    """The playground in a thread with its own event loop (the browser's calls block)."""

    def __init__(self, playground: Playground) -> None:
        self.playground = playground
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="playground", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.playground.start()
        except BaseException as exc:  # reported to the test
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.playground.stop()

    def start(self) -> None:
        self.thread.start()
        assert self._started.wait(60), "the playground did not start"
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)


@pytest.fixture
def playground(database_url: str, tmp_path: Path) -> Iterator[Playground]:
    data = example_data()
    data["security"].update(receipt_hash_time_cost=1, receipt_hash_memory_kib=64)
    pg = Playground(data, data_dir=tmp_path / "playground", port=0, language="zh-CN", database_url=database_url)
    running = Background(pg)
    running.start()
    try:
        yield pg
    finally:
        running.stop()
        server = pg.server
        assert not server.calls_for("forwardMessage"), "tipline must never forward a message"
        assert not server.internal_errors, server.internal_errors
        # nothing of the citizen reaches a staff member's chat
        citizen = CITIZEN_ID + 1
        for record in server.sent:
            if int(record["chat_id"]) != citizen:
                shown = json.dumps(record["message"], ensure_ascii=False)
                assert str(citizen) not in shown and "市民" not in shown, shown


class Page:
    def __init__(self, driver: Any, url: str, describe: Any = None) -> None:
        self.describe = describe or (lambda: "")
        self.driver = driver
        self.url = url
        self.step = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        self.step += 1
        self.driver.save_screenshot(str(ARTIFACTS / f"{self.step:02d}-{name}.png"))

    def wait(self, predicate: Any, what: str, timeout: float = WAIT) -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(lambda d: predicate())
        except TimeoutException:
            self.shot("failed")
            raise AssertionError(f"waited {timeout:.0f} s for {what}\n{self.describe()}") from None

    def pane(self, key: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f'section[data-pane="{key}"]')

    def query(self, key: str, script: str) -> Any:
        """Read the chat in one script run (the page redraws a chat's messages as they change)."""
        return self.driver.execute_script(
            f"const pane = document.querySelector('section[data-pane=\"{key}\"]'); " + script)

    def texts(self, key: str) -> list[str]:
        return self.query(key, "return [...pane.querySelectorAll('.msg')].map(m => m.innerText);")

    def images(self, key: str, mine: bool | None = None) -> int:
        """Loaded pictures in the chat's messages (the user's own with mine=True)."""
        sel = ".msg img" if mine is None else (".msg.me img" if mine else ".msg:not(.me) img")
        return self.query(key, f"return [...pane.querySelectorAll('{sel}')].filter(i => i.complete && i.naturalWidth > 0).length;")

    def expect(self, key: str, contains: str, after: int = 0) -> str:
        def found() -> str | None:
            for text in self.texts(key)[after:]:
                if contains in text:
                    return text
            return None

        return self.wait(found, f"{contains!r} in {key}")

    def count(self, key: str) -> int:
        return len(self.texts(key))

    def type(self, key: str, text: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        box = self.pane(key).find_element(By.CSS_SELECTOR, 'input[name="text"]')
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def press(self, key: str, label: str) -> None:
        """Press the latest button in the chat whose label contains `label` (with the keyboard)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        from selenium.common.exceptions import StaleElementReferenceException

        def pressed() -> bool:
            try:
                found = [b for b in self.pane(key).find_elements(By.CSS_SELECTOR, ".kb button") if label in b.text]
                if not found:
                    return False
                self.driver.execute_script("arguments[0].scrollIntoView({block: 'nearest'})", found[-1])
                found[-1].send_keys(Keys.ENTER)  # keyboard-operable: a real <button>
                return True
            except StaleElementReferenceException:  # redrawn under our feet: look again
                return False

        self.wait(pressed, f"a button {label!r} in {key}")

    def attach(self, key: str, path: Path) -> None:
        from selenium.webdriver.common.by import By

        self.pane(key).find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(path))

    def jump(self, how: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, f'button[data-jump="{how}"]').click()


def report(page: Page, photo: Path | None) -> str:
    """A citizen's whole report, through the buttons and the text box."""
    before = page.count("citizen-1")
    page.type("citizen-1", "/start")
    page.expect("citizen-1", "查询码", after=before)
    page.press("citizen-1", "📝")
    page.expect("citizen-1", "第 1 步", after=before)
    page.press("citizen-1", "迟到早退脱岗")
    page.expect("citizen-1", "第 2 步", after=before)
    page.press("citizen-1", "定昌镇")
    page.expect("citizen-1", "第 3 步", after=before)
    page.type("citizen-1", "11月20日上午9点，镇政府便民服务大厅")
    page.expect("citizen-1", "第 4 步", after=before)
    page.type("citizen-1", "窗口工作人员九点半还没有到岗，群众排队等了很久。")
    page.expect("citizen-1", "第 5 步", after=before)
    if photo is not None:
        mark = page.count("citizen-1")
        mine = page.images("citizen-1", mine=True)
        page.attach("citizen-1", photo)
        page.wait(lambda: page.images("citizen-1", mine=True) > mine, "the photo in the citizen's chat")
        page.expect("citizen-1", "已收到 1 个证据", after=mark)
        page.shot("citizen-photo")
        page.press("citizen-1", "完成")
    else:
        page.press("citizen-1", "跳过")
    page.wait(lambda: any("核对" in t for t in page.texts("citizen-1")[before:]), "the review")
    page.press("citizen-1", "提交")
    receipt = page.expect("citizen-1", "您的查询码", after=before)
    found = re.search(r"\d{4} \d{4} \d{4} \d{4}", receipt)
    assert found, receipt
    return found.group(0)


def test_a_tip_through_acknowledgement_escalation_and_summary_in_the_browser(
        playground: Playground, tmp_path: Path) -> None:
    photo = tmp_path / "evidence.png"
    photo.write_bytes(stacked_bars("EVIDENCE", ["1", "2", "3"], [[1, 2, 3], [3, 2, 1]], width=320, height=200))
    driver = chrome()
    try:
        page = Page(driver, playground.url, lambda: playground.server.describe(last=8))
        driver.get(playground.url)
        # every page says it is not connected to Telegram
        assert "未连接 Telegram" in driver.find_element("id", "banner").text
        # the staff joined through invite codes and /join, shown in their chats
        page.expect("lead-1", "/join")
        page.expect("lead-1", "组长")
        page.expect("group-1", "绑定")
        page.expect("office", "问责办")
        page.expect("official", "领导干部")
        page.shot("staff-joined")

        code = report(page, photo)
        page.shot("citizen-receipt")

        card = page.expect("group-1", "签收")
        assert "市民" not in card and "7000001" not in card  # nothing of the tipster on the card
        page.wait(lambda: page.images("group-1") >= 1, "the evidence photo in the group")
        page.shot("group-card")
        page.press("group-1", "签收")
        alert = page.wait(lambda: page.pane("group-1").find_elements("css selector", '[role="alertdialog"]'),
                          "the Acknowledge alert")
        assert "已签收" in alert[-1].text
        page.shot("lead-acknowledged")
        alert[-1].find_element("css selector", "button").click()

        mark = page.count("citizen-1")
        page.type("citizen-1", code)
        page.expect("citizen-1", "督查组已签收", after=mark)
        page.shot("citizen-timeline")

        # a second tip nobody acknowledges; the trainer moves the clock past its deadline
        report(page, None)
        escalations = sum("督办" in t for t in page.texts("office"))
        page.jump("4h")
        page.wait(lambda: sum("督办" in t for t in page.texts("office")) > escalations, "the escalation")
        page.expect("office", "未在")
        page.shot("office-escalation")

        charts = page.images("official")
        page.jump("summary")
        page.wait(lambda: page.images("official") > charts, "the summary's chart")
        page.expect("official", "汇总")
        assert "18:0" in driver.find_element("id", "clock-now").text
        page.shot("official-summary")
    finally:
        driver.quit()
