// Scenes: the script backend's scene body, on POST /api/v1/images/generations/external (a cloud
// image API first) or .../internal (the in-cluster Generator).
import { $, costFields, fieldList, fieldset, imageFigure, makeTab, numberOf, settings, showResult, sizeOf } from "../common.js";

const ABOUT = "A scene of a script, as a script backend sends it (POST /api/v1/images/generations/external, or /internal).";

const CHAINS = [
  ["external", "external: a cloud image API first"],
  ["internal", "internal: the in-cluster Generator"],
];

// The seed's example scene: a script, one character, a narration and the character's line.
const fieldsets = () => [
  fieldset(
    "Script",
    ["scene-title", "Title", "비 오는 날의 카페"],
    ["scene-script-id", "Script id (the scenes of one script share a look)", 1, { min: 0 }],
    ["scene-id", "Scene id", 1, { min: 0 }],
  ),
  fieldset(
    "Character",
    ["scene-character", "Name", "민지"],
    ["scene-gender", "Gender", "1", { options: [["1", "female (1)"], ["0", "male (0)"]] }],
    ["scene-character-description", "Description", "긴 머리의 여자 학생"],
  ),
  fieldset(
    "Audios",
    ["scene-narration", "Narration", "비 오는 저녁, 따뜻한 카페 창가"],
    ["scene-dialogue", "The character's line (optional)", "오랜만이야!"],
    ["scene-emotion", "Emotion (optional)", "기쁨"],
  ),
  settings("scene", ["scene-chain", "Made by", "external", { options: CHAINS }]),
];

function request() {
  const title = $("scene-title").value.trim();
  if (!title) throw new Error("Give the script a title.");
  const name = $("scene-character").value.trim();
  const characters = name
    ? [{ name, gender: Number($("scene-gender").value), description: $("scene-character-description").value.trim() }]
    : [];
  const audios = [];
  const narration = $("scene-narration").value.trim();
  if (narration) audios.push({ type: "narration", text: narration });
  const line = $("scene-dialogue").value.trim();
  if (line) {
    if (!name) throw new Error("A line of dialogue needs the character who says it.");
    const dialogue = { type: "dialogue", character: name, text: line };
    const emotion = $("scene-emotion").value.trim();
    if (emotion) dialogue.emotion = emotion;
    audios.push(dialogue);
  }
  if (!audios.length) throw new Error("A scene needs a narration or a line of dialogue.");
  const body = {
    script_metadata: { title, script_id: numberOf("scene-script-id") ?? 0, characters },
    scene_id: numberOf("scene-id") ?? 0,
    audios,
    num_inference_steps: numberOf("scene-steps"),
    ...sizeOf("scene-size"),
  };
  return { path: "api/v1/images/generations/" + $("scene-chain").value, body };
}

async function render(result) {
  const figure = await imageFigure(result.image_s3url, "The scene's image", `Scene ${result.scene_id ?? ""} · made by ${result.backend}`);
  const fields = fieldList([
    ["Image prompt", result.image_prompt],
    ["Backend", result.backend],
    ["Backend time", result.backend_seconds !== undefined ? `${Number(result.backend_seconds).toFixed(2)} s` : undefined],
    ["Image URL", result.image_s3url],
    ...costFields(result),
  ]);
  showResult("scenes-result", figure, fields);
}

export const tab = makeTab("scenes", "scene", ABOUT, "Draw the scene", { fieldsets, request, render });
