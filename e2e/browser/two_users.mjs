// Two users chat through the web page, each in a browser context of its own.
//
// Env: BASE_URL ALICE_TOKEN BOB_TOKEN COURSE_ID SCREENSHOT [HISTORY_TEXT]
//   HISTORY_TEXT: a message already in the course that both pages must show from history.
// Prints one JSON summary line on success; on failure a message on stderr and exit code 1.
import { randomUUID } from 'node:crypto';
import { idsInOrder, inputs, messageShown, run, sendAccepted } from './lib.mjs';

const given = inputs(
  'two_users',
  ['BASE_URL', 'ALICE_TOKEN', 'BOB_TOKEN', 'COURSE_ID', 'SCREENSHOT'],
  ['HISTORY_TEXT'],
);
const course = given.COURSE_ID;

await run('two_users', async (session) => {
  const alice = await session.openCourse('alice', given.BASE_URL, given.ALICE_TOKEN, course);
  const bob = await session.openCourse('bob', given.BASE_URL, given.BOB_TOKEN, course);
  if (given.HISTORY_TEXT) {
    for (const user of [alice, bob]) await messageShown(user, given.HISTORY_TEXT);
  }

  const hello = `hello from alice ${randomUUID()}`;
  await sendAccepted(alice, hello, 'enter');
  const helloId = await messageShown(bob, hello);
  const reply = `bob replies ${randomUUID()}`;
  await sendAccepted(bob, reply, 'click');
  const replyId = await messageShown(alice, reply);
  if (BigInt(replyId) <= BigInt(helloId)) throw new Error(`reply ${replyId} not after ${helloId}`);
  // Each page shows both, once each, in id order; only own messages have a Delete button.
  for (const user of [alice, bob]) {
    await messageShown(user, hello);
    await messageShown(user, reply);
    await idsInOrder(user);
  }
  const bobsDeletes = await bob.page.$$eval('#messages li:has(button.delete)', (items) =>
    items.map((item) => item.dataset.messageId),
  );
  if (bobsDeletes.join() !== replyId) {
    throw new Error(`bob (no moderator) may delete exactly his reply, the page offers ${bobsDeletes}`);
  }

  await bob.page.screenshot({ path: given.SCREENSHOT, fullPage: true });
  return {
    course,
    hello: { id: helloId, text: hello },
    reply: { id: replyId, text: reply },
    messages: { alice: (await idsInOrder(alice)).length, bob: (await idsInOrder(bob)).length },
    status: await bob.page.textContent('#status'),
    consoleProblems: session.consoleProblems,
    screenshot: given.SCREENSHOT,
  };
});
