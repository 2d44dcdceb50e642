// Small DOM helpers and the words the page uses for states and errors.

/** `h("p", {class: "x", onclick}, "text", child)`: an element; `null`/`false` children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name in node && typeof value !== "string") {
      node[name] = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace a node's children; like `h`, nested arrays are flattened and empty slots skipped. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function show(node, visible) {
  node.hidden = !visible;
}

export function setError(node, error) {
  node.replaceChildren();
  if (!error) {
    node.hidden = true;
    return;
  }
  const { title, message } = describeError(error);
  node.append(h("strong", {}, title), " ", message);
  node.hidden = false;
}

/** A short message in the corner; inside an open modal dialog, or the backdrop would hide it. */
export function toast(text, kind = "info") {
  const modal = document.querySelector("dialog[open]");
  let box = document.getElementById("toasts");
  if (modal) {
    box = modal.querySelector(".toasts") ?? modal.appendChild(h("div", { class: "toasts", role: "status" }));
  }
  const item = h("div", { class: `toast ${kind}` }, text);
  box.append(item);
  setTimeout(() => item.remove(), 4500);
}

const API_ERROR_TITLES = {
  network: "Atelier is not answering.",
  unauthorized: "Your token was not accepted.",
  generation_disabled: "Image generation is turned off.",
  project_not_granted: "No access to this project.",
  quota_exceeded: "You have used up your image credits.",
  rate_limited: "Too many requests at once.",
  unavailable: "A part of Atelier is not answering.",
  not_found: "Not found.",
  storage_error: "The image store refused.",
  style_version_stale: "Someone changed the style meanwhile.",
  style_image_unknown: "That image is not in this project's library.",
};

/** A heading in plain words and the API's own message (written for people). */
export function describeError(error) {
  const code = error?.code ?? "";
  const title = API_ERROR_TITLES[code] ?? (error?.status >= 500 ? "Something went wrong." : "That did not work.");
  let message = error?.message ?? String(error);
  // The switch's message already says "Image generation is turned off: <reason>".
  if (code === "generation_disabled") message = message.replace(/^Image generation is turned off:\s*/, "");
  return { title, message };
}

const JOB_ERROR_TITLES = {
  content_blocked: "Not allowed by the provider's content rules.",
  provider_unavailable: "The image provider is not available right now.",
  rate_limited: "The image provider is busy.",
  quota_exhausted: "The provider's quota is used up.",
  timeout: "The provider took too long.",
  auth: "The provider did not accept Atelier's credentials.",
  no_image_returned: "The provider returned no image.",
  invalid_request: "The provider could not use this request.",
  cancelled: "The job was cancelled.",
  internal: "Something went wrong inside Atelier.",
};

export function describeJobError(error) {
  const kind = error?.class ?? error?.error_class;
  return {
    title: JOB_ERROR_TITLES[kind] ?? "The job failed.",
    message: error?.message ?? "",
  };
}

export const STATUS_WORDS = {
  queued: "Waiting to start",
  enriching: "Preparing the prompt",
  dispatched: "Sent to the provider",
  generating: "Generating",
  landing: "Saving the images",
  completed: "Done",
  partial: "Partly done",
  failed: "Failed",
  cancelled: "Cancelled",
};

export const FINAL = new Set(["completed", "partial", "failed", "cancelled"]);

export function progressText(job) {
  const { total, landed, failed } = job.progress;
  const parts = [`${landed} of ${total} ${total === 1 ? "image" : "images"}`];
  if (failed) parts.push(`${failed} failed`);
  return parts.join(", ");
}

export function progressBar(job) {
  const { total, landed, failed } = job.progress;
  const done = FINAL.has(job.status) ? 1 : (landed + failed + 0.35) / Math.max(total, 1);
  const fill = h("span");
  // Through the CSSOM: the page's CSP allows no inline style attributes.
  fill.style.width = `${Math.round(Math.min(done, 1) * 100)}%`;
  return h(
    "div",
    {
      class: `progress ${FINAL.has(job.status) ? "" : "running"}`,
      role: "progressbar",
      "aria-valuemin": "0",
      "aria-valuemax": String(total),
      "aria-valuenow": String(landed),
    },
    fill,
  );
}

export function shorten(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}
