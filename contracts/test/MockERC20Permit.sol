// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title MockERC20Permit
/// @notice A plain ERC-20 with EIP-2612 permit, for tests only: anyone may mint.
/// @dev WARNING: unrestricted `mint` makes this worthless as money. It exists so tests of
/// the channel and stream contracts can fund actors and exercise permit-based deposits
/// with a token whose behaviour is exactly the standard's (hostile tokens live beside it).
contract MockERC20Permit {
    /// @notice The permit's deadline has passed.
    error MockERC20Permit_PermitExpired(uint256 deadline, uint256 timestamp);
    /// @notice The permit was not signed by the owner it names.
    error MockERC20Permit_InvalidPermitSignature(address owner, address recovered);
    /// @notice A transfer or burn asked for more than the balance holds.
    error MockERC20Permit_InsufficientBalance(address account, uint256 balance, uint256 needed);
    /// @notice `transferFrom` asked for more than the allowance holds.
    error MockERC20Permit_InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    /// @notice Transfers to or from the zero address are refused, as ERC-20 expects.
    error MockERC20Permit_ZeroAddress();

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    // The secp256k1 order halved: signatures with a larger s are the malleable twin.
    uint256 private constant _HALF_CURVE_ORDER =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    bytes32 private constant _PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");
    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    string public name;
    string public symbol;
    uint8 public immutable decimals;
    uint256 public totalSupply;
    mapping(address account => uint256) public balanceOf;
    mapping(address owner => mapping(address spender => uint256)) public allowance;
    mapping(address owner => uint256) public nonces;

    bytes32 private immutable _nameHash;
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) {
        name = name_;
        symbol = symbol_;
        decimals = decimals_;
        _nameHash = keccak256(bytes(name_));
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
    }

    /// @notice The EIP-712 domain separator, rebuilt if the chain id has changed (a fork).
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    function mint(address to, uint256 amount) external {
        if (to == address(0)) revert MockERC20Permit_ZeroAddress();
        totalSupply += amount;
        // unchecked: a balance is at most totalSupply, which the checked add above bounds.
        unchecked {
            balanceOf[to] += amount;
        }
        emit Transfer(address(0), to, amount);
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _transfer(msg.sender, to, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < amount) revert MockERC20Permit_InsufficientAllowance(msg.sender, allowed, amount);
            // unchecked: allowed >= amount was just checked.
            unchecked {
                allowance[from][msg.sender] = allowed - amount;
            }
        }
        _transfer(from, to, amount);
        return true;
    }

    /// @notice EIP-2612: approve `spender` by the owner's signature instead of a transaction.
    function permit(
        address owner,
        address spender,
        uint256 value,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external {
        if (block.timestamp > deadline) revert MockERC20Permit_PermitExpired(deadline, block.timestamp);
        bytes32 structHash = keccak256(abi.encode(_PERMIT_TYPEHASH, owner, spender, value, nonces[owner]++, deadline));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
        address recovered = uint256(s) > _HALF_CURVE_ORDER ? address(0) : ecrecover(digest, v, r, s);
        if (recovered == address(0) || recovered != owner) {
            revert MockERC20Permit_InvalidPermitSignature(owner, recovered);
        }
        allowance[owner][spender] = value;
        emit Approval(owner, spender, value);
    }

    function _transfer(address from, address to, uint256 amount) private {
        if (to == address(0)) revert MockERC20Permit_ZeroAddress();
        uint256 balance = balanceOf[from];
        if (balance < amount) revert MockERC20Permit_InsufficientBalance(from, balance, amount);
        // unchecked: balance >= amount was just checked, and the receiver's balance is
        // bounded by totalSupply.
        unchecked {
            balanceOf[from] = balance - amount;
            balanceOf[to] += amount;
        }
        emit Transfer(from, to, amount);
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _nameHash, keccak256("1"), block.chainid, address(this)));
    }
}
