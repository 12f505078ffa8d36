"""ERC-20 helpers: balances, approvals and EIP-2612 permits, plus the test token's mint.

The ABI is the mock token's (``contracts/test/MockERC20Permit.sol``), a superset of ERC-20
with EIP-2612, so the same client talks to any standard token; only :meth:`TokenClient.mint`
is specific to the mock, which tests, benchmarks and the demo deploy.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import Web3Exception
from web3.types import TxParams, TxReceipt

from micropay._contracts import _REVERTS, ContractClient, Sender
from micropay.errors import ContractCodeError

_REFUSALS: tuple[type[Exception], ...] = (*_REVERTS, Web3Exception)
_NOBODY = "0x0000000000000000000000000000000000000000"
# Views every ERC-20 has, each answering one 32-byte word (``decimals`` is optional).
_PROBES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("totalSupply", ()),
    ("balanceOf", (_NOBODY,)),
    ("allowance", (_NOBODY, _NOBODY)),
)


class TokenClient(ContractClient):
    """An ERC-20 (with EIP-2612 where the token has it).

    Building one checks that the address behaves like an ERC-20 (it has code, and
    ``totalSupply``, ``balanceOf`` and ``allowance`` each answer one word): an approval
    sent to an address without code "succeeds" and a later transfer from it moves nothing.
    """

    ARTIFACT = "MockERC20Permit"

    def __init__(self, w3: Web3, address: str) -> None:
        super().__init__(w3, address)
        self._check_erc20()

    def _check_erc20(self) -> None:
        def refuse(why: str) -> ContractCodeError:
            return ContractCodeError(
                f"{self.address} on chain {self.w3.eth.chain_id} is not an ERC-20 token: {why}"
            )

        if not self.w3.eth.get_code(self.address):
            raise refuse("the address holds no code")
        for name, args in _PROBES:
            call: TxParams = {
                "to": self.address,
                "data": self.contract.functions[name](*args)._encode_transaction_data(),
            }
            try:
                answer = bytes(self.w3.eth.call(call))
            except _REFUSALS:
                raise refuse(f"{name}() reverted") from None
            if len(answer) != 32:
                raise refuse(f"{name}() answered {len(answer)} bytes, not one 32-byte word")

    def balance_of(self, owner: str) -> int:
        return int(self._read(self.contract.functions.balanceOf(owner)))

    def allowance(self, owner: str, spender: str) -> int:
        return int(self._read(self.contract.functions.allowance(owner, spender)))

    def decimals(self) -> int:
        return int(self._read(self.contract.functions.decimals()))

    def approve(self, spender: str, amount: int, sender: Sender) -> TxReceipt:
        return self._transact(self.contract.functions.approve(spender, amount), sender)

    def ensure_allowance(self, spender: str, amount: int, sender: Sender) -> TxReceipt | None:
        """Approve ``spender`` for ``amount`` unless ``sender`` already allows that much:
        what every payer does before a contract pulls its tokens (``None``: nothing sent)."""
        owner = sender if isinstance(sender, str) else sender.address
        if self.allowance(owner, spender) >= amount:
            return None
        return self.approve(spender, amount, sender)

    def transfer(self, to: str, amount: int, sender: Sender) -> TxReceipt:
        return self._transact(self.contract.functions.transfer(to, amount), sender)

    def mint(self, to: str, amount: int, sender: Sender) -> TxReceipt:
        """Mint on the mock token (anyone may); real tokens have no such function."""
        return self._transact(self.contract.functions.mint(to, amount), sender)

    def sign_permit(
        self, owner: LocalAccount, spender: str, value: int, deadline: int
    ) -> tuple[int, bytes, bytes]:
        """An EIP-2612 permit ``(v, r, s)`` letting ``spender`` pull ``value`` from ``owner``."""
        functions = self.contract.functions
        signed = Account.sign_typed_data(
            owner.key,
            {
                "name": self._read(functions.name()),
                "version": "1",
                "chainId": self.w3.eth.chain_id,
                "verifyingContract": self.address,
            },
            {
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ]
            },
            {
                "owner": owner.address,
                "spender": spender,
                "value": value,
                "nonce": self._read(functions.nonces(owner.address)),
                "deadline": deadline,
            },
        )
        return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")
