// Two users chat through the web page, each in a browser context of its own, in Debian's
// headless Chromium (playwright-core never downloads a browser).
//
// Usage: node two_users.mjs BASE_URL ALICE_TOKEN BOB_TOKEN COURSE_ID SCREENSHOT [HISTORY_TEXT]
//   or the same as env vars: BASE_URL ALICE_TOKEN BOB_TOKEN COURSE_ID SCREENSHOT HISTORY_TEXT
//   (env keeps the tokens out of `ps`). HISTORY_TEXT: a message already in the course that
//   both pages must show from history.
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import { randomUUID } from 'node:crypto';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT_MS = 15_000; // for one thing to show on a page
const TOTAL_MS = 120_000; // for the whole run: never hang a test suite

const names = ['BASE_URL', 'ALICE_TOKEN', 'BOB_TOKEN', 'COURSE_ID', 'SCREENSHOT', 'HISTORY_TEXT'];
const given = Object.fromEntries(names.map((name, i) => [name, process.argv[2 + i] ?? process.env[name]]));
const missing = names.slice(0, 5).filter((name) => !given[name]);
if (missing.length > 0) {
  console.error(`two_users: missing ${missing.join(', ')} (see the usage at the top of this file)`);
  process.exit(2);
}
const baseUrl = given.BASE_URL.replace(/\/+$/, '');
const course = given.COURSE_ID;

const watchdog = setTimeout(() => {
  console.error(`two_users: FAILED: still running after ${TOTAL_MS / 1000} s`);
  process.exit(1);
}, TOTAL_MS);
watchdog.unref();

// node has no CSS.escape; course ids are [A-Za-z0-9._-], so quoting them is enough.
const quoted = (value) => `"${value.replace(/["\\]/g, '\\$&')}"`;
const pages = []; // { user, page, log }: what its console said is shown when something fails

/** One user's page at the course, live. */
async function openPage(browser, user, token) {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  const log = [];
  pages.push({ user, page, log });
  page.on('console', (message) => {
    if (['error', 'warning'].includes(message.type())) log.push(`${message.type()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => log.push(`page error: ${error.message}`));
  page.setDefaultTimeout(WAIT_MS);
  await page.goto(`${baseUrl}/?token=${encodeURIComponent(token)}`);
  if (new URL(page.url()).searchParams.has('token')) {
    throw new Error(`${user}: the token is still in the address bar`);
  }
  await step(user, 'the course list', () =>
    page.locator(`#course option[value=${quoted(course)}]`).waitFor({ state: 'attached' }),
  );
  await page.selectOption('#course', course);
  await step(user, '"live" status', () => page.locator('#status[data-state="live"]').waitFor());
  return { user, page, log };
}

async function step(user, what, action) {
  try {
    return await action();
  } catch (error) {
    throw new Error(`${user}: waiting for ${what}: ${error.message.split('\n')[0]}`);
  }
}

/** The id of the message with `text` once it shows on the page. */
async function messageShown({ user, page }, text) {
  const item = page.locator('#messages li[data-message-id]', { hasText: text });
  await step(user, `the message ${JSON.stringify(text)}`, () => item.waitFor());
  return item.getAttribute('data-message-id');
}

async function send({ user, page }, text, how) {
  await page.fill('#composer', text);
  if (how === 'enter') await page.press('#composer', 'Enter');
  else await page.click('#send');
  // Sent: the server answered and the page emptied the box.
  await step(user, 'the composer to clear after sending', () =>
    page.waitForFunction(() => document.getElementById('composer').value === ''),
  );
}

async function idsInOrder({ user, page }) {
  const ids = await page.$$eval('#messages li[data-message-id]', (items) =>
    items.map((item) => item.dataset.messageId),
  );
  const sorted = [...ids].sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : BigInt(a) > BigInt(b) ? 1 : 0));
  if (new Set(ids).size !== ids.length || ids.join() !== sorted.join()) {
    throw new Error(`${user}: messages not unique and ordered by id: ${ids.join(', ')}`);
  }
  return ids;
}

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
try {
  const alice = await openPage(browser, 'alice', given.ALICE_TOKEN);
  const bob = await openPage(browser, 'bob', given.BOB_TOKEN);
  if (given.HISTORY_TEXT) {
    for (const user of pages) await messageShown(user, given.HISTORY_TEXT);
  }

  const hello = `hello from alice ${randomUUID()}`;
  await send(alice, hello, 'enter');
  const helloId = await messageShown(bob, hello);
  const reply = `bob replies ${randomUUID()}`;
  await send(bob, reply, 'click');
  const replyId = await messageShown(alice, reply);
  if (BigInt(replyId) <= BigInt(helloId)) throw new Error(`reply ${replyId} not after ${helloId}`);
  // Each page shows both, once each, in id order; only own messages have a Delete button.
  for (const user of pages) {
    await messageShown(user, hello);
    await messageShown(user, reply);
    await idsInOrder(user);
  }
  const bobsDeletes = await bob.page.$$eval('#messages li:has(button.delete)', (items) =>
    items.map((item) => item.dataset.messageId),
  );
  if (bobsDeletes.join() !== replyId) {
    throw new Error(`bob (no moderator) may delete exactly his reply, the page offers ${bobsDeletes}`);
  }

  await bob.page.screenshot({ path: given.SCREENSHOT, fullPage: true });
  const status = await bob.page.textContent('#status');
  console.log(
    JSON.stringify({
      ok: true,
      course,
      hello: { id: helloId, text: hello },
      reply: { id: replyId, text: reply },
      messages: { alice: (await idsInOrder(alice)).length, bob: (await idsInOrder(bob)).length },
      status,
      screenshot: given.SCREENSHOT,
    }),
  );
} catch (error) {
  console.error(`two_users: FAILED: ${error.message}`);
  for (const { user, page, log } of pages) {
    const status = await page.textContent('#status').catch(() => '?');
    const shownError = await page.textContent('#error').catch(() => '?');
    console.error(`  ${user}: status ${JSON.stringify(status)}, error line ${JSON.stringify(shownError)}`);
    for (const line of log) console.error(`  ${user} console ${line}`);
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
