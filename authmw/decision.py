"""What :class:`~authmw.core.AuthCore` decides for a request, and its prebuilt refusals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ScopeMismatch
from .responses import NOT_AUTHENTICATED, Rejection, Responses

if TYPE_CHECKING:
    from .identity import Identity

__all__ = ["Answers", "Decision", "check_fiware"]


class Decision:
    """The outcome for one request.

    ``identity`` is set when the token is confirmed. ``rejection`` is set
    when the request must be answered without calling the app. In delayed
    mode (and for an anonymous request where anonymity is allowed) neither
    is set: the app is called with ``X-Identity-Status: Invalid``.
    ``public`` marks a request on a public route (nothing was checked).
    """

    __slots__ = (
        "environ_items",
        "environ_own",
        "header_items",
        "header_own",
        "identity",
        "public",
        "rejection",
        "service_identity",
        "service_status",
        "status",
    )

    def __init__(
        self,
        identity: Identity | None,
        rejection: Rejection | None = None,
        *,
        status: str | None = None,
        service_identity: Identity | None = None,
        service_status: str | None = None,
        public: bool = False,
    ) -> None:
        self.identity = identity
        self.rejection = rejection
        self.status = status if status is not None else ("Confirmed" if identity else "Invalid")
        self.service_identity = service_identity
        self.service_status = service_status
        self.public = public
        # What the pipeline injects, rendered on first use (see authmw._inject):
        # the part identities share, and the identity's own values when they
        # are not its attributes as they are (None: read them from it).
        self.environ_items: dict[str, Any] | None = None
        self.environ_own: tuple[tuple[str, str], ...] | None = None
        self.header_items: tuple[tuple[bytes, bytes], ...] | None = None
        self.header_own: tuple[tuple[bytes, bytes], ...] | None = None

    @property
    def challenged(self) -> bool:
        """True if the app is called without an identity and its own 401 needs the challenge."""
        return self.identity is None and not self.public

    def __repr__(self) -> str:
        return (
            f"Decision(status={self.status!r}, identity={self.identity!r}, "
            f"rejection={self.rejection!r}, service_status={self.service_status!r})"
        )


class Answers:
    """The 401s for a token from one source, prebuilt with that source's challenge."""

    __slots__ = ("challenge", "decision_invalid", "invalid", "malformed", "multiple", "too_large")

    def __init__(self, responses: Responses, challenge: str) -> None:
        self.challenge = challenge

        def unauthorized(message: str) -> Rejection:
            return responses.unauthorized(message, challenge=challenge)

        self.invalid = unauthorized(NOT_AUTHENTICATED)
        self.too_large = unauthorized("Token is too large.")
        self.multiple = unauthorized("More than one token in the request.")
        self.malformed = unauthorized("Token is malformed.")
        self.decision_invalid = Decision(None, self.invalid)


def check_fiware(identity: Identity, service: str | None, service_path: str | None) -> None:
    """FIWARE multi-tenancy: Fiware-Service = domain, Fiware-ServicePath = project."""
    if service is None or not service.strip():
        raise ScopeMismatch("Fiware-Service header is required")
    service = service.strip()
    path = (service_path or "/").strip() or "/"
    domain = identity.domain_name if identity.scope == "domain" else identity.project_domain_name
    if domain is None or service.lower() != domain.lower():
        raise ScopeMismatch("Fiware-Service does not match the token's domain")
    if path == "/":
        if identity.scope != "domain":
            raise ScopeMismatch("Fiware-ServicePath '/' needs a domain-scoped token")
    elif identity.scope != "project" or path != identity.project_name:
        raise ScopeMismatch("Fiware-ServicePath does not match the token's project")
