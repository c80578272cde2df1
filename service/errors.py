"""Every error the service answers with, each mapped to its HTTP status."""

from __future__ import annotations

from dataclasses import dataclass

from registry.errors import AliasError, ModelNotFound, RegistryError, VersionNotFound

#: characters of a client's string an answer or a log line quotes; the rest is counted, not echoed
QUOTED_CHARS = 80
#: an error message's and a field path's length at most, whatever went into them
MAX_MESSAGE_CHARS = 1_000
MAX_FIELD_CHARS = 200


def clipped(text: str, limit: int) -> str:
    """``text`` up to ``limit`` characters, saying how long it was when it is longer.

    Why: a 30 MB key or model name quoted whole made each answer, log line
    and stored record 30 MB; what a client sent is echoed only this far.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def quoted(value: str) -> str:
    """A client's string as an error quotes it: ``repr``, clipped to ``QUOTED_CHARS``."""
    return clipped(repr(value), QUOTED_CHARS)


def decimal(raw: str) -> int | None:
    """``raw`` as a non-negative integer when it is ASCII digits (``str.isdigit`` also accepts
    Unicode digits such as a superscript one, which ``int`` refuses), else None."""
    return int(raw) if raw.isascii() and raw.isdigit() else None


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with a request: where (``inputs[3].mean_radius``) and why."""

    field: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", clipped(self.field, MAX_FIELD_CHARS))
        object.__setattr__(self, "message", clipped(self.message, MAX_MESSAGE_CHARS))


class ServiceError(Exception):
    """Base of the errors a client caused or can act on; ``status`` is the HTTP status answered."""

    status = 400

    def __init__(
        self, message: str, *, field: str | None = None, details: list[FieldError] | None = None
    ) -> None:
        message = clipped(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        self.field = None if field is None else clipped(field, MAX_FIELD_CHARS)
        self.details = details or []
        #: what the logs say of it: the message, unless a log policy keeps the values it quotes out
        self.logged = message


class MalformedRequest(ServiceError):
    """The body is not JSON, or not the JSON object the route expects."""

    status = 400


class ModelRequired(ServiceError):
    """``model`` was omitted while the gateway serves more than one model."""

    status = 400


class InvalidInput(ServiceError):
    """The inputs do not fit the model's schema: unknown, missing or mistyped features, bad shapes."""

    status = 422


class Implausible(ServiceError):
    """The inputs or the prediction break a plausibility rule whose policy is to reject."""

    status = 422


class PayloadTooLarge(ServiceError):
    """The body or the batch is larger than the configured limit."""

    status = 413


class RequestTimeout(ServiceError):
    """The body did not arrive within the body timeout (a client trickling it)."""

    status = 408


class ClientGone(ServiceError):
    """The client closed the connection before its body arrived; nobody reads this answer, the log
    does (499, as nginx calls it)."""

    status = 499


class Unauthorized(ServiceError):
    """An admin route without a bearer token."""

    status = 401


class Forbidden(ServiceError):
    """An admin route with a wrong token, or while admin routes are disabled."""

    status = 403


class Conflict(ServiceError):
    """An admin action the model's state does not allow (no challenger, nothing to roll back to)."""

    status = 409


class UnsupportedMediaType(ServiceError):
    """A body in a format the route does not read (MLflow's CSV, for one)."""

    status = 415


class NotFound(ServiceError):
    """Unknown model, version or route."""

    status = 404


class MethodNotAllowed(ServiceError):
    """The route exists but not for this HTTP method; ``allow`` names the methods it takes."""

    status = 405

    def __init__(self, message: str, *, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow


class Unavailable(ServiceError):
    """The model exists but cannot answer now: no champion loaded, or the version fails its checks."""

    status = 503


class Overloaded(Unavailable):
    """The gateway sheds load (its prediction log is backed up); ``retry_after`` seconds, a hint."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def from_registry(exc: RegistryError, field: str | None = None) -> ServiceError:
    """The answer to a registry error, the one place its statuses are decided: an unknown model or
    version is 404, an alias change the model's state does not allow (nothing to roll back to) 409,
    anything else the request asked (a bad routing policy, a refused promotion) 400."""
    if isinstance(exc, ModelNotFound | VersionNotFound):
        return NotFound(str(exc), field=field)
    if isinstance(exc, AliasError):
        return Conflict(str(exc), field=field)
    return MalformedRequest(str(exc), field=field)
