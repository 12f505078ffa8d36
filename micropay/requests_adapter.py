"""A requests transport adapter that pays 402s, for code built on the requests library.

::

    session = requests.Session()
    adapter = PaymentAdapter(HttpPayer(w3, account, PaymentPolicy(max_price=10_000)))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.get("https://news.example/articles/42")

It drives the same :class:`~micropay.http_client.HttpPayer` as the httpx transports, so
policy, channels, receipts and recovery behave the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from micropay._x402 import PAYMENT_ACCESS, PAYMENT_REQUIRED, PAYMENT_SIGNATURE
from micropay.http_client import HttpPayer, resource_of, site_of

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
        return paid if paid is not None else response
