// A page that was offline catches up from its event cursor: minji's Korean page loses its
// socket (the test's WebSocket route closes it and refuses new ones), alice's English page
// edits a message, reacts to another, deletes a third and sends a new one meanwhile; once the
// route lets sockets through again, minji's page resubscribes courseEvents after the last
// cursor it had seen and shows the final state: the new text and its marker, the reaction
// (not hers), the tombstone, the new message, each once. Presence follows: alice sees minji
// go offline and come back, and minji's page subscribes presenceChanged and typingChanged
// again and asks for the online count again (presence is live only).
//
// Env: BASE_URL KO_TOKEN EN_TOKEN COURSE_ID SCREENSHOT_DIR
//   KO_TOKEN (minji) and EN_TOKEN (alice) are for COURSE_ID, a new course.
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import { randomUUID } from 'node:crypto';
import {
  ENGLISH_IN_NEW_YORK,
  KOREAN_IN_SEOUL,
  idsInOrder,
  inputs,
  itemOf,
  messageShown,
  run,
  sendAccepted,
  step,
  until,
  waitForStatus,
} from './lib.mjs';

const given = inputs('page_events_offline', ['BASE_URL', 'KO_TOKEN', 'EN_TOKEN', 'COURSE_ID', 'SCREENSHOT_DIR']);
const course = given.COURSE_ID;

/**
 * minji's network, as far as the page's socket goes: every socket passes through this route,
 * which records what the page subscribes with and the last event cursor it was sent, and
 * which can cut them all and refuse new ones.
 */
const network = {
  blocked: false,
  routes: new Set(),
  subscriptions: [], // the `after` of each courseEvents subscribe, in order
  operations: [], // the operation name of every subscribe message (query, mutation, subscription)
  lastCursor: null, // of the newest courseEvents event delivered to the page
  async route(context) {
    await context.routeWebSocket(/\/graphql$/, (page) => {
      if (network.blocked) {
        page.close({ code: 4000, reason: 'offline (test)' });
        return;
      }
      const server = page.connectToServer();
      network.routes.add({ page, server });
      page.onMessage((frame) => {
        const message = JSON.parse(frame);
        if (message.type === 'subscribe') {
          network.operations.push(/^\s*(?:query|mutation|subscription) (\w+)/.exec(message.payload.query)?.[1] ?? null);
        }
        if (message.type === 'subscribe' && message.payload.query.includes('courseEvents')) {
          network.subscriptions.push(message.payload.variables.after ?? null);
        }
        server.send(frame);
      });
      server.onMessage((frame) => {
        const message = JSON.parse(frame);
        const cursor = message.payload?.data?.courseEvents?.cursor;
        if (message.type === 'next' && cursor) network.lastCursor = cursor;
        page.send(frame);
      });
    });
  },
  cut() {
    network.blocked = true;
    for (const { page, server } of network.routes) {
      page.close({ code: 4000, reason: 'offline (test)' });
      server.close();
    }
    network.routes.clear();
  },
};

await run('page_events_offline', async (session) => {
  const alice = await session.openCourse('alice', given.BASE_URL, given.EN_TOKEN, course, ENGLISH_IN_NEW_YORK);
  const minji = await session.openCourse('minji', given.BASE_URL, given.KO_TOKEN, course, KOREAN_IN_SEOUL, (context) =>
    network.route(context),
  );
  const texts = {
    edited: `to be edited ${randomUUID()}`,
    reacted: `to be reacted to ${randomUUID()}`,
    deleted: `to be deleted ${randomUUID()}`,
  };
  const ids = {};
  for (const [name, text] of Object.entries(texts)) {
    await sendAccepted(alice, text);
    ids[name] = await messageShown(minji, text);
  }
  // Each message reached minji's page as an event, through the route: it has seen a cursor.
  if (network.lastCursor === null || network.subscriptions.length !== 1) {
    throw new Error(`minji: no event cursor seen (${JSON.stringify(network)})`);
  }
  const before = await idsInOrder(minji);
  await until(alice, '2 online', () => document.getElementById('presence-toggle').textContent === '2 online');
  const operationsBefore = [...network.operations];

  network.cut();
  await waitForStatus(minji, 'offline');
  // minji's socket is gone: she is offline for alice (presence is live only).
  await until(alice, '1 online', () => document.getElementById('presence-toggle').textContent === '1 online');
  const cursorWhenCut = network.lastCursor;
  const offlineStatus = await minji.page.textContent('#status');

  // alice changes things while minji's page is away.
  const edited = `edited while minji was away ${randomUUID()}`;
  await itemOf(alice.page, ids.edited).locator('[data-action="edit"]').click();
  await alice.page.fill(`li[data-view="timeline"][data-message-id="${ids.edited}"] form.editor textarea`, edited);
  await alice.page.press(`li[data-view="timeline"][data-message-id="${ids.edited}"] form.editor textarea`, 'Enter');
  await until(alice, 'her edit', (id) => document.querySelector(`#messages li[data-message-id="${id}"] .marker.edited`), ids.edited);
  await itemOf(alice.page, ids.reacted).locator('[data-action="react"]').click();
  await alice.page.click(`#messages li[data-message-id="${ids.reacted}"] .picker [data-emoji="🎉"]`);
  await until(alice, 'her reaction', (id) => document.querySelector(`#messages li[data-message-id="${id}"] .reactions [data-emoji="🎉"]`), ids.reacted);
  alice.page.once('dialog', (dialog) => dialog.accept());
  await itemOf(alice.page, ids.deleted).locator('[data-action="delete"]').click();
  await until(alice, 'her delete', (id) => document.querySelector(`#messages li.deleted[data-message-id="${id}"]`), ids.deleted);
  const added = `sent while minji was away ${randomUUID()}`;
  await sendAccepted(alice, added);
  await alice.page.screenshot({ path: `${given.SCREENSHOT_DIR}/offline-changes-en.png`, fullPage: true });
  const stillOffline = await minji.page.getAttribute('#status', 'data-state');
  const shownWhileOffline = await minji.page.textContent(`#messages li[data-message-id="${ids.edited}"] .text`);

  // The network is back: the page reconnects at once (the browser's "online" event).
  network.blocked = false;
  await minji.page.evaluate(() => window.dispatchEvent(new Event('online')));
  await waitForStatus(minji, 'live', 30_000);
  const addedId = await messageShown(minji, added);
  const item = (id) => `#messages li[data-message-id="${id}"]`;
  await until(minji, 'the edit', ([selector, text]) => document.querySelector(selector)?.textContent === text, [
    `${item(ids.edited)} .text`,
    edited,
  ]);
  await until(minji, 'the reaction', (selector) => document.querySelector(selector), `${item(ids.reacted)} [data-emoji="🎉"]`);
  await until(minji, 'the tombstone', (selector) => document.querySelector(selector), `${item(ids.deleted)}.deleted`);
  // Back: online again for alice, and minji's page asked for the count again.
  await until(alice, '2 online again', () => document.getElementById('presence-toggle').textContent === '2 online');
  await until(minji, '2명 접속 중', () => document.getElementById('presence-toggle').textContent === '2명 접속 중');
  await minji.page.screenshot({ path: `${given.SCREENSHOT_DIR}/offline-resumed-ko.png`, fullPage: true });
  const text = (selector) => minji.page.textContent(selector);
  return {
    ids: { ...ids, added: addedId },
    texts: { ...texts, editedTo: edited, added },
    before,
    offlineStatus,
    stillOffline,
    shownWhileOffline,
    cursorWhenCut,
    subscriptions: network.subscriptions,
    operations: { before: operationsBefore, all: network.operations },
    after: await idsInOrder(minji),
    shown: {
      edited: await text(`${item(ids.edited)} .text`),
      editedMarker: await text(`${item(ids.edited)} .marker.edited`),
      reaction: await text(`${item(ids.reacted)} [data-emoji="🎉"] .count`),
      reactionPressed: await minji.page.getAttribute(`${item(ids.reacted)} [data-emoji="🎉"]`, 'aria-pressed'),
      deleted: await text(`${item(ids.deleted)} .text`),
    },
    status: await text('#status'),
    // The refused reconnects show in the console as failed WebSocket connections, by design.
    consoleProblems: session.consoleProblems.filter((line) => !line.includes('WebSocket')),
  };
});
