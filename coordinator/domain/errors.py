"""The farm's refusals, by kind. Domain code raises them; `coordinator.api.errors` turns each
kind into one gRPC status code, so a rule never knows about the wire."""

from __future__ import annotations


class DomainError(Exception):
    """A request the farm's rules refuse; the message is one sentence a person can act on."""


class InvalidRequest(DomainError):
    """The request itself is wrong (bad range, bound, name): INVALID_ARGUMENT."""


class NotFound(DomainError):
    """It names something that does not exist (or that the caller may not see): NOT_FOUND."""


class Refused(DomainError):
    """Well-formed, but the farm's state does not allow it now: FAILED_PRECONDITION."""


class Forbidden(DomainError):
    """The caller may not do this: PERMISSION_DENIED."""
