"""Errors of the agent and its plugins.

    BridgeheadError              base; never escapes a command as a traceback
    ├── ConfigError              the agent's TOML is wrong (file, key, what) -> exit code 2
    ├── EnrollmentError          enrolment failed (token, network, control plane's answer)
    └── JobError                 ends one job attempt as ``failed`` with ``code``
        ├── InvalidParams        params do not fit the plugin's schema       invalid_params
        ├── UnknownPlugin        no such plugin on this agent                unknown_plugin
        ├── UnknownConnection    the job names a profile this agent lacks    unknown_connection
        ├── PolicyDenied         the profile forbids what the job asks       policy_denied
        ├── RecordTooLarge       one record is over ``limits.max_record_bytes``  record_too_large
        ├── SourceUnavailable    the target cannot be reached (retryable)    source_unavailable
        └── SourceError          the target answered with an error           source_error

``JobError.code`` is stable: it is what reaches ``error.code`` of the job in the API. Plugins
translate their library's exceptions into these at their boundary, so no driver exception
type ever leaves a plugin. Messages pass through the secret redactor before they leave the
agent.
"""

from __future__ import annotations


class BridgeheadError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(BridgeheadError):
    """A configuration file is invalid; the message names the file, the key and the fault."""

    exit_code = 2

    def __init__(self, path: str, key: str, problem: str) -> None:
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + problem)
        self.path = path
        self.key = key
        self.problem = problem


class EnrollmentError(BridgeheadError):
    """Enrolment with the control plane did not succeed."""

    exit_code = 3


class JobError(BridgeheadError):
    """Ends a job attempt as failed; ``code`` is stable and machine-readable."""

    code = "job_error"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


class InvalidParams(JobError):
    code = "invalid_params"


class UnknownPlugin(JobError):
    code = "unknown_plugin"


class UnknownConnection(JobError):
    code = "unknown_connection"


class PolicyDenied(JobError):
    code = "policy_denied"


class RecordTooLarge(JobError):
    code = "record_too_large"


class SourceUnavailable(JobError):
    code = "source_unavailable"
    retryable = True


class SourceError(JobError):
    code = "source_error"
