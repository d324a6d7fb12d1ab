// UnionLedger consoles (admin and auditor): the page's translations, shared as a plain ES module.
// `lang` is the page's language (a live binding: change it with useLanguage). Every text goes in
// with textContent, never as HTML.

const LANGS = ["zh-CN", "en"];

let messages = { "zh-CN": {}, en: {} };
export let lang = "zh-CN";

export function t(key, params = {}) {
  const text = messages[lang]?.[key] ?? messages["zh-CN"]?.[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

export function has(key) {
  return key in (messages[lang] ?? {});
}

// The page's translations ({ "zh-CN": {...}, en: {...} }); without them the keys are the labels.
export async function loadMessages(url) {
  try {
    const response = await fetch(url, { cache: "no-cache" });
    messages = await response.json();
  } catch {
    // the page still works, with the keys as labels
  }
}

// The language kept in localStorage under `key`, else zh-CN.
export function pickLanguage(key) {
  let saved = null;
  try {
    saved = localStorage.getItem(key);
  } catch {
    saved = null; // storage disabled: zh-CN
  }
  return LANGS.includes(saved) ? saved : "zh-CN";
}

// Switch to `next` and translate the page's fixed texts (data-i18n, data-i18n-aria-label).
export function useLanguage(next) {
  lang = next;
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
  document.getElementById("lang-switch").setAttribute("lang", LANGS.find((l) => l !== lang));
  document.title = t("app.title");
}
