"""Light text processing shared by the reader and retrieval: terms, stopwords, key phrases.

Key phrases follow RAKE (Rose, Engel, Cramer & Cowley, 2010, "Automatic Keyword Extraction from
Individual Documents"): candidate phrases are maximal runs of non-stopwords; a word scores
degree/frequency over the candidates; a phrase scores the sum of its words' scores.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import defaultdict
from typing import Any

_WORD = re.compile(r"[^\W_][\w'\-]*")
_SPLIT = re.compile(r"[.!?,;:()\[\]\"\n]+")

#: English stopwords (function words, auxiliaries, chat filler); used for BM25 queries and RAKE.
STOPWORDS: frozenset[str] = frozenset(
    """a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does doesn't
    doing don't down during each few for from further had hadn't has hasn't have haven't having he
    he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if in
    into is isn't it it's its itself just let's me more most mustn't my myself no nor not now of off
    on once only or other ought our ours ourselves out over own really same shan't she she'd she'll
    she's should shouldn't so some such than that that's the their theirs them themselves then there
    there's these they they'd they'll they're they've this those through to too under until up very
    was wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while
    who who's whom why why's will with won't would wouldn't you you'd you'll you're you've your yours
    yourself yourselves yeah yes oh ok okay hey hi hello thanks thank wow lol haha um uh like just
    got get gets getting go going gone went much many lot lots thing things something anything
    really pretty kind sort stuff way did does done make made know think thought feel felt sure
    definitely totally awesome great good nice cool amazing glad happy""".split()
)

#: Extra phrase delimiters for RAKE only: time words and generic verbs that make poor key phrases.
PHRASE_DELIMITERS: frozenset[str] = STOPWORDS | frozenset(
    """yesterday today tonight tomorrow last next week weeks weekend month months year years day days ago
    time times started start starting always never ever still even since recently lately soon already
    love loved loves want wanted wants need needed try tried trying see saw seen say said tell told""".split()
)


def fold(text: str) -> str:
    """Lower-case and strip diacritics ("Zoë" → "zoe"), as SQLite FTS5's ``unicode61`` tokenizer does."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """Return the lower-cased, diacritic-folded word tokens of ``text`` (any script)."""
    return [w.strip("'-_") for w in _WORD.findall(fold(text))]


def content_terms(text: str) -> list[str]:
    """Return the distinct non-stopword terms of ``text`` in order of first appearance."""
    return list(dict.fromkeys(w for w in words(text) if w and w not in STOPWORDS and len(w) > 1))


def key_phrases(text: str, max_phrases: int = 5, max_words: int = 4) -> list[str]:
    """Extract key phrases with RAKE.

    Args:
        text: Source text.
        max_phrases: Return at most this many phrases (default 5).
        max_words: Longer candidate phrases are cut into pieces of this many words (default 4).

    Returns:
        Lower-cased phrases, best first.

    """
    candidates: list[list[str]] = []
    for chunk in _SPLIT.split(text):
        phrase: list[str] = []
        for w in words(chunk):
            if not w or w in PHRASE_DELIMITERS or w.isdigit():
                if phrase:
                    candidates.append(phrase)
                phrase = []
            else:
                phrase.append(w)
        if phrase:
            candidates.append(phrase)
    candidates = [c[i : i + max_words] for c in candidates for i in range(0, len(c), max_words)]
    freq: dict[str, int] = defaultdict(int)
    degree: dict[str, int] = defaultdict(int)
    for cand in candidates:
        for w in cand:
            freq[w] += 1
            degree[w] += len(cand)
    scored: dict[str, float] = {}
    for cand in candidates:
        phrase_text = " ".join(cand)
        scored[phrase_text] = sum(degree[w] / freq[w] for w in cand)
    return sorted(scored, key=lambda p: -scored[p])[:max_phrases]


#: BM25 constants (Robertson & Zaragoza, 2009; the values of SQLite FTS5 and Lucene).
BM25_K1 = 1.2
BM25_B = 0.75


def bm25_idf(n_docs: int, df: int) -> float:
    """Return a term's BM25 inverse document frequency as SQLite FTS5 computes it.

    ``log((N - df + 0.5) / (df + 0.5))``, floored at 1e-6 so that a term in most documents still
    counts a little.

    Args:
        n_docs: Documents in the collection (N).
        df: Documents containing the term.

    """
    ratio = (n_docs - df + 0.5) / (df + 0.5)
    return math.log(ratio) if ratio > 1.0 else 1e-6


#: A token as SQLite FTS5's ``unicode61`` tokenizer sees it: a run of letters and digits.
_TOKEN = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=1)
def _porter() -> Any:
    import Stemmer  # PyStemmer: Snowball's C implementation of the original Porter algorithm

    return Stemmer.Stemmer("porter")


def bm25_terms(text: str) -> list[str]:
    """Return the index terms of ``text`` as SQLite FTS5's ``porter unicode61`` tokenizer makes them.

    Tokens are runs of letters and digits, lower-cased with diacritics removed; tokens of 3 to 64
    characters are reduced with the Porter stemmer, shorter and longer ones are kept as they are
    (as FTS5's porter wrapper does). Every store indexes and queries these terms, so that BM25
    ranks alike on every backend.

    Args:
        text: Document or query text.

    Returns:
        The terms in order, repeats included (term frequency counts them).

    """
    stem = _porter().stemWord
    return [t if len(t) < 3 or len(t) > 64 else stem(t) for t in _TOKEN.findall(fold(text))]


def bm25_query_terms(text: str) -> list[str]:
    """Return the BM25 query terms of ``text``: the stemmed tokens of its non-stopword terms, repeats kept."""
    return [t for term in content_terms(text) for t in bm25_terms(term)]


_MONTHS_AND_DAYS = frozenset(
    """january february march april may june july august september october november december jan feb mar apr jun
    jul aug sep sept oct nov dec monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu
    thur thurs fri sat sun""".split()
)
_NEGATIONS = frozenset(
    """not no never none nobody nothing nowhere neither nor without cannot can't don't doesn't didn't isn't aren't
    wasn't weren't won't wouldn't shouldn't couldn't hasn't haven't hadn't mustn't""".split()
)
_RAW_TOKEN = re.compile(r"[^\W_][\w'’:.,/\-]*")


def _fact_tokens(text: str) -> tuple[set[str], set[str], set[str]]:
    """Return (digit, month/weekday and negation tokens; name candidates; all lower-cased words) of ``text``."""
    facts: set[str] = set()
    names: set[str] = set()
    lowered: set[str] = set()
    for raw in _RAW_TOKEN.findall(text.replace("’", "'")):
        token = raw.rstrip(":.,/-'")
        low = token.lower()
        lowered.add(low.split("'")[0])
        if any(c.isdigit() for c in token):
            facts.add(low)
        elif low in _MONTHS_AND_DAYS or low in _NEGATIONS or low.endswith("n't"):
            facts.add(low)
        elif token[:1].isupper() and low not in STOPWORDS and low != "i":
            names.add(low.split("'")[0])
    return facts, names, lowered


def same_statement(a: str, b: str) -> bool:
    """Whether two similar texts state the same facts, so that merging them loses nothing essential.

    Two texts whose embeddings are nearly identical (a near-duplicate by cosine) are still different
    statements when they differ in a number, date or time ("555-0101" / "555-0199", "12 March" /
    "14 March", "07:15" / "09:45"), a name ("Alice" / "Bob") or a negation ("I like" / "I don't
    like"). Compared are: every token with a digit (trailing punctuation stripped), month and
    weekday names, negation words, and names, which are the capitalised non-stopwords of either
    text, looked up case-insensitively in both (so "Berlin" / "berlin" is the same statement).

    Args:
        a: One text.
        b: The other.

    Returns:
        True when the texts agree on all of those tokens.

    """
    facts_a, names_a, words_a = _fact_tokens(a)
    facts_b, names_b, words_b = _fact_tokens(b)
    names = names_a | names_b
    return facts_a == facts_b and names & words_a == names & words_b


#: Words of a statement's frame that name an attribute a subject has one value of at a time
#: (where one lives or works, a favourite, a name, a number, a day): the rule supersedes only these.
SINGLE_VALUED = frozenset(
    """favourite favorite favourites lives live living resides address city country home hometown moved
    works work working job employer employed occupation profession title role position salary rent
    called named name nickname number phone email mail password code pin age birthday born
    drives car vehicle day days time schedule status married partner wife husband boss manager team
    school university major current main prefers preferred preference best plan plans""".split()
)
#: Words in a new statement that say a value changed ("now", "moved", "switched", ...).
CHANGE_CUES = frozenset(
    """now moved changed switched new longer anymore instead currently became updated replaced""".split()
)


def changed_value(old: str, new: str) -> bool:
    """Whether ``new`` restates ``old`` with a value changed: the superseding rule of MemLifecycle without an LLM.

    Conservative by design: an archived fact leaves the default search, so the rule errs towards
    keeping both. The texts' content terms (:func:`content_terms`) split into what both share (the
    statement's frame: "ann", "favourite", "colour") and what each alone holds (the value: "blue"
    / "green"). ``new`` changes a value of ``old`` when all of these hold:

    * both open with the same content term, the statement's subject ("ann", "door"): "Bob lives
      in Porto" restates "Ann lives in Porto" for someone else;
    * the shared frame has at least two terms (subject and attribute) and at least as many as
      each side's own terms;
    * each side holds one value of its own: one term, or two adjacent ones ("Porto", "New York");
      or they hold the same terms but are not the same statement (:func:`same_statement`: a
      negation, a number or date written differently);
    * the attribute has one value at a time: the frame names one of :data:`SINGLE_VALUED`
      ("lives", "favourite", "called", "number", ...) or the new text says it changed
      (:data:`CHANGE_CUES`: "now", "moved", "switched", ...). "Ann speaks French" / "Spanish",
      "Ann has a dog" / "a cat", "visited Paris" / "Rome" are left side by side.

    A text that only adds terms ("... in May") refines rather than changes a value (False). The
    caller also requires the same subject (``user_id``), visibility and a close embedding; an
    LLM (fine mode) decides instead where one is configured.
    """
    terms_a, terms_b = content_terms(old), content_terms(new)
    if not terms_a or not terms_b or terms_a[0] != terms_b[0]:
        return False
    a, b = set(terms_a), set(terms_b)
    shared, gone, came = a & b, a - b, b - a
    if len(shared) < 2:
        return False
    if not (shared & SINGLE_VALUED or set(words(new)) & CHANGE_CUES):
        return False
    if not gone and not came:
        return not same_statement(old, new)
    return _one_phrase(terms_a, gone) and _one_phrase(terms_b, came) and len(shared) >= max(len(gone), len(came))


def _one_phrase(terms: list[str], part: set[str]) -> bool:
    """Whether ``part`` is one or two terms next to each other in ``terms`` (one value: "Porto", "New York")."""
    if not 1 <= len(part) <= 2:
        return False
    at = sorted(terms.index(t) for t in part)
    return at[-1] - at[0] == len(at) - 1
