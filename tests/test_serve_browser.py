"""`costplan serve`'s page driven in Debian's headless Chromium through Selenium and the system chromedriver.

The server runs as `python -m costplan serve` on a free port of 127.0.0.1. The page keeps every number's
raw value in ``data-value`` (and the charts' in ``data-bytes``, ``data-hours``, ``data-usd``), so the tests
compare what the page shows with what the API answers for the same settings. These tests need
``chromium`` and ``chromium-driver`` (apt); they skip without them, except under CI, where .ci/run installs
them and a missing browser is a failure.
"""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
GIB = 2**30


def _require(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI installs it: see .ci/run)")
        pytest.skip(why)


_require(os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER),
         "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
for _modules in (("selenium",), ("starlette",), ("uvicorn",), ("python_multipart", "multipart")):
    _require(any(importlib.util.find_spec(m) for m in _modules), f"needs {_modules[0]} (pip install -e '.[test]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

LLAMA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
            "max_position_embeddings": 4096}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m costplan serve` on a free port; its base URL."""
    folder = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "COSTPLAN_CACHE": str(folder / "cache"), "HF_HUB_CACHE": str(folder / "hub"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = (folder / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "costplan", "serve", "--host", "127.0.0.1", "--port",
                                str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/options", timeout=5).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"costplan serve did not start:\n{(folder / 'server.log').read_text()}")
            time.sleep(0.2)
    yield base
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--disable-sync", f"--user-data-dir={profile}", "--window-size=1300,2200"):
        options.add_argument(argument)
    downloads = tmp_path_factory.mktemp("downloads")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.downloads = downloads
    yield driver
    driver.quit()


def api(base: str, endpoint: str, **params: str) -> dict:
    query = urllib.parse.urlencode({k.replace("_", "-"): v for k, v in params.items()})
    with urllib.request.urlopen(f"{base}/api/{endpoint}?{query}", timeout=120) as response:
        return json.loads(response.read())


def api_error(base: str, endpoint: str, body: bytes) -> str:
    request = urllib.request.Request(f"{base}/api/{endpoint}", data=body, method="POST",
                                     headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(request, timeout=60)
    assert failure.value.code == 400
    return json.loads(failure.value.read())["error"]


def generation(driver) -> int:
    return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-generation") or 0)


def settled(driver, after: int) -> int:
    """Wait until the page has finished an update newer than ``after``; its number."""
    def done(d):
        body = d.find_element(By.TAG_NAME, "body")
        return body.get_attribute("data-busy") == "false" and int(body.get_attribute("data-generation")) > after
    WebDriverWait(driver, 120, poll_frequency=0.1).until(done)
    return generation(driver)


def open_page(driver, url: str) -> None:
    driver.get("about:blank")
    driver.get(url)
    settled(driver, 0)


READ_PAGE = """
const num = (v) => v === "" || v === null || v === undefined ? null : Number(v);
const section = document.getElementById("summary-section");
const summary = {};
for (const item of document.querySelectorAll("#summary .item")) {
  summary[item.dataset.key] = num(item.querySelector("dd").dataset.value);
}
const error = document.getElementById("error");
return {
  model: section.dataset.model, method: section.dataset.method, gpu: section.dataset.gpu, summary,
  fits: document.getElementById("fit").dataset.fits,
  memory: [...document.querySelectorAll("#memory-chart rect.term")].map((r) => [r.dataset.term, num(r.dataset.bytes)]),
  card: num(document.querySelector("#memory-chart .card-line")?.dataset.bytes),
  compare: [...document.querySelectorAll("#compare-table tbody tr")].map((tr) =>
    [tr.dataset.method, ...[...tr.querySelectorAll("td[data-value]")].map((td) => num(td.dataset.value))]),
  plan_points: [...document.querySelectorAll("#plan-chart circle.point")].map((c) =>
    [num(c.dataset.hours), num(c.dataset.usd)]),
  plan_rows: document.querySelectorAll("#plan-table tbody tr").length,
  plan_error: document.getElementById("plan-error").hidden ? null : document.getElementById("plan-error").textContent,
  error: error.hidden ? null : error.textContent,
  assumptions: document.querySelectorAll("#assumptions > li").length,
  url: window.location.href,
};
"""


def read_page(driver) -> dict:
    return driver.execute_script(READ_PAGE)


def expect_estimate(page: dict, est: dict) -> None:
    """The summary and the memory chart are the API's numbers."""
    assert (page["model"], page["method"], page["gpu"]) == (est["model"], est["method"], est["gpu"])
    assert page["fits"] == str(est["fits"]).lower()
    for key in ("gpus", "wall_hours", "cost_usd", "gpu_hours", "energy_kwh", "tokens_per_second",
                "memory_device_bytes", "params_trainable", "tokens", "flops_total"):
        assert page["summary"][key] == est[key], key
    terms = [[term, value] for term, value in est["memory_breakdown"].items() if value > 0]
    overhead = est["memory_device_bytes"] - sum(value for _, value in terms)
    assert page["memory"][:len(terms)] == terms
    assert page["memory"][len(terms):] == ([["overhead", pytest.approx(overhead)]] if overhead > 0 else [])
    assert page["card"] == est["gpu_memory_bytes"]
    assert page["assumptions"] >= len(est["assumptions"])
    assert page["error"] is None


def expect_compare(page: dict, compare: dict) -> None:
    assert [row[0] for row in page["compare"]] == [row["method"] for row in compare["rows"]]
    for shown, row in zip(page["compare"], compare["rows"], strict=True):
        assert shown[1:] == [row["params_trainable"], row["tokens"], row["memory_device_bytes"], row["gpus"],
                             row["wall_hours"], row["gpu_hours"], row["cost_usd"], row["relative_cost"],
                             row["energy_kwh"]]


def expect_plan(page: dict, plan: dict) -> None:
    points = [[row["wall_seconds"] / 3600, row["cost_usd"]] for row in plan["rows"]]
    assert page["plan_points"] == [[pytest.approx(h, rel=1e-12), u] for h, u in points]
    assert page["plan_rows"] == len(plan["rows"]) > 0


def test_the_page_shows_the_apis_numbers_and_follows_method_and_gpu(server, browser):
    open_page(browser, f"{server}/?model=7b&method=lora&gpu=h100&tokens=100M")
    first = read_page(browser)
    expect_estimate(first, api(server, "estimate", model="7b", method="lora", gpu="h100", tokens="100M"))
    expect_compare(first, api(server, "compare", model="7b", gpu="h100", tokens="100M"))
    expect_plan(first, api(server, "plan", model="7b", method="lora", tokens="100M"))
    assert browser.find_element(By.ID, "advanced").get_attribute("open") is None  # folded away
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert loaded and all(url.startswith(server + "/") for url in loaded)  # nothing from elsewhere

    before = generation(browser)
    Select(browser.find_element(By.ID, "method")).select_by_value("full")
    settled(browser, before)
    full = read_page(browser)
    expect_estimate(full, api(server, "estimate", model="7b", method="full", gpu="h100", tokens="100M"))
    expect_plan(full, api(server, "plan", model="7b", method="full", tokens="100M"))
    assert full["summary"]["cost_usd"] != first["summary"]["cost_usd"]
    assert full["memory"] != first["memory"] and full["plan_points"] != first["plan_points"]
    assert "method=full" in full["url"]

    before = generation(browser)
    Select(browser.find_element(By.ID, "gpu")).select_by_value("h200")
    settled(browser, before)
    h200 = read_page(browser)
    expect_estimate(h200, api(server, "estimate", model="7b", method="full", gpu="h200", tokens="100M"))
    expect_compare(h200, api(server, "compare", model="7b", gpu="h200", tokens="100M"))
    assert h200["card"] == 141 * GIB != full["card"] == 80 * GIB
    assert "gpu=h200" in h200["url"] and "method=full" in h200["url"]


def test_a_shared_link_reproduces_the_answer(server, browser):
    link = f"{server}/?model=8b&method=qlora&gpu=l40s&tokens=50M&seq-len=4096&lora-rank=16"
    open_page(browser, link)
    shown = read_page(browser)
    expect_estimate(shown, api(server, "estimate", model="8b", method="qlora", gpu="l40s", tokens="50M",
                               seq_len="4096", lora_rank="16"))
    assert browser.find_element(By.ID, "advanced").get_attribute("open") is not None
    assert browser.find_element(By.ID, "opt-seq-len").get_attribute("value") == "4096"
    shared = browser.find_element(By.ID, "share-url").get_attribute("value")
    assert shared == shown["url"] and "seq-len=4096" in shared
    open_page(browser, shared)  # a colleague opens the link
    again = read_page(browser)
    assert {k: again[k] for k in ("summary", "memory", "card", "compare", "plan_points")} == \
        {k: shown[k] for k in ("summary", "memory", "card", "compare", "plan_points")}


def test_an_advanced_setting_changes_the_answer(server, browser):
    open_page(browser, f"{server}/?model=7b&method=lora&gpu=a100&tokens=100M")
    browser.find_element(By.CSS_SELECTOR, "#advanced summary").click()
    before = generation(browser)
    Select(browser.find_element(By.ID, "opt-grad-ckpt")).select_by_value("true")
    settled(browser, before)
    page = read_page(browser)
    est = api(server, "estimate", model="7b", method="lora", gpu="a100", tokens="100M", grad_ckpt="true")
    assert est["layout"]["grad_ckpt"] is True
    expect_estimate(page, est)
    assert "grad-ckpt=true" in page["url"]


def test_a_bad_config_upload_shows_the_error_and_a_good_one_the_answer(server, browser, tmp_path):
    open_page(browser, f"{server}/?method=lora&gpu=h100")
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"model_type": "mamba"}))
    before = generation(browser)
    browser.find_element(By.ID, "config").send_keys(str(bad))
    settled(browser, before)
    page = read_page(browser)
    expected = api_error(server, "estimate?method=lora&gpu=h100", bad.read_bytes())
    assert page["error"] == expected
    assert expected.startswith("'uploaded config.json': model_type 'mamba' is not supported")
    assert browser.find_element(By.ID, "error").is_displayed()

    good = tmp_path / "my-llama.json"
    good.write_text(json.dumps(LLAMA_7B))
    before = generation(browser)
    browser.find_element(By.ID, "config").send_keys(str(good))
    settled(browser, before)
    page = read_page(browser)
    preset = api(server, "estimate", model="7b", method="lora", gpu="h100")
    assert page["error"] is None and page["model"] == "my-llama"
    assert page["summary"]["cost_usd"] == preset["cost_usd"]  # the same architecture as llama-2-7b
    assert "model=" not in page["url"]  # an upload cannot travel in a link

    before = generation(browser)
    browser.find_element(By.ID, "clear-config").click()
    settled(browser, before)
    assert read_page(browser)["model"] == "llama-2-7b"


def test_an_unknown_hub_id_and_an_infeasible_plan(server, browser):
    open_page(browser, f"{server}/?model=acme/never-downloaded")
    page = read_page(browser)
    assert page["error"] and "not in the local Hugging Face cache" in page["error"]
    open_page(browser, f"{server}/?model=70b&method=full&gpu=h100&tokens=10B&budget=1")
    page = read_page(browser)
    plan = api(server, "plan", model="70b", method="full", tokens="10B", budget="1")
    assert plan["feasible"] is False and page["plan_points"] == [] and page["plan_rows"] == 0
    summary = browser.find_element(By.ID, "plan-summary").text
    assert plan["why"] in summary


def test_the_report_downloads(server, browser):
    open_page(browser, f"{server}/?model=7b&method=lora&gpu=h100&tokens=100M&plan-method=lora")
    Select(browser.find_element(By.ID, "report-format")).select_by_value("json")
    browser.find_element(By.ID, "download").click()
    WebDriverWait(browser, 120).until(lambda d: d.find_element(By.ID, "download").get_attribute("data-bytes"))
    assert int(browser.find_element(By.ID, "download").get_attribute("data-bytes")) > 1000
    assert "costplan-report.json" in browser.find_element(By.ID, "download-status").text
    saved = browser.downloads / "costplan-report.json"
    WebDriverWait(browser, 30).until(lambda d: saved.is_file() and saved.stat().st_size > 1000)
    report = json.loads(saved.read_text())
    assert report["model"] == "llama-2-7b" and report["gpu"] == "h100-sxm" and report["tokens"] == 1e8
    assert [row["method"] for row in report["plan"]["pareto"]] == ["lora"] * len(report["plan"]["pareto"])
