// Read state and mentions on the page. jisoo has two courses and two pages open, a Korean one
// (Seoul) and an English one (New York); ben, in COURSE_TWO only, writes there while both of
// jisoo's pages show COURSE_ONE. Both pages count COURSE_TWO's unread messages up live (one
// myUpdates subscription each) with the mention apart ("@1"); opening it shows "new
// messages" above ben's first unread message and the mention of jisoo highlighted; the
// Korean page scrolled to the bottom marks it read, and its badge clears. (The English page
// hears of that read only with the course's next message when its socket is on the other
// GraphQL process: myUpdates learns of a markRead on its own process alone.) The
// mentions panel lists the mention, takes a new one live, and opens its message by keyboard.
// axe-core on both pages with the badges, the divider and the panel showing.
//
// Env: BASE_URL JISOO_TOKEN BEN_TOKEN COURSE_ONE COURSE_TWO SCREENSHOT_DIR
//   JISOO_TOKEN (jisoo) is for both courses, BEN_TOKEN (ben) for COURSE_TWO; both are new.
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import { randomUUID } from 'node:crypto';
import {
  ENGLISH_IN_NEW_YORK,
  KOREAN_IN_SEOUL,
  accessibilityViolations,
  chooseCourse,
  courseButton,
  idsInOrder,
  inputs,
  itemOf,
  messageShown,
  missingTranslations,
  pageWords,
  quoted,
  run,
  sendAccepted,
  step,
  until,
} from './lib.mjs';

const given = inputs('page_read_state', [
  'BASE_URL',
  'JISOO_TOKEN',
  'BEN_TOKEN',
  'COURSE_ONE',
  'COURSE_TWO',
  'SCREENSHOT_DIR',
]);
const [one, two] = [given.COURSE_ONE, given.COURSE_TWO];
const shot = ({ page }, name) => page.screenshot({ path: `${given.SCREENSHOT_DIR}/${name}.png`, fullPage: true });
const NEW_MESSAGES = 12; // more than the timeline shows at once: the page opens at the first
const MENTION_AT = 1; // ben's second new message mentions jisoo

/** The accessible name of a course's badges on `user`'s page (null: none shown). */
const badges = ({ page }, course) =>
  page.evaluate((selector) => document.querySelector(selector)?.getAttribute('aria-label') ?? null, `#courses button[data-course-id=${quoted(course)}] .badges`);

/** Wait until the course's badges are named `label` (null: until there are none). */
const badgesSay = (user, course, label, when = '') =>
  until(
    user,
    `the badges of ${course} to say ${JSON.stringify(label)}${when}`,
    ([selector, label]) => (document.querySelector(selector)?.getAttribute('aria-label') ?? null) === label,
    [`#courses button[data-course-id=${quoted(course)}] .badges`, label],
  );

const counted = (user, selector, count) =>
  until(
    user,
    `${count} of ${selector}`,
    ([selector, count]) => document.querySelectorAll(selector).length === count,
    [selector, count],
  );

/** What the timeline shows around the read marker, and where it is scrolled to. */
const timelineState = ({ page }) =>
  page.evaluate(() => {
    const divider = document.getElementById('unread-divider');
    const history = document.querySelector('.history');
    return {
      divider: divider?.textContent ?? null,
      dividerBefore: divider?.nextElementSibling?.dataset.messageId ?? null,
      dividerAfter: divider?.previousElementSibling?.dataset.messageId ?? null,
      dividerShown:
        divider !== null &&
        divider.getBoundingClientRect().top >= history.getBoundingClientRect().top &&
        divider.getBoundingClientRect().bottom <= history.getBoundingClientRect().bottom,
      atBottom: history.scrollHeight - history.scrollTop - history.clientHeight < 80,
      mentionsOfMe: [...document.querySelectorAll('#messages li.mentions-me')].map((li) => li.dataset.messageId),
      highlighted: [...document.querySelectorAll('#messages .mention.me')].map((span) => span.textContent),
      marker: document.querySelector('#messages li.mentions-me .marker.mentioned')?.textContent ?? null,
      current: document.querySelector('#courses button[aria-current="true"]')?.dataset.courseId ?? null,
    };
  });

const mentionsPanel = ({ page }) =>
  page.evaluate(() => ({
    expanded: document.getElementById('mentions-toggle').getAttribute('aria-expanded'),
    heading: document.getElementById('mentions-heading').textContent,
    entries: [...document.querySelectorAll('#mention-list button.mention-link')].map((button) => ({
      course: button.dataset.courseId,
      id: button.dataset.messageId,
      from: button.querySelector('.user').textContent,
      text: button.querySelector('.text').textContent,
      highlighted: [...button.querySelectorAll('.mention.me')].map((span) => span.textContent),
    })),
  }));

const activeElement = ({ page }) =>
  page.evaluate(() => ({
    id: document.activeElement.id,
    message: document.activeElement.closest('li[data-message-id]')?.dataset.messageId ?? null,
  }));

await run('page_read_state', async (session) => {
  const url = (token) => `${given.BASE_URL}/?token=${encodeURIComponent(token)}`;
  const jisooKo = await session.open('jisoo-ko', url(given.JISOO_TOKEN), KOREAN_IN_SEOUL);
  await chooseCourse(jisooKo, one);
  const jisooEn = await session.open('jisoo-en', url(given.JISOO_TOKEN), ENGLISH_IN_NEW_YORK);
  await chooseCourse(jisooEn, one);
  const ben = await session.openCourse('ben', given.BASE_URL, given.BEN_TOKEN, two, ENGLISH_IN_NEW_YORK);
  const summary = { accessibility: {}, badges: {} };

  // --- an earlier message, read: counted live, then marked read by opening the course ---
  const earlier = `before you came ${randomUUID()}`;
  await sendAccepted(ben, earlier);
  const earlierId = await messageShown(ben, earlier);
  await badgesSay(jisooEn, two, '1 unread');
  await badgesSay(jisooKo, two, '안 읽은 메시지 1개');
  await chooseCourse(jisooKo, two); // a short course: at its bottom at once, so it is read
  await messageShown(jisooKo, earlier);
  await badgesSay(jisooKo, two, null);
  await chooseCourse(jisooKo, one);

  // --- ben writes; both pages count up live, the mention apart ---
  const texts = Array.from({ length: NEW_MESSAGES }, (_, n) =>
    n === MENTION_AT ? `@jisoo could you check this? ${randomUUID()}` : `news ${n + 1} ${randomUUID()}`,
  );
  await sendAccepted(ben, texts[0]);
  await badgesSay(jisooEn, two, '1 unread');
  await badgesSay(jisooKo, two, '안 읽은 메시지 1개');
  for (const text of texts.slice(1)) await sendAccepted(ben, text);
  const ids = [];
  for (const text of texts) ids.push(await messageShown(ben, text));
  await badgesSay(jisooEn, two, `${NEW_MESSAGES} unread, 1 mention`);
  await badgesSay(jisooKo, two, `안 읽은 메시지 ${NEW_MESSAGES}개, 멘션 1개`);
  summary.badges.live = {
    en: await badges(jisooEn, two),
    ko: await badges(jisooKo, two),
    shown: await courseButton(jisooEn.page, two).locator('.badge').allTextContents(),
    mentionsToggle: {
      en: await jisooEn.page.getAttribute('#mentions-toggle .badges', 'aria-label'),
      ko: await jisooKo.page.getAttribute('#mentions-toggle .badges', 'aria-label'),
    },
    courseOne: { en: await badges(jisooEn, one), ko: await badges(jisooKo, one) },
    benCourseTwo: await badges(ben, two), // his own messages are read
  };
  summary.benHighlighted = await ben.page.$$eval('#messages .mention', (spans) =>
    spans.map((span) => ({ text: span.textContent, me: span.classList.contains('me') })),
  );

  // --- opening the course: "new messages" above ben's first new one, the mention marked ---
  await chooseCourse(jisooEn, two);
  await messageShown(jisooEn, texts.at(-1));
  await chooseCourse(jisooKo, two);
  await messageShown(jisooKo, texts.at(-1));
  summary.opened = { en: await timelineState(jisooEn), ko: await timelineState(jisooKo) };
  // Not at the bottom: nothing is marked read yet, on either page.
  await jisooEn.page.waitForTimeout(1500);
  summary.badges.opened = { en: await badges(jisooEn, two), ko: await badges(jisooKo, two) };
  summary.accessibility.readState = {
    ko: await accessibilityViolations(jisooKo),
    en: await accessibilityViolations(jisooEn),
  };
  await shot(jisooKo, 'read-state-ko');
  await shot(jisooEn, 'read-state-en');
  summary.words = await pageWords(jisooKo);

  // --- scrolled to the bottom: read; the badge clears ---
  await jisooKo.page.evaluate(() => {
    const history = document.querySelector('.history');
    history.scrollTop = history.scrollHeight;
  });
  await badgesSay(jisooKo, two, null, ' (scrolled to the bottom)');
  summary.badges.read = {
    ko: await badges(jisooKo, two),
    mentionsToggle: await jisooKo.page.locator('#mentions-toggle .badges').count(),
  };
  summary.dividerStays = (await timelineState(jisooKo)).dividerBefore;

  // --- the mentions panel: the mention, then a new one live, newest first ---
  for (const user of [jisooKo, jisooEn]) {
    await user.page.click('#mentions-toggle');
    await counted(user, '#mention-list button.mention-link', 1);
  }
  const again = `@jisoo one more thing ${randomUUID()}`;
  await sendAccepted(ben, again);
  const againId = await messageShown(ben, again);
  for (const user of [jisooKo, jisooEn]) await counted(user, '#mention-list button.mention-link', 2);
  summary.panel = { en: await mentionsPanel(jisooEn), ko: await mentionsPanel(jisooKo) };
  summary.accessibility.mentions = {
    ko: await accessibilityViolations(jisooKo),
    en: await accessibilityViolations(jisooEn),
  };
  await shot(jisooKo, 'mentions-ko');
  await shot(jisooEn, 'mentions-en');

  // --- by keyboard: from another course, Enter on a mention opens its message; Escape
  // closes the panel and gives the focus back to its toggle ---
  await chooseCourse(jisooEn, one);
  await jisooEn.page.focus(`#mention-list button[data-message-id=${quoted(ids[MENTION_AT])}]`);
  await jisooEn.page.keyboard.press('Enter');
  await step('jisoo-en', 'the mentioned message focused', () =>
    jisooEn.page.waitForFunction(
      (id) => document.activeElement?.matches(`#messages li[data-message-id="${id}"]`),
      ids[MENTION_AT],
    ),
  );
  summary.keyboard = { opened: await activeElement(jisooEn), current: (await timelineState(jisooEn)).current };
  summary.keyboard.messageInView = await itemOf(jisooEn.page, ids[MENTION_AT]).isVisible();
  await jisooEn.page.focus('#mention-list button.mention-link');
  await jisooEn.page.keyboard.press('Escape');
  await step('jisoo-en', 'the panel to close', () => jisooEn.page.locator('#mentions').waitFor({ state: 'hidden' }));
  summary.keyboard.closed = await activeElement(jisooEn);
  summary.keyboard.expanded = await jisooEn.page.getAttribute('#mentions-toggle', 'aria-expanded');

  // The Korean page, at the bottom, read the new mention as it came.
  await badgesSay(jisooKo, two, null, ' (read as it came)');
  summary.ids = { earlier: earlierId, news: ids, again: againId };
  summary.texts = { earlier, news: texts, again };
  summary.timeline = { ko: await idsInOrder(jisooKo), en: await idsInOrder(jisooEn) };
  summary.missing = await missingTranslations(session);
  summary.consoleProblems = session.consoleProblems;
  return summary;
});
