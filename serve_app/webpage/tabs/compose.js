// Compose: POST /api/compose-dress, a person photo and a garment photo become one picture. A server
// without the route answers 404, which the tab explains.
import { $, backendText, costFields, el, fieldList, fieldset, imageFigure, makeTab, showResult } from "../common.js";

const ABOUT = "Dress a person in a garment: a person photo and a garment photo become one picture (POST /api/compose-dress).";

const PHOTO = { type: "file", accept: "image/png,image/jpeg,image/webp" };

const fieldsets = () => [
  fieldset(
    "Photos",
    ["compose-person", "Person photo", null, PHOTO],
    ["compose-garment", "Garment photo", null, PHOTO],
    ["compose-prompt", "Instructions (optional)", "", { placeholder: "keep the pose, natural lighting" }],
  ),
];

function request() {
  const person = $("compose-person").files[0];
  const garment = $("compose-garment").files[0];
  if (!person || !garment) throw new Error("Choose a photo of the person and a photo of the garment.");
  const form = new FormData();
  form.append("person_image", person, person.name);
  form.append("garment_image", garment, garment.name);
  const prompt = $("compose-prompt").value.trim();
  if (prompt) form.append("prompt", prompt);
  return { path: "api/compose-dress", body: form };
}

async function render(result) {
  const url = result.url || result.processed_image_url || (result.images && result.images[0] ? result.images[0].url : undefined);
  const content = url ? await imageFigure(url, "The composed picture", "Composed") : el("p", { textContent: "No image came back." });
  const fields = fieldList([
    ["Prompt", result.prompt],
    ["Backend", backendText(result)],
    ...costFields(result),
  ]);
  showResult("compose-result", content, fields);
}

const MISSING =
  "Compose is not available on this server: POST /api/compose-dress answered 404 Not Found " +
  "(this version of imagegen-serve has no compose route).";

export const tab = makeTab("compose", "compose", ABOUT, "Compose", { fieldsets, request, render, missing: MISSING });
