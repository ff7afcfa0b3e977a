"""Named things in a document's text: dates, amounts, organisations, people, e-mail addresses.

Each kind uses the library that knows the hard part, and reports only what it can tell;
an empty list is better than a wrong one:
- dates: dateparser's search (month names and orders in 200 locales), kept to full dates
  (day, month and year) so "30 days" or "2025" alone are not turned into a calendar day;
- amounts: a number next to an ISO 4217 code (pycountry's list) or a currency sign, read by
  price-parser, which settles "1.250,00" against "1,250.00";
- organisations: a run of capitalised words ending in a legal form from cleanco's list
  ("GmbH", "Ltd", "LLP", "S.A.R.L." …);
- people: a courtesy title and a name ("Dr. Ada Byron"), or a first name that
  gender-guesser's 40,000-name list knows followed by a capitalised surname ("Lena Vogt").
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from typing import Any

from pipeline.llm.offline.text import spread

MAX_PER_KIND = 25  # per part; the merge and the result bound cap the whole document
_DATE_UNITS = 150  # units handed to dateparser, which is slow (~5 ms a unit)
# A unit can state a full date only if it has a numeric date, or a year and a day number.
_NUMERIC_DATE = re.compile(r"\b\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b|\b\d{4}-\d{2}-\d{2}\b")
_YEAR = re.compile(r"\b(?:1[89]|20)\d\d\b")
_DAY = re.compile(r"(?<![\d.,])(?:[12]?\d|3[01])(?![\d%]|[.,]\d)")
_DATE_SETTINGS = {
    "REQUIRE_PARTS": ["day", "month", "year"],
    "PARSERS": ["absolute-time", "custom-formats"],  # no "in 3 days", no Unix timestamps
    "RETURN_AS_TIMEZONE_AWARE": False,
}
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_SIGNS = {"€": "EUR", "£": "GBP", "$": "USD", "US$": "USD", "¥": "JPY", "₹": "INR",
          "Fr.": "CHF", "euro": "EUR", "euros": "EUR", "dollars": "USD",
          "pounds": "GBP"}  # fmt: skip
_NUMBER = r"[-−]?\d{1,3}(?:[,.\u00a0\u202f' ]\d{3})+(?:[.,]\d{1,2})?|[-−]?\d+(?:[.,]\d{1,2})?"
_SCALE = r"(?: ?(?:million|billion|thousand|bn|mn|Mio\.|Mrd\.|millions|milliards?))?"
_CURRENCY = r"US\$|[€£$¥₹]|Fr\.|[A-Z]{3}"
_CURRENCY_HINT = re.compile(r"[€£$¥₹]|\b[A-Z]{3}\b|euro|dollar|pound|Fr\.")
_AMOUNT = re.compile(
    rf"(?<![\w.,])(?:(?P<c1>{_CURRENCY}) ?(?P<n1>{_NUMBER})(?P<s1>{_SCALE})"
    rf"|(?P<n2>{_NUMBER})(?P<s2>{_SCALE}) ?(?P<c2>{_CURRENCY}|euros?|dollars|pounds))(?![\w])"
)
_TITLE = r"(?:Mr|Mrs|Ms|Dr|Prof|Herr|Frau|Mme|Madame|Monsieur|Sir|Dame)"
_CAP = r"[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ'’-]+"
# Names never run across units (one a line in the text searched): " ", not \s.
_TITLED = re.compile(rf"\b(?:{_TITLE}\.? +)+(?:{_CAP} +){{0,2}}{_CAP}\b")
_LEADING_TITLES = re.compile(rf"^(?:{_TITLE}\.? +)+")
_NAME_PAIR = re.compile(rf"\b(?P<first>{_CAP}) +(?P<last>{_CAP}(?:-{_CAP})?)\b")
# cleanco lists some forms that are also everyday words or too short to trust in running
# text ("vat", "company", "et", "da"); they are left out.
_FORM_BLOCKLIST = frozenset(
    "vat company private et da pt ee ae oe ij aj ay ks ky kt kd sd og pp mb kb hb qk xk xt "
    "nl dat fie teo ans esv cpt tmi".split()
)
_MIXED_CASE_FORMS = frozenset({"Oy", "Co", "Co."})  # short forms written in mixed case
_CONNECTORS = frozenset({"&", "and", "und", "et", "of", "de"})
# A capitalised word or a connector; a word ending in "." ends a sentence, not a name.
_NAME_WORD = r"(?:[A-Z0-9][\w'’-]*(?:\.[\w'’-]+)*|&|and|und|et|of|de)"
_MONTHS_AND_DAYS = frozenset(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday januar februar märz juni juli "
    "oktober dezember janvier février mars avril mai juin juillet août septembre octobre "
    "novembre décembre".split()
)


def find_dates(units: list[str], language: str) -> list[str]:
    """Full dates the text states, as ISO 8601 (YYYY-MM-DD), in order of first mention."""
    from dateparser.search import search_dates

    languages = [language, "en"] if language not in ("en", "unknown") else ["en"]
    candidates = spread([u for u in units if _may_hold_date(u)], _DATE_UNITS)
    found: dict[str, None] = {}
    for unit in candidates:
        try:
            hits = search_dates(unit, languages=languages, settings=_DATE_SETTINGS) or []
        except (ValueError, OverflowError):  # a language dateparser lacks; a far-out year
            hits = search_dates(unit, languages=["en"], settings=_DATE_SETTINGS) or []
        for _text, when in hits:
            if 1900 <= when.year <= 2100:
                found.setdefault(when.date().isoformat(), None)
    return list(found)[:MAX_PER_KIND]


def _may_hold_date(unit: str) -> bool:
    return bool(_NUMERIC_DATE.search(unit) or (_YEAR.search(unit) and _DAY.search(unit)))


@functools.cache
def _currency_codes() -> frozenset[str]:
    import pycountry

    return frozenset(str(c.alpha_3) for c in pycountry.currencies)


def find_amounts(text: str) -> list[str]:
    """Monetary amounts with their currency, as "EUR 25,662.35" or "GBP 412.6 million"."""
    from price_parser import Price

    found: dict[str, None] = {}
    hinted = "\n".join(b for b in text.split("\n") if _CURRENCY_HINT.search(b))
    for match in _AMOUNT.finditer(hinted):
        currency = match.group("c1") or match.group("c2")
        number = match.group("n1") or match.group("n2")
        scale = (match.group("s1") or match.group("s2") or "").strip()
        code = _SIGNS.get(currency, currency)
        if code not in _currency_codes():
            continue
        amount = Price.fromstring(number.replace("−", "-"), decimal_separator=_decimal(number))
        if amount.amount is None:
            continue
        value: Decimal = amount.amount
        if number.lstrip().startswith(("-", "−")):
            value = -value
        found.setdefault(f"{code} {value:,}" + (f" {scale}" if scale else ""), None)
        if len(found) >= MAX_PER_KIND:
            break
    return list(found)


def _decimal(number: str) -> str | None:
    """The decimal separator of a written number when its last group says so ("1.250,00")."""
    tail = re.search(r"[.,](\d{1,2})$", number)
    return tail.group(0)[0] if tail else None


@functools.cache
def _legal_forms() -> re.Pattern[str]:
    from cleanco import typesources

    forms = {term.strip() for _kind, term in typesources()} - _FORM_BLOCKLIST
    alternation = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(
        rf"(?P<name>(?:{_NAME_WORD} +){{1,5}})(?P<form>(?i:{alternation}))(?!\w)"
    )


def find_organizations(text: str, stop_words: frozenset[str]) -> list[str]:
    """Names ending in a legal form, as written ("Brightwater Analytics GmbH")."""
    found: dict[str, None] = {}
    tails = _form_tails()
    for block in text.split("\n"):
        # The full pattern is slow on long text; most blocks name no company at all.
        words = (t.strip(",;:()").lower() for t in block.split() if not t.islower())
        if any(w in tails or w.rstrip(".") in tails for w in words):
            _organizations_in(block, stop_words, found)
        if len(found) >= MAX_PER_KIND:
            break
    return list(found)[:MAX_PER_KIND]


@functools.cache
def _form_tails() -> frozenset[str]:
    """The last word of every legal form, lower case: "ltd", "kg", "o.o." …"""
    from cleanco import typesources

    return frozenset(term.split()[-1] for _kind, term in typesources() if term.strip())


def _organizations_in(block: str, stop_words: frozenset[str], found: dict[str, None]) -> None:
    for match in _legal_forms().finditer(block):
        form = match.group("form")
        if not any(c.isupper() for c in form):
            continue
        name_words = match.group("name").split()
        while name_words and (name_words[0].lower() in stop_words or name_words[0][0].islower()
                              or not name_words[0][0].isalpha()):
            name_words.pop(0)  # "The", "Signed", "2026" start a sentence or a row, not a name
        if not name_words or name_words[-1] in _CONNECTORS:
            continue
        shouted = all(w.isupper() for w in name_words)
        mixed = form not in _MIXED_CASE_FORMS and not form.isupper()
        if len(form.strip(".")) <= 2 and (mixed or shouted):
            continue  # "AG" after "Siemens" is a form; "AS" in a capitalised heading is a word
        found.setdefault(" ".join([*name_words, form]), None)


@functools.cache
def _first_names() -> Any:
    import gender_guesser.detector as gender

    return gender.Detector(case_sensitive=False)


def find_people(text: str, stop_words: frozenset[str], organizations: list[str]) -> list[str]:
    """People named with a courtesy title, or with a known first name and a surname; each
    by name ("Margaret Okafor" for "Frau Margaret Okafor"), the title kept only where it is
    all that says the one word after it is a person ("Dr. Smith")."""
    found: dict[str, None] = {}
    for match in _TITLED.finditer(text):
        titled_name = " ".join(match.group(0).split())
        name = _LEADING_TITLES.sub("", titled_name)
        found.setdefault(name if " " in name else titled_name, None)
    titled = " ".join(found)
    org_words = {w for org in organizations for w in org.split()}
    names = _first_names()
    for match in _NAME_PAIR.finditer(text):
        first, last = match.group("first"), match.group("last")
        if f"{first} {last}" in titled or first in org_words or last in org_words:
            continue
        if {first.lower(), last.lower()} & (stop_words | _MONTHS_AND_DAYS):
            continue
        if names.get_gender(first) == "unknown" or names.get_gender(last) != "unknown":
            continue  # "Accounts Payable" is nobody; "Ada Lena" is two first names
        found.setdefault(f"{first} {last}", None)
    return _fullest(list(found))[:MAX_PER_KIND]


def _fullest(names: list[str]) -> list[str]:
    """Each person once, by their fullest mention: a name whose words all appear in a longer
    one found too goes ("Frau Okafor" beside "Margaret Okafor": titles are not words of a
    name)."""
    words = [set(_LEADING_TITLES.sub("", n).split()) for n in names]
    return [n for n, w in zip(names, words, strict=True) if not any(w < o for o in words)]


def find_emails(text: str) -> list[str]:
    return list(dict.fromkeys(_EMAIL.findall(text)))[:MAX_PER_KIND]
