// Two users chat through the page in two languages: minji's Chromium speaks Korean in Seoul,
// alice's English in New York. Each page speaks its browser's language and shows times in
// its own locale and time zone; the language control switches every word in place; the
// choice outlives a reload; a refused send is worded in the page's language; axe-core checks
// both languages against WCAG 2.x AA.
//
// Env: BASE_URL KO_TOKEN EN_TOKEN COURSE_ID SCREENSHOT_DIR
//   KO_TOKEN (minji) and EN_TOKEN (alice) are for COURSE_ID alone. The course's rate limit
//   lets minji send exactly one message.
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import { randomUUID } from 'node:crypto';
import {
  ENGLISH_IN_NEW_YORK,
  KOREAN_IN_SEOUL,
  accessibilityViolations,
  chooseLanguage,
  idsInOrder,
  inputs,
  messageItem,
  messageShown,
  missingTranslations,
  pageWords,
  run,
  send,
  sendAccepted,
  step,
  waitForStatus,
} from './lib.mjs';

const given = inputs('page_languages', ['BASE_URL', 'KO_TOKEN', 'EN_TOKEN', 'COURSE_ID', 'SCREENSHOT_DIR']);
const course = given.COURSE_ID;

/** What a user's page shows now, in a summary's words. */
async function shown({ page }, messageId) {
  const item = `#messages li[data-message-id="${messageId}"]`;
  return page.evaluate(
    ({ item }) => {
      const text = (selector) => document.querySelector(selector)?.textContent ?? null;
      const time = document.querySelector(`${item} time`);
      return {
        lang: document.documentElement.lang,
        title: document.title,
        languageChosen: document.getElementById('language').value,
        languageOptions: [...document.querySelectorAll('#language option')].map((option) => [
          option.value,
          option.lang,
          option.textContent,
        ]),
        status: text('#status'),
        viewer: text('#viewer'),
        send: text('#send'),
        composerLabel: text('label[for="composer"]'),
        hint: text('#composer-hint'),
        error: text('#error'),
        time: { text: time.textContent, dateTime: time.dateTime, title: time.title },
        deleteLabel: document.querySelector(`${item} button.delete`)?.getAttribute('aria-label') ?? null,
      };
    },
    { item },
  );
}

await run('page_languages', async (session) => {
  const minji = await session.openCourse('minji', given.BASE_URL, given.KO_TOKEN, course, KOREAN_IN_SEOUL);
  const alice = await session.openCourse('alice', given.BASE_URL, given.EN_TOKEN, course, ENGLISH_IN_NEW_YORK);

  // They chat, each in their own language.
  const hello = `안녕하세요 ${randomUUID()}`;
  await sendAccepted(minji, hello, 'enter');
  const helloId = await messageShown(alice, hello);
  const reply = `hi from alice ${randomUUID()}`;
  await sendAccepted(alice, reply, 'click');
  const replyId = await messageShown(minji, reply);
  for (const user of [minji, alice]) await idsInOrder(user);

  // minji's next send is past the course's budget: the refusal in Korean, with the wait.
  const refused = `두 번째 메시지 ${randomUUID()}`;
  if (await send(minji, refused)) throw new Error('minji: a send past the rate limit was accepted');

  // alice deletes her reply: its tombstone and the confirmation in her language.
  const target = alice.page.locator(`#messages li[data-message-id="${replyId}"]`);
  const confirmations = [];
  alice.page.once('dialog', (dialog) => {
    confirmations.push(dialog.message());
    return dialog.accept();
  });
  const aliceDeleteLabel = await target.locator('button.delete').getAttribute('aria-label');
  await target.locator('button.delete').click();
  for (const user of [minji, alice]) {
    await step(user.user, 'the reply shown as deleted', () =>
      user.page.locator(`#messages li.deleted[data-message-id="${replyId}"]`).waitFor(),
    );
  }

  const summary = {
    course,
    hello: { id: helloId, text: hello },
    reply: { id: replyId, text: reply },
    refused: { text: refused, composer: await minji.page.inputValue('#composer') },
    confirmations,
    aliceDeleteLabel,
    ko: await shown(minji, helloId),
    en: await shown(alice, helloId),
    words: { ko: await pageWords(minji), en: await pageWords(alice) },
    tombstones: {
      ko: await minji.page.textContent(`#messages li[data-message-id="${replyId}"] .text`),
      en: await alice.page.textContent(`#messages li[data-message-id="${replyId}"] .text`),
    },
    accessibility: {
      ko: await accessibilityViolations(minji),
      en: await accessibilityViolations(alice),
    },
  };
  await minji.page.screenshot({ path: `${given.SCREENSHOT_DIR}/korean.png`, fullPage: true });
  await alice.page.screenshot({ path: `${given.SCREENSHOT_DIR}/english.png`, fullPage: true });

  // Each switches to the other language: every word changes, in place (no reload: the mark
  // stays, as does what minji typed and her error line, now in English).
  for (const user of [minji, alice]) await user.page.evaluate(() => (window.notReloaded = true));
  await chooseLanguage(minji, 'en');
  await chooseLanguage(alice, 'ko');
  summary.switched = {
    words: { en: await pageWords(minji), ko: await pageWords(alice) },
    en: await shown(minji, helloId),
    ko: await shown(alice, helloId),
    notReloaded: await Promise.all([minji, alice].map(({ page }) => page.evaluate(() => window.notReloaded))),
    minjiComposer: await minji.page.inputValue('#composer'),
    accessibility: { en: await accessibilityViolations(minji), ko: await accessibilityViolations(alice) },
  };
  summary.missingBeforeReload = await missingTranslations(session);

  // The choice outlives a reload (localStorage): alice's browser speaks English, her page
  // Korean; the token and course come back from sessionStorage.
  await alice.page.reload();
  await waitForStatus(alice, 'live');
  await step('alice', 'the history', () => messageItem(alice.page, hello).waitFor());
  summary.reloaded = {
    ko: await shown(alice, helloId),
    words: await pageWords(alice),
    stored: await alice.page.evaluate(() => localStorage.getItem('nextcampus.language')),
    reloaded: (await alice.page.evaluate(() => window.notReloaded)) ?? false,
  };
  summary.missing = await missingTranslations(session);
  summary.consoleProblems = session.consoleProblems;
  return summary;
});
