"""The Swagger UI of a running sensor, driven in headless Chromium as a user would:
authorize with an API token in the Authorize dialog, then try out ``GET /status``.

A screenshot of the page with the 200 response is kept as a test artifact in
``$GR_SCOS_TEST_ARTIFACTS`` (default ``build/test-artifacts/``); a failing step
leaves a screenshot there too, and its message carries the browser console.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from grscos.storage.health import SCHEDULER_STATES

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait
except ImportError as error:
    # Reported by chromium(): a missing browser stack must fail the tests, not skip them.
    SELENIUM_IMPORT_ERROR: ImportError | None = error
else:
    SELENIUM_IMPORT_ERROR = None

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Generous: a loaded 2-CPU CI machine runs the sensor's workers and Chromium at once.
WAIT_SECONDS = 30
PAGE_LOAD_SECONDS = 60
WINDOW_SIZE = "1366,1024"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The sensor fixture runs with the default SCOS_AUTH=token, and webapi/app.py names
# the security scheme after it: an apiKey sent verbatim as the Authorization header,
# so the value typed in the dialog carries the "Token " prefix itself.
SECURITY_SCHEME = "token"
STATUS_TAG = '.opblock-tag[data-tag="status"]'
# Found by what the user sees (method and path), not by the generated operation id.
STATUS_OPERATION = '.opblock.opblock-get:has(.opblock-summary-path[data-path="/status"])'
LIVE_RESPONSE = f"{STATUS_OPERATION} .live-responses-table .response"
AUTHORIZE_BUTTON = ".scheme-container .btn.authorize"
DIALOG = ".modal-ux"
SCHEME_FORM = (
    f"//div[contains(@class, 'modal-ux')]//div[contains(@class, 'auth-container')]"
    f"[.//h4/code[normalize-space() = '{SECURITY_SCHEME}']]"
)


def artifacts_dir() -> Path:
    directory = Path(os.environ.get("GR_SCOS_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def missing_prerequisites() -> list[str]:
    missing = []
    if SELENIUM_IMPORT_ERROR is not None:
        missing.append(f"the Python package selenium ({SELENIUM_IMPORT_ERROR})")
    for program, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(program, os.X_OK):
            missing.append(f"{program} (Debian package {package})")
    return missing


@contextlib.contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """Headless Chromium through Debian's chromedriver, quit whatever the test does.

    A context manager in the test rather than a fixture, so that a missing browser
    stack is reported as the test failing, not as an error setting it up."""
    missing = missing_prerequisites()
    if missing:
        pytest.fail(
            f"the Swagger UI browser test needs {', '.join(missing)}; "
            "`make test` installs them (deploy/bootstrap.sh)",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",  # a container's /dev/shm can be too small for it
        f"--window-size={WINDOW_SIZE}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path keeps Selenium Manager from trying to download one.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(PAGE_LOAD_SECONDS)
        yield driver
    finally:
        driver.quit()


def console_log(driver: webdriver.Chrome) -> list[dict]:
    """The browser console entries since the last call (reading them clears them)."""
    return driver.get_log("browser")


def format_console(entries: list[dict]) -> str:
    return (
        "\n".join(f"  {e['level']} {e['source']}: {e['message']}" for e in entries) or "  (empty)"
    )


def describe(error: Exception) -> str:
    # str() of a WebDriverException appends chromedriver's native stack, without symbols.
    text = error.msg if isinstance(error, WebDriverException) else str(error)
    return text if isinstance(error, AssertionError) else f"{type(error).__name__}: {text}"


@contextlib.contextmanager
def diagnosed(driver: webdriver.Chrome, test_name: str) -> Iterator[None]:
    """Turn a failed step into an AssertionError with a screenshot of the page and the
    browser console, since a headless browser leaves nothing else to look at."""
    try:
        yield
    except Exception as error:  # whichever step failed, its page is the evidence
        path = artifacts_dir() / f"swagger-ui-failure-{test_name}.png"
        # The browser itself may be what failed: the original error matters more.
        try:
            screenshot = str(path) if driver.save_screenshot(str(path)) else "not written"
            page, console = driver.current_url, format_console(console_log(driver))
        except WebDriverException as unreachable:
            screenshot = page = console = f"unavailable ({unreachable.msg})"
        raise AssertionError(
            f"{describe(error)}\n"
            f"page: {page}\nscreenshot: {screenshot}\nbrowser console:\n{console}"
        ) from error


def wait(driver: webdriver.Chrome, condition, message: str):
    return WebDriverWait(driver, WAIT_SECONDS).until(
        condition, f"{message} within {WAIT_SECONDS} s"
    )


def click(driver: webdriver.Chrome, locator: tuple[str, str], what: str) -> None:
    wait(driver, expected_conditions.element_to_be_clickable(locator), f"{what} clickable").click()


def open_docs(driver: webdriver.Chrome, api_url: str) -> None:
    """Load /docs and wait until Swagger UI has fetched swagger.json and rendered it."""
    driver.get(f"{api_url}/docs")
    wait(
        driver,
        expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, STATUS_TAG)),
        "the status tag of the rendered API",
    )


def authorize(driver: webdriver.Chrome, value: str) -> None:
    """Enter ``value`` for the API's security scheme in the Authorize dialog."""
    click(driver, (By.CSS_SELECTOR, AUTHORIZE_BUTTON), "the Authorize button")
    field = wait(
        driver,
        expected_conditions.visibility_of_element_located((By.XPATH, f"{SCHEME_FORM}//input")),
        f"the value field of the {SECURITY_SCHEME!r} scheme in the Authorize dialog",
    )
    field.send_keys(value)
    click(
        driver,
        (By.XPATH, f"{SCHEME_FORM}//button[@type = 'submit' and normalize-space() = 'Authorize']"),
        "the dialog's Authorize button",
    )
    # The dialog swaps Authorize for Logout once it holds the credentials.
    wait(
        driver,
        expected_conditions.visibility_of_element_located(
            (By.XPATH, f"{SCHEME_FORM}//button[normalize-space() = 'Logout']")
        ),
        "the dialog to show the scheme as authorized",
    )
    click(driver, (By.CSS_SELECTOR, f"{DIALOG} .btn-done"), "the dialog's Close button")
    wait(
        driver,
        expected_conditions.invisibility_of_element_located((By.CSS_SELECTOR, DIALOG)),
        "the Authorize dialog to close",
    )
    wait(
        driver,
        expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, f"{AUTHORIZE_BUTTON}.locked")
        ),
        "the Authorize button to show a closed lock",
    )


def try_out_get_status(driver: webdriver.Chrome) -> tuple[str, dict]:
    """Expand GET /status, try it out, execute; the displayed code and response body."""
    click(driver, (By.CSS_SELECTOR, STATUS_TAG), "the status tag")
    click(driver, (By.CSS_SELECTOR, f"{STATUS_OPERATION} .opblock-summary"), "GET /status")
    click(driver, (By.CSS_SELECTOR, f"{STATUS_OPERATION} .try-out__btn"), "Try it out")
    click(driver, (By.CSS_SELECTOR, f"{STATUS_OPERATION} .btn.execute"), "Execute")
    # The live response row only appears once the request has completed.
    row = wait(
        driver,
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, LIVE_RESPONSE)),
        "the server response of GET /status",
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
    code = row.find_element(By.CSS_SELECTOR, ".response-col_status").text.strip()
    # textContent, not .text: the body's <pre> scrolls and .text is only what is in view.
    body = row.find_element(By.CSS_SELECTOR, ".response-col_description .highlight-code pre")
    return code, json.loads(body.get_attribute("textContent"))


def test_status_in_swagger_ui_after_authorizing(sensor, request):
    with chromium() as browser, diagnosed(browser, request.node.name):
        open_docs(browser, sensor.url)
        authorize(browser, f"Token {sensor.token}")
        code, body = try_out_get_status(browser)

        assert code == "200", f"Swagger UI shows {code}: {body}"
        assert body.get("scheduler") in SCHEDULER_STATES, body
        screenshot = artifacts_dir() / "swagger-ui-status-200.png"
        assert browser.save_screenshot(str(screenshot)), f"could not write {screenshot}"
        assert screenshot.is_file() and screenshot.stat().st_size > 0, screenshot
        assert screenshot.read_bytes().startswith(PNG_SIGNATURE), screenshot
        # Swagger UI's scripts, styles and swagger.json all loaded, and nothing threw.
        errors = [e for e in console_log(browser) if e["level"] == "SEVERE"]
        assert not errors, f"browser console errors:\n{format_console(errors)}"


def test_status_in_swagger_ui_without_authorizing_is_401(sensor, request):
    """The same steps without the dialog are refused: the token of the other test
    really went through the UI."""
    with chromium() as browser, diagnosed(browser, request.node.name):
        open_docs(browser, sensor.url)
        assert browser.find_elements(By.CSS_SELECTOR, f"{AUTHORIZE_BUTTON}.unlocked"), (
            "the Authorize button should show an open lock on a fresh page"
        )
        code, body = try_out_get_status(browser)

        assert code == "401", f"Swagger UI shows {code}: {body}"
        assert body.get("message") == "authentication required", body
