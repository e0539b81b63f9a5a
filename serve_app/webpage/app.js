// imagegen-serve's web page: a tab per product, each a small form; a run is submitted, followed
// live through the task's Server-Sent Events and its result shown. Plain browser JavaScript in ES
// modules (common.js, tasks.js, tabs/*.js), no build step and nothing fetched from another site.
import { $, KEY_STORAGE, api, buildPanel, errorText, showError, state } from "./common.js";
import { cancelTask, finishProgress, parseSSE, renderProgress, runTab } from "./tasks.js";
import * as articles from "./tabs/articles.js";
import * as compose from "./tabs/compose.js";
import * as desk from "./tabs/desk.js";
import * as edits from "./tabs/edits.js";
import * as scenes from "./tabs/scenes.js";
import * as textures from "./tabs/textures.js";

const TABS = [desk.tab, textures.tab, edits.tab, scenes.tab, articles.tab, compose.tab];

// --- server info: LoRAs, limits, sizes ---------------------------------------------------------

// Square sizes a tab offers beside the preset's default: the smallest side, then doublings.
function sizeChoices(info) {
  const sides = [];
  for (let side = info.limits.min_side; side <= Math.min(info.limits.max_side, 512); side *= 2) sides.push(side);
  return sides;
}

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
  desk.applyInfo(info);
  for (const steps of document.querySelectorAll("input.steps")) {
    steps.max = info.limits.max_steps;
    steps.value = Math.min(Number(steps.value), info.limits.max_steps);
  }
  for (const select of document.querySelectorAll("select.size")) {
    select.options[0].textContent = `preset default (${info.defaults.width}×${info.defaults.height})`;
    for (const side of sizeChoices(info)) {
      if (side === info.defaults.width && side === info.defaults.height) continue;
      select.append(new Option(`${side}×${side}`, `${side}x${side}`));
    }
  }
  if (info.auth && info.auth.api_keys === "required") $("key-box").open = true;
}

// --- tabs ------------------------------------------------------------------------------------------

// Show the product's panel (its form and result box). The one progress box and error line move
// into it: while a run goes on they follow the visitor (and say which product runs), else they
// start empty.
function selectProduct(product) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.setAttribute("aria-selected", String(tab.dataset.product === product));
  }
  const panel = $(document.querySelector(`[role="tab"][data-product="${product}"]`).getAttribute("aria-controls"));
  for (const other of document.querySelectorAll('[role="tabpanel"]')) other.hidden = other !== panel;
  if (product === "desk" || product === "text") desk.selectMode(product);
  const form = panel.querySelector("form");
  form.after($("progress"), $("error"));
  if (!state.running) {
    $("progress").hidden = true;
    showError("");
  }
}

// --- wiring ----------------------------------------------------------------------------------------

window.igs = { parseSSE, renderProgress, finishProgress, renderResult: desk.renderResult, renderOffers: desk.renderOffers };

function start() {
  for (const tab of TABS) {
    if (tab.fieldsets) buildPanel(tab); // the desk and text form is in the page itself
  }
  const keyInput = $("api-key");
  keyInput.value = localStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("change", () => {
    if (keyInput.value) localStorage.setItem(KEY_STORAGE, keyInput.value.trim());
    else localStorage.removeItem(KEY_STORAGE);
  });
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectProduct(tab.dataset.product));
  }
  desk.setup();
  edits.setup();
  for (const tab of TABS) {
    $(tab.form).addEventListener("submit", (event) => {
      event.preventDefault();
      runTab(tab);
    });
  }
  $("cancel").addEventListener("click", cancelTask);
  loadInfo().catch((error) => {
    $("server-info").textContent = "Could not reach the server: " + error;
  });
}

// A module runs after the document is parsed (it is deferred), so the page is there already.
start();
