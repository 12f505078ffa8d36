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
/// WARNING: money leaves only to the configured payee (claims, close) or payer (close,
/// finished withdrawals). Rebasing tokens are not supported (see TokenTransfers). A payer
/// or payee whose `receive` reverts can only block payments to itself.
contract PaymentChannels is IPaymentChannels, ReentrancyLock {
    /// @inheritdoc IPaymentChannels
    uint256 public constant MIN_WITHDRAW_DELAY = 10 minutes;
    /// @inheritdoc IPaymentChannels
    uint256 public constant MAX_WITHDRAW_DELAY = 90 days;
    /// @inheritdoc IPaymentChannels
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)");

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
    function voucherDigest(bytes32 id, uint256 cumulativeAmount) public view returns (bytes32 digest) {
        // keccak256("\x19\x01" ‖ domainSeparator ‖ keccak256(abi.encode(VOUCHER_TYPEHASH, id,
        // cumulativeAmount))), built in scratch memory so a batch of claims allocates nothing.
        bytes32 separator = DOMAIN_SEPARATOR();
        bytes32 typehash = VOUCHER_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typehash)
            mstore(add(ptr, 0x20), id)
            mstore(add(ptr, 0x40), cumulativeAmount)
            let structHash := keccak256(ptr, 0x60)
            mstore(0x00, 0x1901)
            mstore(0x20, separator)
            mstore(0x40, structHash)
            digest := keccak256(0x1e, 0x42)
            mstore(0x40, ptr) // restore the free memory pointer
        }
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
        uint256 refund;
        // unchecked: claimed <= deposited is kept by every claim.
        unchecked {
            refund = deposited - claimed;
        }
        emit Withdrawn(id, claimed, refund);
        // Interactions
        TokenTransfers.push(config.token, config.payer, refund);
    }

    // ---------------------------------------------------------------------------------------
    // Payee side
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc IPaymentChannels
    function claim(ChannelConfig calldata config, uint256 cumulativeAmount, bytes calldata signature)
        external
        nonReentrant
        returns (uint256 amount)
    {
        // Checks and effects (in _settle); interactions
        amount = _settle(channelId(config), config.authorizer, cumulativeAmount, signature);
        TokenTransfers.push(config.token, config.payee, amount);
    }

    /// @inheritdoc IPaymentChannels
    function claimMany(Claim[] calldata claims) external nonReentrant returns (uint256 total) {
        uint256 count = claims.length;
        if (count == 0) revert PaymentChannels_EmptyBatch();
        // Payouts are batched per run of consecutive claims to the same payee in the same
        // token: the common case (one payee settling its channels) pays out once.
        address payee = claims[0].config.payee;
        address token = claims[0].config.token;
        uint256 pending;
        for (uint256 i; i < count; ++i) {
            Claim calldata item = claims[i];
            ChannelConfig calldata config = item.config;
            if (config.payee != payee || config.token != token) {
                TokenTransfers.push(token, payee, pending);
                (payee, token, pending) = (config.payee, config.token, 0);
            }
            uint256 amount = _settle(channelId(config), config.authorizer, item.cumulativeAmount, item.signature);
            // unchecked: each amount is part of a deposit below 2^112, and a call cannot hold
            // 2^100 claims.
            unchecked {
                pending += amount;
                total += amount;
            }
        }
        TokenTransfers.push(token, payee, pending);
    }

    /// @inheritdoc IPaymentChannels
    function close(ChannelConfig calldata config, uint256 cumulativeAmount, bytes calldata signature)
        external
        nonReentrant
    {
        bytes32 id = channelId(config);
        // Checks
        if (msg.sender != config.payee) revert PaymentChannels_NotPayee(id, msg.sender);
        (uint256 deposited, uint256 claimed,) = _loadLive(id);
        uint256 paid;
        if (cumulativeAmount > claimed) {
            _checkVoucher(id, deposited, config.authorizer, cumulativeAmount, signature);
            // unchecked: cumulativeAmount > claimed was just checked.
            unchecked {
                paid = cumulativeAmount - claimed;
            }
            claimed = cumulativeAmount;
            emit Claimed(id, claimed);
        }
        // Effects
        uint256 refund;
        // unchecked: claimed <= deposited (checked by _checkVoucher, kept by every claim).
        unchecked {
            refund = deposited - claimed;
        }
        _store(id, deposited, claimed, _FINISHED);
        emit Closed(id, claimed, refund);
        // Interactions
        TokenTransfers.push(config.token, config.payee, paid);
        TokenTransfers.push(config.token, config.payer, refund);
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

    /// @dev Checks a claim and records it; returns what it pays. The caller transfers.
    function _settle(bytes32 id, address authorizer, uint256 cumulativeAmount, bytes calldata signature)
        private
        returns (uint256 amount)
    {
        // Checks
        (uint256 deposited, uint256 claimed, uint256 closesAt) = _loadLive(id);
        if (cumulativeAmount <= claimed) revert PaymentChannels_NothingToClaim(id, cumulativeAmount, claimed);
        _checkVoucher(id, deposited, authorizer, cumulativeAmount, signature);
        // Effects
        // unchecked: cumulativeAmount > claimed was just checked.
        unchecked {
            amount = cumulativeAmount - claimed;
        }
        _store(id, deposited, cumulativeAmount, closesAt);
        emit Claimed(id, cumulativeAmount);
    }

    /// @dev Reverts unless `signature` is the authorizer's voucher for at most `deposited`.
    function _checkVoucher(
        bytes32 id,
        uint256 deposited,
        address authorizer,
        uint256 cumulativeAmount,
        bytes calldata signature
    ) private view {
        if (cumulativeAmount > deposited) {
            revert PaymentChannels_VoucherExceedsDeposit(id, cumulativeAmount, deposited);
        }
        bytes32 digest = voucherDigest(id, cumulativeAmount);
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
                address signer = ecrecover(digest, v, r, s);
                if (signer != address(0) && signer == authorizer) return;
            }
        }
        // Contract authorizers (smart accounts, multisigs) answer EIP-1271. EOAs never get
        // here with a good signature, so they pay nothing for this path.
        if (authorizer.code.length != 0) {
            (bool ok, bytes memory answer) =
                authorizer.staticcall(abi.encodeWithSelector(_EIP1271_MAGIC, digest, signature));
            if (ok && answer.length >= 32 && bytes32(answer) == bytes32(_EIP1271_MAGIC)) return;
        }
        revert PaymentChannels_InvalidVoucherSignature(id, authorizer);
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
