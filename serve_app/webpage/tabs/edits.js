// Edits: POST /v1/edits, a photo (uploaded or a sample) and an instruction.
import { $, backendText, costFields, el, fieldList, fieldset, imageFigure, makeTab, numberOf, photoFields, photoPicker, showResult } from "../common.js";

const ABOUT = "Edit a photo by an instruction, in Korean or English (POST /v1/edits).";

const BACKENDS = [
  ["auto", "auto: the edit chain"],
  ["local", "local: the in-cluster Editor"],
  ["cloud", "cloud: the chain's cloud backends"],
];

const fieldsets = () => [
  fieldset("Photo", ...photoFields("edit")),
  fieldset(
    "Edit",
    ["edit-instruction", "Instruction", "make the lighting warmer"],
    ["edit-image-guidance", "Keep the photo (image guidance, 1-5)", 1.5, { min: 1, max: 5, step: 0.1 }],
    ["edit-steps", "Diffusion steps", 4, { className: "steps", min: 1 }],
    ["edit-backend", "Backend", "auto", { options: BACKENDS }],
  ),
];

let picker = null;
let sent = null; // the photo of the run in flight, shown as "Before" (another may be picked meanwhile)

export function setup() {
  picker = photoPicker("edit-photo", "edit-samples", "edit-photo-choice");
}

function request() {
  const instruction = $("edit-instruction").value.trim();
  if (!instruction) throw new Error("Write what to change in the photo.");
  if (!picker.photo) throw new Error("Choose a photo to edit, or pick a sample.");
  sent = picker.photo;
  const form = new FormData();
  form.append("image", sent.blob, sent.name);
  form.append("instruction", instruction);
  for (const [field, id] of [["image_guidance_scale", "edit-image-guidance"], ["num_inference_steps", "edit-steps"]]) {
    const value = numberOf(id);
    if (value !== undefined) form.append(field, String(value));
  }
  form.append("backend", $("edit-backend").value);
  return { path: "v1/edits", body: form };
}

async function render(result) {
  // The route's answer names the image `url`; the task's result (followed live) `processed_image_url`.
  const url = result.url || result.processed_image_url;
  const seed = result.seed ?? (result.images && result.images[0] ? result.images[0].seed : undefined);
  const original = el("figure", {}, el("img", { className: "original", src: URL.createObjectURL(sent.blob), alt: "The photo before the edit" }));
  original.append(el("figcaption", { textContent: "Before" }));
  const pair = el("div", { className: "pair" }, original, await imageFigure(url, "The edited photo", "After"));
  const fields = fieldList([
    ["Instruction", result.instruction],
    ["Edit prompt", result.edit_prompt],
    ["Backend", backendText(result)],
    ["Size", result.width && result.height ? `${result.width}×${result.height}` : undefined],
    ["Seed", seed],
    ...costFields(result),
  ]);
  showResult("edits-result", pair, fields);
}

export const tab = makeTab("edits", "edit", ABOUT, "Edit the photo", { fieldsets, request, render });
