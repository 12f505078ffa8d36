// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TestERC20Base} from "./TestERC20Base.sol";

/// @title BlocklistToken
/// @notice USDC-style blocklist: transfers to a blocked address revert. A payout to a
/// blocked payee, payer or recipient can never succeed, whoever sends it.
/// @dev WARNING: test token; anyone may block anyone.
contract BlocklistToken is TestERC20Base {
    /// @notice The token refuses to send to `account`.
    error BlocklistToken_Blocked(address account);

    mapping(address account => bool) public blocked;

    function setBlocked(address account, bool isBlocked) external {
        blocked[account] = isBlocked;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        if (blocked[to]) revert BlocklistToken_Blocked(to);
        _move(msg.sender, to, amount, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        if (blocked[to]) revert BlocklistToken_Blocked(to);
        _spendAllowance(from, msg.sender, amount);
        _move(from, to, amount, amount);
        return true;
    }
}
