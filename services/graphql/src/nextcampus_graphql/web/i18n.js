// The page's words in the viewer's language: one catalogue per language (i18n/<tag>.js, the
// file name is the language's BCP 47 tag), the choice of language (the browser's, or the one
// picked on the page and kept in localStorage), and dates, times, numbers, lists and plurals
// through Intl in the viewer's locale and time zone.
//
// The catalogues are ES modules, not .json files fetched at start: the page has no build step,
// and as modules they load with the page's own module graph (index.html preloads them), so
// the first render needs no extra request and no "loading…" state of its own; every language
// is in memory, so switching works offline too, as the rest of the page does through an
// outage; and `import … with { type: 'json' }` is still too new for browsers in use. Inside
// `export default …;` each is strict JSON, so tests and tools read it with a JSON parser.
import en from './i18n/en.js';
import ko from './i18n/ko.js';

export const CATALOGUES = Object.freeze({ en, ko });
const FALLBACK = 'en';
const LANGUAGE_KEY = 'nextcampus.language';

// Every key asked for that the current catalogue lacks, as `<language>:<key>` (a plural form
// as `<key>#<category>`, a placeholder without a value as `<key>{<name>}`): the browser tests
// assert it stays empty in every language. Each is warned about once on the console too.
const missing = [];
window.missingTranslations = missing;

let language = FALLBACK;
let intl = null; // the Intl formatters of the current locale
const listeners = [];

// localStorage can be unavailable (some privacy modes): the choice then lasts until reload.
const remembered = {
  get() {
    try {
      return localStorage.getItem(LANGUAGE_KEY);
    } catch {
      return null;
    }
  },
  set(value) {
    try {
      localStorage.setItem(LANGUAGE_KEY, value);
    } catch {
      // not remembered across reloads, nothing else is lost
    }
  },
};

const known = (tag) => Object.hasOwn(CATALOGUES, tag);
const primary = (tag) => tag.split('-')[0].toLowerCase();
const browserTags = () => (navigator.languages?.length ? navigator.languages : [navigator.language ?? '']);

/**
 * The language to start in: the one picked on the page before, else the first of the
 * browser's languages the page speaks (any `ko-*` is Korean), else English.
 */
function startLanguage() {
  const picked = remembered.get();
  if (picked && known(picked)) return picked;
  return browserTags().map(primary).find(known) ?? FALLBACK;
}

/**
 * The locale for dates and numbers: the browser's own tag for the chosen language (en-GB
 * keeps its day-month order), else the bare language (Intl's default region for it).
 */
function localeOf(tag) {
  return browserTags().find((browserTag) => primary(browserTag) === tag) ?? tag;
}

function formattersOf(locale) {
  return {
    locale,
    number: new Intl.NumberFormat(locale),
    plural: new Intl.PluralRules(locale),
    time: new Intl.DateTimeFormat(locale, { timeStyle: 'short' }),
    dateTime: new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' }),
    full: new Intl.DateTimeFormat(locale, { dateStyle: 'full', timeStyle: 'long' }),
    relative: new Intl.RelativeTimeFormat(locale, { numeric: 'auto' }),
    list: new Intl.ListFormat(locale, { type: 'conjunction' }),
  };
}

function miss(entry) {
  if (missing.includes(entry)) return;
  missing.push(entry);
  console.warn(`missing translation: ${entry}`);
}

/**
 * The text of `key` in the current language (or `inLanguage`), with `{name}` placeholders
 * filled from `params` (numbers formatted for the locale). A plural entry picks its form by
 * `params.count`. A key the catalogue lacks is recorded and shown in English, or as the key.
 */
export function t(key, params = {}, inLanguage = language) {
  const catalogue = CATALOGUES[inLanguage];
  // Own keys only: "toString" is no word of the page.
  let entry = Object.hasOwn(catalogue, key) ? catalogue[key] : undefined;
  if (entry === undefined) {
    miss(`${inLanguage}:${key}`);
    entry = Object.hasOwn(CATALOGUES[FALLBACK], key) ? CATALOGUES[FALLBACK][key] : key;
  }
  const formatters = inLanguage === language ? intl : formattersOf(inLanguage);
  if (typeof entry === 'object') {
    const category = formatters.plural.select(params.count);
    if (!(category in entry)) miss(`${inLanguage}:${key}#${category}`);
    entry = entry[category] ?? entry.other;
  }
  return entry.replace(/\{(\w+)\}/g, (placeholder, name) => {
    if (!(name in params)) {
      miss(`${inLanguage}:${key}{${name}}`);
      return placeholder;
    }
    const value = params[name];
    return typeof value === 'number' ? formatters.number.format(value) : String(value);
  });
}

export const currentLanguage = () => language;

/** Switch to `tag` (remembered for the next visit) and have every listener re-render. */
export function setLanguage(tag, { remember = true } = {}) {
  if (!known(tag)) return;
  language = tag;
  intl = formattersOf(localeOf(tag));
  if (remember) remembered.set(tag);
  document.documentElement.lang = tag;
  translateMarkup();
  for (const listener of listeners) listener(tag);
}

/** Call `listener(tag)` after every switch of language. */
export function onLanguageChange(listener) {
  listeners.push(listener);
}

const MARKUP_ATTRIBUTES = ['aria-label', 'placeholder', 'title'];

/**
 * The page's fixed words: `data-i18n="key"` sets an element's text, `data-i18n-<attribute>`
 * one of its attributes (index.html holds keys, never words).
 */
function translateMarkup() {
  for (const node of document.querySelectorAll('[data-i18n]')) {
    node.textContent = t(node.dataset.i18n);
  }
  for (const attribute of MARKUP_ATTRIBUTES) {
    for (const node of document.querySelectorAll(`[data-i18n-${attribute}]`)) {
      node.setAttribute(attribute, t(node.getAttribute(`data-i18n-${attribute}`)));
    }
  }
}

/**
 * A `<select>` of every language, each named in itself (and marked with its `lang`, so a
 * screen reader says "한국어" in Korean); choosing one switches the page at once.
 */
export function bindLanguageSelect(select) {
  select.replaceChildren(
    ...Object.keys(CATALOGUES).map((tag) => {
      const option = document.createElement('option');
      option.value = tag;
      option.lang = tag;
      option.textContent = t('language.name', {}, tag);
      return option;
    }),
  );
  select.value = language;
  select.addEventListener('change', () => setLanguage(select.value));
  onLanguageChange((tag) => {
    select.value = tag;
  });
}

// --- dates, times, lists ----------------------------------------------------------------

const DAY_MS = 86_400_000;
const startOfDay = (date) => new Date(date.getFullYear(), date.getMonth(), date.getDate());

/** Whole calendar days from `date` to now in the viewer's time zone (0: today). */
function daysAgo(date, now = new Date()) {
  // Rounded: a day with a daylight-saving change has 23 or 25 hours.
  return Math.round((startOfDay(now) - startOfDay(date)) / DAY_MS);
}

/** A message's time: "14:05" today, "yesterday, 14:05", else the date and the time. */
export function formatMessageTime(date) {
  const days = daysAgo(date);
  if (days === 0) return intl.time.format(date);
  if (days === 1) {
    return t('time.dayAndTime', { day: intl.relative.format(-1, 'day'), time: intl.time.format(date) });
  }
  return intl.dateTime.format(date);
}

/** The full date and time with the time zone (a `<time>`'s title). */
export const formatFullTime = (date) => intl.full.format(date);

const UNITS = [
  ['day', DAY_MS],
  ['hour', 3_600_000],
  ['minute', 60_000],
  ['second', 1000],
];

/** A span from now as words: "in 8 hours", "5 minutes ago" (negative), in the largest unit. */
export function formatFromNow(milliseconds) {
  const size = Math.abs(milliseconds);
  const [unit, unitMs] = UNITS.find(([, ms]) => size >= ms) ?? UNITS.at(-1);
  // A wait is rounded up (never "in 0 seconds"), what is past is rounded down.
  const amount = milliseconds > 0 ? Math.ceil(size / unitMs) : -Math.floor(size / unitMs);
  return intl.relative.format(amount, unit);
}

/**
 * A length of time in the largest unit it fills whole: "90 seconds", "2 minutes", "1 hour"
 * ("1시간"). Intl words the unit, so no catalogue needs a plural of each.
 */
export function formatDuration(seconds) {
  const [unit, unitSeconds] = UNITS.map(([name, ms]) => [name, ms / 1000]).find(
    ([name, size]) => name !== 'day' && seconds % size === 0,
  );
  return new Intl.NumberFormat(intl.locale, { style: 'unit', unit, unitDisplay: 'long' }).format(seconds / unitSeconds);
}

/** When `date` was, from now: "5 minutes ago", "yesterday". */
export const formatAgo = (date) => formatFromNow(date.getTime() - Date.now());

/** A number in the viewer's locale (a count shown on its own, outside a sentence). */
export const formatNumber = (value) => intl.number.format(value);

/** Names as a list: "alice, bob, and carol" / "alice, bob 및 carol". */
export const formatList = (names) => intl.list.format(names);

/** Milliseconds until the next local midnight, when "today" and "yesterday" move on. */
export const untilMidnightMs = (now = new Date()) =>
  new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1) - now + 1000;

setLanguage(startLanguage(), { remember: false });
