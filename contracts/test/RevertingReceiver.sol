// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title RevertingReceiver
/// @notice A contract account that refuses ETH while `accepting` is false (a multisig
/// without a fallback, a contract that reverts on purpose to block a payout). It can act as
/// a payer, payee, sender or recipient through `execute`.
/// @dev WARNING: test contract; anyone may call `execute`.
contract RevertingReceiver {
    /// @notice ETH was refused.
    error RevertingReceiver_Refused(address from, uint256 amount);

    bool public accepting;

    function setAccepting(bool accepting_) external {
        accepting = accepting_;
    }

    /// @notice Make any call from this account, forwarding `value` (sent along or held).
    function execute(address to, uint256 value, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory result) = to.call{value: value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 0x20), mload(result))
            }
        }
        return result;
    }

    receive() external payable {
        if (!accepting) revert RevertingReceiver_Refused(msg.sender, msg.value);
    }
}
