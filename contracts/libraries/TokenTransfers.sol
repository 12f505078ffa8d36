// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title TokenTransfers
/// @notice Moves native ETH (token = address(0)) and ERC-20 tokens for the micropay
/// singletons, surviving the token behaviours that break naive code.
/// @dev Behaviour, which both PaymentChannels and Streams document and test:
/// - tokens that return nothing (USDT-style) are accepted; tokens that return `false`, or
///   revert, make the transfer revert with `TokenTransfers_TransferFailed`;
/// - an "ERC-20" address with no code is refused (a call to it would silently succeed);
/// - `pullExact` measures what actually arrived, so a fee-on-transfer token is credited
///   with the amount received, never with the amount asked for;
/// - rebasing tokens are NOT supported: a contract balance that shrinks on its own breaks
///   solvency for everyone using that token. Use a wrapped, non-rebasing version.
/// Callers must hold a reentrancy lock around `pullExact`: measuring the balance before
/// and after a transfer double-counts if the token re-enters and deposits in between.
library TokenTransfers {
    /// @notice A token transfer reverted, returned false, or the token has no code.
    error TokenTransfers_TransferFailed(address token, address to, uint256 amount);
    /// @notice The ETH sent with the call does not match the amount the call names.
    error TokenTransfers_WrongValue(uint256 sent, uint256 expected);
    /// @notice ETH was sent with a call that moves an ERC-20 token.
    error TokenTransfers_UnexpectedValue(uint256 sent);

    /// @notice Take `amount` of `token` from msg.sender (ETH: it came as msg.value) and
    /// return how much actually arrived.
    function pullExact(address token, uint256 amount) internal returns (uint256 received) {
        if (token == address(0)) {
            if (msg.value != amount) revert TokenTransfers_WrongValue(msg.value, amount);
            return amount;
        }
        if (msg.value != 0) revert TokenTransfers_UnexpectedValue(msg.value);
        uint256 before = _balanceOfThis(token);
        _call(token, abi.encodeCall(IERC20Minimal.transferFrom, (msg.sender, address(this), amount)), address(this), amount);
        // A token can only lower our balance across its own transferFrom by being hostile
        // (rebasing mid-call); the checked subtraction then reverts, crediting nothing.
        received = _balanceOfThis(token) - before;
    }

    /// @notice Send `amount` of `token` (ETH if address(0)) to `to`. A zero amount is a no-op.
    function push(address token, address to, uint256 amount) internal {
        if (amount == 0) return;
        if (token == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert TokenTransfers_TransferFailed(token, to, amount);
        } else {
            _call(token, abi.encodeCall(IERC20Minimal.transfer, (to, amount)), to, amount);
        }
    }

    function _call(address token, bytes memory data, address to, uint256 amount) private {
        (bool ok, bytes memory returned) = token.call(data);
        // Accept `true` or no return data at all (USDT-style); an empty return from an
        // address without code is not a transfer, so that case needs the code check.
        if (!ok || (returned.length == 0 ? token.code.length == 0 : !abi.decode(returned, (bool)))) {
            revert TokenTransfers_TransferFailed(token, to, amount);
        }
    }

    function _balanceOfThis(address token) private view returns (uint256) {
        (bool ok, bytes memory returned) = token.staticcall(abi.encodeCall(IERC20Minimal.balanceOf, (address(this))));
        if (!ok || returned.length < 32) revert TokenTransfers_TransferFailed(token, address(this), 0);
        return abi.decode(returned, (uint256));
    }
}

/// @dev The three ERC-20 functions the library calls.
interface IERC20Minimal {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
}
