"""The web app in a real headless browser (Debian's chromium and chromedriver, via selenium).

Set ``NIMARE_MNM_SCREENSHOT=path.png`` to keep the screenshot of the results page (the README's
picture is made this way). In CI (``CI=true``) a missing browser fails instead of skipping.
"""

import os
import shutil

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

from conftest import DATA_DIR  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from nimare_mnm.web import create_app, running  # noqa: E402
from nimare_mnm.web.service import MNMService  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
N_STUDIES = 8


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1700"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def app_url(pretrained_decoder):
    corpus = info = None
    if DATA_DIR is not None:
        from nimare_mnm.datasets import load_neuroquery
        from nimare_mnm.web.service import neurosynth_metadata, study_table

        corpus = load_neuroquery(DATA_DIR, annotations=False, download=False)
        info = study_table(corpus, neurosynth_metadata(DATA_DIR))
    service = MNMService(pretrained_decoder, corpus=corpus, study_info=info, n_studies=N_STUDIES)
    with running(create_app(service)) as url:
        yield url


def _severe_console_messages(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_query_upload_and_screenshot_in_a_real_browser(browser, app_url, tmp_path):
    wait = WebDriverWait(browser, 45)
    browser.get(app_url)
    box = browser.find_element(By.ID, "q")
    box.send_keys("working memory")
    browser.find_element(By.CSS_SELECTOR, "form.search button").click()

    # The level tables, then nilearn's viewer drawn inside its frame.
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#levels table.level")))
    assert "q=working+memory" in browser.current_url  # the URL is the permalink
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#levels caption")]
    assert captions == ["Yeo-7", "Yeo-17", "Subcortical"]
    yeo7 = browser.find_elements(By.CSS_SELECTOR, 'table[data-level="yeo7"] tbody tr')
    assert len(yeo7) == 7
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.ID, "viewer")))
    wait.until(ec.presence_of_element_located((By.TAG_NAME, "canvas")))
    browser.switch_to.default_content()
    wait.until(
        lambda d: d.execute_script(
            "const g = document.getElementById('glass'); return g.complete && g.naturalWidth > 0"
        )
    )
    if DATA_DIR is not None:
        rows = browser.find_elements(By.CSS_SELECTOR, "#studies tr.study")
        assert len(rows) == N_STUDIES
        link = rows[0].find_element(By.TAG_NAME, "a").get_attribute("href")
        assert link.startswith("https://pubmed.ncbi.nlm.nih.gov/")
        assert rows[0].find_elements(By.TAG_NAME, "td")[2].text  # a title
    shot = tmp_path / "query.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("NIMARE_MNM_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["NIMARE_MNM_SCREENSHOT"])

    # Switching to a level's map reloads the viewer with that map.
    browser.find_element(By.LINK_TEXT, "Yeo-17").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "nav.maps a.current")))
    assert browser.find_element(By.CSS_SELECTOR, "nav.maps a.current").text == "Yeo-17"
    assert "map=z_level-yeo17" in browser.find_element(By.ID, "viewer").get_attribute("src")

    # A file that is not a NIfTI map: a message on the page, not a crash.
    bad = tmp_path / "notes.nii.gz"
    bad.write_text("these are my notes, not a brain map")
    browser.get(app_url + "decode")
    browser.find_element(By.ID, "map").send_keys(str(bad))
    browser.find_element(By.ID, "upload").click()
    error = wait.until(ec.visibility_of_element_located((By.ID, "error")))
    assert "notes.nii.gz is not a NIfTI image" in error.text
    browser.save_screenshot(str(tmp_path / "bad_upload.png"))

    # nilearn's sample map decodes into a term table.
    browser.find_element(By.ID, "sample").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#terms tbody tr")))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#terms tbody tr")) == 30

    # Nothing failed to load (a CDN asset or a blocked script would be logged here); the
    # bad upload's 400 is the one expected error.
    severe = [m for m in _severe_console_messages(browser) if "400 (Bad Request)" not in m]
    assert severe == []
