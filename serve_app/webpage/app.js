// imagegen-serve's web page: submit, follow the task's Server-Sent Events, show the result.
// Plain browser JavaScript, no build step and nothing fetched from another site. API URLs are
// relative to the page, so the page works behind a route prefix (/s3/ calls /s3/v1/...).
"use strict";

const BASE = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const KEY_STORAGE = "imagegen-api-key";
const $ = (id) => document.getElementById(id);
const state = { product: "desk", photo: null, taskId: null, abort: null, info: null };

function api(path) {
  return BASE + path;
}

function authHeaders() {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: "Bearer " + key } : {};
}

async function errorText(response) {
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

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = !message;
}

// --- server info: LoRAs, limits --------------------------------------------------------------

async function loadInfo() {
  const response = await fetch(api("info"));
  if (!response.ok) {
    $("server-info").textContent = "The server did not answer /info: " + (await errorText(response));
    return;
  }
  const info = await response.json();
  state.info = info;
  $("server-info").textContent =
    `Preset ${info.preset} (${info.models.generator.model_id}) · version ${info.version}` +
    (info.auth && info.auth.api_keys === "required" ? " · API key required" : "");
  const select = $("lora");
  for (const lora of info.loras || []) {
    const option = document.createElement("option");
    option.value = lora.name;
    option.textContent = lora.description ? `${lora.name}: ${lora.description}` : lora.name;
    select.appendChild(option);
  }
  if (info.loras && info.loras.length) select.value = info.loras[0].name;
  const steps = $("steps");
  steps.max = info.limits.max_steps;
  steps.value = Math.min(info.defaults.num_inference_steps, info.limits.max_steps);
  $("count").max = info.limits.max_images || 1;
  if (info.auth && info.auth.api_keys === "required") document.querySelector("details").open = true;
}

// --- choosing the product and the photo -------------------------------------------------------

function selectProduct(product) {
  state.product = product;
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.setAttribute("aria-selected", String(tab.dataset.product === product));
  }
  $("photo-fields").hidden = product !== "desk";
  $("submit").textContent = product === "desk" ? "Restyle my desk" : "Generate";
}

function choosePhoto(blob, name, label) {
  if (state.photo && state.photo.url) URL.revokeObjectURL(state.photo.url);
  state.photo = { blob, name, url: URL.createObjectURL(blob) };
  $("photo-choice").textContent = "Photo: " + label;
}

async function pickSample(button) {
  for (const other of document.querySelectorAll(".sample")) other.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-pressed", "true");
  $("photo").value = "";
  const name = button.dataset.sample;
  const response = await fetch(api("ui/samples/" + name));
  if (!response.ok) return showError("Could not load the sample: " + (await errorText(response)));
  choosePhoto(await response.blob(), name, "sample " + name);
}

// --- submitting --------------------------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  showError("");
  const prompt = $("prompt").value.trim();
  if (!prompt) return showError("Write what the image should look like.");
  if (state.product === "desk" && !state.photo) return showError("Choose a photo of your desk, or pick a sample.");
  const form = new FormData();
  form.append("prompt", prompt);
  form.append("num_inference_steps", $("steps").value);
  form.append("n", $("count").value);
  if ($("lora").value) form.append("lora", $("lora").value);
  if (state.product === "desk") form.append("image", state.photo.blob, state.photo.name);
  $("submit").disabled = true;
  resetProgress();
  try {
    const response = await fetch(api("v1/generate"), { method: "POST", body: form, headers: authHeaders() });
    if (response.status !== 202) {
      $("progress").hidden = true;
      return showError(await errorText(response));
    }
    const accepted = await response.json();
    state.taskId = accepted.task_id;
    $("cancel").disabled = false;
    await follow(accepted.task_id);
  } catch (error) {
    showError("The request failed: " + error);
  } finally {
    $("submit").disabled = false;
  }
}

async function cancelTask() {
  if (!state.taskId) return;
  $("cancel").disabled = true;
  const response = await fetch(api("v1/tasks/" + state.taskId), { method: "DELETE", headers: authHeaders() });
  if (!response.ok && response.status !== 409) showError(await errorText(response));
}

// --- live events (Server-Sent Events over fetch, so the API key header can be sent) ------------

// Parse complete SSE blocks out of `buffer`; returns [events, rest]. Each event: {id, event, data}.
function parseSSE(buffer) {
  const events = [];
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const event = { id: null, event: "message", data: [] , retry: null };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") event.data.push(value);
      else if (field === "event") event.event = value;
      else if (field === "id") event.id = value;
      else if (field === "retry") event.retry = parseInt(value, 10);
    }
    if (event.data.length || event.id !== null) events.push({ ...event, data: event.data.join("\n") });
  }
  return [events, rest];
}

async function follow(taskId) {
  let lastId = null;
  let retryMs = 1000;
  for (let attempt = 0; attempt < 30; attempt++) {
    const headers = { ...authHeaders(), Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    let response;
    try {
      response = await fetch(api(`v1/tasks/${taskId}/events`), { headers });
    } catch (_) {
      await new Promise((resolve) => setTimeout(resolve, retryMs));
      continue;
    }
    if (!response.ok) return showError(await errorText(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (_) {
        break; // the connection dropped: reconnect with Last-Event-ID
      }
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      const [events, rest] = parseSSE(buffer);
      buffer = rest;
      for (const event of events) {
        if (event.retry) retryMs = event.retry;
        if (event.id !== null) lastId = event.id;
        if (event.event === "progress") renderProgress(JSON.parse(event.data));
        if (event.event === "result") {
          await renderResult(JSON.parse(event.data));
          return;
        }
      }
    }
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
  showError("Lost the task's event stream; its result is at v1/result/" + taskId);
}

function resetProgress() {
  const section = $("progress");
  section.hidden = false;
  section.dataset.events = "0";
  section.dataset.stages = "";
  $("status").textContent = "submitting";
  $("stage").textContent = "";
  $("steps-bar").value = 0;
  $("step-text").textContent = "";
  $("queue-text").textContent = "";
  $("result").hidden = true;
}

function renderProgress(event) {
  const section = $("progress");
  section.hidden = false;
  section.dataset.events = String(Number(section.dataset.events || 0) + 1);
  const stages = section.dataset.stages ? section.dataset.stages.split(",") : [];
  if (event.stage && !stages.includes(event.stage)) stages.push(event.stage);
  section.dataset.stages = stages.join(",");
  $("status").textContent = event.status;
  $("stage").textContent = event.stage || "";
  if (event.total_steps) {
    $("steps-bar").max = event.total_steps;
    $("steps-bar").value = event.step || 0;
    $("step-text").textContent = `step ${event.step || 0} of ${event.total_steps}`;
  }
  const parts = [];
  if (event.queue_position !== undefined && event.queue_position !== null) {
    parts.push(event.queue_position === 0 ? "next in line" : `${event.queue_position} ahead in the queue`);
  }
  if (event.eta_s !== undefined && event.eta_s !== null) parts.push(`about ${Math.max(0, event.eta_s).toFixed(1)} s left`);
  $("queue-text").textContent = parts.join(" · ");
}

// --- the result ----------------------------------------------------------------------------------

async function imageSource(url) {
  const headers = authHeaders();
  if (!headers.Authorization) return url;
  const response = await fetch(url, { headers }); // /files needs the key when keys are on
  if (!response.ok) throw new Error(await errorText(response));
  return URL.createObjectURL(await response.blob());
}

async function renderResult(result) {
  $("status").textContent = result.status;
  $("stage").textContent = result.status === "done" ? "finished" : result.error_code || "";
  if (result.status === "done") {
    $("steps-bar").value = $("steps-bar").max;
    $("step-text").textContent = result.timings
      ? "took " + Object.values(result.timings).reduce((a, b) => a + b, 0).toFixed(1) + " s of stage time"
      : "";
  }
  $("queue-text").textContent = "";
  $("cancel").disabled = true;
  $("progress").dataset.final = result.status;
  if (result.status === "failed") {
    showError(`The task failed: ${result.error_code}: ${result.message}`);
  }
  const section = $("result");
  section.hidden = result.status === "failed" && !result.recommendations;
  const original = $("original-figure");
  original.hidden = !(state.product === "desk" && state.photo);
  if (!original.hidden) $("original").src = state.photo.url;

  const generated = $("generated");
  generated.replaceChildren();
  const images = result.images || (result.processed_image_url ? [{ url: result.processed_image_url, seed: result.seed }] : []);
  for (const [index, image] of images.entries()) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.className = "generated";
    img.alt = `Generated image ${index + 1} (seed ${image.seed})`;
    try {
      img.src = await imageSource(image.url);
    } catch (error) {
      showError("Could not load the image: " + error.message);
    }
    const caption = document.createElement("figcaption");
    caption.textContent = `Restyled · seed ${image.seed}`;
    figure.append(img, caption);
    generated.appendChild(figure);
  }
  const skipped = $("skipped");
  skipped.hidden = !result.generation_skipped;
  if (result.generation_skipped === "not_a_desk") {
    skipped.textContent = "This photo does not look like a desk, so no restyled image was made; here are the offers.";
  } else if (result.generation_skipped) {
    skipped.textContent = "No image this time (" + result.generation_skipped + "); the offers are below.";
  }
  $("prompt-used").textContent = result.prompt ? "Prompt: " + result.prompt : "";
  renderOffers(result.recommendations || {});
}

function renderOffers(recommendations) {
  const container = $("offers");
  container.replaceChildren();
  const names = Object.keys(recommendations);
  $("offers-title").hidden = names.length === 0;
  for (const name of names) {
    const heading = document.createElement("h3");
    heading.textContent = name;
    heading.className = "item";
    container.appendChild(heading);
    for (const offer of recommendations[name]) {
      const card = document.createElement("article");
      card.className = "offer";
      if (offer.image) {
        const img = document.createElement("img");
        img.src = offer.image;
        img.alt = offer.title;
        img.loading = "lazy";
        card.appendChild(img);
      }
      const title = document.createElement("p");
      title.className = "title";
      title.textContent = offer.title;
      const price = document.createElement("p");
      price.className = "price";
      price.textContent = offer.price;
      const mall = document.createElement("p");
      mall.className = "mall";
      mall.textContent = offer.mall;
      const link = document.createElement("a");
      link.href = offer.link;
      link.textContent = "View product";
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      card.append(title, price, mall, link);
      container.appendChild(card);
    }
  }
}

// --- wiring ----------------------------------------------------------------------------------------

window.igs = { parseSSE, renderProgress, renderResult, renderOffers };

document.addEventListener("DOMContentLoaded", () => {
  const keyInput = $("api-key");
  keyInput.value = localStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("change", () => {
    if (keyInput.value) localStorage.setItem(KEY_STORAGE, keyInput.value.trim());
    else localStorage.removeItem(KEY_STORAGE);
  });
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectProduct(tab.dataset.product));
  }
  for (const button of document.querySelectorAll(".sample")) {
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => pickSample(button));
  }
  $("photo").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    for (const other of document.querySelectorAll(".sample")) other.setAttribute("aria-pressed", "false");
    choosePhoto(file, file.name, file.name);
  });
  $("request-form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancelTask);
  loadInfo().catch((error) => {
    $("server-info").textContent = "Could not reach the server: " + error;
  });
});
