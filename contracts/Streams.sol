// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IStreams} from "./interfaces/IStreams.sol";
import {ReentrancyLock} from "./libraries/ReentrancyLock.sol";
import {TokenTransfers} from "./libraries/TokenTransfers.sol";

/// @title Streams
/// @notice The micropay streams singleton: fixed and open-ended payment streams in ETH or any
/// ERC-20. See IStreams for the behaviour and its limits.
/// @dev Gas notes. Immutable parameters travel in calldata and are hashed into the id, so a
/// fixed stream costs one storage slot (withdrawn | canceledAt | flags) and an open-ended
/// one three (clock | accrual | funding), laid out so each operation touches as few as it
/// can: a deposit never reads the accrual slot, a pause never touches the funding slot.
/// Withdrawals and cancellations follow checks-effects-interactions and hold no lock; the
/// functions that pull tokens hold the reentrancy lock, as TokenTransfers requires.
contract Streams is IStreams, ReentrancyLock {
    /// @inheritdoc IStreams
    uint256 public constant RATE_SCALE = 1e18;

    mapping(bytes32 streamId => FixedStreamState) private _fixedStreams;
    mapping(bytes32 streamId => OpenStreamState) private _openStreams;
    /// @dev Written only when a recipient hands a stream on; the state's `transferred` flag
    /// says whether to look here, so streams never transferred never pay for the lookup.
    mapping(bytes32 streamId => address) private _transferredTo;

    // ------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------

    /// @inheritdoc IStreams
    function fixedStreamId(FixedStream calldata stream) external pure returns (bytes32) {
        return _fixedId(stream);
    }

    /// @inheritdoc IStreams
    function openStreamId(OpenStream calldata stream) external pure returns (bytes32) {
        return _openId(stream);
    }

    /// @inheritdoc IStreams
    function getFixedStream(bytes32 streamId) external view returns (FixedStreamState memory) {
        return _fixedStreams[streamId];
    }

    /// @inheritdoc IStreams
    function getOpenStream(bytes32 streamId) external view returns (OpenStreamState memory) {
        return _openStreams[streamId];
    }

    /// @inheritdoc IStreams
    function recipientOf(bytes32 streamId, address originalRecipient) external view returns (address) {
        address transferredTo = _transferredTo[streamId];
        return transferredTo == address(0) ? originalRecipient : transferredTo;
    }

    /// @inheritdoc IStreams
    function fixedStreamAmounts(FixedStream calldata stream)
        external
        view
        returns (uint128 streamed, uint128 withdrawable)
    {
        FixedStreamState memory state = _fixedStreams[_fixedId(stream)];
        if (!state.created) return (0, 0);
        streamed = _streamedFixed(stream, state.canceledAt == 0 ? block.timestamp : state.canceledAt);
        withdrawable = streamed - state.withdrawn;
    }

    /// @inheritdoc IStreams
    function openStreamAmounts(bytes32 streamId)
        external
        view
        returns (uint128 streamed, uint128 withdrawable, uint128 refundable, uint128 debt)
    {
        OpenStreamState memory state = _openStreams[streamId];
        if (state.snapshotTime == 0) return (0, 0, 0, 0);
        streamed = _streamedOpen(state);
        // Invariants: refunded + withdrawn <= deposited, withdrawn <= streamed.
        uint128 funded = state.deposited - state.refunded;
        if (streamed < funded) {
            withdrawable = streamed - state.withdrawn;
            refundable = funded - streamed;
        } else {
            withdrawable = funded - state.withdrawn;
            debt = streamed - funded;
        }
    }

    /// @inheritdoc IStreams
    function fixedStatus(FixedStream calldata stream) external view returns (FixedStatus) {
        FixedStreamState memory state = _fixedStreams[_fixedId(stream)];
        if (!state.created) revert Streams_UnknownStream(_fixedId(stream));
        if (state.canceledAt != 0) {
            return state.withdrawn == _streamedFixed(stream, state.canceledAt)
                ? FixedStatus.Depleted
                : FixedStatus.Canceled;
        }
        if (state.withdrawn == stream.amount) return FixedStatus.Depleted;
        if (block.timestamp >= stream.end) return FixedStatus.Settled;
        return block.timestamp < stream.start ? FixedStatus.Pending : FixedStatus.Streaming;
    }

    /// @inheritdoc IStreams
    function openStatus(bytes32 streamId) external view returns (OpenStatus) {
        OpenStreamState memory state = _openStreams[streamId];
        if (state.snapshotTime == 0) revert Streams_UnknownStream(streamId);
        bool inDebt = _streamedOpen(state) > state.deposited - state.refunded;
        if (state.ratePerSecond == 0) return inDebt ? OpenStatus.PausedInDebt : OpenStatus.Paused;
        return inDebt ? OpenStatus.StreamingInDebt : OpenStatus.Streaming;
    }

    // ------------------------------------------------------------------------------------
    // Fixed streams
    // ------------------------------------------------------------------------------------

    /// @inheritdoc IStreams
    function createFixedStream(FixedStream calldata stream)
        external
        payable
        nonReentrant
        returns (bytes32 streamId)
    {
        // Checks
        streamId = _registerFixed(stream);
        // Interactions
        uint256 received = TokenTransfers.pullExact(stream.token, stream.amount);
        if (received != stream.amount) revert Streams_AmountNotReceived(stream.token, stream.amount, received);
    }

    /// @inheritdoc IStreams
    function createFixedStreams(FixedStream[] calldata streams)
        external
        payable
        nonReentrant
        returns (bytes32[] memory streamIds)
    {
        uint256 count = streams.length;
        if (count == 0) revert Streams_EmptyBatch();
        address token = streams[0].token;
        streamIds = new bytes32[](count);
        uint256 total;
        for (uint256 i; i < count;) {
            FixedStream calldata stream = streams[i];
            if (stream.token != token) revert Streams_BatchTokenMismatch(i, token, stream.token);
            // Checks and effects, stream by stream
            streamIds[i] = _registerFixed(stream);
            // unchecked: each amount is below 2^128 and there are fewer than 2^64 of them.
            unchecked {
                total += stream.amount;
                ++i;
            }
        }
        // Interactions: one transfer funds the whole batch.
        uint256 received = TokenTransfers.pullExact(token, total);
        if (received != total) revert Streams_AmountNotReceived(token, total, received);
    }

    /// @inheritdoc IStreams
    function withdrawFixed(FixedStream calldata stream, address to) external returns (uint128 amount) {
        // Checks
        bytes32 streamId = _fixedId(stream);
        FixedStreamState storage stored = _fixedStreams[streamId];
        FixedStreamState memory state = stored;
        if (!state.created) revert Streams_UnknownStream(streamId);
        _checkWithdrawal(streamId, state.transferred, stream.recipient, to);
        uint128 streamed = _streamedFixed(stream, state.canceledAt == 0 ? block.timestamp : state.canceledAt);
        // Monotonic: withdrawn only ever moves up to a streamed amount, and streamed never decreases.
        amount = streamed - state.withdrawn;
        if (amount == 0) revert Streams_NothingToWithdraw(streamId);
        // Effects
        stored.withdrawn = streamed;
        emit Withdrawn(streamId, to, amount, streamed);
        // Interactions
        TokenTransfers.push(stream.token, to, amount);
    }

    /// @inheritdoc IStreams
    function cancel(FixedStream calldata stream) external returns (uint128 refunded) {
        // Checks
        bytes32 streamId = _fixedId(stream);
        FixedStreamState storage stored = _fixedStreams[streamId];
        FixedStreamState memory state = stored;
        if (!state.created) revert Streams_UnknownStream(streamId);
        if (msg.sender != stream.sender) revert Streams_NotSender(streamId, msg.sender);
        if (!stream.cancelable) revert Streams_NotCancelable(streamId);
        if (state.canceledAt != 0) revert Streams_AlreadyCanceled(streamId, state.canceledAt);
        if (block.timestamp >= stream.end) revert Streams_AlreadySettled(streamId, stream.end);
        uint128 streamed = _streamedFixed(stream, block.timestamp);
        // Before the end, streamed = floor(amount * elapsed / duration) < amount.
        refunded = stream.amount - streamed;
        // Effects. A uint40 holds timestamps until the year 36812.
        stored.canceledAt = uint40(block.timestamp);
        emit Canceled(streamId, refunded, streamed);
        // Interactions
        TokenTransfers.push(stream.token, stream.sender, refunded);
    }

    /// @inheritdoc IStreams
    function transferFixedStream(FixedStream calldata stream, address newRecipient) external {
        bytes32 streamId = _fixedId(stream);
        FixedStreamState storage stored = _fixedStreams[streamId];
        if (!stored.created) revert Streams_UnknownStream(streamId);
        bool transferred = stored.transferred;
        _transferRecipient(streamId, transferred, stream.recipient, newRecipient);
        if (!transferred) stored.transferred = true;
    }

    // ------------------------------------------------------------------------------------
    // Open-ended streams
    // ------------------------------------------------------------------------------------

    /// @inheritdoc IStreams
    function createOpenStream(OpenStream calldata stream, uint128 ratePerSecond, uint128 amount)
        external
        payable
        nonReentrant
        returns (bytes32 streamId)
    {
        // Checks and effects
        streamId = _registerOpen(stream, ratePerSecond);
        if (amount != 0 || msg.value != 0) {
            // Interactions: credit only what arrived; the lock keeps the measurement honest.
            uint256 received = TokenTransfers.pullExact(stream.token, amount);
            // Effects (a fresh stream: received < 2^128 since amount is).
            if (received != 0) {
                _openStreams[streamId].deposited = uint128(received);
                emit Deposited(streamId, msg.sender, received, received);
            }
        }
    }

    /// @inheritdoc IStreams
    function createOpenStreams(
        OpenStream[] calldata streams,
        uint128[] calldata ratesPerSecond,
        uint128[] calldata amounts
    ) external payable nonReentrant returns (bytes32[] memory streamIds) {
        uint256 count = streams.length;
        if (count == 0) revert Streams_EmptyBatch();
        if (ratesPerSecond.length != count || amounts.length != count) {
            revert Streams_BatchLengthMismatch(count, ratesPerSecond.length, amounts.length);
        }
        address token = streams[0].token;
        streamIds = new bytes32[](count);
        uint256 total;
        for (uint256 i; i < count;) {
            OpenStream calldata stream = streams[i];
            if (stream.token != token) revert Streams_BatchTokenMismatch(i, token, stream.token);
            // Checks and effects, stream by stream
            bytes32 streamId = _registerOpen(stream, ratesPerSecond[i]);
            streamIds[i] = streamId;
            uint128 amount = amounts[i];
            if (amount != 0) {
                _openStreams[streamId].deposited = amount;
                emit Deposited(streamId, msg.sender, amount, amount);
            }
            // unchecked: each amount is below 2^128 and there are fewer than 2^64 of them.
            unchecked {
                total += amount;
                ++i;
            }
        }
        // Interactions: one transfer, which must deliver every deposit credited above.
        uint256 received = TokenTransfers.pullExact(token, total);
        if (received != total) revert Streams_AmountNotReceived(token, total, received);
    }

    /// @inheritdoc IStreams
    function deposit(OpenStream calldata stream, uint128 amount)
        external
        payable
        nonReentrant
        returns (uint256 received)
    {
        // Checks
        bytes32 streamId = _openId(stream);
        OpenStreamState storage stored = _openStreams[streamId];
        if (stored.snapshotTime == 0) revert Streams_UnknownStream(streamId);
        if (amount == 0) revert Streams_ZeroAmount();
        // Interactions before effects, deliberately: only what arrived is credited, and the
        // lock stops a token from re-entering between the two balance measurements.
        received = TokenTransfers.pullExact(stream.token, amount);
        if (received == 0) revert Streams_ZeroAmount();
        // Effects
        uint256 totalDeposited = stored.deposited + received;
        if (totalDeposited > type(uint128).max) revert Streams_DepositTooLarge(streamId, totalDeposited);
        stored.deposited = uint128(totalDeposited);
        emit Deposited(streamId, msg.sender, received, totalDeposited);
    }

    /// @inheritdoc IStreams
    function withdrawOpen(OpenStream calldata stream, address to) external returns (uint128 amount) {
        // Checks
        bytes32 streamId = _openId(stream);
        OpenStreamState storage stored = _openStreams[streamId];
        OpenStreamState memory state = stored;
        if (state.snapshotTime == 0) revert Streams_UnknownStream(streamId);
        _checkWithdrawal(streamId, state.transferred, stream.recipient, to);
        uint128 streamed = _streamedOpen(state);
        uint128 funded = state.deposited - state.refunded;
        // The recipient gets what has streamed as far as the money goes: min(streamed, funded).
        uint128 covered = streamed < funded ? streamed : funded;
        amount = covered - state.withdrawn;
        if (amount == 0) revert Streams_NothingToWithdraw(streamId);
        // Effects
        stored.withdrawn = covered;
        emit Withdrawn(streamId, to, amount, covered);
        // Interactions
        TokenTransfers.push(stream.token, to, amount);
    }

    /// @inheritdoc IStreams
    function refund(OpenStream calldata stream, uint128 amount) external {
        // Checks
        bytes32 streamId = _openId(stream);
        OpenStreamState storage stored = _openStreams[streamId];
        OpenStreamState memory state = stored;
        if (state.snapshotTime == 0) revert Streams_UnknownStream(streamId);
        if (msg.sender != stream.sender) revert Streams_NotSender(streamId, msg.sender);
        if (amount == 0) revert Streams_ZeroAmount();
        uint128 streamed = _streamedOpen(state);
        uint128 funded = state.deposited - state.refunded;
        uint128 refundable = streamed < funded ? funded - streamed : 0;
        if (amount > refundable) revert Streams_RefundExceedsUnowed(streamId, amount, refundable);
        // Effects (refunded + amount <= deposited, so it fits)
        uint128 totalRefunded = state.refunded + amount;
        stored.refunded = totalRefunded;
        emit Refunded(streamId, amount, totalRefunded);
        // Interactions
        TokenTransfers.push(stream.token, stream.sender, amount);
    }

    /// @inheritdoc IStreams
    function pause(OpenStream calldata stream) external {
        (bytes32 streamId, OpenStreamState storage stored) = _senderOpen(stream);
        uint128 rate = stored.ratePerSecond;
        if (rate == 0) revert Streams_AlreadyPaused(streamId);
        uint128 totalStreamed = _snapshot(stored, 0);
        emit Paused(streamId, totalStreamed);
    }

    /// @inheritdoc IStreams
    function resume(OpenStream calldata stream, uint128 ratePerSecond) external {
        (bytes32 streamId, OpenStreamState storage stored) = _senderOpen(stream);
        uint128 rate = stored.ratePerSecond;
        if (rate != 0) revert Streams_NotPaused(streamId, rate);
        if (ratePerSecond == 0) revert Streams_ZeroRate();
        // Nothing accrued while paused, so only the clock moves; the remainder carries over.
        stored.ratePerSecond = ratePerSecond;
        stored.snapshotTime = uint40(block.timestamp);
        emit Resumed(streamId, ratePerSecond);
    }

    /// @inheritdoc IStreams
    function adjustRate(OpenStream calldata stream, uint128 ratePerSecond) external {
        (bytes32 streamId, OpenStreamState storage stored) = _senderOpen(stream);
        uint128 rate = stored.ratePerSecond;
        if (rate == 0) revert Streams_StreamPaused(streamId);
        if (ratePerSecond == 0) revert Streams_ZeroRate();
        uint128 totalStreamed = _snapshot(stored, ratePerSecond);
        emit RateAdjusted(streamId, rate, ratePerSecond, totalStreamed);
    }

    /// @inheritdoc IStreams
    function transferOpenStream(OpenStream calldata stream, address newRecipient) external {
        bytes32 streamId = _openId(stream);
        OpenStreamState storage stored = _openStreams[streamId];
        if (stored.snapshotTime == 0) revert Streams_UnknownStream(streamId);
        bool transferred = stored.transferred;
        _transferRecipient(streamId, transferred, stream.recipient, newRecipient);
        if (!transferred) stored.transferred = true;
    }

    // ------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------

    /// @dev keccak256(abi.encode(stream)), hashing the calldata words in place. The ABI
    /// decoder checks a field only when it is read, so a caller can pass fields with dirty
    /// high bits here; their hash is then an id no creation ever stored (creation reads,
    /// and so checks, every field), and the call fails as Streams_UnknownStream.
    function _fixedId(FixedStream calldata stream) private pure returns (bytes32 streamId) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            calldatacopy(ptr, stream, 0x120) // 9 static words
            streamId := keccak256(ptr, 0x120)
        }
    }

    /// @dev As `_fixedId`.
    function _openId(OpenStream calldata stream) private pure returns (bytes32 streamId) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            calldatacopy(ptr, stream, 0x80) // 4 static words
            streamId := keccak256(ptr, 0x80)
        }
    }

    /// @dev Validate a fixed stream, record it and announce it; the caller funds it.
    function _registerFixed(FixedStream calldata stream) private returns (bytes32 streamId) {
        // Checks
        if (stream.sender == address(0)) revert Streams_ZeroSender();
        if (stream.recipient == address(0)) revert Streams_ZeroRecipient();
        if (stream.amount == 0) revert Streams_ZeroAmount();
        uint40 start = stream.start;
        uint40 cliff = stream.cliff;
        uint40 end = stream.end;
        if (start >= end || (cliff != 0 && (cliff < start || cliff > end))) {
            revert Streams_InvalidTimes(start, cliff, end);
        }
        if (end <= block.timestamp) revert Streams_EndNotInFuture(end, block.timestamp);
        streamId = _fixedId(stream);
        FixedStreamState storage stored = _fixedStreams[streamId];
        if (stored.created) revert Streams_StreamExists(streamId);
        // Effects
        stored.created = true;
        emit FixedStreamCreated(
            streamId,
            stream.sender,
            stream.recipient,
            stream.token,
            stream.amount,
            start,
            cliff,
            end,
            stream.cancelable,
            stream.salt
        );
    }

    /// @dev Validate an open-ended stream, start its clock and announce it.
    function _registerOpen(OpenStream calldata stream, uint128 ratePerSecond) private returns (bytes32 streamId) {
        // Checks
        if (stream.sender == address(0)) revert Streams_ZeroSender();
        if (stream.recipient == address(0)) revert Streams_ZeroRecipient();
        if (ratePerSecond == 0) revert Streams_ZeroRate();
        streamId = _openId(stream);
        OpenStreamState storage stored = _openStreams[streamId];
        if (stored.snapshotTime != 0) revert Streams_StreamExists(streamId);
        // Effects
        stored.ratePerSecond = ratePerSecond;
        stored.snapshotTime = uint40(block.timestamp);
        emit OpenStreamCreated(streamId, stream.sender, stream.recipient, stream.token, stream.salt, ratePerSecond);
    }

    /// @dev An existing open-ended stream, called by its sender.
    function _senderOpen(OpenStream calldata stream)
        private
        view
        returns (bytes32 streamId, OpenStreamState storage stored)
    {
        streamId = _openId(stream);
        stored = _openStreams[streamId];
        if (stored.snapshotTime == 0) revert Streams_UnknownStream(streamId);
        if (msg.sender != stream.sender) revert Streams_NotSender(streamId, msg.sender);
    }

    /// @dev Only the current recipient chooses where a withdrawal goes.
    function _checkWithdrawal(bytes32 streamId, bool transferred, address originalRecipient, address to)
        private
        view
    {
        address recipient = transferred ? _transferredTo[streamId] : originalRecipient;
        if (msg.sender != recipient && to != recipient) {
            revert Streams_WithdrawalToOther(streamId, msg.sender, to);
        }
        if (to == address(0)) revert Streams_ZeroDestination(streamId);
    }

    function _transferRecipient(bytes32 streamId, bool transferred, address originalRecipient, address newRecipient)
        private
    {
        address recipient = transferred ? _transferredTo[streamId] : originalRecipient;
        if (msg.sender != recipient) revert Streams_NotRecipient(streamId, msg.sender);
        if (newRecipient == address(0) || newRecipient == recipient) {
            revert Streams_InvalidNewRecipient(streamId, newRecipient);
        }
        _transferredTo[streamId] = newRecipient;
        emit RecipientTransferred(streamId, recipient, newRecipient);
    }

    /// @dev floor(amount * elapsed / duration), 0 before start or cliff, amount from end on.
    function _streamedFixed(FixedStream calldata stream, uint256 time) private pure returns (uint128) {
        uint256 end = stream.end;
        if (time >= end) return stream.amount;
        uint256 start = stream.start;
        if (time < start || time < stream.cliff) return 0;
        // unchecked: start <= time < end, and amount * elapsed < 2^128 * 2^40 fits; the
        // quotient is below amount, so it fits a uint128.
        unchecked {
            return uint128((uint256(stream.amount) * (time - start)) / (end - start));
        }
    }

    /// @dev Whole base units an open-ended stream has streamed by now.
    function _streamedOpen(OpenStreamState memory state) private view returns (uint128) {
        // unchecked: rate < 2^128 and elapsed < 2^40, so the product fits; over all time a
        // stream streams at most 2^128 * 2^40 / 1e18 < 2^109 base units, so the sum fits.
        unchecked {
            uint256 accrued =
                state.snapshotRemainder + uint256(state.ratePerSecond) * (block.timestamp - state.snapshotTime);
            return uint128(state.streamedAtSnapshot + accrued / RATE_SCALE);
        }
    }

    /// @dev Bring the accrual up to now, then stream at `newRate`; returns the total streamed.
    function _snapshot(OpenStreamState storage stored, uint128 newRate) private returns (uint128 streamed) {
        uint256 accrued;
        // unchecked: as in _streamedOpen.
        unchecked {
            accrued = stored.snapshotRemainder + uint256(stored.ratePerSecond) * (block.timestamp - stored.snapshotTime);
            streamed = uint128(stored.streamedAtSnapshot + accrued / RATE_SCALE);
        }
        stored.ratePerSecond = newRate;
        stored.snapshotTime = uint40(block.timestamp);
        stored.snapshotRemainder = uint64(accrued % RATE_SCALE);
        stored.streamedAtSnapshot = streamed;
    }
}
