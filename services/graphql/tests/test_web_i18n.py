"""The page's catalogues (web/i18n/<language>.js) against each other and against the page:
the same keys and placeholders in every language, every key the page asks for present, none
left over, and no words of the page outside them. The browser tests (e2e/test_browser.py)
check the same at run time: the page records every key it misses."""

from __future__ import annotations

import importlib.resources
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from nextcampus_graphql.app import WEB_FILES

WEB = importlib.resources.files("nextcampus_graphql").joinpath("web")
PAGE_SCRIPTS = ("app.js", "i18n.js")

# Keys written before the page uses them (a feature's words, ready for its code). The page's
# code using one makes the test below fail: take it off this list. (The conversation
# features' keys were prepared here until the page used them all.)
PREPARED_KEYS: frozenset[str] = frozenset()
# Intl.PluralRules(language).resolvedOptions().pluralCategories (CLDR); the browser test checks
# every plural against the browser's own rules too.
PLURAL_CATEGORIES = {"en": {"one", "other"}, "ko": {"other"}}
CLDR_CATEGORIES = {"zero", "one", "two", "few", "many", "other"}

CATALOGUE = re.compile(r"(?:// [^\n]*\n)+export default (\{.*\});\n", re.DOTALL)
PLACEHOLDER = re.compile(r"\{(\w*)\}")
# A call of the lookup, t('key' …): the key must be a literal, or a scan could not find it.
LOOKUP_CALL = re.compile(r"(?<![\w.$#])t\(")
LOOKUP_KEY = re.compile(r"""(?<![\w.$#])t\(\s*(['"])([\w.]+)\1""")
COMMENT = re.compile(r"/\*.*?\*/|(?<![:'\\])//[^\n]*", re.DOTALL)


def source(name: str) -> str:
    return WEB.joinpath(name).read_text(encoding="utf-8")


def load_catalogues() -> dict[str, dict[str, Any]]:
    catalogues = {}
    for file in sorted(WEB.joinpath("i18n").iterdir(), key=lambda file: file.name):
        text = file.read_text(encoding="utf-8")
        match = CATALOGUE.fullmatch(text)
        assert match, f"{file.name}: comment lines, then `export default {{…}};` (strict JSON)"
        catalogues[file.name.removesuffix(".js")] = json.loads(match.group(1))
    return catalogues


CATALOGUES = load_catalogues()


def forms(entry: str | dict[str, str]) -> list[str]:
    return list(entry.values()) if isinstance(entry, dict) else [entry]


def placeholders(entry: str | dict[str, str]) -> set[str]:
    return {name for form in forms(entry) for name in PLACEHOLDER.findall(form)}


class MarkupKeys(HTMLParser):
    """The keys index.html names, and any words it holds outside <noscript>."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()
        self.words: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in {"meta", "link", "input", "br", "img"}:
            self.open.append(tag)
        for name, value in attrs:
            if name == "data-i18n" or name.startswith("data-i18n-"):
                assert value, f"<{tag} {name}> without a key"
                self.keys.add(value)
            if name in {"aria-label", "title", "placeholder", "alt"}:
                self.words.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if data.strip() and "noscript" not in self.open:
            self.words.append(data.strip())


def used_keys() -> dict[str, set[str]]:
    """Where each key is asked for: app.js, i18n.js, index.html."""
    used: dict[str, set[str]] = {}
    app = source("app.js")
    # Only i18n.js looks keys up by a variable: those of index.html, scanned below.
    assert len(LOOKUP_CALL.findall(app)) == len(LOOKUP_KEY.findall(app)), (
        "app.js: every t(…) names its key as a literal"
    )
    for name in PAGE_SCRIPTS:
        for match in LOOKUP_KEY.finditer(source(name)):
            used.setdefault(match.group(2), set()).add(name)
    markup = MarkupKeys()
    markup.feed(source("index.html"))
    for key in markup.keys:
        used.setdefault(key, set()).add("index.html")
    return used


def test_the_catalogues_are_the_languages_the_page_offers() -> None:
    assert set(CATALOGUES) == {"en", "ko"}
    for language in CATALOGUES:
        assert f"i18n/{language}.js" in WEB_FILES, f"{language} is not served"
        assert f"import {language} from './i18n/{language}.js';" in source("i18n.js")
        assert f'href="static/i18n/{language}.js"' in source("index.html"), "modulepreload"


def test_every_catalogue_has_the_same_keys_and_placeholders() -> None:
    english = CATALOGUES["en"]
    for language, catalogue in CATALOGUES.items():
        assert catalogue.keys() == english.keys(), (
            f"{language}: missing {sorted(english.keys() - catalogue.keys())}, "
            f"extra {sorted(catalogue.keys() - english.keys())}"
        )
        for key, entry in catalogue.items():
            assert all(form.strip() for form in forms(entry)), f"{language}:{key} is empty"
            assert placeholders(entry) == placeholders(english[key]), f"{language}:{key}"
            assert "" not in placeholders(entry), f"{language}:{key}: `{{}}` has no name"


def test_plurals_have_every_form_of_their_language() -> None:
    plural_keys = {key for key, entry in CATALOGUES["en"].items() if isinstance(entry, dict)}
    assert plural_keys, "the plural entries are tested here"
    for language, catalogue in CATALOGUES.items():
        for key in plural_keys:
            entry = catalogue[key]
            assert isinstance(entry, dict), f"{language}:{key} is a plural in English"
            assert set(entry) <= CLDR_CATEGORIES, f"{language}:{key}: {sorted(entry)}"
            assert set(entry) == PLURAL_CATEGORIES[language], f"{language}:{key}"
            assert all("{count}" in form for form in entry.values()), f"{language}:{key}"


def test_every_key_the_page_uses_is_in_every_catalogue() -> None:
    used = used_keys()
    assert len(used) > 30, "the scan finds the page's keys"
    for language, catalogue in CATALOGUES.items():
        absent = {key: sorted(where) for key, where in used.items() if key not in catalogue}
        assert not absent, f"{language} lacks {absent}"


def test_no_key_is_left_unused() -> None:
    used = used_keys()
    # language.name of every catalogue names it in the language menu (i18n.js).
    unused = CATALOGUES["en"].keys() - used.keys() - PREPARED_KEYS
    assert not unused, f"no part of the page uses {sorted(unused)}: remove them"
    assert not PREPARED_KEYS - CATALOGUES["en"].keys(), "a prepared key is in no catalogue"
    now_used = PREPARED_KEYS & used.keys()
    assert not now_used, f"the page uses {sorted(now_used)} now: take them off PREPARED_KEYS"


def test_every_server_error_code_has_words() -> None:
    errors = importlib.resources.files("nextcampus_graphql").joinpath("errors.py")
    block = re.search(r"class Code\(enum.StrEnum\):\n((?:    .*\n)+)", errors.read_text())
    assert block
    codes = set(re.findall(r'^    (\w+) = "\1"', block.group(1), re.MULTILINE))
    assert "RATE_LIMITED" in codes
    for code in codes:
        assert f"error.{code}" in CATALOGUES["en"], f"the page cannot word {code}"


def test_index_html_holds_keys_not_words() -> None:
    markup = MarkupKeys()
    markup.feed(source("index.html"))
    assert markup.words == [], "words in index.html belong in the catalogues"
    # <noscript> speaks both languages: no catalogue reaches a page without scripts.
    noscript = source("index.html").rsplit("<noscript>")[-1].split("</noscript>")[0]
    assert 'lang="ko"' in noscript


@pytest.mark.parametrize("name", PAGE_SCRIPTS)
def test_page_scripts_hold_no_words(name: str) -> None:
    code = COMMENT.sub("", source(name))
    # Words written straight into the page, rather than through t(…).
    literal = r"""\s*(['"`])[^'"`\s]"""
    for pattern in (
        rf"\.(?:textContent|title|placeholder|ariaLabel)\s*={literal}",
        rf"setAttribute\(\s*'(?:aria-label|title|placeholder)',{literal}",
        rf"(?:confirm|alert|prompt)\({literal}",
        rf"element\('\w+',\s*'[\w-]*',{literal}",
    ):
        found = re.search(pattern, code)
        assert found is None, f"{name}: {found.group(0) if found else ''}"
    # Nor a catalogue's sentence copied in (a word or two can be an identifier).
    for language, catalogue in CATALOGUES.items():
        for key, entry in catalogue.items():
            for form in forms(entry):
                for fragment in PLACEHOLDER.split(form)[::2]:
                    if len(fragment.split()) >= 3:
                        assert fragment not in code, f"{name} holds {language}:{key}"


# Korean UI sentences are polite 해요체: a sentence that ends in . ! or ? ends in 요 before it.
SENTENCE_END = re.compile(r"(\S+?)[.!?](?=\s|$)")


@pytest.mark.parametrize("key", sorted(CATALOGUES["ko"]))
def test_korean_sentences_are_polite(key: str) -> None:
    for form in forms(CATALOGUES["ko"][key]):
        for word in SENTENCE_END.findall(PLACEHOLDER.sub("", form)):
            assert word.endswith("요"), f"ko:{key}: {form!r}"
