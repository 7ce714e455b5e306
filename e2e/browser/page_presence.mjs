// Presence and typing on two pages: alice's English one (New York) opens the course first,
// then minji's Korean one (Seoul). alice sees "2 online" live and, on demand, the member list
// with minji (opened and closed by keyboard); minji types for a while and alice sees
// "minji is typing…" written once however often it is renewed, while minji's own page names
// no one; minji sends and the line goes. alice types, minji sees it. Others type through the
// API: one in a thread alice has open (shown in the thread panel only), then two and three in
// the course ("dan and eve are typing…", "3 people are typing…"). minji closes her page
// and alice sees "1 online", the list without her. axe-core on both pages with the member
// list open and with the typing line showing.
//
// Env: BASE_URL MINJI_TOKEN ALICE_TOKEN CAROL_TOKEN DAN_TOKEN EVE_TOKEN FRANK_TOKEN
//   COURSE_ID SCREENSHOT_DIR. Every token is for COURSE_ID alone, a new course no one else
//   opens; carol, dan, eve and frank never open it (they type through the API).
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import { randomUUID } from 'node:crypto';
import {
  ENGLISH_IN_NEW_YORK,
  KOREAN_IN_SEOUL,
  accessibilityViolations,
  inputs,
  itemOf,
  messageShown,
  missingTranslations,
  pageWords,
  run,
  sendAccepted,
  step,
  until,
} from './lib.mjs';

const given = inputs('page_presence', [
  'BASE_URL',
  'MINJI_TOKEN',
  'ALICE_TOKEN',
  'CAROL_TOKEN',
  'DAN_TOKEN',
  'EVE_TOKEN',
  'FRANK_TOKEN',
  'COURSE_ID',
  'SCREENSHOT_DIR',
]);
const course = given.COURSE_ID;
const shot = ({ page }, name) => page.screenshot({ path: `${given.SCREENSHOT_DIR}/${name}.png`, fullPage: true });
// minji types this long, so her page renews `typing` (every 3 s) at least twice.
const TYPING_FOR_MS = 7000;

/** Wait until the element of `selector` says `text` (trimmed; '' for nothing). */
const says = (user, selector, text) =>
  until(
    user,
    `${selector} to say ${JSON.stringify(text)}`,
    ([selector, text]) => (document.querySelector(selector)?.textContent.trim() ?? null) === text,
    [selector, text],
  );

const text = ({ page }, selector) =>
  page.evaluate((selector) => document.querySelector(selector).textContent, selector);

/** The member list as shown: each member's name and their "online since" words. */
const members = ({ page }) =>
  page.$$eval('#member-list li.member', (items) =>
    items.map((li) => ({
      id: li.dataset.userId,
      name: li.querySelector('.user').textContent,
      since: li.querySelector('time').textContent,
      dateTime: li.querySelector('time').dateTime,
    })),
  );

const activeElement = ({ page }) => page.evaluate(() => document.activeElement.id);

/** `typing(courseId, threadId)` as `token`'s user, through the API (someone on another device). */
async function typingThroughApi(token, threadId = null) {
  const response = await fetch(`${given.BASE_URL}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({
      query: 'mutation($c: ID!, $t: ID) { typing(courseId: $c, threadId: $t) { published } }',
      variables: { c: course, t: threadId },
    }),
  });
  const answer = await response.json();
  if (!answer.data?.typing?.published) throw new Error(`typing was not published: ${JSON.stringify(answer)}`);
}

/** Count every write to the typing line from now on (a live region reads each one out). */
const countTypingWrites = ({ page }) =>
  page.evaluate(() => {
    window.typingWrites = [];
    new MutationObserver(() => window.typingWrites.push(document.getElementById('typing').textContent)).observe(
      document.getElementById('typing'),
      { childList: true, characterData: true, subtree: true },
    );
  });

await run('page_presence', async (session) => {
  const alice = await session.openCourse('alice', given.BASE_URL, given.ALICE_TOKEN, course, ENGLISH_IN_NEW_YORK);
  const summary = { accessibility: {}, online: {}, typing: {} };
  await says(alice, '#presence-toggle', '1 online');

  // --- minji comes: alice sees 2 online, live, and the member list on demand ---
  const minji = await session.openCourse('minji', given.BASE_URL, given.MINJI_TOKEN, course, KOREAN_IN_SEOUL);
  await says(alice, '#presence-toggle', '2 online');
  await says(minji, '#presence-toggle', '2명 접속 중');
  summary.online.before = { en: await text(alice, '#presence-toggle'), ko: await text(minji, '#presence-toggle') };
  summary.online.listHiddenBefore = await alice.page.locator('#presence').isHidden();
  // By keyboard: Enter on "2 online" opens the list (focus on its heading), Escape closes it
  // and the focus returns to the toggle.
  await alice.page.focus('#presence-toggle');
  await alice.page.keyboard.press('Enter');
  await step('alice', 'the member list', () => alice.page.locator('#member-list li[data-user-id="minji"]').waitFor());
  summary.keyboard = {
    opened: await activeElement(alice),
    expanded: await alice.page.getAttribute('#presence-toggle', 'aria-expanded'),
  };
  summary.members = { en: await members(alice) };
  await alice.page.keyboard.press('Escape');
  await step('alice', 'the member list to close', () => alice.page.locator('#presence').waitFor({ state: 'hidden' }));
  summary.keyboard.closed = await activeElement(alice);
  summary.keyboard.expandedAfter = await alice.page.getAttribute('#presence-toggle', 'aria-expanded');
  await alice.page.click('#presence-toggle');
  await minji.page.click('#presence-toggle');
  await step('minji', 'the member list', () => minji.page.locator('#member-list li[data-user-id="alice"]').waitFor());
  summary.members.ko = await members(minji);
  summary.accessibility.presence = {
    ko: await accessibilityViolations(minji),
    en: await accessibilityViolations(alice),
  };
  await shot(minji, 'presence-ko');
  await shot(alice, 'presence-en');
  summary.words = { presence: await pageWords(minji) };

  // --- minji types: alice sees it, written once while minji keeps typing; not on minji's
  // own page; her send ends it ---
  await countTypingWrites(alice);
  const hello = `안녕하세요 여러분 ${randomUUID()}`;
  await minji.page.focus('#composer');
  const startedAt = Date.now();
  await minji.page.keyboard.type(hello.slice(0, 3));
  await says(alice, '#typing', 'minji is typing…');
  await minji.page.keyboard.type(hello.slice(3), { delay: Math.ceil(TYPING_FOR_MS / hello.length) });
  summary.typing.typedForMs = Date.now() - startedAt;
  summary.typing.shown = await text(alice, '#typing');
  summary.typing.ownPage = await text(minji, '#typing');
  summary.typing.writesWhileTyping = await alice.page.evaluate(() => window.typingWrites);
  await shot(alice, 'typing-en');
  await minji.page.keyboard.press('Enter');
  await messageShown(alice, hello);
  await says(alice, '#typing', '');
  summary.typing.afterSend = await text(alice, '#typing');
  summary.typing.writes = await alice.page.evaluate(() => window.typingWrites);
  const helloId = await messageShown(minji, hello);
  summary.typing.composerAfterSend = await minji.page.inputValue('#composer');

  // --- alice types: minji sees it (and alice does not see herself) ---
  await alice.page.focus('#composer');
  await alice.page.keyboard.type('hi minji');
  await says(minji, '#typing', 'alice 님이 입력하고 있어요…');
  summary.typing.ko = await text(minji, '#typing');
  summary.typing.aliceOwnPage = await text(alice, '#typing');
  summary.accessibility.typing = {
    ko: await accessibilityViolations(minji),
    en: await accessibilityViolations(alice),
  };
  await shot(minji, 'typing-ko');
  summary.words.typing = await pageWords(minji);
  await sendAccepted(alice, `hi minji ${randomUUID()}`);
  await says(minji, '#typing', '');

  // --- someone types in a thread: shown in that thread's panel, not under the course's composer ---
  await itemOf(alice.page, helloId).locator('[data-action="reply"]').click();
  await step('alice', 'the thread panel', () => alice.page.locator('#thread').waitFor());
  await typingThroughApi(given.CAROL_TOKEN, helloId);
  await says(alice, '#thread-typing', 'carol is typing…');
  summary.typing.thread = { thread: await text(alice, '#thread-typing'), course: await text(alice, '#typing') };
  summary.typing.thread.minjiCourse = await text(minji, '#typing');
  await alice.page.keyboard.press('Escape'); // the focus is in the thread's composer

  // --- two, then three type in the course ---
  await Promise.all([typingThroughApi(given.DAN_TOKEN), typingThroughApi(given.EVE_TOKEN)]);
  await says(alice, '#typing', 'dan and eve are typing…');
  await says(minji, '#typing', 'dan 및 eve 님이 입력하고 있어요…');
  summary.typing.two = { en: await text(alice, '#typing'), ko: await text(minji, '#typing') };
  await typingThroughApi(given.FRANK_TOKEN);
  await says(alice, '#typing', '3 people are typing…');
  await says(minji, '#typing', '3명이 입력하고 있어요…');
  summary.typing.three = { en: await text(alice, '#typing'), ko: await text(minji, '#typing') };
  summary.missing = await missingTranslations(session);

  // --- minji closes her page: alice sees 1 online, and the list without her ---
  await minji.context.close();
  await says(alice, '#presence-toggle', '1 online');
  await step('alice', 'minji to leave the member list', () =>
    alice.page.locator('#member-list li[data-user-id="minji"]').waitFor({ state: 'detached' }),
  );
  summary.online.after = await text(alice, '#presence-toggle');
  summary.members.after = await members(alice);

  summary.ids = { hello: helloId };
  summary.consoleProblems = session.consoleProblems;
  return summary;
});
