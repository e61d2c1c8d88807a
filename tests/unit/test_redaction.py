"""The PII redaction engine: true and false positives per detector, masking, refusal, overlaps,
adversarial input, and the false-positive rate on LoCoMo conversation turns.

Token-shaped test values are assembled at run time (``"gh" + "p_" + ...``) so that no secret
scanner mistakes this file for a leak; none of them is a real credential.
"""

from __future__ import annotations

import itertools
import json
import pickle
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from memos_agents.errors import ConfigError, InvalidInputError, SensitiveDataError
from memos_agents.infra import redaction
from memos_agents.infra.redaction import (
    PIIFinding,
    PIIKind,
    RedactionMode,
    RedactionPolicy,
    Redactor,
    default_redactor,
)

pytestmark = pytest.mark.unit

LOCOMO = Path("/work/shared/data/locomo/locomo_dev7.json")

R = default_redactor()
MASK = RedactionPolicy(mode=RedactionMode.MASK)
REFUSE = RedactionPolicy(mode=RedactionMode.REFUSE)


def found(text: str, kind: PIIKind) -> list[str]:
    """The values one detector kind finds in ``text`` (run alone, so no merging with others)."""
    return [text[f.start : f.end] for f in R.detect(text, [kind])]


# --------------------------------------------------------------------------------------------------
# True and false positives, per detector: (text, the value that must be found) / text with none.
# --------------------------------------------------------------------------------------------------

EMAIL_TRUE = [
    ("write to alice@example.com today", "alice@example.com"),
    ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
    ("Mail me: ALICE@EXAMPLE.COM.", "ALICE@EXAMPLE.COM"),
    ("(o'brien@example.ie)", "o'brien@example.ie"),
    ("user_name@example-mail.org, thanks", "user_name@example-mail.org"),
    ("schreib an jürgen.müller@beispiel.de bitte", "jürgen.müller@beispiel.de"),
    ("<bob@mail.example.museum>", "bob@mail.example.museum"),
    ("info@xn--80ak6aa92e.xn--p1ai", "info@xn--80ak6aa92e.xn--p1ai"),
    ("x@y.io", "x@y.io"),
]
EMAIL_FALSE = [
    "@caroline that was fun!",
    "see you @ 5pm at the park",
    "use icon@2x.png on retina screens",
    "pin lodash@4.17.21 and python@3.11",
    "ssh to user@localhost",
    "ratio 3@$4.99 each",
    "email@ is not complete",
    "send it to @example.com",
    "name@domain.c has a one-letter TLD",
    "bad@-example.com and bad@example-.com",
    "two dots a..b@example.com",
    "foo@bar..com",
    "I'm @home.now",
    "price: 12@3.50",
]

PHONE_TRUE = [
    ("call me at (415) 555-2671 tonight", "(415) 555-2671"),
    ("415-555-2671", "415-555-2671"),
    ("US: +1 415 555 2671.", "+1 415 555 2671"),
    ("London office +44 20 7946 0958", "+44 20 7946 0958"),
    ("Berlin +49 30 901820", "+49 30 901820"),
    ("mobile +33 6 12 34 56 78", "+33 6 12 34 56 78"),
    ("ring +91 98765 43210 after 6", "+91 98765 43210"),
    ("+61 2 9374 4000 (Sydney)", "+61 2 9374 4000"),
]
PHONE_FALSE = [
    "we met on 2023-05-07",
    "on 07/05/2023 we went hiking",
    "at 1:56 pm on 8 May, 2023",
    "it cost $1,234,567.89 in total",
    "order #1234567 shipped",
    "Windows version 10.0.19041.1",
    "ISBN 978-0-306-40615-7",
    "id 123e4567-e89b-12d3-a456-426614174000",
    "in the 1990s and 2000s",
    "room 1201 on floor 12",
    "tracking 1Z999AA10123456784",
    "the year 2023 had 365 days",
    "final score 21-14",
    "timestamp 1699999999",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b",
    "from 9 to 5, 5 days a week",
    "call 911 now",
]

CARD_TRUE = [
    ("card 4111 1111 1111 1111 exp 12/25", "4111 1111 1111 1111"),
    ("4111111111111111", "4111111111111111"),
    ("visa 4012-8888-8888-1881.", "4012-8888-8888-1881"),
    ("mc 5555 5555 5555 4444", "5555 5555 5555 4444"),
    ("mc 2-series 2223 0031 2200 3222", "2223 0031 2200 3222"),
    ("amex 3782 822463 10005", "3782 822463 10005"),
    ("378282246310005", "378282246310005"),
    ("discover 6011 1111 1111 1117", "6011 1111 1111 1117"),
    ("jcb 3530111333300000", "3530111333300000"),
    ("diners 3056 930902 5904", "3056 930902 5904"),
    ("right after another number: ref 1234 4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("4111 1111 1111 1111abc is not one, but 4111 1111 1111 1111.", "4111 1111 1111 1111"),
    ("unionpay 6200000000000005", "6200000000000005"),
]
CARD_FALSE = [
    "4111 1111 1111 1112",  # Luhn fails
    "4111111111111121",  # Luhn fails
    "1234567812345670",  # Luhn passes, no issuer starts with 1
    "0000 0000 0000 0000",
    "4111 1111-1111 1111",  # mixed separators
    "ISBN 978-0-306-40615-7",
    "9780306406157",
    "epoch ms 1700000000000",
    "1234 5678 9012 3456 7890",  # no window is Luhn-valid with an issuer prefix
    "4111 1111 1111 1111abc",  # runs into a word
    "41111111111111111111",
    "v4111111111111111",
    "total 4111111111111111.50",
    "id 123e4567-e89b-12d3-a456-426614174000",
    "order 2023-0507-1356-0001",
    "phone (415) 555-2671",
]

IBAN_TRUE = [
    ("IBAN DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
    ("GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 32"),
    ("GB82WEST12345698765432", "GB82WEST12345698765432"),
    ("FR14 2004 1010 0505 0001 3M02 606", "FR14 2004 1010 0505 0001 3M02 606"),
    ("pay NL91ABNA0417164300 now", "NL91ABNA0417164300"),
    ("CH93 0076 2011 6238 5295 7", "CH93 0076 2011 6238 5295 7"),
    ("IBAN: ES9121000418450200051332.", "ES9121000418450200051332"),
    ("DE89 3704 0044 0532 0130 00 1234", "DE89 3704 0044 0532 0130 00"),
]
IBAN_FALSE = [
    "DE89 3704 0044 0532 0130 01",  # check digits fail
    "GB82WEST12345698765431",
    "XX89370400440532013000",  # no such country
    "AB12 CDEF GHIJ KLMN OPQR",
    "ISO 13616 and ISO 7064",
    "SKU AB12345678901234",
    "DE8937040044053201300",  # one digit short
    "DE89370400440532013000X",  # runs into a word
    "GB82WEST12345698765432abc",
]

IP_TRUE = [
    ("dns 8.8.8.8", "8.8.8.8"),
    ("server 192.168.1.20 is down", "192.168.1.20"),
    ("10.0.0.1:8080", "10.0.0.1"),
    ("connect to 203.0.113.7.", "203.0.113.7"),
    ("v6 2001:db8::8a2e:370:7334 ok", "2001:db8::8a2e:370:7334"),
    ("fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"),
    ("mapped ::ffff:192.0.2.128", "::ffff:192.0.2.128"),
    ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
]
IP_FALSE = [
    "version 1.2.3.4.5",
    "999.1.1.1",
    "v1.2.3.4",
    "build 10.0.19041.1",
    "01.02.03.04",
    "on 12.05.2023",
    "pi is 3.14159",
    "localhost 127.0.0.1",
    "bind 0.0.0.0",
    "loopback ::1",
    "at 12:30:45",
    "std::vector<int>",
    "mac 00:1A:2B:3C:4D:5E",
    "John 3:16 and 16:9",
    "1.2.3",
    "256.256.256.256",
]

GH = "gh" + "p_"
SECRET_TRUE = [
    ("key AKIAIOSFODNN7EXAMPLE in the config", "AKIAIOSFODNN7EXAMPLE"),
    (f"token {GH}aB3dE6gH9jK2mN5pQ8rS1tU4vW7xY0zA1bC2", f"{GH}aB3dE6gH9jK2mN5pQ8rS1tU4vW7xY0zA1bC2"),
    (
        "github_" + "pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX",
        "github_" + "pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX",
    ),
    ("slack " + "xo" + "xb-1234567890-0987654321-AbCdEfGhIjKl", "xo" + "xb-1234567890-0987654321-AbCdEfGhIjKl"),
    (
        "hook https://hooks.slack.com/services/" + "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        "https://hooks.slack.com/services/" + "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    ),
    ("stripe " + "sk_" + "live_4eC39HqLyjWDarjtT1zdp7dc", "sk_" + "live_4eC39HqLyjWDarjtT1zdp7dc"),
    (
        "OPENAI_KEY " + "sk-" + "proj-Ab3De6Gh9Jk2Mn5Pq8Rs1Tu4Vw7Xy0Za",
        "sk-" + "proj-Ab3De6Gh9Jk2Mn5Pq8Rs1Tu4Vw7Xy0Za",
    ),
    (
        "anthropic " + "sk-" + "ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg",
        "sk-" + "ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg",
    ),
    ("maps " + "AI" + "zaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "AI" + "zaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U ok",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("api_key=8f14e45fceea167a5a36dedd4bea2543", "8f14e45fceea167a5a36dedd4bea2543"),
    ('"client_secret": "q8Xz-31kLm9PwR2t"', "q8Xz-31kLm9PwR2t"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzKEY"),
    ("password: hunter22", "hunter22"),
    ("DB_PASSWORD='Tr0ub4dor&3'", "Tr0ub4dor&3"),
    ("my wifi password is Bl0ssom#42.", "Bl0ssom#42"),
    ("Authorization: Bearer abcdefABCDEF0123456789xyz", "abcdefABCDEF0123456789xyz"),
    ("postgres://admin:s3cr3tPass@10.1.2.3:5432/app", "s3cr3tPass"),
]
SECRET_FALSE = [
    "I forgot my password again",
    "password: reset it tomorrow",
    "the password is incorrect",
    "the password is something only we know",
    "token: none",
    "api_key=YOUR_API_KEY",
    "api_key=${API_KEY}",
    "password=<redacted>",
    "password: ********",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "id 123e4567-e89b-12d3-a456-426614174000",
    "token_id = 1234567890123456",
    "password_hash = 5f4dcc3b5aa765d61d8327deb882cf99",
    "sk-abcdefghijklmnopqrstuvwxyz is not random",
    "the desk-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
    "a PEM file starts with BEGIN PRIVATE KEY",
    "Bearer of bad news",
    "secret: I love you",
    "AKIA is a prefix",
    "eyJ alone, or eyJabc.def",
    "https://example.com/path:with:colons@ok",
]

TABLES = {
    PIIKind.EMAIL: (EMAIL_TRUE, EMAIL_FALSE),
    PIIKind.PHONE: (PHONE_TRUE, PHONE_FALSE),
    PIIKind.PAYMENT_CARD: (CARD_TRUE, CARD_FALSE),
    PIIKind.IBAN: (IBAN_TRUE, IBAN_FALSE),
    PIIKind.IP_ADDRESS: (IP_TRUE, IP_FALSE),
    PIIKind.SECRET: (SECRET_TRUE, SECRET_FALSE),
}
TRUE_CASES = [
    pytest.param(k, t, v, id=f"{k.value}-{i}") for k, (tp, _) in TABLES.items() for i, (t, v) in enumerate(tp)
]
FALSE_CASES = [pytest.param(k, t, id=f"{k.value}-{i}") for k, (_, fp) in TABLES.items() for i, t in enumerate(fp)]


@pytest.mark.parametrize(("kind", "text", "value"), TRUE_CASES)
def test_true_positive(kind: PIIKind, text: str, value: str) -> None:
    assert found(text, kind) == [value]


@pytest.mark.parametrize(("kind", "text"), FALSE_CASES)
def test_false_positive(kind: PIIKind, text: str) -> None:
    assert found(text, kind) == []


@pytest.mark.parametrize(("kind", "text"), FALSE_CASES)
def test_false_positives_stay_clean_with_all_detectors(kind: PIIKind, text: str) -> None:
    """A detector's false-positive text is not claimed by another detector either (except those
    that name a different kind on purpose: a phone number in the card table, an IP in a URL)."""
    allowed = {"phone (415) 555-2671": PIIKind.PHONE, "https://example.com/path:with:colons@ok": None}
    kinds = {f.kind for f in R.detect(text)}
    expected = {allowed[text]} - {None} if text in allowed else set()
    assert kinds == expected


def test_every_true_positive_text_is_found_with_all_detectors_on() -> None:
    for kind, (tp, _) in TABLES.items():
        for text, value in tp:
            spans = [(f.kind, text[f.start : f.end]) for f in R.detect(text)]
            assert any(k == kind and value in v for k, v in spans), (kind, text, spans)


# --------------------------------------------------------------------------------------------------
# Overlaps, offsets, masking
# --------------------------------------------------------------------------------------------------


def test_overlapping_findings_merge_to_union_named_by_most_specific_kind() -> None:
    text = "db postgres://admin:s3cr3tPass@db.example.com/app"
    (f,) = R.detect(text)
    # the URL password (secret) and the e-mail look-alike "s3cr3tPass@db.example.com" overlap:
    # one finding covering both, named secret (more specific than email)
    assert (f.kind, f.detector) == (PIIKind.SECRET, "url_password")
    assert text[f.start : f.end] == "s3cr3tPass@db.example.com"


def test_merge_rule_priority_then_length_then_touching_spans_stay_apart() -> None:
    merge = redaction._merge
    out = merge(
        [
            PIIFinding(PIIKind.PHONE, 0, 20, "p"),
            PIIFinding(PIIKind.PAYMENT_CARD, 5, 12, "c"),
            PIIFinding(PIIKind.EMAIL, 20, 30, "e"),  # touches, does not overlap
            PIIFinding(PIIKind.IP_ADDRESS, 40, 45, "i"),
            PIIFinding(PIIKind.IP_ADDRESS, 42, 50, "j"),
        ]
    )
    assert out == [
        PIIFinding(PIIKind.PAYMENT_CARD, 0, 20, "c"),
        PIIFinding(PIIKind.EMAIL, 20, 30, "e"),
        PIIFinding(PIIKind.IP_ADDRESS, 40, 50, "j"),
    ]


def test_findings_are_sorted_and_disjoint() -> None:
    text = "a@example.com 8.8.8.8 +44 20 7946 0958, 4111 1111 1111 1111 GB82WEST12345698765432 AKIAIOSFODNN7EXAMPLE"
    findings = R.detect(text)
    assert [f.kind for f in findings] == [
        PIIKind.EMAIL,
        PIIKind.IP_ADDRESS,
        PIIKind.PHONE,
        PIIKind.PAYMENT_CARD,
        PIIKind.IBAN,
        PIIKind.SECRET,
    ]
    assert all(a.end <= b.start for a, b in itertools.pairwise(findings))


def test_offsets_are_code_points_and_masking_keeps_the_rest_identical() -> None:
    text = "Grüße 😀 — schreib an jürgen@beispiel.de oder ruf +49 30 901820 an. 東京 ✓\n"
    (email, phone) = R.detect(text)
    assert text[email.start : email.end] == "jürgen@beispiel.de"
    assert text[phone.start : phone.end] == "+49 30 901820"
    result = R.redact(text, MASK)
    assert result.text == "Grüße 😀 — schreib an [EMAIL] oder ruf [PHONE] an. 東京 ✓\n"
    assert result.changed and result.findings == (email, phone)
    rest = (text[: email.start], text[email.end : phone.start], text[phone.end :])
    assert result.text.encode() == "[EMAIL]".join(rest[:2]).encode() + b"[PHONE]" + rest[2].encode()


def test_mask_template_custom_constant_and_kinds_subset() -> None:
    text = "mail a@example.com or call +44 20 7946 0958"
    custom = RedactionPolicy(mode=RedactionMode.MASK, mask="<redacted:{kind}>")
    assert R.redact(text, custom).text == "mail <redacted:EMAIL> or call <redacted:PHONE>"
    constant = RedactionPolicy(mode="mask", mask="***")
    assert R.redact(text, constant).text == "mail *** or call ***"
    only_email = RedactionPolicy(mode=RedactionMode.MASK, kinds=frozenset({PIIKind.EMAIL}))
    result = R.redact(text, only_email)
    assert result.text == "mail [EMAIL] or call +44 20 7946 0958"
    assert [f.kind for f in result.findings] == [PIIKind.EMAIL]
    refuse_cards = RedactionPolicy(mode=RedactionMode.REFUSE, kinds=frozenset({"payment_card"}))
    assert R.redact(text, refuse_cards).text == text


def test_masked_text_is_clean_and_masking_is_idempotent() -> None:
    texts = [t for tp, _ in TABLES.values() for t, _ in tp]
    for text in texts:
        once = R.redact(text, MASK).text
        assert R.detect(once) == [], (text, once)
        assert R.redact(once, MASK) == redaction.RedactionResult(once, (), False)


def test_multiline_private_key_block_is_masked_whole() -> None:
    key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
        "QyNTUxOQAAACDw1y3Zw1y3Zw1y3Zw1y3Zw1y3Zw1y3Zw1y3Zw1y3Zw==\n"
        "-----END OPENSSH PRIVATE KEY-----"
    )
    text = f"here is my key:\n{key}\nplease keep it safe"
    assert R.redact(text, MASK).text == "here is my key:\n[SECRET]\nplease keep it safe"
    pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGZ\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----"
    assert found(f"x {pgp} y", PIIKind.SECRET) == [pgp]
    # a truncated block (no END line): the BEGIN line and the base64 lines after it
    truncated = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    assert R.redact(truncated + "and then I said hi", MASK).text == "[SECRET]\nand then I said hi"


def test_policy_validation() -> None:
    assert RedactionPolicy().mode is RedactionMode.OFF
    assert RedactionPolicy().kinds == frozenset(PIIKind)
    assert RedactionPolicy().render_mask(PIIKind.PAYMENT_CARD) == "[PAYMENT_CARD]"
    for bad in ({"mask": "{other}"}, {"mask": "{kind!r}"}, {"mask": "{kind:>10}"}, {"mask": "{"}, {"mask": "x" * 65}):
        with pytest.raises(ValidationError):
            RedactionPolicy(mode=RedactionMode.MASK, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        RedactionPolicy(mode=RedactionMode.REFUSE, kinds=frozenset())
    with pytest.raises(ValidationError):
        RedactionPolicy(mode="redact")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        RedactionPolicy(kinds=frozenset({"ssn"}))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        RedactionPolicy(unknown=1)  # type: ignore[call-arg]
    policy = RedactionPolicy(mode="refuse", kinds=["email", "phone"])  # type: ignore[arg-type]
    assert policy.kinds == frozenset({PIIKind.EMAIL, PIIKind.PHONE})
    with pytest.raises(ValidationError):
        policy.mode = RedactionMode.OFF  # type: ignore[misc]
    assert RedactionPolicy.model_validate_json(policy.model_dump_json()) == policy
    assert RedactionPolicy(kinds=frozenset()).mode is RedactionMode.OFF


# --------------------------------------------------------------------------------------------------
# Modes: off does no work, refuse raises without values, batches are all or nothing
# --------------------------------------------------------------------------------------------------


def test_off_returns_the_text_unchanged_without_detecting(monkeypatch: pytest.MonkeyPatch) -> None:
    redactor = Redactor()

    def boom(*_: object, **__: object) -> list[PIIFinding]:
        raise AssertionError("detect must not run with mode off")

    monkeypatch.setattr(redactor, "detect", boom)
    text = "a@example.com"
    assert redactor.redact(text, RedactionPolicy()) == redaction.RedactionResult(text, (), False)
    assert redactor.redact_many([text, text], RedactionPolicy()) == [redaction.RedactionResult(text, (), False)] * 2


def test_refuse_raises_naming_kinds_and_offsets_never_values() -> None:
    text = "reach me at alice@example.com or +44 20 7946 0958, card 4111 1111 1111 1111"
    with pytest.raises(SensitiveDataError) as info:
        R.redact(text, REFUSE)
    err = info.value
    assert isinstance(err, InvalidInputError) and isinstance(err, ValueError)
    assert err.kinds == ("email", "payment_card", "phone")
    assert err.spans == (("email", 12, 29), ("phone", 33, 49), ("payment_card", 56, 75))
    assert err.index is None
    message = str(err)
    assert "email at 12-29" in message and "payment_card at 56-75" in message
    for value in ("alice", "example.com", "7946", "4111", "1111"):
        assert value not in message
    assert R.redact("nothing to see here", REFUSE) == redaction.RedactionResult("nothing to see here", (), False)
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.kinds, again.spans) == (message, err.kinds, err.spans)


def test_refused_secret_message_does_not_leak_it() -> None:
    text = "password: Tr0ub4dor&3"
    with pytest.raises(SensitiveDataError) as info:
        R.redact(text, REFUSE)
    assert "Tr0ub4dor" not in str(info.value) and "Tr0ub4dor" not in repr(info.value)
    assert info.value.kinds == ("secret",)


def test_redact_many_refuse_is_all_or_nothing_and_names_the_text() -> None:
    texts = ["hello there", "we met at the park", "ip 8.8.8.8", "mail bob@example.org"]
    with pytest.raises(SensitiveDataError) as info:
        R.redact_many(texts, REFUSE)
    assert info.value.index == 2
    assert "text 2 of the batch" in str(info.value) and "1 more text" in str(info.value)
    assert "8.8.8.8" not in str(info.value)
    clean = R.redact_many(texts[:2], REFUSE)
    assert [r.text for r in clean] == texts[:2] and not any(r.changed for r in clean)


def test_redact_many_mask_matches_redact() -> None:
    texts = ["hello", "ip 8.8.8.8", "mail bob@example.org and 4111111111111111", ""]
    assert R.redact_many(texts, MASK) == [R.redact(t, MASK) for t in texts]
    masked = ["hello", "ip [IP_ADDRESS]", "mail [EMAIL] and [PAYMENT_CARD]", ""]
    assert [r.text for r in R.redact_many(texts, MASK)] == masked


def test_redactor_settings_and_default_instance() -> None:
    assert default_redactor() is default_redactor()
    assert default_redactor().phone_regions == redaction.DEFAULT_PHONE_REGIONS == ("US",)
    with pytest.raises(ConfigError):
        Redactor(phone_regions=("ZZ",))
    international_only = Redactor(phone_regions=())
    text = "call (415) 555-2671 or +44 20 7946 0958"
    assert [text[f.start : f.end] for f in international_only.detect(text)] == ["+44 20 7946 0958"]
    gb = Redactor(phone_regions=("gb",))
    assert gb.phone_regions == ("GB",)
    assert [f.kind for f in gb.detect("ring 020 7946 0958 please")] == [PIIKind.PHONE]
    assert R.detect("ring 020 7946 0958 please") == []  # a GB national number, not a US one
    assert R.detect("") == [] and R.detect("a@example.com", kinds=[]) == []


def test_thread_safety_same_results_under_concurrency() -> None:
    texts = [t for tp, _ in TABLES.values() for t, _ in tp] * 5
    expected = [R.detect(t) for t in texts]
    results: dict[int, list[list[PIIFinding]]] = {}

    def work(n: int) -> None:
        results[n] = [R.detect(t) for t in texts]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results.values())


# --------------------------------------------------------------------------------------------------
# Adversarial input: linear time on pathological texts of 200 KB
# --------------------------------------------------------------------------------------------------

N = 200_000
PATHOLOGICAL = {
    "local-part run then @": "a" * N + "@",
    "at signs": "@" * N,
    "a@ repeated": "a@" * (N // 2),
    "dotted local part": "a." * (N // 2) + "@x",
    "digits": "1" * N,
    "digits and spaces": "1 " * (N // 2),
    "digit groups": "1234-" * (N // 5),
    "dotted digits": "1." * (N // 2),
    "hex and colons": "a:" * (N // 2),
    "colons": ":" * N,
    "begin lines without end": "-----BEGIN RSA PRIVATE KEY-----\n" * (N // 32),
    "end lines": "-----END RSA PRIVATE KEY-----" * (N // 30),
    "begin then base64 forever": "-----BEGIN PRIVATE KEY-----" + "A" * N,
    "assignments": "password=" * (N // 9),
    "key prefixes": "x-" * (N // 2) + "token:",
    "jwt prefix": "eyJ" + "a" * N,
    "upper case": "A" * N,
    "sk- prefixes": "sk-" * (N // 3),
    "sk- long": "sk-" + "a1B" * (N // 3),
    "url schemes": "a://b:" * (N // 6),
    "iban prefixes": "DE89 " * (N // 5),
    "plus prefixes": "+1 " * (N // 3),
    "phone fragments": "(415) 555-" * (N // 10),
    "unicode": "ü@ß." * (N // 4),
    "password phrases": "password is " * (N // 12),
}


@pytest.mark.parametrize("text", list(PATHOLOGICAL.values()), ids=list(PATHOLOGICAL))
def test_pathological_input_finishes(text: str) -> None:
    """Structural safety is in the patterns (bounded quantifiers, boundary look-behinds); each of these
    takes under a second here. The 10 s guard only catches a catastrophic regression."""
    started = time.perf_counter()
    findings = R.detect(text)
    assert time.perf_counter() - started < 10.0
    assert all(0 <= f.start < f.end <= len(text) for f in findings)


def test_pii_after_long_junk_is_still_found() -> None:
    text = "1 " * 50_000 + "call +44 20 7946 0958 or mail a@example.com"
    kinds = [f.kind for f in R.detect(text)]
    assert kinds == [PIIKind.PHONE, PIIKind.EMAIL]


# --------------------------------------------------------------------------------------------------
# LoCoMo conversation: false-positive rate on real chat turns
# --------------------------------------------------------------------------------------------------


def locomo_turns() -> list[str]:
    if not LOCOMO.is_file():
        pytest.skip(f"LoCoMo conversation file {LOCOMO} is missing: cannot measure the false-positive rate on it")
    turns: list[str] = []
    for sample in json.loads(LOCOMO.read_text(encoding="utf-8")):
        for key, session in sample["conversation"].items():
            if key.startswith("session_") and isinstance(session, list):
                for turn in session:
                    turns.append(turn["text"])
                    if turn.get("blip_caption"):
                        turns.append(turn["blip_caption"])
    return turns


def test_locomo_false_positive_rate_is_low(capsys: pytest.CaptureFixture[str]) -> None:
    turns = locomo_turns()
    assert len(turns) > 1000
    by_detector: Counter[str] = Counter()
    flagged = 0
    for text in turns:
        findings = R.detect(text)
        flagged += bool(findings)
        by_detector.update(f"{f.kind.value}/{f.detector}" for f in findings)
    with capsys.disabled():
        print(f"\nLoCoMo: {flagged} of {len(turns)} turns flagged; by detector: {dict(by_detector) or 'none'}")
    # these are chit-chat turns and image captions with no contact data or secrets in them
    assert flagged / len(turns) <= 0.002, by_detector


def test_locomo_turns_with_injected_pii_are_caught() -> None:
    turns = locomo_turns()[:200]
    injected = [f"{t} My email is person{i}@example.com." for i, t in enumerate(turns)]
    results = R.redact_many(injected, MASK)
    assert all(r.text == f"{t} My email is [EMAIL]." for r, t in zip(results, turns, strict=True))
