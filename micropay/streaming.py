"""Streamed responses priced per unit: server-sent events or a chunked body, paid in increments.

A route priced ``PerUnit(price, increment=100)`` answers with a stream (a Starlette
``StreamingResponse``, an SSE response, anything that sends its body in pieces). The first
request pays as a metered route does: its voucher is the channel's charged total plus one
increment (``increment * price``), taken as a ceiling with nothing charged yet. The paywall
then counts the units the handler sends (one server-sent event, or ``unit_bytes`` bytes of a
chunked body) and lets them out while the payer's ceiling covers them. When it runs out the
stream pauses and asks for the next increment in band::

    event: payment-need-voucher
    data: {"channel":"0x…","charged":"…","ceiling":"…","units":200}

and the payer's transport answers with a *voucher-only request* (the same method and URL,
``PAYMENT-STREAM: voucher`` beside ``PAYMENT-SIGNATURE``), which records the units delivered
so far with the new ceiling and is answered with that receipt and no content; the stream
goes on. A chunked body cannot carry an event: there the payer's transport counts the bytes
and sends the next voucher as soon as it has received every unit it paid for, which is when
the paywall pauses. docs/protocol.md has the wire format, byte for byte.

What is charged is what was delivered, and only that: each write (the book's charge write,
:meth:`~micropay.payee.VoucherBook.accept_if_higher`, a compare-and-swap over the charged
total) sets the charged total to the units handed to the server times the price, at each
increment and when the stream ends, however it ends: the handler finished (``end``), the
payer did not send the next voucher within ``timeout`` seconds (``unpaid``), the client went
away (``disconnected``), the channel moved under the stream (``stale``: a refund, or
another process), or the handler failed (``error``: logged, never a 500 once the stream
has started). An SSE stream then ends with its receipt, as its headers left long
before::

    event: payment-receipt
    data: {"receipt":"<PAYMENT-RESPONSE value>","units":250,"reason":"end"}

A restart in the middle loses the payer nothing: the book holds the last increment's write,
the units delivered before it; the units after it are the site's loss (at most one
increment). A voucher-only request is checked like any payment (the channel's authorizer
signed it, the deposit covers it) and must be exactly the stream's ceiling plus one
increment; it charges only units already delivered, so it can never charge for nothing.
One stream per channel at a time: the channel is busy while it runs (409 ``channel_busy``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

import anyio

from micropay._x402 import PaymentPayload, Reason, Receipt, StreamTerms
from micropay.errors import (
    InsufficientDepositError,
    InvalidSignatureError,
    PaymentDeclinedError,
    StaleVoucherError,
    VoucherError,
    VoucherRejectedError,
)

if TYPE_CHECKING:
    from micropay.paywall import ChannelCheck, Message, PaymentRefusal, Paywall, Receive, Send

__all__ = ["NEED_VOUCHER", "RECEIPT", "PerUnit", "StreamStatus", "StreamTerms", "stream_status"]

_log = logging.getLogger("micropay.streaming")

NEED_VOUCHER: Final = "payment-need-voucher"
RECEIPT: Final = "payment-receipt"
VOUCHER_ONLY: Final = "voucher"
"""The value of ``PAYMENT-STREAM`` on a voucher-only request."""
_EVENT_END: Final = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_PAYMENT_EVENT: Final = re.compile(rb"event: ?payment-")


@dataclass(frozen=True)
class PerUnit:
    """A streamed price in ``prices=``: ``{"GET /v1/complete": PerUnit(10**9, increment=100)}``
    charges ``price`` per unit delivered, a unit being one server-sent event (or, with
    ``unit_bytes``, that many bytes of a chunked body: a media stream's second), paid
    ``increment`` units at a time. ``timeout``: how long a paused stream waits for the next
    voucher before it ends (charging what was delivered). The handler meters nothing
    itself: the paywall counts the units it sends (``request.state.payment.amount`` is one
    increment; ``payment.charge`` raises :class:`~micropay.errors.ChargeError`)."""

    price: int
    increment: int = 100
    unit_bytes: int = 0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        for name, least in (("price", 1), ("increment", 1), ("unit_bytes", 0)):
            value = getattr(self, name)
            if type(value) is not int or value < least:
                raise ValueError(f"PerUnit.{name} must be an integer >= {least}, not {value!r}")
        if not self.timeout > 0:
            raise ValueError(f"PerUnit.timeout must be positive, not {self.timeout!r}")

    @property
    def terms(self) -> StreamTerms:
        return StreamTerms(self.price, self.increment, self.unit_bytes)


# -- framing: what a unit is, shared by the paywall and the payer's transport ---------------


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete server-sent events at the start of ``buffer`` (each with its blank
    line) and what is left of an event not yet complete."""
    events = []
    start = 0
    for end in _EVENT_END.finditer(buffer):
        events.append(buffer[start : end.end()])
        start = end.end()
    return events, buffer[start:]


def split_units(terms: StreamTerms, buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete units at the start of ``buffer``: events, or ``unit_bytes`` slices."""
    if not terms.unit_bytes:
        return split_events(buffer)
    size = terms.unit_bytes
    whole = len(buffer) - len(buffer) % size
    return [buffer[i : i + size] for i in range(0, whole, size)], buffer[whole:]


_MAX_EVENT_DATA = 8192
"""The longest data line of a payment event read (a signed receipt takes about 1,000)."""


def payment_event(event: bytes) -> tuple[str, dict[str, Any]] | None:
    """``(name, data)`` if the event is one of the paywall's (its first line names a
    ``payment-…`` event), else None. Its data is one JSON object (None if it is not)."""
    if not _PAYMENT_EVENT.match(event):
        return None
    name, data = "", None
    for line in event.splitlines():
        key, _, value = line.decode("utf-8", "replace").partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "event":
            name = value
        elif key == "data":
            # A payment event's data is a receipt or a request for a voucher: bounded (and
            # so is how deep it can nest, which the decoder recurses into).
            if len(value) > _MAX_EVENT_DATA:
                data = None
                continue
            try:
                data = json.loads(value)
            except (ValueError, RecursionError):
                data = None
    return (name, data) if isinstance(data, dict) else (name, {})


def event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event of the paywall's, as it goes on the wire."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# -- the paywall's side ------------------------------------------------------------------------


class _Stopped(Exception):
    """Raised into the handler's send to end a stream the payer no longer pays for."""


class StreamMeter:
    """One streamed response in progress on a channel: what was authorised, delivered and
    recorded, and the paused sender waiting for the next voucher. The paywall keeps one
    per channel while the stream runs (see :meth:`take` for the voucher-only request)."""

    def __init__(
        self,
        paywall: Paywall,
        check: ChannelCheck,
        resource: str,
        terms: PerUnit,
        refuse: Callable[[PaymentRefusal], Awaitable[None]],
    ) -> None:
        self.paywall = paywall
        self._refuse = refuse
        self.check = check
        self.resource = resource
        self.terms = terms
        self.stream = terms.terms
        self.increment = terms.price * terms.increment
        self.base = check.base  # the charged total before the stream
        self.recorded = check.base  # the charged total the book holds
        self.delivered = 0  # units handed to the server
        self.receipt: Receipt | None = None
        self.stopped: str | None = None
        self.disconnected = False
        self._lock = anyio.Lock()
        self._raised = anyio.Event()
        self._buffer = b""
        self._started = False

    @property
    def ceiling(self) -> int:
        return self.check.payload.voucher.cumulative_amount

    @property
    def delivered_total(self) -> int:
        """The charged total the units delivered so far come to."""
        return self.base + self.delivered * self.terms.price

    def _authorised(self) -> int:
        return (self.ceiling - self.base) // self.terms.price

    # -- the stream -------------------------------------------------------------------------

    async def run(self, app: Callable[..., Any], scope: Any, receive: Receive, send: Send) -> None:
        """Run the handler with a send that records the start, meters the body and ends it
        with the final receipt; whatever happens, the units delivered are recorded."""

        async def watch(message: Message | None = None) -> Message:
            got = await receive()
            if got["type"] == "http.disconnect":
                self.disconnected = True
            return got

        async def metered_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._start(message, send)
            elif message["type"] == "http.response.body" and self._started:
                await self._body(message, send)
            elif not self._started:
                await send(message)  # a non-2xx answer: passed on, nothing charged

        try:
            await app(scope, watch, metered_send)
        except _Stopped:
            pass
        except BaseExceptionGroup as group:  # a task group around the handler's sends
            rest = group.subgroup(lambda err: not isinstance(err, _Stopped))
            if rest is not None:
                self._failed(rest)
        except Exception as err:
            self._failed(err)
        finally:
            if self._started:
                with anyio.CancelScope(shield=True):
                    await self._finish(send)

    def _failed(self, err: BaseException) -> None:
        """The handler broke off: once the stream has started, its units are charged and
        the body ends cleanly (the error is logged, not sent); before, it is the app's."""
        if not self._started or not isinstance(err, Exception):
            raise err
        _log.error("%s: the stream's handler failed", self.resource, exc_info=err)
        self.stopped = self.stopped or "error"

    async def _start(self, message: Message, send: Send) -> None:
        from micropay.paywall import PaymentRefusal, _paid_headers

        if not 200 <= message["status"] < 300:
            await send(message)
            return
        try:
            receipt = await self.paywall.record_channel_payment(self.check, self.resource, charge=0)
        except PaymentRefusal as refusal:
            await self._refuse(refusal)
            raise _Stopped from None
        self.receipt = receipt
        self._started = True
        header = (b"payment-response", receipt.encode().encode("ascii"))
        await send({**message, "headers": _paid_headers(message, header)})

    async def _body(self, message: Message, send: Send) -> None:
        if self.stopped is not None:
            raise _Stopped
        self._buffer += message.get("body", b"")
        units, self._buffer = split_units(self.stream, self._buffer)
        if not message.get("more_body", False) and self._buffer:
            units, self._buffer = [*units, self._buffer], b""  # the last, shorter unit
        if not self.stream.unit_bytes:
            units = [unit for unit in units if not self._foreign(unit)]
        while units:
            room = self._authorised() - self.delivered
            if room <= 0:
                await self._ask(send)
                continue
            if self.disconnected:
                raise _Stopped
            out, units = units[:room], units[room:]
            # Counted as handed to the server, before the send returns: a voucher-only request
            # from a client that has already read them must find them delivered.
            self.delivered += len(out)
            await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})

    def _foreign(self, unit: bytes) -> bool:
        """A handler's event named like the paywall's is dropped: only the paywall asks."""
        if payment_event(unit) is None:
            return False
        _log.warning("%s: dropped a handler event named payment-*", self.resource)
        return True

    async def _ask(self, send: Send) -> None:
        """Pause for the next voucher (asked for in band on SSE); end the stream without."""
        raised = self._raised
        if not self.stream.unit_bytes:
            ask = {
                "channel": "0x" + self.check.payload.config.channel_id.hex(),
                "charged": str(self.delivered_total),
                "ceiling": str(self.ceiling + self.increment),
                "units": self.delivered,
            }
            await send(
                {"type": "http.response.body", "body": event(NEED_VOUCHER, ask), "more_body": True}
            )
        with anyio.move_on_after(self.terms.timeout):
            await raised.wait()
        if not raised.is_set():
            self.stopped = self.stopped or "unpaid"
        if self.stopped is not None or self.disconnected:
            raise _Stopped

    async def take(self, payload: PaymentPayload) -> Receipt:
        """A voucher-only request: the next increment's voucher, exactly the ceiling plus one
        increment, checked like any payment, recorded with the units delivered so far (not
        a unit more). Returns its receipt; raises PaymentRefusal."""
        from micropay.paywall import ChannelCheck, PaymentRefusal

        paywall = self.paywall
        config, voucher = payload.config, payload.voucher
        async with self._lock:
            if self.stopped is not None or not self._started:
                raise PaymentRefusal(409, Reason.NO_STREAM, "no stream on this channel waits")
            # Only the channel's authorizer learns where the stream stands.
            paywall._verify_or_refuse(config, voucher)
            wanted = self.ceiling + self.increment
            if voucher.cumulative_amount != wanted:
                raise PaymentRefusal(
                    402,
                    Reason.CUMULATIVE_MISMATCH,
                    f"the stream's next voucher is for {wanted}, not {voucher.cumulative_amount}",
                )
            held = await paywall._read_held(config.channel_id)
            if held is None or held.charged != self.recorded:
                self.stopped = "stale"
                self._raised.set()
                raise PaymentRefusal(409, Reason.NO_STREAM, "the channel moved under the stream")
            state = paywall.payee.cached_state(config.channel_id, max_age=paywall._state_ttl)
            if state is None or voucher.cumulative_amount > state.deposited:
                await paywall._refresh(config.channel_id)
            try:
                checked = paywall.payee.check_over(config, voucher, held)
            except InvalidSignatureError as err:
                raise PaymentRefusal(402, Reason.INVALID_SIGNATURE, str(err)) from None
            except (StaleVoucherError, InsufficientDepositError) as err:
                raise PaymentRefusal(402, err.reason, str(err)) from None
            except VoucherRejectedError as err:
                raise PaymentRefusal(402, err.reason, str(err)) from None
            except VoucherError as err:
                raise PaymentRefusal(400, Reason.INVALID_PAYLOAD, str(err)) from None
            check = ChannelCheck(
                payload,
                voucher.cumulative_amount - self.recorded,
                checked,
                self.recorded,
                self.recorded,
                held.refunded,
                metered=True,
                ceiling=held.ceiling,
            )
            receipt = await self._record(check)
            self._raised.set()
            self._raised = anyio.Event()
            return receipt

    async def _record(self, check: ChannelCheck) -> Receipt:
        """The charge write: the units delivered, under ``check``'s voucher (call locked)."""
        from micropay.paywall import PaymentRefusal

        charge = self.delivered_total - self.recorded
        try:
            receipt = await self.paywall.record_channel_payment(check, self.resource, charge=charge)
        except PaymentRefusal:
            self.stopped = "stale"  # a refund or another process moved the channel
            self._raised.set()
            raise
        self.check, self.recorded, self.receipt = check, self.delivered_total, receipt
        return receipt

    async def _finish(self, send: Send) -> None:
        """Record what was delivered and end the body (with the receipt, on SSE)."""
        from micropay.paywall import PaymentRefusal

        reason = "disconnected" if self.disconnected else self.stopped or "end"
        self.stopped = reason
        async with self._lock:
            check = replace(
                self.check,
                held=self.recorded,
                base=self.recorded,
                price=self.ceiling - self.recorded,
                # The book's best voucher since this check's first write: it or this one.
                ceiling=max(self.check.ceiling, self.ceiling),
            )
            try:
                receipt: Receipt | None = await self._record(check)
            except (PaymentRefusal, PaymentDeclinedError) as err:
                _log.warning(
                    "%s: the stream's last units were not recorded: %s", self.resource, err
                )
                receipt = None
        if self.disconnected:
            return
        body = b""
        if not self.stream.unit_bytes and receipt is not None:
            final = {"receipt": receipt.encode(), "units": self.delivered, "reason": reason}
            body = event(RECEIPT, final)
        await send({"type": "http.response.body", "body": body, "more_body": False})


# -- the payer's side ----------------------------------------------------------------------


@dataclass
class StreamStatus:
    """Where a paid stream stands, for the caller: :func:`stream_status` of the response.

    ``units`` received (payment events are not units and never reach the caller);
    ``charged`` the channel's charged total as last acknowledged, ``ceiling`` the last voucher
    sent. ``paid`` what this stream has charged so far. ``ended`` is the site's reason from
    its final receipt (``end``, ``unpaid``, ``stale``; None: no final receipt, as on a
    chunked body, or the stream broke off). ``stopped`` says why this client stopped paying
    (None: it never did): its policy's cap, or a site asking for more than it delivered.
    """

    units: int
    charged: int
    ceiling: int
    paid: int = 0
    ended: str | None = None
    stopped: str | None = None
    receipt: Receipt | None = None


class PaidStream:
    """The payer's side of one streamed response: counts the units as they arrive, strips the
    paywall's events, and says when the next increment is due; the transport pays it
    (:meth:`~micropay.http_client.HttpPayer.pay_increment`). ``pending`` is the last voucher
    sent on it (the request's, then each increment's)."""

    def __init__(self, pending: Any, terms: StreamTerms, charged: int) -> None:
        self.pending = pending
        self.terms = terms
        self.base = charged  # the charged total the stream started from
        self.status = StreamStatus(0, charged, pending.voucher.cumulative_amount)
        self.final: dict[str, Any] | None = None  # the paywall's payment-receipt data
        self._buffer = b""
        self._bytes = 0
        self._paid_for = self.status.ceiling  # the ceiling an increment was last sent over
        self._asked_last = False  # the last event was an ask: the site is paused for a voucher

    @property
    def channel_hex(self) -> str:
        return "0x" + bytes(self.pending.channel.config.channel_id).hex()

    @property
    def delivered_total(self) -> int:
        """The charged total the units received come to."""
        return self.base + self.status.units * self.terms.unit_price

    def feed(self, chunk: bytes) -> tuple[bytes, bool]:
        """The content in ``chunk`` for the caller, and whether the next increment is due."""
        if self.terms.unit_bytes:
            self._bytes += len(chunk)
            self.status.units = self._bytes // self.terms.unit_bytes
            return chunk, self._due()
        events, self._buffer = split_events(self._buffer + chunk)
        out, due = [], False
        for one in events:
            found = payment_event(one)
            if found is None:
                self.status.units += 1
                self._asked_last = False
                out.append(one)
            elif found[0] == NEED_VOUCHER:
                self._asked_last = True
                due = self._asked(found[1]) or due
            elif found[0] == RECEIPT:
                self.final = found[1]
        return b"".join(out), due

    def end(self) -> bytes:
        """What is left when the body ends: a last event without its blank line, or the
        last, shorter unit of a chunked body."""
        rest, self._buffer = self._buffer, b""
        if (self.terms.unit_bytes and self._bytes % self.terms.unit_bytes) or rest:
            self.status.units += 1
        return rest

    @property
    def given_up(self) -> bool:
        """This client pays no more and the site is paused for a voucher: every unit paid for
        has arrived, and nothing will until the site's pause times out, so the transport
        breaks the stream off instead of waiting for that (the site records the units
        delivered, as on any disconnect). The site is paused once it has asked (SSE) or
        once every byte paid for has arrived (a chunked body, which cannot ask). An ask
        before that is a hostile site's: what was paid for is still read."""
        if self.status.stopped is None or self.delivered_total < self.status.ceiling:
            return False
        return bool(self.terms.unit_bytes) or self._asked_last

    def _due(self) -> bool:
        """Everything paid for has arrived (and this ceiling is not paid over yet)."""
        if self.status.stopped is not None or self._paid_for > self.status.ceiling:
            return False
        return self.delivered_total >= self.status.ceiling

    def _asked(self, ask: dict[str, Any]) -> bool:
        """An in-band ask: paid only if it is for this channel, for exactly one increment
        over the last ceiling, and every unit paid for has arrived (a site asking sooner is
        refused: it would have the client pay ahead of delivery)."""
        wanted = self.status.ceiling + self.terms.unit_price * self.terms.increment
        if ask.get("channel") != self.channel_hex or ask.get("ceiling") != str(wanted):
            self._refuse(f"the site asked for a voucher that is not this stream's next: {ask}")
            return False
        if self.delivered_total < self.status.ceiling:
            self._refuse(
                f"the site asked for the next voucher after {self.status.units} units, "
                f"before delivering what {self.status.ceiling} paid for"
            )
            return False
        return self._due()

    def _refuse(self, why: str) -> None:
        _log.warning("%s: %s", self.pending.site, why)
        self.status.stopped = self.status.stopped or why

    def sent(self, pending: Any) -> None:
        """An increment's voucher has been signed over the current ceiling."""
        self._paid_for = pending.voucher.cumulative_amount
        self.pending = pending


def stream_status(response: Any) -> StreamStatus | None:
    """The :class:`StreamStatus` of a response micropay's transports (httpx) or the requests
    adapter paid as a stream (None for any other response). Read it after the body."""
    status = getattr(response, "extensions", {}).get(STATUS_EXTENSION)  # httpx
    if status is None:  # requests (micropay.requests_adapter)
        status = getattr(getattr(response, "raw", None), "stream_status", None)
    return status if isinstance(status, StreamStatus) else None


STATUS_EXTENSION: Final = "micropay.stream"
