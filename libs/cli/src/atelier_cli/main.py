"""`atelier`: the command-line client (README, "The command line").

User commands talk to the gateway with the user token; `atelier admin ...` talks to the profiles
service's admin API with the operator's admin token. Where both come from: `atelier_cli.config`.
"""

from __future__ import annotations

import json
import mimetypes
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atelier_cli.api import Api, ApiError, NotRunning
from atelier_cli.config import ConfigError, Connection, load_connection
from atelier_contracts.jobs import FINAL_STATUSES

# A profile file is a few hundred bytes; a provider key a few hundred characters.
MAX_PROFILE_FILE_BYTES = 256 * 1024
MAX_KEY_CHARS = 4096
MAX_OPTIONS = 32

F = TypeVar("F", bound=Callable[..., Any])

# Piped or captured output is not cut at 80 columns: ids must stay whole to be copied.
_PIPED_WIDTH = 250
console = Console(width=None if sys.stdout.isatty() else _PIPED_WIDTH)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else _PIPED_WIDTH)


class Context:
    def __init__(self, run_file: Path | None) -> None:
        self.run_file = run_file
        self._connection: Connection | None = None

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = load_connection(self.run_file)
        return self._connection

    def gateway(self) -> Api:
        return Api(*self.connection.need_gateway())

    def admin(self) -> Api:
        return Api(*self.connection.need_admin())

    def admin_request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request to the admin API, on a client opened for it and closed after."""
        with self.admin() as api:
            return api.request(method, path, **kwargs)

    def project(self, given: str | None) -> str:
        project = given or self.connection.project
        if not project:
            raise ConfigError("Name the project: --project NAME (or ATELIER_PROJECT).")
        return project


@contextmanager
def _plain_errors() -> Iterator[None]:
    """Every failure a person can act on as one line on stderr and a non-zero exit."""
    try:
        yield
    except ApiError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise SystemExit(1) from None
    except NotRunning as exc:
        errors.print(
            f"[red]error:[/red] Atelier is not answering at {exc}: is it running (`make run`)?",
            highlight=False,
        )
        raise SystemExit(2) from None
    except ConfigError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(2) from None


pass_context = click.make_pass_decorator(Context)


def handled(function: F) -> F:
    """Pass a command its `Context` (first argument) and run it inside `_plain_errors`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _plain_errors():
            return function(*args, **kwargs)

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return pass_context(wrapper)  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--run-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The run.json of `make run` (default: var/run.json, $ATELIER_VAR_DIR/run.json or "
    "$ATELIER_RUN_FILE). ATELIER_URL, ATELIER_TOKEN, ATELIER_PROJECT, ATELIER_ADMIN_URL and "
    "ATELIER_ADMIN_TOKEN override its values.",
)
@click.pass_context
def cli(ctx: click.Context, run_file: Path | None) -> None:
    """Atelier from the command line: generate images, follow and cancel jobs, list profiles,
    and (with `admin`) run the generation switch, profiles and provider keys."""
    ctx.obj = Context(run_file)


# --- generate --------------------------------------------------------------------------------


def _profile_of(features: dict[str, Any], wanted: str | None) -> dict[str, Any]:
    profiles: list[dict[str, Any]] = features.get("profiles", [])
    if not profiles:
        raise ConfigError("No profile is enabled: an admin creates one (`atelier admin profiles`).")
    if wanted is None:
        return profiles[0]
    for profile in profiles:
        if wanted in (profile["id"], profile["name"]) or profile["name"].lower() == wanted.lower():
            return profile
    names = ", ".join(repr(p["name"]) for p in profiles)
    raise ConfigError(f"No enabled profile is named {wanted!r}; there are: {names}.")


def _options_of(pairs: tuple[str, ...]) -> dict[str, Any]:
    if len(pairs) > MAX_OPTIONS:
        raise click.BadParameter(f"at most {MAX_OPTIONS} options", param_hint="--option")
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--option")
        try:
            options[name] = json.loads(raw)  # numbers and booleans as such
        except ValueError:
            options[name] = raw
    return options


def _progress_of(job: dict[str, Any]) -> tuple[float, str]:
    progress = job.get("progress") or {}
    total = max(int(progress.get("total") or job.get("count") or 1), 1)
    done = int(progress.get("landed") or 0) + int(progress.get("failed") or 0)
    fraction = progress.get("fraction")
    completed = max(float(done), float(fraction) * total if fraction is not None else 0.0)
    detail = progress.get("detail")
    label = f"{job['status']}" + (f": {detail}" if detail else "")
    return min(completed, float(total)), label


def _follow(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    """The job once it ended, with a live bar fed by its event stream."""
    total = max(int(job.get("count") or 1), 1)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:g}/{task.total:g} images"),
        TimeElapsedColumn(),
        console=errors,
        transient=False,
    ) as bar:
        task = bar.add_task(job["status"], total=total)
        for event, data in api.events(f"/v1/generations/{job['id']}/events"):
            if event != "status":
                continue
            job = data
            completed, label = _progress_of(job)
            bar.update(task, completed=completed, description=label)
            if job["status"] in FINAL_STATUSES:
                break
    if job["status"] not in FINAL_STATUSES:
        # The stream ended early (204: it had ended already) or was cut: read the job itself.
        job = api.get(f"/v1/generations/{job['id']}")
    return dict(job)


def _extension(content_type: str) -> str:
    guessed = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return ".jpg" if guessed in (".jpe", ".jpeg") else guessed


@cli.command()
@click.argument("prompt")
@click.option("--profile", "-p", help="Profile name or id (default: the first one listed)")
@click.option("--count", "-n", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--size", "-s", help="WxH, one the profile allows (default: the profile's)")
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory the images are saved in (made if missing)",
)
@click.option("--project", help="Project the images land in (default: run.json's user project)")
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="NAME=VALUE",
    help="A profile option, e.g. seed=7 or delay_s=2 (repeatable)",
)
@handled
def generate(
    ctx: Context,
    prompt: str,
    profile: str | None,
    count: int,
    size: str | None,
    out: Path,
    project: str | None,
    options: tuple[str, ...],
) -> None:
    """Generate COUNT images of PROMPT, show their progress live, and save them into OUT."""
    with ctx.gateway() as api:
        chosen = _profile_of(api.get("/v1/features"), profile)
        body: dict[str, Any] = {
            "project": ctx.project(project),
            "profile_id": chosen["id"],
            "prompt": prompt,
            "count": count,
            "options": _options_of(options),
        }
        if size:
            body["size"] = size
        accepted = api.request(
            "POST", "/v1/generations", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        errors.print(f"job {accepted['id']} on {chosen['name']!r}", highlight=False)
        job = _follow(api, {**accepted, "count": count})
        out.mkdir(parents=True, exist_ok=True)
        for image in job.get("images", []):
            target = out / f"{job['id']}-{image['index']}{_extension(image['content_type'])}"
            api.download(image["content_url"], target)
            console.print(str(target), highlight=False)
        error = job.get("error") or {}
        if job["status"] != "completed":
            message = error.get("message") or "no image was made"
            errors.print(f"[red]job {job['status']}:[/red] {message}", highlight=False)
            raise SystemExit(1)
        errors.print(f"job completed: {len(job.get('images', []))} images in {out}")


# --- jobs, cancel, profiles ------------------------------------------------------------------


@cli.command()
@click.option("--project", help="Project (default: run.json's user project)")
@click.option("--all", "everything", is_flag=True, help="Finished jobs too, not only active ones")
@handled
def jobs(ctx: Context, project: str | None, everything: bool) -> None:
    """List a project's jobs (the active ones unless --all)."""
    with ctx.gateway() as api:
        name = ctx.project(project)
        listed = api.get(f"/v1/projects/{name}/generations", params={"active": not everything})
    rows = listed.get("jobs", [])
    if not rows:
        console.print(f"no {'' if everything else 'active '}jobs in {name}")
        return
    table = Table("id", "status", "images", "profile", "prompt", box=None)
    for job in rows:
        progress = job.get("progress") or {}
        table.add_row(
            job["id"],
            job["status"],
            f"{progress.get('landed', 0)}/{progress.get('total', job.get('count'))}",
            job.get("profile_name", ""),
            job["prompt"][:60],
        )
    console.print(table)


@cli.command()
@click.argument("job_id")
@handled
def cancel(ctx: Context, job_id: str) -> None:
    """Cancel the job JOB_ID (images that already landed stay)."""
    with ctx.gateway() as api:
        job = api.request("POST", f"/v1/generations/{job_id}/cancel")
    console.print(f"job {job['id']}: {job['status']}")


@cli.command()
@handled
def profiles(ctx: Context) -> None:
    """List the profiles a user may generate with, and whether generation is on."""
    with ctx.gateway() as api:
        features = api.get("/v1/features")
    if not features.get("enabled"):
        console.print(f"generation is off: {features.get('reason') or 'no reason given'}")
    table = Table("name", "id", "provider", "sizes", "counts", "references", box=None)
    for profile in features.get("profiles", []):
        table.add_row(
            profile["name"],
            profile["id"],
            profile["provider"],
            " ".join(profile.get("sizes") or []),
            " ".join(str(c) for c in profile.get("counts") or []),
            str(profile.get("max_reference_images", 0)),
        )
    console.print(table)


# --- admin -----------------------------------------------------------------------------------


@cli.group()
def admin() -> None:
    """The operator's admin API (profiles service): the switch, profiles, provider keys."""


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value))


@admin.command()
@click.argument("state", type=click.Choice(["on", "off"]), required=False)
@click.option("--reason", help="Shown to users while generation is off")
@handled
def switch(ctx: Context, state: str | None, reason: str | None) -> None:
    """Show the generation switch, or turn it on or off for everyone."""
    if state is None:
        current = ctx.admin_request("GET", "/admin/v1/settings")
    else:
        body = {"enabled": state == "on", "reason": reason if state == "off" else None}
        current = ctx.admin_request("PUT", "/admin/v1/settings", json=body)
    line = "on" if current["enabled"] else f"off ({current.get('reason') or 'no reason given'})"
    console.print(f"generation is {line}")


@admin.group(name="profiles")
def admin_profiles() -> None:
    """List, create, update and delete model profiles."""


def _read_profile_file(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_PROFILE_FILE_BYTES:
        raise click.BadParameter(f"larger than {MAX_PROFILE_FILE_BYTES} bytes", param_hint="FILE")
    text = path.read_text(encoding="utf-8")
    try:
        # YAML is a superset of JSON: one parser reads both.
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"not JSON or YAML: {exc}", param_hint="FILE") from None
    if not isinstance(loaded, dict):
        raise click.BadParameter("must hold one profile (a mapping of fields)", param_hint="FILE")
    return loaded


FILE_ARGUMENT = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))


@admin_profiles.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Every field, as the API gives it")
@handled
def admin_profiles_list(ctx: Context, as_json: bool) -> None:
    """List every profile, disabled ones included."""
    listed = ctx.admin_request("GET", "/admin/v1/profiles")
    if as_json:
        _print_json(listed)
        return
    table = Table("name", "id", "provider", "model", "enabled", box=None)
    for profile in listed:
        table.add_row(
            profile["name"],
            profile["id"],
            profile["provider"],
            profile["model"],
            "yes" if profile["enabled"] else "no",
        )
    console.print(table)


@admin_profiles.command(name="create")
@FILE_ARGUMENT
@handled
def admin_profiles_create(ctx: Context, file: Path) -> None:
    """Create a profile from FILE (JSON or YAML, the API's profile fields)."""
    created = ctx.admin_request("POST", "/admin/v1/profiles", json=_read_profile_file(file))
    console.print(f"created profile {created['name']!r}: {created['id']}", highlight=False)


@admin_profiles.command(name="update")
@click.argument("profile_id")
@FILE_ARGUMENT
@handled
def admin_profiles_update(ctx: Context, profile_id: str, file: Path) -> None:
    """Change the fields FILE (JSON or YAML) names on profile PROFILE_ID; the others stay."""
    path = f"/admin/v1/profiles/{profile_id}"
    updated = ctx.admin_request("PATCH", path, json=_read_profile_file(file))
    console.print(f"updated profile {updated['name']!r}: {updated['id']}", highlight=False)


@admin_profiles.command(name="delete")
@click.argument("profile_id")
@handled
def admin_profiles_delete(ctx: Context, profile_id: str) -> None:
    """Delete profile PROFILE_ID (jobs already submitted keep their snapshot)."""
    ctx.admin_request("DELETE", f"/admin/v1/profiles/{profile_id}")
    console.print(f"deleted profile {profile_id}")


@admin.group(name="keys")
def admin_keys() -> None:
    """Provider API keys: stored encrypted, never shown again. A key is read from a hidden prompt
    or standard input, never from the command line (where shell history and `ps` would keep it)."""


@admin_keys.command(name="list")
@handled
def admin_keys_list(ctx: Context) -> None:
    """Every provider and whether a key is stored (at most its last four characters)."""
    listed = ctx.admin_request("GET", "/admin/v1/providers")
    table = Table("provider", "key", "allowed origins", box=None)
    for provider in listed:
        stored = provider.get("credential_masked") or "set"
        table.add_row(
            provider["name"],
            stored if provider.get("credential_set") else "-",
            " ".join(provider.get("allowed_origins") or []),
        )
    console.print(table)


def _read_key() -> str:
    if sys.stdin.isatty():
        key: str = click.prompt("API key", hide_input=True)
    else:
        key = sys.stdin.read(MAX_KEY_CHARS + 2)
    key = key.strip()
    if not key:
        raise click.BadParameter("no key was given on standard input", param_hint="key")
    if len(key) > MAX_KEY_CHARS:
        raise click.BadParameter(f"longer than {MAX_KEY_CHARS} characters", param_hint="key")
    return key


@admin_keys.command(name="set")
@click.argument("provider")
@click.option(
    "--allowed-origin",
    "origins",
    multiple=True,
    metavar="ORIGIN",
    help="Another origin the key may be sent to (a proxy, a self-hosted server)",
)
@handled
def admin_keys_set(ctx: Context, provider: str, origins: tuple[str, ...]) -> None:
    """Set or rotate PROVIDER's API key, read from a hidden prompt or standard input."""
    key = _read_key()
    body = {"api_key": key, "allowed_origins": list(origins)}
    ctx.admin_request("PUT", f"/admin/v1/providers/{provider}/credentials", json=body)
    console.print(f"stored {provider}'s key (encrypted; it is never shown again)")


@admin_keys.command(name="delete")
@click.argument("provider")
@handled
def admin_keys_delete(ctx: Context, provider: str) -> None:
    """Delete PROVIDER's stored key."""
    ctx.admin_request("DELETE", f"/admin/v1/providers/{provider}/credentials")
    console.print(f"deleted {provider}'s key")
