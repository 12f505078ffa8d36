// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title GasBurningReceiver
/// @notice A contract account whose `receive` burns all the gas it is given, the griefing
/// variant of a refusing receiver: a caller that forwards all gas loses 63/64 of it and
/// must still fail cleanly with the rest. Acts as a party through `execute`.
/// @dev WARNING: test contract; anyone may call `execute`.
contract GasBurningReceiver {
    uint256 public spins;

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
        // Each turn writes storage, so the loop cannot be optimised away; it ends only when
        // the gas does.
        while (true) {
            ++spins;
        }
    }
}
