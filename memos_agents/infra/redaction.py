"""PII and secret detection and redaction for memory writes (MemGovernance).

A cube's :class:`RedactionPolicy` says what happens when a text about to be written holds personal
data or secrets: ``off`` (stored as is, no detection work), ``mask`` (each finding replaced by a
mask such as ``[EMAIL]``, the rest of the text byte-identical) or ``refuse`` (nothing is stored;
:class:`~memos_agents.errors.SensitiveDataError` names the kinds and offsets found).

Detectors, one or more per :class:`PIIKind`:

* ``email``: own candidate regex plus validation of an RFC 5322 ``dot-atom`` subset (the quoted
  local parts and domain literals of RFC 5322 are not matched), with RFC 6531 Unicode letters
  allowed. ``email-validator`` checks one given address but does not find addresses in text (and
  pulls in dnspython), so it does not fit.
* ``phone``: ``phonenumbers`` (the Python port of Google's libphonenumber, 9.x; its metadata ships
  in the wheel, nothing is downloaded) through ``PhoneNumberMatcher`` at leniency ``VALID``: a
  number is found only when it is a valid number of its region's numbering plan. Numbers written
  with ``+`` and a country code are found whatever the regions; national numbers only for the
  redactor's ``phone_regions`` (default ``("US",)``, see :data:`DEFAULT_PHONE_REGIONS`).
* ``payment_card``: own detector (13-19 digits, contiguous or grouped as cards are printed, with
  one consistent space or hyphen), then the ISO/IEC 7812 Luhn check digit (``stdnum.luhn`` of
  ``python-stdnum``) and the issuer prefix and length of a major scheme (:data:`CARD_SCHEMES`).
  No maintained library finds card numbers in free text; the Luhn and issuer checks keep
  order numbers, timestamps and ISBNs out.
* ``iban``: own candidate regex (upper-case country code, two check digits, 11-30 letters or
  digits, optionally in groups), validated by ``stdnum.iban`` (ISO 13616: the country's BBAN
  format and length from the SWIFT IBAN registry, and the ISO 7064 mod 97-10 check digits).
* ``ip_address``: own candidate regexes validated by the standard library's :mod:`ipaddress`
  (RFC 791 dotted-quad IPv4 without leading zeros; RFC 4291 IPv6 text forms including ``::``
  compression and an embedded IPv4 tail). Unspecified and loopback addresses (``0.0.0.0``,
  ``127.0.0.0/8``, ``::``, ``::1``) identify no one and are not reported.
* ``secret``: own patterns, after the published token formats (and the rules of Yelp's
  ``detect-secrets`` 1.5 and of gitleaks): PEM/OpenSSH/PGP private-key blocks (multi-line, the
  whole block up to its ``END`` line), AWS access key ids, GitHub tokens, Slack tokens and
  webhooks, Stripe secret keys, OpenAI/Anthropic-style ``sk-`` keys, Google API keys, JWTs,
  ``Bearer`` tokens, passwords in URLs, and ``api_key=...`` / ``password: ...`` assignments whose
  value looks like a secret (length, character classes and Shannon entropy). ``detect-secrets``
  itself was measured and not used: its ``scan_line`` works per line of a file, reports values
  but not offsets, keeps global settings, and without its file-type filters its high-entropy
  plugins flagged 4,123 of 4,124 LoCoMo turns (about 1.2 ms per turn).

``presidio-analyzer`` was not used: it needs a spaCy language model, a download at install or run
time. Tested with phonenumbers 9.0 and python-stdnum 2.2.

Cost (one core, all detectors, default phone region): about 12 µs per LoCoMo turn (most turns have
no digit, ``@`` or key-like text, and each detector first checks for its cheap precondition); about
0.3 ms per turn with dates, prices and order numbers added, three quarters of it in libphonenumber's
matcher, whose cost grows with each extra phone region (1.35 ms with seven regions).

Offsets are Python ``str`` indices (code points). Every regex here is linear-time on any input:
quantifiers are bounded or over one character class followed by a literal, and candidates start
only at a boundary (a look-behind), so a long run of look-alike characters is tried once, not at
every position. Private-key blocks are paired with their ``END`` line by position lookup, not by a
lazy ``.*?`` scan.

Overlaps: findings of different detectors that overlap (share at least one character) are merged
into one finding covering the union of their spans, so masking never leaves part of a detected
value visible. The merged finding takes the kind and detector of the most specific candidate, by
the order ``secret > payment_card > iban > email > ip_address > phone`` and then the longest span
(then the earliest). Spans that only touch stay separate.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Final

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator
from stdnum import iban as _stdnum_iban
from stdnum import luhn as _stdnum_luhn

from memos_agents.errors import ConfigError, SensitiveDataError

__all__ = [
    "CARD_SCHEMES",
    "DEFAULT_PHONE_REGIONS",
    "PIIFinding",
    "PIIKind",
    "RedactionMode",
    "RedactionPolicy",
    "RedactionResult",
    "Redactor",
    "default_redactor",
]


class PIIKind(StrEnum):
    """A kind of personal data or secret that a :class:`Redactor` finds."""

    EMAIL = "email"
    PHONE = "phone"
    PAYMENT_CARD = "payment_card"
    IBAN = "iban"
    IP_ADDRESS = "ip_address"
    SECRET = "secret"


class RedactionMode(StrEnum):
    """What a cube does with a write that holds personal data or secrets."""

    OFF = "off"
    """Store the text as is; no detection work is done."""
    MASK = "mask"
    """Replace every finding by the policy's mask and store the rest unchanged."""
    REFUSE = "refuse"
    """Store nothing and raise :class:`~memos_agents.errors.SensitiveDataError`."""


#: Most specific first: the kind a merged overlapping finding takes (see the module docstring).
_PRIORITY: Final[dict[PIIKind, int]] = {
    PIIKind.SECRET: 0,
    PIIKind.PAYMENT_CARD: 1,
    PIIKind.IBAN: 2,
    PIIKind.EMAIL: 3,
    PIIKind.IP_ADDRESS: 4,
    PIIKind.PHONE: 5,
}

_MASK_MAX_CHARS: Final = 64


class RedactionPolicy(BaseModel):
    """A cube's redaction setting.

    Attributes:
        mode: ``off`` (default), ``mask`` or ``refuse``.
        kinds: The kinds acted on; default all of :class:`PIIKind`. Must not be empty unless
            ``mode`` is ``off``.
        mask: The replacement of a masked finding, a template whose only field is ``{kind}``,
            filled with the kind's name in upper case (default ``"[{kind}]"``, giving ``[EMAIL]``,
            ``[PAYMENT_CARD]``...). At most 64 characters; a constant string is allowed.

    Raises:
        pydantic.ValidationError: On an unknown field, mode or kind, an empty ``kinds`` with a
            mode other than ``off``, or a mask with another field, a format spec, or more than 64
            characters.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: RedactionMode = RedactionMode.OFF
    kinds: frozenset[PIIKind] = Field(default_factory=lambda: frozenset(PIIKind))
    mask: str = "[{kind}]"

    @field_validator("mask")
    @classmethod
    def _check_mask(cls, value: str) -> str:
        if len(value) > _MASK_MAX_CHARS:
            raise ValueError(f"mask is {len(value)} characters; at most {_MASK_MAX_CHARS}")
        try:
            fields = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"mask is not a valid template: {exc}") from None
        for _literal, name, spec, conversion in fields:
            if name is None:
                continue
            if name != "kind" or spec or conversion:
                raise ValueError("the mask's only allowed field is {kind} (no format spec or conversion)")
        return value

    @field_serializer("kinds")
    def _sorted_kinds(self, kinds: frozenset[PIIKind]) -> list[str]:
        return sorted(k.value for k in kinds)  # a set's order varies between processes; headers must not

    @model_validator(mode="after")
    def _check_kinds(self) -> RedactionPolicy:
        if self.mode is not RedactionMode.OFF and not self.kinds:
            raise ValueError(f"redaction mode {self.mode.value!r} needs at least one kind")
        return self

    def render_mask(self, kind: PIIKind) -> str:
        """Return the replacement text for a finding of ``kind`` (e.g. ``[EMAIL]``)."""
        return self.mask.format(kind=kind.name)


@dataclass(frozen=True, slots=True)
class PIIFinding:
    """One detected span. The value itself is never stored: slice the text with ``start:end``.

    Attributes:
        kind: What was found.
        start: Offset of the first character (a ``str`` index, in code points).
        end: Offset just past the last character.
        detector: The detector that found it (e.g. ``"luhn_card"``, ``"aws_access_key_id"``).

    """

    kind: PIIKind
    start: int
    end: int
    detector: str


@dataclass(frozen=True, slots=True)
class RedactionResult:
    """The outcome of :meth:`Redactor.redact` for one text.

    Attributes:
        text: The text to store: unchanged for ``off`` or when nothing was found, else masked.
        findings: The findings, sorted by offset, with offsets into the *original* text.
        changed: Whether ``text`` differs from the input.

    """

    text: str
    findings: tuple[PIIFinding, ...]
    changed: bool


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------

_Span = tuple[int, int, str]  # start, end, detector
_DIGIT: Final = re.compile(r"[0-9]")


def _shannon_entropy(value: str) -> float:
    """Shannon entropy of ``value`` in bits per character."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values()) if n else 0.0


def _char_classes(value: str) -> int:
    """How many of lower case, upper case, digit and other characters ``value`` holds."""
    return (
        any(c.islower() for c in value)
        + any(c.isupper() for c in value)
        + any(c.isdigit() for c in value)
        + any(not c.isalnum() for c in value)
    )


# --------------------------------------------------------------------------------------------------
# E-mail (RFC 5322 dot-atom subset, RFC 6531 Unicode letters)
# --------------------------------------------------------------------------------------------------

_ATEXT: Final = r"\w!#$%&'*+/=?^`{|}~\-"
# A candidate starts where the previous character cannot belong to a local part, so a long run of
# local-part characters is tried once; both sides are bounded (RFC 5321: 64 and 253 characters).
_EMAIL_CANDIDATE: Final = re.compile(rf"(?<![{_ATEXT}.])[{_ATEXT}.]{{1,64}}@[\w.-]{{1,253}}")
_LOCAL_ATOM: Final = re.compile(rf"[{_ATEXT}]+")
_DOMAIN_LABEL: Final = re.compile(r"[^\W_](?:[\w-]{0,61}[^\W_])?")
_TLD: Final = re.compile(r"[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59}", re.IGNORECASE)
# "icon@2x.png" names an image variant, not a mailbox; none of these is a top-level domain.
_FILE_EXTENSIONS: Final = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "pdf"})
_DOMAIN_CHARS: Final = re.compile(r"[\w.-]")


def _find_emails(text: str) -> Iterator[_Span]:
    """E-mail addresses: ``local@domain`` with a dotted domain ending in a letters-only TLD.

    Own detector: the candidate regex is bounded and anchored at a boundary (linear time); the
    validation keeps to RFC 5322's dot-atom (no quoted local parts, no domain literals). Handles
    like ``@alice``, ``user@localhost`` and package pins like ``lodash@4.17.21`` are not matched.
    """
    if "@" not in text:
        return
    for m in _EMAIL_CANDIDATE.finditer(text):
        start, end = m.span()
        local, _, domain = m.group().partition("@")
        stripped = local.lstrip(".")
        start += len(local) - len(stripped)
        local = stripped
        domain = domain.rstrip(".-")
        end = start + len(local) + 1 + len(domain)
        if end < len(text) and _DOMAIN_CHARS.match(text, end) and text[end] not in ".-":
            continue  # the domain run is longer than any valid domain: not an address
        if not local or not all(_LOCAL_ATOM.fullmatch(atom) for atom in local.split(".")):
            continue
        labels = domain.split(".")
        if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
            continue
        tld = labels[-1]
        if not _TLD.fullmatch(tld) or tld.lower() in _FILE_EXTENSIONS:
            continue
        yield start, end, "email_rfc5322"


# --------------------------------------------------------------------------------------------------
# Phone numbers (phonenumbers / libphonenumber)
# --------------------------------------------------------------------------------------------------

#: Regions whose national-format numbers are found (numbers with ``+`` and a country code are found
#: whatever the regions). One region by default because every extra region is one more matcher pass
#: (about 0.2 ms per digit-rich text each) and widens what counts as a valid number: with
#: US+GB+DE+FR, invoice, ticket and ID numbers such as "0301234567" and "06123456789" become phone
#: numbers, with "US" alone only a 10-digit number that is also a valid US number does. LoCoMo's
#: 4,991 turns and captions give no phone finding with either. Pass ``phone_regions`` to
#: :class:`Redactor` for deployments whose users write national numbers of other countries.
DEFAULT_PHONE_REGIONS: Final[tuple[str, ...]] = ("US",)


def _phone_finder(regions: tuple[str, ...]) -> Callable[[str], Iterator[_Span]]:
    passes: tuple[str | None, ...] = regions or (None,)

    def find_phones(text: str) -> Iterator[_Span]:
        """Phone numbers by libphonenumber's matcher at leniency VALID, once per region."""
        if _DIGIT.search(text) is None:
            return
        seen: set[tuple[int, int]] = set()
        for region in passes:
            # max_tries: the matcher gives up after this many candidates (default 65535); one per
            # character at most, so a long text padded with number-like junk hides nothing.
            matcher = phonenumbers.PhoneNumberMatcher(
                text, region, leniency=phonenumbers.Leniency.VALID, max_tries=max(65535, len(text))
            )
            for match in matcher:
                span = (match.start, match.end)
                if span not in seen:
                    seen.add(span)
                    yield match.start, match.end, "libphonenumber"

    return find_phones


# --------------------------------------------------------------------------------------------------
# Payment cards (ISO/IEC 7812 Luhn + issuer prefixes)
# --------------------------------------------------------------------------------------------------

#: Issuer identification ranges and lengths of the major schemes: (name, ((low, high) prefixes of
#: equal width), allowed lengths). From the schemes' published IIN ranges.
CARD_SCHEMES: Final[tuple[tuple[str, tuple[tuple[int, int], ...], frozenset[int]], ...]] = (
    ("visa", ((4, 4),), frozenset({13, 16, 19})),
    ("mastercard", ((51, 55), (2221, 2720)), frozenset({16})),
    ("amex", ((34, 34), (37, 37)), frozenset({15})),
    ("discover", ((6011, 6011), (644, 649), (65, 65), (622126, 622925)), frozenset(range(16, 20))),
    ("diners", ((300, 305), (36, 36), (38, 39)), frozenset(range(14, 20))),
    ("jcb", ((3528, 3589),), frozenset(range(16, 20))),
    ("unionpay", ((62, 62),), frozenset(range(16, 20))),
    (
        "maestro",
        ((5018, 5018), (5020, 5020), (5038, 5038), (5893, 5893), (6304, 6304), (6759, 6763)),
        frozenset(range(13, 20)),
    ),
    ("mir", ((2200, 2204),), frozenset(range(16, 20))),
)

# A run of digit groups joined by one consistent separator (space or hyphen), not preceded by a word
# character, a sign or a decimal separator. Card numbers are looked for inside it (see _find_cards).
_CARD_RUN: Final = re.compile(r"(?<![\w.,+-])[0-9]+(?:(?P<sep>[ -])[0-9]+(?:(?P=sep)[0-9]+)*)?")


def _card_scheme(digits: str) -> str | None:
    for name, ranges, lengths in CARD_SCHEMES:
        if len(digits) not in lengths:
            continue
        for low, high in ranges:
            width = len(str(low))
            if low <= int(digits[:width]) <= high:
                return name
    return None


def _is_card_number(digits: str) -> bool:
    return len(set(digits)) > 1 and _card_scheme(digits) is not None and _stdnum_luhn.is_valid(digits)


def _find_cards(text: str) -> Iterator[_Span]:
    """Payment card numbers: 13-19 digits, Luhn-valid, with a known issuer prefix and length.

    Own detector (no maintained library finds cards in free text); the Luhn check is ``stdnum.luhn``
    (python-stdnum, ISO/IEC 7812-1 annex B), the issuers are :data:`CARD_SCHEMES`. Within a run of
    digit groups, a card is either one group of 13-19 digits, or consecutive groups as cards are
    printed: a first group of 4 digits, middle groups of 4 or 6, a last group of 1-6 (4-4-4-4,
    4-4-4-4-3, 4-6-5, 4-6-4...). So a card right after another number ("... 0958 4111 1111 1111
    1111") is still found, while dates, ISBNs and order numbers fail the grouping, Luhn or issuer.
    The number must not run into a word or a decimal part ("4111111111111111.50").
    """
    if _DIGIT.search(text) is None:
        return
    for m in _CARD_RUN.finditer(text):
        run_start, run_end = m.span()
        if run_end - run_start < 13:
            continue
        sep = m.group("sep")
        groups: list[tuple[int, int]] = []
        pos = run_start
        for part in m.group().split(sep) if sep else (m.group(),):
            groups.append((pos, pos + len(part)))
            pos += len(part) + 1
        after = text[run_end : run_end + 2]
        tail_ok = not after or not (after[0].isalnum() or after[0] == "_" or (after[0] in ".," and after[1:].isdigit()))
        i = 0
        while i < len(groups):
            start, end = groups[i]
            best: int | None = None
            if 13 <= end - start <= 19:
                if (end != run_end or tail_ok) and _is_card_number(text[start:end]):
                    best = i
            elif end - start == 4:
                total = 4
                for j in range(i + 1, min(len(groups), i + 6)):
                    size = groups[j][1] - groups[j][0]
                    total += size
                    if total > 19:
                        break
                    if (
                        total >= 13
                        and size <= 6
                        and (groups[j][1] != run_end or tail_ok)
                        and _is_card_number(text[start : groups[j][1]].replace(sep, ""))
                    ):
                        best = j  # keep the longest valid window
                    if size not in (4, 6):
                        break
            if best is None:
                i += 1
            else:
                yield start, groups[best][1], "luhn_card"
                i = best + 1


# --------------------------------------------------------------------------------------------------
# IBAN (ISO 13616)
# --------------------------------------------------------------------------------------------------

_IBAN_CANDIDATE: Final = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}")


def _find_ibans(text: str) -> Iterator[_Span]:
    """IBANs, electronic (``GB82WEST12345698765432``) or print format (groups of four).

    Own candidate regex (upper-case country code and check digits); validation by
    ``stdnum.iban.is_valid`` (python-stdnum: ISO 13616 country format and length, ISO 7064
    mod 97-10). A candidate running into trailing groups (``... 00 1234``) is retried shorter, at
    each space from the right.
    """
    if _DIGIT.search(text) is None:
        return
    for m in _IBAN_CANDIDATE.finditer(text):
        start, candidate = m.start(), m.group()
        cuts = [len(candidate)] + [i for i in range(len(candidate) - 1, 0, -1) if candidate[i] == " "]
        for cut in cuts:
            end = start + cut
            if end < len(text) and text[end].isalnum():
                continue  # runs into a word: not a whole IBAN at this cut
            if _stdnum_iban.is_valid(candidate[:cut]):
                yield start, end, "iso13616_iban"
                break


# --------------------------------------------------------------------------------------------------
# IP addresses (RFC 791 / RFC 4291 via ipaddress)
# --------------------------------------------------------------------------------------------------

# Four dotted groups not part of a longer dotted or word sequence: 1.2.3.4.5 and v1.2.3.4 are not.
_IPV4_CANDIDATE: Final = re.compile(r"(?<![\w.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![\w]|\.[0-9])")
# Hex digits, colons and dots, bounded (45 = longest IPv6 text with an IPv4 tail), whole token.
_IPV6_CANDIDATE: Final = re.compile(r"(?<![\w:.])[0-9A-Fa-f:.]{2,45}(?![\w:])")


def _find_ips(text: str) -> Iterator[_Span]:
    """IPv4 and IPv6 addresses, validated by :mod:`ipaddress` (no leading zeros, octets <= 255).

    Own candidate regexes: no maintained library finds addresses in free text. Unspecified and
    loopback addresses are skipped.
    """
    if "." in text and _DIGIT.search(text) is not None:
        for m in _IPV4_CANDIDATE.finditer(text):
            try:
                v4 = ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            if not (v4.is_unspecified or v4.is_loopback):
                yield m.start(), m.end(), "ipv4"
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6_CANDIDATE.finditer(text):
            candidate = m.group().rstrip(".")
            if candidate.count(":") < 2:
                continue
            try:
                v6 = ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            if not (v6.is_unspecified or v6.is_loopback):
                yield m.start(), m.start() + len(candidate), "ipv6"


# --------------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------------

_PEM_BEGIN: Final = re.compile(
    r"-----BEGIN (?P<label>(?:[A-Z0-9]{1,20} ){0,3})PRIVATE KEY(?P<block> BLOCK)?-----"
    r"|---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----"
)
_PEM_END: Final = re.compile(
    r"-----END (?P<label>(?:[A-Z0-9]{1,20} ){0,3})PRIVATE KEY(?P<block> BLOCK)?-----"
    r"|---- END SSH2 ENCRYPTED PRIVATE KEY ----"
)
# Body of a block whose END line is missing: following base64 tokens of 16+ characters (or padded).
_PEM_BODY_TOKEN: Final = re.compile(r"\s*(?:[A-Za-z0-9+/]{16,4096}={0,2}|[A-Za-z0-9+/]{1,15}={1,2})")


def _find_private_keys(text: str) -> Iterator[_Span]:
    """PEM, OpenSSH, PGP and SSH2 private-key blocks, from the BEGIN line to the matching END line.

    BEGIN and END lines are found in one pass each and paired by position (no lazy scan, so many
    unmatched BEGIN lines stay linear). Without an END line the block runs over the base64 tokens
    that follow its BEGIN line.
    """
    if "PRIVATE KEY" not in text:
        return
    ends: dict[str, list[tuple[int, int]]] = {}  # BEGIN line -> spans of its END lines, in order
    for end_match in _PEM_END.finditer(text):
        ends.setdefault(end_match.group().replace("END", "BEGIN", 1), []).append(end_match.span())
    pos = 0
    while (m := _PEM_BEGIN.search(text, pos)) is not None:
        start, end = m.span()
        block_end = None
        spans = ends.get(m.group(), [])
        i = bisect.bisect_left(spans, (end, -1))
        if i < len(spans):
            block_end = spans[i][1]
        if block_end is None:
            block_end = end
            while (body := _PEM_BODY_TOKEN.match(text, block_end)) is not None:
                block_end = body.end()
        yield start, block_end, "private_key_block"
        pos = block_end


@dataclass(frozen=True, slots=True)
class _TokenRule:
    name: str
    pattern: re.Pattern[str]
    needles: tuple[str, ...]
    check: Callable[[str], bool] | None = None


def _looks_random(value: str) -> bool:
    """Mixed letters and digits with high entropy, as generated keys are (not words or slugs)."""
    return _char_classes(value) >= 3 and _shannon_entropy(value) >= 3.5


_TOKEN_RULES: Final[tuple[_TokenRule, ...]] = (
    _TokenRule(
        "aws_access_key_id",
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"),
        ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"),
    ),
    _TokenRule(
        "github_token",
        re.compile(
            r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])"
        ),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    _TokenRule(
        "slack_token",
        re.compile(
            r"(?<![\w-])(?:xox[abposre]-[A-Za-z0-9-]{10,250}|xapp-[0-9]-[A-Za-z0-9-]{10,250})"
            r"|https://hooks\.slack\.com/services/[A-Za-z0-9_/]{20,200}"
        ),
        ("xox", "xapp-", "hooks.slack.com"),
    ),
    _TokenRule(
        "stripe_key",
        re.compile(r"(?<![\w])(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,247}(?![\w])"),
        ("_live_", "_test_"),
    ),
    _TokenRule(
        "sk_api_key",  # OpenAI (sk-..., sk-proj-...), Anthropic (sk-ant-...) and look-alikes
        re.compile(r"(?<![\w-])sk-[A-Za-z0-9_-]{20,300}(?![\w-])"),
        ("sk-",),
        lambda v: _looks_random(v[3:]),
    ),
    _TokenRule(
        "google_api_key",
        re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])"),
        ("AIza",),
    ),
    _TokenRule(
        "jwt",
        re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,8192}\.eyJ[A-Za-z0-9_-]{8,8192}\.[A-Za-z0-9_-]{0,8192}(?![\w-])"),
        ("eyJ",),
    ),
)

_BEARER: Final = re.compile(r"(?<![\w])[Bb]earer\s{1,5}(?P<value>[A-Za-z0-9._~+/-]{16,4096}=*)")
_URL_CREDENTIALS: Final = re.compile(
    r"(?<![\w+.-])[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/@]{1,256}:(?P<value>[^\s:/@]{1,256})@"
)

_PASSWORD_KEYS: Final = r"passwd|password|passphrase|passcode|pwd|pass"
_SECRET_KEYS: Final = (
    r"api[_.-]?key|apikey|api[_.-]?secret|api[_.-]?token|secret[_.-]?key|secret|access[_.-]?key|"
    r"access[_.-]?token|auth[_.-]?token|refresh[_.-]?token|token|client[_.-]?secret|private[_.-]?key|"
    r"credentials?"
)
# key (optionally prefixed: db_password, AWS_SECRET_ACCESS_KEY), optional closing quote, an
# assignment operator, optional opening quote, then the value up to whitespace or a quote.
_ASSIGNMENT: Final = re.compile(
    r"(?<![A-Za-z0-9])(?:[A-Za-z0-9]{1,20}[_.-]){0,3}"
    rf"(?:(?P<pw>{_PASSWORD_KEYS})|{_SECRET_KEYS})(?![A-Za-z0-9])"
    r"[\"']?\s{0,5}(?::=|=>|[:=])\s{0,5}[\"'`]?(?P<value>[^\s\"'`]{1,512})",
    re.IGNORECASE,
)
_PASSWORD_PHRASE: Final = re.compile(
    r"(?<![A-Za-z0-9])(?:password|passphrase|passcode)\s{1,5}(?:is|was)\s{1,5}[\"'`]?(?P<value>[^\s\"'`]{1,512})",
    re.IGNORECASE,
)
_PLACEHOLDER_WORDS: Final = (
    "your",
    "example",
    "changeme",
    "redacted",
    "placeholder",
    "xxxx",
    "****",
    "...",
    "…",
)


def _is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return value[0] in "$<{%[(*" or any(word in lowered for word in _PLACEHOLDER_WORDS)


def _trim_value(value: str) -> str:
    return value.rstrip(".,;:!?)]}>")


def _secret_value_ok(value: str, password_like: bool) -> bool:
    """Whether an assigned value looks like a real secret rather than prose or a placeholder.

    Passwords: 6+ characters with 2+ character classes, or 16+ with entropy >= 3 bits/char.
    Keys and tokens: 12+ characters, 2+ classes, entropy >= 3 bits/char.
    """
    if not value or _is_placeholder(value):
        return False
    classes = _char_classes(value)
    if password_like:
        return (len(value) >= 6 and classes >= 2) or (len(value) >= 16 and _shannon_entropy(value) >= 3.0)
    return len(value) >= 12 and classes >= 2 and _shannon_entropy(value) >= 3.0


def _find_token_secrets(text: str) -> Iterator[_Span]:
    """Vendor tokens with a published format (AWS, GitHub, Slack, Stripe, sk- keys, Google, JWT)."""
    for rule in _TOKEN_RULES:
        if not any(needle in text for needle in rule.needles):
            continue
        for m in rule.pattern.finditer(text):
            if rule.check is None or rule.check(m.group()):
                yield m.start(), m.end(), rule.name


def _find_assigned_secrets(text: str) -> Iterator[_Span]:
    """Values assigned to secret-like names, Bearer tokens, passwords in URLs and in prose.

    Only the value is reported (``password=[SECRET]``), and only when it looks like a secret (see
    :func:`_secret_value_ok`): "password: reset it tomorrow" and "token: none" are not secrets.
    """
    if ":" in text or "=" in text:
        for m in _ASSIGNMENT.finditer(text):
            value = _trim_value(m.group("value"))
            if _secret_value_ok(value, password_like=m.group("pw") is not None):
                yield m.start("value"), m.start("value") + len(value), "secret_assignment"
    if "earer" in text:
        for m in _BEARER.finditer(text):
            value = m.group("value")
            if _secret_value_ok(value, password_like=False):
                yield m.start("value"), m.end("value"), "bearer_token"
    if "://" in text:
        for m in _URL_CREDENTIALS.finditer(text):
            if not _is_placeholder(m.group("value")):
                yield m.start("value"), m.end("value"), "url_password"
    lowered = text.lower()
    if "pass" in lowered:
        for m in _PASSWORD_PHRASE.finditer(text):
            value = _trim_value(m.group("value"))
            if len(value) >= 8 and _char_classes(value) >= 3 and not _is_placeholder(value):
                yield m.start("value"), m.start("value") + len(value), "password_phrase"


def _find_secrets(text: str) -> Iterator[_Span]:
    yield from _find_private_keys(text)
    yield from _find_token_secrets(text)
    yield from _find_assigned_secrets(text)


# --------------------------------------------------------------------------------------------------
# The redactor
# --------------------------------------------------------------------------------------------------


def _merge(candidates: list[PIIFinding]) -> list[PIIFinding]:
    """Merge overlapping findings into their union; the most specific, then longest, names it."""
    candidates.sort(key=lambda f: (f.start, f.end))
    merged: list[PIIFinding] = []
    cluster: list[PIIFinding] = []
    cluster_end = -1

    def close() -> None:
        best = min(cluster, key=lambda f: (_PRIORITY[f.kind], -(f.end - f.start), f.start))
        merged.append(PIIFinding(best.kind, cluster[0].start, cluster_end, best.detector))

    for finding in candidates:
        if cluster and finding.start >= cluster_end:
            close()
            cluster = []
        cluster_end = max(cluster_end, finding.end) if cluster else finding.end
        cluster.append(finding)
    if cluster:
        close()
    return merged


def _describe(findings: Sequence[PIIFinding]) -> str:
    shown = ", ".join(f"{f.kind.value} at {f.start}-{f.end}" for f in findings[:20])
    more = f" and {len(findings) - 20} more" if len(findings) > 20 else ""
    return shown + more


class Redactor:
    """Finds personal data and secrets in text and masks or refuses them per :class:`RedactionPolicy`.

    Stateless after construction and thread-safe: it holds only compiled patterns and settings.
    Build one and share it (see :func:`default_redactor`).

    Args:
        phone_regions: ISO 3166-1 alpha-2 regions whose national-format phone numbers are found,
            in addition to international ``+CC`` numbers; default :data:`DEFAULT_PHONE_REGIONS`.
            An empty tuple finds only ``+CC`` numbers.

    Raises:
        ConfigError: If a region is unknown to libphonenumber.

    """

    def __init__(self, phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        regions = tuple(r.upper() for r in phone_regions)
        supported = phonenumbers.SUPPORTED_REGIONS
        unknown = [r for r in regions if r not in supported]
        if unknown:
            raise ConfigError(f"unknown phone region(s) {unknown}; use ISO 3166-1 alpha-2 codes such as 'US', 'GB'")
        self.phone_regions: tuple[str, ...] = regions
        self._detectors: dict[PIIKind, Callable[[str], Iterable[_Span]]] = {
            PIIKind.SECRET: _find_secrets,
            PIIKind.PAYMENT_CARD: _find_cards,
            PIIKind.IBAN: _find_ibans,
            PIIKind.EMAIL: _find_emails,
            PIIKind.IP_ADDRESS: _find_ips,
            PIIKind.PHONE: _phone_finder(regions),
        }
        # Load the lazily read metadata now, not under the first write's lock or in two threads.
        _stdnum_iban.is_valid("GB82WEST12345698765432")
        for region in regions:
            phonenumbers.example_number(region)

    def detect(self, text: str, kinds: Iterable[PIIKind] | None = None) -> list[PIIFinding]:
        """Find personal data and secrets in ``text``.

        Args:
            text: Any string; offsets are code-point indices into it.
            kinds: The kinds to look for; None (default) for all.

        Returns:
            The findings sorted by ``start``, non-overlapping: overlapping candidates are merged
            into their union, named after the most specific kind (secret > payment_card > iban >
            email > ip_address > phone), then the longest.

        """
        wanted = frozenset(PIIKind) if kinds is None else frozenset(PIIKind(k) for k in kinds)
        if not text or not wanted:
            return []
        candidates = [
            PIIFinding(kind, start, end, detector)
            for kind, find in self._detectors.items()
            if kind in wanted
            for start, end, detector in find(text)
            if end > start
        ]
        return _merge(candidates) if candidates else []

    def redact(self, text: str, policy: RedactionPolicy) -> RedactionResult:
        """Apply ``policy`` to one text.

        Args:
            text: The text about to be written.
            policy: The cube's policy.

        Returns:
            ``off``: the text unchanged, no findings (no detection work is done). ``mask``: the text
            with every finding of the policy's kinds replaced by its mask, everything else
            byte-identical. ``refuse`` with nothing found: the text unchanged.

        Raises:
            SensitiveDataError: ``refuse`` and something of the policy's kinds was found; the
                message names kinds and offsets, never values.

        """
        return self._apply(text, policy)

    def redact_many(self, texts: Sequence[str], policy: RedactionPolicy) -> list[RedactionResult]:
        """Apply ``policy`` to a batch, all or nothing.

        Args:
            texts: The texts of one write.
            policy: The cube's policy.

        Returns:
            One :class:`RedactionResult` per text, in order.

        Raises:
            SensitiveDataError: ``refuse`` and any text holds a finding: the whole batch is
                refused; ``index`` (and the message) give the first such text, the message also
                counts the others.

        """
        if policy.mode is RedactionMode.OFF:
            return [RedactionResult(t, (), False) for t in texts]
        found = [tuple(self.detect(t, policy.kinds)) for t in texts]
        if policy.mode is RedactionMode.REFUSE:
            bad = [i for i, f in enumerate(found) if f]
            if bad:
                others = f"; {len(bad) - 1} more text(s) of the batch also hold some" if len(bad) > 1 else ""
                raise self._refusal(found[bad[0]], bad[0], others)
            return [RedactionResult(t, (), False) for t in texts]
        return [self._mask(t, f, policy) for t, f in zip(texts, found, strict=True)]

    def _apply(self, text: str, policy: RedactionPolicy) -> RedactionResult:
        if policy.mode is RedactionMode.OFF:
            return RedactionResult(text, (), False)
        findings = tuple(self.detect(text, policy.kinds))
        if policy.mode is RedactionMode.REFUSE:
            if findings:
                raise self._refusal(findings, None, "")
            return RedactionResult(text, (), False)
        return self._mask(text, findings, policy)

    @staticmethod
    def _mask(text: str, findings: tuple[PIIFinding, ...], policy: RedactionPolicy) -> RedactionResult:
        if not findings:
            return RedactionResult(text, (), False)
        parts: list[str] = []
        pos = 0
        for f in findings:
            parts.append(text[pos : f.start])
            parts.append(policy.render_mask(f.kind))
            pos = f.end
        parts.append(text[pos:])
        masked = "".join(parts)
        return RedactionResult(masked, findings, masked != text)

    @staticmethod
    def _refusal(findings: Sequence[PIIFinding], index: int | None, suffix: str) -> SensitiveDataError:
        kinds = tuple(sorted({f.kind.value for f in findings}))
        where = "" if index is None else f"text {index} of the batch: "
        return SensitiveDataError(
            f"write refused by the cube's redaction policy ({', '.join(kinds)} found); "
            f"{where}{_describe(findings)}{suffix}",
            kinds=kinds,
            spans=tuple((f.kind.value, f.start, f.end) for f in findings),
            index=index,
        )


@lru_cache(maxsize=1)
def default_redactor() -> Redactor:
    """Return the shared :class:`Redactor` with default settings, built on first use."""
    return Redactor()
