// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TestERC20Base} from "./TestERC20Base.sol";

/// @title NoReturnToken
/// @notice USDT-style: `transfer` and `transferFrom` return nothing at all (and revert on
/// failure). Code that decodes a bool from their return data reverts on every transfer.
/// @dev WARNING: test token.
contract NoReturnToken is TestERC20Base {
    function transfer(address to, uint256 amount) external {
        _move(msg.sender, to, amount, amount);
    }

    function transferFrom(address from, address to, uint256 amount) external {
        _spendAllowance(from, msg.sender, amount);
        _move(from, to, amount, amount);
    }
}
