// The page while the course's Redis shard has no replica (after a failure, until the node
// rejoins): a send is not acknowledged (UNAVAILABLE), the page says so and sends it again by
// itself with the same clientMessageId, and once the shard has a replica the message shows
// once. Runs hand in hand with its test (e2e/test_browser.py), which kills and restarts the
// replica.
//
// Env: BASE_URL TOKEN COURSE_ID SCREENSHOT_DIR
// Events on stdout, each answered on stdin: "live" (the test kills the replica), "retrying"
// (the test restarts it).
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import { handOver, idsInOrder, inputs, messageShown, run, step } from './lib.mjs';

const given = inputs('page_unconfirmed', ['BASE_URL', 'TOKEN', 'COURSE_ID', 'SCREENSHOT_DIR']);
const RETRYING = 'Not confirmed yet; sending again…';

await run('page_unconfirmed', async (session) => {
  const user = await session.openCourse('ada', given.BASE_URL, given.TOKEN, given.COURSE_ID);
  await handOver('live', { ids: await idsInOrder(user) });

  const text = `sent while the shard had no replica ${Date.now()}`;
  await user.page.fill('#composer', text);
  await user.page.press('#composer', 'Enter');
  await step('ada', 'the retry hint', () =>
    user.page.waitForFunction(
      (hint) => document.getElementById('error').textContent === hint,
      RETRYING,
    ),
  );
  const sendLabel = await user.page.textContent('#send');
  await user.page.screenshot({ path: `${given.SCREENSHOT_DIR}/unconfirmed.png`, fullPage: true });
  await handOver('retrying', { hint: await user.page.textContent('#error'), sendLabel });

  const shownId = await messageShown(user, text);
  await step('ada', 'the send answered', () =>
    user.page.waitForFunction(() => document.getElementById('send').textContent === 'Send'),
  );
  return {
    text,
    shownId,
    composerAfter: await user.page.inputValue('#composer'),
    errorAfter: await user.page.textContent('#error'),
    after: await idsInOrder(user),
    consoleProblems: session.consoleProblems,
  };
});
