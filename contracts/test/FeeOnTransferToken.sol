// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TestERC20Base} from "./TestERC20Base.sol";

/// @title FeeOnTransferToken
/// @notice An ERC-20 that burns a fee out of every transfer: the receiver gets less than the
/// sender sent (PAXG, STA and USDT's dormant fee switch behave this way).
/// @dev WARNING: test token. The contracts must credit deposits with what arrived, never
/// with what was asked for.
contract FeeOnTransferToken is TestERC20Base {
    /// @notice The fee, in basis points of each transfer.
    uint256 public immutable feeBps;

    constructor(uint256 feeBps_) {
        feeBps = feeBps_;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _move(msg.sender, to, amount, amount - amount * feeBps / 10_000);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        _spendAllowance(from, msg.sender, amount);
        _move(from, to, amount, amount - amount * feeBps / 10_000);
        return true;
    }
}
