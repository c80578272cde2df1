"""The pages and model cards, in-process: what each answers before and after traffic, the card as HTML
and Markdown, clean 4xx answers, and text from the registry escaped. In a real browser:
tests/test_ui_browser.py."""

from __future__ import annotations

import re
import time

import pytest
from starlette.testclient import TestClient

from registry.store import Registry
from service.app import create_app
from service.settings import Settings


def test_the_models_list_links_each_version_to_its_card(client):
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<a href="/ui/models/cancer">cancer</a>' in page.text
    assert '<a href="/models/cancer/versions/1/card">v1</a>' in page.text  # champion
    assert '<a href="/models/cancer/versions/2/card">v2</a>' in page.text  # challenger
    assert "no report yet" in page.text


@pytest.mark.parametrize("view", ["", "/quality", "/compare", "/history"])
def test_each_view_answers_before_any_traffic_and_refreshes_as_a_fragment(client, view):
    page = client.get(f"/ui/models/cancer{view}")
    assert page.status_code == 200 and "<html" in page.text and 'data-refresh="5"' in page.text
    fragment = client.get(f"/ui/models/cancer{view}", params={"fragment": "1"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and "<h1>cancer: " in fragment.text


def test_an_unknown_model_or_version_is_a_404_naming_it(client):
    page = client.get("/ui/models/nope/quality")
    assert page.status_code == 404 and "'nope' is not served" in page.json()["error"]
    card = client.get("/models/cancer/versions/7/card")
    assert card.status_code == 404 and card.json()["field"] == "version" and "7" in card.json()["error"]
    wrong = client.get("/models/cancer/versions/1/card", params={"format": "pdf"})
    assert wrong.status_code == 400 and "format must be html or markdown" in wrong.json()["error"]


def test_the_card_in_html_and_markdown(client, cancer_registry):
    manifest = cancer_registry.manifest("cancer", 1)
    html = client.get("/models/cancer/versions/champion/card")
    assert html.status_code == 200 and "Model card: cancer v1" in html.text
    assert manifest.sha256 in html.text and manifest.lineage.reference_sha256 in html.text
    assert '<span class="role">champion</span>' in html.text
    markdown = client.get("/models/cancer/versions/1/card", params={"format": "markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    text = markdown.text
    assert text.startswith("# Model card: cancer v1 (champion)") and f"SHA-256 `{manifest.sha256}`" in text
    assert "| mean_radius | float32 | mean " in text and "## Audit" in text
    accepted = client.get("/models/cancer/versions/2/card", headers={"Accept": "text/markdown"})
    assert accepted.text.startswith("# Model card: cancer v2 (challenger)")


def test_text_from_the_registry_is_escaped(tmp_path, cancer_model):
    registry = Registry(tmp_path / "registry")
    registry.push(
        cancer_model.onnx, "cancer", cancer_model.reference, description="<script>alert(1)</script>"
    )
    registry.promote("cancer", 1, "champion", reason="<img src=x onerror=alert(1)>")
    app = create_app(Settings(registry=registry.root, poll_interval=3600))
    with TestClient(app) as client:
        for path in ("/models/cancer/versions/1/card", "/ui/models/cancer/history"):
            page = client.get(path).text
            assert "<script>alert" not in page and "<img src=x" not in page
            assert "&lt;script&gt;" in page or "&lt;img src=x" in page


def test_the_drift_view_shows_the_monitors_report_flagged_first(tmp_path, cancer_model):
    from registry.demo import breast_cancer

    registry = Registry(tmp_path / "registry")
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    registry.promote("cancer", 1, "champion")
    _, x_test, _, _ = breast_cancer()
    shifted = x_test.assign(mean_texture=x_test["mean_texture"] + 3 * x_test["mean_texture"].std())
    app = create_app(Settings(registry=registry.root, poll_interval=3600, monitor_interval=0.05))
    with TestClient(app) as client:
        for start in range(0, len(shifted), 50):
            rows = shifted.iloc[start : start + 50].to_dict(orient="records")
            assert client.post("/predict", json={"inputs": rows}).status_code == 200
        deadline = time.monotonic() + 30
        while "flagged" not in (page := client.get("/ui/models/cancer").text) and time.monotonic() < deadline:
            time.sleep(0.1)
        rows = re.findall(r'<tr( class="flagged")? data-feature="([^"]+)">', page)
        assert rows[0] == (' class="flagged"', "mean_texture")  # flagged first
        assert len(rows) >= 33 and page.count('role="img"') >= 33  # each input and output, charted
        listing = client.get("/ui").text
        assert re.search(r'<strong class="bad">\d+ flagged</strong>', listing)
