"""The class of the middlewares' lean SERVER span (see :mod:`.server_span`, which imports this module
on first use, so that importing the agent does not import the SDK)."""

from __future__ import annotations

import logging
import threading
from time import time_ns

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Span
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind, Status, StatusCode

_log = logging.getLogger("opentelemetry.sdk.trace")  # the SDK's own warnings come from there
_SERVER = SpanKind.SERVER
_UNSET = Status(StatusCode.UNSET)
_OK = StatusCode.OK


class LeanServerSpan(Span):
    # Fields every instance shares until it changes them (fewer stores per request).
    _kind = _SERVER
    _end_time = None
    _events = ()
    _links = ()
    _status = _UNSET
    _record_exception = True
    _set_status_on_exception = True
    _sampler = None
    _trace_config = None
    _record_end_metrics = None

    _tracehouse_lean = True
    # Set on the subclass ServerSpans makes per tracer: _instrumentation_scope,
    # _instrumentation_info, _limits, _span_processor, _owner.

    def __init__(self, name, context, parent, attributes, start_time, resource):  # noqa: PLR0913
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._start_time = start_time
        self._resource = resource
        self._lock = threading.Lock()

    # ReadableSpan answers these with ABC isinstance checks (~0.4 µs each, per export).
    @property
    def dropped_attributes(self) -> int:
        attrs = self._attributes
        return 0 if type(attrs) is dict else attrs.dropped

    @property
    def dropped_events(self) -> int:
        events = self._events
        return 0 if type(events) is tuple else events.dropped

    @property
    def dropped_links(self) -> int:
        links = self._links
        return 0 if type(links) is tuple else links.dropped

    def _bounded(self):
        """The attributes as the SDK keeps them (called under the lock, before a foreign write)."""
        attrs = self._attributes
        if type(attrs) is dict:
            limits = self._limits
            bounded = BoundedAttributes(limits.max_span_attributes, None, immutable=False,
                                        max_value_len=limits.max_span_attribute_length)
            bounded._dict.update(attrs)  # our own str/int values, already within the limits
            self._attributes = attrs = bounded
        return attrs

    def set_attribute(self, key, value) -> None:
        with self._lock:
            if self._end_time is not None:
                _log.warning("Setting attribute on ended span.")
                return
            self._bounded()[key] = value

    def set_attributes(self, attributes) -> None:
        with self._lock:
            if self._end_time is not None:
                _log.warning("Setting attribute on ended span.")
                return
            bounded = self._bounded()
            for key, value in attributes.items():
                bounded[key] = value

    def _add_event(self, event) -> None:
        with self._lock:
            if self._end_time is None:
                if type(self._events) is tuple:
                    self._events = BoundedList(self._limits.max_events)
                self._events.append(event)
                return
        _log.warning("Tried calling _add_event on an ended span.")

    def _add_link(self, link) -> None:
        with self._lock:
            if self._end_time is None:
                if type(self._links) is tuple:
                    self._links = BoundedList(self._limits.max_links)
                self._links.append(link)
                return
        _log.warning("Tried calling _add_link on an ended span.")

    def end(self, end_time: int | None = None) -> None:
        self.close(None, None, None, end_time)

    def close(self, name: str | None, attributes: dict | None, status: Status | None,
              end_time: int | None) -> None:
        """Rename, add ``attributes``, set ``status`` (as ``set_status`` would) and end, in one lock."""
        with self._lock:
            if self._end_time is not None:
                ended = True
            else:
                ended = False
                if name:
                    self._name = name
                if attributes:
                    attrs = self._attributes
                    if type(attrs) is dict:
                        attrs.update(attributes)
                    else:
                        for key, value in attributes.items():
                            attrs[key] = value
                if status is not None and self._status.status_code is not _OK and \
                        status.status_code is not StatusCode.UNSET:
                    self._status = status
                self._end_time = end_time if end_time is not None else time_ns()
        if ended:
            _log.warning("Calling end() on an ended span.")
            return
        if self._record_end_metrics is not None:
            self._record_end_metrics()
        self._owner.ended(self)
