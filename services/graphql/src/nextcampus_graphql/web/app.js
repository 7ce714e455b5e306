// Next Campus Chat in the browser: a small graphql-transport-ws client (one WebSocket carries
// queries, mutations and subscriptions) and the chat page on top of it. No dependencies and
// no build step; the GraphQL contract is services/graphql/schema.graphql. Every word the page
// shows comes from the catalogues through `t` (i18n.js), so this file holds none.

import {
  bindLanguageSelect,
  formatDuration,
  formatFromNow,
  formatFullTime,
  formatList,
  formatMessageTime,
  formatNumber,
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
// Counts are exact below this; the server says this number for "this many or more" ("99+").
const COUNT_CAP = 100;
const MENTIONS_PAGE_SIZE = 20;
const QUESTIONS_PAGE_SIZE = 20;
// Earlier questions suggested while one is typed: a few, once the text says something, and
// asked for once the typing pauses.
const SIMILAR_LIMIT = 3;
const SIMILAR_MIN_CHARACTERS = 10;
const SIMILAR_DELAY_MS = 300;
// Scrolling, new messages and the page coming back are settled this long before a markRead.
const MARK_READ_DELAY_MS = 400;
// `@` and a user id not inside a word or an e-mail address, as the chat service parses it
// (services/chat/.../mentions.py); only the names the server found (`mentions`) are shown
// as mentions. Trailing dots, dashes, underscores and at signs end the sentence.
const MENTION_PATTERN = /(?<![A-Za-z0-9._@-])@([A-Za-z0-9][A-Za-z0-9._@-]{0,127})/g;
const MENTION_TRAILING = /[._@-]+$/;
const COURSE_MENTION = 'course';
// The reaction picker's choice; any other emoji someone used shows under the message too.
const PICKER_EMOJI = ['👍', '❤️', '😂', '🎉', '🤔', '👀', '🙏', '✅'];

// A message as queries and mutations answer it: `reactedByMe` is the viewer's own.
const MESSAGE = `fragment Message on ChatMessage {
  messageId userId content timestamp deleted replyTo editedAt replyCount lastReplyAt
  participants pinnedAt reactions { emoji count reactedByMe } mentions mentionsCourse
  kind resolvedAt endorsedAt endorsedAnswerCount anonymous pseudonym
}`;
// A message in an event: the same bytes for every subscriber, so nothing of the viewer's
// (the page keeps its own reactions from answers and from the events it made itself).
const EVENT_MESSAGE = `fragment EventMessage on ChatMessage {
  messageId userId content timestamp deleted replyTo editedAt replyCount lastReplyAt
  participants pinnedAt reactions { emoji count } mentions mentionsCourse
  kind resolvedAt endorsedAt endorsedAnswerCount anonymous pseudonym
}`;
// Where the viewer is in a course: the badges of the course list and the read marker the
// "new messages" divider is drawn at.
const COURSE_STATE = `fragment CourseState on MyCourse {
  courseId moderator unreadCount mentionCount lastReadMessageId lastMessageId lastMessageAt
  pseudonym
}`;
// A message that mentions the viewer, in the mentions panel (any course).
const MENTION = `fragment Mention on ChatMessage {
  courseId messageId userId content timestamp deleted replyTo mentions mentionsCourse anonymous pseudonym
}`;
const ME = `query Me { me { userId courseIds moderates courses { ...CourseState } } }
${COURSE_STATE}`;
const MY_COURSES = `query MyCourses { me { courses { ...CourseState } } }
${COURSE_STATE}`;
const MARK_READ = `mutation MarkRead($courseId: ID!, $messageId: ID!) {
  markRead(courseId: $courseId, messageId: $messageId) { ...CourseState }
}
${COURSE_STATE}`;
const MY_MENTIONS = `query MyMentions($after: String, $limit: Int) {
  myMentions(after: $after, limit: $limit) { messages { ...Mention } hasMore endCursor }
}
${MENTION}`;
// ONE subscription for the badges of every course and the mentions panel, resumed after a
// reconnect with the last update's cursor (every mention since comes first, none twice).
const MY_UPDATES = `subscription MyUpdates($after: String) {
  myUpdates(after: $after) { course { ...CourseState } mentions { ...Mention } cursor }
}
${COURSE_STATE}
${MENTION}`;
// What the page follows of a course's policy: the edit window, the timetable mode now
// (the banner, the composer) with when it ends, and whether "post anonymously" is offered.
const POLICY = `fragment Policy on CoursePolicy {
  editWindowSeconds mode modeEndsAt slowModeSeconds anonymousPosting
}`;
// Opening a course: its newest history with the event cursor to go live from, its policy,
// and the pinned messages, in one round trip.
const OPEN_COURSE = `query OpenCourse($courseId: ID!, $limit: Int) {
  messages(courseId: $courseId, limit: $limit) { messages { ...Message } hasMore eventCursor }
  coursePolicy(courseId: $courseId) { ...Policy }
  pinnedMessages(courseId: $courseId) { ...Message }
}
${MESSAGE}
${POLICY}`;
// No event says the policy changed: the page asks again when the mode is due to end, after
// a refused send, and when the page or the socket comes back.
const COURSE_POLICY = `query CoursePolicy($courseId: ID!) { coursePolicy(courseId: $courseId) { ...Policy } }
${POLICY}`;
const QUESTIONS = `query Questions($courseId: ID!, $state: QuestionState, $after: ID, $limit: Int) {
  questions(courseId: $courseId, state: $state, after: $after, limit: $limit) {
    questions { ...Message } hasMore
  }
}
${MESSAGE}`;
const SIMILAR_QUESTIONS = `query SimilarQuestions($courseId: ID!, $text: String!, $limit: Int) {
  similarQuestions(courseId: $courseId, text: $text, limit: $limit) { question { ...Message } }
}
${MESSAGE}`;
const HISTORY = `query History($courseId: ID!, $before: ID, $limit: Int) {
  messages(courseId: $courseId, before: $before, limit: $limit) { messages { ...Message } hasMore }
}
${MESSAGE}`;
const THREAD = `query Thread($courseId: ID!, $rootId: ID!, $before: ID, $limit: Int) {
  thread(courseId: $courseId, rootId: $rootId, before: $before, limit: $limit) {
    root { ...Message } replies { ...Message } hasMore
  }
}
${MESSAGE}`;
const EDIT_HISTORY = `query EditHistory($courseId: ID!, $messageId: ID!) {
  message(courseId: $courseId, messageId: $messageId) { ...Message editHistory { content writtenAt } }
}
${MESSAGE}`;
const ONE_MESSAGE = `query OneMessage($courseId: ID!, $messageId: ID!) {
  message(courseId: $courseId, messageId: $messageId) { ...Message }
}
${MESSAGE}`;
const EVENTS = `subscription Events($courseId: ID!, $after: String) {
  courseEvents(courseId: $courseId, after: $after) {
    __typename cursor actorId message { ...EventMessage }
    ... on MessageAddedEvent { root { ...EventMessage } }
    ... on MessageDeletedEvent { retracted }
    ... on ReactionAddedEvent { emoji }
    ... on ReactionRemovedEvent { emoji }
  }
}
${EVENT_MESSAGE}`;
const SEND = `mutation Send(
  $courseId: ID!, $content: String!, $clientMessageId: ID, $replyTo: ID, $kind: MessageKind = MESSAGE,
  $anonymous: Boolean = false
) {
  sendMessage(
    courseId: $courseId, content: $content, clientMessageId: $clientMessageId, replyTo: $replyTo, kind: $kind,
    anonymous: $anonymous
  ) {
    ...Message
  }
}
${MESSAGE}`;
// Every change but a send: the message as it is after it, retried once with its clientMutationId.
const changeOf = (operation, field, extra = {}) => {
  const declared = Object.entries(extra).map(([name, type]) => `, $${name}: ${type}`).join('');
  const passed = Object.keys(extra).map((name) => `, ${name}: $${name}`).join('');
  return `mutation ${operation}($courseId: ID!, $messageId: ID!, $clientMutationId: ID${declared}) {
  ${field}(courseId: $courseId, messageId: $messageId, clientMutationId: $clientMutationId${passed}) {
    ...Message
  }
}
${MESSAGE}`;
};
const EDIT = changeOf('Edit', 'editMessage', { content: 'String!' });
const ADD_REACTION = changeOf('AddReaction', 'addReaction', { emoji: 'String!' });
const REMOVE_REACTION = changeOf('RemoveReaction', 'removeReaction', { emoji: 'String!' });
const PIN = changeOf('Pin', 'pinMessage');
const UNPIN = changeOf('Unpin', 'unpinMessage');
const DELETE = changeOf('Delete', 'deleteMessage');
const ENDORSE = changeOf('Endorse', 'endorseAnswer');
const UNENDORSE = changeOf('Unendorse', 'unendorseAnswer');
const RESOLVE = changeOf('Resolve', 'resolveQuestion');
const REOPEN = changeOf('Reopen', 'reopenQuestion');
// Who is here. Neither presence nor typing is in the course's event log: both subscriptions
// are live only, so after a reconnect the page asks for the count (and the open member list)
// again and forgets the typists (typingChanged names those still typing at once).
const ONLINE_COUNT = `query OnlineCount($courseId: ID!) {
  presence(courseId: $courseId) { courseId onlineCount }
}`;
const MEMBERS = `query Members($courseId: ID!, $first: Int, $after: ID) {
  presence(courseId: $courseId) {
    courseId onlineCount members(first: $first, after: $after) { userId since }
  }
}`;
const PRESENCE_CHANGED = `subscription PresenceChanged($courseId: ID!) {
  presenceChanged(courseId: $courseId) { courseId onlineCount joined { userId since } left }
}`;
const TYPING_CHANGED = `subscription TypingChanged($courseId: ID!) {
  typingChanged(courseId: $courseId) { courseId typingCount users { userId threadId expiresAt } }
}`;
const TYPING = `mutation Typing($courseId: ID!, $threadId: ID) {
  typing(courseId: $courseId, threadId: $threadId) { published retryAfterMs }
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
 * subscription is subscribed again with fresh variables (courseEvents' `after` = the last
 * event's cursor), so nothing is lost or applied twice across a reconnect.
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
      // on another pod; the resubscribe resumes after the last event seen.
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
  courses: $('courses'),
  mentionsToggle: $('mentions-toggle'),
  mentions: $('mentions'),
  mentionsHeading: $('mentions-heading'),
  mentionList: $('mention-list'),
  mentionsEmpty: $('mentions-empty'),
  mentionsMore: $('mentions-more'),
  pinsToggle: $('pins-toggle'),
  questionsToggle: $('questions-toggle'),
  questions: $('questions'),
  questionsHeading: $('questions-heading'),
  questionsFilter: $('questions-filter'),
  questionList: $('question-list'),
  questionsLoading: $('questions-loading'),
  questionsEmpty: $('questions-empty'),
  questionsMore: $('questions-more'),
  modeBanner: $('mode-banner'),
  askQuestion: $('ask-question'),
  similar: $('similar'),
  similarList: $('similar-list'),
  sendWait: $('send-wait'),
  threadSendWait: $('thread-send-wait'),
  pins: $('pins'),
  pinsHeading: $('pins-heading'),
  pinned: $('pinned'),
  pinsEmpty: $('pins-empty'),
  presenceToggle: $('presence-toggle'),
  presence: $('presence'),
  presenceHeading: $('presence-heading'),
  memberList: $('member-list'),
  membersLoading: $('members-loading'),
  membersMore: $('members-more'),
  typing: $('typing'),
  threadTyping: $('thread-typing'),
  panes: $('panes'),
  history: document.querySelector('.history'),
  loadOlder: $('load-older'),
  list: $('messages'),
  empty: $('empty'),
  sendForm: $('send-form'),
  composer: $('composer'),
  send: $('send'),
  error: $('error'),
  thread: $('thread'),
  threadHeading: $('thread-heading'),
  threadClose: $('thread-close'),
  threadScroll: document.querySelector('.thread-scroll'),
  threadRoot: $('thread-root'),
  threadOlder: $('thread-older'),
  threadReplies: $('thread-replies'),
  threadEmpty: $('thread-empty'),
  threadForm: $('thread-form'),
  threadComposer: $('thread-composer'),
  threadSend: $('thread-send'),
  anonymousRow: $('anonymous-row'),
  postAnonymously: $('post-anonymously'),
  anonymousNote: $('anonymous-note'),
  threadAnonymousRow: $('thread-anonymous-row'),
  threadPostAnonymously: $('thread-post-anonymously'),
  threadAnonymousNote: $('thread-anonymous-note'),
};

/** Who is online in the open course: the count, and the member list once asked for. */
const noPresence = () => ({
  onlineCount: null, // unknown until the first answer or update
  changes: 0, // presenceChanged updates applied: an answer to a query sent before one is older
  stale: false, // the socket was down and updates were missed: asked for again when back
  open: false, // the member list is shown
  members: new Map(), // userId → since, of the pages loaded (then kept live)
  loaded: false,
  loading: false,
  hasMore: false,
  last: null, // the last userId loaded: the next page's `after`
});

/** The questions panel of the open course: the pages loaded for its filter, then kept live. */
const noQuestions = (filter = 'OPEN', open = false) => ({
  open,
  filter, // OPEN, RESOLVED or ALL: the `state` asked for
  ids: new Set(), // the questions the pages brought, and those asked since (live)
  loaded: false,
  loading: false,
  hasMore: false,
  last: null, // the last question of the last page: the next page's `after`
});

/** What the page knows about the course it shows; all of it is dropped on a switch. */
const noCourse = () => ({
  courseId: '',
  oldestId: null, // the oldest message of the history pages loaded: the timeline starts there
  hasMore: false,
  liveOnly: false, // the course had no event yet: courseEvents started without a cursor
  loadingOlder: false,
  subscribed: false,
  stopEvents: null,
  cursor: null, // the last event's cursor (first the history's eventCursor): where to resume
  eventCount: 0, // events applied so far: an answer older than an event is not applied
  editWindowMs: 0,
  policy: null, // the mode part of the course's policy as last read (POLICY)
  policyTimer: 0, // reads the policy again when its mode is due to end
  policyReads: 0, // policy requests sent: only the newest one's answer is applied
  // Slow mode: when the viewer may send next (this browser's clock), from their last send
  // or the server's refusal; shown and enforced while the course is in slow mode.
  sendAllowedAt: 0,
  sendWaitTimer: 0,
  questions: noQuestions(),
  // Earlier questions like the one typed: { text, questions } of the newest answer.
  similar: { text: '', questions: [] },
  similarTimer: 0,
  // messageId → { message, eventCount }: each message as the newest event or answer says,
  // and how many events had been applied when an event last set it.
  messages: new Map(),
  mine: new Map(), // messageId → Set of the viewer's emoji on it
  mineChangedAt: new Map(), // messageId → eventCount of the viewer's last reaction event on it
  retracted: new Set(), // ids a failover lost after they were shown
  thread: null, // { rootId, opener, hasMore, loadingOlder } of the open thread panel
  pinsOpen: false,
  editing: null, // { messageId, view } of the open editor
  picker: null, // { messageId, view } of the open reaction picker
  edits: new Map(), // `${view}:${messageId}` → { versions } of an open edit history
  editTimers: new Map(), // messageId → the timeout that ends its edit action
  // The read marker when the course was opened: "new messages" starts after it and stays
  // there while the course is open (marking read as you go does not move it).
  readMarkerAtOpen: null,
  unreadAtOpen: 0,
  historyNewestId: null, // the newest message of the history loaded at open
  presence: noPresence(),
  stopPresence: null,
  // The others who type, as the last typingChanged said: { userId, threadId, until }, `until`
  // in this browser's clock; and how many type beyond the 20 the server names.
  typists: [],
  typistsUnnamed: 0,
  stopTyping: null,
  typingTimer: 0, // drops a typist whose expiry no update reported (a skipped one)
  typingNextAt: 0, // when the page may call `typing` again (the server's throttle: 3 s)
  typingBusy: false,
});

/**
 * The viewer's read state in every course, and their mentions: kept across course switches,
 * from `me`, `markRead` answers and the one `myUpdates` subscription.
 */
const noReads = () => ({
  courses: new Map(), // courseId → MyCourse as last answered
  cursor: null, // the last myUpdates update's cursor: where to resume after a reconnect
  stopUpdates: null,
  marked: new Map(), // courseId → the newest id a markRead was sent for (never sent again or older)
  marking: false,
  markTimer: 0,
  mentions: new Map(), // `${courseId}:${messageId}` → the message
  mentionsLoaded: false,
  mentionsLoading: false,
  mentionsHasMore: false,
  mentionsCursor: null,
  mentionsOpen: false,
  epoch: 0, // bumped when another user signs in: late answers for the last one are dropped
});
const reads = noReads();

const state = {
  viewer: null, // { userId, courseIds, moderates, courses }
  viewerLoading: false,
  // courseId → the viewer's own pseudonym there, from their course states (`me`, myUpdates)
  // and their anonymous sends: their anonymous messages show as theirs. Kept in memory only,
  // never in storage beside the token: it links the viewer to their anonymous messages.
  pseudonyms: new Map(),
  generation: 0, // bumped on every course switch: late answers about the old one are dropped
  ...noCourse(),
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

function newClientId() {
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

/** A button of a message: `action` names what it does (and finds it again after a re-render). */
function actionButton(action, text, attributes = {}) {
  const button = element('button', `action ${action}`, text);
  button.type = 'button';
  button.dataset.action = action;
  for (const [name, value] of Object.entries(attributes)) button.setAttribute(name, value);
  return button;
}

function timeElement(className, iso, text, title) {
  const time = element('time', className, text);
  time.dateTime = new Date(iso).toISOString();
  time.title = title;
  return time;
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
  // Read-only refuses every send, a moderator's too (the chat service exempts them from
  // slow mode only): nothing to type into.
  const readOnly = state.policy?.mode === 'READ_ONLY';
  const canWrite = Boolean(state.courseId) && !signedOut && !readOnly;
  const waiting = slowWaitMs() > 0;
  for (const box of Object.values(composers)) {
    box.textarea.disabled = !canWrite || !box.open();
    box.button.disabled = box.textarea.disabled || Boolean(box.sending) || waiting;
    setText(box.button, box.sending ? t('composer.sending') : t('composer.send'));
  }
  ui.askQuestion.disabled = !canWrite;
  renderAnonymous(canWrite);
  ui.loadOlder.hidden = !state.subscribed || !state.hasMore;
  ui.loadOlder.disabled = state.loadingOlder;
  setText(ui.loadOlder, state.loadingOlder ? t('history.loading') : t('history.loadOlder'));
  ui.empty.hidden = !state.subscribed || ui.list.childElementCount > 0;
  renderPinsPanel();
  renderQuestions();
  renderSimilar();
  renderModeBanner();
  renderSendWait();
  renderThreadPanel();
  renderPresence();
  renderTyping();
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
  CURSOR_EXPIRED: () => t('error.CURSOR_EXPIRED'),
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

// --- what the page knows: messages, applied from answers and events ----------------------

const known = (messageId) => state.messages.get(messageId)?.message;
const moderator = () => state.viewer.moderates.includes(state.courseId);
// Whoever does not moderate a course gets an anonymous author's pseudonym in place of their
// user id (`anonymous:` and 8 hex digits; a user id has no `:`), the author included.
const PSEUDONYM_PREFIX = 'anonymous:';
// The end of a pseudonym the page shows ("Anonymous classmate ·1a2b"): enough to tell the
// anonymous people of one thread apart, never the raw id.
const PSEUDONYM_TAG_LENGTH = 4;
const isPseudonym = (userId) => userId.startsWith(PSEUDONYM_PREFIX);
const ownPseudonym = (courseId = state.courseId) => state.pseudonyms.get(courseId) ?? null;
/** Whether `userId` of `courseId` (a user id or a pseudonym) is the viewer. */
const isMe = (userId, courseId = state.courseId) =>
  userId === state.viewer.userId || (isPseudonym(userId) && userId === ownPseudonym(courseId));
const classmateName = (pseudonym) =>
  t('anonymous.classmate', { tag: pseudonym.slice(-PSEUDONYM_TAG_LENGTH) });
/**
 * How the page names `userId` of `courseId` wherever it names someone (a message's author,
 * thread participants, labels, mentions): an anonymous one as "Anonymous classmate ·1a2b",
 * or "You, anonymously" for the viewer's own pseudonym.
 */
function personName(userId, courseId = state.courseId) {
  if (!isPseudonym(userId)) return userId;
  return userId === ownPseudonym(courseId) ? t('anonymous.you') : classmateName(userId);
}
const isOwn = (message) => isMe(message.userId);
/** Whether the message asks for the viewer: names them, or (a moderator's) @course. */
const mentionsViewer = (message) =>
  !message.deleted &&
  !isOwn(message) &&
  (message.mentionsCourse || (message.mentions ?? []).includes(state.viewer.userId));
/** A reply in a question's thread: an answer, which a moderator may endorse. */
const isAnswer = (message) => Boolean(message.replyTo) && known(message.replyTo)?.kind === 'QUESTION';
const isQuestion = (message) => message.kind === 'QUESTION';
const canResolve = (message) => isQuestion(message) && !message.deleted && (isOwn(message) || moderator());
const canDelete = (message) => !message.deleted && (isOwn(message) || moderator());
const canReadEdits = (message) =>
  Boolean(message.editedAt) && !message.deleted && (isOwn(message) || moderator());
const editEndsAt = (message) => new Date(message.timestamp).getTime() + state.editWindowMs;
const canEdit = (message) =>
  isOwn(message) && !message.deleted && state.editWindowMs > 0 && Date.now() < editEndsAt(message);
const inTimeline = (message) =>
  !message.replyTo && (state.oldestId === null || compareIds(message.messageId, state.oldestId) >= 0);

/**
 * Keep `message` as this answer (of a request sent when `eventCount` events had been
 * applied) or, without `eventCount`, this event says, and show it wherever it belongs. An
 * event about the message since the request was sent is newer than the answer: it stays.
 */
function store(message, eventCount = null) {
  const id = message.messageId;
  const before = state.messages.get(id);
  if (eventCount !== null) {
    // An answer knows the viewer's own reactions, unless the viewer reacted since.
    if ((state.mineChangedAt.get(id) ?? -1) <= eventCount) {
      state.mine.set(id, new Set(message.reactions.filter((r) => r.reactedByMe).map((r) => r.emoji)));
    }
    if (before && before.eventCount > eventCount) {
      place(before.message);
      return;
    }
  }
  const mine = state.mine.get(id);
  for (const emoji of mine ?? []) {
    if (!message.reactions.some((reaction) => reaction.emoji === emoji)) mine.delete(emoji);
  }
  const setBy = eventCount === null ? state.eventCount : (before?.eventCount ?? 0);
  state.messages.set(id, { message, eventCount: setBy });
  place(message);
}

/** Show `message` in every view it belongs to: the timeline, the open thread, the pins. */
function place(message) {
  const id = message.messageId;
  for (const li of document.querySelectorAll(`li[data-view][data-message-id="${id}"]`)) fillMessage(li);
  if (inTimeline(message) && !ui.list.querySelector(`li[data-message-id="${id}"]`)) {
    insertInOrder(ui.list, messageItem(id, 'timeline'));
  }
  const { thread } = state;
  if (thread && id === thread.rootId && !ui.threadRoot.firstElementChild) {
    ui.threadRoot.append(messageItem(id, 'thread'));
  }
  const inThread = thread && message.replyTo === thread.rootId;
  if (inThread && !ui.threadReplies.querySelector(`li[data-message-id="${id}"]`)) {
    insertInOrder(ui.threadReplies, messageItem(id, 'thread'));
  }
  if (message.pinnedAt || ui.pinned.querySelector(`li[data-message-id="${id}"]`)) placePins();
}

/** One change of the course, in order: keep the message (and a reply's root) it carries. */
function applyEvent(event) {
  state.eventCount += 1;
  state.cursor = event.cursor;
  const { message } = event;
  const id = message.messageId;
  const mine = isMe(event.actorId);
  switch (event.__typename) {
    case 'MessageDeletedEvent':
      if (event.retracted) state.retracted.add(id);
      break;
    case 'MessageRestoredEvent':
      // Whatever this page had of it, its own reactions included, may be undone: ask again.
      state.retracted.delete(id);
      refreshMessage(id);
      break;
    case 'AnswerEndorsedEvent':
    case 'AnswerUnendorsedEvent':
      // The event carries the answer; its question's endorsedAnswerCount changed with it.
      if (message.replyTo && known(message.replyTo)) refreshMessage(message.replyTo);
      break;
    case 'ReactionAddedEvent':
    case 'ReactionRemovedEvent':
      if (mine) {
        const emoji = state.mine.get(id) ?? new Set();
        if (event.__typename === 'ReactionAddedEvent') emoji.add(event.emoji);
        else emoji.delete(event.emoji);
        state.mine.set(id, emoji);
        state.mineChangedAt.set(id, state.eventCount);
      }
      break;
    default:
      break;
  }
  if (event.root) store(event.root);
  const followTimeline = nearBottom(ui.history);
  const followThread = nearBottom(ui.threadScroll);
  store(message);
  // A question asked, resolved or reopened within the range the list has loaded joins it
  // (the list shows those its filter matches: a reopened one is back under "Open").
  if (isQuestion(message) && withinQuestions(id)) state.questions.ids.add(id);
  if (event.__typename === 'MessageAddedEvent') {
    scheduleMarkRead();
    if (followTimeline) scrollToBottom(ui.history);
    if (followThread && state.thread) scrollToBottom(ui.threadScroll);
    if (state.liveOnly) {
      // The course had no event before: courseEvents went live without a cursor, so a
      // message sent before it did would be missed. Anything like that is older than this
      // one, so one "load older" finds it.
      state.liveOnly = false;
      state.oldestId ??= id;
      state.hasMore = true;
      queueMicrotask(loadOlder);
    }
  }
  if (event.__typename === 'MessageEditedEvent') {
    for (const view of ['timeline', 'thread']) {
      if (state.edits.has(`${view}:${id}`)) loadEditHistory(id, view);
    }
  }
  render();
}

/** Ask for a message again (its reactions as the viewer's). */
async function refreshMessage(messageId) {
  const { generation, eventCount, courseId } = state;
  try {
    const { message } = await socket.request(ONE_MESSAGE, { courseId, messageId });
    if (generation === state.generation && message) store(message, eventCount);
  } catch (error) {
    if (generation === state.generation) showError(() => describe(error));
  }
}

// --- how a message shows ----------------------------------------------------------------

/** A message's list item in `view` (timeline, thread or pins); filled from what is known. */
function messageItem(messageId, view) {
  const li = element('li', 'message');
  li.dataset.messageId = messageId;
  li.dataset.view = view;
  li.tabIndex = -1; // focus lands here when a button inside disappears
  fillMessage(li);
  return li;
}

const sameOpen = (open, messageId, view) => open?.messageId === messageId && open.view === view;

/**
 * (Re)build a message's item in the page's language. Each part that comes out the same is
 * kept as it is, so focus stays on it and the live region does not read it again; an open
 * editor is never rebuilt (the text typed, the caret and an IME composition stay).
 */
function fillMessage(li) {
  const { messageId, view } = li.dataset;
  const message = known(messageId);
  if (!message) return;
  if (message.deleted && sameOpen(state.editing, messageId, view)) state.editing = null;
  if (message.deleted && sameOpen(state.picker, messageId, view)) state.picker = null;
  li.classList.toggle('own', isOwn(message));
  li.classList.toggle('deleted', message.deleted);
  li.classList.toggle('pinned', Boolean(message.pinnedAt) && !message.deleted);
  li.classList.toggle('mentions-me', mentionsViewer(message));
  li.classList.toggle('endorsed', Boolean(message.endorsedAt) && !message.deleted);
  const editor = sameOpen(state.editing, messageId, view)
    ? (li.querySelector(':scope > form.editor') ?? editorOf(message))
    : null;
  const parts = [metaOf(message), editor ?? textOf(message)];
  if (view !== 'pins') {
    parts.push(editHistoryOf(message, view), threadSummaryOf(message, view), reactionsOf(message));
    if (sameOpen(state.picker, messageId, view)) parts.push(pickerOf(message));
  }
  parts.push(actionsOf(message, view));
  scheduleEditEnd(message);

  const focused = li.contains(document.activeElement) ? document.activeElement : null;
  const current = [...li.children];
  const next = parts.filter(Boolean).map((part) => {
    const old = current.find((node) => node.dataset.part === part.dataset.part);
    return old && (old === part || old.isEqualNode(part)) ? old : part;
  });
  for (const old of current) if (!next.includes(old)) old.remove();
  let previous = null;
  for (const part of next) {
    if (part.parentNode !== li) {
      if (previous) previous.after(part);
      else li.prepend(part);
    }
    previous = part;
  }
  if (focused && !focused.isConnected) {
    const selector = `[data-action="${focused.dataset.action}"]${
      focused.dataset.emoji ? `[data-emoji="${focused.dataset.emoji}"]` : ''
    }`;
    (focused.dataset.action ? li.querySelector(selector) : null)?.focus() ?? li.focus();
    if (!li.contains(document.activeElement)) li.focus();
  }
}

function part(tag, name, className = '') {
  const node = element(tag, [name, className].filter(Boolean).join(' '));
  node.dataset.part = name;
  return node;
}

// The viewer's own: "ada (you)", or under their pseudonym "You, anonymously" (personName).
const userName = (message) =>
  isOwn(message) && !isPseudonym(message.userId)
    ? t('message.you', { user: message.userId })
    : personName(message.userId);
const shortTime = (message) => formatMessageTime(new Date(message.timestamp));

function metaOf(message) {
  const meta = part('p', 'meta');
  const full = formatFullTime(new Date(message.timestamp));
  const time = timeElement('', message.timestamp, shortTime(message), full);
  meta.append(authorOf(message), ' ', time);
  const anonymous = anonymousMarker(message);
  if (anonymous) meta.append(' ', anonymous);
  if (message.editedAt && !message.deleted) {
    const when = formatFullTime(new Date(message.editedAt));
    const title = t('edit.markerTitle', { time: when });
    meta.append(' ', timeElement('marker edited', message.editedAt, t('edit.marker'), title));
  }
  if (message.pinnedAt && !message.deleted) {
    const when = formatFullTime(new Date(message.pinnedAt));
    const title = t('pin.markerTitle', { time: when });
    meta.append(' ', timeElement('marker pinned', message.pinnedAt, t('pin.marker'), title));
  }
  if (mentionsViewer(message)) {
    const words = message.mentions.includes(state.viewer.userId) ? t('mention.marker') : t('mention.markerCourse');
    meta.append(' ', element('span', 'marker mentioned', words));
  }
  for (const marker of questionMarkers(message)) meta.append(' ', marker);
  return meta;
}

/**
 * The author's name; an anonymous one (a pseudonym: the viewer does not moderate the course)
 * with a faceless avatar, so it is not taken for a user's.
 */
function authorOf(message) {
  const user = element('span', 'user', userName(message));
  user.classList.toggle('anonymous', isPseudonym(message.userId));
  return user;
}

/**
 * A moderator sees who sent an anonymous message, marked so they know the students do not;
 * its title says what the students see instead.
 */
function anonymousMarker(message) {
  if (!message.anonymous || isPseudonym(message.userId)) return null;
  const marker = element('span', 'marker anonymous', t('anonymous.marker'));
  if (message.pseudonym) marker.title = t('anonymous.markerTitle', { name: classmateName(message.pseudonym) });
  return marker;
}

/** A question's state and its endorsed answers, an answer's endorsement: the markers. */
function questionMarkers(message) {
  if (message.deleted) return [];
  const markers = [];
  if (isQuestion(message)) {
    if (message.resolvedAt) {
      const title = t('question.resolvedTitle', { time: formatFullTime(new Date(message.resolvedAt)) });
      markers.push(timeElement('marker question resolved', message.resolvedAt, t('question.resolved'), title));
    } else {
      markers.push(element('span', 'marker question open', t('question.open')));
    }
    const count = message.endorsedAnswerCount;
    if (count > 0) markers.push(element('span', 'marker endorsed-count', t('question.endorsedCount', { count })));
  }
  if (message.endorsedAt) {
    const title = t('answer.endorsedTitle', { time: formatFullTime(new Date(message.endorsedAt)) });
    markers.push(timeElement('marker endorsed', message.endorsedAt, t('answer.endorsed'), title));
  }
  return markers;
}

function textOf(message) {
  if (!message.deleted) {
    const text = part('p', 'text');
    appendContent(text, message);
    return text;
  }
  const words = state.retracted.has(message.messageId) ? t('message.retracted') : t('message.deleted');
  const text = part('p', 'text');
  text.textContent = words;
  return text;
}

/**
 * `message.content` into `node`, each mention the server found (`mentions`, `@course`) as a
 * highlighted span; a mention of the viewer (or of the whole course) stands out more.
 */
function appendContent(node, message) {
  const { content } = message;
  const named = new Set(message.mentions ?? []);
  let done = 0;
  for (const match of content.matchAll(MENTION_PATTERN)) {
    const name = match[1].replace(MENTION_TRAILING, '');
    const everyone = name === COURSE_MENTION && message.mentionsCourse;
    if (!everyone && !named.has(name)) continue;
    const end = match.index + 1 + name.length;
    const viewer = everyone || name === state.viewer.userId;
    const mention = element('span', viewer ? 'mention me' : 'mention', content.slice(match.index, end));
    if (match.index > done) node.append(content.slice(done, match.index));
    node.append(mention);
    done = end;
  }
  if (done < content.length) node.append(content.slice(done));
}

function editorOf(message) {
  const form = part('form', 'editor');
  const textarea = element('textarea');
  textarea.rows = 2;
  textarea.value = message.content;
  textarea.setAttribute('aria-label', t('edit.composerLabel'));
  const save = element('button', 'save', t('edit.save'));
  save.type = 'submit';
  save.dataset.action = 'save';
  form.append(textarea, save, actionButton('cancel', t('edit.cancel')));
  return form;
}

/** The words of an open editor again (its text is the user's and stays). */
function wordEditor(form) {
  form.querySelector('textarea').setAttribute('aria-label', t('edit.composerLabel'));
  setText(form.querySelector('.save'), t('edit.save'));
  setText(form.querySelector('.cancel'), t('edit.cancel'));
}

const editsId = (message, view) => `edits-${view}-${message.messageId}`;

function editHistoryOf(message, view) {
  const open = state.edits.get(`${view}:${message.messageId}`);
  if (!open || !canReadEdits(message)) return null;
  const box = part('div', 'edit-history');
  box.id = editsId(message, view);
  if (!open.versions) {
    box.append(element('p', 'loading', t('history.loading')));
    return box;
  }
  box.append(element('p', 'versions-heading', t('edit.versionCount', { count: open.versions.length })));
  const list = element('ol', 'versions');
  for (const version of open.versions) {
    const item = element('li', 'version');
    const when = new Date(version.writtenAt);
    const meta = element('p', 'meta');
    const written = t('edit.historyVersion', { time: formatMessageTime(when) });
    meta.append(timeElement('', version.writtenAt, written, formatFullTime(when)));
    item.append(meta, element('p', 'text', version.content));
    list.append(item);
  }
  box.append(list);
  return box;
}

function threadSummaryOf(message, view) {
  if (view !== 'timeline' || message.replyCount === 0) return null;
  const summary = part('div', 'thread-summary');
  const facts = element('p', 'thread-facts');
  facts.append(element('span', 'reply-count', t('thread.replyCount', { count: message.replyCount })));
  if (message.lastReplyAt) {
    const when = new Date(message.lastReplyAt);
    const last = element('span', 'last-reply', t('thread.lastReply', { when: formatMessageTime(when) }));
    last.title = formatFullTime(when);
    facts.append(last);
  }
  if (message.participants.length > 0) {
    const users = formatList(message.participants.map((userId) => personName(userId)));
    facts.append(element('span', 'participants', t('thread.participants', { users })));
  }
  const open = actionButton('open-thread', t('thread.open'), {
    'aria-label': t('thread.openLabel', { user: personName(message.userId), time: shortTime(message) }),
    'aria-controls': 'thread',
    'aria-expanded': String(state.thread?.rootId === message.messageId),
  });
  summary.append(facts, open);
  return summary;
}

function reactionsOf(message) {
  if (message.deleted || message.reactions.length === 0) return null;
  const row = part('div', 'reactions');
  const mine = state.mine.get(message.messageId);
  for (const { emoji, count } of message.reactions) {
    const pressed = Boolean(mine?.has(emoji));
    const button = actionButton('emoji', '', {
      'aria-pressed': String(pressed),
      'aria-label': t('reaction.summary', { count, emoji }),
      title: pressed ? t('reaction.unreact', { emoji }) : t('reaction.react', { emoji }),
    });
    button.classList.add('reaction');
    button.dataset.emoji = emoji;
    button.append(element('span', 'emoji', emoji), element('span', 'count', formatNumber(count)));
    row.append(button);
  }
  return row;
}

function pickerOf(message) {
  const picker = part('div', 'picker');
  picker.setAttribute('role', 'group');
  picker.setAttribute('aria-label', t('reaction.add'));
  const mine = state.mine.get(message.messageId);
  for (const emoji of PICKER_EMOJI) {
    const pressed = Boolean(mine?.has(emoji));
    const button = actionButton('emoji', emoji, {
      'aria-pressed': String(pressed),
      'aria-label': pressed ? t('reaction.unreact', { emoji }) : t('reaction.react', { emoji }),
    });
    button.dataset.emoji = emoji;
    picker.append(button);
  }
  return picker;
}

function actionsOf(message, view) {
  const actions = part('div', 'actions');
  const about = { user: personName(message.userId), time: shortTime(message) };
  const id = message.messageId;
  if (view === 'timeline' && !message.deleted) {
    actions.append(
      actionButton('reply', t('reply.action'), {
        'aria-label': t('reply.actionLabel', about),
        'aria-controls': 'thread',
        'aria-expanded': String(state.thread?.rootId === id),
      }),
    );
  }
  if (view !== 'pins' && !message.deleted) {
    actions.append(
      actionButton('react', t('reaction.add'), {
        'aria-label': t('reaction.addLabel', about),
        'aria-expanded': String(sameOpen(state.picker, id, view)),
      }),
    );
  }
  if (view !== 'pins' && canEdit(message)) {
    actions.append(actionButton('edit', t('edit.action'), { 'aria-label': t('edit.actionLabel', about) }));
  }
  if (view !== 'pins' && canReadEdits(message)) {
    actions.append(
      actionButton('edit-history', t('edit.history'), {
        'aria-label': t('edit.historyLabel', about),
        'aria-controls': editsId(message, view),
        'aria-expanded': String(state.edits.has(`${view}:${id}`)),
      }),
    );
  }
  if (moderator() && !message.deleted) {
    actions.append(
      message.pinnedAt
        ? actionButton('unpin', t('pin.undo'), { 'aria-label': t('pin.undoLabel', about) })
        : actionButton('pin', t('pin.action'), { 'aria-label': t('pin.actionLabel', about) }),
    );
  }
  // In a question's thread: endorsing its answers (moderators), resolving it (its author too).
  if (view === 'thread' && !message.deleted && isAnswer(message) && moderator()) {
    actions.append(
      message.endorsedAt
        ? actionButton('unendorse', t('answer.unendorse'), { 'aria-label': t('answer.unendorseLabel', about) })
        : actionButton('endorse', t('answer.endorse'), { 'aria-label': t('answer.endorseLabel', about) }),
    );
  }
  if (view === 'thread' && canResolve(message)) {
    actions.append(
      message.resolvedAt
        ? actionButton('reopen', t('question.reopen'), { 'aria-label': t('question.reopenLabel', about) })
        : actionButton('resolve', t('question.resolve'), { 'aria-label': t('question.resolveLabel', about) }),
    );
  }
  if (view !== 'pins' && canDelete(message)) {
    const label = t('message.deleteLabel', about);
    actions.append(actionButton('delete', t('message.delete'), { 'aria-label': label }));
  }
  return actions.childElementCount > 0 ? actions : null;
}

/** An own message loses its edit action when the course's edit window closes. */
function scheduleEditEnd(message) {
  const id = message.messageId;
  if (state.editTimers.has(id) || !canEdit(message)) return;
  const timer = setTimeout(() => {
    state.editTimers.delete(id);
    if (known(id)) place(known(id));
  }, editEndsAt(message) - Date.now() + 100);
  state.editTimers.set(id, timer);
}

function refillAll() {
  for (const li of document.querySelectorAll('li[data-view][data-message-id]')) fillMessage(li);
  for (const form of document.querySelectorAll('form.editor')) wordEditor(form);
}

/** Insert `li` into `list` so it stays ordered by id (new messages usually go last). */
function insertInOrder(list, li) {
  let after = list.lastElementChild;
  // The "new messages" divider has no id: it stays right above the message it marks.
  while (after && (!after.dataset.messageId || compareIds(after.dataset.messageId, li.dataset.messageId) > 0)) {
    after = after.previousElementSibling;
  }
  if (after) after.after(li);
  else list.prepend(li);
}

const nearBottom = (scroller) => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;

function scrollToBottom(scroller) {
  scroller.scrollTop = scroller.scrollHeight;
}

// --- history ----------------------------------------------------------------------------

async function busy(list, request) {
  list.setAttribute('aria-busy', 'true'); // a page of history is not read out line by line
  try {
    return await request;
  } finally {
    list.removeAttribute('aria-busy');
  }
}

async function loadOlder() {
  if (!state.hasMore || state.loadingOlder || !state.oldestId) return;
  const { generation, eventCount, courseId } = state;
  const hadFocus = document.activeElement === ui.loadOlder;
  state.loadingOlder = true;
  render();
  // Keep what is on screen in place while older messages go in above it.
  const fromBottom = ui.history.scrollHeight - ui.history.scrollTop;
  try {
    const variables = { courseId, before: state.oldestId, limit: HISTORY_PAGE_SIZE };
    const { messages: page } = await busy(ui.list, socket.request(HISTORY, variables));
    if (generation !== state.generation) return;
    state.hasMore = page.hasMore;
    if (page.messages.length > 0) state.oldestId = page.messages[0].messageId;
    for (const message of page.messages) store(message, eventCount);
    // Messages an event brought before the timeline reached back to them.
    for (const { message } of state.messages.values()) if (inTimeline(message)) place(message);
    placeDivider();
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
  state.stopEvents?.();
  state.stopPresence?.();
  state.stopTyping?.();
  clearTimeout(state.typingTimer);
  clearTimeout(state.policyTimer);
  clearTimeout(state.similarTimer);
  clearTimeout(state.sendWaitTimer);
  for (const timer of state.editTimers.values()) clearTimeout(timer);
  // Off by default in every course: whether to post anonymously is decided per course.
  for (const box of Object.values(composers)) box.anonymous.checkbox.checked = false;
  closeThread({ restoreFocus: false });
  Object.assign(state, noCourse(), { generation: state.generation + 1 });
  ui.list.replaceChildren();
  ui.pinned.replaceChildren();
  ui.questionList.replaceChildren();
  ui.similarList.replaceChildren();
  showError(null);
}

/** Not a passing outage (those reconnect by themselves): start over when the user asks. */
function stopCourse(generation, words) {
  if (generation !== state.generation) return;
  leaveCourse();
  renderCourses();
  showError(words);
  render();
}

async function openCourse(courseId) {
  if (courseId === state.courseId) return;
  leaveCourse();
  state.courseId = courseId;
  storage.set(COURSE_KEY, courseId);
  renderCourses();
  render();
  if (courseId) await loadCourse();
}

/**
 * The newest history, the edit window and the pins, then every change after the history's
 * event cursor: nothing falls between history and live, and after a reconnect the
 * subscription resumes after the last event applied.
 */
async function loadCourse() {
  const { generation, courseId } = state;
  let data;
  try {
    data = await busy(ui.list, socket.request(OPEN_COURSE, { courseId, limit: HISTORY_PAGE_SIZE }));
  } catch (error) {
    stopCourse(generation, () => t('course.loadFailed', { course: courseId, reason: describe(error) }));
    return false;
  }
  if (generation !== state.generation) return false;
  const page = data.messages;
  applyPolicy(data.coursePolicy);
  state.hasMore = page.hasMore;
  state.oldestId = page.messages[0]?.messageId ?? null;
  state.cursor = page.eventCursor ?? null;
  state.liveOnly = state.cursor === null;
  const course = reads.courses.get(courseId);
  state.readMarkerAtOpen = course?.lastReadMessageId ?? null;
  state.unreadAtOpen = course?.unreadCount ?? 0;
  state.historyNewestId = page.messages.at(-1)?.messageId ?? null;
  for (const message of [...page.messages, ...data.pinnedMessages]) store(message, 0);
  placeDivider();
  state.stopEvents = socket.subscribe(EVENTS, () => ({ courseId, after: state.cursor }), {
    next: (answer) => {
      if (generation === state.generation) applyEvent(answer.courseEvents);
    },
    error: (error) => {
      if (generation !== state.generation) return;
      if (error.code === 'CURSOR_EXPIRED') reloadCourse(error);
      else stopCourse(generation, () => t('course.liveStopped', { reason: describe(error) }));
    },
  });
  state.stopPresence = followCourse(PRESENCE_CHANGED, applyPresence, forgetPresence, refreshPresence);
  state.stopTyping = followCourse(TYPING_CHANGED, applyTyping, forgetTypists);
  refreshPresence();
  state.subscribed = true;
  render();
  scrollToUnread();
  scheduleMarkRead();
  return true;
}

/**
 * The page was away longer than the course's event log keeps changes: what it shows may be
 * stale in ways no event will tell. Start the course over (history, pins, the open thread)
 * and go on from the new history's cursor.
 */
async function reloadCourse(error) {
  const { courseId, pinsOpen } = state;
  const membersOpen = state.presence.open;
  const { filter, open: questionsOpen } = state.questions;
  const rootId = state.thread?.rootId;
  leaveCourse();
  showError(() => describe(error));
  state.courseId = courseId;
  state.pinsOpen = pinsOpen;
  state.presence.open = membersOpen;
  state.questions = noQuestions(filter, questionsOpen);
  render();
  if (!(await loadCourse())) return;
  if (rootId) openThread(rootId, null);
  if (questionsOpen) loadQuestions();
  if (state.error?.() === describe(error)) showError(null);
}

// --- the course's policy: the mode banner ----------------------------------------------

// A mode's end is read again this long after it (the server's clock decides the edge).
const POLICY_EDGE_MS = 1000;
// setTimeout's longest delay (about 24 days); a mode that lasts longer is read again then.
const LONGEST_TIMEOUT_MS = 2 ** 31 - 1;

/** The policy as answered: the edit window, the mode, and a timer for the mode's end. */
function applyPolicy(policy) {
  state.editWindowMs = policy.editWindowSeconds * 1000;
  state.policy = policy;
  if (policy.anonymousPosting !== 'TO_CLASSMATES') {
    // Switched off while ticked: the box goes, and the page says that what is sent now
    // shows the name (the text typed for an anonymous post stays where it is).
    const ticked = Object.values(composers).filter((box) => box.anonymous.checkbox.checked);
    for (const box of ticked) box.anonymous.checkbox.checked = false;
    if (ticked.length > 0) showError(() => t('anonymous.switchedOff'));
  }
  clearTimeout(state.policyTimer);
  if (policy.modeEndsAt) {
    const untilEndMs = new Date(policy.modeEndsAt).getTime() - Date.now() + POLICY_EDGE_MS;
    const delay = Math.min(Math.max(untilEndMs, POLICY_EDGE_MS), LONGEST_TIMEOUT_MS);
    state.policyTimer = setTimeout(loadPolicy, delay);
  }
}

/** Read the open course's policy again (the mode may have changed). */
async function loadPolicy() {
  if (!state.courseId) return;
  state.policyReads += 1;
  const { generation, courseId, policyReads } = state;
  try {
    const { coursePolicy } = await socket.request(COURSE_POLICY, { courseId });
    if (generation !== state.generation || policyReads !== state.policyReads) return;
    applyPolicy(coursePolicy);
    render();
  } catch (error) {
    // The banner stays as it was; the next send's refusal, or coming back, asks again.
    console.info(`course policy not read again: ${error.message}`);
  }
}

// --- the course's policy: posting anonymously ----------------------------------------

const anonymousAllowed = () => state.subscribed && state.policy?.anonymousPosting === 'TO_CLASSMATES';

/** The words beside a ticked "Post anonymously": exactly who sees the viewer's name. */
function anonymousNote() {
  const pseudonym = ownPseudonym();
  return [
    t('anonymous.studentsSee'),
    pseudonym ? t('anonymous.yours', { name: classmateName(pseudonym) }) : '',
    t('anonymous.moderatorsSee'),
    t('anonymous.typingHidden'),
  ]
    .filter(Boolean)
    .join(' ');
}

/**
 * "Post anonymously" by both composers where the policy allows it, and its note while it is
 * ticked. The note's words are there when it is hidden too: the checkbox is described by
 * them, so a screen reader says who will see the name before it is ticked.
 */
function renderAnonymous(canWrite) {
  const allowed = anonymousAllowed();
  for (const box of Object.values(composers)) {
    const { row, checkbox, note } = box.anonymous;
    row.hidden = !allowed;
    checkbox.disabled = !canWrite;
    note.hidden = !allowed || !checkbox.checked;
    setText(note, anonymousNote());
  }
}

/** The viewer's pseudonym in `courseId` (a course state or a send said it): their messages show as theirs. */
function learnPseudonym(courseId, pseudonym) {
  if (state.pseudonyms.get(courseId) === pseudonym) return;
  state.pseudonyms.set(courseId, pseudonym);
  refillAll();
  renderMentions();
}

/** The banner's words for the mode now ('' when the course is open). */
function modeWords(policy) {
  const until = policy.modeEndsAt ? formatMessageTime(new Date(policy.modeEndsAt)) : null;
  if (policy.mode === 'READ_ONLY') return until ? t('mode.readOnlyUntil', { time: until }) : t('mode.readOnly');
  if (policy.mode !== 'SLOW_MODE') return '';
  const interval = formatDuration(policy.slowModeSeconds ?? 0);
  const words = until ? t('mode.slowUntil', { time: until, interval }) : t('mode.slow', { interval });
  return moderator() ? `${words} ${t('mode.moderatorExempt')}` : words;
}

function renderModeBanner() {
  const policy = state.subscribed ? state.policy : null;
  const words = policy ? modeWords(policy) : '';
  ui.modeBanner.hidden = !words;
  ui.modeBanner.dataset.mode = words ? policy.mode : 'OPEN';
  setText(ui.modeBanner, words);
  if (words && policy.modeEndsAt) ui.modeBanner.title = formatFullTime(new Date(policy.modeEndsAt));
  else ui.modeBanner.removeAttribute('title');
}

/** Slow mode: how long until the viewer may send again (0: now, or not in slow mode). */
function slowWaitMs() {
  if (state.policy?.mode !== 'SLOW_MODE' || moderator()) return 0;
  return Math.max(0, state.sendAllowedAt - Date.now());
}

/** "You can send your next message in 58 seconds." under both composers, worded down to 0. */
function renderSendWait() {
  const waitMs = slowWaitMs();
  const words = waitMs > 0 ? t('mode.nextSend', { when: formatFromNow(waitMs) }) : '';
  for (const line of [ui.sendWait, ui.threadSendWait]) {
    line.hidden = !words;
    setText(line, words);
  }
  clearTimeout(state.sendWaitTimer);
  // Worded again every second; at the end the composers are rendered with Send enabled.
  if (waitMs > 0) {
    state.sendWaitTimer = setTimeout(() => (slowWaitMs() > 0 ? renderSendWait() : render()), Math.min(waitMs, 1000));
  }
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
  if (before?.userId !== me.userId) state.pseudonyms.clear();
  state.viewer = me;
  state.viewerLine = () => t('viewer.signedInAs', { user: me.userId });
  // A new token may be another user, or have other rights: then the course starts over.
  const current = state.courseId;
  const sameRights =
    before?.userId === me.userId &&
    me.courseIds.includes(current) &&
    before.moderates.includes(current) === me.moderates.includes(current);
  if (current && !sameRights) leaveCourse();
  followUpdates(before?.userId !== me.userId || before.courseIds.join() !== me.courseIds.join());
  for (const course of me.courses) applyCourseState(course);
  renderCourses();
  renderMentions();
  const remembered = storage.get(COURSE_KEY);
  const wanted =
    state.courseId ||
    (me.courseIds.includes(remembered) ? remembered : '') ||
    (me.courseIds.length === 1 ? me.courseIds[0] : '');
  render();
  if (wanted) await openCourse(wanted);
}

/**
 * The one `myUpdates` subscription: every course's counts, then each change, and the new
 * mentions. The socket resubscribes it after a reconnect with the last update's cursor; a
 * token of another user (or with other courses) starts it over, from nothing.
 */
function followUpdates(startOver) {
  if (reads.stopUpdates && !startOver) return;
  reads.stopUpdates?.();
  clearTimeout(reads.markTimer);
  Object.assign(reads, noReads(), { epoch: reads.epoch + 1, mentionsOpen: reads.mentionsOpen });
  subscribeUpdates(reads.epoch);
  if (reads.mentionsOpen) loadMentions();
}

// After a refusal (too many subscriptions, say) the badges try again this much later.
const UPDATES_RETRY_MS = 10_000;

function subscribeUpdates(epoch) {
  reads.stopUpdates = socket.subscribe(MY_UPDATES, () => ({ after: reads.cursor }), {
    next: ({ myUpdates: update }) => {
      if (epoch !== reads.epoch) return;
      reads.cursor = update.cursor;
      applyCourseState(update.course);
      if (update.mentions.length > 0) addMentions(update.mentions);
    },
    error: (error) => {
      if (epoch !== reads.epoch) return;
      // The badges stop following for now: the page says so and subscribes again later,
      // without the cursor if that is what the server refused.
      if (error.code === 'BAD_USER_INPUT') reads.cursor = null;
      showError(() => t('course.badgesStopped', { reason: describe(error) }));
      const waitMs = Math.max(UPDATES_RETRY_MS, error.extensions.retryAfterMs ?? 0);
      setTimeout(() => {
        if (epoch === reads.epoch) subscribeUpdates(epoch);
      }, waitMs);
    },
  });
}

// --- the thread panel -------------------------------------------------------------------

/** Open the thread of `rootId`; `opener` (reply, open-thread) is the button focus returns to. */
async function openThread(rootId, opener) {
  if (state.thread?.rootId !== rootId) {
    closeThread({ restoreFocus: false });
    state.thread = { rootId, opener, hasMore: false, loadingOlder: false, loaded: false };
    ui.threadRoot.replaceChildren();
    ui.threadReplies.replaceChildren();
    refreshTimelineItem(rootId); // its buttons say the panel is open
    if (known(rootId)) place(known(rootId));
    render();
    loadThread(null);
  } else {
    state.thread.opener = opener ?? state.thread.opener;
  }
  if (opener === 'reply' && !ui.threadComposer.disabled) ui.threadComposer.focus();
  else if (opener) ui.threadHeading.focus();
}

async function loadThread(before) {
  const { thread, generation, eventCount, courseId } = state;
  thread.loadingOlder = true;
  render();
  try {
    const variables = { courseId, rootId: thread.rootId, before, limit: HISTORY_PAGE_SIZE };
    const { thread: page } = await busy(ui.threadReplies, socket.request(THREAD, variables));
    if (generation !== state.generation || state.thread !== thread) return;
    thread.hasMore = page.hasMore;
    thread.oldestId = page.replies[0]?.messageId ?? thread.oldestId;
    store(page.root, eventCount);
    for (const reply of page.replies) store(reply, eventCount);
    if (!before) scrollToBottom(ui.threadScroll);
  } catch (error) {
    if (generation === state.generation) showError(() => describe(error));
  } finally {
    if (state.thread === thread) {
      const wasFocused = document.activeElement === ui.threadOlder;
      thread.loadingOlder = false;
      thread.loaded = true;
      render();
      if (wasFocused && ui.threadOlder.hidden) ui.threadReplies.firstElementChild?.focus();
    }
  }
}

function closeThread({ restoreFocus = true } = {}) {
  const { thread } = state;
  if (!thread) return;
  state.thread = null;
  if (state.editing?.view === 'thread') state.editing = null;
  if (state.picker?.view === 'thread') state.picker = null;
  for (const key of [...state.edits.keys()]) if (key.startsWith('thread:')) state.edits.delete(key);
  ui.threadRoot.replaceChildren();
  ui.threadReplies.replaceChildren();
  render();
  const li = refreshTimelineItem(thread.rootId);
  // Opened from the questions list or a suggestion: back to the entry that opened it.
  const entries = { question: ui.questionList, similar: ui.similarList }[thread.opener];
  const entry = entries?.querySelector(`button[data-message-id="${thread.rootId}"]`);
  if (restoreFocus) (entry ?? li?.querySelector(`[data-action="${thread.opener}"]`) ?? li ?? ui.composer).focus();
}

function refreshTimelineItem(messageId) {
  const li = ui.list.querySelector(`li[data-message-id="${messageId}"]`);
  if (li) fillMessage(li);
  return li;
}

/** Where a reply in the open thread goes: its root, or (a deleted root takes no replies) its newest reply. */
function replyTarget() {
  const { thread } = state;
  if (!thread) return null;
  const root = known(thread.rootId);
  if (root && !root.deleted) return root.messageId;
  const replies = [...ui.threadReplies.children].map((li) => known(li.dataset.messageId));
  return replies.filter((reply) => reply && !reply.deleted).at(-1)?.messageId ?? null;
}

function renderThreadPanel() {
  const { thread } = state;
  ui.thread.hidden = !thread;
  ui.panes.classList.toggle('with-thread', Boolean(thread));
  ui.threadOlder.hidden = !thread?.hasMore;
  ui.threadOlder.disabled = Boolean(thread?.loadingOlder);
  setText(ui.threadOlder, thread?.loadingOlder ? t('history.loading') : t('history.loadOlder'));
  ui.threadEmpty.hidden = !thread?.loaded || ui.threadReplies.childElementCount > 0;
}

// --- the pinned messages ----------------------------------------------------------------

/** The pins list as the messages say: every pinned one, the most recently pinned first. */
function placePins() {
  const pinned = [...state.messages.values()]
    .map(({ message }) => message)
    .filter((message) => message.pinnedAt && !message.deleted)
    .sort((a, b) => new Date(b.pinnedAt) - new Date(a.pinnedAt));
  const shown = [...ui.pinned.children];
  if (pinned.map((m) => m.messageId).join() === shown.map((li) => li.dataset.messageId).join()) return;
  const focused = ui.pinned.contains(document.activeElement) ? document.activeElement : null;
  const items = new Map(shown.map((li) => [li.dataset.messageId, li]));
  ui.pinned.replaceChildren(
    ...pinned.map(({ messageId }) => items.get(messageId) ?? messageItem(messageId, 'pins')),
  );
  if (focused) (focused.isConnected ? focused : ui.pinsHeading).focus();
  render();
}

function renderPinsPanel() {
  const count = ui.pinned.childElementCount;
  ui.pinsToggle.hidden = !state.subscribed;
  setText(ui.pinsToggle, t('pin.count', { count }));
  ui.pinsToggle.title = t('pin.show');
  ui.pinsToggle.setAttribute('aria-expanded', String(state.pinsOpen));
  ui.pins.hidden = !state.pinsOpen || !state.subscribed;
  ui.pinsEmpty.hidden = count > 0;
}

// --- read state: badges, the "new messages" divider, markRead ---------------------------

const countWords = (count, exact, many) => (count >= COUNT_CAP ? many : exact);
const badgeNumber = (count) => (count >= COUNT_CAP ? `${formatNumber(COUNT_CAP - 1)}+` : formatNumber(count));

/**
 * The badges of a course (or of all mentions): "3" unread and "@1" mentions, shown as they
 * look and named in words ("3 unread, 1 mention") for a screen reader. Null: nothing unread.
 */
function badgesOf(unread, mentions) {
  const names = [];
  const badges = element('span', 'badges');
  if (unread > 0) {
    names.push(countWords(unread, t('course.unread', { count: unread }), t('course.unreadMany')));
    badges.append(element('span', 'badge unread-count', badgeNumber(unread)));
  }
  if (mentions > 0) {
    names.push(countWords(mentions, t('course.mentions', { count: mentions }), t('course.mentionsMany')));
    badges.append(element('span', 'badge mention-count', `@${badgeNumber(mentions)}`));
  }
  if (names.length === 0) return null;
  badges.setAttribute('role', 'img');
  const label = names.length === 2 ? t('course.badges', { unread: names[0], mentions: names[1] }) : names[0];
  badges.setAttribute('aria-label', label);
  return badges;
}

/** Replace `node`'s children with `parts` unless they are the same already (focus stays). */
function fillIfChanged(node, parts) {
  const current = [...node.children];
  if (current.length !== parts.length || current.some((child, index) => !child.isEqualNode(parts[index]))) {
    node.replaceChildren(...parts);
  }
}

/** The course list: a button per course with its name and badges, the open one current. */
function renderCourses() {
  if (!state.viewer) return;
  const shown = new Map([...ui.courses.children].map((li) => [li.dataset.courseId, li]));
  const items = state.viewer.courseIds.map((courseId) => {
    let li = shown.get(courseId);
    if (!li) {
      li = element('li');
      li.dataset.courseId = courseId;
      const button = element('button', 'course');
      button.type = 'button';
      button.dataset.courseId = courseId;
      li.append(button);
    }
    fillCourseButton(li.firstElementChild, courseId);
    return li;
  });
  if (items.length !== ui.courses.childElementCount || items.some((li, index) => ui.courses.children[index] !== li)) {
    const focused = ui.courses.contains(document.activeElement) ? document.activeElement : null;
    ui.courses.replaceChildren(...items);
    if (focused?.isConnected) focused.focus();
  }
  renderMentionsToggle();
}

function fillCourseButton(button, courseId) {
  const course = reads.courses.get(courseId);
  const unread = course?.unreadCount ?? 0;
  const mentions = course?.mentionCount ?? 0;
  const name = state.viewer.moderates.includes(courseId) ? t('course.moderated', { course: courseId }) : courseId;
  fillIfChanged(button, [element('span', 'course-name', name), badgesOf(unread, mentions)].filter(Boolean));
  button.classList.toggle('has-unread', unread > 0);
  if (courseId === state.courseId) button.setAttribute('aria-current', 'true');
  else button.removeAttribute('aria-current');
}

/**
 * A course's read state as an answer or update says. One computed before a newer marker
 * (a myUpdates update racing the page's own markRead) is older news: the server sends
 * another update after the markRead anyway.
 */
function applyCourseState(next) {
  if (next.pseudonym) learnPseudonym(next.courseId, next.pseudonym);
  const marker = reads.courses.get(next.courseId)?.lastReadMessageId;
  if (marker && (!next.lastReadMessageId || compareIds(next.lastReadMessageId, marker) < 0)) return;
  reads.courses.set(next.courseId, next);
  renderCourses();
}

/**
 * The divider's place: above the first message of the history loaded at open that came
 * after the read marker and is not the viewer's own.
 */
function placeDivider() {
  ui.list.querySelector(':scope > .unread-divider')?.remove();
  if (state.unreadAtOpen === 0 || state.historyNewestId === null) return;
  const marker = state.readMarkerAtOpen;
  const first = [...ui.list.querySelectorAll(':scope > li[data-message-id]')].find((li) => {
    const id = li.dataset.messageId;
    const message = known(id);
    return (
      message &&
      !isOwn(message) &&
      !message.deleted &&
      compareIds(id, state.historyNewestId) <= 0 &&
      (marker === null || compareIds(id, marker) > 0)
    );
  });
  if (!first) return;
  const divider = element('li', 'unread-divider');
  divider.id = 'unread-divider';
  divider.append(element('span', '', t('history.newMessages')));
  first.before(divider);
}

/** At open: the first unread message at the top when the unread ones overflow the view. */
function scrollToUnread() {
  scrollToBottom(ui.history);
  const divider = $('unread-divider');
  if (!divider) return;
  const above = divider.getBoundingClientRect().top - ui.history.getBoundingClientRect().top;
  if (above < 0) ui.history.scrollTop += above - 8;
}

/** The newest message the page has of the open course (timeline, threads, pins). */
function newestKnownId() {
  let newest = null;
  for (const id of state.messages.keys()) if (newest === null || compareIds(id, newest) > 0) newest = id;
  return newest;
}

/** Mark the open course read up to its newest message soon, if the viewer is looking at it. */
function scheduleMarkRead() {
  clearTimeout(reads.markTimer);
  reads.markTimer = setTimeout(markRead, MARK_READ_DELAY_MS);
}

const lookingAtNewest = () =>
  state.subscribed && document.visibilityState === 'visible' && nearBottom(ui.history);

async function markRead() {
  if (!lookingAtNewest() || reads.marking) return;
  const { courseId } = state;
  const messageId = newestKnownId();
  if (messageId === null) return;
  // Never for a message older than (or as old as) one already marked: a marker never moves back.
  const marked = reads.marked.get(courseId) ?? reads.courses.get(courseId)?.lastReadMessageId;
  if (marked && compareIds(messageId, marked) <= 0) return;
  reads.marking = true;
  reads.marked.set(courseId, messageId);
  try {
    const { markRead: course } = await socket.request(MARK_READ, { courseId, messageId });
    applyCourseState(course);
  } catch (error) {
    // Nothing the viewer must act on: the next scroll or message tries again.
    if (reads.marked.get(courseId) === messageId) reads.marked.delete(courseId);
    console.info(`markRead of ${courseId} failed: ${error.message}`);
  } finally {
    reads.marking = false;
    if (courseId === state.courseId && newestKnownId() !== messageId) scheduleMarkRead();
  }
}

// A markRead made through another GraphQL process (another tab or device of the viewer)
// reaches this page's myUpdates only with the course's next message: coming back to the
// page, it asks for the counts once more, at most this often.
const REFRESH_COURSES_MS = 5000;
let coursesRefreshedAt = 0;

async function refreshCourses() {
  if (!state.viewer || Date.now() - coursesRefreshedAt < REFRESH_COURSES_MS) return;
  coursesRefreshedAt = Date.now();
  const { epoch } = reads;
  try {
    const { me } = await socket.request(MY_COURSES);
    if (epoch === reads.epoch) for (const course of me.courses) applyCourseState(course);
  } catch (error) {
    // The badges stay as they were; myUpdates goes on correcting them.
    console.info(`course counts not refreshed: ${error.message}`);
  }
}

// --- the mentions panel -----------------------------------------------------------------

const mentionKey = (message) => `${message.courseId}:${message.messageId}`;

/** Newest first, across courses (ids only order the messages of one course). */
const newestFirst = (a, b) =>
  new Date(b.timestamp) - new Date(a.timestamp) ||
  b.courseId.localeCompare(a.courseId) ||
  compareIds(b.messageId, a.messageId);

function addMentions(messages) {
  for (const message of messages) {
    if (message.deleted) reads.mentions.delete(mentionKey(message));
    else reads.mentions.set(mentionKey(message), message);
  }
  renderMentions();
}

async function loadMentions() {
  if (reads.mentionsLoading) return;
  const hadFocus = document.activeElement === ui.mentionsMore;
  const { epoch } = reads;
  reads.mentionsLoading = true;
  renderMentions();
  try {
    const variables = { after: reads.mentionsCursor, limit: MENTIONS_PAGE_SIZE };
    const { myMentions: page } = await busy(ui.mentionList, socket.request(MY_MENTIONS, variables));
    if (epoch !== reads.epoch) return;
    reads.mentionsLoaded = true;
    reads.mentionsHasMore = page.hasMore;
    reads.mentionsCursor = page.endCursor ?? reads.mentionsCursor;
    addMentions(page.messages);
  } catch (error) {
    if (epoch === reads.epoch) showError(() => t('mention.loadFailed', { reason: describe(error) }));
  } finally {
    if (epoch === reads.epoch) {
      reads.mentionsLoading = false;
      renderMentions();
      // "Load more" is gone once everything is loaded: the oldest mention takes the focus.
      if (hadFocus && ui.mentionsMore.hidden) ui.mentionList.lastElementChild?.querySelector('button')?.focus();
    }
  }
}

function mentionEntry(message) {
  const li = element('li', 'message mention-entry');
  li.dataset.key = mentionKey(message);
  const button = element('button', 'mention-link');
  button.type = 'button';
  button.dataset.courseId = message.courseId;
  button.dataset.messageId = message.messageId;
  const meta = element('span', 'meta');
  const user = personName(message.userId, message.courseId);
  const from = element('span', 'user', t('mention.from', { user, course: message.courseId }));
  from.classList.toggle('anonymous', isPseudonym(message.userId));
  const full = formatFullTime(new Date(message.timestamp));
  meta.append(from, ' ', timeElement('', message.timestamp, shortTime(message), full));
  const anonymous = anonymousMarker(message);
  if (anonymous) meta.append(' ', anonymous);
  const text = element('span', 'text');
  appendContent(text, message);
  button.append(meta, text);
  li.append(button);
  return li;
}

function renderMentions() {
  if (!state.viewer) return;
  const messages = [...reads.mentions.values()].sort(newestFirst);
  const focusedKey = ui.mentionList.contains(document.activeElement)
    ? document.activeElement.closest('li').dataset.key
    : null;
  const items = messages.map((message) => mentionEntry(message));
  const current = [...ui.mentionList.children];
  if (items.length !== current.length || items.some((li, index) => !li.isEqualNode(current[index]))) {
    ui.mentionList.replaceChildren(...items);
    if (focusedKey) {
      (ui.mentionList.querySelector(`li[data-key="${focusedKey}"] button`) ?? ui.mentionsHeading).focus();
    }
  }
  ui.mentions.hidden = !reads.mentionsOpen;
  ui.mentionsEmpty.hidden = !reads.mentionsLoaded || messages.length > 0;
  ui.mentionsMore.hidden = !reads.mentionsLoaded || !reads.mentionsHasMore;
  ui.mentionsMore.disabled = reads.mentionsLoading;
  setText(ui.mentionsMore, reads.mentionsLoading ? t('history.loading') : t('mention.loadMore'));
  renderMentionsToggle();
}

/** "Mentions" with the badge of every course's mentions together. */
function renderMentionsToggle() {
  ui.mentionsToggle.setAttribute('aria-expanded', String(reads.mentionsOpen));
  let total = 0;
  for (const course of reads.courses.values()) total += course.mentionCount;
  const badges = badgesOf(0, Math.min(total, COUNT_CAP));
  fillIfChanged(ui.mentionsToggle, [element('span', 'toggle-name', t('mention.toggle')), badges].filter(Boolean));
}

function toggleMentions(open = !reads.mentionsOpen) {
  reads.mentionsOpen = open;
  renderMentions();
  if (open && !reads.mentionsLoaded) loadMentions();
}

/** A mention chosen in the panel: its course, then the message (or its thread) when loaded. */
async function openMention(courseId, messageId) {
  const message = reads.mentions.get(`${courseId}:${messageId}`);
  if (courseId !== state.courseId) await openCourse(courseId);
  if (state.courseId !== courseId || !state.subscribed) return;
  if (message?.replyTo) {
    await openThread(message.replyTo, 'mention');
    return;
  }
  // An older message: a few pages of history back, as "Load older" would.
  for (let page = 0; page < 5 && !itemOf(messageId, 'timeline') && state.hasMore; page += 1) {
    if (state.oldestId === null || compareIds(messageId, state.oldestId) > 0) break;
    await loadOlder();
    if (state.courseId !== courseId) return;
  }
  const li = itemOf(messageId, 'timeline');
  if (li) {
    li.scrollIntoView({ block: 'center' });
    li.focus({ preventScroll: true });
  } else {
    ui.courses.querySelector('button[aria-current]')?.focus();
  }
}

// --- questions: the list, and the earlier ones like the one typed -----------------------

/** A question as a button that opens its thread: who asked, when, its state, its text. */
function questionLink(message) {
  const button = element('button', 'question-link');
  button.type = 'button';
  button.dataset.messageId = message.messageId;
  const meta = element('span', 'meta');
  const full = formatFullTime(new Date(message.timestamp));
  meta.append(authorOf(message), ' ', timeElement('', message.timestamp, shortTime(message), full));
  const anonymous = anonymousMarker(message);
  if (anonymous) meta.append(' ', anonymous);
  for (const marker of questionMarkers(message)) meta.append(' ', marker);
  if (message.replyCount > 0) {
    meta.append(' ', element('span', 'reply-count', t('thread.replyCount', { count: message.replyCount })));
  }
  const text = element('span', 'text');
  appendContent(text, message);
  button.append(meta, text);
  return button;
}

/** Whether `id` is no older than the last question the list's pages reached. */
function withinQuestions(id) {
  const { loaded, hasMore, last } = state.questions;
  return loaded && (!hasMore || last === null || compareIds(id, last) >= 0);
}

const QUESTION_FILTERS = {
  OPEN: (message) => !message.resolvedAt,
  RESOLVED: (message) => Boolean(message.resolvedAt),
  ALL: () => true,
};
const QUESTIONS_EMPTY = {
  OPEN: () => t('question.emptyOpen'),
  RESOLVED: () => t('question.emptyResolved'),
  ALL: () => t('question.empty'),
};

/** The next page of the questions of the panel's filter (the first, with `after` null). */
async function loadQuestions() {
  const { questions, generation, eventCount, courseId } = state;
  if (questions.loading) return;
  const hadFocus = document.activeElement === ui.questionsMore;
  questions.loading = true;
  render();
  try {
    const variables = { courseId, state: questions.filter, after: questions.last, limit: QUESTIONS_PAGE_SIZE };
    const { questions: page } = await busy(ui.questionList, socket.request(QUESTIONS, variables));
    if (generation !== state.generation || state.questions !== questions) return;
    for (const question of page.questions) {
      store(question, eventCount);
      questions.ids.add(question.messageId);
    }
    questions.last = page.questions.at(-1)?.messageId ?? questions.last;
    questions.hasMore = page.hasMore;
    questions.loaded = true;
  } catch (error) {
    if (state.questions === questions) showError(() => t('question.loadFailed', { reason: describe(error) }));
  } finally {
    if (state.questions === questions) {
      questions.loading = false;
      render();
      // "Load more" is gone once every question is listed: the list's heading takes the focus.
      if (hadFocus && ui.questionsMore.hidden) ui.questionsHeading.focus();
    }
  }
}

/**
 * The panel: the questions loaded that match its filter as they are now (one resolved
 * meanwhile leaves "Open" and is back when reopened), newest first.
 */
function renderQuestions() {
  const { questions } = state;
  ui.questionsToggle.hidden = !state.subscribed;
  ui.questionsToggle.setAttribute('aria-expanded', String(questions.open));
  ui.questions.hidden = !questions.open || !state.subscribed;
  ui.questionsFilter.value = questions.filter;
  let shown = [];
  if (ui.questions.hidden) {
    if (ui.questionList.firstChild) ui.questionList.replaceChildren();
  } else {
    const matches = QUESTION_FILTERS[questions.filter];
    shown = [...questions.ids]
      .map(known)
      .filter((message) => message && !message.deleted && matches(message))
      .sort((a, b) => compareIds(b.messageId, a.messageId));
    const focusedId = ui.questionList.contains(document.activeElement)
      ? document.activeElement.dataset.messageId
      : null;
    const items = shown.map((message) => {
      const li = element('li', 'message question-entry');
      li.dataset.questionId = message.messageId;
      li.append(questionLink(message));
      return li;
    });
    const current = [...ui.questionList.children];
    if (items.length !== current.length || items.some((li, index) => !li.isEqualNode(current[index]))) {
      ui.questionList.replaceChildren(...items);
      if (focusedId) {
        (ui.questionList.querySelector(`button[data-message-id="${focusedId}"]`) ?? ui.questionsHeading).focus();
      }
    }
  }
  ui.questionsLoading.hidden = !questions.loading;
  ui.questionsEmpty.hidden = !questions.loaded || shown.length > 0;
  setText(ui.questionsEmpty, QUESTIONS_EMPTY[questions.filter]());
  ui.questionsMore.hidden = !questions.loaded || !questions.hasMore;
  ui.questionsMore.disabled = questions.loading;
}

function toggleQuestions(open = !state.questions.open) {
  state.questions.open = open;
  if (open && !state.questions.loaded) loadQuestions();
  render();
}

/** Another filter: its questions from the first page. */
function filterQuestions(filter) {
  if (filter === state.questions.filter) return;
  state.questions = noQuestions(filter, state.questions.open);
  loadQuestions();
}

/** Ask for earlier questions like the one typed once the typing pauses. */
function scheduleSimilar() {
  clearTimeout(state.similarTimer);
  state.similarTimer = setTimeout(loadSimilar, SIMILAR_DELAY_MS);
}

const questionTyped = () => (ui.askQuestion.checked ? ui.composer.value.trim() : '');

async function loadSimilar() {
  const text = questionTyped();
  if (text === state.similar.text) return;
  if (text.length < SIMILAR_MIN_CHARACTERS || !state.subscribed) {
    state.similar = { text, questions: [] };
    renderSimilar();
    return;
  }
  const { generation, courseId, eventCount } = state;
  try {
    const variables = { courseId, text, limit: SIMILAR_LIMIT };
    const { similarQuestions } = await socket.request(SIMILAR_QUESTIONS, variables);
    // Typed on meanwhile: the request for the newer text answers that.
    if (generation !== state.generation || questionTyped() !== text) return;
    for (const { question } of similarQuestions) store(question, eventCount);
    state.similar = { text, questions: similarQuestions.map(({ question }) => question.messageId) };
  } catch (error) {
    // A suggestion, not worth an error line: the question can be asked anyway.
    console.info(`no similar questions: ${error.message}`);
  }
  renderSimilar();
}

/** The earlier questions like the one typed, each a button to its thread. */
function renderSimilar() {
  const questions = ui.askQuestion.checked
    ? state.similar.questions.map(known).filter((message) => message && !message.deleted)
    : [];
  fillIfChanged(
    ui.similarList,
    questions.map((message) => {
      const li = element('li', 'message question-entry');
      li.append(questionLink(message));
      return li;
    }),
  );
  ui.similar.hidden = questions.length === 0;
}

// --- who is here: presence and typing ---------------------------------------------------

const MEMBERS_PAGE_SIZE = 50;
// The server publishes one `typing` per user and course every 3 s and shows it for 6 s, so
// calling it as the user types, at most every 3 s, keeps them shown without a gap.
const TYPING_EVERY_MS = 3000;
const TYPING_TTL_MS = 6000;
// A typist no update has dropped (one skipped while the socket was busy) goes this long
// after their expiry; the server's next update has everyone right anyway.
const TYPING_GRACE_MS = 1000;
// After a refusal (too many subscriptions, say) a subscription tries again this much later.
const EPHEMERAL_RETRY_MS = 10_000;

/**
 * Follow `query` (presenceChanged, typingChanged) for the open course: `apply` each answer.
 * The socket subscribes it again after a reconnect; after a refusal `forget` drops what it
 * said and it tries again later, then calls `resumed`. Returns the unsubscribe.
 */
function followCourse(query, apply, forget, resumed = () => {}) {
  const { generation, courseId } = state;
  let stop = null;
  const subscribe = () => {
    stop = socket.subscribe(query, () => ({ courseId }), {
      next: (answer) => {
        if (generation === state.generation) apply(answer);
      },
      error: (error) => {
        if (generation !== state.generation) return;
        forget();
        render();
        const waitMs = Math.max(EPHEMERAL_RETRY_MS, error.extensions.retryAfterMs ?? 0);
        setTimeout(() => {
          if (generation !== state.generation) return;
          subscribe();
          resumed();
        }, waitMs);
      },
    });
  };
  subscribe();
  return () => stop?.();
}

/** The socket was down: the counts and typists it missed are unknown. */
function socketLost() {
  state.presence.stale = true;
  forgetTypists();
}

/** The socket is back (its subscriptions resubscribed): ask who is online again. */
function socketBack() {
  if (state.subscribed && state.presence.stale) refreshPresence();
  if (state.subscribed) loadPolicy();
}

function forgetPresence() {
  state.presence = { ...noPresence(), open: state.presence.open, stale: true };
}

/**
 * The online count (and the open member list, from its first page) as the server has it
 * now. Subscribed first, so no change after this answer is missed.
 */
async function refreshPresence() {
  const { courseId } = state;
  // A new object: answers to the old one's requests are dropped, the count shows meanwhile.
  const { open, onlineCount, changes } = state.presence;
  const presence = { ...noPresence(), open, onlineCount, changes };
  state.presence = presence;
  render();
  if (open) {
    await loadMembers();
    return;
  }
  try {
    const { presence: answer } = await socket.request(ONLINE_COUNT, { courseId });
    const current = state.presence === presence && presence.changes === changes;
    if (current) presence.onlineCount = answer.onlineCount;
  } catch (error) {
    if (state.presence === presence) showError(() => t('presence.loadFailed', { reason: describe(error) }));
  }
  render();
}

/** The next page of the member list (the first, with `after` null). */
async function loadMembers() {
  const { presence, courseId } = state;
  if (presence.loading) return;
  const hadFocus = document.activeElement === ui.membersMore;
  const { changes } = presence;
  presence.loading = true;
  render();
  try {
    const variables = { courseId, first: MEMBERS_PAGE_SIZE, after: presence.last };
    const { presence: page } = await busy(ui.memberList, socket.request(MEMBERS, variables));
    if (state.presence !== presence) return;
    if (presence.changes === changes) presence.onlineCount = page.onlineCount;
    for (const member of page.members) presence.members.set(member.userId, member.since);
    presence.last = page.members.at(-1)?.userId ?? presence.last;
    presence.hasMore = page.members.length === MEMBERS_PAGE_SIZE;
    presence.loaded = true;
  } catch (error) {
    if (state.presence === presence) showError(() => t('presence.loadFailed', { reason: describe(error) }));
  } finally {
    if (state.presence === presence) {
      presence.loading = false;
      render();
      // "Load more" is gone once everyone is listed: the list's heading takes the focus.
      if (hadFocus && ui.membersMore.hidden) ui.presenceHeading.focus();
    }
  }
}

function applyPresence({ presenceChanged: change }) {
  const { presence } = state;
  presence.changes += 1;
  presence.onlineCount = change.onlineCount;
  for (const userId of change.left) presence.members.delete(userId);
  for (const member of change.joined) {
    // Members past the pages loaded come with the page that reaches them. User ids are
    // ASCII and the server orders them bytewise, as `<` compares them here.
    if (presence.loaded && (!presence.hasMore || member.userId <= presence.last)) {
      presence.members.set(member.userId, member.since);
    }
  }
  render();
}

function memberItem(userId, since) {
  const li = element('li', 'member');
  li.dataset.userId = userId;
  const name = userId === state.viewer.userId ? t('message.you', { user: userId }) : userId;
  const when = t('presence.since', { time: formatMessageTime(new Date(since)) });
  const full = formatFullTime(new Date(since));
  li.append(element('span', 'user', name), ' ', timeElement('since', since, when, full));
  return li;
}

/** "N online" (once known) and, when open, the member list by user id. */
function renderPresence() {
  const { presence } = state;
  const counted = Boolean(state.courseId) && presence.onlineCount !== null;
  ui.presenceToggle.hidden = !counted;
  if (counted) setText(ui.presenceToggle, t('presence.online', { count: presence.onlineCount }));
  ui.presenceToggle.setAttribute('aria-expanded', String(presence.open));
  ui.presence.hidden = !presence.open || !state.courseId;
  if (ui.presence.hidden) {
    if (ui.memberList.firstChild) ui.memberList.replaceChildren();
  } else {
    const ids = [...presence.members.keys()].sort();
    fillIfChanged(ui.memberList, ids.map((userId) => memberItem(userId, presence.members.get(userId))));
  }
  ui.membersLoading.hidden = !presence.loading;
  ui.membersMore.hidden = !presence.loaded || !presence.hasMore;
  ui.membersMore.disabled = presence.loading;
}

function togglePresence(open = !state.presence.open) {
  state.presence.open = open;
  if (open && !state.presence.loaded) loadMembers();
  render();
}

/** Everyone but the viewer who types now, from an update of typingChanged. */
function applyTyping({ typingChanged: update }) {
  const receivedAt = Date.now();
  const viewer = state.viewer.userId;
  state.typists = update.users
    .filter((user) => user.userId !== viewer)
    .map((user) => {
      // The expiry in this browser's clock: the server's time can be off from ours.
      const left = new Date(user.expiresAt).getTime() - receivedAt;
      const ttl = left > 0 && left <= TYPING_TTL_MS ? left : TYPING_TTL_MS;
      return { userId: user.userId, threadId: user.threadId, until: receivedAt + ttl + TYPING_GRACE_MS };
    });
  state.typistsUnnamed = Math.max(0, update.typingCount - update.users.length);
  render();
}

function forgetTypists() {
  state.typists = [];
  state.typistsUnnamed = 0;
  clearTimeout(state.typingTimer);
  render();
}

/**
 * "X is typing…", "X and Y are typing…", "N people are typing…". Names sorted, so a renewal
 * (which puts its typist first in the server's list) does not change the words.
 */
function typingWords(typists, unnamed = 0) {
  const names = [...new Set(typists.map((typist) => typist.userId))].sort();
  const count = names.length + unnamed;
  if (count === 0) return '';
  if (count === 1) return t('typing.one', { user: names[0] });
  if (count === 2 && unnamed === 0) return t('typing.two', { users: formatList(names) });
  return t('typing.many', { count });
}

/**
 * The typing lines: the course's main conversation under its composer, the open thread's in
 * the thread panel. Each is a live region written only when its words change.
 */
function renderTyping() {
  const now = Date.now();
  state.typists = state.typists.filter((typist) => typist.until > now);
  clearTimeout(state.typingTimer);
  if (state.typists.length > 0) {
    const next = Math.min(...state.typists.map((typist) => typist.until));
    state.typingTimer = setTimeout(render, next - now);
  }
  const inMain = state.typists.filter((typist) => !typist.threadId);
  const rootId = state.thread?.rootId;
  const inThread = rootId ? state.typists.filter((typist) => typist.threadId === rootId) : [];
  // Beyond the 20 the server names, where they type is unknown: counted in the course's.
  setText(ui.typing, typingWords(inMain, state.typistsUnnamed));
  setText(ui.threadTyping, typingWords(inThread));
}

/**
 * The viewer types in `box`: tell the others, at most every 3 s, never for an empty box,
 * never queued while offline (it would arrive stale). A `typing` the server throttles
 * (`published: false`) still stands; the next one goes when it says.
 */
async function typed(box) {
  // Typing is not anonymous (typingChanged names the user): never while posting anonymously.
  if (box.anonymous.checkbox.checked) return;
  if (!box.textarea.value.trim() || box.sending || !state.subscribed || !box.open()) return;
  if (socket.state !== 'open' || state.typingBusy || Date.now() < state.typingNextAt) return;
  const { generation, courseId } = state;
  const threadId = box === composers.thread ? (state.thread?.rootId ?? null) : null;
  state.typingBusy = true;
  state.typingNextAt = Date.now() + TYPING_EVERY_MS;
  try {
    const { typing } = await socket.request(TYPING, { courseId, threadId });
    if (generation === state.generation && !typing.published) {
      state.typingNextAt = Date.now() + typing.retryAfterMs;
    }
  } catch (error) {
    // Typing is a hint to the others, not worth an error line: a send says what is wrong
    // (a read-only course, a rate limit). The page asks again only much later.
    if (generation === state.generation) {
      state.typingNextAt = Date.now() + Math.max(EPHEMERAL_RETRY_MS, error.extensions?.retryAfterMs ?? 0);
    }
  } finally {
    if (generation === state.generation) state.typingBusy = false;
  }
}

// --- sending and changing ---------------------------------------------------------------

// How long a send is retried by itself while the service answers UNAVAILABLE (a Redis
// failover takes seconds); past it the text stays in the box with the error.
const SEND_RETRY_MS = 30_000;

// The two places to write: the course's timeline, and the open thread.
const composers = {
  main: {
    textarea: ui.composer,
    button: ui.send,
    scroller: ui.history,
    open: () => true,
    replyTo: () => null,
    sending: null, // { clientMessageId, content } until the server answers
    unsent: null, // { courseId, content, replyTo, clientMessageId, kind, anonymous } of a failed send
    anonymous: { row: ui.anonymousRow, checkbox: ui.postAnonymously, note: ui.anonymousNote },
  },
  thread: {
    textarea: ui.threadComposer,
    button: ui.threadSend,
    scroller: ui.threadScroll,
    open: () => replyTarget() !== null,
    replyTo: replyTarget,
    sending: null,
    unsent: null,
    anonymous: { row: ui.threadAnonymousRow, checkbox: ui.threadPostAnonymously, note: ui.threadAnonymousNote },
  },
};

async function send(box) {
  const content = box.textarea.value;
  if (!content.trim() || box.sending || !state.courseId || !box.open() || slowWaitMs() > 0) return;
  const { courseId, eventCount } = state;
  const replyTo = box.replyTo();
  const kind = box === composers.main && ui.askQuestion.checked ? 'QUESTION' : 'MESSAGE';
  // Ticked is anonymous, whatever the page believes of the policy: the server decides.
  const anonymous = box.anonymous.checkbox.checked;
  // The same clientMessageId on every retry: the server stores the message once. A send
  // that failed keeps its id for the same text, so pressing Send again cannot store a copy
  // of one the server kept after all.
  const { unsent } = box;
  const again =
    unsent?.courseId === courseId &&
    unsent.content === content &&
    unsent.replyTo === replyTo &&
    unsent.kind === kind &&
    unsent.anonymous === anonymous;
  const clientMessageId = again ? unsent.clientMessageId : newClientId();
  box.sending = { clientMessageId, content };
  showError(null);
  render();
  const giveUpAt = Date.now() + SEND_RETRY_MS;
  try {
    for (;;) {
      try {
        const variables = { courseId, content, clientMessageId, replyTo, kind, anonymous };
        const { sendMessage } = await socket.request(SEND, variables);
        if (sendMessage.anonymous && sendMessage.pseudonym) learnPseudonym(courseId, sendMessage.pseudonym);
        box.unsent = null;
        showError(null);
        if (courseId === state.courseId && state.policy?.mode === 'SLOW_MODE') {
          state.sendAllowedAt = Date.now() + (state.policy.slowModeSeconds ?? 0) * 1000;
        }
        // The server stopped showing the viewer as typing: text typed next shows at once.
        if (courseId === state.courseId) state.typingNextAt = 0;
        if (courseId === state.courseId) {
          store(sendMessage, eventCount);
          scrollToBottom(box.scroller);
        }
        if (box.textarea.value === content) {
          box.textarea.value = '';
          // Asked: the next message is a plain one again, and nothing is suggested for it.
          if (kind === 'QUESTION') ui.askQuestion.checked = false;
          if (kind === 'QUESTION') state.similar = { text: '', questions: [] };
        }
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
    box.unsent = { courseId, content, replyTo, clientMessageId, kind, anonymous };
    const retryAfterMs = error instanceof GraphqlError ? (error.extensions.retryAfterMs ?? 0) : 0;
    showError(() => describe(error), retryAfterMs);
    // A refusal by the course's mode says the page's picture of it may be stale; in slow
    // mode the server's wait is when the next send can go.
    if (courseId === state.courseId && ['RATE_LIMITED', 'READ_ONLY'].includes(error?.code)) {
      if (error.code === 'RATE_LIMITED') state.sendAllowedAt = Date.now() + retryAfterMs;
      loadPolicy();
    }
    // Refused as anonymous: if the course has stopped allowing it, the page says so in
    // words (the box unticked, the text kept: sent again, it would show the name).
    if (courseId === state.courseId && anonymous && error?.code === 'FAILED_PRECONDITION') {
      await loadPolicy();
      if (courseId === state.courseId && !anonymousAllowed()) showError(() => t('anonymous.refused'));
    }
  } finally {
    box.sending = null;
    render();
    if (!box.textarea.disabled && [document.body, box.button].includes(document.activeElement)) {
      box.textarea.focus();
    }
  }
}

/**
 * A change of a message (edit, reaction, pin, delete), once even if retried after a
 * reconnect (its clientMutationId); the answer is the message after it. Resolves to whether
 * the change was made.
 */
async function change(document_, messageId, variables = {}) {
  const { courseId, generation, eventCount } = state;
  try {
    const clientMutationId = newClientId();
    const data = await socket.request(document_, { courseId, messageId, clientMutationId, ...variables });
    if (generation === state.generation) store(Object.values(data)[0], eventCount);
    return true;
  } catch (error) {
    if (generation === state.generation) showError(() => describe(error));
    return false;
  }
}

async function deleteMessage(messageId, button) {
  if (!window.confirm(t('message.deleteConfirm'))) return;
  button.disabled = true;
  if (!(await change(DELETE, messageId))) button.disabled = false;
}

async function toggleReaction(messageId, emoji, view) {
  const mine = state.mine.get(messageId)?.has(emoji);
  if (sameOpen(state.picker, messageId, view)) {
    // Chosen: the picker closes, focus goes back to the button that opened it.
    state.picker = null;
    const li = itemOf(messageId, view);
    if (li) {
      li.querySelector('[data-action="react"]')?.focus();
      fillMessage(li);
    }
  }
  await change(mine ? REMOVE_REACTION : ADD_REACTION, messageId, { emoji });
}

function itemOf(messageId, view) {
  const list = { timeline: ui.list, thread: ui.thread, pins: ui.pinned }[view];
  return list.querySelector(`li[data-view="${view}"][data-message-id="${messageId}"]`);
}

function togglePicker(messageId, view) {
  const wasOpen = sameOpen(state.picker, messageId, view);
  const previous = state.picker;
  state.picker = wasOpen ? null : { messageId, view };
  if (previous && !wasOpen) {
    const old = itemOf(previous.messageId, previous.view);
    if (old) fillMessage(old);
  }
  const li = itemOf(messageId, view);
  fillMessage(li);
  if (!wasOpen) li.querySelector('.picker button')?.focus();
}

function closePicker() {
  const { picker } = state;
  if (!picker) return;
  state.picker = null;
  const li = itemOf(picker.messageId, picker.view);
  if (li) {
    fillMessage(li);
    (li.querySelector('[data-action="react"]') ?? li).focus();
  }
}

function startEdit(messageId, view) {
  if (state.editing) stopEdit(false);
  state.editing = { messageId, view };
  const li = itemOf(messageId, view);
  fillMessage(li);
  const textarea = li.querySelector('form.editor textarea');
  textarea.focus();
  textarea.setSelectionRange(textarea.value.length, textarea.value.length);
}

/** Close the editor; focus goes back to its message's Edit button (or the message). */
function stopEdit(restoreFocus = true) {
  const { editing } = state;
  if (!editing) return;
  state.editing = null;
  const li = itemOf(editing.messageId, editing.view);
  if (!li) return;
  li.querySelector(':scope > form.editor')?.remove();
  fillMessage(li);
  if (restoreFocus) (li.querySelector('[data-action="edit"]') ?? li).focus();
}

async function saveEdit(form) {
  const li = form.closest('li');
  const { messageId } = li.dataset;
  const content = form.querySelector('textarea').value;
  if (content === known(messageId)?.content) {
    stopEdit();
    return;
  }
  if (!content.trim()) return;
  for (const control of form.elements) control.disabled = true;
  const saved = await change(EDIT, messageId, { content });
  if (saved && sameOpen(state.editing, messageId, li.dataset.view)) stopEdit();
  else {
    for (const control of form.elements) control.disabled = false;
    form.querySelector('textarea').focus();
  }
}

async function toggleEditHistory(messageId, view) {
  const key = `${view}:${messageId}`;
  if (state.edits.has(key)) {
    state.edits.delete(key);
    place(known(messageId));
    return;
  }
  state.edits.set(key, { versions: null });
  place(known(messageId));
  await loadEditHistory(messageId, view);
}

async function loadEditHistory(messageId, view) {
  const key = `${view}:${messageId}`;
  const { generation, eventCount, courseId } = state;
  try {
    const { message } = await socket.request(EDIT_HISTORY, { courseId, messageId });
    if (generation !== state.generation || !state.edits.has(key)) return;
    state.edits.set(key, { versions: message.editHistory ?? [] });
    store(message, eventCount);
  } catch (error) {
    if (generation !== state.generation) return;
    state.edits.delete(key);
    showError(() => describe(error));
    if (known(messageId)) place(known(messageId));
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
  if (socketState === 'offline' || socketState === 'unauthenticated') socketLost();
  // After the socket has written its subscriptions again: a request sent from inside this
  // callback would be written twice (its own send, then the resubscribe loop).
  if (socketState === 'open') setTimeout(socketBack);
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
ui.courses.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-course-id]');
  if (button) openCourse(button.dataset.courseId);
});
ui.mentionsToggle.addEventListener('click', () => toggleMentions());
ui.mentionsMore.addEventListener('click', loadMentions);
ui.mentionList.addEventListener('click', (event) => {
  const button = event.target.closest('button.mention-link');
  if (button) openMention(button.dataset.courseId, button.dataset.messageId);
});
// Escape in the mentions panel closes it; the focus goes back to its toggle.
ui.mentions.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape' || event.isComposing) return;
  event.preventDefault();
  toggleMentions(false);
  ui.mentionsToggle.focus();
});
// The newest message is read once the viewer is at the bottom of the timeline, looking.
// A timeline at its bottom stays there when it is made smaller (a panel opens above it, the
// window shrinks), as it does when messages come.
let timelineAtBottom = true;
ui.history.addEventListener(
  'scroll',
  () => {
    timelineAtBottom = nearBottom(ui.history);
    scheduleMarkRead();
  },
  { passive: true },
);
new ResizeObserver(() => {
  if (timelineAtBottom) scrollToBottom(ui.history);
}).observe(ui.history);
document.addEventListener('visibilitychange', () => {
  scheduleMarkRead();
  if (document.visibilityState === 'visible') refreshCourses();
  if (document.visibilityState === 'visible' && state.subscribed) loadPolicy();
});
window.addEventListener('focus', scheduleMarkRead);
ui.loadOlder.addEventListener('click', loadOlder);
ui.threadOlder.addEventListener('click', () => {
  if (state.thread && !state.thread.loadingOlder) loadThread(state.thread.oldestId);
});
ui.threadClose.addEventListener('click', () => closeThread());
// The member list opens with the focus on its heading, as the thread does: the list itself
// has nothing to focus, and Escape there closes it, the focus back on its toggle.
ui.presenceToggle.addEventListener('click', () => {
  togglePresence();
  if (state.presence.open) ui.presenceHeading.focus();
});
ui.membersMore.addEventListener('click', loadMembers);
for (const node of [ui.presence, ui.presenceToggle]) {
  node.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape' || event.isComposing || !state.presence.open) return;
    event.preventDefault();
    togglePresence(false);
    ui.presenceToggle.focus();
  });
}
// The questions panel opens with the focus on its heading, as the member list does; Escape
// in it closes it, the focus back on its toggle.
ui.questionsToggle.addEventListener('click', () => {
  toggleQuestions();
  if (state.questions.open) ui.questionsHeading.focus();
});
ui.questionsFilter.addEventListener('change', () => filterQuestions(ui.questionsFilter.value));
ui.questionsMore.addEventListener('click', loadQuestions);
for (const node of [ui.questions, ui.questionsToggle]) {
  node.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape' || event.isComposing || !state.questions.open) return;
    event.preventDefault();
    toggleQuestions(false);
    ui.questionsToggle.focus();
  });
}
for (const [list, opener] of [
  [ui.questionList, 'question'],
  [ui.similarList, 'similar'],
]) {
  list.addEventListener('click', (event) => {
    const button = event.target.closest('button.question-link');
    if (button) openThread(button.dataset.messageId, opener);
  });
}
for (const box of Object.values(composers)) box.anonymous.checkbox.addEventListener('change', render);
ui.askQuestion.addEventListener('change', () => {
  scheduleSimilar();
  render();
});
ui.composer.addEventListener('input', () => {
  if (ui.askQuestion.checked || state.similar.questions.length > 0) scheduleSimilar();
});
ui.pinsToggle.addEventListener('click', () => {
  state.pinsOpen = !state.pinsOpen;
  render();
});

// Every button of a message, in the timeline, the thread and the pins.
ui.chat.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  const li = button?.closest('li[data-view]');
  if (!li || button.disabled) return;
  const { messageId, view } = li.dataset;
  switch (button.dataset.action) {
    case 'reply':
    case 'open-thread':
      openThread(messageId, button.dataset.action);
      break;
    case 'react':
      togglePicker(messageId, view);
      break;
    case 'emoji':
      toggleReaction(messageId, button.dataset.emoji, view);
      break;
    case 'edit':
      startEdit(messageId, view);
      break;
    case 'cancel':
      stopEdit();
      break;
    case 'edit-history':
      toggleEditHistory(messageId, view);
      break;
    case 'pin':
      change(PIN, messageId);
      break;
    case 'unpin':
      change(UNPIN, messageId);
      break;
    case 'endorse':
      change(ENDORSE, messageId);
      break;
    case 'unendorse':
      change(UNENDORSE, messageId);
      break;
    case 'resolve':
      change(RESOLVE, messageId);
      break;
    case 'reopen':
      change(REOPEN, messageId);
      break;
    case 'delete':
      deleteMessage(messageId, button);
      break;
    default:
      break;
  }
});
ui.chat.addEventListener('submit', (event) => {
  const form = event.target.closest('form.editor');
  if (!form) return;
  event.preventDefault();
  saveEdit(form);
});
// Escape closes the innermost thing open: the editor (unsaved), the picker, the thread.
ui.chat.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape' || event.isComposing) return;
  if (event.target.closest('form.editor')) stopEdit();
  else if (event.target.closest('.picker')) closePicker();
  else if (event.target.closest('#thread')) closeThread();
  else return;
  event.preventDefault();
});

const isSendKey = (event) =>
  // Enter that confirms an IME composition (Korean, Japanese, …) is typing, not sending;
  // keyCode 229 is how Safari reports it.
  event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229;
for (const [form, box] of [
  [ui.sendForm, composers.main],
  [ui.threadForm, composers.thread],
]) {
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    send(box);
  });
  box.textarea.addEventListener('keydown', (event) => {
    if (!isSendKey(event)) return;
    event.preventDefault();
    send(box);
  });
  box.textarea.addEventListener('input', () => typed(box));
}
ui.chat.addEventListener('keydown', (event) => {
  const form = event.target.closest('form.editor');
  if (!form || event.target.localName !== 'textarea' || !isSendKey(event)) return;
  event.preventDefault();
  saveEdit(form);
});
window.addEventListener('online', () => socket.reconnectNow());

// A switch of language words everything again in place: no reload, nothing refetched, the
// scroll position, focus and what is typed stay (the fixed words are i18n.js's part).
bindLanguageSelect(ui.language);
onLanguageChange(() => {
  if (state.viewer) {
    renderCourses();
    refillAll();
    renderMentions();
    const divider = $('unread-divider');
    if (divider) setText(divider.firstElementChild, t('history.newMessages'));
  }
  render();
});
// "Today" and "yesterday" move on at midnight: the message times are worded again then.
function wordTimesAtMidnight() {
  setTimeout(() => {
    if (state.viewer) {
      refillAll();
      renderMentions();
    }
    wordTimesAtMidnight();
  }, untilMidnightMs());
}
wordTimesAtMidnight();

const initialToken = takeToken();
if (initialToken) start(initialToken);
render();
if (!initialToken) ui.token.focus();
