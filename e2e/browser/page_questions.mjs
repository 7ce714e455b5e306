// Questions and timetable modes on two pages: minji, a student (Korean page, Seoul), and
// mia, a moderator of every course here (English page, New York).
// - minji ticks "ask as a question" and types one like a question the test seeded: the page
//   suggests it; she opens its thread from the suggestion, then asks a new question.
// - mia sees it live as an open question, answers it in its thread and endorses the answer;
//   minji sees the endorsement live (the answer marked, the question's count) and marks her
//   question resolved; mia sees that live.
// - minji's questions list: Open, Resolved and All, a second page with "load more", opened
//   and closed by keyboard, an entry opening its thread.
// - the mode banner: a read-only course (both composers disabled, a moderator's too: the
//   server refuses everyone) and a slow-mode course (minji's send, then the wait until her
//   next; after a reload the page learns the wait from the server's refusal; mia is exempt).
// axe-core on both pages with each new part showing.
//
// Env: BASE_URL STUDENT_TOKEN MODERATOR_TOKEN COURSE_ID READ_ONLY_COURSE SLOW_COURSE
//   TYPED_QUESTION (like the seeded question SIMILAR_ID) SIMILAR_ID SCREENSHOT_DIR. The
//   tokens are for the three courses, mia's moderates them; no one else opens them.
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import { randomUUID } from 'node:crypto';
import {
  ENGLISH_IN_NEW_YORK,
  KOREAN_IN_SEOUL,
  accessibilityViolations,
  chooseCourse,
  inputs,
  itemOf,
  messageShown,
  missingTranslations,
  pageWords,
  run,
  send,
  sendAccepted,
  step,
  until,
  waitForStatus,
} from './lib.mjs';

const given = inputs('page_questions', [
  'BASE_URL',
  'STUDENT_TOKEN',
  'MODERATOR_TOKEN',
  'COURSE_ID',
  'READ_ONLY_COURSE',
  'SLOW_COURSE',
  'TYPED_QUESTION',
  'SIMILAR_ID',
  'SCREENSHOT_DIR',
]);
const course = given.COURSE_ID;
const shot = ({ page }, name) => page.screenshot({ path: `${given.SCREENSHOT_DIR}/${name}.png`, fullPage: true });

/** Wait until the element of `selector` says `text` (trimmed; '' for nothing). */
const says = (user, selector, text) =>
  until(
    user,
    `${selector} to say ${JSON.stringify(text)}`,
    ([selector, text]) => (document.querySelector(selector)?.textContent.trim() ?? null) === text,
    [selector, text],
  );

const text = ({ page }, selector) => page.evaluate((selector) => document.querySelector(selector).textContent, selector);

const activeElement = ({ page }) => page.evaluate(() => document.activeElement.id);

/** The markers of a message in a view: "open question", "1 endorsed answer", "endorsed", … */
const markers = ({ page }, id, view) =>
  itemOf(page, id, view).evaluate((li) => [...li.querySelectorAll(':scope > .meta .marker')].map((m) => m.textContent));

/** Wait until message `id` in `view` shows a marker saying `words`. */
const marked = (user, id, view, words) =>
  until(
    user,
    `message ${id} in the ${view} marked ${JSON.stringify(words)}`,
    ([id, view, words]) =>
      [...(document.querySelector(`li[data-view="${view}"][data-message-id="${id}"]`)?.querySelectorAll(':scope > .meta .marker') ?? [])].some(
        (marker) => marker.textContent === words,
      ),
    [id, view, words],
  );

/** The questions list as shown: ids, newest first. */
const listed = ({ page }) =>
  page.$$eval('#question-list button.question-link', (buttons) => buttons.map((button) => button.dataset.messageId));

/** Choose `filter` and wait until the list shows exactly `ids` (newest first). */
async function filterShows(user, filter, ids) {
  await user.page.selectOption('#questions-filter', filter);
  await until(
    user,
    `the ${filter} questions ${ids.join(', ')}`,
    (ids) =>
      [...document.querySelectorAll('#question-list button.question-link')].map((b) => b.dataset.messageId).join() ===
      ids.join(),
    ids,
  );
  return listed(user);
}

const composerState = ({ page }) =>
  page.evaluate(() => ({
    composer: document.getElementById('composer').disabled,
    send: document.getElementById('send').disabled,
    ask: document.getElementById('ask-question').disabled,
    banner: document.getElementById('mode-banner').textContent,
    bannerTitle: document.getElementById('mode-banner').title,
    bannerHidden: document.getElementById('mode-banner').hidden,
  }));

await run('page_questions', async (session) => {
  const summary = { accessibility: {}, words: {} };
  const mia = await session.openCourse('mia', given.BASE_URL, given.MODERATOR_TOKEN, course, ENGLISH_IN_NEW_YORK);
  const minji = await session.openCourse('minji', given.BASE_URL, given.STUDENT_TOKEN, course, KOREAN_IN_SEOUL);

  // --- asking: the earlier question like the one typed is suggested, and opens its thread ---
  await minji.page.check('#ask-question');
  await minji.page.fill('#composer', given.TYPED_QUESTION);
  const suggestion = minji.page.locator(`#similar-list button[data-message-id="${given.SIMILAR_ID}"]`);
  await step('minji', 'the similar question suggested', () => suggestion.waitFor());
  summary.similar = {
    heading: await text(minji, '#similar-heading'),
    ids: await minji.page.$$eval('#similar-list button', (buttons) => buttons.map((b) => b.dataset.messageId)),
  };
  summary.accessibility.similar = await accessibilityViolations(minji);
  summary.words.similar = await pageWords(minji);
  await shot(minji, 'questions-similar-ko');
  // By keyboard: the suggestion opens the question's thread, Escape closes it, focus back.
  await suggestion.focus();
  await minji.page.keyboard.press('Enter');
  await step('minji', 'the suggested question in the thread panel', () =>
    itemOf(minji.page, given.SIMILAR_ID, 'thread').waitFor(),
  );
  summary.similar.threadFocus = await activeElement(minji);
  await minji.page.keyboard.press('Escape');
  await step('minji', 'the thread to close', () => minji.page.locator('#thread').waitFor({ state: 'hidden' }));
  summary.similar.focusBack = await minji.page.evaluate(() => document.activeElement.dataset.messageId ?? null);

  // Not the same question after all: she asks hers.
  const asked = `시험에 계산기를 써도 되나요? ${randomUUID()}`;
  await sendAccepted(minji, asked);
  const questionId = await messageShown(minji, asked);
  await marked(minji, questionId, 'timeline', '미해결 질문');
  summary.asked = {
    id: questionId,
    askAfterSend: await minji.page.isChecked('#ask-question'),
    similarHidden: await minji.page.locator('#similar').isHidden(),
    minji: await markers(minji, questionId, 'timeline'),
  };

  // --- mia sees it live, answers in its thread and endorses the answer ---
  await messageShown(mia, asked);
  await marked(mia, questionId, 'timeline', 'open question');
  summary.asked.mia = await markers(mia, questionId, 'timeline');
  await itemOf(mia.page, questionId).locator('[data-action="reply"]').click();
  await step('mia', 'the question in the thread panel', () => itemOf(mia.page, questionId, 'thread').waitFor());
  const answer = `Yes, a non-programmable one. ${randomUUID()}`;
  await mia.page.fill('#thread-composer', answer);
  await mia.page.press('#thread-composer', 'Enter');
  const answerItem = mia.page.locator('#thread-replies li[data-message-id]', { hasText: answer });
  await step('mia', 'her answer in the thread', () => answerItem.waitFor());
  const answerId = await answerItem.getAttribute('data-message-id');
  // minji follows her question's thread before the endorsement comes.
  await itemOf(minji.page, questionId).locator('[data-action="open-thread"]').click();
  await step('minji', 'the answer in her thread', () => itemOf(minji.page, answerId, 'thread').waitFor());
  summary.endorse = {
    minjiButtons: await itemOf(minji.page, answerId, 'thread').locator('[data-action="endorse"]').count(),
    miaLabel: await itemOf(mia.page, answerId, 'thread').locator('[data-action="endorse"]').getAttribute('aria-label'),
    miaResolveOnAnswer: await itemOf(mia.page, answerId, 'thread').locator('[data-action="resolve"]').count(),
  };
  await itemOf(mia.page, answerId, 'thread').locator('[data-action="endorse"]').click();
  await marked(mia, answerId, 'thread', 'endorsed');
  await marked(mia, questionId, 'thread', '1 endorsed answer');
  summary.accessibility.endorsed = await accessibilityViolations(mia);
  summary.words.endorsed = await pageWords(mia);
  await shot(mia, 'questions-endorsed-en');

  // --- minji sees it live, and marks her question resolved; mia sees that live ---
  await marked(minji, answerId, 'thread', '추천됨');
  await marked(minji, questionId, 'thread', '추천 답변 1개');
  await marked(minji, questionId, 'timeline', '추천 답변 1개');
  summary.endorse.minji = {
    answer: await markers(minji, answerId, 'thread'),
    question: await markers(minji, questionId, 'timeline'),
  };
  const resolve = itemOf(minji.page, questionId, 'thread').locator('[data-action="resolve"]');
  summary.resolve = { label: await resolve.getAttribute('aria-label') };
  await resolve.click();
  await marked(minji, questionId, 'thread', '해결된 질문');
  await step('minji', 'the reopen button', () =>
    itemOf(minji.page, questionId, 'thread').locator('[data-action="reopen"]').waitFor(),
  );
  await marked(mia, questionId, 'thread', 'resolved question');
  await marked(mia, questionId, 'timeline', 'resolved question');
  summary.resolve.minji = await markers(minji, questionId, 'thread');
  summary.resolve.mia = await markers(mia, questionId, 'timeline');
  summary.accessibility.resolved = await accessibilityViolations(minji);
  summary.words.resolved = await pageWords(minji);
  await shot(minji, 'questions-resolved-ko');
  await minji.page.click('#thread-close');

  // --- the questions list: Open, Resolved, All; more pages; by keyboard ---
  await minji.page.focus('#questions-toggle');
  await minji.page.keyboard.press('Enter');
  await step('minji', 'the questions list', () => minji.page.locator('#question-list button').first().waitFor());
  summary.list = { opened: await activeElement(minji), open: await listed(minji) };
  // The first page: 20 questions, then "load more" for the rest.
  summary.list.moreShown = await minji.page.locator('#questions-more').isVisible();
  await minji.page.click('#questions-more');
  await step('minji', '"load more" to go', () => minji.page.locator('#questions-more').waitFor({ state: 'hidden' }));
  summary.list.openAll = await listed(minji);
  summary.list.resolved = await filterShows(minji, 'RESOLVED', [questionId]);
  summary.accessibility.list = await accessibilityViolations(minji);
  summary.words.list = await pageWords(minji);
  await shot(minji, 'questions-list-ko');
  await minji.page.selectOption('#questions-filter', 'ALL');
  await step('minji', 'every question', () =>
    minji.page.locator(`#question-list button[data-message-id="${questionId}"]`).waitFor(),
  );
  await step('minji', '"load more" for every question', () => minji.page.locator('#questions-more').waitFor());
  await minji.page.click('#questions-more');
  await step('minji', '"load more" to go', () => minji.page.locator('#questions-more').waitFor({ state: 'hidden' }));
  summary.list.all = await listed(minji);
  // An entry opens its thread.
  await minji.page.click(`#question-list button[data-message-id="${given.SIMILAR_ID}"]`);
  await step('minji', 'the listed question in the thread panel', () =>
    itemOf(minji.page, given.SIMILAR_ID, 'thread').waitFor(),
  );
  await minji.page.click('#thread-close');
  summary.list.focusAfterThread = await minji.page.evaluate(() => document.activeElement.dataset.messageId ?? null);
  // mia reopens the question: back in minji's Open list, live.
  await minji.page.selectOption('#questions-filter', 'OPEN');
  await step('minji', 'the open questions', () => minji.page.locator('#question-list button').first().waitFor());
  await itemOf(mia.page, questionId, 'thread').locator('[data-action="reopen"]').click();
  await step('minji', 'the reopened question in the Open list', () =>
    minji.page.locator(`#question-list button[data-message-id="${questionId}"]`).waitFor(),
  );
  summary.list.reopened = (await listed(minji))[0];
  await minji.page.focus('#questions-filter');
  await minji.page.keyboard.press('Escape');
  await step('minji', 'the questions list to close', () => minji.page.locator('#questions').waitFor({ state: 'hidden' }));
  summary.list.closed = await activeElement(minji);

  // --- the same parts in English, on mia's page: the questions list and a suggestion ---
  await mia.page.click('#questions-toggle');
  await step('mia', 'the questions list', () => mia.page.locator('#question-list button').first().waitFor());
  await mia.page.check('#ask-question');
  await mia.page.fill('#composer', given.TYPED_QUESTION);
  await step('mia', 'the similar question suggested', () =>
    mia.page.locator(`#similar-list button[data-message-id="${given.SIMILAR_ID}"]`).waitFor(),
  );
  summary.english = {
    toggle: await text(mia, '#questions-toggle'),
    heading: await text(mia, '#questions-heading'),
    filters: await mia.page.$$eval('#questions-filter option', (options) => options.map((o) => o.textContent)),
    similarHeading: await text(mia, '#similar-heading'),
  };
  summary.accessibility.english = await accessibilityViolations(mia);
  summary.words.english = await pageWords(mia);
  await shot(mia, 'questions-list-en');
  await mia.page.fill('#composer', '');
  await mia.page.uncheck('#ask-question');
  await step('mia', 'the suggestions to go', () => mia.page.locator('#similar').waitFor({ state: 'hidden' }));

  // --- the mode banner: read-only, for everyone ---
  await chooseCourse(minji, given.READ_ONLY_COURSE);
  await chooseCourse(mia, given.READ_ONLY_COURSE);
  await step('minji', 'the read-only banner', () => minji.page.locator('#mode-banner').waitFor());
  await step('mia', 'the read-only banner', () => mia.page.locator('#mode-banner').waitFor());
  summary.readOnly = { minji: await composerState(minji), mia: await composerState(mia) };
  summary.accessibility.readOnly = { ko: await accessibilityViolations(minji), en: await accessibilityViolations(mia) };
  summary.words.readOnly = await pageWords(minji);
  await shot(minji, 'mode-read-only-ko');
  await shot(mia, 'mode-read-only-en');

  // --- slow mode: minji waits after a send; mia is exempt ---
  await chooseCourse(minji, given.SLOW_COURSE);
  await chooseCourse(mia, given.SLOW_COURSE);
  await step('minji', 'the slow-mode banner', () => minji.page.locator('#mode-banner[data-mode="SLOW_MODE"]').waitFor());
  await step('mia', 'the slow-mode banner', () => mia.page.locator('#mode-banner[data-mode="SLOW_MODE"]').waitFor());
  summary.slow = { before: await composerState(minji), mia: await composerState(mia) };
  await sendAccepted(minji, `천천히 ${randomUUID()}`);
  await step('minji', 'the wait for her next message', () => minji.page.locator('#send-wait').waitFor());
  summary.slow.wait = await text(minji, '#send-wait');
  summary.slow.after = await composerState(minji);
  summary.accessibility.slow = { ko: await accessibilityViolations(minji), en: await accessibilityViolations(mia) };
  summary.words.slow = await pageWords(minji);
  await shot(minji, 'mode-slow-ko');
  await sendAccepted(mia, `moderators are exempt ${randomUUID()}`);
  await sendAccepted(mia, `still exempt ${randomUUID()}`);
  summary.slow.miaWait = await mia.page.locator('#send-wait').isHidden();
  await shot(mia, 'mode-slow-en');
  // A reload forgets the wait: the server's refusal says it again.
  await minji.page.reload();
  await waitForStatus(minji, 'live');
  await step('minji', 'the slow-mode banner after the reload', () =>
    minji.page.locator('#mode-banner[data-mode="SLOW_MODE"]').waitFor(),
  );
  summary.slow.afterReload = await composerState(minji);
  const refusedText = `또 보내요 ${randomUUID()}`;
  summary.slow.refusedAccepted = await send(minji, refusedText, 'button');
  await step('minji', 'the wait the server said', () => minji.page.locator('#send-wait').waitFor());
  summary.slow.refused = {
    wait: await text(minji, '#send-wait'),
    error: await text(minji, '#error'),
    composer: await minji.page.inputValue('#composer'),
    state: await composerState(minji),
  };

  summary.missing = await missingTranslations(session);
  summary.ids = { question: questionId, answer: answerId };
  summary.consoleProblems = session.consoleProblems;
  return summary;
});
