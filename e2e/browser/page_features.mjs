// The chat page's features beyond chatting, as its users meet them: older history on demand,
// a moderator deleting someone else's message (seen live by another user), the rate limit,
// and an expired token that sends the user to sign in again; each view checked with axe-core
// against WCAG 2.x AA.
//
// Env: BASE_URL MODERATOR_TOKEN USER_TOKEN EXPIRED_TOKEN COURSE_ID SEEDED OVERRIDE_ID
//      SCREENSHOT_DIR
//   The course holds SEEDED messages (more than one history page) by other users; message
//   OVERRIDE_ID holds a right-to-left override it never closes, and is not the newest. The
//   user of USER_TOKEN has sent nothing yet (a full rate-limit budget, which the course's
//   policy keeps small). USER_TOKEN is for this course alone; MODERATOR_TOKEN moderates it.
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import {
  accessibilityViolations,
  idsInOrder,
  inputs,
  messageItem,
  messageShown,
  run,
  send,
  step,
  waitForStatus,
} from './lib.mjs';

const given = inputs('page_features', [
  'BASE_URL',
  'MODERATOR_TOKEN',
  'USER_TOKEN',
  'EXPIRED_TOKEN',
  'COURSE_ID',
  'SEEDED',
  'OVERRIDE_ID',
  'SCREENSHOT_DIR',
]);
const course = given.COURSE_ID;
const seeded = Number(given.SEEDED);
const listed = ({ page }) => page.locator('#messages li[data-message-id]').count();

await run('page_features', async (session) => {
  const summary = { accessibility: {} };

  // Older history on demand.
  const mia = await session.openCourse('mia', given.BASE_URL, given.MODERATOR_TOKEN, course);
  summary.firstPage = await listed(mia);
  await step('mia', 'the "load older" button', () => mia.page.locator('#load-older').waitFor());
  await mia.page.click('#load-older');
  await step('mia', `all ${seeded} messages`, () =>
    mia.page.waitForFunction(
      (count) => document.querySelectorAll('#messages li[data-message-id]').length === count,
      seeded,
    ),
  );
  await step('mia', 'the "load older" button to go', () =>
    mia.page.locator('#load-older').waitFor({ state: 'hidden' }),
  );
  summary.afterLoadOlder = await idsInOrder(mia);

  // An override left open in one message must not reorder the next one: where the first and
  // the last character of the next message's text are drawn.
  summary.bidi = await mia.page.evaluate((overrideId) => {
    const item = document.querySelector(`#messages li[data-message-id="${overrideId}"]`);
    const text = (li) => li.querySelector('.text');
    const next = text(item.nextElementSibling);
    const left = (index) => {
      const range = document.createRange();
      range.setStart(next.firstChild, index);
      range.setEnd(next.firstChild, index + 1);
      return range.getBoundingClientRect().left;
    };
    return {
      overrideText: text(item).textContent,
      nextText: next.textContent,
      nextFirstLeft: left(0),
      nextLastLeft: left(next.firstChild.length - 1),
    };
  }, given.OVERRIDE_ID);

  // A moderator deletes another user's message; a user watching sees it go.
  const bob = await session.openCourse('bob', given.BASE_URL, given.USER_TOKEN, course);
  summary.bobDeleteButtons = await bob.page.locator('#messages button.delete').count();
  const newest = summary.afterLoadOlder.at(-1);
  const target = mia.page.locator(`#messages li[data-message-id="${newest}"]`);
  mia.page.once('dialog', (dialog) => dialog.accept()); // "Delete this message for everyone?"
  await target.locator('button.delete').click();
  for (const user of [mia, bob]) {
    await step(user.user, `message ${newest} shown as deleted`, () =>
      user.page.locator(`#messages li.deleted[data-message-id="${newest}"]`).waitFor(),
    );
  }
  summary.accessibility.moderatorView = await accessibilityViolations(mia);
  summary.deleted = {
    id: newest,
    text: await bob.page.textContent(`#messages li[data-message-id="${newest}"] .text`),
  };

  // Past the rate limit: a message the user can act on, and the text stays in the box.
  summary.accepted = [];
  for (let n = 0; n < 40 && !summary.limited; n += 1) {
    const text = `bob says ${n}`;
    if (await send(bob, text)) {
      summary.accepted.push(await messageShown(bob, text));
    } else {
      summary.limited = {
        error: await bob.page.textContent('#error'),
        composer: await bob.page.inputValue('#composer'),
        text,
      };
    }
  }
  await bob.page.screenshot({ path: `${given.SCREENSHOT_DIR}/rate-limited.png`, fullPage: true });
  summary.accessibility.rateLimited = await accessibilityViolations(bob);
  const lastAccepted = `bob says ${summary.accepted.length - 1}`;
  await messageShown(mia, lastAccepted);
  summary.miaSeesAfterLimit = await idsInOrder(mia);
  await mia.page.screenshot({ path: `${given.SCREENSHOT_DIR}/moderator.png`, fullPage: true });

  // An expired token: the sign-in form, with the reason; a new token continues.
  const late = await session.open(
    'late',
    `${given.BASE_URL}/?token=${encodeURIComponent(given.EXPIRED_TOKEN)}`,
  );
  await step('late', 'the sign-in form', () => late.page.locator('#sign-in').waitFor());
  await waitForStatus(late, 'signed-out');
  summary.signIn = {
    reason: await late.page.textContent('#sign-in-reason'),
    status: await late.page.textContent('#status'),
  };
  await late.page.screenshot({ path: `${given.SCREENSHOT_DIR}/signed-out.png`, fullPage: true });
  summary.accessibility.signIn = await accessibilityViolations(late);
  await late.page.fill('#token', given.USER_TOKEN);
  await late.page.click('#token-form button[type="submit"]');
  // The new token has one course: the page opens it by itself.
  await waitForStatus(late, 'live');
  await step('late', 'the history', () => messageItem(late.page, lastAccepted).waitFor());
  summary.signedInAgain = await idsInOrder(late);
  summary.consoleProblems = session.consoleProblems;
  return summary;
});
