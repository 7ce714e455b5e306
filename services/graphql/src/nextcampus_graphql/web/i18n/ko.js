// The page's words in Korean, for university students and lecturers: polite 해요체 for
// sentences, nouns for buttons and short states (보내기, 삭제, 고정됨). Strict JSON inside
// `export default …;`, like en.js; Korean plurals have one form (Intl.PluralRules: other).
export default {
  "app.name": "Next Campus 채팅",
  "language.label": "언어",
  "language.name": "한국어",

  "status.signedOut": "로그인이 필요해요",
  "status.tokenRefused": "로그아웃됨 — 토큰이 올바르지 않거나 만료되었어요",
  "status.connecting": "연결하는 중…",
  "status.offline": "오프라인 — 다시 연결하는 중…",
  "status.chooseCourse": "연결됨 — 강의를 선택해 주세요",
  "status.loading": "메시지를 불러오는 중…",
  "status.live": "실시간 연결됨",

  "viewer.signedInAs": "{user} 님으로 로그인했어요",
  "viewer.loadFailed": "강의 목록을 불러오지 못했어요. {reason}",

  "signIn.heading": "로그인",
  "signIn.prompt": "채팅을 시작하려면 액세스 토큰을 붙여 넣어 주세요.",
  "signIn.refused": "토큰이 올바르지 않거나 만료되었어요. 계속하려면 새 토큰을 붙여 넣어 주세요.",
  "signIn.tokenLabel": "액세스 토큰",
  "signIn.connect": "연결하기",

  "chat.label": "강의 채팅",
  "course.label": "강의",
  "course.choose": "강의를 선택해 주세요…",
  "course.moderated": "{course} (관리자)",
  "course.liveStopped": "실시간 업데이트가 멈췄어요. {reason} 다시 시도하려면 강의를 다시 선택해 주세요.",
  "course.loadFailed": "{course} 강의를 불러오지 못했어요. {reason} 다시 시도하려면 강의를 다시 선택해 주세요.",

  "history.label": "메시지 목록",
  "history.loadOlder": "이전 메시지 불러오기",
  "history.loading": "불러오는 중…",
  "history.empty": "아직 메시지가 없어요. 먼저 인사를 건네 보세요!",

  "composer.label": "메시지",
  "composer.hint": "Enter 키를 누르면 보내지고, Shift+Enter 키를 누르면 줄이 바뀌어요.",
  "composer.send": "보내기",
  "composer.sending": "보내는 중…",
  "composer.retrying": "아직 전송이 확인되지 않아 다시 보내는 중이에요…",

  "message.you": "{user} (나)",
  "message.deleted": "삭제된 메시지예요",
  "message.retracted": "서버 장애로 전달되지 못한 메시지예요",
  "message.delete": "삭제",
  "message.deleteLabel": "{user} 님이 {time}에 보낸 메시지 삭제",
  "message.deleteConfirm": "이 메시지를 모든 사람에게서 삭제할까요?",

  "time.dayAndTime": "{day} {time}",

  "error.RATE_LIMITED": "메시지를 너무 빨리 보내고 있어요. {when} 다시 시도해 주세요.",
  "error.READ_ONLY": "지금은 이 강의 채팅이 읽기 전용이라 메시지를 보낼 수 없어요.",
  "error.FORBIDDEN": "이 작업을 할 권한이 없어요. ({detail})",
  "error.BAD_USER_INPUT": "입력한 내용을 처리할 수 없어요. ({detail})",
  "error.NOT_FOUND": "해당 메시지가 더 이상 없어요.",
  "error.UNAVAILABLE": "지금은 채팅 서비스에 연결할 수 없어요. 잠시 후 다시 시도해 주세요.",
  "error.UNAUTHENTICATED": "로그인이 만료되었어요. 새 토큰으로 다시 로그인해 주세요.",
  "error.INTERNAL": "서버에서 문제가 생겼어요. 잠시 후 다시 시도해 주세요.",
  "error.CURSOR_EXPIRED": "연결이 너무 오래 끊겨 있었어요. 메시지를 다시 불러오는 중…",
  "error.unknown": "문제가 생겼어요. ({detail})",

  "reply.action": "답글",
  "reply.actionLabel": "{user} 님이 {time}에 보낸 메시지에 답글 달기",
  "thread.heading": "스레드",
  "thread.open": "스레드 보기",
  "thread.close": "스레드 닫기",
  "thread.replyCount": { "other": "답글 {count}개" },
  "thread.lastReply": "마지막 답글 {when}",
  "thread.participants": "{users} 님이 답글을 달았어요",
  "thread.composerLabel": "스레드에 답글 쓰기",
  "thread.empty": "아직 답글이 없어요.",

  "edit.action": "수정",
  "edit.actionLabel": "{time}에 보낸 내 메시지 수정",
  "edit.composerLabel": "메시지 수정",
  "edit.save": "저장",
  "edit.cancel": "취소",
  "edit.marker": "수정됨",
  "edit.markerTitle": "{time}에 수정됨",
  "edit.history": "수정 기록",
  "edit.historyVersion": "{time}에 작성",
  "edit.versionCount": { "other": "이전 버전 {count}개" },

  "reaction.add": "반응 추가",
  "reaction.summary": { "other": "{emoji} 반응 {count}명" },
  "reaction.react": "{emoji} 반응 남기기",
  "reaction.unreact": "내 {emoji} 반응 취소",

  "pin.action": "고정",
  "pin.undo": "고정 해제",
  "pin.marker": "고정됨",
  "pin.markerTitle": "{time}에 고정됨",
  "pin.panel": "고정된 메시지",
  "pin.show": "고정된 메시지 보기",
  "pin.empty": "아직 고정된 메시지가 없어요.",
  "pin.count": { "other": "고정된 메시지 {count}개" }
};
