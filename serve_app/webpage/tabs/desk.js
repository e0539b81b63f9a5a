// The desk makeover and text to image tabs (one form): POST /v1/generate, the restyled images
// beside the original, and the shopping offers as cards.
import { $, imageFigure, photoPicker } from "../common.js";

let product = "desk";
let picker = null;

export function setup() {
  picker = photoPicker("photo", "samples", "photo-choice");
}

// Switching between desk and text: the same form, with or without the photo.
export function selectMode(mode) {
  product = mode;
  $("photo-fields").hidden = mode !== "desk";
  $("submit").textContent = mode === "desk" ? "Restyle my desk" : "Generate";
}

// The server's LoRAs and limits, from /info.
export function applyInfo(info) {
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
}

function request() {
  const prompt = $("prompt").value.trim();
  if (!prompt) throw new Error("Write what the image should look like.");
  if (product === "desk" && !picker.photo) throw new Error("Choose a photo of your desk, or pick a sample.");
  const form = new FormData();
  form.append("prompt", prompt);
  form.append("num_inference_steps", $("steps").value);
  form.append("n", $("count").value);
  if ($("lora").value) form.append("lora", $("lora").value);
  if (product === "desk") form.append("image", picker.photo.blob, picker.photo.name);
  return { path: "v1/generate", body: form };
}

export async function renderResult(result) {
  const section = $("result");
  section.hidden = result.status === "failed" && !result.recommendations;
  const original = $("original-figure");
  original.hidden = !(product === "desk" && picker.photo);
  if (!original.hidden) $("original").src = picker.photo.url;

  const generated = $("generated");
  generated.replaceChildren();
  const images = result.images || (result.processed_image_url ? [{ url: result.processed_image_url, seed: result.seed }] : []);
  for (const [index, image] of images.entries()) {
    const alt = `Generated image ${index + 1} (seed ${image.seed})`;
    generated.appendChild(await imageFigure(image.url, alt, `Restyled · seed ${image.seed}`));
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

export function renderOffers(recommendations) {
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

// The desk and text tabs as a run of tasks.js (a failed desk task may still carry offers).
export const tab = {
  form: "request-form",
  result: "result",
  get label() {
    return product === "desk" ? "desk makeover" : "text to image";
  },
  showsFailures: true,
  request,
  render: renderResult,
};
