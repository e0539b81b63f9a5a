// What every tab of the page shares: API URLs, the key, error text, small DOM helpers and the
// photo pickers. API URLs are relative to the page, so the page works behind a route prefix
// (/s3/ calls /s3/v1/...).

export const BASE = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
export const KEY_STORAGE = "imagegen-api-key";
export const $ = (id) => document.getElementById(id);
// The run in flight (one at a time, shown in the shared progress box) and the server's /info.
export const state = { taskId: null, running: false, info: null };

export function api(path) {
  return BASE + path;
}

export function authHeaders() {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: "Bearer " + key } : {};
}

// The API's error as "ERROR_CODE: message" (the app's shape), or FastAPI's / OpenAI's shapes.
export async function errorText(response) {
  try {
    const body = await response.json();
    if (body.message) return `${body.error_code || response.status}: ${body.message}`;
    if (body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    if (body.error && body.error.message) return body.error.message;
  } catch (_) {
    // not JSON
  }
  return `HTTP ${response.status}`;
}

export function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = !message;
}

// A number field's value, or undefined when it is left empty.
export function numberOf(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

// A size <select> (class "size"): "" for the preset's default, else "WxH".
export function sizeOf(id) {
  const value = $(id).value;
  if (!value) return {};
  const [width, height] = value.split("x").map(Number);
  return { width, height };
}

// An element with properties and children: el("p", { className: "x" }, "text", child).
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

// A result's key fields as a definition list; fields without a value are left out.
export function fieldList(pairs) {
  const list = el("dl", { className: "fields" });
  for (const [name, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    list.append(el("dt", {}, name), el("dd", {}, typeof value === "object" ? JSON.stringify(value) : String(value)));
  }
  return list;
}

// An image the API made: with API keys on, /files needs the key, so it is fetched with it.
export async function imageSource(url) {
  const headers = authHeaders();
  if (!headers.Authorization) return url;
  const response = await fetch(url, { headers });
  if (!response.ok) throw new Error(await errorText(response));
  return URL.createObjectURL(await response.blob());
}

// A figure of a generated image (class "generated"), its caption under it.
export async function imageFigure(url, alt, caption) {
  const img = el("img", { className: "generated", alt });
  try {
    img.src = await imageSource(url);
  } catch (error) {
    showError("Could not load the image: " + error.message);
  }
  return el("figure", {}, img, el("figcaption", { textContent: caption }));
}

// A photo chosen by upload or from the shipped samples: `input` a file input's id, `samples` the
// id of a box of .sample buttons (or null), `choice` the id of the line saying which.
export function photoPicker(input, samples, choice) {
  const picker = { photo: null };
  const buttons = samples ? [...$(samples).querySelectorAll(".sample")] : [];
  const choose = (blob, name, label) => {
    if (picker.photo && picker.photo.url) URL.revokeObjectURL(picker.photo.url);
    picker.photo = { blob, name, url: URL.createObjectURL(blob) };
    if (choice) $(choice).textContent = "Photo: " + label;
  };
  for (const button of buttons) {
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", async () => {
      for (const other of buttons) other.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-pressed", "true");
      $(input).value = "";
      const name = button.dataset.sample;
      const response = await fetch(api("ui/samples/" + name));
      if (!response.ok) return showError("Could not load the sample: " + (await errorText(response)));
      choose(await response.blob(), name, "sample " + name);
    });
  }
  $(input).addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    for (const other of buttons) other.setAttribute("aria-pressed", "false");
    choose(file, file.name, file.name);
  });
  return picker;
}

// A tab's result box (a <section>) filled with a heading and `children`, and shown.
export function showResult(id, ...children) {
  const section = $(id);
  section.replaceChildren(el("h2", { textContent: "Result" }), ...children);
  section.hidden = false;
}

// A cost in US dollars as the API gives it (a number), or nothing.
export function usd(cost) {
  return cost === null || cost === undefined ? undefined : `$${Number(cost).toFixed(4)}`;
}

// --- a tab's form, built from its spec -------------------------------------------------------------
// A field is [id, label, value, props]: the value's type picks the control (a string: a text box,
// several lines: a text area; a number: a number box; true/false: a check box; null: props.type,
// e.g. a file), props.options ([value, text] pairs) makes a <select>, other props go on the control.

function control([id, , value, props = {}]) {
  const { options, ...rest } = props;
  if (options) {
    const select = el("select", { id, ...rest }, ...options.map(([key, text]) => new Option(text, key)));
    select.value = value;
    return select;
  }
  if (typeof value === "string" && value.includes("\n")) return el("textarea", { id, value, rows: 4, ...rest });
  const type = typeof value === "boolean" ? "checkbox" : typeof value === "number" ? "number" : "text";
  const input = el("input", { id, type, ...rest });
  if (type === "checkbox") input.checked = value;
  else if (value !== null && value !== undefined) input.value = value;
  return input;
}

function fieldNodes(spec) {
  const input = control(spec);
  if (input.type === "checkbox") return [el("label", { className: "check" }, input, " " + spec[1])];
  return [el("label", { htmlFor: input.id, textContent: spec[1] }), input];
}

// A fieldset: its legend, then the fields (arrays) and ready-made nodes (a photo picker's).
export function fieldset(legend, ...fields) {
  const nodes = fields.flatMap((field) => (Array.isArray(field) ? fieldNodes(field) : [field]));
  return el("fieldset", {}, el("legend", { textContent: legend }), ...nodes);
}

// The settings every generating tab has: diffusion steps (`p-steps`, few by default: a first try)
// and the size (`p-size`, "" for the preset's default; the choices come from /info).
export function settings(prefix, ...fields) {
  return fieldset(
    "Settings",
    [`${prefix}-steps`, "Diffusion steps", 4, { className: "steps", min: 1 }],
    [`${prefix}-size`, "Size", "", { className: "size", options: [["", "preset default"]] }],
    ...fields,
  );
}

// The fields of a photo: `p-photo` (an upload) and `p-samples` (the desk tab's samples again),
// `p-photo-choice` saying which; photoPicker(`p-photo`, `p-samples`, `p-photo-choice`) reads it.
export function photoFields(prefix) {
  const accept = "image/png,image/jpeg,image/webp,image/gif,image/bmp";
  const samples = [...$("samples").children].map((button) => button.cloneNode(true));
  return [
    [`${prefix}-photo`, "Upload a photo", null, { type: "file", accept }],
    el("p", { textContent: "or pick a sample:" }),
    el("div", { id: `${prefix}-samples`, className: "samples" }, ...samples),
    el("p", { id: `${prefix}-photo-choice`, textContent: "No photo chosen." }),
  ];
}

// A tab's panel from its spec: {product, about, submit, fieldsets}: the form (`product-form`,
// with the submit button `product-submit`) and its result box (`product-result`).
export function buildPanel(tab) {
  const form = el(
    "form",
    { id: tab.form, noValidate: true },
    el("p", { className: "about", textContent: tab.about }),
    ...tab.fieldsets(),
    el("button", { type: "submit", id: `${tab.product}-submit`, className: "submit", textContent: tab.submit }),
  );
  const result = el("section", { id: tab.result, className: "result", hidden: true });
  result.setAttribute("aria-label", tab.label + ": result");
  $("panel-" + tab.product).append(form, result);
}

// Which backend made it, and its model when the result names one.
export function backendText(result) {
  return result.backend_model ? `${result.backend} (${result.backend_model})` : result.backend;
}

// The key fields most results end with: the cost, the backends tried before, the task.
export function costFields(result) {
  return [
    ["Cost", usd(result.cost_usd)],
    ["Backends tried before", result.backends_failed],
    ["Task", result.task_id],
  ];
}

// A product's tab for tasks.js and buildPanel: its form `product-form`, result box
// `product-result`, and `parts`: fieldsets(), request(), render(result), and what else it says.
export function makeTab(product, label, about, submit, parts) {
  return { product, label, about, submit, form: `${product}-form`, result: `${product}-result`, ...parts };
}
