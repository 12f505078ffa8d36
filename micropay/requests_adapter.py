"""A requests transport adapter that pays 402s, for code built on the requests library.

::

    session = requests.Session()
    adapter = PaymentAdapter(HttpPayer(w3, account, PaymentPolicy(max_price=10_000)))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.get("https://news.example/articles/42")

It drives the same :class:`~micropay.http_client.HttpPayer` as the httpx transports, so
policy, channels, receipts and recovery behave the same. A streamed answer priced per unit
(:mod:`micropay.streaming`) is paid as it is read (``stream=True`` and ``iter_content`` /
``iter_lines``, or ``.content``), its increments by voucher-only requests;
``micropay.streaming.stream_status(response)`` says where it stands.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from micropay._x402 import PAYMENT_ACCESS, PAYMENT_REQUIRED, PAYMENT_SIGNATURE, PAYMENT_STREAM
from micropay.http_client import HttpPayer, resource_of, site_of
from micropay.streaming import VOUCHER_ONLY, PaidStream, StreamStatus

__all__ = ["PaymentAdapter"]


def _answer(response: Response) -> tuple[int, Mapping[str, str]]:
    return response.status_code, response.headers


def _discard(response: Response) -> None:
    response.close()


class PaymentAdapter(HTTPAdapter):
    """An :class:`~requests.adapters.HTTPAdapter` that pays a 402 and resends the request."""

    def __init__(self, payer: HttpPayer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.payer = payer

    def send(  # type: ignore[override]
        self, request: PreparedRequest, **kwargs: Any
    ) -> Response:
        response = super().send(request, **kwargs)
        if (
            response.status_code != 402
            or PAYMENT_REQUIRED not in response.headers
            or PAYMENT_SIGNATURE in request.headers
            or PAYMENT_ACCESS in request.headers
        ):
            return response
        required = response.headers[PAYMENT_REQUIRED]
        response.close()

        def send(name: str, value: str) -> Response:
            retry = request.copy()
            retry.headers[name] = value
            return super(PaymentAdapter, self).send(retry, **kwargs)

        path = unquote(urlsplit(str(request.url)).path)
        resource = resource_of(str(request.method), path)
        paid = self.payer.pay(
            site_of(str(request.url)), required, send, _answer, _discard, resource
        )
        if paid is None:
            return response
        stream = self.payer.paid_stream(paid.headers) if 200 <= paid.status_code < 300 else None
        if stream is None:
            return paid

        def send_voucher(header: str) -> tuple[int, Mapping[str, str]]:
            retry = request.copy()
            retry.prepare_body(None, None)
            retry.headers.pop("Content-Length", None)
            retry.headers[PAYMENT_SIGNATURE] = header
            retry.headers[PAYMENT_STREAM] = VOUCHER_ONLY
            answer = super(PaymentAdapter, self).send(retry, **{**kwargs, "stream": False})
            answer.close()
            return answer.status_code, answer.headers

        paid.raw = _MeteredRaw(self.payer, paid.raw, stream, send_voucher)
        return paid


class _MeteredRaw:
    """A paid stream's body in place of ``response.raw``: requests reads it through
    :meth:`stream`, the paywall's events stripped and each increment paid as it is due."""

    def __init__(self, payer: HttpPayer, raw: Any, stream: PaidStream, send_voucher: Any) -> None:
        self._payer, self._raw, self._stream, self._send_voucher = payer, raw, stream, send_voucher
        self.stream_status: StreamStatus = stream.status

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        # Each chunk as it arrives (urllib3 reads a chunked body chunk by chunk): a paused
        # stream must not leave the client waiting for a full buffer.
        chunks = self._raw.stream(None, decode_content=False)
        if not (yield from self._payer.metered_body(self._stream, chunks, self._send_voucher)):
            self._raw.close()  # broken off: the connection must not go back to the pool

    def close(self) -> None:
        self._raw.close()

    def release_conn(self) -> None:
        self._raw.release_conn()
