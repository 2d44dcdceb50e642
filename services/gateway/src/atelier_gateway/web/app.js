// The demo page: a project (cover, worldbuilding elements), its media library with the active
// jobs, and the "Generate image" dialog (dialog.js). Everything comes from the public API.

import {
  claimsOf,
  followEvents,
  mediaImage,
  onUnauthorized,
  request,
  takeTokenFromFragment,
  token,
} from "./api.js";
import { drawElement } from "./art.js";
import { createGenerateDialog } from "./dialog.js";
import { createStyleCard } from "./project-style.js";
import {
  FINAL,
  STATUS_WORDS,
  describeError,
  fill,
  h,
  progressBar,
  progressText,
  setError,
  shorten,
  show,
  toast,
} from "./ui.js";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const STAGE = { queued: 0, enriching: 1, dispatched: 2, generating: 3, landing: 4 };

/** What the page knows; `emit(topic)` re-renders the parts that show it. */
const state = {
  claims: null,
  project: null,
  demo: null,
  features: null,
  media: [],
  mediaTotal: 0,
  active: new Map(), // the project's active jobs, by id
  jobs: new Map(), // every job seen (the dialog shows finished ones too)
  assignments: { cover: null, elements: {} },
  style: null, // the project's style (project-style.js), as last read or saved
  stream: null,
};

const listeners = new Map();
function on(topic, listener) {
  if (!listeners.has(topic)) listeners.set(topic, new Set());
  listeners.get(topic).add(listener);
}
function emit(topic, payload) {
  listeners.get(topic)?.forEach((listener) => listener(payload));
}

// --- jobs ---------------------------------------------------------------------------------------

function position(job) {
  return [Date.parse(job.updated_at), FINAL.has(job.status) ? 5 : STAGE[job.status] ?? 0, job.progress.landed + job.progress.failed];
}

function isNewer(job, than) {
  if (!than) return true;
  const [a, b] = [position(job), position(than)];
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return a[i] > b[i];
  return false;
}

let mediaReload = 0;
function reloadMediaSoon() {
  clearTimeout(mediaReload);
  mediaReload = setTimeout(loadMedia, 150);
}

/** A job state from any source (SSE of the project or of one job, GET, cancel). */
function upsertJob(job) {
  if (job.project !== state.project) return;
  const before = state.jobs.get(job.id);
  if (!isNewer(job, before)) return;
  state.jobs.set(job.id, job);
  if (FINAL.has(job.status)) state.active.delete(job.id);
  else state.active.set(job.id, job);
  if (job.progress.landed > (before?.progress.landed ?? 0) || FINAL.has(job.status)) reloadMediaSoon();
  emit("jobs", job);
}

/** The active list from the API; a job we still show as active but that is no longer listed
 * ended while we were not listening (the stream was down), so its final state is read. */
async function loadJobs() {
  const { jobs } = await request(`/v1/projects/${state.project}/generations?active=true`);
  const listed = new Set(jobs.map((job) => job.id));
  jobs.forEach(upsertJob);
  for (const id of [...state.active.keys()].filter((id) => !listed.has(id))) {
    try {
      upsertJob(await request(`/v1/generations/${encodeURIComponent(id)}`));
    } catch {
      // gone or unreachable: keep it until the next resync
    }
  }
}

function followProject() {
  state.stream?.abort();
  state.stream = new AbortController();
  let broken = false;
  followEvents(`/v1/projects/${state.project}/generations/events`, upsertJob, {
    signal: state.stream.signal,
    onState: (s) => {
      $("active-jobs").classList.toggle("offline", s === "broken");
      if (s === "open" && broken) loadJobs().catch(() => {});
      broken = s === "broken";
    },
  });
}

// --- media and assignments ----------------------------------------------------------------------

async function loadMedia() {
  try {
    const page = await request(`/v1/projects/${state.project}/media?limit=200`);
    state.media = page.items;
    state.mediaTotal = page.total;
    setError($("library-error"), null);
  } catch (error) {
    setError($("library-error"), error);
  }
  emit("media");
}

async function loadAssignments() {
  try {
    const assignments = await request(`/v1/projects/${state.project}/assignments`);
    state.assignments = { cover: assignments.cover, elements: assignments.elements };
  } catch (error) {
    toast(describeError(error).message, "error");
  }
  emit("assignments");
}

function elementName(id) {
  return state.demo.elements.find((e) => e.id === id)?.name ?? id;
}

/** "Use this image": store the choice, then wait until the project shows it. */
async function assign(mediaId, target, elementId) {
  const what = target === "cover" ? "the project cover" : `the image of ${elementName(elementId)}`;
  try {
    await request(`/v1/media/${encodeURIComponent(mediaId)}/assign`, {
      method: "POST",
      body: target === "cover" ? { target } : { target, element_id: elementId },
    });
  } catch (error) {
    const { title, message } = describeError(error);
    toast(`${title} ${message}`, "error");
    return false;
  }
  // Media records the choice from the durable event a moment after the 202.
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    await loadAssignments();
    const current = target === "cover" ? state.assignments.cover : state.assignments.elements[elementId];
    if (current?.id === mediaId) {
      toast(`Done: this image is now ${what}.`, "success");
      return true;
    }
    await sleep(300);
  }
  toast(`Saved. It will show as ${what} in a moment.`);
  return true;
}

/** An element as the generation request's context wants it. */
function contextElement(element, send) {
  const assigned = state.assignments.elements[element.id];
  return {
    id: element.id,
    name: element.name,
    type: element.type,
    description: element.description,
    data: element.data,
    image: assigned ? { media_id: assigned.id } : { data_url: element.picture },
    send,
  };
}

// --- rendering ----------------------------------------------------------------------------------

function blobImage(mediaId, variant, attrs) {
  const img = h("img", { ...attrs, dataset: { mediaId } });
  mediaImage(mediaId, variant)
    .then((url) => {
      img.src = url;
    })
    .catch(() => img.classList.add("broken"));
  return img;
}

function elementPicture(element, attrs = {}) {
  const assigned = state.assignments.elements[element.id];
  if (assigned) return blobImage(assigned.id, "thumbnail", { alt: element.name, ...attrs });
  return h("img", { src: element.picture, alt: element.name, ...attrs });
}

function renderTopbar() {
  const projects = state.claims.projects ?? [];
  const project =
    projects.length > 1
      ? h(
          "select",
          {
            "aria-label": "Project",
            onchange: (event) => {
              sessionStorage.setItem("atelier.project", event.target.value);
              location.reload();
            },
          },
          projects.map((p) => h("option", { value: p, selected: p === state.project }, p)),
        )
      : h("span", { class: "pill" }, state.project);
  fill($("topbar-project"), project);
  fill($("topbar-user"),
    h("span", { class: "muted" }, `Signed in as ${state.claims.sub}`),
    h(
      "button",
      {
        type: "button",
        class: "button ghost small",
        onclick: () => {
          token.clear();
          location.reload();
        },
      },
      "Sign out",
    ),
  );
}

function renderProject() {
  const { demo, assignments } = state;
  document.title = `${demo.title} · Atelier`;
  $("project-id").textContent = `Project ${state.project}`;
  $("project-title").textContent = demo.title;
  $("project-description").textContent = demo.description;
  const cover = $("cover");
  if (assignments.cover) {
    fill(cover,
      blobImage(assignments.cover.id, "content", { alt: "Project cover", class: "cover-image" }),
      h("span", { class: "badge on-image" }, "Cover"),
    );
    cover.classList.remove("placeholder");
  } else {
    fill(cover,
      h("p", {}, h("strong", {}, "No cover yet"), h("br"), "Open an image and choose “Use as project cover”."),
    );
    cover.classList.add("placeholder");
  }
  fill($("elements"),
    ...demo.elements.map((element) =>
      h(
        "li",
        { class: "element card", dataset: { elementId: element.id } },
        elementPicture(element, { class: "element-image" }),
        h(
          "div",
          { class: "element-text" },
          h(
            "div",
            { class: "element-head" },
            h("strong", {}, element.name),
            h("span", { class: `pill ${element.type}` }, element.type),
            state.assignments.elements[element.id] ? h("span", { class: "pill assigned" }, "library image") : null,
          ),
          h("p", { class: "element-description" }, element.description),
          h(
            "dl",
            { class: "data" },
            Object.entries(element.data).map(([key, value]) => [h("dt", {}, key), h("dd", {}, String(value))]),
          ),
        ),
      ),
    ),
  );
}

function usedAs(mediaId) {
  const labels = [];
  if (state.assignments.cover?.id === mediaId) labels.push("Cover");
  for (const [elementId, item] of Object.entries(state.assignments.elements)) {
    if (item.id === mediaId) labels.push(elementName(elementId));
  }
  return labels;
}

function firstLine(prompt) {
  return prompt.split("\n")[0];
}

function renderMedia() {
  $("library-count").textContent =
    state.mediaTotal === 0 ? "" : `${state.mediaTotal} ${state.mediaTotal === 1 ? "image" : "images"}`;
  show($("media-empty"), state.media.length === 0);
  fill($("media-grid"),
    ...state.media.map((item) =>
      h(
        "li",
        { class: "tile", dataset: { mediaId: item.id } },
        h(
          "button",
          { type: "button", class: "tile-open", title: "Open", onclick: () => openViewer(item) },
          blobImage(item.id, "thumbnail", { alt: firstLine(item.prompt), loading: "lazy" }),
        ),
        h("div", { class: "tile-badges" }, usedAs(item.id).map((label) => h("span", { class: "badge" }, label))),
        h("p", { class: "tile-caption", title: item.prompt }, shorten(firstLine(item.prompt), 60)),
      ),
    ),
  );
}

function renderActiveJobs() {
  const box = $("active-jobs");
  const jobs = [...state.active.values()].sort((a, b) => a.created_at.localeCompare(b.created_at));
  fill(box,
    ...(jobs.length
      ? [
          h("h3", {}, `In progress (${jobs.length})`),
          h(
            "ul",
            { class: "job-list" },
            jobs.map((job) =>
              h(
                "li",
                {},
                h(
                  "button",
                  {
                    type: "button",
                    class: "job-chip",
                    dataset: { jobId: job.id, status: job.status },
                    title: "Show this job",
                    onclick: () => dialog.openJob(job.id),
                  },
                  h("span", { class: "spinner", "aria-hidden": "true" }),
                  h(
                    "span",
                    { class: "job-chip-text" },
                    h("strong", {}, STATUS_WORDS[job.status] ?? job.status),
                    h("span", { class: "muted" }, ` · ${progressText(job)}`),
                    h("span", { class: "job-chip-prompt" }, shorten(job.prompt, 48)),
                  ),
                  progressBar(job),
                ),
              ),
            ),
          ),
        ]
      : []),
  );
  show(box, jobs.length > 0);
}

function renderFeatures() {
  const features = state.features;
  const notice = $("generation-notice");
  if (features && !features.enabled) {
    fill(notice,
      h("strong", {}, "Image generation is turned off."),
      " ",
      features.reason || "An admin has paused it. Your library and running jobs are still here.",
    );
    show(notice, true);
  } else if (features && features.profiles.length === 0) {
    fill(notice, h("strong", {}, "No model profile is available."), " An admin has to add or enable one.");
    show(notice, true);
  } else {
    show(notice, false);
  }
}

// --- the image viewer ---------------------------------------------------------------------------

function assignControls(mediaId, { compact = false } = {}) {
  const select = h(
    "select",
    { "aria-label": "Element" },
    state.demo.elements.map((element) => h("option", { value: element.id }, element.name)),
  );
  // `target()` is read on click: the element chosen then, not when the button was made.
  const assignButton = (label, target) =>
    h(
      "button",
      {
        type: "button",
        class: "button small",
        onclick: async (event) => {
          const button = event.currentTarget;
          button.disabled = true;
          await assign(mediaId, ...target());
          button.disabled = false;
        },
      },
      label,
    );
  return h(
    "div",
    { class: `assign ${compact ? "compact" : ""}` },
    assignButton("Use as cover", () => ["cover"]),
    h(
      "span",
      { class: "assign-element" },
      select,
      assignButton("Use for element", () => ["element", select.value]),
    ),
  );
}

function openViewer(item) {
  const viewer = $("viewer-dialog");
  $("viewer-title").textContent = shorten(firstLine(item.prompt), 80);
  const download = h("a", { class: "button ghost small", download: `${item.id}.${item.content_type.split("/")[1]}` }, "Download original");
  mediaImage(item.id, "content").then((url) => {
    download.href = url;
  });
  fill($("viewer-body"),
    blobImage(item.id, "content", { alt: firstLine(item.prompt), class: "viewer-image" }),
    h(
      "div",
      { class: "viewer-side" },
      h("h3", {}, "Use this image"),
      assignControls(item.id),
      h("h3", {}, "Prompt as sent"),
      h("pre", { class: "sent-prompt" }, item.revised_prompt ? `${item.prompt}\n\nRevised by the model:\n${item.revised_prompt}` : item.prompt),
      h(
        "dl",
        { class: "data" },
        h("dt", {}, "model"),
        h("dd", {}, `${item.model} (${item.provider})`),
        h("dt", {}, "size"),
        h("dd", {}, `${item.width}×${item.height}`),
        item.seed !== null ? [h("dt", {}, "seed"), h("dd", {}, String(item.seed))] : null,
        h("dt", {}, "made"),
        h("dd", {}, new Date(item.created_at).toLocaleString()),
      ),
      download,
    ),
  );
  viewer.showModal();
}

// --- start --------------------------------------------------------------------------------------

let dialog = null;

function showSignIn(error) {
  show($("workspace"), false);
  show($("signin"), true);
  state.stream?.abort();
  const box = $("signin-error");
  if (error) {
    const { title, message } = describeError(error);
    box.textContent = `${title} ${message}`;
    show(box, true);
  } else {
    show(box, false);
  }
  $("signin-token").focus();
}

async function loadDemo() {
  const demo = await (await fetch("/ui/demo-project.json", { cache: "no-cache" })).json();
  for (const element of demo.elements) element.picture = drawElement(element);
  return demo;
}

async function enter() {
  const claims = claimsOf(token.get() ?? "");
  if (!claims) {
    showSignIn({ code: "unauthorized", message: "That does not look like a token (three parts separated by dots)." });
    return;
  }
  const projects = claims.projects ?? [];
  if (projects.length === 0) {
    showSignIn({ code: "unauthorized", message: "This token grants no project." });
    return;
  }
  state.claims = claims;
  const remembered = sessionStorage.getItem("atelier.project");
  state.project = projects.includes(remembered) ? remembered : projects[0];
  try {
    state.features = await request("/v1/features");
  } catch (error) {
    if (error.status === 401) return; // the sign-in form is showing the reason
    state.features = null;
    toast(describeError(error).message, "error");
  }
  show($("signin"), false);
  show($("workspace"), true);
  state.demo = await loadDemo();
  renderTopbar();
  on("assignments", () => {
    renderProject();
    renderMedia();
  });
  on("media", renderMedia);
  on("jobs", renderActiveJobs);
  on("features", renderFeatures);
  renderProject();
  renderFeatures();
  const styleCard = createStyleCard({ state, on, emit, blobImage });
  dialog = createGenerateDialog({
    state,
    on,
    emit,
    upsertJob,
    assign,
    assignControls,
    contextElement,
    elementPicture,
  });
  $("open-generate").addEventListener("click", () => dialog.open());
  for (const close of document.querySelectorAll("[data-close]")) {
    close.addEventListener("click", () => close.closest("dialog").close());
  }
  await Promise.all([
    loadMedia(),
    loadAssignments(),
    styleCard.load(),
    loadJobs().catch((e) => toast(describeError(e).message, "error")),
  ]);
  followProject();
  document.body.dataset.ready = "true";
}

function start() {
  takeTokenFromFragment();
  onUnauthorized((error) => showSignIn(error));
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token.set($("signin-token").value);
    location.reload(); // start clean with the new token
  });
  if (token.get()) enter();
  else showSignIn();
}

start();
