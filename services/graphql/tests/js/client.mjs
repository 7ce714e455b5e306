// The npm graphql-ws client against a Next Campus Chat GraphQL process.
// Usage: node client.mjs URL TOKEN COURSE — prints one JSON line per step, exits 0 when done.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, token, course] = process.argv.slice(2);
const print = (step, value) => console.log(JSON.stringify({ step, value }));
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  retryAttempts: 0,
});

const query = (document, variables) =>
  new Promise((resolve, reject) => {
    let result;
    client.subscribe(
      { query: document, variables },
      { next: (value) => (result = value), error: reject, complete: () => resolve(result) },
    );
  });

try {
  print('me', await query('{ me { userId courseIds } }'));
  const received = [];
  const subscribed = new Promise((resolve, reject) => {
    const stop = client.subscribe(
      {
        query: 'subscription($c: ID!) { messageAdded(courseId: $c) { messageId userId content } }',
        variables: { c: course },
      },
      {
        next: (value) => {
          received.push(value);
          if (value.data.messageAdded.content === 'last') {
            stop();
            resolve();
          }
        },
        error: reject,
        complete: () => {},
      },
    );
  });
  const send = (content) =>
    query('mutation($c: ID!, $t: String!) { sendMessage(courseId: $c, content: $t) { messageId } }', {
      c: course,
      t: content,
    });
  // Probes until the subscription is live, then the real messages.
  while (received.length === 0) {
    await send('probe');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const sent = [];
  for (const content of ['one', 'two', 'last']) sent.push((await send(content)).data.sendMessage.messageId);
  await subscribed;
  print('sent', sent);
  print('received', received.map((r) => r.data.messageAdded).filter((m) => m.content !== 'probe'));
  // An execution error arrives as a result with `errors`, not as a protocol error.
  print('forbidden', await query('mutation { sendMessage(courseId: "not-my-course", content: "x") { messageId } }'));
} finally {
  await client.dispose();
}
