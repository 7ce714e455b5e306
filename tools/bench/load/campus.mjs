#!/usr/bin/env node
// The simulated campus of `chatctl bench-campus` (tools/bench/src/bench/campus.py runs it).
//
//   node campus.mjs --urls WS0,WS1 --http HTTP0,HTTP1 --users users.json --rate 20
//       --typing 10 --me-rate 10 --duration 60 [--ramp 250] [--label X]
//
// users.json: {"online": [{user, token, courses, open}], "me": [{user, token, courses}]}.
// Each online user opens ONE graphql-transport-ws socket, on urls[i % U], as the web page
// does: myUpdates (every course of the token), and courseEvents, presenceChanged and
// typingChanged of the course they have open. Connections are made at --ramp per second;
// the user is ready once myUpdates sent its first update of every course.
//
// Then, for --duration seconds: --rate sends per second (a random online user, a random
// course of theirs, one in ten mentioning another online member of it) as mutations over
// the sender's socket; --typing `typing` mutations per second the same way; --me-rate
// `me { courses { unreadCount mentionCount } }` queries per second over HTTP for the users
// of "me" (8 courses each), their latency measured. Prints ONE JSON line on stdout, then
// "steady done" on stderr, and keeps every socket open (without reconnecting) until stdin
// closes: the driver kills a GraphQL process meanwhile and watches presence. Sockets that
// end are counted by URL.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

import { readOptions } from './options.mjs';

const PAGE_SUBSCRIPTIONS = {
  u: 'subscription { myUpdates { course { courseId unreadCount mentionCount } mentions { messageId } cursor } }',
  e: 'subscription($c: ID!) { courseEvents(courseId: $c) { __typename cursor message { messageId content } } }',
  p: 'subscription($c: ID!) { presenceChanged(courseId: $c) { onlineCount joined { userId } left } }',
  t: 'subscription($c: ID!) { typingChanged(courseId: $c) { typingCount users { userId } } }',
};
const SEND = 'mutation($c: ID!, $t: String!) { sendMessage(courseId: $c, content: $t) { messageId } }';
const TYPING = 'mutation($c: ID!) { typing(courseId: $c) { published } }';
const ME = '{ me { courses { courseId unreadCount mentionCount } } }';

function parseArgs(argv) {
  const { options, number } = readOptions(argv);
  return {
    urls: String(options.urls).split(','),
    http: String(options.http).split(','),
    users: String(options.users),
    rate: number('rate', 20),
    typing: number('typing', 10),
    meRate: number('me-rate', 10),
    duration: number('duration', 60),
    ramp: number('ramp', 250),
    connectTimeout: number('connect-timeout', 20),
    readyTimeout: number('ready-timeout', 180),
    label: String(options.label ?? ''),
  };
}

const config = parseArgs(process.argv.slice(2));
const population = JSON.parse(readFileSync(config.users, 'utf8'));
const nowMs = () => Number(process.hrtime.bigint() / 1000n) / 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (text) => process.stderr.write(`${text}\n`);

function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] * 100) / 100;
}

const counts = { frames: {}, errors: {}, ended: {}, sends: 0, sendErrors: {}, typing: 0, typingErrors: {} };
const bump = (table, key) => {
  table[key] = (table[key] ?? 0) + 1;
};
const sentAt = new Map(); // content -> ms the send was made
const deliveryMs = [];

/** One user's socket, as the page holds it. */
class PageSocket {
  constructor(user, index) {
    this.user = user;
    this.urlIndex = index % config.urls.length;
    this.url = config.urls[this.urlIndex];
    this.pending = new Map();
    this.nextId = 0;
    this.coursesUpdated = new Set();
    this.ended = false;
    this.attempts = {}; // page subscription id -> subscribes made
    this.failed = new Set(); // page subscriptions refused for good
  }

  subscribePage(id) {
    this.attempts[id] = (this.attempts[id] ?? 0) + 1;
    const query = PAGE_SUBSCRIPTIONS[id];
    const variables = id === 'u' ? {} : { c: this.user.open };
    this.ws.send(JSON.stringify({ id, type: 'subscribe', payload: { query, variables } }));
  }

  /** Online in its open course: connected, and courseEvents & co. were not refused. */
  get online() {
    return !this.ended && !['e', 'p', 't'].some((id) => this.failed.has(id));
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, 'graphql-transport-ws', { perMessageDeflate: false });
      this.ws = ws;
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`no connection_ack within ${config.connectTimeout} s`));
      }, config.connectTimeout * 1000);
      ws.on('open', () =>
        ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${this.user.token}` } })),
      );
      ws.on('message', (data) => this.onMessage(JSON.parse(data.toString()), timer, resolve));
      ws.on('error', (error) => reject(error));
      ws.on('close', (code) => {
        this.ended = true;
        bump(counts.ended, `${this.urlIndex}:${code}`);
        for (const callback of this.pending.values()) callback(`closed ${code}`);
        this.pending.clear();
      });
    });
  }

  onMessage(message, timer, resolve) {
    if (message.type === 'connection_ack') {
      clearTimeout(timer);
      for (const id of Object.keys(PAGE_SUBSCRIPTIONS)) this.subscribePage(id);
      resolve(this);
    } else if (message.type === 'ping') {
      this.ws.send('{"type":"pong"}');
    } else if (message.type === 'next' && message.id in PAGE_SUBSCRIPTIONS) {
      bump(counts.frames, message.id);
      const data = message.payload.data;
      if (message.id === 'u' && data) this.coursesUpdated.add(data.myUpdates.course.courseId);
      if (message.id === 'e' && data?.courseEvents.__typename === 'MessageAddedEvent') {
        const at = sentAt.get(data.courseEvents.message.content);
        if (at !== undefined) deliveryMs.push(nowMs() - at);
      }
    } else if (message.type === 'error' && message.id in PAGE_SUBSCRIPTIONS) {
      // As the page does: UNAVAILABLE is tried again after a backoff, a few times.
      const code = message.payload?.[0]?.extensions?.code ?? 'error';
      bump(counts.errors, `${message.id}:${code}`);
      if (code === 'UNAVAILABLE' && this.attempts[message.id] < 5) {
        setTimeout(() => !this.ended && this.subscribePage(message.id), 500 * 2 ** this.attempts[message.id]);
      } else {
        this.failed.add(message.id);
      }
    } else if (message.type === 'next' || message.type === 'error') {
      const callback = this.pending.get(message.id);
      this.pending.delete(message.id);
      const errors = message.type === 'error' ? message.payload : message.payload.errors;
      callback?.(errors ? errors[0]?.extensions?.code ?? 'error' : null);
    }
  }

  get ready() {
    return this.coursesUpdated.size >= this.user.courses.length;
  }

  mutate(query, variables, callback) {
    if (this.ended) {
      callback('socket ended');
      return;
    }
    const id = `m${(this.nextId += 1)}`;
    this.pending.set(id, callback);
    this.ws.send(JSON.stringify({ id, type: 'subscribe', payload: { query, variables } }));
  }
}

async function connectAll() {
  const sockets = [];
  const failures = {};
  const started = nowMs();
  const interval = 1000 / config.ramp;
  const opening = [];
  population.online.forEach((user, index) => {
    opening.push(
      (async () => {
        await sleep(index * interval);
        const socket = new PageSocket(user, index);
        try {
          await socket.open();
          sockets.push(socket);
        } catch (error) {
          bump(failures, String(error.message ?? error).slice(0, 80));
        }
      })(),
    );
  });
  await Promise.all(opening);
  const readyBy = nowMs() + config.readyTimeout * 1000;
  const waiting = (s) => !s.ready && !s.ended && !s.failed.has('u');
  while (nowMs() < readyBy && sockets.some(waiting)) await sleep(200);
  return { sockets, failures, connectMs: Math.round(nowMs() - started) };
}

async function meQuery(index) {
  const user = population.me[index % population.me.length];
  const url = config.http[index % config.http.length];
  const started = nowMs();
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${user.token}` },
    body: JSON.stringify({ query: ME }),
  });
  const body = await response.json();
  if (body.errors || body.data?.me?.courses?.length !== user.courses.length) throw new Error('me failed');
  return nowMs() - started;
}

async function steady(sockets) {
  const live = sockets.filter((s) => s.ready);
  const byCourse = new Map(); // course -> sockets of its members
  for (const socket of live) {
    for (const course of socket.user.courses) {
      if (!byCourse.has(course)) byCourse.set(course, []);
      byCourse.get(course).push(socket);
    }
  }
  const pick = (list) => list[Math.floor(Math.random() * list.length)];
  const meMs = [];
  let meErrors = 0;
  let sequence = 0;
  const inFlight = [];
  const started = nowMs();
  const end = started + config.duration * 1000;
  const every = (rate, action) =>
    new Promise((resolve) => {
      if (rate <= 0) return resolve();
      let n = 0;
      const tick = () => {
        const due = Math.floor(((nowMs() - started) / 1000) * rate);
        while (n < due && nowMs() < end) action((n += 1));
        if (nowMs() >= end) resolve();
        else setTimeout(tick, 5);
      };
      tick();
    });
  await Promise.all([
    every(config.rate, () => {
      const sender = pick(live);
      const course = pick(sender.user.courses);
      const mention = Math.random() < 0.1 ? ` @${pick(byCourse.get(course)).user.user}` : '';
      const content = `campus ${config.label} ${(sequence += 1)}${mention}`;
      sentAt.set(content, nowMs());
      sender.mutate(SEND, { c: course, t: content }, (error) => {
        if (error) bump(counts.sendErrors, error);
        else counts.sends += 1;
      });
    }),
    every(config.typing, () => {
      const typist = pick(live);
      typist.mutate(TYPING, { c: typist.user.open }, (error) => {
        if (error) bump(counts.typingErrors, error);
        else counts.typing += 1;
      });
    }),
    every(config.meRate, (n) => {
      inFlight.push(
        meQuery(n).then(
          (ms) => meMs.push(ms),
          () => {
            meErrors += 1;
          },
        ),
      );
    }),
  ]);
  const seconds = (nowMs() - started) / 1000; // the window the load was made in
  await Promise.all(inFlight);
  await sleep(2000); // the last deliveries
  return { seconds, meMs, meErrors };
}

async function main() {
  const hardStop = setTimeout(() => {
    log('campus.mjs: hard deadline passed');
    process.exit(3);
  }, (config.readyTimeout + config.duration + population.online.length / config.ramp + 3600) * 1000);
  hardStop.unref();
  log(`connecting ${population.online.length} users at ${config.ramp}/s …`);
  const { sockets, failures, connectMs } = await connectAll();
  const ready = sockets.filter((s) => s.ready).length;
  log(`${sockets.length} sockets, ${ready} ready after ${connectMs} ms; steady phase ${config.duration} s …`);
  const framesBefore = { ...counts.frames };
  const result = await steady(sockets);
  const onlineByCourse = {};
  for (const socket of sockets) {
    if (!socket.online) continue;
    const row = (onlineByCourse[socket.user.open] ??= config.urls.map(() => 0));
    row[socket.urlIndex] += 1;
  }
  const frames = Object.fromEntries(
    Object.entries(counts.frames).map(([id, n]) => [id, n - (framesBefore[id] ?? 0)]),
  );
  process.stdout.write(
    `${JSON.stringify({
      label: config.label,
      online: population.online.length,
      sockets: sockets.length,
      ready,
      connect_failures: failures,
      connect_ms: connectMs,
      seconds: Math.round(result.seconds * 10) / 10,
      sends: counts.sends,
      send_errors: counts.sendErrors,
      typing: counts.typing,
      typing_errors: counts.typingErrors,
      frames_in_window: frames,
      subscription_errors: counts.errors, // each refusal, retried ones too
      subscriptions_failed: sockets.filter((s) => s.failed.size).length,
      delivery_ms: { p50: percentile(deliveryMs, 50), p99: percentile(deliveryMs, 99), n: deliveryMs.length },
      me_ms: { p50: percentile(result.meMs, 50), p99: percentile(result.meMs, 99), n: result.meMs.length },
      me_errors: result.meErrors,
      online_by_course: onlineByCourse,
      ended: counts.ended,
    })}\n`,
  );
  log('steady done');
  // Hold the sockets (no reconnects) until the driver closes stdin.
  process.stdin.resume();
  process.stdin.on('end', () => {
    log(`sockets ended meanwhile: ${JSON.stringify(counts.ended)}`);
    process.exit(0);
  });
}

main().catch((error) => {
  log(`campus.mjs: ${error.stack ?? error}`);
  process.exit(2);
});
