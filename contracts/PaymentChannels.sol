// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IPaymentChannels} from "./interfaces/IPaymentChannels.sol";
import {ReentrancyLock} from "./libraries/ReentrancyLock.sol";
import {TokenTransfers} from "./libraries/TokenTransfers.sol";

/// @title PaymentChannels
/// @notice One deployment serves every unidirectional payment channel, in ETH or any ERC-20.
/// @dev Storage per channel is one packed word: deposited (bits 0-111), claimed (bits
/// 112-223) and closesAt (bits 224-255, with _FINISHED as a sentinel), read and written
/// whole, so every operation costs one SLOAD and at most one SSTORE. The configuration is
/// never stored: it is hashed into the channel id and passed as calldata, which costs less
/// than a slot. A configuration with dirty high bits hashes to another id, but it can
/// never be opened: `deposit` reads every non-bytes32 field through Solidity's validating
/// calldata accessors, which revert on dirty bits.
///
/// A voucher is a ceiling: the payee settles the total it charged, at most the ceiling and
/// at most the deposit, and only the payee settles (its own call, or a relayed one carrying
/// its `PayeeClaim` signature). `deposited` is the deposits less the payee's refunds.
///
/// WARNING: money leaves only to the configured payee (claims, close) or payer (close,
/// refunds, finished withdrawals). Rebasing tokens are not supported (see TokenTransfers). A payer
/// or payee whose `receive` reverts can only block payments to itself.
contract PaymentChannels is IPaymentChannels, ReentrancyLock {
    /// @inheritdoc IPaymentChannels
    uint256 public constant MIN_WITHDRAW_DELAY = 10 minutes;
    /// @inheritdoc IPaymentChannels
    uint256 public constant MAX_WITHDRAW_DELAY = 90 days;
    /// @inheritdoc IPaymentChannels
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)");
    /// @inheritdoc IPaymentChannels
    bytes32 public constant PAYEE_CLAIM_TYPEHASH = keccak256("PayeeClaim(bytes32 channelId,uint256 totalClaimed)");

    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant _NAME_HASH = keccak256("micropay");
    bytes32 private constant _VERSION_HASH = keccak256("1");
    // secp256k1 order / 2: a signature with a larger s is the malleable twin of a valid one.
    uint256 private constant _HALF_CURVE_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    bytes4 private constant _EIP1271_MAGIC = 0x1626ba7e;
    // closesAt value of a finished channel; real deadlines are below it until year 2106.
    uint256 private constant _FINISHED = type(uint32).max;
    uint256 private constant _MAX_AMOUNT = type(uint112).max;


    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    mapping(bytes32 channelId => uint256 packed) private _channels;

    constructor() {
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IPaymentChannels
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    /// @inheritdoc IPaymentChannels
    function eip712Domain()
        external
        view
        returns (bytes1, string memory, string memory, uint256, address, bytes32, uint256[] memory)
    {
        // 0x0f: name, version, chainId and verifyingContract are set; no salt, no extensions.
        return (hex"0f", "micropay", "1", block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    /// @inheritdoc IPaymentChannels
    function channelId(ChannelConfig calldata config) public pure returns (bytes32 id) {
        // The same bytes as keccak256(abi.encode(config)): the struct is six static words.
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            calldatacopy(ptr, config, 0xc0)
            id := keccak256(ptr, 0xc0)
        }
    }

    /// @inheritdoc IPaymentChannels
    function channel(bytes32 id) external view returns (ChannelState memory) {
        (uint256 deposited, uint256 claimed, uint256 closesAt) = _load(id);
        bool finished = closesAt == _FINISHED;
        return ChannelState(deposited, claimed, finished ? 0 : closesAt, finished);
    }

    /// @inheritdoc IPaymentChannels
    function voucherDigest(bytes32 id, uint256 cumulativeAmount) public view returns (bytes32) {
        return _typedDigest(VOUCHER_TYPEHASH, id, cumulativeAmount);
    }

    /// @inheritdoc IPaymentChannels
    function payeeClaimDigest(bytes32 id, uint256 totalClaimed) public view returns (bytes32) {
        return _typedDigest(PAYEE_CLAIM_TYPEHASH, id, totalClaimed);
    }

    // ---------------------------------------------------------------------------------------
    // Payer side
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IPaymentChannels
    function deposit(ChannelConfig calldata config, uint256 amount) external payable returns (bytes32 id) {
        id = _validConfigId(config);
        address token = config.token;
        // ETH deposits make no external call, so only token deposits need the lock (it
        // protects pullExact's before/after balance measurement).
        if (token == address(0)) {
            _deposit(id, token, amount);
        } else {
            _depositLocked(id, token, amount);
        }
    }

    /// @inheritdoc IPaymentChannels
    function depositWithPermit(
        ChannelConfig calldata config,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (bytes32 id) {
        id = _validConfigId(config);
        // A permit can be front-run (its signature is public once in the mempool); that
        // only spends its nonce, so if the allowance is there anyway, carry on.
        try IERC20Permit(config.token).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        _depositLocked(id, config.token, amount);
    }

    /// @inheritdoc IPaymentChannels
    function requestWithdraw(ChannelConfig calldata config) external nonReentrant {
        bytes32 id = channelId(config);
        // Checks
        if (msg.sender != config.payer) revert PaymentChannels_NotPayer(id, msg.sender);
        (uint256 deposited, uint256 claimed, uint256 closesAt) = _loadLive(id);
        if (closesAt != 0) revert PaymentChannels_WithdrawAlreadyRequested(id, closesAt);
        // Effects. The delay was bounded when the channel opened, so this stays below
        // _FINISHED until 2106.
        closesAt = block.timestamp + config.withdrawDelay;
        _store(id, deposited, claimed, closesAt);
        emit WithdrawRequested(id, closesAt);
    }

    /// @inheritdoc IPaymentChannels
    function finishWithdraw(ChannelConfig calldata config) external nonReentrant {
        bytes32 id = channelId(config);
        // Checks
        (uint256 deposited, uint256 claimed, uint256 closesAt) = _loadLive(id);
        if (closesAt == 0) revert PaymentChannels_WithdrawNotRequested(id);
        if (block.timestamp < closesAt) revert PaymentChannels_WithdrawNotReady(id, closesAt, block.timestamp);
        // Effects
        _store(id, deposited, claimed, _FINISHED);
        uint256 refunded;
        // unchecked: claimed <= deposited is kept by every claim and refund.
        unchecked {
            refunded = deposited - claimed;
        }
        emit Withdrawn(id, claimed, refunded);
        // Interactions
        TokenTransfers.push(config.token, config.payer, refunded);
    }

    // ---------------------------------------------------------------------------------------
    // Payee side
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IPaymentChannels
    function claim(ChannelConfig calldata config, uint256 totalClaimed, uint256 ceiling, bytes calldata signature)
        external
        nonReentrant
        returns (uint256 amount)
    {
        bytes32 id = channelId(config);
        // Checks (the rest in _settle) and effects
        if (msg.sender != config.payee) revert PaymentChannels_NotPayee(id, msg.sender);
        amount = _settle(id, config.authorizer, totalClaimed, ceiling, signature);
        // Interactions
        TokenTransfers.push(config.token, config.payee, amount);
    }

    /// @inheritdoc IPaymentChannels
    function claimFor(
        ChannelConfig calldata config,
        uint256 totalClaimed,
        uint256 ceiling,
        bytes calldata signature,
        bytes calldata payeeSignature
    ) external nonReentrant returns (uint256 amount) {
        bytes32 id = channelId(config);
        // Checks (the rest in _settle) and effects
        _checkPayeeClaim(id, config.payee, totalClaimed, payeeSignature);
        amount = _settle(id, config.authorizer, totalClaimed, ceiling, signature);
        // Interactions
        TokenTransfers.push(config.token, config.payee, amount);
    }

    /// @inheritdoc IPaymentChannels
    function claimMany(Claim[] calldata claims) external nonReentrant returns (uint256 total) {
        // The payee's own batch, the path a payee repeats most, has its own loop: every
        // payout goes to the caller, so runs are cut by token alone and no payee signature
        // is looked at (claimManyFor is the general loop).
        uint256 count = claims.length;
        if (count == 0) revert PaymentChannels_EmptyBatch();
        address token = claims[0].config.token;
        uint256 pending;
        for (uint256 i; i < count; ++i) {
            Claim calldata item = claims[i];
            ChannelConfig calldata config = item.config;
            bytes32 id = channelId(config);
            if (msg.sender != config.payee) revert PaymentChannels_NotPayee(id, msg.sender);
            if (config.token != token) {
                TokenTransfers.push(token, msg.sender, pending);
                (token, pending) = (config.token, 0);
            }
            uint256 amount = _settle(id, config.authorizer, item.totalClaimed, item.ceiling, item.signature);
            // unchecked: each amount is part of a deposit below 2^112, and a call cannot hold
            // 2^100 claims.
            unchecked {
                pending += amount;
                total += amount;
            }
        }
        TokenTransfers.push(token, msg.sender, pending);
    }

    /// @inheritdoc IPaymentChannels
    function claimManyFor(Claim[] calldata claims, bytes[] calldata payeeSignatures)
        external
        nonReentrant
        returns (uint256 total)
    {
        if (payeeSignatures.length != claims.length) {
            revert PaymentChannels_PayeeSignatureCount(claims.length, payeeSignatures.length);
        }
        uint256 count = claims.length;
        if (count == 0) revert PaymentChannels_EmptyBatch();
        // Payouts are batched per run of consecutive claims to the same payee in the same
        // token.
        address payee = claims[0].config.payee;
        address token = claims[0].config.token;
        uint256 pending;
        for (uint256 i; i < count; ++i) {
            Claim calldata item = claims[i];
            ChannelConfig calldata config = item.config;
            bytes32 id = channelId(config);
            _checkPayeeClaim(id, config.payee, item.totalClaimed, payeeSignatures[i]);
            if (config.payee != payee || config.token != token) {
                TokenTransfers.push(token, payee, pending);
                (payee, token, pending) = (config.payee, config.token, 0);
            }
            uint256 amount = _settle(id, config.authorizer, item.totalClaimed, item.ceiling, item.signature);
            // unchecked: as in claimMany.
            unchecked {
                pending += amount;
                total += amount;
            }
        }
        TokenTransfers.push(token, payee, pending);
    }

    /// @inheritdoc IPaymentChannels
    function close(ChannelConfig calldata config, uint256 totalClaimed, uint256 ceiling, bytes calldata signature)
        external
        nonReentrant
    {
        bytes32 id = channelId(config);
        // Checks
        if (msg.sender != config.payee) revert PaymentChannels_NotPayee(id, msg.sender);
        (uint256 deposited, uint256 claimed,) = _loadLive(id);
        uint256 paid;
        if (totalClaimed > claimed) {
            _checkVoucher(id, deposited, config.authorizer, totalClaimed, ceiling, signature);
            // unchecked: totalClaimed > claimed was just checked.
            unchecked {
                paid = totalClaimed - claimed;
            }
            claimed = totalClaimed;
            emit Claimed(id, claimed);
        }
        // Effects
        uint256 refunded;
        // unchecked: claimed <= deposited (checked by _checkVoucher, kept by every claim and
        // refund).
        unchecked {
            refunded = deposited - claimed;
        }
        _store(id, deposited, claimed, _FINISHED);
        emit Closed(id, claimed, refunded);
        // Interactions
        TokenTransfers.push(config.token, config.payee, paid);
        TokenTransfers.push(config.token, config.payer, refunded);
    }

    /// @inheritdoc IPaymentChannels
    function refund(ChannelConfig calldata config, uint256 amount) external {
        // An ETH refund's one external call comes after every effect and cannot touch a
        // token balance measurement in flight, so, as with deposits, only token refunds need
        // the lock.
        address token = config.token;
        if (token == address(0)) {
            _refund(config, token, amount);
        } else {
            _refundLocked(config, token, amount);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------

    function _validConfigId(ChannelConfig calldata config) private pure returns (bytes32) {
        if (config.payer == address(0) || config.payee == address(0) || config.authorizer == address(0)) {
            revert PaymentChannels_ZeroAddress();
        }
        if (config.withdrawDelay < MIN_WITHDRAW_DELAY || config.withdrawDelay > MAX_WITHDRAW_DELAY) {
            revert PaymentChannels_WithdrawDelayOutOfRange(config.withdrawDelay, MIN_WITHDRAW_DELAY, MAX_WITHDRAW_DELAY);
        }
        return channelId(config);
    }

    function _depositLocked(bytes32 id, address token, uint256 amount) private nonReentrant {
        _deposit(id, token, amount);
    }

    function _refundLocked(ChannelConfig calldata config, address token, uint256 amount) private nonReentrant {
        _refund(config, token, amount);
    }

    function _refund(ChannelConfig calldata config, address token, uint256 amount) private {
        bytes32 id = channelId(config);
        // Checks
        if (msg.sender != config.payee) revert PaymentChannels_NotPayee(id, msg.sender);
        (uint256 deposited, uint256 claimed, uint256 closesAt) = _load(id);
        if (closesAt == _FINISHED) revert PaymentChannels_ChannelFinished(id);
        if (amount == 0) revert PaymentChannels_ZeroRefund(id);
        uint256 unspent;
        // unchecked: claimed <= deposited is kept by every claim and refund.
        unchecked {
            unspent = deposited - claimed;
        }
        // (A channel never funded has nothing unspent: no separate existence check.)
        if (amount > unspent) revert PaymentChannels_RefundExceedsUnspent(id, amount, unspent);
        // Effects
        // unchecked: amount <= unspent <= deposited was just checked.
        unchecked {
            deposited -= amount;
        }
        _store(id, deposited, claimed, closesAt);
        emit Refunded(id, deposited);
        // Interactions
        TokenTransfers.push(token, config.payer, amount);
    }

    function _deposit(bytes32 id, address token, uint256 amount) private {
        // Checks
        (uint256 deposited, uint256 claimed, uint256 closesAt) = _load(id);
        if (closesAt == _FINISHED) revert PaymentChannels_ChannelFinished(id);
        // Interactions first, by necessity: a fee-on-transfer token is credited with what
        // arrived, which is only known after the transfer. The reentrancy lock (token
        // deposits) makes this safe: nothing re-enters between the transfer and the effects.
        uint256 received = TokenTransfers.pullExact(token, amount);
        if (received == 0) revert PaymentChannels_ZeroDeposit(id);
        // Effects
        deposited += received;
        if (deposited > _MAX_AMOUNT) revert PaymentChannels_DepositTooLarge(id, deposited);
        _store(id, deposited, claimed, closesAt);
        emit Deposited(id, msg.sender, received, deposited);
    }

    /// @dev Checks a claim and records it; returns what it pays. The caller has checked who
    /// may settle, and transfers.
    function _settle(bytes32 id, address authorizer, uint256 totalClaimed, uint256 ceiling, bytes calldata signature)
        private
        returns (uint256 amount)
    {
        // Checks
        (uint256 deposited, uint256 claimed, uint256 closesAt) = _loadLive(id);
        if (totalClaimed <= claimed) revert PaymentChannels_NothingToClaim(id, totalClaimed, claimed);
        _checkVoucher(id, deposited, authorizer, totalClaimed, ceiling, signature);
        // Effects
        // unchecked: totalClaimed > claimed was just checked.
        unchecked {
            amount = totalClaimed - claimed;
        }
        _store(id, deposited, totalClaimed, closesAt);
        emit Claimed(id, totalClaimed);
    }

    /// @dev Reverts unless `totalClaimed` is within both the deposit and the ceiling, and
    /// `signature` is the authorizer's voucher for `ceiling`.
    function _checkVoucher(
        bytes32 id,
        uint256 deposited,
        address authorizer,
        uint256 totalClaimed,
        uint256 ceiling,
        bytes calldata signature
    ) private view {
        if (totalClaimed > ceiling) revert PaymentChannels_TotalExceedsCeiling(id, totalClaimed, ceiling);
        if (totalClaimed > deposited) revert PaymentChannels_TotalExceedsDeposit(id, totalClaimed, deposited);
        if (!_isValidSignature(authorizer, voucherDigest(id, ceiling), signature)) {
            revert PaymentChannels_InvalidVoucherSignature(id, authorizer);
        }
    }

    /// @dev Reverts unless `payeeSignature` is the payee's `PayeeClaim` for `totalClaimed`.
    function _checkPayeeClaim(bytes32 id, address payee, uint256 totalClaimed, bytes calldata payeeSignature)
        private
        view
    {
        if (!_isValidSignature(payee, payeeClaimDigest(id, totalClaimed), payeeSignature)) {
            revert PaymentChannels_InvalidPayeeSignature(id, payee);
        }
    }

    /// @dev Whether `signature` is `signer`'s over `digest`: low-s ECDSA (65 bytes, or 64 in
    /// EIP-2098 form) recovering a non-zero `signer`, or else EIP-1271 if `signer` is a contract.
    function _isValidSignature(address signer, bytes32 digest, bytes calldata signature) private view returns (bool) {
        uint256 length = signature.length;
        if (length == 65 || length == 64) {
            bytes32 r;
            bytes32 s;
            uint8 v;
            assembly ("memory-safe") {
                r := calldataload(signature.offset)
                s := calldataload(add(signature.offset, 32))
                v := byte(0, calldataload(add(signature.offset, 64)))
            }
            if (length == 64) {
                // EIP-2098 compact form (r, yParity ‖ s): one calldata word cheaper per claim.
                v = uint8(uint256(s) >> 255) + 27;
                s = bytes32(uint256(s) & (type(uint256).max >> 1));
            }
            if (uint256(s) <= _HALF_CURVE_ORDER) {
                address recovered = ecrecover(digest, v, r, s);
                if (recovered != address(0) && recovered == signer) return true;
            }
        }
        // Contract signers (smart accounts, multisigs) answer EIP-1271. EOAs never get here
        // with a good signature, so they pay nothing for this path.
        if (signer.code.length != 0) {
            (bool ok, bytes memory answer) =
                signer.staticcall(abi.encodeWithSelector(_EIP1271_MAGIC, digest, signature));
            if (ok && answer.length >= 32 && bytes32(answer) == bytes32(_EIP1271_MAGIC)) return true;
        }
        return false;
    }

    /// @dev keccak256("\x19\x01" ‖ domainSeparator ‖ keccak256(abi.encode(typehash, id, amount))),
    /// built in scratch memory so a batch of claims allocates nothing.
    function _typedDigest(bytes32 typehash, bytes32 id, uint256 amount) private view returns (bytes32 digest) {
        bytes32 separator = DOMAIN_SEPARATOR();
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typehash)
            mstore(add(ptr, 0x20), id)
            mstore(add(ptr, 0x40), amount)
            let structHash := keccak256(ptr, 0x60)
            mstore(0x00, 0x1901)
            mstore(0x20, separator)
            mstore(0x40, structHash)
            digest := keccak256(0x1e, 0x42)
            mstore(0x40, ptr) // restore the free memory pointer
        }
    }

    function _load(bytes32 id) private view returns (uint256 deposited, uint256 claimed, uint256 closesAt) {
        uint256 word = _channels[id];
        deposited = word & _MAX_AMOUNT;
        claimed = (word >> 112) & _MAX_AMOUNT;
        closesAt = word >> 224;
    }

    /// @dev Loads a channel that exists and is not finished.
    function _loadLive(bytes32 id) private view returns (uint256 deposited, uint256 claimed, uint256 closesAt) {
        (deposited, claimed, closesAt) = _load(id);
        if (deposited == 0) revert PaymentChannels_ChannelNotFound(id);
        if (closesAt == _FINISHED) revert PaymentChannels_ChannelFinished(id);
    }

    /// @dev Callers keep claimed <= deposited <= _MAX_AMOUNT and closesAt <= _FINISHED, so
    /// the fields never overlap.
    function _store(bytes32 id, uint256 deposited, uint256 claimed, uint256 closesAt) private {
        _channels[id] = deposited | (claimed << 112) | (closesAt << 224);
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(this)));
    }
}

/// @dev EIP-2612's permit, the only token function PaymentChannels calls directly.
interface IERC20Permit {
    function permit(address owner, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external;
}
