// The resident report page (一楼一码): /r/<token> (report) and /r/t/<tracking token> (progress).
// No framework, no inline script (the page's Content-Security-Policy allows only this file); every text is
// set with textContent, so nothing a resident or the server sends is ever parsed as HTML.
"use strict";

// The one message catalogue of this page: zh-CN first, English the same keys (a missing key falls back to zh).
const MESSAGES = {
  zh: {
    title: "随手拍 · 一楼一码", switchLang: "EN", loading: "加载中…", placeLabel: "位置",
    categoryLabel: "问题类型", descriptionLabel: "问题描述", photoLabel: "拍照或选择照片",
    photoOptional: "照片可选；有照片处理更快", photoRequired: "请拍一张照片", phoneLabel: "手机号（选填）",
    phoneHint: "仅工作人员回访时使用，不会公开", submit: "提交", sending: "正在提交…",
    thanks: "已收到您的上报，感谢！请保存本页链接查看进度。", submittedLabel: "上报时间", statusLabel: "当前状态",
    refresh: "刷新进度", pickCategory: "请选择问题类型", needText: "请描述问题或拍一张照片",
    badPhone: "手机号格式不正确", tooLong: "描述太长", unknownCode: "二维码无效或已停用，请联系社区网格员",
    unknownTracking: "未找到该上报", rateLimited: "提交太频繁，请稍后再试", photoRefused: "照片无法使用，请换一张",
    photoTooLarge: "照片太大，请换一张", failed: "提交失败，请稍后再试", offline: "网络不可用，请稍后再试",
    falseAlarm: "经核实不予立案", finished: "已办结",
  },
  en: {
    title: "Report a problem", switchLang: "中文", loading: "Loading…", placeLabel: "Place",
    categoryLabel: "Problem", descriptionLabel: "Description", photoLabel: "Take or choose a photo",
    photoOptional: "A photo is optional but helps", photoRequired: "Please take a photo", phoneLabel: "Phone (optional)",
    phoneHint: "Only staff see it, to call you back; never shown publicly", submit: "Send", sending: "Sending…",
    thanks: "Thank you, your report is in. Keep this page's link to follow it.", submittedLabel: "Reported",
    statusLabel: "Status", refresh: "Refresh", pickCategory: "Please pick the kind of problem",
    needText: "Describe the problem or add a photo", badPhone: "That phone number does not look right",
    tooLong: "The description is too long", unknownCode: "This code is unknown or no longer in use",
    unknownTracking: "No such report", rateLimited: "Too many reports; please try again later",
    photoRefused: "This photo cannot be used; please take another", photoTooLarge: "The photo is too large",
    failed: "Sending failed; please try again later", offline: "No network; please try again later",
    falseAlarm: "Checked: no case opened", finished: "Done",
  },
};
const LANG_KEY = "gridwatch.resident.lang";
const PHOTO_SIDE = 1600;  // the photo is shrunk on the phone before it is sent (weak networks)

let lang = localStorage.getItem(LANG_KEY) || "zh";
let info = null;   // GET /r/<token>/info
let view = null;   // GET /r/t/<tracking>/status
let photoBlob = null;

const $ = (id) => document.getElementById(id);
const t = (key) => (MESSAGES[lang] && MESSAGES[lang][key]) || MESSAGES.zh[key] || key;
const label = (pair) => (pair ? pair[lang] || pair.zh : "");

function show(el, on) { el.hidden = !on; }
function error(key, el = $("error")) { el.textContent = t(key); show(el, true); }

function relabel() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const el of document.querySelectorAll("[data-msg]")) el.textContent = t(el.dataset.msg);
  if (info) {
    for (const span of document.querySelectorAll("#categories span")) {
      const c = info.categories.find((x) => x.key === span.dataset.key);
      span.textContent = c ? c[lang] || c.zh : span.dataset.key;
    }
    $("photo-hint").textContent = t(info.photo_required ? "photoRequired" : "photoOptional");
  }
  if (view) renderTrack();
}

function when(iso) {
  const d = new Date(iso);
  return d.toLocaleString(lang === "zh" ? "zh-CN" : "en-GB", { dateStyle: "short", timeStyle: "short" });
}

async function shrink(file) {
  // Re-draw the photo at most PHOTO_SIDE px on its long side as a JPEG; the original when that fails.
  try {
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    const scale = Math.min(1, PHOTO_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((done) => canvas.toBlob(done, "image/jpeg", 0.85));
    return blob || file;
  } catch (e) {
    return file;
  }
}

async function startReport(token) {
  let r;
  try { r = await fetch(`/r/${encodeURIComponent(token)}/info`, { cache: "no-store" }); }
  catch (e) { return error("offline", $("fatal")); }
  if (!r.ok) return error("unknownCode", $("fatal"));
  info = await r.json();
  $("place").textContent = info.place;
  $("max").textContent = String(info.max_description_chars);
  $("description").maxLength = info.max_description_chars;
  const box = $("categories");
  for (const c of info.categories) {
    const wrap = document.createElement("label");
    const input = document.createElement("input");
    input.type = "radio"; input.name = "category"; input.value = c.key;
    const span = document.createElement("span");
    span.dataset.key = c.key;
    wrap.append(input, span);
    box.append(wrap);
  }
  $("description").addEventListener("input", () => { $("count").textContent = String($("description").value.length); });
  $("photo").addEventListener("change", async () => {
    const file = $("photo").files[0];
    photoBlob = file ? await shrink(file) : null;
    const img = $("preview");
    if (photoBlob) { img.src = URL.createObjectURL(photoBlob); show(img, true); } else { show(img, false); }
  });
  $("report").addEventListener("change", () => show($("error"), false));  // a fix clears the last complaint
  $("report").addEventListener("submit", (ev) => { ev.preventDefault(); submit(token); });
  show($("report"), true);
  relabel();
}

async function submit(token) {
  show($("error"), false);
  const picked = document.querySelector("#categories input:checked");
  const description = $("description").value.trim();
  const phone = $("phone").value.trim();
  if (!picked) return error("pickCategory");
  if (info.photo_required && !photoBlob) return error("photoRequired");
  if (!description && !photoBlob) return error("needText");
  if (phone && !/^\+?[0-9][0-9 -]{4,19}$/.test(phone)) return error("badPhone");
  const form = new FormData();
  form.append("category", picked.value);
  form.append("description", description);
  form.append("phone", phone);
  if (photoBlob) form.append("photo", photoBlob, "photo.jpg");
  const button = $("submit");
  button.disabled = true; button.textContent = t("sending");
  try {
    const r = await fetch(`/r/${encodeURIComponent(token)}/reports`, { method: "POST", body: form });
    if (r.status === 201) {
      const body = await r.json();
      sessionStorage.setItem("gridwatch.resident.thanks", "1");
      location.assign(body.tracking_url);
      return;
    }
    let reason = "";
    try { reason = (await r.json()).reason || ""; } catch (e) { /* not JSON */ }
    error(r.status === 429 ? "rateLimited" : r.status === 404 ? "unknownCode" : r.status === 413 ? "photoTooLarge"
      : reason.startsWith("photo") ? "photoRefused" : "failed");
  } catch (e) {
    error("offline");
  } finally {
    button.disabled = false; button.textContent = t("submit");
  }
}

function renderTrack() {
  $("t-place").textContent = view.place;
  $("t-category").textContent = label(view.category_label);
  $("t-submitted").textContent = when(view.submitted_at);
  $("t-description").textContent = view.description;
  show($("t-description-row"), Boolean(view.description));
  const status = view.status === "false_alarm" ? t("falseAlarm") : label(view.labels[view.status]);
  $("t-status").textContent = status;
  $("t-status").dataset.status = view.status;
  const reached = {};
  for (const h of view.history) reached[h.status] = h.at;  // the latest time each step was reached
  const steps = $("steps");
  steps.replaceChildren();
  const order = view.steps;
  const currentIndex = order.indexOf(view.status);
  order.forEach((s, i) => {
    const li = document.createElement("li");
    li.dataset.status = s;
    li.textContent = label(view.labels[s]);
    if (currentIndex >= 0 && i <= currentIndex) li.classList.add("reached");
    if (s === view.status) li.classList.add("current");
    if (reached[s] && currentIndex >= 0 && i <= currentIndex) {
      const time = document.createElement("time");
      time.dateTime = reached[s];
      time.textContent = when(reached[s]);
      li.append(time);
    }
    steps.append(li);
  });
  if (view.status === "false_alarm") {
    const li = document.createElement("li");
    li.className = "reached current";
    li.dataset.status = "false_alarm";
    li.textContent = t("falseAlarm");
    steps.append(li);
  }
}

async function loadTrack(tracking) {
  let r;
  try { r = await fetch(`/r/t/${encodeURIComponent(tracking)}/status`, { cache: "no-store" }); }
  catch (e) { return error("offline", $("fatal")); }
  if (!r.ok) return error("unknownTracking", $("fatal"));
  view = await r.json();
  show($("fatal"), false);
  renderTrack();
  show($("track"), true);
}

function main() {
  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem(LANG_KEY, lang);
    relabel();
  });
  const parts = location.pathname.split("/").filter(Boolean);  // ["r", token] or ["r", "t", tracking]
  show($("loading"), false);
  if (parts.length === 3 && parts[1] === "t") {
    if (sessionStorage.getItem("gridwatch.resident.thanks")) {
      sessionStorage.removeItem("gridwatch.resident.thanks");
      show($("thanks"), true);
    }
    $("refresh").addEventListener("click", () => loadTrack(parts[2]));
    loadTrack(parts[2]);
    setInterval(() => loadTrack(parts[2]), 60_000);
  } else if (parts.length === 2) {
    startReport(parts[1]);
  }
  relabel();
}

main();
