#!/usr/bin/env node
// The mixed-event load generator of `chatctl bench-fanout` (tools/bench/src/bench/mixed.py
// runs it, one step per run). Prints ONE JSON line with the results on stdout.
//
//   node mix.mjs --urls URL[,URL…] --token T --courses c0,c1,… --subs S --rate R
//       --duration T --mix send=70,react=15,edit=10,delete=5 [--drain 5] [--label X]
//
// Subscribers: S graphql-transport-ws sockets, subscriber i on urls[i % U] subscribed to
// courseEvents of course floor(i / U) % C. Publishers: one socket per course (urls[c % U]),
// open loop at R changes per second in all (1 ms ticks, round-robin over the courses), each
// change one mutation over the publisher's socket: a send, or — by the mix's weights — a
// reaction toggled on, an edit, a delete of one of the course's acknowledged messages with
// no change of it in flight (so the changes of one message apply in the order sent). Each
// change has a key: A|id (added), E|id, D|id, RA|id|emoji, RR|id|emoji; the n-th event of a
// key a subscriber receives is the n-th acknowledged change of that key, so latency is
// measured for every kind from the send of the mutation to the arrival of its event. Loss,
// duplicates (a cursor twice) and order (cursors must increase) per subscriber.
//
// Everything is bounded: connects, readiness, the window, the drain, and a hard deadline.
import WebSocket from 'ws';

import { readOptions } from './options.mjs';

const EMOJI = ['👍', '🎉', '❤️', '👀'];
const SUBSCRIPTION =
  'subscription($c: ID!) { courseEvents(courseId: $c) { __typename cursor message { messageId } ' +
  '... on ReactionAddedEvent { emoji } ... on ReactionRemovedEvent { emoji } } }';
const MUTATIONS = {
  send: 'mutation($c: ID!, $t: String!) { sendMessage(courseId: $c, content: $t) { messageId } }',
  react:
    'mutation($c: ID!, $m: ID!, $e: String!) { addReaction(courseId: $c, messageId: $m, emoji: $e) { messageId } }',
  unreact:
    'mutation($c: ID!, $m: ID!, $e: String!) { removeReaction(courseId: $c, messageId: $m, emoji: $e) { messageId } }',
  edit: 'mutation($c: ID!, $m: ID!, $t: String!) { editMessage(courseId: $c, messageId: $m, content: $t) { messageId } }',
  delete: 'mutation($c: ID!, $m: ID!) { deleteMessage(courseId: $c, messageId: $m) { messageId } }',
};
const KEY_OF_TYPE = {
  MessageAddedEvent: 'A',
  MessageEditedEvent: 'E',
  MessageDeletedEvent: 'D',
  ReactionAddedEvent: 'RA',
  ReactionRemovedEvent: 'RR',
};
// Acknowledged messages of a course that changes may target (the newest ones).
const TARGETS_KEPT = 64;

function parseArgs(argv) {
  const { options, number } = readOptions(argv);
  const mix = Object.fromEntries(
    String(options.mix ?? 'send=100')
      .split(',')
      .map((part) => part.split('='))
      .map(([kind, weight]) => [kind.trim(), Number(weight)]),
  );
  for (const kind of Object.keys(mix)) {
    if (!['send', 'react', 'edit', 'delete'].includes(kind)) throw new Error(`unknown kind in --mix: ${kind}`);
  }
  return {
    urls: String(options.urls).split(','),
    token: String(options.token ?? ''),
    courses: String(options.courses).split(','),
    subs: number('subs', 1000),
    rate: number('rate', 100),
    duration: number('duration', 10),
    drain: number('drain', 5),
    connectTimeout: number('connect-timeout', 10),
    readyTimeout: number('ready-timeout', 60),
    mix,
    label: String(options.label ?? ''),
  };
}

const config = parseArgs(process.argv.slice(2));
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const deadline = setTimeout(() => {
  process.stderr.write('mix.mjs: hard deadline passed\n');
  process.exit(3);
}, (config.connectTimeout + config.readyTimeout + config.duration + config.drain + 60) * 1000);

/** One graphql-transport-ws socket. */
class Connection {
  constructor(url) {
    this.url = url;
    this.pending = new Map(); // operation id -> callback(error)
    this.nextId = 1;
    this.onEvent = null;
    this.closedReason = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, 'graphql-transport-ws', {
        headers: config.token ? { authorization: `Bearer ${config.token}` } : {},
        perMessageDeflate: false,
      });
      this.ws = ws;
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`no connection_ack from ${this.url} within ${config.connectTimeout} s`));
      }, config.connectTimeout * 1000);
      ws.on('open', () => {
        ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${config.token}` } }));
      });
      ws.on('message', (data) => {
        const message = JSON.parse(data.toString());
        if (message.type === 'connection_ack') {
          clearTimeout(timer);
          resolve(this);
        } else if (message.type === 'ping') {
          ws.send('{"type":"pong"}');
        } else if (message.type === 'next' && message.id === 's') {
          this.onEvent?.(message.payload);
        } else if (message.type === 'next' || message.type === 'error') {
          const callback = this.pending.get(message.id);
          this.pending.delete(message.id);
          const errors = message.type === 'error' ? message.payload : message.payload.errors;
          callback?.(errors ? errors[0]?.extensions?.code ?? errors[0]?.message ?? 'error' : null, message.payload);
        }
      });
      ws.on('error', (error) => reject(error));
      ws.on('close', (code) => {
        this.closedReason = `closed ${code}`;
        for (const callback of this.pending.values()) callback(`socket ${this.closedReason}`);
        this.pending.clear();
      });
    });
  }

  subscribe(courseId) {
    this.ws.send(JSON.stringify({ id: 's', type: 'subscribe', payload: { query: SUBSCRIPTION, variables: { c: courseId } } }));
  }

  mutate(kind, variables, callback) {
    const id = String((this.nextId += 1));
    this.pending.set(id, callback);
    this.ws.send(JSON.stringify({ id, type: 'subscribe', payload: { query: MUTATIONS[kind], variables } }));
  }

  close() {
    this.ws?.close(1000);
  }
}

/** One subscriber: what it received, keyed as the publishers key their changes. */
class Subscriber {
  constructor(index, courseId) {
    this.index = index;
    this.courseId = courseId;
    this.events = 0;
    this.received = []; // [key, receive time µs]
    this.lastCursor = null;
    this.duplicates = 0;
    this.outOfOrder = 0;
    this.cursors = new Set();
    this.errors = 0;
  }

  take(payload) {
    const event = payload?.data?.courseEvents;
    if (!event) {
      this.errors += 1;
      return;
    }
    const at = nowUs();
    this.events += 1;
    if (this.cursors.has(event.cursor)) this.duplicates += 1;
    else if (this.lastCursor !== null && compareCursors(event.cursor, this.lastCursor) <= 0) this.outOfOrder += 1;
    this.cursors.add(event.cursor);
    this.lastCursor = event.cursor;
    const prefix = KEY_OF_TYPE[event.__typename];
    if (prefix === undefined) return;
    const emoji = event.emoji === undefined ? '' : `|${event.emoji}`;
    this.received.push([`${prefix}|${event.message.messageId}${emoji}`, at]);
  }
}

function compareCursors(a, b) {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  return as === bs ? 0 : as < bs ? -1 : 1;
}

/** The kinds of the mix as a repeating pattern (e.g. 14 sends, 3 reactions, 2 edits, 1 delete
 * in every 20, spread evenly), so every step carries the same mix. */
function pattern(mix) {
  const total = Object.values(mix).reduce((a, b) => a + b, 0);
  const slots = [];
  for (let i = 0; i < 20; i += 1) {
    // The kind whose share is furthest behind at this slot.
    let best = null;
    let behind = -Infinity;
    for (const [kind, weight] of Object.entries(mix)) {
      const due = ((i + 1) * weight) / total - slots.filter((k) => k === kind).length;
      if (due > behind) [best, behind] = [kind, due];
    }
    slots.push(best);
  }
  return slots;
}

/** One course's publisher: its connection, its acknowledged messages, what is in flight. */
class Publisher {
  constructor(courseId, connection, stats) {
    this.courseId = courseId;
    this.connection = connection;
    this.stats = stats;
    this.targets = []; // acknowledged, not deleted message ids, newest last
    this.busy = new Set(); // message ids with a change in flight
    this.reactions = new Map(); // `${id}|${emoji}` -> reacted
    this.sequence = 0;
  }

  target() {
    for (let i = this.targets.length - 1; i >= 0; i -= 1) {
      if (!this.busy.has(this.targets[i])) return this.targets[i];
    }
    return null;
  }

  change(kind, measuring) {
    const target = kind === 'send' ? null : this.target();
    if (target === null) kind = 'send';
    const sent = nowUs();
    const n = (this.sequence += 1);
    const course = this.courseId;
    let key = null;
    let variables;
    let mutation = kind;
    if (kind === 'send') {
      variables = { c: course, t: `M|${course}|${n}` };
    } else if (kind === 'react') {
      const emoji = EMOJI[n % EMOJI.length];
      const on = this.reactions.get(`${target}|${emoji}`) === true;
      mutation = on ? 'unreact' : 'react';
      this.reactions.set(`${target}|${emoji}`, !on);
      key = `${on ? 'RR' : 'RA'}|${target}|${emoji}`;
      variables = { c: course, m: target, e: emoji };
    } else if (kind === 'edit') {
      key = `E|${target}`;
      variables = { c: course, m: target, t: `E|${course}|${n}` };
    } else {
      key = `D|${target}`;
      variables = { c: course, m: target };
      this.targets = this.targets.filter((id) => id !== target);
    }
    if (target !== null) this.busy.add(target);
    this.stats.sent[kind] = (this.stats.sent[kind] ?? 0) + 1;
    this.connection.mutate(mutation, variables, (error, payload) => {
      if (target !== null) this.busy.delete(target);
      if (error) {
        this.stats.errors[error] = (this.stats.errors[error] ?? 0) + 1;
        return;
      }
      if (kind === 'send') {
        const id = payload.data.sendMessage.messageId;
        key = `A|${id}`;
        this.targets.push(id);
        if (this.targets.length > TARGETS_KEPT) this.targets.shift();
      }
      this.stats.acknowledged[kind] = (this.stats.acknowledged[kind] ?? 0) + 1;
      if (measuring) {
        const times = this.stats.sentAt.get(key) ?? [];
        times.push(sent);
        this.stats.sentAt.set(key, times);
        this.stats.expected.set(course, (this.stats.expected.get(course) ?? 0) + 1);
      } else {
        this.stats.unmeasured.add(key);
      }
    });
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function openAll(urls, count, concurrency = 64) {
  const connections = new Array(count);
  let next = 0;
  async function worker() {
    while (next < count) {
      const i = next++;
      connections[i] = await new Connection(urls[i % urls.length]).open();
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return connections;
}

async function main() {
  const { urls, courses } = config;
  const stats = {
    sent: {},
    acknowledged: {},
    errors: {},
    sentAt: new Map(), // key -> send times (µs) of its acknowledged changes, in order
    expected: new Map(), // course -> acknowledged measured changes
    unmeasured: new Set(), // keys of changes made before the window (readiness probes)
  };
  const subscribers = Array.from(
    { length: config.subs },
    (_, i) => new Subscriber(i, courses[Math.floor(i / urls.length) % courses.length]),
  );
  const subscriberSockets = await openAll(urls, config.subs);
  subscriberSockets.forEach((connection, i) => {
    connection.onEvent = (payload) => subscribers[i].take(payload);
    connection.subscribe(subscribers[i].courseId);
  });
  const publisherSockets = await openAll(urls, courses.length);
  const publishers = courses.map((course, c) => new Publisher(course, publisherSockets[c], stats));

  // Ready: every subscriber has received an event (a probe send every 500 ms per course).
  const readyBy = Date.now() + config.readyTimeout * 1000;
  while (subscribers.some((s) => s.events === 0)) {
    if (Date.now() > readyBy) throw new Error('subscribers not all live within --ready-timeout');
    for (const publisher of publishers) publisher.change('send', false);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  for (const subscriber of subscribers) subscriber.received = [];

  // The window: open loop, 1 ms ticks.
  const kinds = pattern(config.mix);
  const started = nowUs();
  const windowUs = config.duration * 1e6;
  let issued = 0;
  await new Promise((resolve) => {
    const tick = setInterval(() => {
      const elapsed = nowUs() - started;
      const due = Math.min(Math.floor((config.rate * Math.min(elapsed, windowUs)) / 1e6), config.rate * config.duration);
      while (issued < due) {
        const publisher = publishers[issued % publishers.length];
        publisher.change(kinds[Math.floor(issued / publishers.length) % kinds.length], true);
        issued += 1;
      }
      if (elapsed >= windowUs) {
        clearInterval(tick);
        resolve();
      }
    }, 1);
  });
  const publishedSeconds = (nowUs() - started) / 1e6;

  // Drain: until every acknowledged change reached every subscriber of its course, bounded.
  const expectedFor = (subscriber) => stats.expected.get(subscriber.courseId) ?? 0;
  const drainBy = Date.now() + config.drain * 1000;
  while (Date.now() < drainBy) {
    const inFlight = publishers.some((p) => p.connection.pending.size > 0);
    const matchedAll = subscribers.every(
      (s) => s.received.filter(([key]) => !stats.unmeasured.has(key)).length >= expectedFor(s),
    );
    if (!inFlight && matchedAll) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  // Match every received event to its change.
  const latencies = [];
  let expected = 0;
  let matched = 0;
  let unmatched = 0;
  for (const subscriber of subscribers) {
    expected += expectedFor(subscriber);
    const seen = new Map();
    for (const [key, at] of subscriber.received) {
      if (stats.unmeasured.has(key)) continue;
      const n = seen.get(key) ?? 0;
      seen.set(key, n + 1);
      const sentAt = stats.sentAt.get(key)?.[n];
      if (sentAt === undefined) {
        unmatched += 1;
        continue;
      }
      matched += 1;
      latencies.push((at - sentAt) / 1000);
    }
  }
  latencies.sort((a, b) => a - b);
  const result = {
    label: config.label,
    subs: config.subs,
    courses: courses.length,
    rate: config.rate,
    duration_s: config.duration,
    published_s: publishedSeconds,
    mix: config.mix,
    sent: stats.sent,
    acknowledged: stats.acknowledged,
    errors: stats.errors,
    expected_deliveries: expected,
    deliveries: matched,
    deliveries_per_s: matched / publishedSeconds,
    lost: expected - matched,
    unmatched,
    duplicates: subscribers.reduce((a, s) => a + s.duplicates, 0),
    out_of_order: subscribers.reduce((a, s) => a + s.outOfOrder, 0),
    subscription_errors: subscribers.reduce((a, s) => a + s.errors, 0),
    latency_ms: {
      p50: percentile(latencies, 50),
      p90: percentile(latencies, 90),
      p99: percentile(latencies, 99),
      max: latencies.length ? latencies[latencies.length - 1] : null,
    },
  };
  for (const connection of [...subscriberSockets, ...publisherSockets]) connection.close();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  clearTimeout(deadline);
  setTimeout(() => process.exit(0), 200);
}

main().catch((error) => {
  process.stderr.write(`mix.mjs: ${error.stack ?? error}\n`);
  process.exit(1);
});
