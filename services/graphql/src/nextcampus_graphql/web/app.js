// Next Campus Chat in the browser: a small graphql-transport-ws client (one WebSocket carries
// queries, mutations and subscriptions) and the chat page on top of it. No dependencies and
// no build step; the GraphQL schema is in DESIGN.md §2. Every word the page shows comes from
// the catalogues through `t` (i18n.js), so this file holds none.

import {
  bindLanguageSelect,
  formatFromNow,
  formatFullTime,
  formatMessageTime,
  onLanguageChange,
  t,
  untilMidnightMs,
} from './i18n.js';

const PROTOCOL = 'graphql-transport-ws';
const CLOSE_FORBIDDEN = 4403; // token refused or expired: reconnecting cannot help
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
// The server pings every 15 s too; a socket silent for this long is dead even if the
// browser has not noticed (laptop lid closed, NAT forgot us).
const PING_INTERVAL_MS = 15_000;
const SILENCE_LIMIT_MS = 35_000;
const HISTORY_PAGE_SIZE = 50;
const TOKEN_KEY = 'nextcampus.token';
const COURSE_KEY = 'nextcampus.course';

const MESSAGE_FIELDS = 'messageId userId content timestamp deleted';
const ME = 'query Me { me { userId courses moderates } }';
const HISTORY = `query History($courseId: ID!, $before: ID, $limit: Int) {
  messages(courseId: $courseId, before: $before, limit: $limit) {
    messages { ${MESSAGE_FIELDS} } hasMore
  }
}`;
const ADDED = `subscription Added($courseId: ID!, $after: ID) {
  messageAdded(courseId: $courseId, after: $after) { ${MESSAGE_FIELDS} }
}`;
const DELETED = `subscription Deleted($courseId: ID!) {
  messageDeleted(courseId: $courseId) { messageId deleted }
}`;
const SEND = `mutation Send($courseId: ID!, $content: String!, $clientMessageId: ID) {
  sendMessage(courseId: $courseId, content: $content, clientMessageId: $clientMessageId) {
    ${MESSAGE_FIELDS}
  }
}`;
const DELETE = `mutation Delete($courseId: ID!, $messageId: ID!) {
  deleteMessage(courseId: $courseId, messageId: $messageId) { messageId deleted }
}`;

/**
 * GraphQL errors of one operation; `code` is the first `extensions.code`. The page words it by
 * `code`; the server's message (English, for developers) only fills in what the code leaves
 * open, and words an unknown code.
 */
class GraphqlError extends Error {
  constructor(errors) {
    super(errors.map((e) => e?.message).filter(Boolean).join('; '));
    this.errors = errors;
    const coded = errors.find((e) => e?.extensions?.code);
    this.code = coded?.extensions.code ?? 'INTERNAL';
    this.extensions = coded?.extensions ?? {};
  }
}

const hasCode = (errors, code) => errors.some((e) => e?.extensions?.code === code);

/**
 * graphql-transport-ws over a WebSocket that reconnects by itself.
 *
 * Operations outlive sockets: after a reconnect every unanswered request is sent again (a
 * send carries a clientMessageId, so a resent send is never stored twice) and every
 * subscription is subscribed again with fresh variables (messageAdded's `after` = the newest
 * id seen), so nothing is lost or shown twice across a reconnect.
 *
 * States: idle (no token yet), connecting, open (acknowledged), offline (waiting to
 * reconnect), unauthenticated (token refused: waits for a new one, no reconnect loop; `detail`
 * is the server's reason, for the console).
 */
class GraphqlSocket {
  #url;
  #onState;
  #token = null;
  #ws = null;
  #acked = false;
  #ops = new Map(); // id → { id, query, variables(), sink } or { …, resolve, reject }
  #nextId = 1;
  #attempt = 0;
  #retryTimer = 0;
  #pingTimer = 0;
  #lastFrameAt = 0;
  state = 'idle';
  detail = '';

  constructor(url, onState) {
    this.#url = url;
    this.#onState = onState;
  }

  /** Use this token from now on and connect at once. */
  setToken(token) {
    this.#token = token;
    this.#drop();
    this.#connect();
  }

  /** The network is back (the browser says so): skip the rest of the backoff. */
  reconnectNow() {
    if (this.state === 'offline') this.#connect();
  }

  /** A query or mutation; resolves with `data`, rejects with a GraphqlError. */
  request(query, variables = {}) {
    return new Promise((resolve, reject) => {
      const op = { id: String(this.#nextId++), query, variables: () => variables, resolve, reject };
      this.#ops.set(op.id, op);
      this.#subscribe(op);
    });
  }

  /** A subscription; `variables` is called on every (re)subscribe. Returns the unsubscribe. */
  subscribe(query, variables, sink) {
    const op = { id: String(this.#nextId++), query, variables, sink };
    this.#ops.set(op.id, op);
    this.#subscribe(op);
    return () => {
      if (this.#ops.delete(op.id)) this.#write({ id: op.id, type: 'complete' });
    };
  }

  #setState(state, detail = '') {
    this.state = state;
    this.detail = detail;
    this.#onState(state, detail);
  }

  #write(message) {
    if (this.#acked || message.type === 'connection_init' || message.type === 'pong') {
      this.#ws?.send(JSON.stringify(message));
    }
  }

  #subscribe(op) {
    this.#write({ id: op.id, type: 'subscribe', payload: { query: op.query, variables: op.variables() } });
  }

  #connect() {
    clearTimeout(this.#retryTimer);
    // Each attempt after a loss is still "offline" until the server acknowledges: the
    // status must not flicker between offline and connecting through an outage.
    if (this.state !== 'offline') this.#setState('connecting');
    const ws = new WebSocket(this.#url, PROTOCOL);
    this.#ws = ws;
    this.#acked = false;
    ws.onopen = () => {
      this.#lastFrameAt = Date.now();
      // The token goes in connection_init, not in the URL: URLs end up in access logs,
      // and the gateway lets a socket without a token through to the pod, which checks it.
      this.#write({ type: 'connection_init', payload: { token: this.#token } });
      this.#pingTimer = setInterval(() => this.#checkAlive(), PING_INTERVAL_MS);
    };
    ws.onmessage = (event) => this.#receive(event.data);
    // An `error` event is always followed by `close`, which does the work.
    ws.onclose = (event) => this.#closed(event.code, event.reason);
  }

  #checkAlive() {
    if (Date.now() - this.#lastFrameAt > SILENCE_LIMIT_MS) {
      this.#restart();
    } else if (this.#acked) {
      this.#write({ type: 'ping' });
    }
  }

  #receive(data) {
    this.#lastFrameAt = Date.now();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn('not JSON from the server, reconnecting', data);
      this.#restart();
      return;
    }
    switch (message.type) {
      case 'connection_ack':
        this.#acked = true;
        this.#setState('open');
        for (const op of this.#ops.values()) this.#subscribe(op);
        break;
      case 'ping':
        this.#write({ type: 'pong' });
        break;
      case 'next':
        this.#next(message.id, message.payload ?? {});
        break;
      case 'error':
        this.#error(message.id, Array.isArray(message.payload) ? message.payload : [message.payload]);
        break;
      case 'complete':
        this.#complete(message.id);
        break;
      default: // pong, and anything newer than this client
        break;
    }
  }

  #next(id, payload) {
    const op = this.#ops.get(id);
    if (!op) return;
    const errors = payload.errors ?? [];
    if (hasCode(errors, 'UNAUTHENTICATED')) {
      this.#authFailed(errors.map((e) => e?.message).join('; '));
      return;
    }
    this.#attempt = 0; // the server did real work: the next outage starts the backoff over
    if (op.sink) {
      if (payload.data) op.sink.next(payload.data);
      return;
    }
    this.#ops.delete(id);
    if (errors.length > 0) op.reject(new GraphqlError(errors));
    else op.resolve(payload.data);
  }

  #error(id, errors) {
    const op = this.#ops.get(id);
    if (!op) return;
    if (hasCode(errors, 'UNAUTHENTICATED')) {
      this.#authFailed(errors.map((e) => e?.message).join('; ')); // the operation waits for a new token
    } else if (op.sink && hasCode(errors, 'UNAVAILABLE')) {
      // The chat service is unreachable from this pod: start over (with backoff), perhaps
      // on another pod; the resubscribe resumes after the newest message seen.
      this.#restart();
    } else {
      this.#ops.delete(id);
      (op.sink ? op.sink.error : op.reject)(new GraphqlError(errors));
    }
  }

  #complete(id) {
    const op = this.#ops.get(id);
    if (!op) return;
    if (op.sink) {
      this.#restart(); // the server ended a stream we still want: resume it
    } else {
      this.#ops.delete(id);
      // Answered with nothing: the server failed it.
      op.reject(new GraphqlError([{ message: 'no result', extensions: { code: 'INTERNAL' } }]));
    }
  }

  #closed(code, reason) {
    this.#drop();
    if (code === CLOSE_FORBIDDEN) this.#authFailed(reason);
    else this.#scheduleReconnect();
  }

  /** Forget the current socket (its late events are ignored) and close it. */
  #drop() {
    clearInterval(this.#pingTimer);
    clearTimeout(this.#retryTimer);
    const ws = this.#ws;
    this.#ws = null;
    this.#acked = false;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.close(1000);
    }
  }

  #restart() {
    this.#drop();
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.#attempt);
    this.#attempt += 1;
    // Jitter: the sockets a restarting pod cut off must not all come back at once.
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    this.#setState('offline');
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #authFailed(reason) {
    this.#drop();
    this.#setState('unauthenticated', reason);
  }
}

// ---------------------------------------------------------------------------------------
// The page

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  viewer: $('viewer'),
  language: $('language'),
  signIn: $('sign-in'),
  signInReason: $('sign-in-reason'),
  tokenForm: $('token-form'),
  token: $('token'),
  chat: $('chat'),
  courseForm: $('course-form'),
  course: $('course'),
  history: document.querySelector('.history'),
  loadOlder: $('load-older'),
  list: $('messages'),
  empty: $('empty'),
  sendForm: $('send-form'),
  composer: $('composer'),
  send: $('send'),
  error: $('error'),
};

/** What the page knows about the course it shows; all of it is dropped on a switch. */
const noCourse = () => ({
  courseId: '',
  newestId: null,
  oldestId: null,
  hasMore: false,
  historyWasEmpty: false,
  loadingOlder: false,
  subscribed: false,
  stopSubscriptions: [],
});

const state = {
  viewer: null, // { userId, courses, moderates }
  viewerLoading: false,
  generation: 0, // bumped on every course switch: late answers about the old one are dropped
  messages: new Map(), // messageId → { message, li }
  ...noCourse(),
  sending: null, // { clientMessageId, content } until the server answers
  unsent: null, // { courseId, content, clientMessageId } of a send that failed
  errorTimer: 0,
  // What the error line, the viewer line and the sign-in prompt say, as functions of the
  // language: a switch of language words them again.
  error: null,
  viewerLine: null,
  signInPrompt: () => t('signIn.prompt'),
};

// Ids are decimal int64 strings: beyond 2^53 Number would round them.
const compareIds = (a, b) => {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
};

// sessionStorage can be unavailable (some privacy modes): the page then works without it.
const storage = {
  get(key) {
    try {
      return sessionStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      if (value) sessionStorage.setItem(key, value);
      else sessionStorage.removeItem(key);
    } catch {
      // not remembered across reloads, nothing else is lost
    }
  },
};

function socketUrl() {
  const url = new URL('graphql', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  url.hash = '';
  return url.href;
}

/** The token of `?token=…` (then kept in sessionStorage and removed from the address bar). */
function takeToken() {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl) {
    storage.set(TOKEN_KEY, fromUrl);
    url.searchParams.delete('token');
    history.replaceState(history.state, '', url.pathname + url.search + url.hash);
    return fromUrl;
  }
  return storage.get(TOKEN_KEY);
}

function newClientMessageId() {
  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // never innerHTML: messages are user input
  return node;
}

// --- status, errors ---------------------------------------------------------------------

function statusOf() {
  switch (socket.state) {
    case 'idle':
      return ['signed-out', t('status.signedOut')];
    case 'unauthenticated':
      return ['signed-out', t('status.tokenRefused')];
    case 'connecting':
      return ['connecting', t('status.connecting')];
    case 'offline':
      return ['offline', t('status.offline')];
    default:
      if (!state.courseId) return ['connected', t('status.chooseCourse')];
      return state.subscribed ? ['live', t('status.live')] : ['connecting', t('status.loading')];
  }
}

function render() {
  const [key, text] = statusOf();
  ui.status.dataset.state = key;
  if (ui.status.textContent !== text) ui.status.textContent = text; // aria-live: only changes
  const signedOut = socket.state === 'idle' || socket.state === 'unauthenticated';
  ui.signIn.hidden = !signedOut;
  ui.chat.hidden = !state.viewer;
  const canWrite = Boolean(state.courseId) && !signedOut;
  ui.composer.disabled = !canWrite;
  ui.send.disabled = !canWrite || Boolean(state.sending);
  ui.send.textContent = state.sending ? t('composer.sending') : t('composer.send');
  ui.loadOlder.hidden = !state.subscribed || !state.hasMore;
  ui.loadOlder.disabled = state.loadingOlder;
  ui.loadOlder.textContent = state.loadingOlder ? t('history.loading') : t('history.loadOlder');
  ui.empty.hidden = !state.subscribed || state.messages.size > 0;
  setText(ui.error, state.error?.() ?? '');
  setText(ui.viewer, state.viewerLine?.() ?? '');
  setText(ui.signInReason, state.signInPrompt());
}

/** Only a change is written: a live region reads out every write. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Show `words()` on the error line (null: nothing), for `clearAfterMs` if it is given. */
function showError(words, clearAfterMs = 0) {
  clearTimeout(state.errorTimer);
  state.error = words;
  ui.error.textContent = words?.() ?? ''; // written even if unchanged: read out again
  if (clearAfterMs > 0) state.errorTimer = setTimeout(() => showError(null), clearAfterMs);
}

// The words of each `extensions.code` the server sends (errors.py); the server's message
// fills in the detail where the code alone says too little. One literal key each: the
// catalogue test finds every key the page uses by reading this file.
const ERROR_WORDS = {
  RATE_LIMITED: (error) => {
    const waitMs = Math.max(1000, error.extensions.retryAfterMs ?? 1000);
    return t('error.RATE_LIMITED', { when: formatFromNow(waitMs) });
  },
  READ_ONLY: () => t('error.READ_ONLY'),
  FORBIDDEN: (error) => t('error.FORBIDDEN', { detail: error.message }),
  BAD_USER_INPUT: (error) => t('error.BAD_USER_INPUT', { detail: error.message }),
  FAILED_PRECONDITION: (error) => t('error.FAILED_PRECONDITION', { detail: error.message }),
  NOT_FOUND: () => t('error.NOT_FOUND'),
  UNAVAILABLE: () => t('error.UNAVAILABLE'),
  UNAUTHENTICATED: () => t('error.UNAUTHENTICATED'),
  INTERNAL: () => t('error.INTERNAL'),
};

/** A sentence a person can act on, for a failed operation, in the page's language. */
function describe(error) {
  if (error instanceof GraphqlError && Object.hasOwn(ERROR_WORDS, error.code)) {
    return ERROR_WORDS[error.code](error);
  }
  // A code newer than this page, or no GraphQL error at all: the server's (or browser's) text.
  return t('error.unknown', { detail: error.message || error.code || String(error) });
}

// --- the message list -------------------------------------------------------------------

const canDelete = (message) =>
  !message.deleted &&
  (message.userId === state.viewer.userId || state.viewer.moderates.includes(state.courseId));

function renderMessage(message) {
  const li = element('li', 'message');
  li.dataset.messageId = message.messageId;
  li.tabIndex = -1; // focus lands here when a button inside disappears
  if (message.userId === state.viewer.userId) li.classList.add('own');
  const time = element('time');
  time.dateTime = new Date(message.timestamp).toISOString();
  const meta = element('p', 'meta');
  meta.append(element('span', 'user'), ' ', time);
  li.append(meta, element('p', 'text', message.content));
  if (message.deleted) {
    markDeleted(li);
  } else if (canDelete(message)) {
    const button = element('button', 'delete');
    button.type = 'button';
    li.append(button);
  }
  wordMessage(li, message);
  return li;
}

/** The words of a message's item in the page's language (its content is the author's). */
function wordMessage(li, message) {
  const date = new Date(message.timestamp);
  const time = li.querySelector('time');
  time.textContent = formatMessageTime(date);
  time.title = formatFullTime(date);
  const own = message.userId === state.viewer.userId;
  li.querySelector('.user').textContent = own ? t('message.you', { user: message.userId }) : message.userId;
  if (message.deleted) li.querySelector('.text').textContent = t('message.deleted');
  const button = li.querySelector('.delete');
  if (button) {
    button.textContent = t('message.delete');
    const label = t('message.deleteLabel', { user: message.userId, time: time.textContent });
    button.setAttribute('aria-label', label);
  }
}

function wordMessages() {
  for (const { message, li } of state.messages.values()) wordMessage(li, message);
}

function markDeleted(li) {
  li.classList.add('deleted');
  li.querySelector('.text').textContent = t('message.deleted');
  const button = li.querySelector('.delete');
  if (button) {
    const hadFocus = document.activeElement === button;
    button.remove();
    if (hadFocus) li.focus();
  }
}

/** Insert `li` so the list stays ordered by id (new messages usually go last). */
function insertInOrder(li, messageId) {
  let after = ui.list.lastElementChild;
  while (after && compareIds(after.dataset.messageId, messageId) > 0) {
    after = after.previousElementSibling;
  }
  if (after) after.after(li);
  else ui.list.prepend(li);
}

/** Add messages (deduplicated by id); a known message can only turn into a tombstone. */
function addMessages(messages) {
  for (const message of messages) {
    const known = state.messages.get(message.messageId);
    if (known) {
      if (message.deleted && !known.message.deleted) {
        known.message = { ...known.message, deleted: true };
        markDeleted(known.li);
      }
      continue;
    }
    const li = renderMessage(message);
    state.messages.set(message.messageId, { message, li });
    insertInOrder(li, message.messageId);
    if (!state.newestId || compareIds(message.messageId, state.newestId) > 0) {
      state.newestId = message.messageId;
    }
    if (!state.oldestId || compareIds(message.messageId, state.oldestId) < 0) {
      state.oldestId = message.messageId;
    }
  }
  if (state.historyWasEmpty && state.messages.size > 0) {
    // The course had no history, so messageAdded started without `after`: a message sent
    // before the subscription went live would be missed. Anything like that is older than
    // the first message seen, so one "load older" finds it.
    state.historyWasEmpty = false;
    state.hasMore = true;
    queueMicrotask(loadOlder);
  }
  render();
}

const nearBottom = () =>
  ui.history.scrollHeight - ui.history.scrollTop - ui.history.clientHeight < 80;

function scrollToBottom() {
  ui.history.scrollTop = ui.history.scrollHeight;
}

async function fetchPage(courseId, before) {
  ui.list.setAttribute('aria-busy', 'true'); // a page of history is not read out line by line
  try {
    const data = await socket.request(HISTORY, { courseId, before, limit: HISTORY_PAGE_SIZE });
    return data.messages;
  } finally {
    ui.list.removeAttribute('aria-busy');
  }
}

async function loadOlder() {
  if (!state.hasMore || state.loadingOlder || !state.oldestId) return;
  const { generation } = state;
  const hadFocus = document.activeElement === ui.loadOlder;
  state.loadingOlder = true;
  render();
  // Keep what is on screen in place while older messages go in above it.
  const fromBottom = ui.history.scrollHeight - ui.history.scrollTop;
  try {
    const page = await fetchPage(state.courseId, state.oldestId);
    if (generation !== state.generation) return;
    addMessages(page.messages);
    state.hasMore = page.hasMore;
    ui.history.scrollTop = ui.history.scrollHeight - fromBottom;
  } catch (error) {
    if (generation === state.generation) showError(() => describe(error));
  } finally {
    if (generation === state.generation) {
      state.loadingOlder = false;
      render();
      // The button is gone once everything is loaded: focus the oldest message instead.
      if (hadFocus && ui.loadOlder.hidden) ui.list.firstElementChild?.focus();
    }
  }
}

// --- courses ----------------------------------------------------------------------------

function leaveCourse() {
  for (const stop of state.stopSubscriptions) stop();
  Object.assign(state, noCourse(), { generation: state.generation + 1 });
  state.messages.clear();
  ui.list.replaceChildren();
  showError(null);
}

async function openCourse(courseId) {
  if (courseId === state.courseId) return;
  leaveCourse();
  state.courseId = courseId;
  storage.set(COURSE_KEY, courseId);
  ui.course.value = courseId;
  render();
  if (!courseId) return;
  const { generation } = state;
  // Not a passing outage (those reconnect by themselves): start over when the user asks.
  const stopped = (words) => {
    if (generation !== state.generation) return;
    leaveCourse();
    ui.course.value = '';
    showError(words);
    render();
  };
  const failed = (error) => stopped(() => t('course.liveStopped', { reason: describe(error) }));
  // Deletions first, so one that happens while the history loads is not missed.
  state.stopSubscriptions.push(
    socket.subscribe(DELETED, () => ({ courseId }), {
      next: (data) => addMessages([data.messageDeleted]),
      error: failed,
    }),
  );
  let page;
  try {
    page = await fetchPage(courseId, null);
  } catch (error) {
    stopped(() => t('course.loadFailed', { course: courseId, reason: describe(error) }));
    return;
  }
  if (generation !== state.generation) return;
  state.hasMore = page.hasMore;
  addMessages(page.messages);
  state.historyWasEmpty = page.messages.length === 0;
  // Live from the newest loaded message on: the server replays whatever came after it, so
  // nothing falls between history and live; after a reconnect `after` is the newest seen.
  state.stopSubscriptions.push(
    socket.subscribe(ADDED, () => ({ courseId, after: state.newestId }), {
      next: (data) => {
        const follow = nearBottom();
        addMessages([data.messageAdded]);
        if (follow) scrollToBottom();
      },
      error: failed,
    }),
  );
  state.subscribed = true;
  render();
  scrollToBottom();
}

async function loadViewer() {
  if (state.viewerLoading) return; // the request already waits for the socket
  state.viewerLoading = true;
  let me;
  try {
    ({ me } = await socket.request(ME));
  } catch (error) {
    // The chat section (and its error line) is not shown before the courses are known.
    state.viewerLine = () => t('viewer.loadFailed', { reason: describe(error) });
    render();
    return;
  } finally {
    state.viewerLoading = false;
  }
  const before = state.viewer;
  state.viewer = me;
  state.viewerLine = () => t('viewer.signedInAs', { user: me.userId });
  const options = me.courses.map((course) => {
    const option = element('option');
    option.value = course;
    return option;
  });
  ui.course.replaceChildren(ui.course.options[0], ...options);
  wordCourses();
  // A new token may be another user, or have other rights: then the course starts over.
  const current = state.courseId;
  const sameRights =
    before?.userId === me.userId &&
    me.courses.includes(current) &&
    before.moderates.includes(current) === me.moderates.includes(current);
  if (current && !sameRights) leaveCourse();
  const remembered = storage.get(COURSE_KEY);
  const wanted =
    state.courseId ||
    (me.courses.includes(remembered) ? remembered : '') ||
    (me.courses.length === 1 ? me.courses[0] : '');
  ui.course.value = wanted;
  render();
  if (wanted) await openCourse(wanted);
}

/** The course list's words: a course the viewer moderates says so. */
function wordCourses() {
  for (const option of [...ui.course.options].slice(1)) {
    const course = option.value;
    option.textContent = state.viewer.moderates.includes(course) ? t('course.moderated', { course }) : course;
  }
}

// --- sending and deleting ---------------------------------------------------------------

// How long a send is retried by itself while the service answers UNAVAILABLE (a Redis
// failover takes seconds); past it the text stays in the box with the error.
const SEND_RETRY_MS = 30_000;

async function send() {
  const content = ui.composer.value;
  if (!content.trim() || state.sending || !state.courseId) return;
  const { courseId } = state;
  // The same clientMessageId on every retry: the server stores the message once. A send
  // that failed keeps its id for the same text, so pressing Send again cannot store a copy
  // of one the server kept after all.
  const unsent = state.unsent?.courseId === courseId && state.unsent.content === content;
  const clientMessageId = unsent ? state.unsent.clientMessageId : newClientMessageId();
  state.sending = { clientMessageId, content };
  showError(null);
  render();
  const giveUpAt = Date.now() + SEND_RETRY_MS;
  try {
    for (;;) {
      try {
        const { sendMessage } = await socket.request(SEND, { courseId, content, clientMessageId });
        state.unsent = null;
        showError(null);
        if (courseId === state.courseId) {
          addMessages([sendMessage]);
          scrollToBottom();
        }
        if (ui.composer.value === content) ui.composer.value = '';
        return;
      } catch (error) {
        // Not acknowledged yet (no replica confirmed it, or the chat service is away): the
        // server asks for a retry with the same id, which stores the message once.
        const waitMs = error?.extensions?.retryAfterMs ?? 1000;
        if (error?.code !== 'UNAVAILABLE' || Date.now() + waitMs > giveUpAt) throw error;
        showError(() => t('composer.retrying'));
        await new Promise((resolve) => setTimeout(resolve, waitMs));
      }
    }
  } catch (error) {
    // The text stays in the box, to be sent again (with the same id).
    state.unsent = { courseId, content, clientMessageId };
    const retryAfterMs = error instanceof GraphqlError ? (error.extensions.retryAfterMs ?? 0) : 0;
    showError(() => describe(error), retryAfterMs);
  } finally {
    state.sending = null;
    render();
    if (!ui.composer.disabled && [document.body, ui.send].includes(document.activeElement)) {
      ui.composer.focus();
    }
  }
}

async function deleteMessage(button) {
  const { messageId } = button.closest('li').dataset;
  if (!window.confirm(t('message.deleteConfirm'))) return;
  button.disabled = true;
  try {
    const { deleteMessage: deleted } = await socket.request(DELETE, {
      courseId: state.courseId,
      messageId,
    });
    addMessages([deleted]);
  } catch (error) {
    button.disabled = false;
    showError(() => describe(error));
  }
}

// --- wiring -----------------------------------------------------------------------------

const socket = new GraphqlSocket(socketUrl(), (socketState, detail) => {
  if (socketState === 'unauthenticated') {
    storage.set(TOKEN_KEY, null);
    state.signInPrompt = () => t('signIn.refused');
    // The server's reason is for developers (in English): the console, not the page.
    if (detail) console.info(`token refused: ${detail}`);
  }
  render();
  if (socketState === 'unauthenticated') ui.token.focus();
});

function start(token) {
  socket.setToken(token);
  loadViewer();
}

ui.tokenForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = ui.token.value.trim().replace(/^Bearer\s+/i, '');
  if (!token) return;
  ui.token.value = '';
  storage.set(TOKEN_KEY, token);
  start(token);
});
ui.courseForm.addEventListener('submit', (event) => event.preventDefault());
ui.course.addEventListener('change', () => openCourse(ui.course.value));
ui.loadOlder.addEventListener('click', loadOlder);
ui.list.addEventListener('click', (event) => {
  const button = event.target.closest('button.delete');
  if (button) deleteMessage(button);
});
ui.sendForm.addEventListener('submit', (event) => {
  event.preventDefault();
  send();
});
ui.composer.addEventListener('keydown', (event) => {
  // Enter that confirms an IME composition (Korean, Japanese, …) is typing, not sending;
  // keyCode 229 is how Safari reports it.
  if (event.key !== 'Enter' || event.shiftKey || event.isComposing || event.keyCode === 229) return;
  event.preventDefault();
  send();
});
window.addEventListener('online', () => socket.reconnectNow());

// A switch of language words everything again in place: no reload, nothing refetched, the
// scroll position, focus and what is typed stay (the fixed words are i18n.js's part).
bindLanguageSelect(ui.language);
onLanguageChange(() => {
  if (state.viewer) {
    wordCourses();
    wordMessages();
  }
  render();
});
// "Today" and "yesterday" move on at midnight: the message times are worded again then.
function wordTimesAtMidnight() {
  setTimeout(() => {
    if (state.viewer) wordMessages();
    wordTimesAtMidnight();
  }, untilMidnightMs());
}
wordTimesAtMidnight();

const initialToken = takeToken();
if (initialToken) start(initialToken);
render();
if (!initialToken) ui.token.focus();
