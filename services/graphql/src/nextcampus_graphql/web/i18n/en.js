// The page's words in English. Strict JSON inside `export default …;` (double quotes, no
// trailing commas): the tests read it with a JSON parser. `{name}` is a placeholder; an
// object is a plural, one form per Intl.PluralRules category (English: one, other).
// A key may be written before the page uses it: services/graphql/tests/test_web_i18n.py lists
// such keys (PREPARED_KEYS) until it does.
export default {
  "app.name": "Next Campus Chat",
  "language.label": "Language",
  "language.name": "English",

  "status.signedOut": "not signed in",
  "status.tokenRefused": "signed out — token invalid or expired",
  "status.connecting": "connecting…",
  "status.offline": "offline — reconnecting…",
  "status.chooseCourse": "connected — choose a course",
  "status.loading": "loading messages…",
  "status.live": "live",

  "viewer.signedInAs": "Signed in as {user}",
  "viewer.loadFailed": "Could not load your courses: {reason}",

  "signIn.heading": "Sign in",
  "signIn.prompt": "Paste your access token to start chatting.",
  "signIn.refused": "Your token is invalid or expired. Paste a new one to continue.",
  "signIn.tokenLabel": "Access token",
  "signIn.connect": "Connect",

  "chat.label": "Course chat",
  "course.label": "Course",
  "course.choose": "Choose a course…",
  "course.moderated": "{course} (moderator)",
  "course.liveStopped": "Live updates stopped: {reason} Choose the course again to retry.",
  "course.loadFailed": "Could not load {course}: {reason} Choose the course again to retry.",

  "history.label": "Messages",
  "history.loadOlder": "Load older messages",
  "history.loading": "Loading…",
  "history.empty": "No messages yet. Say hello!",

  "composer.label": "Message",
  "composer.hint": "Enter sends, Shift+Enter starts a new line.",
  "composer.send": "Send",
  "composer.sending": "Sending…",
  "composer.retrying": "Not confirmed yet; sending again…",

  "message.you": "{user} (you)",
  "message.deleted": "message deleted",
  "message.retracted": "message lost in a server failure",
  "message.delete": "Delete",
  "message.deleteLabel": "Delete message of {user} at {time}",
  "message.deleteConfirm": "Delete this message for everyone?",

  "time.dayAndTime": "{day}, {time}",

  "error.RATE_LIMITED": "You are sending too fast; try again {when}.",
  "error.READ_ONLY": "This course chat is read-only at the moment; nothing can be sent.",
  "error.FORBIDDEN": "Not allowed: {detail}.",
  "error.BAD_USER_INPUT": "Not accepted: {detail}.",
  "error.FAILED_PRECONDITION": "Not possible now: {detail}.",
  "error.NOT_FOUND": "That message does not exist any more.",
  "error.UNAVAILABLE": "The chat service is unavailable right now; try again in a moment.",
  "error.UNAUTHENTICATED": "Your sign-in has expired; sign in again with a new token.",
  "error.INTERNAL": "Something went wrong on the server; try again in a moment.",
  "error.CURSOR_EXPIRED": "You were away too long to catch up; reloading the messages…",
  "error.unknown": "Something went wrong: {detail}",

  "reply.action": "Reply",
  "reply.actionLabel": "Reply to the message of {user} at {time}",
  "thread.heading": "Thread",
  "thread.replies": "Replies",
  "thread.open": "View thread",
  "thread.openLabel": "View thread of the message of {user} at {time}",
  "thread.close": "Close thread",
  "thread.replyCount": { "one": "{count} reply", "other": "{count} replies" },
  "thread.lastReply": "last reply {when}",
  "thread.participants": "Replies from {users}",
  "thread.composerLabel": "Reply in thread",
  "thread.empty": "No replies yet.",

  "edit.action": "Edit",
  "edit.actionLabel": "Edit your message from {time}",
  "edit.composerLabel": "Edit message",
  "edit.save": "Save",
  "edit.cancel": "Cancel",
  "edit.marker": "edited",
  "edit.markerTitle": "Edited {time}",
  "edit.history": "Edit history",
  "edit.historyLabel": "Edit history of the message of {user} at {time}",
  "edit.historyVersion": "Written {time}",
  "edit.versionCount": { "one": "{count} earlier version", "other": "{count} earlier versions" },

  "reaction.add": "Add reaction",
  "reaction.addLabel": "Add reaction to the message of {user} at {time}",
  "reaction.summary": {
    "one": "{count} person reacted with {emoji}",
    "other": "{count} people reacted with {emoji}"
  },
  "reaction.react": "React with {emoji}",
  "reaction.unreact": "Remove your {emoji} reaction",

  "pin.action": "Pin",
  "pin.undo": "Unpin",
  "pin.actionLabel": "Pin the message of {user} at {time}",
  "pin.undoLabel": "Unpin the message of {user} at {time}",
  "pin.marker": "pinned",
  "pin.markerTitle": "Pinned {time}",
  "pin.panel": "Pinned messages",
  "pin.show": "Show pinned messages",
  "pin.empty": "No pinned messages yet.",
  "pin.count": { "one": "{count} pinned message", "other": "{count} pinned messages" }
};
