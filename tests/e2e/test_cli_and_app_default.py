"""Issue 18 on the real stack: the `atelier` command, the app on the embedded default, and the
offline provider drawing reference images.

The command runs in-process through click's runner, reading the stack's own `run.json`; every
call it makes is HTTP to the running gateway or profiles service.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from atelier_cli.main import cli
from tests.e2e.jobs import wait_final

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e

DEMO = "Sketch (offline)"


def atelier(stack: RunningStack, *args: str, stdin: str | None = None) -> Result:
    run_file = str(stack.stack.var_dir / "run.json")
    return CliRunner().invoke(cli, ["--run-file", run_file, *args], input=stdin, env=_no_env())


def _no_env() -> dict[str, str | None]:
    # The runner's environment: none of the overrides, so run.json is what is read.
    names = ("URL", "TOKEN", "PROJECT", "ADMIN_URL", "ADMIN_TOKEN", "RUN_FILE")
    return {f"ATELIER_{name}": None for name in names}


def test_the_entry_point_is_installed() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("atelier")), "admin", "keys", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "never from the command line" in done.stdout


def test_generate_shows_progress_and_downloads_the_images(
    running_stack: RunningStack, tmp_path: Path
) -> None:
    listed = atelier(running_stack, "profiles")
    assert listed.exit_code == 0, listed.output
    assert DEMO in listed.output

    out = tmp_path / "images"
    result = atelier(
        running_stack, "generate", "A lighthouse at dusk", "--profile", DEMO,
        "--count", "2", "--size", "256x256", "--out", str(out), "--option", "seed=7",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "completed" in result.output and "2/2 images" in result.output
    saved = sorted(out.iterdir())
    assert [p.suffix for p in saved] == [".png", ".png"]
    assert {str(p) for p in saved} <= set(result.output.split())
    for path in saved:
        with Image.open(path) as image:
            assert image.size == (256, 256)


def test_jobs_and_cancel(running_stack: RunningStack) -> None:
    info = running_stack.info
    with running_stack.user() as user:
        accepted = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": info.profile_id,
                "prompt": f"Slow harbour {uuid.uuid4().hex[:6]}",
                "options": {"delay_s": 20},
            },
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        listed = atelier(running_stack, "jobs")
        assert listed.exit_code == 0 and job_id in listed.output, listed.output
        cancelled = atelier(running_stack, "cancel", job_id)
        assert cancelled.exit_code == 0, cancelled.output
        assert f"job {job_id}: cancelled" in cancelled.output
        assert wait_final(user, job_id)["status"] == "cancelled"


def test_errors_are_the_apis_words(running_stack: RunningStack, tmp_path: Path) -> None:
    bad_size = atelier(running_stack, "generate", "x", "--size", "999x999", "--out", str(tmp_path))
    assert bad_size.exit_code == 1
    assert "HTTP 422 size_not_allowed" in bad_size.output
    unknown = atelier(running_stack, "generate", "x", "--profile", "No such profile")
    assert unknown.exit_code == 2 and "No enabled profile is named" in unknown.output
    missing = atelier(running_stack, "cancel", "not-a-job")
    assert missing.exit_code == 1 and "HTTP 404" in missing.output

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    env = {**_no_env(), "ATELIER_URL": f"http://127.0.0.1:{port}", "ATELIER_TOKEN": "t"}
    down = CliRunner().invoke(
        cli, ["--run-file", str(tmp_path / "none.json"), "jobs", "--project", "p"], env=env
    )
    assert down.exit_code == 2
    assert f"Atelier is not answering at http://127.0.0.1:{port}" in down.output


def test_admin_switch_profiles_and_keys(running_stack: RunningStack, tmp_path: Path) -> None:
    off = atelier(running_stack, "admin", "switch", "off", "--reason", "Maintenance")
    try:
        assert off.exit_code == 0 and "generation is off (Maintenance)" in off.output
        shown = atelier(running_stack, "profiles")
        assert "generation is off: Maintenance" in shown.output
    finally:
        on = atelier(running_stack, "admin", "switch", "on")
    assert on.exit_code == 0 and "generation is on" in on.output

    name = f"CLI profile {uuid.uuid4().hex[:6]}"
    yaml_file = tmp_path / "profile.yaml"
    yaml_file.write_text(
        f"name: {name}\nprovider: offline\nmodel: offline-sketch\nsizes: [256x256]\n"
        "default_size: 256x256\ncounts: [1]\nmax_reference_images: 2\n"
    )
    created = atelier(running_stack, "admin", "profiles", "create", str(yaml_file))
    assert created.exit_code == 0, created.output
    profile_id = created.output.strip().rsplit(" ", 1)[1]
    too_many = tmp_path / "too-many.json"
    too_many.write_text(json.dumps({"max_reference_images": 9}))
    refused = atelier(running_stack, "admin", "profiles", "update", profile_id, str(too_many))
    assert refused.exit_code == 1 and "reference images" in refused.output, refused.output
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps({"enabled": False}))
    updated = atelier(running_stack, "admin", "profiles", "update", profile_id, str(patch))
    assert updated.exit_code == 0, updated.output
    listed = atelier(running_stack, "admin", "profiles", "list", "--json")
    assert {"id": profile_id, "enabled": False}.items() <= next(
        p for p in json.loads(listed.output) if p["id"] == profile_id
    ).items()
    deleted = atelier(running_stack, "admin", "profiles", "delete", profile_id)
    assert deleted.exit_code == 0, deleted.output

    # A provider no worker of this stack serves, so no other test sees the key.
    stored = atelier(
        running_stack, "admin", "keys", "set", "replicate", stdin="r8_cli-test-key-9876\n"
    )
    assert stored.exit_code == 0, stored.output
    assert "r8_cli-test-key-9876" not in stored.output
    keys = atelier(running_stack, "admin", "keys", "list")
    row = next(line for line in keys.output.splitlines() if line.strip().startswith("replicate"))
    assert "9876" in row and "r8_cli" not in row
    empty = atelier(running_stack, "admin", "keys", "set", "replicate", stdin="")
    assert empty.exit_code == 2 and "no key was given" in empty.output
    assert atelier(running_stack, "admin", "keys", "delete", "replicate").exit_code == 0


def test_the_app_sees_the_offline_profile_and_the_admin_token_opens_its_admin_pages(
    running_stack: RunningStack,
) -> None:
    run = json.loads((running_stack.stack.var_dir / "run.json").read_text())
    gateway = run["gateway_url"]
    with httpx.Client(base_url=gateway, timeout=30) as client:
        user = {"Authorization": f"Bearer {run['user_token']}"}
        listed = client.get("/api/v1/ai/image-profiles", headers=user)
        assert listed.status_code == 200, listed.text
        demo = next(p for p in listed.json() if p["id"] == run["profile_id"])
        assert demo["provider"] == "stable-diffusion"  # the app's name for it (ADR 0022)
        assert demo["supportsImageInput"] is True
        admin = {"Authorization": f"Bearer {run['app_admin_token']}"}
        pages = client.get("/api/v1/admin/image-profiles", headers=admin)
        assert pages.status_code == 200, pages.text
        assert run["profile_id"] in {p["id"] for p in pages.json()}
        assert client.get("/api/v1/admin/image-profiles", headers=user).status_code == 403
        # The app-admin token is the app's, not the operator's: the admin API refuses it.
        operator = httpx.get(f"{run['admin_url']}/admin/v1/providers", headers=admin, timeout=10)
        assert operator.status_code == 401


def test_the_offline_provider_draws_an_elements_picture(running_stack: RunningStack) -> None:
    out = io.BytesIO()
    Image.new("RGB", (80, 80), (255, 0, 0)).save(out, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    body = {
        "project": "demo-project",
        "profile_id": running_stack.info.profile_id,
        "prompt": f"Mara at the harbour {uuid.uuid4().hex[:6]}",
        "size": "256x256",
        "context": {"elements": [{"id": "mara", "name": "Mara", "image": {"data_url": data_url}}]},
    }
    with running_stack.user() as user:
        accepted = user.post("/v1/generations", json=body)
        assert accepted.status_code == 202, accepted.text
        job = wait_final(user, accepted.json()["id"])
        assert job["status"] == "completed", job
        assert [r["element_id"] for r in job["reference_images"]] == ["mara"]
        content = user.get(job["images"][0]["content_url"])
    picture = Image.open(io.BytesIO(content.content)).convert("RGB")
    # One reference: a single cell across the top, the square picture centred in it.
    assert picture.getpixel((128, 50)) == (255, 0, 0)
