// Conversations on two pages: minji's Korean page (a student, Seoul) and alice's English one
// (a moderator, New York). A reply opens a thread the other page sees live (count, last reply,
// participants, the reply itself); an edit shows live with its "edited" marker, and its
// history opens for the author and the moderator; reactions count live on both pages, each
// highlighting only its own and toggling off; the moderator pins (the student's page has no
// pin button) and both pinned panels follow; a deleted root keeps its thread, which can
// still be answered. Focus and keyboard: the thread panel, the editor and the picker; axe-core
// on both pages with each panel open.
//
// Env: BASE_URL KO_TOKEN EN_TOKEN COURSE_ID SCREENSHOT_DIR
//   KO_TOKEN (minji) is for COURSE_ID; EN_TOKEN (alice) moderates it. The course is new.
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import { randomUUID } from 'node:crypto';
import {
  ENGLISH_IN_NEW_YORK,
  KOREAN_IN_SEOUL,
  accessibilityViolations,
  idsInOrder,
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

const given = inputs('page_conversations', ['BASE_URL', 'KO_TOKEN', 'EN_TOKEN', 'COURSE_ID', 'SCREENSHOT_DIR']);
const course = given.COURSE_ID;
const shot = ({ page }, name) => page.screenshot({ path: `${given.SCREENSHOT_DIR}/${name}.png`, fullPage: true });

/** Wait until the element of `selector` says `text` (trimmed), on `user`'s page. */
const says = (user, selector, text) =>
  until(
    user,
    `${selector} to say ${JSON.stringify(text)}`,
    ([selector, text]) => document.querySelector(selector)?.textContent.trim() === text,
    [selector, text],
  );

/** Wait until `selector` matches `count` elements on `user`'s page. */
const counted = (user, selector, count) =>
  until(
    user,
    `${count} of ${selector}`,
    ([selector, count]) => document.querySelectorAll(selector).length === count,
    [selector, count],
  );

const activeElement = ({ page }) =>
  page.evaluate(() => {
    const active = document.activeElement;
    return {
      id: active.id,
      action: active.dataset.action ?? null,
      inEditor: Boolean(active.closest('form.editor')),
      inPicker: Boolean(active.closest('.picker')),
      message: active.closest('li[data-message-id]')?.dataset.messageId ?? null,
    };
  });

const attribute = ({ page }, selector, name) => page.locator(selector).first().getAttribute(name);

/** Send `text` from the open thread's composer with Enter; resolves once it shows there. */
async function replyInThread(user, text) {
  await user.page.fill('#thread-composer', text);
  await user.page.press('#thread-composer', 'Enter');
  return step(user.user, `the reply ${JSON.stringify(text)} in the thread`, async () => {
    const item = user.page.locator('#thread-replies li[data-message-id]', { hasText: text });
    await item.waitFor();
    return item.getAttribute('data-message-id');
  });
}

await run('page_conversations', async (session) => {
  const minji = await session.openCourse('minji', given.BASE_URL, given.KO_TOKEN, course, KOREAN_IN_SEOUL);
  const alice = await session.openCourse('alice', given.BASE_URL, given.EN_TOKEN, course, ENGLISH_IN_NEW_YORK);
  const summary = { accessibility: {}, focus: {} };
  const root = `질문이 있어요 ${randomUUID()}`;
  await sendAccepted(minji, root);
  const rootId = await messageShown(alice, root);
  const rootOn = (page, view = 'timeline') => `li[data-view="${view}"][data-message-id="${rootId}"]`;

  // --- replies: alice answers in a thread; minji sees the count, then the thread, live ---
  await itemOf(alice.page, rootId).locator('[data-action="reply"]').click();
  await step('alice', 'the thread panel', () => alice.page.locator('#thread').waitFor());
  summary.focus.threadOpenedByReply = await activeElement(alice);
  summary.replyExpanded = await attribute(alice, `${rootOn()} [data-action="reply"]`, 'aria-expanded');
  const firstReply = `here is an answer ${randomUUID()}`;
  const firstReplyId = await replyInThread(alice, firstReply);
  await says(minji, `${rootOn()} .reply-count`, '답글 1개');
  await says(alice, `${rootOn()} .reply-count`, '1 reply');
  summary.threadFacts = {
    ko: await minji.page.textContent(`${rootOn()} .thread-facts`),
    en: await alice.page.textContent(`${rootOn()} .thread-facts`),
  };
  await itemOf(minji.page, rootId).locator('[data-action="open-thread"]').click();
  await step('minji', 'alice\'s reply in the thread', () =>
    minji.page.locator('#thread-replies li', { hasText: firstReply }).waitFor(),
  );
  summary.focus.threadOpenedByView = await activeElement(minji);
  const secondReply = `고마워요 ${randomUUID()}`;
  const secondReplyId = await replyInThread(minji, secondReply);
  await step('alice', 'minji\'s reply live in the thread', () =>
    alice.page.locator('#thread-replies li', { hasText: secondReply }).waitFor(),
  );
  await says(alice, `${rootOn()} .reply-count`, '2 replies');
  await says(minji, `${rootOn()} .reply-count`, '답글 2개');
  summary.repliesInTimeline = {
    ko: await minji.page.locator('#messages li', { hasText: firstReply }).count(),
    en: await alice.page.locator('#messages li', { hasText: secondReply }).count(),
  };
  summary.participants = {
    ko: await minji.page.textContent(`${rootOn()} .participants`),
    en: await alice.page.textContent(`${rootOn()} .participants`),
  };
  summary.threadRoot = await minji.page.textContent(`${rootOn(minji, 'thread')} .text`);
  summary.accessibility.thread = {
    ko: await accessibilityViolations(minji),
    en: await accessibilityViolations(alice),
  };
  await shot(minji, 'thread-ko');
  await shot(alice, 'thread-en');
  // Escape closes the thread; focus goes back to the button that opened it.
  await alice.page.focus('#thread-composer');
  await alice.page.keyboard.press('Escape');
  await step('alice', 'the thread panel to close', () => alice.page.locator('#thread').waitFor({ state: 'hidden' }));
  summary.focus.threadClosed = await activeElement(alice);
  summary.replyExpandedAfterClose = await attribute(alice, `${rootOn()} [data-action="reply"]`, 'aria-expanded');

  // --- edit: Escape cancels; Enter saves; alice sees it live; both open the history ---
  summary.aliceEditButtons = await alice.page.locator(`${rootOn()} [data-action="edit"]`).count();
  await itemOf(minji.page, rootId).locator('[data-action="edit"]').click();
  summary.focus.editorOpened = await activeElement(minji);
  await minji.page.keyboard.type(' (바뀌지 않아요)');
  await minji.page.keyboard.press('Escape');
  await counted(minji, `${rootOn()} form.editor`, 0);
  summary.focus.editorCancelled = await activeElement(minji);
  summary.textAfterCancel = await minji.page.textContent(`${rootOn()} .text`);
  await itemOf(minji.page, rootId).locator('[data-action="edit"]').click();
  const edited = `질문을 고쳤어요 ${randomUUID()}`;
  await minji.page.fill(`${rootOn()} form.editor textarea`, edited);
  await minji.page.press(`${rootOn()} form.editor textarea`, 'Enter');
  await says(alice, `${rootOn()} .text`, edited);
  await says(alice, `${rootOn()} .marker.edited`, 'edited');
  await says(minji, `${rootOn()} .marker.edited`, '수정됨');
  summary.focus.editorSaved = await activeElement(minji);
  summary.editedMarker = {
    en: await attribute(alice, `${rootOn()} .marker.edited`, 'title'),
    ko: await attribute(minji, `${rootOn()} .marker.edited`, 'title'),
  };
  for (const user of [minji, alice]) {
    await itemOf(user.page, rootId).locator('[data-action="edit-history"]').click();
    await counted(user, `${rootOn()} .edit-history .version`, 1);
  }
  summary.editHistory = {
    ko: await minji.page.textContent(`${rootOn()} .edit-history`),
    en: await alice.page.textContent(`${rootOn()} .edit-history`),
    versionText: await alice.page.textContent(`${rootOn()} .edit-history .version .text`),
    expanded: await attribute(minji, `${rootOn()} [data-action="edit-history"]`, 'aria-expanded'),
  };
  summary.accessibility.editHistory = {
    ko: await accessibilityViolations(minji),
    en: await accessibilityViolations(alice),
  };
  await shot(minji, 'edit-ko');
  await shot(alice, 'edit-en');
  summary.words = { ko: await pageWords(minji), en: await pageWords(alice) };

  // --- reactions: counts live on both pages, each highlights its own, toggling off ---
  const thumbs = (selector = rootOn()) => `${selector} .reactions [data-emoji="👍"]`;
  const reactionState = async (user) => ({
    count: (await user.page.textContent(`${thumbs()} .count`)) ?? null,
    pressed: await attribute(user, thumbs(), 'aria-pressed'),
  });
  const reactionShows = (user, count, pressed) =>
    until(
      user,
      `👍 ${count}, pressed ${pressed}`,
      ([selector, count, pressed]) => {
        const button = document.querySelector(selector);
        return count === 0
          ? button === null
          : button?.querySelector('.count').textContent === String(count) &&
              button.getAttribute('aria-pressed') === String(pressed);
      },
      [thumbs(), count, pressed],
    );
  await itemOf(alice.page, rootId).locator('[data-action="react"]').click();
  summary.focus.pickerOpened = await activeElement(alice);
  summary.pickerExpanded = await attribute(alice, `${rootOn()} [data-action="react"]`, 'aria-expanded');
  await alice.page.click(`${rootOn()} .picker [data-emoji="👍"]`);
  await reactionShows(alice, 1, true);
  await reactionShows(minji, 1, false);
  summary.reactions = { afterAlice: { en: await reactionState(alice), ko: await reactionState(minji) } };
  await minji.page.click(thumbs());
  await reactionShows(minji, 2, true);
  await reactionShows(alice, 2, true);
  summary.reactions.afterMinji = { en: await reactionState(alice), ko: await reactionState(minji) };
  summary.reactions.label = {
    en: await attribute(alice, thumbs(), 'aria-label'),
    ko: await attribute(minji, thumbs(), 'aria-label'),
  };
  await shot(minji, 'reactions-ko');
  await shot(alice, 'reactions-en');
  await alice.page.click(thumbs());
  await reactionShows(alice, 1, false);
  await reactionShows(minji, 1, true);
  summary.reactions.afterAliceUndid = { en: await reactionState(alice), ko: await reactionState(minji) };

  // --- pins: alice (moderator) pins; both pinned panels follow; minji has no pin button ---
  summary.minjiPinButtons = await minji.page.locator('#chat [data-action="pin"], #chat [data-action="unpin"]').count();
  summary.alicePinButtons = await alice.page.locator('#messages [data-action="pin"]').count();
  await alice.page.click(`${rootOn()} [data-action="pin"]`);
  await says(alice, '#pins-toggle', '1 pinned message');
  await says(minji, '#pins-toggle', '고정된 메시지 1개');
  for (const user of [minji, alice]) {
    await user.page.click('#pins-toggle');
    await step(user.user, 'the pinned message in the panel', () => itemOf(user.page, rootId, 'pins').waitFor());
  }
  summary.pins = {
    expanded: await attribute(minji, '#pins-toggle', 'aria-expanded'),
    markers: {
      en: await alice.page.textContent(`${rootOn()} .marker.pinned`),
      ko: await minji.page.textContent(`${rootOn()} .marker.pinned`),
    },
    panel: {
      en: await alice.page.textContent(`${rootOn(alice, 'pins')} .text`),
      ko: await minji.page.textContent(`${rootOn(minji, 'pins')} .text`),
    },
  };
  summary.accessibility.pins = { ko: await accessibilityViolations(minji), en: await accessibilityViolations(alice) };
  await shot(minji, 'pins-ko');
  await shot(alice, 'pins-en');
  await alice.page.click(`${rootOn(alice, 'pins')} [data-action="unpin"]`);
  for (const user of [minji, alice]) {
    await counted(user, '#pinned li', 0);
    await step(user.user, 'the empty pins panel', () => user.page.locator('#pins-empty').waitFor());
  }
  summary.pins.emptyAfterUnpin = {
    en: await alice.page.textContent('#pins-empty'),
    ko: await minji.page.textContent('#pins-empty'),
    toggle: await minji.page.textContent('#pins-toggle'),
  };

  // --- a deleted root keeps its thread: readable, and it can still be answered ---
  minji.page.once('dialog', (dialog) => dialog.accept());
  await minji.page.click(`${rootOn()} [data-action="delete"]`);
  await says(alice, `${rootOn()} .text`, 'message deleted');
  await says(minji, `${rootOn()} .text`, '삭제된 메시지예요');
  await says(minji, `${rootOn(minji, 'thread')} .text`, '삭제된 메시지예요');
  await itemOf(alice.page, rootId).locator('[data-action="open-thread"]').click();
  await counted(alice, '#thread-replies li[data-message-id]', 2);
  const thirdReply = `still answerable ${randomUUID()}`;
  const thirdReplyId = await replyInThread(alice, thirdReply);
  await step('minji', 'the third reply live in her open thread', () =>
    minji.page.locator('#thread-replies li', { hasText: thirdReply }).waitFor(),
  );
  await says(minji, `${rootOn()} .reply-count`, '답글 3개');
  await says(alice, `${rootOn()} .reply-count`, '3 replies');
  summary.deletedRoot = {
    en: await alice.page.textContent(`${rootOn(alice, 'thread')} .text`),
    replies: await alice.page.$$eval('#thread-replies li[data-message-id]', (items) =>
      items.map((item) => item.dataset.messageId),
    ),
    reply: await minji.page.locator(`${rootOn()} [data-action="reply"]`).count(),
  };
  await shot(minji, 'deleted-root-ko');
  await shot(alice, 'deleted-root-en');
  summary.accessibility.deletedRoot = { ko: await accessibilityViolations(minji), en: await accessibilityViolations(alice) };

  summary.ids = { root: rootId, replies: [firstReplyId, secondReplyId, thirdReplyId] };
  summary.texts = { root, edited, replies: [firstReply, secondReply, thirdReply] };
  summary.timeline = { ko: await idsInOrder(minji), en: await idsInOrder(alice) };
  summary.missing = await missingTranslations(session);
  summary.consoleProblems = session.consoleProblems;
  return summary;
});
