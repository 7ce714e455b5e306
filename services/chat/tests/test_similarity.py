"""similarQuestions' ranking (nextcampus_chat.similarity) on a handmade set of paraphrases:
each reworded duplicate must find its question in the top 3 among 1,000 questions of a
course. The hit rate is printed (README, "Questions and endorsed answers")."""

from __future__ import annotations

import random

from nextcampus_chat.similarity import GramCache, grams, rank

# (the question asked earlier, the same question reworded), Korean and English.
PARAPHRASES = [
    ("과제 2 제출 마감이 언제인가요?", "두 번째 과제는 언제까지 제출해야 하나요?"),
    ("중간고사 범위가 어디까지인가요?", "중간고사 시험 범위 알려주실 수 있나요?"),
    ("기말고사에 계산기 가져가도 되나요?", "기말 시험 볼 때 계산기 사용 가능한가요?"),
    ("출석 체크는 어떻게 하나요?", "출석은 어떤 방식으로 확인하시나요?"),
    ("강의 녹화본은 어디서 볼 수 있나요?", "녹화된 강의 영상은 어디에 올라오나요?"),
    ("팀 프로젝트 인원은 몇 명인가요?", "팀프로젝트는 몇 명이서 한 팀인가요?"),
    ("재귀 함수에서 기저 조건이 왜 필요한가요?", "재귀함수에 기저 조건이 없으면 왜 안 되나요?"),
    ("실습 코드가 컴파일 에러가 나요", "실습 코드 컴파일하면 에러가 발생합니다"),
    ("퀴즈 점수는 성적에 몇 퍼센트 반영되나요?", "퀴즈가 성적에서 차지하는 비율이 어떻게 되나요?"),
    ("교수님 면담 시간이 언제인가요?", "교수님 오피스아워 면담은 언제 가능한가요?"),
    ("When is homework 3 due?", "What is the due date for homework 3?"),
    (
        "Can we use Python libraries like numpy in the project?",
        "Are we allowed to use numpy in the project?",
    ),
    ("Will the midterm cover dynamic programming?", "Is dynamic programming on the midterm?"),
    ("How do I submit the lab report?", "Where should the lab report be submitted?"),
    (
        "Is the lecture recording available online?",
        "Where can I find the recordings of the lectures?",
    ),
    (
        "My code fails the third test case with a timeout",
        "Getting a timeout on test case 3, my code fails",
    ),
    (
        "What is the difference between a process and a thread?",
        "How is a thread different from a process?",
    ),
    (
        "Can I get an extension for the final project?",
        "Is it possible to get a deadline extension on the final project?",
    ),
    (
        "Do we need to cite sources in the essay?",
        "Should the essay include citations for the sources?",
    ),
    (
        "Why does my recursion cause a stack overflow?",
        "Stack overflow error when using recursion, why?",
    ),
]

_TOPICS_KO = [
    "과제",
    "중간고사",
    "기말고사",
    "퀴즈",
    "실습",
    "프로젝트",
    "강의",
    "출석",
    "성적",
    "발표",
    "보고서",
    "시험",
    "레포트",
    "조교",
    "교재",
    "코드",
    "알고리즘",
    "그래프",
    "정렬",
    "포인터",
    "배열",
    "해시",
    "트리",
    "스택",
    "큐",
    "데이터베이스",
    "네트워크",
]
_TEMPLATES_KO = [
    "{a} {n}번 문제에서 {b} 부분이 이해가 안 돼요",
    "{a} 관련해서 {b} 질문 있습니다",
    "{a}에 {b}도 포함되나요?",
    "{a} 제출할 때 {b} 형식은 어떻게 하나요?",
    "{a} {n}장에 나오는 {b} 설명 부탁드립니다",
    "{a} 점수에 {b}도 반영되나요?",
    "{a}하고 {b} 차이가 뭔가요?",
    "{a} 자료는 {b} 게시판에 있나요?",
    "{a} {n}주차 {b} 내용 다시 설명해 주실 수 있나요?",
    "{b} 때문에 {a} 늦어질 것 같아요",
]
_TOPICS_EN = [
    "homework",
    "midterm",
    "final exam",
    "quiz",
    "lab",
    "project",
    "lecture",
    "attendance",
    "grade",
    "presentation",
    "report",
    "textbook",
    "TA",
    "sorting",
    "pointers",
    "arrays",
    "hash tables",
    "binary trees",
    "graphs",
    "stacks",
    "queues",
    "databases",
    "networking",
    "recursion",
    "complexity",
    "compiler",
    "linked lists",
]
_TEMPLATES_EN = [
    "I don't understand the {b} part of {a} problem {n}",
    "Question about {a}: how does {b} work?",
    "Does the {a} include {b}?",
    "What format should the {a} be in when we hand in {b}?",
    "Could you explain {b} from chapter {n} of the {a} again?",
    "Is {b} counted in the {a} score?",
    "What's the difference between {a} and {b}?",
    "Are the {a} slides on {b} posted?",
    "Can you go over {b} in {a} week {n}?",
    "My {a} will be late because of {b}",
]


def course_questions(count: int) -> list[str]:
    """`count` questions of a course: the originals, among generated ones on the same
    topics (so they share words with them), in random order."""
    rng = random.Random(16)
    questions = [original for original, _ in PARAPHRASES]
    while len(questions) < count:
        korean = rng.random() < 0.5
        topics, templates = (_TOPICS_KO, _TEMPLATES_KO) if korean else (_TOPICS_EN, _TEMPLATES_EN)
        a, b = rng.sample(topics, 2)
        question = rng.choice(templates).format(a=a, b=b, n=rng.randint(1, 12))
        if question not in questions:
            questions.append(question)
    rng.shuffle(questions)
    return questions


def test_a_reworded_duplicate_is_in_the_top_3_among_1000_questions() -> None:
    questions = course_questions(1000)
    candidates = GramCache().grams_of("c1", [(str(i), q) for i, q in enumerate(questions)])
    hits, misses = 0, []
    for original, reworded in PARAPHRASES:
        top = [questions[int(match.question_id)] for match in rank(reworded, candidates, limit=3)]
        if original in top:
            hits += 1
        else:
            misses.append((reworded, top))
    rate = hits / len(PARAPHRASES)
    print(f"similarQuestions top-3 hit rate: {hits}/{len(PARAPHRASES)} = {rate:.0%}")
    assert rate >= 0.9, misses


def test_grams_ignore_case_punctuation_and_width() -> None:
    assert grams("Homework?") == grams("homework")
    assert grams("ＨＷ３") == grams("hw3")
    assert grams("  ") == grams("?!") == {}


def test_nothing_alike_suggests_nothing() -> None:
    candidates = GramCache().grams_of("c1", [("1", "과제 마감이 언제인가요?")])
    assert rank("zebra xylophone", candidates, limit=3) == []
    assert rank("", candidates, limit=3) == []


def test_an_edited_question_is_compared_as_it_is_now() -> None:
    cache = GramCache(size=2)
    assert cache.grams_of("c1", [("1", "old text")])[0][1] == grams("old text")
    assert cache.grams_of("c1", [("1", "new text")])[0][1] == grams("new text")
    cache.grams_of("c1", [("2", "b"), ("3", "c")])
    assert len(cache._entries) == 2
