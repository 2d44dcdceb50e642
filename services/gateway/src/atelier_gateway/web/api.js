// The page's only way to Atelier: the public API, with the bearer token on every request.
//
// `<img src>` and `EventSource` cannot send an Authorization header, so images are fetched and
// shown from blob: URLs, and Server-Sent Events are read from a streaming `fetch` (see
// docs/adr/0009-web-page-auth.md).

const TOKEN_KEY = "atelier.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value.trim()),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** `make run` prints `/#token=...`: keep the token for this tab and drop it from the address bar. */
export function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const value = params.get("token");
  if (value) {
    token.set(value);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

/** The token's claims, read (not verified: the gateway does that) to know user and projects. */
export function claimsOf(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part.padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

const unauthorizedListeners = new Set();
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
}

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${token.get() ?? ""}`, ...extra };
}

function notAnswering() {
  return new ApiError(
    0,
    "network",
    "Atelier is not answering. Is the stack (make run) still running?",
  );
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = `The request failed (HTTP ${response.status}).`;
  let details = {};
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
      details = body.error;
    }
  } catch {
    // not JSON: keep the generic message
  }
  const error = new ApiError(response.status, code, message, details);
  if (response.status === 401) unauthorizedListeners.forEach((listener) => listener(error));
  return error;
}

/** JSON in, JSON out; any non-2xx answer becomes an ApiError carrying the API's own message. */
export async function request(path, { method = "GET", body, signal, headers = {} } = {}) {
  const init = { method, signal, headers: authHeaders(headers), cache: "no-store" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw notAnswering();
  }
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

const images = new Map();

/** A blob: URL of a media item's thumbnail or original, fetched once per page. */
export function mediaImage(mediaId, variant = "thumbnail") {
  const key = `${mediaId}/${variant}`;
  if (!images.has(key)) {
    const loading = (async () => {
      let response;
      try {
        response = await fetch(`/v1/media/${encodeURIComponent(mediaId)}/${variant}`, {
          headers: authHeaders(),
        });
      } catch {
        throw notAnswering();
      }
      if (!response.ok) throw await errorOf(response);
      return URL.createObjectURL(await response.blob());
    })();
    loading.catch(() => images.delete(key)); // a failed load is tried again next time
    images.set(key, loading);
  }
  return images.get(key);
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/**
 * Follow an SSE route: `onStatus(job, eventId)` for each `status` event.
 *
 * `reconnect`: open it again when it ends or breaks (a project stream never should end; a job
 * stream ends after the job's final state, so it is not reopened). A reconnect gets the current
 * state first, so nothing is missed. Stops for good on `signal` or a 401/403/404.
 */
export function followEvents(path, onStatus, { signal, reconnect = true, onState } = {}) {
  return (async () => {
    let delay = 500;
    while (!signal?.aborted) {
      try {
        const response = await fetch(path, {
          headers: authHeaders({ Accept: "text/event-stream" }),
          signal,
          cache: "no-store",
        });
        if (!response.ok) throw await errorOf(response);
        onState?.("open");
        delay = 500;
        await readEvents(response.body, (event) => {
          if (event.event === "status") onStatus(JSON.parse(event.data), event.id);
        });
        if (!reconnect) return;
      } catch (error) {
        if (signal?.aborted) return;
        onState?.("broken", error);
        if (error instanceof ApiError && [401, 403, 404].includes(error.status)) return;
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10_000);
    }
  })();
}

// The SSE wire format (WHATWG HTML §9.2): fields per line, an empty line ends an event; lines
// end in CRLF, LF or CR, and a chunk may end between the CR and the LF of one line ending.
async function readEvents(stream, dispatch) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (;;) {
      const end = buffer.search(/[\r\n]/);
      if (end < 0) break;
      if (buffer[end] === "\r" && end === buffer.length - 1) break; // wait: an LF may follow
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer[end] === "\r" && buffer[end + 1] === "\n" ? 2 : 1));
      if (line === "") {
        if (event.data.length) dispatch({ ...event, data: event.data.join("\n") });
        event = { event: "message", data: [], id: null };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event.event = text;
        else if (field === "data") event.data.push(text);
        else if (field === "id") event.id = text;
      }
    }
  }
}
