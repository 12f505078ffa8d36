// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TestERC20Base} from "./TestERC20Base.sol";

/// @title ReentrantToken
/// @notice An ERC-20 that calls back into another contract in the middle of a transfer,
/// as ERC-777 hooks and malicious tokens do. `arm` sets one call, made once, from inside
/// the next `transfer` or `transferFrom` (before the balances move); its outcome is kept
/// in `lastCallSucceeded` / `lastCallResult` so a test can tell a refused re-entry (the
/// lock's revert data) from one that went through.
/// @dev WARNING: test token. The call runs with the token as msg.sender, which is what a
/// hostile token can do: a token that is also a channel's payee or a stream's recipient
/// re-enters with those rights.
contract ReentrantToken is TestERC20Base {
    /// @notice When the armed call fires.
    enum Trigger {
        None,
        OnTransfer,
        OnTransferFrom
    }

    /// @notice The armed call was made; `succeeded` and `result` say how it ended.
    event Reentered(address indexed target, bool succeeded, bytes result);

    Trigger public trigger;
    address public target;
    bytes public callData;
    bool public lastCallSucceeded;
    bytes public lastCallResult;
    uint256 public callsMade;

    /// @notice Arm one call to `target` with `data`, fired by the next transfer of `when`'s kind.
    function arm(Trigger when, address target_, bytes calldata data) external {
        (trigger, target, callData) = (when, target_, data);
    }

    /// @notice Let the token spend its own balance through another contract (as a payee or
    /// recipient it may need to approve or deposit).
    function execute(address to, bytes calldata data) external returns (bytes memory) {
        (bool ok, bytes memory result) = to.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 0x20), mload(result))
            }
        }
        return result;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _fire(Trigger.OnTransfer);
        _move(msg.sender, to, amount, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        _fire(Trigger.OnTransferFrom);
        _spendAllowance(from, msg.sender, amount);
        _move(from, to, amount, amount);
        return true;
    }

    function _fire(Trigger kind) private {
        if (trigger != kind) return;
        trigger = Trigger.None; // once: a re-entry that transfers must not fire again
        (bool ok, bytes memory result) = target.call(callData);
        (lastCallSucceeded, lastCallResult) = (ok, result);
        ++callsMade;
        emit Reentered(target, ok, result);
    }
}
