"""The sink's view of an instance: values in the instance's forms (``normalise``), lookups cut
to a URL budget (``lookups``), the JWT bearer grant's assertion, labels for insertMultiple."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from hypothesis import strategies as st

from bridgehead.control.sinks.auth import AuthFailed, jwt_assertion, refusal_message
from bridgehead.control.sinks.config import ServiceNowInstance
from bridgehead.control.sinks.fields import TargetFields
from bridgehead.control.sinks.instance_schema import FieldInfo, TableSchema, normalise
from bridgehead.control.sinks.lookups import Query, in_queries, one_query, url_bytes
from bridgehead.control.sinks.targets import guessed_label


def field(kind: str, max_length: int = 40) -> FieldInfo:
    return FieldInfo("u_x", "X", kind, max_length)


@pytest.mark.parametrize(
    ("kind", "value", "stored"),
    [
        ("glide_date_time", "2024-03-01T10:00:00.250+02:00", "2024-03-01 08:00:00"),
        ("glide_date_time", "2024-03-01T10:00:00Z", "2024-03-01 10:00:00"),
        ("glide_date_time", "2024-03-01 10:00:00", "2024-03-01 10:00:00"),
        ("glide_date_time", "not a date", ""),
        ("glide_date", "2024-03-01T23:30:00-02:00", "2024-03-02"),
        ("decimal", "12.50", "12.5"),
        ("decimal", "2400.00", "2400"),
        ("decimal", "1.005", "1.01"),
        ("float", "0.123456789", "0.1234568"),
        ("integer", "7.5", "8"),
        ("integer", "007", "7"),
        ("integer", "abc", ""),
        ("integer", "1E+30", ""),  # more digits than the field holds (hypothesis found it)
        ("decimal", "1E+30", ""),
        ("boolean", "Yes", "true"),
        ("boolean", "0", "false"),
        ("boolean", "maybe", "false"),
        ("string", "a" * 60, "a" * 40),
        ("reference", "r" * 60, "r" * 60),
        ("string", "", ""),
    ],
)
def test_values_take_the_instances_form(kind: str, value: str, stored: str) -> None:
    assert stored == normalise(field(kind), value)


@given(
    st.sampled_from(["glide_date_time", "glide_date", "decimal", "float", "integer", "boolean", "string"]),
    st.text(max_size=80),
)
def test_normalising_twice_changes_nothing(kind: str, value: str) -> None:
    """Change detection normalises both sides: the instance's own form must be a fixed point."""
    once = normalise(field(kind), value)
    assert once == normalise(field(kind), once)


def test_keys_compare_ignoring_case_and_in_stored_form() -> None:
    schema = TableSchema(
        "u_assets",
        {
            "u_key": FieldInfo("u_key", "Key", "string", 10),
            "u_cost": FieldInfo("u_cost", "Cost", "decimal", 15),
        },
    )
    fields = TargetFields("corp", "u_assets", schema, ["u_key"])
    assert fields.key({"u_key": "ABCDEFGHIJKLM"}) == fields.record_key({"u_key": "abcdefghij"})
    assert {} == fields.changes({"u_key": "ABC", "u_cost": "1.50"}, {"u_key": "abc", "u_cost": "1.5"})
    assert {"u_cost": "2"} == fields.changes({"u_key": "abc", "u_cost": "2"}, {"u_key": "abc", "u_cost": "1.5"})
    assert {"u_key": "k"} == fields.keep({"u_key": "k", "u_color": "blue"})
    assert {"u_color": 1} == fields.dropped


BASE = "https://corp.service-now.com/api/now/table/u_assets"
FIXED = {"sysparm_limit": "200", "sysparm_fields": "sys_id,u_key"}


@pytest.mark.parametrize("budget", [1024, 2000, 6000])
def test_every_lookup_stays_under_the_budget_and_every_key_is_asked(budget: int) -> None:
    keys = [f"{i:05d}" + "é" * 250 for i in range(40)] + [f"short-{i}" for i in range(300)] + ["a,b"]
    asked: list[str] = []
    for query, chunk in in_queries(BASE, FIXED, "u_key", keys, budget):
        assert query is not None
        asked += chunk
        params = {**FIXED, "sysparm_query": query.text}
        sent = BASE + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        assert len(sent.encode()) <= budget or query.exact and len(chunk) == 1, (budget, len(sent))
        assert url_bytes(BASE, params) <= budget or len(chunk) == 1
    assert sorted(asked) == sorted(keys)


def test_a_key_longer_than_the_budget_is_looked_up_by_a_prefix() -> None:
    key = "x" * 900 + "tail"
    query = one_query(BASE, FIXED, [("u_key", key)], 1024)
    assert query is not None and not query.exact
    assert (
        query.text.startswith("u_keySTARTSWITHxxxx") and url_bytes(BASE, {**FIXED, "sysparm_query": query.text}) <= 1024
    )


@pytest.mark.parametrize(
    ("key", "sent"),
    [
        ("a^ORsys_idISNOTEMPTY", "u_keySTARTSWITHa"),  # the attack: an OR term matching every row
        ("a^^ORsys_idISNOTEMPTY", "u_keySTARTSWITHa"),  # doubling is no escape an instance documents
        ("x" * 900 + "^NQsys_idISNOTEMPTY", "u_keySTARTSWITHxxxx"),
    ],
)
def test_no_caret_from_a_key_reaches_the_query(key: str, sent: str) -> None:
    """A key is record data: its ``^`` would start a term of the sender's choosing. The lookup
    goes by the text before it, inexact (so the caller filters and reads every page)."""
    for query, chunk in in_queries(BASE, FIXED, "u_key", ["plain", key], 1024):
        assert query is not None
        assert "^" not in query.text and "ISNOTEMPTY" not in query.text
        if chunk == [key]:
            assert query.text.startswith(sent) and not query.exact
        else:
            assert query == Query("u_keyINplain", exact=True)


def test_a_key_that_starts_with_a_caret_cannot_be_looked_up_alone() -> None:
    assert one_query(BASE, FIXED, [("u_key", "^ORsys_idISNOTEMPTY")], 1024) is None
    both = one_query(BASE, FIXED, [("u_key", "^x"), ("u_site", "lyon")], 1024)
    assert both == Query("u_site=lyon", exact=False)  # found by the other term, then filtered


def _instance(tmp_path: Path, key_file: Path) -> ServiceNowInstance:
    return ServiceNowInstance(
        url="https://corp.service-now.com",
        tables=[],
        auth="oauth_jwt",
        client_id="client-1",
        client_secret_file=str(tmp_path / "secret"),
        jwt_private_key_file=str(key_file),
        jwt_kid="kid-1",
        jwt_subject="integration.user",
    )


def test_the_jwt_assertion_is_rs256_signed_with_the_claims_an_instance_checks(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    token = jwt_assertion(_instance(tmp_path, key_file), now=1_800_000_000)
    header_b64, claims_b64, signature_b64 = token.split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert {"alg": "RS256", "typ": "JWT", "kid": "kid-1"} == json.loads(decode(header_b64))
    claims = json.loads(decode(claims_b64))
    assert ("client-1", "integration.user", "client-1") == (claims["iss"], claims["sub"], claims["aud"])
    assert 300 == claims["exp"] - claims["iat"]
    # Verifies with the public key (raises if not).
    key.public_key().verify(
        decode(signature_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_a_key_that_is_not_rsa_is_refused_clearly(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text("not a key")
    with pytest.raises(AuthFailed, match="jwt_private_key_file"):
        jwt_assertion(_instance(tmp_path, key_file))


def test_a_refused_grant_names_what_to_change() -> None:
    answer = {"error": "server_error", "error_description": "access_denied"}
    message = refusal_message("client_credentials", 401, answer, b"")
    assert "glide.oauth.inbound.client.credential.grant_type.enabled" in message
    assert "access_denied" in message


def test_labels_guessed_for_columns_the_dictionary_does_not_list() -> None:
    assert "Directory id" == guessed_label("u_directory_id")
    assert "N" == guessed_label("u_n")
