"""Which earlier questions of a course look like a text being typed (similarQuestions).

Character n-gram TF-IDF with cosine similarity, in plain Python: every word is padded with a
space and cut into its 2- and 3-character grams. Character grams need no tokenizer or word
list, so Korean works as well as English: a Hangul syllable is one character, and the
particles and endings that agglutinate to a word (과제 / 과제는 / 과제를) change only the grams
at its end, while the stem's grams still match; English inflections (deadline / deadlines,
submit / submitting) the same. Sub-linear term frequency and smoothed IDF over the compared
questions weigh down what every question says (“how”, “질문”, “있나요”).

Cost is bounded by the caller: it compares at most `MAX_COMPARED` of the course's newest
questions, whose texts come from Redis in one script call (questions.lua); their grams live in
this process only, in an LRU cache keyed by (course, message id) and checked against the text
(an edit recomputes them).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# How many of a course's newest questions one similarQuestions call compares.
MAX_COMPARED = 1000
# Grams of this many questions stay cached per process (about 2 KB each).
CACHED_QUESTIONS = 20_000
# Below this cosine a question is not suggested (unrelated questions share a few grams).
MIN_SCORE = 0.1
GRAM_SIZES = (2, 3)

_NOT_WORD = re.compile(r"[\W_]+")


def grams(text: str) -> Counter[str]:
    """The text's character 2- and 3-grams, each word padded with a space at both ends."""
    normalized = _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    counts: Counter[str] = Counter()
    for word in normalized.split():
        padded = f" {word} "
        for size in GRAM_SIZES:
            counts.update(padded[i : i + size] for i in range(len(padded) - size + 1))
    return counts


@dataclass(frozen=True, slots=True)
class Match:
    question_id: str
    score: float


def rank(query: str, candidates: Sequence[tuple[str, Counter[str]]], *, limit: int) -> list[Match]:
    """The `limit` candidates (id, grams) most similar to `query`, the most similar first,
    scoring at least MIN_SCORE."""
    wanted = grams(query)
    if not wanted or not candidates:
        return []
    documents = len(candidates) + 1
    frequency: Counter[str] = Counter(wanted.keys())
    for _, counts in candidates:
        frequency.update(counts.keys())

    def idf(gram: str) -> float:
        return math.log((1 + documents) / (1 + frequency[gram])) + 1

    def weights(counts: Counter[str]) -> dict[str, float]:
        return {gram: (1 + math.log(n)) * idf(gram) for gram, n in counts.items()}

    query_weights = weights(wanted)
    query_norm = math.sqrt(sum(w * w for w in query_weights.values()))
    scored = []
    for question_id, counts in candidates:
        if not counts.keys() & query_weights.keys():
            continue
        document = weights(counts)
        norm = math.sqrt(sum(w * w for w in document.values()))
        dot = sum(w * document[g] for g, w in query_weights.items() if g in document)
        score = dot / (query_norm * norm)
        if score >= MIN_SCORE:
            scored.append(Match(question_id, score))
    scored.sort(key=lambda match: (-match.score, match.question_id))
    return scored[:limit]


class GramCache:
    """The grams of recently compared questions, by (course, message id)."""

    def __init__(self, size: int = CACHED_QUESTIONS) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], tuple[str, Counter[str]]] = OrderedDict()

    def grams_of(
        self, course_id: str, questions: Iterable[tuple[str, str]]
    ) -> list[tuple[str, Counter[str]]]:
        """(id, grams) of each (id, text), computed once per text."""
        out = []
        for question_id, text in questions:
            key = (course_id, question_id)
            cached = self._entries.get(key)
            if cached is None or cached[0] != text:
                cached = (text, grams(text))
                self._entries[key] = cached
            self._entries.move_to_end(key)
            out.append((question_id, cached[1]))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return out
