// Anonymous to classmates on three pages, each in a browser context of its own: the author (a
// student, English page), a classmate (a student, Korean page, Seoul) and mia (a moderator,
// English page), in a course whose policy allows anonymous posts.
// - The author sees "Post anonymously" and ticks it by keyboard: the note says who sees her
//   name. She types a question key by key and sends it, then an answer in its thread, both
//   anonymous: her page sends no `typing` meanwhile, and shows both as "You, anonymously".
// - The classmate sees "익명 수강생 ·<tag>" (one tag for both) in the timeline, the thread,
//   its participants and the questions list; the author's user id is nowhere on her page —
//   text, attributes, and every WebSocket frame and HTTP response body the page received
//   (presence frames aside: who is online is not anonymous, and the page never links it to
//   a message). Typing the classmate does herself comes back to her after anything the
//   author's typing could have published (one channel, in order): no typing of the author.
// - mia sees the author's name with the "anonymous to classmates" marker, and ticks the box.
// - The test switches the policy to Disabled (hand-over "anonymous-sent"). The author's next
//   anonymous send is refused: the page says so, keeps her text and drops the control; mia's
//   page reads the policy again when it comes back (visibilitychange) and says that what she
//   sends now shows her name; the classmate's page, reloaded, has no control, and the
//   earlier messages are still anonymous to her. Last, a control: typing unticked, the
//   author's page does send `typing`.
// axe-core on each page with each new part showing; screenshots.
//
// Env: BASE_URL AUTHOR CLASSMATE (user ids) AUTHOR_TOKEN CLASSMATE_TOKEN MODERATOR_TOKEN COURSE_ID
//   SCREENSHOT_DIR.
// Prints JSON lines: the hand-over event, then the summary; on failure a message on stderr
// and exit code 1.
import { randomUUID } from 'node:crypto';
import {
  ENGLISH_IN_NEW_YORK,
  KOREAN_IN_SEOUL,
  WAIT_MS,
  accessibilityViolations,
  handOver,
  inputs,
  itemOf,
  messageShown,
  missingTranslations,
  pageWords,
  run,
  send,
  step,
  until,
  waitForStatus,
} from './lib.mjs';

const given = inputs('page_anonymous', [
  'BASE_URL',
  'AUTHOR',
  'CLASSMATE',
  'AUTHOR_TOKEN',
  'CLASSMATE_TOKEN',
  'MODERATOR_TOKEN',
  'COURSE_ID',
  'SCREENSHOT_DIR',
]);
const course = given.COURSE_ID;
const author = given.AUTHOR;
const shot = ({ page }, name) => page.screenshot({ path: `${given.SCREENSHOT_DIR}/${name}.png`, fullPage: true });

/**
 * Everything a page receives, in order: each WebSocket frame and each HTTP response body
 * (read as text), and how many `typing` mutations it sent; recorded from before the page
 * loads (`prepare`: the context's page is the user's). `until(what, check)` resolves once
 * `check()` holds, tested on every frame: no polling.
 */
function recorder() {
  const received = { frames: [], bodies: [], sentTyping: 0 };
  const waiters = new Set();
  const changed = () => {
    for (const waiter of [...waiters]) {
      if (waiter.check()) {
        waiters.delete(waiter);
        clearTimeout(waiter.timer);
        waiter.resolve();
      }
    }
  };
  received.until = (what, check) =>
    new Promise((resolve, reject) => {
      if (check()) return resolve();
      const waiter = { check, resolve };
      waiter.timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(new Error(`${what}: not within ${WAIT_MS} ms`));
      }, WAIT_MS);
      waiters.add(waiter);
    });
  const prepare = async (context) => {
    context.on('page', (page) => {
      page.on('websocket', (ws) => {
        ws.on('framereceived', ({ payload }) => {
          received.frames.push(String(payload));
          changed();
        });
        ws.on('framesent', ({ payload }) => {
          // graphql-transport-ws `subscribe` with the page's Typing document.
          if (String(payload).includes('mutation Typing')) received.sentTyping += 1;
          changed();
        });
      });
    });
    context.on('response', (response) => {
      received.bodies.push(response.text().catch(() => ''));
    });
  };
  return { received, prepare };
}

/** Who is online (presenceChanged, presence answers): not anonymous, never tied to a message. */
const isPresenceFrame = (frame) => {
  try {
    const data = JSON.parse(frame)?.payload?.data ?? {};
    return 'presenceChanged' in data || 'presence' in data;
  } catch {
    return false; // not JSON: not a presence frame, so it is searched like any other
  }
};

/** Where `text` shows up in what a page received and shows: [] when nowhere. */
async function whereFound({ page }, received, text) {
  const places = [];
  received.frames.forEach((frame, index) => {
    if (frame.includes(text) && !isPresenceFrame(frame)) places.push(`frame ${index}: ${frame.slice(0, 200)}`);
  });
  for (const [index, body] of (await Promise.all(received.bodies)).entries()) {
    if (body.includes(text)) places.push(`response body ${index}`);
  }
  // Text and every attribute of every element (aria-labels, titles, data-*): the whole DOM.
  if ((await page.content()).includes(text)) places.push('the page (DOM)');
  return places;
}

/** The author's name and the markers of message `id` in `view`, as shown. */
const shownAs = ({ page }, id, view = 'timeline') =>
  itemOf(page, id, view).evaluate((li) => ({
    user: li.querySelector(':scope > .meta .user').textContent,
    faceless: li.querySelector(':scope > .meta .user').classList.contains('anonymous'),
    markers: [...li.querySelectorAll(':scope > .meta .marker')].map((m) => m.textContent),
    markerTitles: [...li.querySelectorAll(':scope > .meta .marker.anonymous')].map((m) => m.title),
    own: li.classList.contains('own'),
  }));

/** Wait until message `id` in `view` names its author `name`. */
const named = (user, id, view, name) =>
  until(
    user,
    `message ${id} in the ${view} named ${JSON.stringify(name)}`,
    ([id, view, name]) =>
      document.querySelector(`li[data-view="${view}"][data-message-id="${id}"] > .meta .user`)?.textContent === name,
    [id, view, name],
  );

/** Type `text` key by key (an input event each, as a person types) and send it with Enter. */
async function typeAndSend({ user, page }, composer, button, text) {
  const idle = await page.textContent(button);
  await page.locator(composer).pressSequentially(text);
  await page.press(composer, 'Enter');
  await step(user, 'the answer to a send', () =>
    page.waitForFunction(([button, label]) => document.querySelector(button).textContent === label, [button, idle]),
  );
  return page.inputValue(composer);
}

const composerParts = ({ page }) =>
  page.evaluate(() => ({
    rowHidden: document.getElementById('anonymous-row').hidden,
    checked: document.getElementById('post-anonymously').checked,
    noteHidden: document.getElementById('anonymous-note').hidden,
    note: document.getElementById('anonymous-note').textContent,
    error: document.getElementById('error').textContent,
    composer: document.getElementById('composer').value,
  }));

await run('page_anonymous', async (session) => {
  const summary = { accessibility: {}, words: {} };
  const authorRecord = recorder();
  const classmateRecord = recorder();
  const writer = await session.openCourse(
    'author',
    given.BASE_URL,
    given.AUTHOR_TOKEN,
    course,
    ENGLISH_IN_NEW_YORK,
    authorRecord.prepare,
  );
  const classmate = await session.openCourse(
    'classmate',
    given.BASE_URL,
    given.CLASSMATE_TOKEN,
    course,
    KOREAN_IN_SEOUL,
    classmateRecord.prepare,
  );
  const mia = await session.openCourse('mia', given.BASE_URL, given.MODERATOR_TOKEN, course, ENGLISH_IN_NEW_YORK);

  // --- the author: the control, ticked by keyboard, and its note ---
  for (const user of [writer, classmate, mia]) {
    await step(user.user, '"Post anonymously"', () => user.page.locator('#anonymous-row').waitFor());
  }
  summary.before = { author: await composerParts(writer), classmate: await composerParts(classmate) };
  await writer.page.focus('#post-anonymously');
  await writer.page.keyboard.press('Space');
  await step('author', 'the note on who sees her name', () => writer.page.locator('#anonymous-note').waitFor());
  summary.ticked = await composerParts(writer);
  summary.ticked.label = await writer.page.textContent('label[for="post-anonymously"]');
  summary.accessibility.ticked = await accessibilityViolations(writer);
  summary.words.ticked = await pageWords(writer);
  await shot(writer, 'anonymous-ticked-en');

  // --- an anonymous question, typed key by key, then an anonymous answer in its thread ---
  await writer.page.check('#ask-question');
  const question = `Is the midterm open book? ${randomUUID()}`;
  summary.questionLeft = await typeAndSend(writer, '#composer', '#send', question);
  const questionId = await messageShown(writer, question);
  await named(writer, questionId, 'timeline', 'You, anonymously');
  summary.noteAfterSend = (await composerParts(writer)).note;
  await itemOf(writer.page, questionId).locator('[data-action="reply"]').click();
  await step('author', 'her question in the thread', () => itemOf(writer.page, questionId, 'thread').waitFor());
  await writer.page.focus('#thread-post-anonymously');
  await writer.page.keyboard.press('Space');
  await step('author', 'the thread note', () => writer.page.locator('#thread-anonymous-note').waitFor());
  const answer = `Answering myself: the syllabus says closed book. ${randomUUID()}`;
  summary.answerLeft = await typeAndSend(writer, '#thread-composer', '#thread-send', answer);
  const answerItem = writer.page.locator('#thread-replies li[data-message-id]', { hasText: answer });
  await step('author', 'her answer in the thread', () => answerItem.waitFor());
  const answerId = await answerItem.getAttribute('data-message-id');
  await named(writer, answerId, 'thread', 'You, anonymously');
  summary.author = {
    question: await shownAs(writer, questionId),
    answer: await shownAs(writer, answerId, 'thread'),
    typingSent: authorRecord.received.sentTyping,
  };
  summary.accessibility.author = await accessibilityViolations(writer);
  await shot(writer, 'anonymous-author-en');

  // --- the classmate: "Anonymous classmate ·tag" everywhere, the author nowhere ---
  await messageShown(classmate, question);
  await itemOf(classmate.page, questionId).locator('[data-action="open-thread"]').waitFor();
  await itemOf(classmate.page, questionId).locator('[data-action="open-thread"]').click();
  await step('classmate', 'the anonymous answer in the thread', () =>
    itemOf(classmate.page, answerId, 'thread').waitFor(),
  );
  await classmate.page.click('#questions-toggle');
  await step('classmate', 'the question in the questions list', () =>
    classmate.page.locator(`#question-list button[data-message-id="${questionId}"]`).waitFor(),
  );
  summary.classmate = {
    question: await shownAs(classmate, questionId),
    root: await shownAs(classmate, questionId, 'thread'),
    answer: await shownAs(classmate, answerId, 'thread'),
    participants: await itemOf(classmate.page, questionId).locator('.participants').textContent(),
    listed: await classmate.page
      .locator(`#question-list button[data-message-id="${questionId}"] .user`)
      .textContent(),
    replyLabel: await itemOf(classmate.page, questionId).locator('[data-action="reply"]').getAttribute('aria-label'),
    rawPseudonym: (await classmate.page.content()).includes('anonymous:'),
  };
  // A probe: what she types comes back to her on the course's one typing channel, after
  // anything the author's typing could have published there.
  await classmate.page.locator('#composer').pressSequentially('음');
  const namesHer = (frame) =>
    frame.includes('"typingChanged"') &&
    JSON.parse(frame).payload?.data?.typingChanged?.users.some(({ userId }) => userId === given.CLASSMATE);
  await step('classmate', 'her own typing to come back', () =>
    classmateRecord.received.until('a typingChanged naming her', () => classmateRecord.received.frames.some(namesHer)),
  );
  summary.classmate.authorFound = await whereFound(classmate, classmateRecord.received, author);
  // What the search above went through: not nothing.
  summary.classmate.received = {
    frames: classmateRecord.received.frames.length,
    bodies: classmateRecord.received.bodies.length,
  };
  summary.classmate.typing = await classmate.page.textContent('#typing');
  summary.accessibility.classmate = await accessibilityViolations(classmate);
  summary.words.classmate = await pageWords(classmate);
  await shot(classmate, 'anonymous-classmate-ko');
  await classmate.page.fill('#composer', '');

  // --- mia: the author's name, marked anonymous to classmates; she ticks the box too ---
  await messageShown(mia, question);
  await named(mia, questionId, 'timeline', author);
  await itemOf(mia.page, questionId).locator('[data-action="open-thread"]').click();
  await named(mia, answerId, 'thread', author);
  summary.mia = {
    question: await shownAs(mia, questionId),
    answer: await shownAs(mia, answerId, 'thread'),
    endorseLabel: await itemOf(mia.page, answerId, 'thread')
      .locator('[data-action="endorse"]')
      .getAttribute('aria-label'),
  };
  await mia.page.check('#post-anonymously');
  summary.accessibility.mia = await accessibilityViolations(mia);
  summary.words.mia = await pageWords(mia);
  await shot(mia, 'anonymous-moderator-en');

  // --- the policy switched to Disabled ---
  await handOver('anonymous-sent', { questionId, answerId });
  // The author's page has not read it yet: her next anonymous send is refused, and says so.
  const refusedText = `One more, anonymously ${randomUUID()}`;
  const accepted = await send(writer, refusedText);
  summary.refused = { accepted, ...(await composerParts(writer)), text: refusedText };
  summary.refused.threadRowHidden = await writer.page.locator('#thread-anonymous-row').isHidden();
  summary.accessibility.refused = await accessibilityViolations(writer);
  summary.words.refused = await pageWords(writer);
  await shot(writer, 'anonymous-refused-en');
  // mia's page reads the policy again when it comes back into view.
  await mia.page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
  await step('mia', 'the control to go', () => mia.page.locator('#anonymous-row').waitFor({ state: 'hidden' }));
  summary.switchedOff = await composerParts(mia);
  // The classmate's page, reloaded: no control, the earlier messages still anonymous.
  await classmate.page.reload();
  await waitForStatus(classmate, 'live');
  await named(classmate, questionId, 'timeline', summary.classmate.question.user);
  summary.afterReload = {
    rowHidden: await classmate.page.locator('#anonymous-row').isHidden(),
    question: await shownAs(classmate, questionId),
  };
  await itemOf(classmate.page, questionId).locator('[data-action="open-thread"]').click();
  await step('classmate', 'the answer in the thread after the reload', () =>
    itemOf(classmate.page, answerId, 'thread').waitFor(),
  );
  summary.afterReload.answer = await shownAs(classmate, answerId, 'thread');
  summary.afterReload.authorFound = await whereFound(classmate, classmateRecord.received, author);
  summary.words.afterReload = await pageWords(classmate);
  await shot(classmate, 'anonymous-disabled-ko');

  // The control: unticked, the author's page does send `typing` as she types on.
  const sentBefore = authorRecord.received.sentTyping;
  await writer.page.locator('#composer').pressSequentially(' ok');
  await step('author', 'a typing mutation once unticked', () =>
    authorRecord.received.until('a typing mutation', () => authorRecord.received.sentTyping > sentBefore),
  );
  summary.control = { before: sentBefore, after: authorRecord.received.sentTyping };

  // The author's page, reloaded: her anonymous question is still hers (her course state
  // names her pseudonym), not a classmate's.
  await writer.page.reload();
  await waitForStatus(writer, 'live');
  await named(writer, questionId, 'timeline', summary.author.question.user);
  summary.authorAfterReload = await shownAs(writer, questionId);

  summary.missing = await missingTranslations(session);
  summary.ids = { question: questionId, answer: answerId };
  summary.consoleProblems = session.consoleProblems;
  return summary;
});
