"""The relay's one exception: raised anywhere, rendered in the endpoint's protocol."""

from __future__ import annotations


class RelayError(Exception):
    """An answer to the client: status, message, and the protocol-neutral details each
    protocol renders in its own error shape (see ``relay.protocols``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or []
