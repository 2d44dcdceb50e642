"""The web page at the gateway root, driven in real headless Chromium against the running stack.

A person's path through it: open the link `make run` prints, pick two elements, generate two
images, close the dialog while the job runs (it stays in the library's active list), reopen it,
watch the job finish, and use the results as the project cover and as an element's image. And a
project's style (ADR 0024): set it, lose a race to another writer (the 409 shown), see where it
goes in the prompt, see the estimate before generating and the receipt after.

Debian's Chromium (`/usr/bin/chromium`, installed by `.ci/run` when missing) is driven by the
`playwright` package; no browser is ever downloaded. The test skips where that binary is missing.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.jobs import wait_final

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.conftest import RunningStack

CHROMIUM = Path("/usr/bin/chromium")
# This machine has no network but localhost: without these flags Chromium keeps trying to reach
# Google's hosts (refused connections, failed look-ups) at every start.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT_COPY = REPO / "docs" / "screenshots" / "web-page.png"
RECEIPT_SCREENSHOT = REPO / "docs" / "screenshots" / "web-page-style-and-receipt.png"
PROJECT = "demo-project"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium is not installed at /usr/bin/chromium "
        "(apt-get install -y chromium; .ci/run installs it when missing)",
    ),
]


@pytest.fixture
def page(running_stack: RunningStack) -> Iterator[Page]:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
        finally:
            browser.close()
    assert errors == [], f"the page threw: {errors}"


def assignments(running_stack: RunningStack) -> dict[str, Any]:
    with running_stack.user() as user:
        response = user.get(f"/v1/projects/{PROJECT}/assignments")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def test_generate_close_reopen_and_use_as_cover(
    running_stack: RunningStack, page: Page, tmp_path: Path
) -> None:
    info = running_stack.info

    # The link `make run` prints: the token rides in the fragment, which the page keeps in
    # sessionStorage and then drops from the address bar.
    page.goto(f"{info.gateway_url}/#token={info.user_token}")
    page.wait_for_selector("body[data-ready='true']")
    assert info.user_token not in page.url
    assert page.locator("#project-title").inner_text() == "The Salt Road"

    # 1 context: two elements; Saltmarsh Harbour's data fields stay home.
    page.get_by_role("button", name="Generate image").click()
    dialog = page.locator("#generate-dialog")
    page.get_by_label("Use Mara Vell").check()
    page.get_by_label("Use Saltmarsh Harbour").check()
    page.get_by_label("Send data of Saltmarsh Harbour").uncheck()
    assert "2 elements picked" in page.locator("#dialog-footnote").inner_text()

    # 2 prompt: the demo profile, two images, and a provider delay long enough to see the job
    # running; the preview shows exactly what will be sent.
    dialog.get_by_role("button", name="Next: prompt").click()
    page.select_option("#profile", info.profile_id)
    page.fill("#prompt", "Mara on the rope bridges of the harbour at dawn")
    page.get_by_label("2 images").check(force=True)  # the radio is styled as a segment
    page.fill("#option-delay_s", "3")
    preview = page.locator("[data-testid='preview-prompt']")
    preview.filter(has_text="Mara on the rope bridges").wait_for()
    sent = preview.inner_text()
    assert "Mara Vell (character)" in sent
    assert "Saltmarsh Harbour (location)" in sent
    assert "smugglers' market" not in sent  # a data field of the harbour, switched off
    # The demo profile takes up to 4 reference images (ADR 0022): both pictures are sent.
    shown = page.locator("#preview").inner_text()
    assert "Reference images sent" in shown
    assert "Mara Vell:" in shown and "Saltmarsh Harbour:" in shown

    # 3 generate: accepted at once, progress over SSE.
    dialog.get_by_role("button", name="Generate 2 images").click()
    status = dialog.locator(".job-status")
    status.wait_for()
    job_id = status.get_attribute("data-job-id")
    assert job_id

    # Close while it runs: the job is in the library's active list.
    dialog.get_by_role("button", name="Close (keeps running)").click()
    assert not dialog.evaluate("d => d.open")
    chip = page.locator(f".job-chip[data-job-id='{job_id}']")
    chip.wait_for()
    assert "2 images" in chip.inner_text()

    # Reopen: the dialog shows the same job, which finishes with two images.
    page.get_by_role("button", name="Generate image").click()
    page.locator(f"#generate-dialog .job-status[data-job-id='{job_id}']").wait_for()
    page.locator(f".job-status[data-job-id='{job_id}'][data-status='completed']").wait_for(
        timeout=90_000
    )
    results = dialog.locator(".result[data-media-id]")
    assert results.count() == 2
    dialog.locator(".result img[src^='blob:']").nth(1).wait_for()  # thumbnails, with the token
    chip.wait_for(state="detached")  # no longer active
    cover_id = results.nth(0).get_attribute("data-media-id")
    element_image_id = results.nth(1).get_attribute("data-media-id")
    assert cover_id and element_image_id

    # Use this image: the first as the project cover, the second as Mara Vell's picture.
    results.nth(0).get_by_role("button", name="Use as cover").click()
    page.locator(f"#cover img.cover-image[data-media-id='{cover_id}']").wait_for()
    results.nth(1).get_by_label("Element").select_option("mara-vell")
    results.nth(1).get_by_role("button", name="Use for element").click()
    mara = page.locator("#elements li[data-element-id='mara-vell']")
    mara.locator(f"img[data-media-id='{element_image_id}']").wait_for()

    recorded = assignments(running_stack)
    assert recorded["cover"]["id"] == cover_id
    assert recorded["elements"]["mara-vell"]["id"] == element_image_id

    page.locator("#dialog-actions").get_by_role("button", name="Close", exact=True).click()
    tile = page.locator(f"#media-grid .tile[data-media-id='{cover_id}']")
    tile.locator(".badge", has_text="Cover").wait_for()
    page.locator("#cover img.cover-image[src^='blob:']").wait_for()
    time.sleep(0.3)  # let the last thumbnails paint

    shot = tmp_path / "web-page.png"
    page.screenshot(path=str(shot))
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)


def test_without_a_token_the_page_asks_for_one(running_stack: RunningStack, page: Page) -> None:
    page.goto(running_stack.info.gateway_url + "/")
    form = page.locator("#signin-form")
    form.wait_for()
    page.fill("#signin-token", "not-a-token")
    form.get_by_role("button", name="Open").click()
    page.locator("#signin-error").filter(has_text="does not look like a token").wait_for()

    page.fill("#signin-token", running_stack.info.second_user_token)
    form.get_by_role("button", name="Open").click()
    page.wait_for_selector("body[data-ready='true']")
    assert page.locator("#topbar-project").inner_text() == "second-project"


def test_a_blocked_prompt_is_explained_in_plain_words(
    running_stack: RunningStack, page: Page
) -> None:
    info = running_stack.info
    page.goto(f"{info.gateway_url}/#token={info.user_token}")
    page.wait_for_selector("body[data-ready='true']")
    page.get_by_role("button", name="Generate image").click()
    dialog = page.locator("#generate-dialog")
    dialog.get_by_role("button", name="Next: prompt").click()
    page.select_option("#profile", info.profile_id)
    # The offline provider's scripted failure: it refuses the prompt as a real one would.
    page.fill("#prompt", "A harbour brawl [fail:content_blocked]")
    dialog.get_by_role("button", name="Generate 1 image").click()
    dialog.locator(".job-status[data-status='failed']").wait_for(timeout=60_000)
    error = dialog.locator(".error-box").inner_text()
    assert "content rules" in error
    assert "refused this prompt" in error  # the API's own message for the writer


@pytest.fixture(scope="module")
def priced_profile(running_stack: RunningStack) -> str:
    """An offline profile with a price in money, two images a job and room for one reference."""
    with running_stack.admin() as admin:
        made = admin.post(
            "/admin/v1/profiles",
            json={
                "name": f"Web priced sketch {secrets.token_hex(3)}",
                "provider": "offline",
                "model": "offline-sketch",
                "sizes": ["256x256"],
                "default_size": "256x256",
                "counts": [1, 2],
                "max_reference_images": 1,
                "credit_cost": 1.5,
                "price_per_image_usd": 0.04,
                "options": [{"name": "seed", "kind": "integer", "minimum": 0}],
            },
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


def test_style_estimate_and_receipt(
    running_stack: RunningStack, page: Page, priced_profile: str, tmp_path: Path
) -> None:
    user_id, project = f"web-style-{secrets.token_hex(4)}", f"web-style-{secrets.token_hex(4)}"
    token = running_stack.stack.mint_token(user_id, [project])
    style_url = f"/v1/projects/{project}/style"
    with running_stack.user(token) as user, running_stack.admin() as admin:
        # One image in the library to take as the style's reference; then a credit limit.
        first = user.post(
            "/v1/generations",
            json={"project": project, "profile_id": priced_profile, "prompt": "A harbour"},
        )
        assert first.status_code == 202, first.text
        [picture] = wait_final(user, first.json()["id"])["images"]
        quota = admin.put(f"/admin/v1/quotas/users/{user_id}", json={"credits_per_period": 10})
        assert quota.is_success, quota.text

        page.goto(f"{running_stack.info.gateway_url}/#token={token}")
        page.wait_for_selector("body[data-ready='true']")
        card = page.locator("#project-style")
        assert "No style yet" in card.inner_text()

        # Set it: words and the library's image; the card shows version 1.
        card.get_by_role("button", name="Set a style").click()
        page.fill("#style-text", "Muted watercolour, ink outlines")
        card.get_by_label("Style reference 1").check()
        card.get_by_role("button", name="Save style").click()
        card.locator("[data-testid='style-version']", has_text="Version 1").wait_for()
        card.locator(f"img[data-media-id='{picture['media_id']}']").wait_for()

        # Another writer saves version 2 while this page edits version 1: the save is refused
        # with the API's message, and the latest version can be loaded.
        card.get_by_role("button", name="Edit style").click()
        other = user.put(
            style_url, json={"text": "Oil on canvas", "reference_media_ids": [], "version": 1}
        )
        assert other.status_code == 200, other.text
        page.fill("#style-text", "Muted watercolour, ink outlines, fog")
        card.get_by_role("button", name="Save style").click()
        refused = card.locator("#style-error")
        refused.filter(has_text="changed meanwhile").wait_for()
        assert "Someone changed the style meanwhile" in refused.inner_text()
        assert "version 2" in refused.inner_text()
        card.get_by_role("button", name="Load the latest version").click()
        card.locator(".hint", has_text="Editing version 2").wait_for()
        assert page.input_value("#style-text") == "Oil on canvas"
        page.fill("#style-text", "Muted watercolour, ink outlines")
        card.get_by_label("Style reference 1").check()
        card.get_by_role("button", name="Save style").click()
        card.locator("[data-testid='style-version']", has_text="Version 3").wait_for()
        assert user.get(style_url).json()["version"] == 3

        # The dialog: the style marked where it goes, and the cost before generating. Seeds 700
        # and 701 go to the two images; the offline provider refuses the second.
        page.get_by_role("button", name="Generate image").click()
        dialog = page.locator("#generate-dialog")
        dialog.get_by_role("button", name="Next: prompt").click()
        page.select_option("#profile", priced_profile)
        page.fill("#prompt", "Two owls [fail:content_blocked:output@seed=701]")
        page.get_by_label("2 images").check(force=True)
        page.fill("#option-seed", "700")
        assert page.get_by_label("Apply the project style (version 3)").is_checked()
        preview = page.locator("#preview")
        preview.locator("mark.style-words", has_text="Muted watercolour, ink outlines.").wait_for()
        assert "Project style: " in preview.inner_text()  # its image is among those sent
        estimate = page.locator("#estimate")
        estimate.filter(has_text="3 credits for 2 images").wait_for()
        shown = estimate.inner_text()
        assert "(1.5 credits each)" in shown and "About $0.08" in shown
        assert "8.5 credits of 10 left" in shown  # the first image was charged

        # Generate: one image lands, one is refused; the receipt charges only the first.
        dialog.get_by_role("button", name="Generate 2 images").click()
        dialog.locator(".job-status[data-status='partial']").wait_for(timeout=60_000)
        receipt = dialog.locator("[data-testid='receipt']")
        receipt.wait_for()
        rows = receipt.locator("tbody tr")
        assert rows.count() == 2
        assert rows.nth(0).get_attribute("data-charged") == "true"
        assert "1.5 credits" in rows.nth(0).inner_text()
        assert rows.nth(1).get_attribute("data-outcome") == "blocked"
        assert "not charged" in rows.nth(1).inner_text()
        assert "refused" in rows.nth(1).inner_text()
        assert receipt.locator("[data-testid='receipt-total']").inner_text() == (
            "Charged 1.5 credits for 1 of 2 images; 3 credits reserved, 1.5 credits given back."
        )
        dialog.locator(".result img[src^='blob:']").wait_for()
        time.sleep(0.3)  # let the thumbnail paint
        shot = tmp_path / "receipt.png"
        page.screenshot(path=str(shot))
        shutil.copyfile(shot, RECEIPT_SCREENSHOT)
