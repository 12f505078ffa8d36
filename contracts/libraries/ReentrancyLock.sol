// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title ReentrancyLock
/// @notice One lock per transaction in transient storage (EIP-1153): about 300 gas a call
/// instead of the 5,000+ a storage-based guard costs, and it clears itself.
abstract contract ReentrancyLock {
    /// @notice A guarded function was entered again before it returned.
    error ReentrancyLock_Reentered();

    bool private transient _locked;

    modifier nonReentrant() {
        if (_locked) revert ReentrancyLock_Reentered();
        _locked = true;
        _;
        _locked = false;
    }
}
