"""Enrolment: trade a one-time token for an identity, once, before the first ``run``.

The agent makes its own key pair and sends only the public half with the token; the control
plane registers it under the agent's name and cluster. Plain ``urllib`` keeps this one
request free of the HTTP client the rest plugin imports lazily.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from agent.config import AgentConfig
from agent.errors import EnrollmentError
from agent.identity import new_key, public_key_b64, save_identity

ENROLL_PATH = "/api/v1/enroll"


def http_base(url: str) -> str:
    """The control plane's HTTP origin for a configured URL (ws/wss become http/https)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def enroll(config: AgentConfig, token: str, timeout_s: float = 15.0) -> str:
    """Enrol with the first control URL that answers; return the agent id."""
    key = new_key()
    body = json.dumps(
        {
            "token": token.strip(),
            "agent": config.agent.name,
            "cluster": config.agent.cluster,
            "public_key": public_key_b64(key),
        }
    ).encode()
    last_error = "no control URL configured"
    for url in config.control.all_urls:
        endpoint = http_base(url) + ENROLL_PATH
        request = urllib.request.Request(  # noqa: S310 - scheme checked by config validation
            endpoint, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", {}).get("message", "")
            except ValueError:
                detail = ""
            # A refusal is final: the token is wrong, used or expired; trying elsewhere won't help.
            raise EnrollmentError(f"{endpoint} refused enrolment ({exc.code}): {detail or exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            last_error = f"{endpoint}: {reason}"
            continue
        agent_id = str(answer["agent_id"])
        save_identity(config.data_dir, key, config.agent.name, config.agent.cluster, agent_id)
        return agent_id
    raise EnrollmentError(f"could not reach the control plane: {last_error}")
