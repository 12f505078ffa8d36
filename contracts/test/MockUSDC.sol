// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title MockUSDC
/// @notice A USDC-like ERC-20 for tests and the demo: 6 decimals, EIP-2612 `permit` and
/// EIP-3009 `transferWithAuthorization` / `receiveWithAuthorization` / `cancelAuthorization`,
/// under USDC's EIP-712 domain (name, version "2", chainId, verifyingContract). It is what an
/// x402 `exact` payment moves: the payer signs a transfer, anyone submits it.
/// @dev WARNING: unrestricted `mint` makes this worthless as money. An EIP-3009 authorization
/// protects the payer against a changed recipient, amount or window and against replay (each
/// nonce is usable once, whichever of transfer, receive or cancel uses it first); it does not
/// protect against front-running of `transferWithAuthorization` (anyone holding the signed
/// authorization may submit it: use `receiveWithAuthorization` when the payee must be the
/// submitter). The `bytes signature` overloads accept 65-byte ECDSA signatures only (USDC also
/// accepts EIP-1271 wallets there; these tests have no need of it).
contract MockUSDC {
    /// @notice The permit's deadline has passed.
    error MockUSDC_PermitExpired(uint256 deadline, uint256 timestamp);
    /// @notice A signature was not made by the account it names (or was malformed or malleable).
    error MockUSDC_InvalidSignature(address signer, address recovered);
    /// @notice A transfer or burn asked for more than the balance holds.
    error MockUSDC_InsufficientBalance(address account, uint256 balance, uint256 needed);
    /// @notice `transferFrom` asked for more than the allowance holds.
    error MockUSDC_InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    /// @notice Transfers to or from the zero address are refused, as ERC-20 expects.
    error MockUSDC_ZeroAddress();
    /// @notice The authorization's window has not opened: valid only after `validAfter`.
    error MockUSDC_AuthorizationNotYetValid(uint256 validAfter, uint256 timestamp);
    /// @notice The authorization's window has closed: valid only before `validBefore`.
    error MockUSDC_AuthorizationExpired(uint256 validBefore, uint256 timestamp);
    /// @notice The authorizer's nonce was already used or cancelled.
    error MockUSDC_AuthorizationUsedOrCanceled(address authorizer, bytes32 nonce);
    /// @notice `receiveWithAuthorization` may only be submitted by its recipient.
    error MockUSDC_CallerMustBePayee(address caller, address payee);

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    /// @notice EIP-3009: `nonce` of `authorizer` was used by a transfer or a receive.
    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    /// @notice EIP-3009: `nonce` of `authorizer` was cancelled before anyone used it.
    event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce);

    // The secp256k1 order halved: signatures with a larger s are the malleable twin.
    uint256 private constant _HALF_CURVE_ORDER =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant _VERSION_HASH = keccak256("2");
    bytes32 private constant _PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");

    /// @notice EIP-3009's type hashes, public as USDC has them.
    bytes32 public constant TRANSFER_WITH_AUTHORIZATION_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 public constant RECEIVE_WITH_AUTHORIZATION_TYPEHASH = keccak256(
        "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 public constant CANCEL_AUTHORIZATION_TYPEHASH =
        keccak256("CancelAuthorization(address authorizer,bytes32 nonce)");

    uint8 public constant decimals = 6;
    /// @notice The EIP-712 domain version, USDC's.
    string public constant version = "2";
    string public name;
    string public symbol;
    uint256 public totalSupply;
    mapping(address account => uint256) public balanceOf;
    mapping(address owner => mapping(address spender => uint256)) public allowance;
    /// @notice EIP-2612 nonces (sequential, unlike EIP-3009's random ones).
    mapping(address owner => uint256) public nonces;
    mapping(address authorizer => mapping(bytes32 nonce => bool)) private _authorizationStates;

    bytes32 private immutable _nameHash;
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    constructor(string memory name_, string memory symbol_) {
        name = name_;
        symbol = symbol_;
        _nameHash = keccak256(bytes(name_));
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
    }

    /// @notice The EIP-712 domain separator, rebuilt if the chain id has changed (a fork).
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    /// @notice EIP-3009: whether `nonce` of `authorizer` has been used or cancelled.
    function authorizationState(address authorizer, bytes32 nonce) external view returns (bool) {
        return _authorizationStates[authorizer][nonce];
    }

    function mint(address to, uint256 amount) external {
        if (to == address(0)) revert MockUSDC_ZeroAddress();
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
            if (allowed < amount) revert MockUSDC_InsufficientAllowance(msg.sender, allowed, amount);
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
        // Checks
        if (block.timestamp > deadline) revert MockUSDC_PermitExpired(deadline, block.timestamp);
        bytes32 structHash = keccak256(abi.encode(_PERMIT_TYPEHASH, owner, spender, value, nonces[owner], deadline));
        _requireSignedBy(owner, structHash, v, r, s);
        // Effects
        // unchecked: a nonce counts signatures, it cannot reach 2**256.
        unchecked {
            nonces[owner]++;
        }
        allowance[owner][spender] = value;
        emit Approval(owner, spender, value);
    }

    /// @notice EIP-3009: move `value` from `from` to `to` on `from`'s signature; anyone may submit.
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) public {
        bytes32 structHash = keccak256(
            abi.encode(TRANSFER_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce)
        );
        _useAuthorization(from, structHash, validAfter, validBefore, nonce, v, r, s);
        _transfer(from, to, value);
    }

    /// @notice `transferWithAuthorization` with the signature packed as 65 bytes `r ‖ s ‖ v`.
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external {
        (uint8 v, bytes32 r, bytes32 s) = _splitSignature(from, signature);
        transferWithAuthorization(from, to, value, validAfter, validBefore, nonce, v, r, s);
    }

    /// @notice EIP-3009: like `transferWithAuthorization`, but only `to` may submit it, so a
    /// watcher of the mempool cannot front-run the payee's own call.
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) public {
        if (to != msg.sender) revert MockUSDC_CallerMustBePayee(msg.sender, to);
        bytes32 structHash = keccak256(
            abi.encode(RECEIVE_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce)
        );
        _useAuthorization(from, structHash, validAfter, validBefore, nonce, v, r, s);
        _transfer(from, to, value);
    }

    /// @notice `receiveWithAuthorization` with the signature packed as 65 bytes `r ‖ s ‖ v`.
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external {
        (uint8 v, bytes32 r, bytes32 s) = _splitSignature(from, signature);
        receiveWithAuthorization(from, to, value, validAfter, validBefore, nonce, v, r, s);
    }

    /// @notice EIP-3009: the authorizer gives up an unused nonce, so a signed authorization
    /// carrying it can never be submitted.
    function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) public {
        // Checks
        if (_authorizationStates[authorizer][nonce]) revert MockUSDC_AuthorizationUsedOrCanceled(authorizer, nonce);
        _requireSignedBy(authorizer, keccak256(abi.encode(CANCEL_AUTHORIZATION_TYPEHASH, authorizer, nonce)), v, r, s);
        // Effects
        _authorizationStates[authorizer][nonce] = true;
        emit AuthorizationCanceled(authorizer, nonce);
    }

    /// @notice `cancelAuthorization` with the signature packed as 65 bytes `r ‖ s ‖ v`.
    function cancelAuthorization(address authorizer, bytes32 nonce, bytes calldata signature) external {
        (uint8 v, bytes32 r, bytes32 s) = _splitSignature(authorizer, signature);
        cancelAuthorization(authorizer, nonce, v, r, s);
    }

    /// @dev Check an authorization's window, nonce and signature, then mark its nonce used.
    function _useAuthorization(
        address authorizer,
        bytes32 structHash,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) private {
        // Checks
        if (block.timestamp <= validAfter) revert MockUSDC_AuthorizationNotYetValid(validAfter, block.timestamp);
        if (block.timestamp >= validBefore) revert MockUSDC_AuthorizationExpired(validBefore, block.timestamp);
        if (_authorizationStates[authorizer][nonce]) revert MockUSDC_AuthorizationUsedOrCanceled(authorizer, nonce);
        _requireSignedBy(authorizer, structHash, v, r, s);
        // Effects
        _authorizationStates[authorizer][nonce] = true;
        emit AuthorizationUsed(authorizer, nonce);
    }

    /// @dev Revert unless `signer` made `(v, r, s)` over this domain's digest of `structHash`.
    function _requireSignedBy(address signer, bytes32 structHash, uint8 v, bytes32 r, bytes32 s) private view {
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
        address recovered = uint256(s) > _HALF_CURVE_ORDER ? address(0) : ecrecover(digest, v, r, s);
        if (recovered == address(0) || recovered != signer) revert MockUSDC_InvalidSignature(signer, recovered);
    }

    /// @dev Unpack a 65-byte `r ‖ s ‖ v` signature; any other length is refused as invalid.
    function _splitSignature(address signer, bytes calldata signature)
        private
        pure
        returns (uint8 v, bytes32 r, bytes32 s)
    {
        if (signature.length != 65) revert MockUSDC_InvalidSignature(signer, address(0));
        r = bytes32(signature[0:32]);
        s = bytes32(signature[32:64]);
        v = uint8(signature[64]);
    }

    function _transfer(address from, address to, uint256 amount) private {
        if (to == address(0)) revert MockUSDC_ZeroAddress();
        uint256 balance = balanceOf[from];
        if (balance < amount) revert MockUSDC_InsufficientBalance(from, balance, amount);
        // unchecked: balance >= amount was just checked, and the receiver's balance is
        // bounded by totalSupply.
        unchecked {
            balanceOf[from] = balance - amount;
            balanceOf[to] += amount;
        }
        emit Transfer(from, to, amount);
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _nameHash, _VERSION_HASH, block.chainid, address(this)));
    }
}
