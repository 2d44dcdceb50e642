// The "Generate image" dialog: 1 context (elements and what of each is sent), 2 prompt (profile,
// prompt, size, count, options, and the exact prompt the model will get), 3 generate (live
// progress; closing the dialog leaves the job running, reopening shows it again).

import { followEvents, mediaImage, request } from "./api.js";
import {
  FINAL,
  STATUS_WORDS,
  describeError,
  describeJobError,
  fill,
  h,
  progressBar,
  progressText,
  setError,
  show,
} from "./ui.js";

const $ = (id) => document.getElementById(id);
const STEPS = ["context", "prompt", "generate"];

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `1.5 credits`: credits are kept in thousandths, so at most three decimals. */
function credits(amount) {
  const n = Number(amount.toFixed(3));
  return `${n} ${n === 1 ? "credit" : "credits"}`;
}

function money({ amount, currency }) {
  return new Intl.NumberFormat("en", { style: "currency", currency, minimumFractionDigits: 2, maximumFractionDigits: 4 }).format(amount);
}

/** The prompt as sent, with the project style's words marked where they went. */
function sentPrompt(prompt, style, attrs = {}) {
  const { prompt_start: start, prompt_end: end } = style ?? {};
  const marked = style?.applied && start != null && end != null && end <= prompt.length;
  return h(
    "pre",
    { class: "sent-prompt", ...attrs },
    marked
      ? [prompt.slice(0, start), h("mark", { class: "style-words", title: `Project style, version ${style.version}` }, prompt.slice(start, end)), prompt.slice(end)]
      : prompt,
  );
}

/** Where the project style went, in one line (the preview's and the job's `style`). */
function styleLine(style) {
  if (!style || (style.version === 0 && !style.applied)) return null;
  if (!style.applied) return h("p", { class: "hint style-line" }, style.note ?? "The project style was not applied.");
  const images = style.reference_media_ids.length;
  return h(
    "p",
    { class: "hint style-line" },
    h("mark", { class: "style-words" }, `Project style, version ${style.version}`),
    images ? ` applied, with ${images} reference ${images === 1 ? "image" : "images"}.` : " applied.",
  );
}

function humanize(name) {
  const words = name.replace(/_s$/, " (s)").replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function createGenerateDialog(app) {
  const { state } = app;
  const dialog = $("generate-dialog");
  const jobKey = `atelier.dialogJob.${state.project}`;
  // Element id → what is sent of it; an element in the map is picked.
  const picks = new Map();
  let step = "context";
  let jobId = sessionStorage.getItem(jobKey);
  let following = null;
  let idempotencyKey = newKey();
  let previewTimer = 0;
  let previewAbort = null;
  let submitting = false;

  // --- step 1: context ------------------------------------------------------------------------

  function renderContext() {
    fill($("pick-list"),
      ...state.demo.elements.map((element) => {
        const send = picks.get(element.id);
        const toggles = ["image", "description", "data"].map((what) =>
          h(
            "label",
            { class: "toggle" },
            h("input", {
              type: "checkbox",
              checked: send ? send[what] : true,
              disabled: !send,
              "aria-label": `Send ${what} of ${element.name}`,
              onchange: (event) => {
                picks.get(element.id)[what] = event.target.checked;
              },
            }),
            humanize(what),
          ),
        );
        return h(
          "li",
          { class: `pick ${send ? "picked" : ""}`, dataset: { elementId: element.id } },
          h(
            "label",
            { class: "pick-main" },
            h("input", {
              type: "checkbox",
              checked: Boolean(send),
              "aria-label": `Use ${element.name}`,
              onchange: (event) => {
                if (event.target.checked) picks.set(element.id, { image: true, description: true, data: true });
                else picks.delete(element.id);
                renderContext();
                renderActions();
              },
            }),
            app.elementPicture(element, { class: "pick-image" }),
            h("span", { class: "pick-name" }, h("strong", {}, element.name), h("small", { class: "muted" }, element.type)),
          ),
          h("div", { class: "toggles", role: "group", "aria-label": `What to send of ${element.name}` }, toggles),
        );
      }),
    );
  }

  // Pictures the request would carry (data URLs) beyond what the profile takes are left out
  // here, with the reason shown in the preview: the gateway refuses a request that carries more
  // than the profile can use.
  let leftOut = [];

  function contextElements() {
    const chosen = profile();
    let room = chosen?.max_reference_images ?? 0;
    leftOut = [];
    return state.demo.elements
      .filter((e) => picks.has(e.id))
      .map((e) => {
        const element = app.contextElement(e, { ...picks.get(e.id) });
        if (element.image?.data_url && element.send.image) {
          if (room > 0) {
            room -= 1;
          } else {
            element.image = null;
            const max = chosen?.max_reference_images ?? 0;
            const reason = max > 0
              ? `Over the maximum: ${chosen.name} takes at most ${max} reference ${max === 1 ? "image" : "images"}.`
              : `${chosen?.name ?? "This profile"} takes no reference images.`;
            leftOut.push({ element_id: e.id, reason });
          }
        }
        return element;
      });
  }

  // --- step 2: prompt -------------------------------------------------------------------------

  function profile() {
    return state.features?.profiles.find((p) => p.id === $("profile").value) ?? null;
  }

  function renderProfiles() {
    const select = $("profile");
    const previous = select.value;
    const profiles = state.features?.profiles ?? [];
    fill(select, ...profiles.map((p) => h("option", { value: p.id }, `${p.name} — ${p.model}`)));
    if (profiles.some((p) => p.id === previous)) select.value = previous;
    renderProfileFields();
  }

  function renderProfileFields() {
    const chosen = profile();
    const size = $("size");
    const count = $("count");
    const options = $("options");
    if (!chosen) {
      fill(size);
      fill(count);
      fill(options);
      $("profile-hint").textContent = "";
      return;
    }
    $("profile-hint").textContent =
      chosen.max_reference_images > 0
        ? `Takes up to ${chosen.max_reference_images} reference ${chosen.max_reference_images === 1 ? "image" : "images"}.`
        : "Takes no reference images: element pictures are described, not sent.";
    $("prompt").maxLength = chosen.prompt_max_length;
    const previousSize = size.value;
    fill(size,
      ...chosen.sizes.map((s) => h("option", { value: s }, s.replace("x", " × ") + (s === chosen.default_size ? " (default)" : ""))),
    );
    size.value = chosen.sizes.includes(previousSize) ? previousSize : chosen.default_size;
    const previousCount = Number(count.querySelector("input:checked")?.value ?? 1);
    const pickedCount = chosen.counts.includes(previousCount) ? previousCount : chosen.counts[0];
    fill(count,
      ...[1, 2, 4].map((n) =>
        h(
          "label",
          { class: `segment ${chosen.counts.includes(n) ? "" : "disabled"}` },
          h("input", {
            type: "radio",
            name: "count",
            value: String(n),
            checked: n === pickedCount,
            disabled: !chosen.counts.includes(n),
            "aria-label": `${n} ${n === 1 ? "image" : "images"}`,
            onchange: () => {
              schedulePreview();
              renderActions();
            },
          }),
          h("span", {}, String(n)),
        ),
      ),
    );
    fill(options, ...chosen.options.map(optionField));
    show($("options-box"), chosen.options.length > 0);
  }

  function optionField(spec) {
    const id = `option-${spec.name}`;
    const common = { id, name: spec.name, dataset: { kind: spec.kind }, oninput: schedulePreview };
    let input;
    if (spec.kind === "enum") {
      input = h(
        "select",
        common,
        h("option", { value: "" }, spec.default != null ? `Default (${spec.default})` : "Default"),
        (spec.values ?? []).map((v) => h("option", { value: v }, v)),
      );
    } else if (spec.kind === "boolean") {
      input = h("input", { ...common, type: "checkbox", checked: Boolean(spec.default) });
    } else if (spec.kind === "string") {
      input = h("input", { ...common, type: "text", maxLength: spec.max_length ?? undefined, placeholder: spec.default ?? "" });
    } else {
      input = h("input", {
        ...common,
        type: "number",
        min: spec.minimum ?? undefined,
        max: spec.maximum ?? undefined,
        step: spec.kind === "integer" ? "1" : "any",
        placeholder: spec.default != null ? `Default: ${spec.default}` : "Any",
      });
    }
    return h(
      "div",
      { class: `option ${spec.kind}` },
      h("label", { for: id }, humanize(spec.name)),
      input,
      spec.description ? h("p", { class: "hint" }, spec.description) : null,
    );
  }

  function readOptions() {
    const values = {};
    for (const input of $("options").querySelectorAll("[name]")) {
      const kind = input.dataset.kind;
      if (kind === "boolean") values[input.name] = input.checked;
      else if (input.value === "") continue; // the profile's default
      else if (kind === "integer" || kind === "number") values[input.name] = Number(input.value);
      else values[input.name] = input.value;
    }
    return values;
  }

  function selectedCount() {
    return Number($("count").querySelector("input:checked")?.value ?? 1);
  }

  function requestBody() {
    return {
      project: state.project,
      profile_id: $("profile").value,
      prompt: $("prompt").value,
      size: $("size").value || null,
      count: selectedCount(),
      options: readOptions(),
      context: {
        elements: contextElements(),
        project_title: state.demo.title,
        project_description: state.demo.description,
      },
      target: { kind: "media" },
      apply_style: $("apply-style").checked,
    };
  }

  function renderApplyStyle() {
    const style = state.style;
    const has = Boolean(style && style.version > 0 && (style.text || style.reference_media_ids.length));
    show($("apply-style-box"), has);
    if (!has) $("apply-style").checked = true; // nothing to leave out; a new style applies by default
    $("apply-style-label").textContent = has ? `Apply the project style (version ${style.version})` : "Apply the project style";
  }

  function schedulePreview() {
    $("prompt-count").textContent = String($("prompt").value.length);
    clearTimeout(previewTimer);
    previewTimer = setTimeout(updatePreview, 350);
  }

  async function updatePreview() {
    const box = $("preview");
    previewAbort?.abort();
    if (step !== "prompt") return;
    if (!profile()) {
      fill(box, h("p", { class: "muted" }, "No model profile is available."));
      return;
    }
    if (!$("prompt").value.trim()) {
      fill(box, h("p", { class: "muted" }, "Write a prompt to see exactly what the model will get."));
      fill($("estimate"), h("p", { class: "muted" }, "Write a prompt to see what it will cost."));
      return;
    }
    previewAbort = new AbortController();
    const body = requestBody();
    updateEstimate(body, previewAbort.signal);
    await fillWhenLoaded(box, async () => {
      const preview = await request("/v1/context/preview", {
        method: "POST",
        body,
        signal: previewAbort.signal,
      });
      const name = (id) => (id === "project-style" ? "Project style" : state.demo.elements.find((e) => e.id === id)?.name ?? id);
      const excluded = [...leftOut, ...preview.excluded_images];
      return [
        sentPrompt(preview.prompt, preview.style, { dataset: { testid: "preview-prompt" } }),
        styleLine(preview.style),
        preview.negative_prompt ? h("p", {}, h("strong", {}, "Negative prompt: "), preview.negative_prompt) : null,
        preview.reference_images.length
          ? h(
              "div",
              {},
              h("h4", {}, "Reference images sent"),
              h(
                "ul",
                { class: "plain" },
                preview.reference_images.map((r) => h("li", {}, `${name(r.element_id)}: ${r.width}×${r.height} ${r.content_type}`)),
              ),
            )
          : null,
        excluded.length
          ? h(
              "div",
              {},
              h("h4", {}, "Pictures not sent"),
              h("ul", { class: "plain" }, excluded.map((x) => h("li", {}, `${name(x.element_id)}: ${x.reason}`))),
            )
          : null,
        preview.notes.length ? h("div", {}, h("h4", {}, "Notes"), h("ul", { class: "plain" }, preview.notes.map((n) => h("li", {}, n)))) : null,
      ];
    });
  }

  /** What submitting `body` would reserve: credits, money when the profile states a price. */
  async function updateEstimate(body, signal) {
    await fillWhenLoaded($("estimate"), async () => {
      const estimate = await request("/v1/generations/estimate", { method: "POST", body, signal });
      const n = estimate.count;
      return [
        h(
          "p",
          { class: "estimate-credits" },
          h("strong", {}, credits(estimate.credits)),
          ` for ${n} ${n === 1 ? "image" : "images"} (${credits(estimate.credits_per_image)} each)`,
        ),
        estimate.money
          ? h("p", { class: "estimate-money" }, `About ${money(estimate.money)} at the provider's price`)
          : h("p", { class: "hint" }, "The provider's price in money is not known for this profile."),
        estimate.limit != null
          ? h(
              "p",
              { class: "hint" },
              `${credits(estimate.remaining ?? 0)} of ${estimate.limit} left this period`,
              estimate.resets_at ? `, renews ${new Date(estimate.resets_at).toLocaleDateString()}` : "",
              ".",
            )
          : h("p", { class: "hint" }, "No credit limit."),
        estimate.fits
          ? h("p", { class: "hint" }, "Only images that land are charged; the rest is given back.")
          : h("p", { class: "error-text" }, h("strong", {}, "Not enough credits left."), " Generating now would be refused."),
      ];
    });
  }

  /** `box` filled with what `load` renders, or with the error; an aborted load leaves it. */
  async function fillWhenLoaded(box, load) {
    box.classList.add("loading");
    try {
      fill(box, ...(await load()));
    } catch (error) {
      if (error.name === "AbortError") return;
      const { title, message } = describeError(error);
      fill(box, h("p", { class: "error-text" }, h("strong", {}, title), " ", message));
    } finally {
      box.classList.remove("loading");
    }
  }

  // --- step 3: the job ------------------------------------------------------------------------

  function follow(id) {
    following?.abort();
    const controller = new AbortController();
    following = controller;
    followEvents(
      `/v1/generations/${encodeURIComponent(id)}/events`,
      (job) => {
        app.upsertJob(job);
        if (FINAL.has(job.status)) controller.abort(); // the server closes it too; don't reopen
      },
      { signal: controller.signal },
    );
  }

  async function showJob(id) {
    jobId = id;
    sessionStorage.setItem(jobKey, id);
    if (!state.jobs.has(id)) {
      try {
        app.upsertJob(await request(`/v1/generations/${encodeURIComponent(id)}`));
      } catch (error) {
        if (error.status === 404) {
          forgetJob();
          return;
        }
      }
    }
    if (!FINAL.has(state.jobs.get(id)?.status)) follow(id);
    setStep("generate");
  }

  function forgetJob() {
    following?.abort();
    jobId = null;
    sessionStorage.removeItem(jobKey);
  }

  function renderJob() {
    const view = $("job-view");
    const job = jobId ? state.jobs.get(jobId) : null;
    if (!job) {
      fill(view, h("p", { class: "muted" }, jobId ? "Starting…" : "Nothing generated yet."));
      return;
    }
    const final = FINAL.has(job.status);
    const error = job.error ? describeJobError(job.error) : null;
    const pending = final ? 0 : Math.max(job.progress.total - job.images.length - job.progress.failed, 0);
    fill(view,
      h(
        "div",
        { class: `job-status ${job.status}`, dataset: { jobId: job.id, status: job.status } },
        h(
          "div",
          { class: "job-status-line" },
          final ? null : h("span", { class: "spinner", "aria-hidden": "true" }),
          h("strong", { class: "job-status-word" }, STATUS_WORDS[job.status] ?? job.status),
          h("span", { class: "muted" }, ` · ${progressText(job)} · ${job.profile_name} · ${job.size}`),
        ),
        progressBar(job),
        final ? null : h("p", { class: "hint" }, "You can close this window: the job keeps running and its images land in the media library."),
      ),
      error && job.status !== "cancelled"
        ? h("div", { class: "error-box", role: "alert" }, h("strong", {}, error.title), " ", error.message)
        : null,
      job.status === "cancelled" ? h("p", { class: "muted" }, "Cancelled. Images that were already made stay in the library.") : null,
      h(
        "ul",
        { class: "results" },
        job.images.map((image) =>
          h(
            "li",
            { class: "result", dataset: { mediaId: image.media_id } },
            resultImage(image.media_id),
            app.assignControls(image.media_id, { compact: true }),
          ),
        ),
        Array.from({ length: pending }, () => h("li", { class: "result pending", "aria-hidden": "true" }, h("div", { class: "skeleton" }))),
      ),
      job.receipt ? receiptView(job.receipt) : null,
      h(
        "details",
        { class: "sent", open: job.images.length === 0 },
        h("summary", {}, "Prompt as sent"),
        sentPrompt(job.assembled_prompt ?? job.prompt, job.style),
        styleLine(job.style),
      ),
    );
  }

  /** A final job's receipt: each image charged or not and why, then the totals. */
  function receiptView(receipt) {
    return h(
      "section",
      { class: "receipt", dataset: { testid: "receipt" }, "aria-label": "Receipt" },
      h("h4", {}, "Receipt"),
      h(
        "table",
        { class: "receipt-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Image"), h("th", {}, "Charged"), h("th", {}, "Why"))),
        h(
          "tbody",
          {},
          receipt.images.map((line) =>
            h(
              "tr",
              { dataset: { charged: String(line.charged), outcome: line.outcome } },
              h("td", {}, String(line.index + 1)),
              h("td", {}, line.charged ? credits(line.credits) : "not charged"),
              h("td", {}, line.reason),
            ),
          ),
        ),
      ),
      h(
        "p",
        { class: "receipt-total", dataset: { testid: "receipt-total" } },
        h("strong", {}, `Charged ${credits(receipt.credits_charged)}`),
        ` for ${receipt.charged_images} of ${receipt.images.length} ${receipt.images.length === 1 ? "image" : "images"}; `,
        `${credits(receipt.credits_reserved)} reserved, ${credits(receipt.credits_refunded)} given back.`,
      ),
    );
  }

  function resultImage(mediaId) {
    const img = h("img", { alt: "Generated image", dataset: { mediaId } });
    mediaImage(mediaId, "thumbnail").then((url) => {
      img.src = url;
    });
    return img;
  }

  async function generate() {
    if (submitting) return;
    submitting = true;
    setError($("dialog-error"), null);
    renderActions();
    try {
      const accepted = await request("/v1/generations", {
        method: "POST",
        body: requestBody(),
        headers: { "Idempotency-Key": idempotencyKey },
      });
      idempotencyKey = newKey(); // the next click is a new generation
      await showJob(accepted.id);
    } catch (error) {
      setError($("dialog-error"), error);
    } finally {
      submitting = false;
      renderActions();
    }
  }

  async function cancelJob() {
    try {
      app.upsertJob(await request(`/v1/generations/${encodeURIComponent(jobId)}/cancel`, { method: "POST" }));
    } catch (error) {
      setError($("dialog-error"), error);
    }
  }

  // --- frame ----------------------------------------------------------------------------------

  function button(label, onclick, { primary = false, disabled = false, testid } = {}) {
    return h("button", { type: "button", class: `button ${primary ? "primary" : "ghost"}`, onclick, disabled, dataset: testid ? { testid } : undefined }, label);
  }

  function renderActions() {
    const actions = $("dialog-actions");
    const footnote = $("dialog-footnote");
    const features = state.features;
    const off = features && !features.enabled;
    footnote.textContent = "";
    if (step === "context") {
      footnote.textContent = picks.size ? `${picks.size} ${picks.size === 1 ? "element" : "elements"} picked` : "No elements picked: the prompt goes alone.";
      fill(actions, button("Close", () => dialog.close()), button("Next: prompt", () => setStep("prompt"), { primary: true }));
    } else if (step === "prompt") {
      const count = selectedCount();
      fill(actions,
        button("Back", () => setStep("context")),
        button(submitting ? "Starting…" : `Generate ${count} ${count === 1 ? "image" : "images"}`, generate, {
          primary: true,
          disabled: submitting || off || !profile(),
        }),
      );
      if (off) {
        setError($("dialog-error"), {
          code: "generation_disabled",
          message: features.reason || "An admin has paused it.",
        });
      }
    } else {
      const job = jobId ? state.jobs.get(jobId) : null;
      const running = job && !FINAL.has(job.status);
      fill(actions,
        running ? button("Cancel job", cancelJob) : button("New image", () => { forgetJob(); setStep("prompt"); }),
        button(running ? "Close (keeps running)" : "Close", () => dialog.close(), { primary: true }),
      );
    }
  }

  function setStep(next) {
    step = next;
    for (const panel of dialog.querySelectorAll("[data-panel]")) show(panel, panel.dataset.panel === step);
    for (const stepButton of dialog.querySelectorAll("[data-step]")) {
      const index = STEPS.indexOf(stepButton.dataset.step);
      stepButton.setAttribute("aria-current", stepButton.dataset.step === step ? "step" : "false");
      stepButton.classList.toggle("done", index < STEPS.indexOf(step));
      stepButton.disabled = stepButton.dataset.step === "generate" && !jobId;
    }
    if (step !== "prompt" || !(state.features && !state.features.enabled)) setError($("dialog-error"), null);
    if (step === "context") renderContext();
    if (step === "prompt") {
      schedulePreview();
      $("prompt").focus();
    }
    if (step === "generate") renderJob();
    renderActions();
  }

  async function refreshFeatures() {
    try {
      state.features = await request("/v1/features");
      app.emit("features");
    } catch (error) {
      setError($("dialog-error"), error);
    }
    renderProfiles();
    if (step === "prompt") schedulePreview();
    renderActions();
  }

  // Wiring.
  for (const stepButton of dialog.querySelectorAll("[data-step]")) {
    stepButton.addEventListener("click", () => setStep(stepButton.dataset.step));
  }
  $("profile").addEventListener("change", () => {
    renderProfileFields();
    schedulePreview();
    renderActions();
  });
  $("prompt").addEventListener("input", schedulePreview);
  $("size").addEventListener("change", schedulePreview);
  $("apply-style").addEventListener("change", schedulePreview);
  app.on("style", () => {
    renderApplyStyle();
    if (dialog.open && step === "prompt") schedulePreview();
  });
  for (const toggleBox of [$("pick-list")]) toggleBox.addEventListener("change", schedulePreview);
  app.on("jobs", (job) => {
    if (job.id === jobId && step === "generate") {
      renderJob();
      renderActions();
    }
  });
  app.on("assignments", () => {
    if (dialog.open && step === "context") renderContext();
  });
  renderProfiles();
  renderApplyStyle();

  return {
    /** Open where the writer left off: the job if there is one, else the form. */
    open() {
      dialog.showModal();
      if (jobId) showJob(jobId);
      else setStep(step === "generate" ? "context" : step);
      refreshFeatures();
    },
    /** Open on a job (from the active list). */
    openJob(id) {
      dialog.showModal();
      showJob(id);
    },
  };
}
