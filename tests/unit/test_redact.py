"""Unit tests of the redactor: every form a secret takes on the wire is masked, in text and in bytes."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from bridgehead.core.redact import MASK, Redactor

SECRET = 'Pa ss/w+rd"é-9f2c&x=1?>'  # noqa: S105 - a fake secret whose forms all differ

FORMS = {
    "plain": SECRET,
    "base64": base64.b64encode(SECRET.encode()).decode(),
    "base64url": base64.urlsafe_b64encode(SECRET.encode()).decode(),
    "quote": quote(SECRET, safe=""),
    "quote-default": quote(SECRET),
    "quote_plus": quote_plus(SECRET),
    "json": json.dumps(SECRET)[1:-1],
    "json-utf8": json.dumps(SECRET, ensure_ascii=False)[1:-1],
    "hex": SECRET.encode().hex(),
    "HEX": SECRET.encode().hex().upper(),
}


def test_the_forms_differ_from_each_other() -> None:
    """Premise: the test secret's forms are all distinct, so each parametrized case tests something."""
    assert len(FORMS) == len(set(FORMS.values()))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_is_masked_in_text_and_bytes(form: str) -> None:
    """The secret written in each of its encoded forms is replaced by *** in a string and in bytes."""
    redactor = Redactor()
    text = f"before {FORMS[form]} after"
    assert text == redactor.redact(text)  # premise: nothing is masked before the secret is added
    redactor.add(SECRET)
    assert f"before {MASK} after" == redactor.redact(text)
    assert f"before {MASK} after".encode() == redactor.redact_bytes(text.encode())


def test_basic_auth_of_user_and_password_is_masked() -> None:
    """add_basic_auth masks base64 of user:password, which contains no other form of the password."""
    redactor = Redactor()
    header = "Authorization: Basic " + base64.b64encode(f"svc:{SECRET}".encode()).decode()
    redactor.add(SECRET)
    assert header == redactor.redact(header)  # premise: the password's own forms do not catch it
    redactor.add_basic_auth("svc", SECRET)
    assert f"Authorization: Basic {MASK}" == redactor.redact(header)


def test_bytes_without_a_secret_come_back_as_the_same_object() -> None:
    """redact_bytes does not copy a body that holds no secret."""
    redactor = Redactor()
    redactor.add(SECRET)
    body = bytearray(b"x" * 1000)
    assert body is redactor.redact_bytes(body)


def test_a_secret_containing_another_is_masked_whole() -> None:
    """Longest first: a secret that contains a shorter one leaves no part of itself behind."""
    redactor = Redactor()
    redactor.add("abcd")
    redactor.add("xxabcdyy")
    assert f"{MASK} {MASK}" == redactor.redact("xxabcdyy abcd")
