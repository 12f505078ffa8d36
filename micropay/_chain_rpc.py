"""The embedded chain's JSON-RPC over HTTP, so a reader in another process can reach it.

The embedded chain (eth-tester) lives inside one Python process and has no endpoint of its
own. ``micropay --network embedded serve`` mounts :class:`ChainRpc` at ``/rpc`` beside the
site, and a reader pays with ``micropay --network http://127.0.0.1:PORT/rpc get …``.

Each request goes through the serving process's own Web3 (its request formatters turn wire
params into what eth-tester takes), and the result is written back in wire form: integers
as hex quantities, bytes as hex. Web3 clients read that as from any node. The endpoint
gives whoever reaches it the dev keys' chain (throw-away, but a chain): the CLI serves it
on loopback only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread
from hexbytes import HexBytes
from starlette.types import ASGIApp, Receive, Scope, Send
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError
from web3.middleware import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse

RPC_PATH = "/rpc"
_MAX_BODY = 1 << 20  # a raw transaction deploying a contract is far below a megabyte


def to_wire(value: Any) -> Any:
    """A Web3 result as JSON-RPC writes it: quantities in hex, bytes in hex."""
    if value is None or isinstance(value, (bool, float, str)):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray, HexBytes)):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(key): to_wire(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(item) for item in value]
    return str(value)


MakeRequest = Callable[[RPCEndpoint, Any], RPCResponse]


def one_request_at_a_time(w3: Web3) -> None:
    """Make every request through ``w3`` wait for the one before it.

    eth-tester is not made for concurrent callers, and once its chain is served the site's
    worker threads and the RPC's reach it at the same time.
    """
    lock = threading.RLock()

    class _OneAtATime(Web3Middleware):
        def wrap_make_request(self, make_request: MakeRequest) -> MakeRequest:
            def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
                with lock:
                    return make_request(method, params)

            return middleware

    w3.middleware_onion.add(_OneAtATime, name="micropay_one_request_at_a_time")


class ChainRpc:
    """An ASGI app answering JSON-RPC POSTs (single or batch) from ``w3``'s chain."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        one_request_at_a_time(w3)

    def answer(self, request: Any) -> dict[str, Any]:
        """One JSON-RPC request object to its response object."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, -32600, "invalid request: expected an object with a method")
        ident = request.get("id")
        params = request.get("params", [])
        if not isinstance(params, list):
            return _error(ident, -32602, "params must be a list")
        try:
            result = self.w3.manager.request_blocking(request["method"], params)
        except (ContractLogicError, ContractCustomError) as err:  # a revert: keep its data
            data = err.data if isinstance(err.data, str) else None
            return _error(ident, 3, str(err.message or "execution reverted"), data)
        except Web3RPCError as err:
            found = err.rpc_response.get("error") if err.rpc_response else None
            if isinstance(found, dict):
                return {"jsonrpc": "2.0", "id": ident, "error": found}
            return _error(ident, -32000, str(err))
        except Exception as err:  # the node's own failure, reported like a node would
            return _error(ident, -32000, f"{type(err).__name__}: {err}")
        return {"jsonrpc": "2.0", "id": ident, "result": to_wire(result)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _respond(send, 405, {"error": "POST JSON-RPC requests here"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > _MAX_BODY:
                await _respond(send, 413, _error(None, -32600, "request too large"))
                return
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
        except ValueError:
            await _respond(send, 400, _error(None, -32700, "parse error: not JSON"))
            return
        if isinstance(request, list):
            answers: Any = [await anyio.to_thread.run_sync(self.answer, r) for r in request]
        else:
            answers = await anyio.to_thread.run_sync(self.answer, request)
        await _respond(send, 200, answers)


def with_rpc(app: ASGIApp, rpc: ChainRpc, path: str = RPC_PATH) -> ASGIApp:
    """``app`` with ``rpc`` answering at ``path`` (and only there)."""

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == path:
            await rpc(scope, receive, send)
        else:
            await app(scope, receive, send)

    return route


def _error(ident: Any, code: int, message: str, data: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": ident, "error": error}


async def _respond(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
