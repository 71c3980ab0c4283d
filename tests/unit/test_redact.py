"""Unit tests of the redactor: every form a secret takes on the wire is masked whole, in text and
in bytes, and the logging filter masks messages and tracebacks."""

from __future__ import annotations

import base64
import io
import logging
import uuid
from urllib.parse import quote

import pytest
from bridgehead_testing.secret_forms import SECRET, encoded_forms

from bridgehead.core.redact import MASK, RedactingFilter, Redactor

_B64 = base64.b64encode(SECRET.encode()).decode()
FORMS = encoded_forms() | {
    # The same escape of another form: a URL path (quote keeps "/") in PHP's JSON.
    "url-keeping-slash-escaped-slash": quote(SECRET).replace("/", "\\/"),
}


def test_the_forms_differ_from_each_other() -> None:
    """Premise: the test secret's forms are all distinct, and base64 has padding, so each
    parametrized case tests something of its own."""
    assert len(FORMS) == len(set(FORMS.values()))
    assert _B64.endswith("=") and "+" in _B64


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_is_masked_whole_in_text_and_bytes(form: str) -> None:
    """The secret written in each of its encoded forms is replaced by *** (nothing of it left
    over, padding included) in a string and in bytes."""
    redactor = Redactor()
    text = f"before <{FORMS[form]}> after"
    assert text == redactor.redact(text)  # premise: nothing is masked before the secret is added
    redactor.add(SECRET)
    assert f"before <{MASK}> after" == redactor.redact(text)
    assert f"before <{MASK}> after".encode() == redactor.redact_bytes(text.encode())


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


def filtered(redactor: Redactor) -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own writing through RedactingFilter(redactor) into a string."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    logger = logging.getLogger(f"bridgehead.test.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, stream


@pytest.mark.parametrize("form", sorted(FORMS))
def test_the_filter_masks_every_form_in_messages_and_tracebacks(form: str) -> None:
    """Through the logging filter: the form as an argument, in the text, and in the message of
    an exception logged with its traceback, each masked whole; the traceback is still there."""
    redactor = Redactor()
    redactor.add(SECRET)
    logger, out = filtered(redactor)
    text = FORMS[form]
    try:
        raise ValueError(f"driver said <{text}>")
    except ValueError:
        logger.exception("connecting with <%s>", text)
    logger.warning(f"connected as <{text}>")  # in the text itself (no arguments to format)
    lines = out.getvalue().splitlines()
    assert f"ERROR connecting with <{MASK}>" == lines[0]
    assert "Traceback (most recent call last):" == lines[1]
    assert f"WARNING connected as <{MASK}>" == lines[-1]
    lines.pop()
    assert f"ValueError: driver said <{MASK}>" == lines[-1]
