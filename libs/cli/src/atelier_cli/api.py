"""HTTP calls to the gateway and the profiles admin API, with errors a person can act on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

# Every call but a job's event stream and a download is a small JSON exchange.
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# The stream pings every 15 s (gateway `sse_ping_s`): a minute of silence means it is gone.
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# No generated image comes near this; a larger body is not one of ours.
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024


class ApiError(Exception):
    """The API refused the request; `message` is the API's own words."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def __str__(self) -> str:
        code = f" {self.code}" if self.code else ""
        return f"{self.message} (HTTP {self.status}{code})"


class NotRunning(Exception):
    """Nothing answers at the URL."""


def _error_of(response: httpx.Response) -> ApiError:
    """`{"error": {"code", "message"}}` (Atelier), `{"detail": ...}` (a framework default), else
    the status line."""
    message, code = response.reason_phrase or "request failed", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error, detail = body.get("error"), body.get("detail")
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = str(error["code"]) if error.get("code") else None
        elif isinstance(error, str):
            message = str(body.get("message") or error)
        elif detail is not None:
            message = detail if isinstance(detail, str) else str(detail)
    return ApiError(response.status_code, message, code)


class Api:
    """One base URL and bearer token; every method returns parsed JSON or raises."""

    def __init__(self, base_url: str, token: str, *, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise NotRunning(self.base_url) from None
        except httpx.TimeoutException:
            raise NotRunning(self.base_url) from None
        if response.status_code >= 400:
            raise _error_of(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def events(self, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The `(event, data)` of an SSE stream until it ends; nothing when the server answers
        204 (the job already ended)."""
        try:
            with connect_sse(self._client, "GET", path, timeout=STREAM_TIMEOUT) as source:
                response = source.response
                if response.status_code == 204:
                    return
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                for event in source.iter_sse():
                    yield event.event, event.json()
        except httpx.ConnectError:
            raise NotRunning(self.base_url) from None

    def download(self, path: str, target: Path) -> int:
        """Stream `path` into `target`; the bytes written."""
        written = 0
        try:
            with self._client.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                partial = target.with_name(target.name + ".part")
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        written += len(chunk)
                        if written > MAX_DOWNLOAD_BYTES:
                            out.close()
                            partial.unlink()
                            raise ApiError(
                                response.status_code,
                                f"{path} is larger than {MAX_DOWNLOAD_BYTES} bytes; not saved",
                            )
                        out.write(chunk)
                partial.replace(target)
        except httpx.ConnectError:
            raise NotRunning(self.base_url) from None
        return written
