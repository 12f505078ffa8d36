// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title RebasingToken
/// @notice A token whose balances change without transfers (stETH, AMPL): holders own
/// shares, and `balanceOf` is shares times a scale anyone may change with `rebase`. A
/// negative rebase shrinks every holder's balance, the micropay contracts' included,
/// which then owe more than they hold: why rebasing tokens are unsupported.
/// @dev WARNING: test token. `totalSupply` counts shares, not balances.
contract RebasingToken {
    /// @notice A transfer asked for more than the sender's balance.
    error RebasingToken_InsufficientBalance(address account, uint256 balance, uint256 needed);
    /// @notice `transferFrom` asked for more than the allowance.
    error RebasingToken_InsufficientAllowance(address spender, uint256 allowance, uint256 needed);

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    uint256 private constant _ONE = 1e18;

    uint8 public constant decimals = 18;
    /// @notice Balance per share, times 1e18.
    uint256 public scale = _ONE;
    uint256 public totalSupply;
    mapping(address owner => mapping(address spender => uint256)) public allowance;
    mapping(address account => uint256) public sharesOf;

    function balanceOf(address account) public view returns (uint256) {
        return sharesOf[account] * scale / _ONE;
    }

    /// @notice Change every balance at once: `newScale` / 1e18 per share.
    function rebase(uint256 newScale) external {
        scale = newScale;
    }

    function mint(address to, uint256 amount) external {
        uint256 shares = amount * _ONE / scale;
        totalSupply += shares;
        sharesOf[to] += shares;
        emit Transfer(address(0), to, amount);
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _move(msg.sender, to, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < amount) revert RebasingToken_InsufficientAllowance(msg.sender, allowed, amount);
            allowance[from][msg.sender] = allowed - amount;
        }
        _move(from, to, amount);
        return true;
    }

    function _move(address from, address to, uint256 amount) private {
        // Round the shares up, so a transfer never delivers less than `amount`.
        uint256 shares = (amount * _ONE + scale - 1) / scale;
        uint256 held = sharesOf[from];
        if (held < shares) revert RebasingToken_InsufficientBalance(from, balanceOf(from), amount);
        sharesOf[from] = held - shares;
        sharesOf[to] += shares;
        emit Transfer(from, to, amount);
    }
}
