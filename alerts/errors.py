"""The exceptions of ``tracehouse.alerts``: one family, rooted at :class:`AlertsError`.

::

    AlertsError                 anything the alerts package refuses or fails at
     ├── RuleError              a rule, rules file, route, silence or annotation template that cannot be
     │                          accepted; the message says why (also storage's InvalidParameter: bad
     │                          input from a user, answered 400 by the API and the dashboard alike)
     ├── ReadOnlyRule           a change to a rule loaded from a YAML file (also PermissionError: 403)
     ├── UnsafeQuery            a SQL rule's query refused by the guard (sqlguard.py; also ValueError)
     ├── EvaluationError        a rule's expression gave no usable value (no ``value`` column, not a
     │                          number; also ValueError); becomes the rule's ``last_error``
     ├── DestinationRefused     a notifier destination that is not allowed (scheme, private address,
     │                          unresolvable)
     ├── NotifyError            a notification not delivered (``retryable``, ``retry_after``)
     └── AlertsConfigError      the engine cannot run as configured, e.g. a cluster without the
                                ZooKeeper of its lease (also storage's ConfigError)

The second bases keep what callers caught before (``ValueError``, ``PermissionError``, storage's
``InvalidParameter``/``ConfigError``), so the HTTP status and the log line of every case stay as they
were. Storage failures are not wrapped: they stay :class:`~tracehouse.storage.StorageError`, which
callers catch on their own (the database's text goes to the log only).
"""

from __future__ import annotations

from tracehouse.storage import ConfigError, InvalidParameter

__all__ = [
    "ActionTimeout",
    "AlertsConfigError",
    "AlertsError",
    "DestinationRefused",
    "EvaluationError",
    "NotifyError",
    "ReadOnlyRule",
    "RuleError",
    "UnsafeQuery",
]


class AlertsError(Exception):
    """The root of every exception the alerts package raises on its own."""


class RuleError(AlertsError, InvalidParameter):
    """A rule (or rules file, route, silence, template) that cannot be accepted; the message says why."""


class ReadOnlyRule(AlertsError, PermissionError):
    """The rule comes from a YAML file: it cannot be changed or deleted through the API."""


class UnsafeQuery(AlertsError, ValueError):
    """The query was refused; the message says why."""


class EvaluationError(AlertsError, ValueError):
    """A rule's expression ran but gave no usable value; the message says why."""


class DestinationRefused(AlertsError):
    """The destination is not allowed (scheme, address range or unresolvable). ``transient``: the
    name could not be resolved now (no answer in time, a temporary failure): worth trying again."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class NotifyError(AlertsError):
    """A notification was not delivered. ``retryable``: worth sending again; ``retry_after``: the
    seconds the receiver asked to wait (Retry-After), if any."""

    def __init__(self, message: str, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class AlertsConfigError(AlertsError, ConfigError):
    """The engine cannot run as configured; the message says what to set."""


class ActionTimeout(AlertsError, TimeoutError):
    """A rule's action (a snapshot request) did not answer within its time limit, or was not started
    because earlier requests still have not answered."""
