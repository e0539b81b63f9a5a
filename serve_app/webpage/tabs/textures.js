// Textures: POST /v1/textures with one texture; identical parameters are answered from the cache.
import { $, costFields, el, fieldList, fieldset, imageFigure, makeTab, numberOf, settings, showResult, sizeOf } from "../common.js";

const ABOUT = "Fabric texture images (POST /v1/textures). The same parameters again are answered from the cache at once.";

const fieldsets = () => [
  fieldset(
    "Texture",
    ["texture-product", "Product type", "down jacket"],
    ["texture-material", "Material", "nylon"],
    ["texture-colour", "Colour", "navy blue"],
    ["texture-pattern", "Pattern (optional)", "quilted"],
    ["texture-finish", "Finish (optional)", "", { placeholder: "matte, glossy, brushed" }],
    ["texture-tileable", "Seamless tiling", true],
  ),
  settings("texture", ["texture-seed", "Seed (optional; by default one from the parameters)", null, { type: "number", min: 0 }]),
];

function request() {
  const texture = {
    product_type: $("texture-product").value.trim(),
    material: $("texture-material").value.trim(),
    colour: $("texture-colour").value.trim(),
  };
  if (!texture.product_type || !texture.material || !texture.colour) {
    throw new Error("A texture needs its product type, material and colour.");
  }
  for (const [field, id] of [["pattern", "texture-pattern"], ["finish", "texture-finish"]]) {
    const value = $(id).value.trim();
    if (value) texture[field] = value;
  }
  const body = {
    textures: [texture],
    tileable: $("texture-tileable").checked,
    num_inference_steps: numberOf("texture-steps"),
    seed: numberOf("texture-seed"),
    ...sizeOf("texture-size"),
  };
  return { path: "v1/textures", body };
}

async function render(result) {
  const figures = el("div", { className: "gallery" });
  const details = [];
  for (const texture of result.textures || []) {
    const name = [texture.colour, texture.material, texture.product_type].join(" ");
    if (texture.url) {
      const how = texture.cache_hit ? "from the cache" : `made by ${texture.backend}`;
      figures.append(await imageFigure(texture.url, `Texture: ${name}`, `${name} · ${how}`));
    } else {
      details.push(el("p", { className: "item-error", textContent: `${name}: ${texture.error_code}: ${texture.message}` }));
    }
    if (texture.prompt) details.push(el("p", { className: "prompt", textContent: "Prompt: " + texture.prompt }));
  }
  const fields = fieldList([
    ["From the cache", `${result.cache_hits} of ${(result.textures || []).length}`],
    ...costFields({ ...result, task_id: result.task_id || "none: every texture came from the cache" }),
  ]);
  showResult("textures-result", figures, ...details, fields);
}

export const tab = makeTab("textures", "textures", ABOUT, "Make the texture", { fieldsets, request, render });
