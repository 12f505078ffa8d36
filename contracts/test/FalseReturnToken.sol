// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TestERC20Base} from "./TestERC20Base.sol";

/// @title FalseReturnToken
/// @notice An ERC-20 that reports failure by returning `false` instead of reverting (ZRX,
/// early BAT and many others did): a caller that ignores the return value believes a
/// transfer happened that did not. `setFailing(true)` makes every transfer fail that way.
/// @dev WARNING: test token.
contract FalseReturnToken is TestERC20Base {
    /// @notice Whether every transfer returns false (moving nothing), solvent or not.
    bool public failing;

    function setFailing(bool failing_) external {
        failing = failing_;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        if (failing || !_canMove(msg.sender, msg.sender, amount)) return false;
        _move(msg.sender, to, amount, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        if (failing || !_canMove(msg.sender, from, amount)) return false;
        _spendAllowance(from, msg.sender, amount);
        _move(from, to, amount, amount);
        return true;
    }
}
