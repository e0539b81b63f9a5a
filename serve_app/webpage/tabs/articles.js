// Articles: POST /v1/articles/images, one image per placeholder (a line of the text box each).
import { $, costFields, el, fieldList, fieldset, imageFigure, makeTab, numberOf, settings, showResult, sizeOf } from "../common.js";

const ABOUT = "One image per placeholder of an article (POST /v1/articles/images).";

const EXAMPLE = "[이미지 설명: 미래적인 AI 로봇]\n햇살이 드는 아늑한 카페";

const fieldsets = () => [
  fieldset(
    "Placeholders",
    ["article-alts", "One image description (alt text) a line, Korean or English", EXAMPLE],
    ["article-style", "Style (optional: words added to every prompt)", "editorial illustration"],
  ),
  settings("article"),
];

function request() {
  const alts = $("article-alts").value.split("\n").map((line) => line.trim()).filter(Boolean);
  if (!alts.length) throw new Error("Write at least one image description, one a line.");
  const style = $("article-style").value.trim();
  const body = {
    placeholders: alts.map((alt, index) => ({ index, alt })),
    num_inference_steps: numberOf("article-steps"),
    ...sizeOf("article-size"),
  };
  if (style) body.style = style;
  return { path: "v1/articles/images", body };
}

async function render(result) {
  const gallery = el("div", { className: "gallery" });
  for (const placeholder of result.placeholders || []) {
    if (placeholder.url) {
      const caption = `#${placeholder.index} · ${placeholder.alt} · ${placeholder.backend}`;
      const figure = await imageFigure(placeholder.url, placeholder.alt, caption);
      if (placeholder.prompt) figure.append(el("p", { className: "prompt", textContent: "Prompt: " + placeholder.prompt }));
      gallery.append(figure);
    } else {
      const text = `#${placeholder.index} · ${placeholder.alt}: ${placeholder.error_code}: ${placeholder.message}`;
      gallery.append(el("p", { className: "item-error", textContent: text }));
    }
  }
  const fields = fieldList([
    ["Placeholders without an image", result.failed_placeholders],
    ...costFields(result),
  ]);
  showResult("articles-result", gallery, fields);
}

export const tab = makeTab("articles", "article images", ABOUT, "Illustrate the article", { fieldsets, request, render });
