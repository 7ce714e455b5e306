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
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
  const session = new Session(browser);
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
    await browser.close();
  }
}

class Session {
  constructor(browser) {
    this.browser = browser;
    this.users = []; // { user, page, log }: what its console said is shown when something fails
  }

  /** A user's page at `url`, in a browser context of its own (its own sessionStorage). */
  async open(user, url) {
    const context = await this.browser.newContext({ viewport: { width: 900, height: 700 } });
    const page = await context.newPage();
    const log = [];
    const opened = { user, page, log };
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
  async openCourse(user, baseUrl, token, course) {
    const opened = await this.open(user, `${baseUrl}/?token=${encodeURIComponent(token)}`);
    await chooseCourse(opened, course);
    return opened;
  }

  /** Console errors and warnings of every page (a clean run has none). */
  get consoleProblems() {
    return this.users.flatMap(({ user, log }) => log.map((line) => `${user}: ${line}`));
  }
}

export async function chooseCourse({ user, page }, course) {
  await step(user, 'the course list', () =>
    page.locator(`#course option[value=${quoted(course)}]`).waitFor({ state: 'attached' }),
  );
  await page.selectOption('#course', course);
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
  await page.fill('#composer', text);
  if (how === 'enter') await page.press('#composer', 'Enter');
  else await page.click('#send');
  // The key or click handler has set the button to "Sending…" by now; back is the answer.
  await step(user, 'the answer to a send', () =>
    page.waitForFunction(() => document.getElementById('send').textContent === 'Send'),
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
