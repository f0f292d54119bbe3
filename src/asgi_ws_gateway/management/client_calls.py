"""One call to the management API, as :class:`~.client.ManagementClient` makes each: the request sent
with the admin token to the checked base URL, its whole answer within one deadline, its body read
bounded (:func:`.answers.read_body`) and checked for the call's shape, every other answer one of
:mod:`.client_errors`' exceptions. The typed methods are :mod:`.client`'s.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Collection, Mapping
from typing import Any

import httpx2

from ..redact import REDACTED
from .answers import AnswerProblem, Shape, parse_json, read_body
from .client_endpoint import checked_base_url, tls_context, token_problem
from .client_errors import UnexpectedAnswerError, refusal, unexpected_status


class ManagementCalls:
    """The HTTP side of :class:`~.client.ManagementClient`: its arguments are that class's (documented there).

    Raises:
        ValueError: the base URL, the token or the CA file cannot be used (the secret never quoted).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        timeout: float,
        transport: httpx2.AsyncBaseTransport | None,
        verify: ssl.SSLContext | str | None,
        allow_insecure_http: bool,
        max_answer_size: int,
    ) -> None:
        if token and (problem := token_problem(token)) is not None:  # "" or None: no token sent
            raise ValueError(problem)
        in_process = isinstance(transport, httpx2.ASGITransport | httpx2.MockTransport)  # nothing leaves it
        base = checked_base_url(base_url, token=bool(token), allow_insecure_http=allow_insecure_http or in_process)
        if isinstance(verify, ssl.SSLContext):
            context = verify
        elif verify is not None or base.lower().startswith("https:"):
            context = tls_context(verify)
        else:  # plain http: no TLS connection is made (nor redirect followed), and the system's CAs cost ~40 ms
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts no one
        # identity: a compressed answer is inflated by read_body, bounded; whatever httpx2 would inflate is not.
        headers = {"Accept-Encoding": "identity", **({"Authorization": f"Bearer {token}"} if token else {})}
        self._token = token
        self._timeout = timeout
        self._max_answer = max_answer_size
        self._http = httpx2.AsyncClient(
            base_url=base, headers=headers, timeout=timeout, transport=transport, trust_env=False, verify=context
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        shape: Shape,
        *,
        expect: Collection[int] = (200,),
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One request, within one deadline; its answer's JSON (None for an empty body) as ``shape`` checks it.

        Raises:
            ManagementAPIError: the answer is 400 or more.
            UnexpectedAnswerError: a status not in ``expect``, or a body ``shape`` refuses.
            httpx2.TransportError: unreachable, or no whole answer within the timeout.
        """
        if method in ("POST", "PUT", "PATCH"):  # the API refuses a change not typed as JSON (415), body or not
            headers = {"Content-Type": "application/json", **(headers or {})}
        request = self._http.build_request(method, path, json=json, params=params, headers=headers)
        try:
            async with asyncio.timeout(self._timeout):
                status, body = await self._exchange(request, expect)
        except TimeoutError:
            raise httpx2.TimeoutException(
                f"no whole answer within {self._timeout:g} s (the timeout)", request=request
            ) from None
        except httpx2.HTTPError as exc:
            if self._token and self._token in str(exc):  # checked, the token is never in one; if it were
                raise _without(exc, self._token) from None
            raise
        try:
            return shape(None if not body else parse_json(body))
        except AnswerProblem as exc:
            raise UnexpectedAnswerError(status, str(exc)) from None

    async def _exchange(self, request: httpx2.Request, expect: Collection[int]) -> tuple[int, bytearray]:
        """The answer's status and body (at most ``max_answer_size`` bytes inflated), if it is one expected."""
        response = await self._http.send(request, stream=True)
        try:
            status = response.status_code
            if status >= 400:
                raise await refusal(response)
            if status not in expect:
                raise unexpected_status(response, expect)
            try:
                return status, await read_body(response, self._max_answer)
            except AnswerProblem as exc:
                raise UnexpectedAnswerError(status, str(exc)) from None
        finally:
            await response.aclose()


def _without(exc: httpx2.HTTPError, token: str) -> httpx2.HTTPError:
    """``exc`` again, the token's every occurrence in its text replaced."""
    text = str(exc).replace(token, REDACTED)
    try:
        return type(exc)(text)
    except TypeError:  # a subclass that takes other arguments
        return httpx2.TransportError(text)


__all__ = ["ManagementCalls"]
