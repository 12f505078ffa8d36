"""What every contract client shares: deploy or attach, send transactions, decode reverts.

Clients take a plain :class:`web3.Web3` and a *sender* per transaction: either an
eth-account ``LocalAccount`` (the transaction is signed here, so any node works, including
public testnets) or an address the node itself can sign for (anvil, hardhat, the
in-process chain). Reverts come back as :class:`~micropay.errors.ContractRevertError`
subclasses named after the contract's custom error, with decoded arguments, whether they
happen while estimating gas, in an ``eth_call`` or in a mined transaction.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeAlias, TypeVar, cast

from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_typing import ABIError, ChecksumAddress
from eth_utils.abi import function_abi_to_4byte_selector
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3._utils.transactions import fill_transaction_defaults
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    Web3RPCError,
)
from web3.types import TxParams, TxReceipt

from micropay._artifacts import load_artifact, runtime_code_matches
from micropay.errors import (
    ContractCodeError,
    ContractRevertError,
    InsufficientFundsError,
    TransactionFailedError,
    revert_error,
)

Sender: TypeAlias = LocalAccount | str
"""Who sends a transaction: a local key (signed here) or an address the node unlocks."""

_Client = TypeVar("_Client", bound="ContractClient")


def _revert_exceptions() -> tuple[type[Exception], ...]:
    kinds: list[type[Exception]] = [ContractCustomError, ContractLogicError, ContractPanicError]
    try:  # the in-process chain (eth-tester) raises its own type through web3
        from eth_tester.exceptions import TransactionFailed

        kinds.append(TransactionFailed)
    except ImportError:
        pass
    return tuple(kinds)


_REVERTS = _revert_exceptions()


def sender_address(sender: Sender) -> ChecksumAddress:
    """The address a sender transacts from."""
    return to_checksum_address(sender if isinstance(sender, str) else sender.address)


def check_shipped_code(w3: Web3, address: str, name: str) -> None:
    """Raise :class:`ContractCodeError` unless ``address`` runs the shipped contract ``name``."""
    code = bytes(w3.eth.get_code(to_checksum_address(address)))
    if runtime_code_matches(name, code):
        return
    why = "the address holds no code" if not code else f"it holds {len(code)} bytes of other code"
    raise ContractCodeError(
        f"no micropay {name} code at {address} on chain {w3.eth.chain_id}: {why}"
    )


def _error_table(abi: Sequence[Mapping[str, Any]]) -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for entry in abi:
        if entry.get("type") == "error":
            selector = function_abi_to_4byte_selector(cast(ABIError, dict(entry)))
            names = [i["name"] for i in entry["inputs"]]
            types = [i["type"] for i in entry["inputs"]]
            table[selector] = (entry["name"], names, types)
    return table


class ContractClient:
    """Base for micropay's contract clients; subclasses name their artifact."""

    ARTIFACT: ClassVar[str]
    SHIPPED_CODE: ClassVar[bool] = False
    """Whether the address must hold ARTIFACT's shipped runtime code (micropay's singletons).

    Checked once, when the client is built, so no call or transaction ever goes to an
    address left over from another chain or node, where money would be lost or locked.
    """

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address: ChecksumAddress = to_checksum_address(address)
        if self.SHIPPED_CODE:
            check_shipped_code(w3, self.address, self.ARTIFACT)
        abi = load_artifact(self.ARTIFACT).abi
        self.contract: Contract = w3.eth.contract(address=self.address, abi=list(abi))
        self._errors = _error_table(abi)

    @classmethod
    def attach(cls: type[_Client], w3: Web3, address: str) -> _Client:
        """Use a deployment that already exists, checking there is code at the address
        (for micropay's own contracts: the code it ships)."""
        if not cls.SHIPPED_CODE and not w3.eth.get_code(to_checksum_address(address)):
            raise ContractCodeError(
                f"no contract at {address} on chain {w3.eth.chain_id}: the address holds no code"
            )
        return cls(w3, address)

    @classmethod
    def deploy(cls: type[_Client], w3: Web3, sender: Sender, *args: Any) -> _Client:
        """Deploy the shipped bytecode and return a client attached to it."""
        artifact = load_artifact(cls.ARTIFACT)
        factory = w3.eth.contract(abi=list(artifact.abi), bytecode=artifact.bytecode)
        receipt = send_transaction(w3, factory.constructor(*args), sender)
        address = receipt["contractAddress"]
        if address is None:
            raise TransactionFailedError(f"deploying {cls.ARTIFACT} returned no address")
        return cls(w3, address)

    # -- calls -----------------------------------------------------------------------------

    def _transact(self, call: ContractFunction, sender: Sender, value: int = 0) -> TxReceipt:
        try:
            return send_transaction(self.w3, call, sender, value)
        except _REVERTS as err:
            raise self.decode_revert(err) from err

    def _estimate(self, call: ContractFunction, sender: Sender, value: int = 0) -> int:
        """``eth_estimateGas`` of ``call`` from ``sender`` (no headroom, nothing sent): what a
        dry run shows. A call that would revert raises its named revert."""
        params: TxParams = {"from": sender_address(sender), "value": Web3.to_wei(value, "wei")}
        try:
            return int(call.estimate_gas(params))
        except _REVERTS as err:
            raise self.decode_revert(err) from err
        except Web3RPCError as err:
            revert = _revert_in(err)
            if revert is not None:
                raise self.decode_revert(revert) from err
            raise TransactionFailedError(
                f"the node cannot estimate it: {_rpc_message(err)}"
            ) from None

    def _read(self, call: ContractFunction, block: int | None = None) -> Any:
        """Call at the latest block, or as of block number ``block``."""
        try:
            return call.call() if block is None else call.call(block_identifier=block)
        except _REVERTS as err:
            raise self.decode_revert(err) from err

    def decode_revert(self, err: Exception) -> ContractRevertError:
        """Turn web3's revert exception into a named micropay exception."""
        data = _revert_data(err)
        raw = _revert_bytes(data)
        if raw is not None and len(raw) >= 4 and raw[:4] in self._errors:
            name, names, types = self._errors[raw[:4]]
            try:
                values = abi_decode(types, raw[4:])
            except Exception:  # malformed revert data: report it raw below
                values = None
            if values is not None:
                arguments = {n: _plain(v, t) for n, v, t in zip(names, values, types, strict=True)}
                return revert_error(name, arguments)
        return ContractRevertError("Unknown", {"data": str(data)}, f"call reverted: {err}")


def _revert_data(err: Exception) -> object:
    """The revert payload: web3 puts it in ``.data`` (a JSON-RPC error in ``.rpc_response``),
    eth-tester wraps bytes in its args."""
    seen: BaseException | None = err
    while seen is not None:  # web3's eth-tester bridge re-raises with the bytes in __context__
        data = getattr(seen, "data", None)
        response = getattr(seen, "rpc_response", None)  # a JSON-RPC error: its error.data
        if data is None and isinstance(response, dict) and isinstance(response.get("error"), dict):
            data = response["error"].get("data")
        if isinstance(data, dict):  # hardhat: {"message": ..., "data": "0x..."}
            data = data.get("data")
        if data is not None:
            return data
        for arg in seen.args:
            if isinstance(arg, bytes):
                return arg
            if isinstance(arg, str) and (literal := _bytes_literal(arg)) is not None:
                return literal  # eth-tester's eth_call: "execution reverted: b'...'"
            inner = getattr(arg, "args", ())
            if inner and isinstance(inner[0], bytes):
                return inner[0]
        seen = seen.__cause__ or seen.__context__
    return None


def _bytes_literal(text: str) -> bytes | None:
    """The bytes in a message that ends with a Python bytes literal, else None."""
    _, _, tail = text.rpartition("execution reverted: ")
    if not tail.startswith(("b'", 'b"')):
        return None
    try:
        value = ast.literal_eval(tail)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, bytes) else None


def _revert_bytes(data: object) -> bytes | None:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes(HexBytes(data))
        except ValueError:
            return None
    return None


def _plain(value: Any, abi_type: str) -> Any:
    """A decoded argument as a person reads it: hex bytes, checksummed addresses."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if abi_type == "address":
        return to_checksum_address(value)
    return value


class RawCall:
    """Plain calldata (or none: an ETH transfer) shaped like a contract call for
    :func:`send_transaction`."""

    def __init__(self, w3: Web3, to: str, data: bytes = b"") -> None:
        self.w3, self.to, self.data = w3, to, data

    def build_transaction(self, params: TxParams) -> TxParams:
        tx: TxParams = {**params, "to": to_checksum_address(self.to), "data": self.data}
        filled: TxParams = fill_transaction_defaults(self.w3, tx)
        return filled


_PLACEHOLDER_GAS = 1  # lets web3 build a transaction without estimating it

# Gas a transaction may need beyond its estimate. The estimate simulates the call at the
# pending block's time, but the block that includes it can be a second later, and a path
# that depends on time may then write a storage slot the estimate left alone: a stream
# whose streamed total first reaches one unit writes a fresh slot (20,000 gas), so an exact
# estimate runs out of gas (audit finding A-2). Unused gas is not charged.
_HEADROOM_SHARE = 4  # a quarter of the estimate,
_HEADROOM_MIN = 25_000  # and at least one fresh storage slot with change
_LARGE = 15_000_000  # above this, the padded limit is checked against the block's


def with_headroom(w3: Web3, estimate: int) -> int:
    """The gas limit to send for ``estimate``: padded, but never above the block gas limit."""
    padded = estimate + max(estimate // _HEADROOM_SHARE, _HEADROOM_MIN)
    if padded > _LARGE:
        padded = min(padded, int(w3.eth.get_block("latest")["gasLimit"]))
    return max(padded, estimate)


def _build(w3: Web3, call: Any, params: TxParams) -> TxParams:
    """Build the transaction with gas estimated in the *pending* block.

    Outcomes depend on block time (a cliff, a withdraw delay). Estimating against the latest
    block, as anvil does by default, simulates the call at the previous block's time: a call
    sent just as a deadline passes would be refused by the estimate, or get a gas limit for
    the other branch. Nodes that cannot estimate in "pending" (eth-tester) already simulate
    in the pending block, so they get web3's own estimate.
    """
    tx: TxParams = call.build_transaction({**params, "gas": _PLACEHOLDER_GAS})
    del tx["gas"]
    try:
        tx["gas"] = w3.eth.estimate_gas(tx, "pending")
    except Web3RPCError:
        tx = call.build_transaction(params)
    tx["gas"] = with_headroom(w3, int(tx["gas"]))
    return tx


def send_transaction(
    w3: Web3,
    call: ContractFunction | Any,
    sender: Sender,
    value: int = 0,
    *,
    gas: int | None = None,
) -> TxReceipt:
    """Build, sign (for a local key) or hand to the node, send, and wait for the receipt.

    Gas is estimated by the node (with headroom, see :func:`with_headroom`), so a call that
    would revert raises before anything is sent; ``gas`` sends that limit instead, without
    an estimate. A transaction that is mined but fails is replayed to find out why: a revert
    is raised as web3's revert exception (which contract clients name), anything else as
    :class:`TransactionFailedError`, saying whether it ran out of gas.
    """
    tx_hash, tx = submit_transaction(w3, call, sender, value, gas=gas)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1:
        raise _why_it_failed(w3, tx, receipt)
    return receipt


def submit_transaction(
    w3: Web3,
    call: ContractFunction | Any,
    sender: Sender,
    value: int = 0,
    *,
    gas: int | None = None,
) -> tuple[HexBytes, TxParams]:
    """The sending half of :func:`send_transaction`: returns the hash (and what was sent)
    without waiting, for a caller that must record the hash before the wait can time out."""
    address = sender_address(sender)
    params: TxParams = {"from": address, "value": Web3.to_wei(value, "wei")}
    sent: TxParams | None = None  # the transaction, once built
    try:
        if gas is None:
            tx = _build(w3, call, params)
        else:
            tx = call.build_transaction({**params, "gas": gas})
        sent = tx
        if isinstance(sender, str):
            return HexBytes(w3.eth.send_transaction(tx)), tx
        tx["nonce"] = w3.eth.get_transaction_count(address, "pending")
        signed = sender.sign_transaction(dict(tx))  # type: ignore[arg-type]
        return HexBytes(w3.eth.send_raw_transaction(signed.raw_transaction)), tx
    except Web3RPCError as err:
        # A node that runs a transaction as it takes it (hardhat) reports its failure here.
        revert = _revert_in(err)
        if revert is not None:
            raise revert from err
        message = _rpc_message(err)
        if "ran out of gas" in message.lower() and sent is not None:
            raise TransactionFailedError(
                f"the transaction ran out of gas: it used all of its limit of {sent['gas']:,}"
            ) from None
        if "insufficient funds" in message.lower():
            raise InsufficientFundsError(
                f"{address} cannot pay value {value} plus gas: it holds "
                f"{w3.eth.get_balance(address)} wei"
            ) from None
        raise TransactionFailedError(f"the node refused the transaction: {message}") from None


_REPLAYED = ("from", "to", "data", "value", "gas")


def _why_it_failed(w3: Web3, tx: TxParams, receipt: TxReceipt) -> Exception:
    """Explain a mined transaction that failed: out of gas, or the revert it replays to.

    The replay runs on the state before the transaction's block, so a failure that depended
    on an earlier transaction in the same block may replay as a success; it is then reported
    as a plain failure.
    """
    name = "0x" + bytes(receipt["transactionHash"]).hex()
    limit = int(tx["gas"])
    if receipt["gasUsed"] >= limit:
        return TransactionFailedError(
            f"transaction {name} ran out of gas: it used all of its limit of {limit:,}"
        )
    replay = cast(TxParams, {k: v for k, v in tx.items() if k in _REPLAYED})
    try:
        w3.eth.call(replay, receipt["blockNumber"] - 1)
    except _REVERTS as err:
        return err
    except Web3RPCError as err:
        revert = _revert_in(err)
        if revert is not None:
            return revert
    return TransactionFailedError(f"transaction {name} failed (status 0)")


def _rpc_message(err: Web3RPCError) -> str:
    response = err.rpc_response
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        return str(response["error"].get("message", err))
    return str(err)


def _revert_in(err: Web3RPCError) -> ContractCustomError | None:
    """A JSON-RPC error that carries revert data, as the revert exception clients decode."""
    raw = _revert_bytes(_revert_data(err))
    return ContractCustomError(str(err), data="0x" + raw.hex()) if raw else None
