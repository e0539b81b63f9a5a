// A run on any tab: submit, follow the task's Server-Sent Events in the shared progress box, then
// hand the result to the tab. One run at a time: every submit button waits for it.
import { $, api, authHeaders, errorText, showError, state } from "./common.js";

// Parse complete SSE blocks out of `buffer`; returns [events, rest]. Each event: {id, event, data}.
export function parseSSE(buffer) {
  const events = [];
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const event = { id: null, event: "message", data: [], retry: null };
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

// Follow the task's events (over fetch, so the API key header can be sent; reconnecting with
// Last-Event-ID) until its `result`, which goes to onResult.
export async function follow(taskId, onResult) {
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
          await onResult(JSON.parse(event.data));
          return;
        }
      }
    }
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
  showError("Lost the task's event stream; its result is at v1/result/" + taskId);
}

export function resetProgress(label) {
  const section = $("progress");
  section.hidden = false;
  section.dataset.events = "0";
  section.dataset.stages = "";
  delete section.dataset.final;
  $("progress-product").textContent = label ? "· " + label : "";
  $("status").textContent = "submitting";
  $("stage").textContent = "";
  $("steps-bar").max = 1;
  $("steps-bar").value = 0;
  $("step-text").textContent = "";
  $("queue-text").textContent = "";
  $("cancel").disabled = true;
}

export function renderProgress(event) {
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

// The progress box at the end of a run (`data-final` says how it ended); a failure is shown with
// the task's error code and message.
export function finishProgress(result) {
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
  if (result.status === "failed") showError(`The task failed: ${result.error_code}: ${result.message}`);
}

export async function cancelTask() {
  if (!state.taskId) return;
  $("cancel").disabled = true;
  const response = await fetch(api("v1/tasks/" + state.taskId), { method: "DELETE", headers: authHeaders() });
  if (!response.ok && response.status !== 409) showError(await errorText(response));
}

function setRunning(running) {
  state.running = running;
  for (const button of document.querySelectorAll('button[type="submit"]')) button.disabled = running;
}

// One run of a tab. `tab.request()` returns {path, body} (FormData or a JSON-able object) or
// throws an Error whose message is shown (nothing is sent); `tab.render(result)` shows a finished
// result (a failed one too when `tab.showsFailures`). Sent with `Prefer: respond-async`, so the
// routes that wait for their task answer 202 at once and the page follows it live; a 200
// (textures all from the cache, or a route that always waits) is the result itself. A 404 is
// `tab.missing`, when the tab says what it means.
export async function runTab(tab) {
  showError("");
  let request;
  try {
    request = tab.request();
  } catch (error) {
    return showError(error.message);
  }
  const headers = { ...authHeaders(), Prefer: "respond-async" };
  let body = request.body;
  if (!(body instanceof FormData)) {
    body = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  $(tab.result).hidden = true;
  setRunning(true);
  resetProgress(tab.label);
  const done = async (result) => {
    finishProgress(result);
    if (result.status !== "failed" || tab.showsFailures) await tab.render(result);
  };
  try {
    const response = await fetch(api(request.path), { method: "POST", body, headers });
    if (response.status === 202) {
      state.taskId = (await response.json()).task_id;
      $("cancel").disabled = false;
      await follow(state.taskId, done);
    } else if (response.ok) {
      await done({ ...(await response.json()), status: "done" });
    } else {
      $("progress").hidden = true;
      showError(response.status === 404 && tab.missing ? tab.missing : await errorText(response));
    }
  } catch (error) {
    showError("The request failed: " + error);
  } finally {
    setRunning(false);
  }
}
