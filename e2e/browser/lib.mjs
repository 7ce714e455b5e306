// What the browser scripts share: Debian's headless Chromium driven by playwright-core (it
// never downloads a browser), one page per user in a context of its own, and the steps a
// user takes on the chat page. Each step names what it waited for when it fails.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const WAIT_MS = 15_000; // for one thing to show on a page
const TOTAL_MS = 120_000; // for a whole script: never hang a test suite
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/**
 * Who a user is to the page: the browser's language (Chromium's --lang and the context's
 * locale, so navigator.languages and Accept-Language agree) and time zone. The page speaks
 * the browser's language: unless a script says otherwise, users are in US English, whatever
 * the machine's own locale.
 */
export const ENGLISH_IN_NEW_YORK = { locale: 'en-US', timezoneId: 'America/New_York' };
export const KOREAN_IN_SEOUL = { locale: 'ko-KR', timezoneId: 'Asia/Seoul' };

/** The script's inputs from env vars (tokens stay out of `ps`); exits 2 naming what is missing. */
export function inputs(script, required, optional = []) {
  const given = Object.fromEntries([...required, ...optional].map((name) => [name, process.env[name]]));
  const missing = required.filter((name) => !given[name]);
  if (missing.length > 0) {
    console.error(`${script}: missing env vars ${missing.join(', ')} (see the top of ${script}.mjs)`);
    process.exit(2);
  }
  given.BASE_URL = given.BASE_URL?.replace(/\/+$/, '');
  return given;
}

// node has no CSS.escape; course ids are [A-Za-z0-9._-], so quoting them is enough.
export const quoted = (value) => `"${value.replace(/["\\]/g, '\\$&')}"`;

export async function step(user, what, action) {
  try {
    return await action();
  } catch (error) {
    throw new Error(`${user}: waiting for ${what}: ${error.message.split('\n')[0]}`);
  }
}

/**
 * Runs `main(session)` in a fresh browser and prints its result as one JSON line. On failure:
 * a message on stderr with what each page showed and logged, and exit code 1.
 */
export async function run(script, main) {
  const watchdog = setTimeout(() => {
    console.error(`${script}: FAILED: still running after ${TOTAL_MS / 1000} s`);
    process.exit(1);
  }, TOTAL_MS);
  watchdog.unref();
  const session = new Session();
  try {
    console.log(JSON.stringify({ ok: true, ...(await main(session)) }));
  } catch (error) {
    console.error(`${script}: FAILED: ${error.message}`);
    for (const { user, page, log } of session.users) {
      const status = await page.textContent('#status').catch(() => '?');
      const shownError = await page.textContent('#error').catch(() => '?');
      console.error(`  ${user}: status ${JSON.stringify(status)}, error line ${JSON.stringify(shownError)}`);
      for (const line of log) console.error(`  ${user} console ${line}`);
    }
    process.exitCode = 1;
  } finally {
    stdin?.close();
    await session.close();
  }
}

class Session {
  constructor() {
    this.browsers = new Map(); // locale → a Chromium started with --lang=<locale>
    this.users = []; // { user, page, log }: what its console said is shown when something fails
  }

  async browserFor(locale) {
    if (!this.browsers.has(locale)) {
      this.browsers.set(
        locale,
        chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, `--lang=${locale}`] }),
      );
    }
    return this.browsers.get(locale);
  }

  async close() {
    for (const browser of this.browsers.values()) await (await browser).close();
  }

  /**
   * A user's page at `url`, in a browser context of its own (its own sessionStorage and
   * localStorage), in `where`'s language and time zone; `prepare(context)` runs before the
   * page loads (to route its WebSocket, say).
   */
  async open(user, url, where = ENGLISH_IN_NEW_YORK, prepare = null) {
    const browser = await this.browserFor(where.locale);
    const context = await browser.newContext({
      viewport: { width: 900, height: 700 },
      locale: where.locale,
      timezoneId: where.timezoneId,
    });
    if (prepare) await prepare(context);
    const page = await context.newPage();
    const log = [];
    const opened = { user, page, log, context };
    this.users.push(opened);
    page.on('console', (message) => {
      if (['error', 'warning'].includes(message.type())) log.push(`${message.type()}: ${message.text()}`);
    });
    page.on('pageerror', (error) => log.push(`page error: ${error.message}`));
    page.setDefaultTimeout(WAIT_MS);
    await page.goto(url);
    if (new URL(page.url()).searchParams.has('token')) {
      throw new Error(`${user}: the token is still in the address bar`);
    }
    return opened;
  }

  /** A user's page opened with `token`, showing `course` live. */
  async openCourse(user, baseUrl, token, course, where = ENGLISH_IN_NEW_YORK, prepare = null) {
    const opened = await this.open(user, `${baseUrl}/?token=${encodeURIComponent(token)}`, where, prepare);
    await chooseCourse(opened, course);
    return opened;
  }

  /** Console errors and warnings of every page (a clean run has none). */
  get consoleProblems() {
    return this.users.flatMap(({ user, log }) => log.map((line) => `${user}: ${line}`));
  }
}

/** The button of `course` in the page's course list (its name and badges). */
export const courseButton = (page, course) => page.locator(`#courses button[data-course-id=${quoted(course)}]`);

export async function chooseCourse({ user, page }, course) {
  const button = courseButton(page, course);
  await step(user, 'the course list', () => button.waitFor());
  await button.click();
  await step(user, `${course} to be the open course`, () =>
    page.locator(`#courses button[aria-current="true"][data-course-id=${quoted(course)}]`).waitFor(),
  );
  await waitForStatus({ user, page }, 'live');
}

export const waitForStatus = ({ user, page }, state, timeout = WAIT_MS) =>
  step(user, `status "${state}"`, () =>
    page.locator(`#status[data-state="${state}"]`).waitFor({ timeout }),
  );

// A script that works hand in hand with its test: it reports an event on stdout (one JSON
// line), the test does its part and answers with one JSON line on stdin.
// Opened at the first hand-over only: an open stdin would keep any other script running.
let stdin = null;
let stdinLines = null;

/** Report `event` (with `data`) and wait for the test's answer. */
export async function handOver(event, data = {}) {
  console.log(JSON.stringify({ event, ...data }));
  if (stdin === null) {
    stdin = createInterface({ input: process.stdin });
    stdinLines = stdin[Symbol.asyncIterator]();
  }
  const { value, done } = await stdinLines.next();
  if (done) throw new Error(`the test closed stdin instead of answering ${event}`);
  return JSON.parse(value);
}

/** The item of message `id` in a view of the page: timeline, thread or pins. */
export const itemOf = (page, id, view = 'timeline') =>
  page.locator(`li[data-view="${view}"][data-message-id="${id}"]`);

/** Wait until `predicate(arg)` holds in the page (bounded by the page's timeout). */
export const until = ({ user, page }, what, predicate, arg) =>
  step(user, what, () => page.waitForFunction(predicate, arg));

/** The list item of the message with `text` once it shows on the page. */
export function messageItem(page, text) {
  return page.locator('#messages li[data-message-id]', { hasText: text });
}

/** The id of the message with `text` once it shows on the page. */
export async function messageShown({ user, page }, text) {
  const item = messageItem(page, text);
  await step(user, `the message ${JSON.stringify(text)}`, () => item.waitFor());
  return item.getAttribute('data-message-id');
}

/**
 * Type `text` and send it with Enter or the button, once the server has answered: whether it
 * was accepted (the page empties the box only then; a refused text stays, to be sent again).
 */
export async function send({ user, page }, text, how = 'enter') {
  const idle = await page.textContent('#send'); // "Send", "보내기", …
  await page.fill('#composer', text);
  if (how === 'enter') await page.press('#composer', 'Enter');
  else await page.click('#send');
  // The key or click handler has set the button to "Sending…" by now; back is the answer.
  await step(user, 'the answer to a send', () =>
    page.waitForFunction((label) => document.getElementById('send').textContent === label, idle),
  );
  return (await page.inputValue('#composer')) === '';
}

/** Fails unless the send was accepted. */
export async function sendAccepted(user, text, how = 'enter') {
  if (!(await send(user, text, how))) {
    const shown = await user.page.textContent('#error');
    throw new Error(`${user.user}: the send of ${JSON.stringify(text)} was refused: ${shown}`);
  }
}

/** The ids the page lists; fails unless each shows once, in id order. */
export async function idsInOrder({ user, page }) {
  const ids = await page.$$eval('#messages li[data-message-id]', (items) =>
    items.map((item) => item.dataset.messageId),
  );
  const sorted = [...ids].sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0));
  if (new Set(ids).size !== ids.length || ids.join() !== sorted.join()) {
    throw new Error(`${user}: messages not unique and ordered by id: ${ids.join(', ')}`);
  }
  return ids;
}

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const WCAG_AA = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];

/**
 * What axe-core finds against WCAG 2.x A and AA on the page as it is now: [{ id, impact,
 * help, targets }]. Evaluated through the DevTools protocol, so the page's CSP (no inline
 * script) does not stop it, and nothing is added to what the page itself loads.
 */
export async function accessibilityViolations({ page }) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE_SOURCE);
  const results = await page.evaluate(
    (tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags } }),
    WCAG_AA,
  );
  return results.violations.map(({ id, impact, help, nodes }) => ({
    id,
    impact,
    help,
    targets: nodes.map((node) => node.target.join(' ')),
  }));
}

/** Switch the page's language with its own control, and wait until it took effect. */
export async function chooseLanguage({ user, page }, tag) {
  await page.selectOption('#language', tag);
  await step(user, `the page in ${tag}`, () =>
    page.waitForFunction((lang) => document.documentElement.lang === lang, tag),
  );
}

/**
 * Every word the page shows or says, as [where, language, text]: its title, text (hidden
 * parts too: a switch must reach them), aria-labels, titles and placeholders, each with the
 * language it is marked as (the nearest `lang`). Message content is left out: it is the
 * author's, in whatever language they wrote (a tombstone's words are the page's, and count).
 */
export function pageWords({ page }) {
  return page.evaluate(() => {
    const words = [];
    const where = (element) => {
      const parts = [];
      for (let node = element; node && node !== document.body; node = node.parentElement) {
        if (node.id) {
          parts.unshift(`#${node.id}`);
          break;
        }
        const item = node.dataset.messageId ? `[data-message-id="${node.dataset.messageId}"]` : '';
        parts.unshift(`${node.localName}${item}:nth-child(${[...node.parentElement.children].indexOf(node) + 1})`);
      }
      return parts.join(' > ');
    };
    const add = (place, element, text) => {
      const clean = text.replace(/\s+/g, ' ').trim();
      if (clean) words.push([place, element.closest('[lang]')?.lang ?? '', clean]);
    };
    add('title', document.documentElement, document.title);
    const texts = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = texts.nextNode(); node; node = texts.nextNode()) {
      const element = node.parentElement;
      if (element.closest('noscript')) continue;
      // Message content (timeline, thread, pins, earlier versions) is the author's.
      if (element.closest('.message .text') && !element.closest('.deleted')) continue;
      add(where(element), element, node.data);
    }
    for (const attribute of ['aria-label', 'title', 'placeholder']) {
      for (const element of document.body.querySelectorAll(`[${attribute}]`)) {
        add(`${where(element)}@${attribute}`, element, element.getAttribute(attribute));
      }
    }
    return words;
  });
}

/**
 * The keys each page asked for and its catalogue lacked (i18n.js records them), after
 * asking for every plural of every catalogue with counts whose categories this browser's
 * Intl.PluralRules has: a form a language needs but its catalogue lacks is missing too.
 */
export async function missingTranslations(session) {
  const missing = {};
  for (const { user, page } of session.users) {
    missing[user] = await page.evaluate(async () => {
      const { CATALOGUES, t } = await import(new URL('static/i18n.js', document.baseURI).href);
      for (const [language, catalogue] of Object.entries(CATALOGUES)) {
        for (const [key, entry] of Object.entries(catalogue)) {
          if (typeof entry !== 'object') continue;
          const names = Object.fromEntries(
            [...JSON.stringify(entry).matchAll(/\{(\w+)\}/g)].map(([, name]) => [name, name]),
          );
          for (const count of [0, 1, 2, 3, 5, 11, 21, 100, 1.5]) t(key, { ...names, count }, language);
        }
      }
      return window.missingTranslations;
    });
  }
  return missing;
}
