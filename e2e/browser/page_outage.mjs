// The page through an outage of every GraphQL process: it says it is offline, reconnects by
// itself once they are back, and resumes with `after`: what was sent meanwhile shows once,
// in order, and what the user wrote meanwhile is sent once. Runs hand in hand with its test (e2e/test_browser.py), which makes the outage.
//
// Env: BASE_URL TOKEN COURSE_ID SCREENSHOT_DIR
// Events on stdout, each answered on stdin: "live" (the test kills the GraphQL processes),
// "offline" (the test sends messages and restarts them; answer {"texts": [...]}).
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import { handOver, idsInOrder, inputs, messageShown, run, step, waitForStatus } from './lib.mjs';

const given = inputs('page_outage', ['BASE_URL', 'TOKEN', 'COURSE_ID', 'SCREENSHOT_DIR']);
// Reconnect attempts back off up to 10 s: being live again may take that long after the
// processes are back.
const BACK_WITHIN_MS = 40_000;

await run('page_outage', async (session) => {
  const user = await session.openCourse('ada', given.BASE_URL, given.TOKEN, given.COURSE_ID);
  const before = await idsInOrder(user);
  // Every status the page shows from here on, in order (each change once).
  await user.page.evaluate(() => {
    const status = document.getElementById('status');
    window.statusesShown = [];
    const shown = window.statusesShown;
    new MutationObserver(() => {
      if (shown.at(-1) !== status.dataset.state) shown.push(status.dataset.state);
    }).observe(status, {
      attributes: true,
      attributeFilter: ['data-state'],
    });
  });
  await handOver('live', { ids: before });

  const offlineStatus = await step('ada', 'status "offline"', () =>
    user.page
      .waitForFunction(() => {
        const status = document.getElementById('status');
        return status.dataset.state === 'offline' && status.textContent;
      })
      .then((text) => text.jsonValue()),
  );
  // Written while offline: the page keeps the send and makes it once it is back.
  const offlineText = `written while offline ${Date.now()}`;
  await user.page.fill('#composer', offlineText);
  await user.page.press('#composer', 'Enter');
  const sendingWhileOffline = await user.page.textContent('#send');
  await user.page.screenshot({ path: `${given.SCREENSHOT_DIR}/offline.png`, fullPage: true });
  const { texts } = await handOver('offline', { status: offlineStatus });

  await waitForStatus(user, 'live', BACK_WITHIN_MS);
  const arrived = [];
  for (const text of texts) arrived.push(await messageShown(user, text));
  const writtenOffline = await messageShown(user, offlineText);
  return {
    before,
    offlineStatus,
    sendingWhileOffline,
    arrived,
    writtenOffline: { id: writtenOffline, text: offlineText },
    composerAfter: await user.page.inputValue('#composer'),
    after: await idsInOrder(user),
    statusesShown: await user.page.evaluate(() => window.statusesShown),
    status: await user.page.textContent('#status'),
    // Failed reconnects show in the console as failed WebSocket connections, by design.
    consoleProblems: session.consoleProblems.filter((line) => !line.includes('WebSocket')),
  };
});
