// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title TestERC20Base
/// @notice The plain ERC-20 bookkeeping the hostile test tokens share. Each token in the zoo
/// overrides only the part of a transfer it misbehaves in, so a test failure points at the
/// one behaviour under test.
/// @dev WARNING: for tests only. Anyone may mint, which makes these tokens worthless as money.
abstract contract TestERC20Base {
    /// @notice A transfer asked for more than the sender's balance.
    error TestERC20_InsufficientBalance(address account, uint256 balance, uint256 needed);
    /// @notice `transferFrom` asked for more than the allowance.
    error TestERC20_InsufficientAllowance(address spender, uint256 allowance, uint256 needed);

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    uint8 public constant decimals = 18;
    uint256 public totalSupply;
    mapping(address owner => mapping(address spender => uint256)) public allowance;
    mapping(address account => uint256) internal _balances;

    function balanceOf(address account) public view virtual returns (uint256) {
        return _balances[account];
    }

    function mint(address to, uint256 amount) external virtual {
        totalSupply += amount;
        // unchecked: a balance is at most totalSupply, which the checked add above bounds.
        unchecked {
            _balances[to] += amount;
        }
        emit Transfer(address(0), to, amount);
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    /// @dev Whether `from` can send `amount` on `spender`'s behalf (spender == from: no
    /// allowance needed). Tokens that return false instead of reverting ask this first.
    function _canMove(address spender, address from, uint256 amount) internal view returns (bool) {
        if (_balances[from] < amount) return false;
        return spender == from || allowance[from][spender] >= amount;
    }

    /// @dev Spend `spender`'s allowance from `from` (an infinite allowance is never spent).
    function _spendAllowance(address from, address spender, uint256 amount) internal {
        uint256 allowed = allowance[from][spender];
        if (allowed == type(uint256).max) return;
        if (allowed < amount) revert TestERC20_InsufficientAllowance(spender, allowed, amount);
        // unchecked: allowed >= amount was just checked.
        unchecked {
            allowance[from][spender] = allowed - amount;
        }
    }

    /// @dev Move `sent` out of `from` and `received` (at most `sent`) into `to`; the
    /// difference is burned, which is how fee-on-transfer tokens lose value in transit.
    function _move(address from, address to, uint256 sent, uint256 received) internal {
        uint256 balance = _balances[from];
        if (balance < sent) revert TestERC20_InsufficientBalance(from, balance, sent);
        // unchecked: balance >= sent >= received, and balances are bounded by totalSupply.
        unchecked {
            _balances[from] = balance - sent;
            _balances[to] += received;
            totalSupply -= sent - received;
        }
        emit Transfer(from, to, received);
    }
}
