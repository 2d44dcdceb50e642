// The project's style card: the words and library images every generation of the project
// follows (`/v1/projects/{project}/style`, ADR 0024), shown with its version and edited in place.
// A save names the version it replaces; when someone saved in between, the API answers 409 and
// the card says so and offers the latest version.

import { request } from "./api.js";
import { fill, h, setError, shorten, show, toast } from "./ui.js";

const $ = (id) => document.getElementById(id);
export const MAX_STYLE_TEXT = 2000;
export const MAX_STYLE_IMAGES = 4;

export function createStyleCard(app) {
  const { state } = app;
  const card = $("project-style");
  let editing = false;
  let saving = false;
  let draft = { text: "", ids: [] };
  let stale = false;

  const url = () => `/v1/projects/${encodeURIComponent(state.project)}/style`;

  async function load() {
    try {
      state.style = await request(url());
    } catch (error) {
      state.style = null;
      setError($("style-error"), error);
    }
    app.emit("style");
  }

  function changedLine(style) {
    const when = style.updated_at ? ` on ${new Date(style.updated_at).toLocaleString()}` : "";
    const who = style.updated_by ? ` by ${style.updated_by}` : "";
    return `Version ${style.version}${who}${when}`;
  }

  function imageStrip(ids) {
    return ids.length
      ? h("ul", { class: "style-images" }, ids.map((id) => h("li", {}, app.blobImage(id, "thumbnail", { alt: "Style reference image" }))))
      : null;
  }

  function renderView() {
    const style = state.style;
    const none = !style || (style.version === 0 && !style.text && style.reference_media_ids.length === 0);
    fill(card,
      none
        ? h("p", { class: "muted" }, "No style yet. Its words and up to 4 library images go with every generation of this project.")
        : [
            style.text ? h("p", { class: "style-text", dataset: { testid: "style-text" } }, style.text) : h("p", { class: "muted" }, "No style words."),
            imageStrip(style.reference_media_ids),
          ],
      style && style.version > 0 ? h("p", { class: "hint", dataset: { testid: "style-version" } }, changedLine(style)) : null,
      h("p", { class: "error-text", id: "style-error", role: "alert", hidden: true }),
      h("div", { class: "style-actions" },
        h("button", { type: "button", class: "button small", onclick: startEditing, disabled: !style }, none ? "Set a style" : "Edit style"),
      ),
    );
  }

  function startEditing() {
    const style = state.style;
    draft = { text: style.text, ids: [...style.reference_media_ids] };
    stale = false;
    editing = true;
    render();
    $("style-text").focus();
  }

  function imagePicker() {
    const items = state.media;
    if (items.length === 0) return h("p", { class: "hint" }, "The library has no images yet: generate one to use it as a style reference.");
    const full = draft.ids.length >= MAX_STYLE_IMAGES;
    return h(
      "ul",
      { class: "style-picker", "aria-label": "Style reference images" },
      items.map((item, index) => {
        const chosen = draft.ids.includes(item.id);
        return h(
          "li",
          { dataset: { mediaId: item.id } },
          h(
            "label",
            { class: `style-pick ${chosen ? "chosen" : ""}` },
            h("input", {
              type: "checkbox",
              checked: chosen,
              disabled: !chosen && full,
              "aria-label": `Style reference ${index + 1}: ${shorten(item.prompt.split("\n")[0], 40)}`,
              onchange: (event) => {
                draft.ids = event.target.checked ? [...draft.ids, item.id] : draft.ids.filter((id) => id !== item.id);
                render();
              },
            }),
            app.blobImage(item.id, "thumbnail", { alt: "" }),
          ),
        );
      }),
    );
  }

  function renderEditor() {
    const style = state.style;
    const text = h("textarea", {
      id: "style-text",
      rows: 4,
      maxLength: MAX_STYLE_TEXT,
      placeholder: "e.g. Muted watercolour, soft light, ink outlines",
      oninput: (event) => {
        draft.text = event.target.value;
        counter.textContent = `${draft.text.length} of ${MAX_STYLE_TEXT} characters`;
      },
    });
    text.value = draft.text;
    const counter = h("span", {}, `${draft.text.length} of ${MAX_STYLE_TEXT} characters`);
    fill(card,
      h("label", { for: "style-text" }, "Style words"),
      text,
      h("p", { class: "hint" }, counter),
      h("p", { class: "field-label" }, `Reference images (${draft.ids.length} of at most ${MAX_STYLE_IMAGES}, from the library)`),
      imagePicker(),
      h("p", { class: "hint" }, `Editing version ${style.version}`),
      h("p", { class: "error-text", id: "style-error", role: "alert", hidden: true }),
      h(
        "div",
        { class: "style-actions" },
        h("button", { type: "button", class: "button small primary", onclick: save, disabled: saving }, saving ? "Saving…" : "Save style"),
        stale ? h("button", { type: "button", class: "button small", onclick: loadLatest }, "Load the latest version") : null,
        h("button", { type: "button", class: "button small ghost", onclick: () => { editing = false; render(); } }, "Cancel"),
      ),
    );
  }

  async function save() {
    saving = true;
    render();
    let failure = null;
    try {
      state.style = await request(url(), {
        method: "PUT",
        body: { text: draft.text, reference_media_ids: draft.ids, version: state.style.version },
      });
      editing = false;
      toast(`Style saved as version ${state.style.version}.`, "success");
      app.emit("style");
    } catch (error) {
      failure = error;
      stale = error.code === "style_version_stale";
    } finally {
      saving = false;
      render();
    }
    if (failure) setError($("style-error"), failure);
  }

  /** After a 409: the latest version in the form, the writer's words given up for it. */
  async function loadLatest() {
    await load();
    if (state.style) startEditing();
  }

  function render() {
    if (editing && state.style) renderEditor();
    else renderView();
  }

  app.on("style", () => {
    if (!editing) render();
  });
  app.on("media", () => {
    if (editing) render();
  });
  render();
  return { load };
}
