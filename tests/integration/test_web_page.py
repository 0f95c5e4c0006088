"""The web page in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`, which
`make test` installs) driven by Selenium against a live uvicorn server on loopback. It checks what
a person sees: the user's history by category, recommendations per category with "because you
liked ..." lines, similar items after a click, and an item added through the form.

`CROSSREC_SCREENSHOT=path.png` saves what the browser shows (benchmarks/results/serving_page.png
was made so)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pytest
import torch

from crossrec.serving.api import create_app
from crossrec.serving.config import ServeConfig
from crossrec.serving.service import Service
from crossrec.serving.store import SQLiteStore

pytestmark = pytest.mark.browser

KEY = "page-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_bundle, text_flagship, tmp_path_factory):
    import uvicorn

    torch.set_num_threads(1)
    store = SQLiteStore(tmp_path_factory.mktemp("page") / "store.sqlite")
    app = create_app(lambda: Service(text_flagship, tiny_bundle, store=store), ServeConfig(), api_key=KEY)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", tiny_bundle
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (`make test` installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
    ):
        opts.add_argument(arg)
    b = webdriver.Chrome(service=DriverService(executable_path=driver), options=opts)
    yield b
    b.quit()


def wait_for(fn, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            value = fn()
            if value:
                return value
        except Exception:  # the page is still rendering
            pass
        time.sleep(0.1)
    raise AssertionError("the page did not show it in time")


def test_a_person_sees_history_recommendations_explanations_and_similar_items(server, browser):
    from selenium.webdriver.common.by import By

    url, bundle = server
    user = str(bundle.raw_user_ids()[0])
    browser.get(f"{url}/?user={user}")
    recs = wait_for(
        lambda: (
            browser.find_elements(By.CSS_SELECTOR, "#recs .category ol li")
            if len(browser.find_elements(By.CSS_SELECTOR, "#recs .category ol")) == len(bundle.categories)
            else None
        )
    )
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#recs h3")]
    assert headings == bundle.categories
    assert len(recs) == 5 * len(bundle.categories)
    because = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#recs .because")]
    assert because and all(t.startswith("because you liked ") for t in because)
    history = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#history h3")]
    assert history and all(any(h.startswith(c) for c in bundle.categories) for h in history)
    first = browser.find_element(By.CSS_SELECTOR, "#recs .item")
    first.click()
    similar = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#similar li .item"))
    assert len(similar) == 5 and first.text in browser.find_element(By.ID, "similar-title").text
    if os.environ.get("CROSSREC_SCREENSHOT"):
        browser.save_screenshot(os.environ["CROSSREC_SCREENSHOT"])


def test_an_item_added_through_the_form_is_live(server, browser):
    from selenium.webdriver.common.by import By

    url, bundle = server
    browser.get(url)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#new-category option"))
    browser.find_element(By.ID, "new-item").send_keys("page-new-item")
    browser.find_element(By.ID, "new-title").send_keys("Cast iron skillet")
    browser.find_element(By.ID, "api-key").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "#add button").click()
    assert "X-API-Key" in wait_for(lambda: browser.find_element(By.ID, "add-status").text)
    key = browser.find_element(By.ID, "api-key")
    key.clear()
    key.send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#add button").click()
    assert wait_for(lambda: browser.find_element(By.ID, "add-status").text == "added page-new-item")
