// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IStreams
/// @notice Payment streams: money paid out per second, in native ETH (token = address(0)) or
/// any ERC-20, from one singleton that serves every stream.
///
/// Two kinds of stream:
/// - a **fixed** stream locks `amount` up front and releases it linearly from `start` to
///   `end`: at time t the recipient has earned exactly
///   `floor(amount * (t - start) / (end - start))`, nothing before the cliff, everything from
///   `end` on. No divisibility rule, no dust: the floor only delays wei, never loses them.
///   The sender may cancel a cancelable stream: what has streamed stays the recipient's,
///   the rest goes back at once.
/// - an **open-ended** stream pays `ratePerSecond / RATE_SCALE` base units per second for
///   as long as the sender lets it, funded by deposits anyone can make. The sender can
///   pause, resume, change the rate and take back what is not yet owed. When the balance
///   runs dry the stream keeps accruing debt; later deposits pay that debt first.
///
/// @dev A stream's id is the hash of its immutable parameters (`fixedStreamId`,
/// `openStreamId`): only what changes is stored (one slot for a fixed stream, three for an
/// open-ended one), so every call that acts on a stream takes the parameters as calldata.
/// The `*Created` events carry all of them. The recipient can hand a stream to a new
/// recipient; the id stays the same and the parameters keep naming the original one.
///
/// WARNING, what the contract does not protect against:
/// - an open-ended stream promises nothing beyond its balance: the sender may pause it or
///   take back the unowed balance at any moment. Treat only the withdrawable amount as paid;
/// - fee-on-transfer tokens are credited with what arrives in open-ended deposits, but a
///   fixed stream must receive its exact amount or its creation reverts; rebasing tokens
///   are not supported at all (see TokenTransfers);
/// - a withdrawal to a recipient that cannot receive (a contract rejecting ETH, a token
///   blacklist) reverts; the recipient can withdraw to another address it names instead.
interface IStreams {
    /// @notice The immutable parameters of a fixed stream; their hash is the stream id.
    /// @param sender May cancel (if cancelable) and receives the refund; need not be the
    /// account that funds the creation.
    /// @param recipient Earns the stream (until it transfers the stream to someone else).
    /// @param token The ERC-20 streamed, or address(0) for native ETH.
    /// @param amount Everything the stream pays out, in the token's base units.
    /// @param start When streaming starts (may be in the past).
    /// @param cliff 0 for none; otherwise in [start, end]: nothing is withdrawable before it,
    /// then what has streamed since `start` is.
    /// @param end When everything has streamed; must be in the future at creation.
    /// @param cancelable Whether the sender may cancel.
    /// @param salt Lets the same parties create several otherwise identical streams.
    struct FixedStream {
        address sender;
        address recipient;
        address token;
        uint128 amount;
        uint40 start;
        uint40 cliff;
        uint40 end;
        bool cancelable;
        bytes32 salt;
    }

    /// @notice The immutable parameters of an open-ended stream; their hash is the stream id.
    /// The rate is not among them: the sender can change it.
    struct OpenStream {
        address sender;
        address recipient;
        address token;
        bytes32 salt;
    }

    /// @notice What is stored for a fixed stream.
    /// @param withdrawn Everything the recipient has withdrawn so far.
    /// @param canceledAt 0 unless canceled; then the time of cancellation, which freezes
    /// what the recipient earned at `streamed(canceledAt)`.
    /// @param created Whether the stream exists.
    /// @param transferred Whether the recipient handed the stream on (see `recipientOf`).
    struct FixedStreamState {
        uint128 withdrawn;
        uint40 canceledAt;
        bool created;
        bool transferred;
    }

    /// @notice What is stored for an open-ended stream. At time t it has streamed
    /// `streamedAtSnapshot + (snapshotRemainder + ratePerSecond * (t - snapshotTime)) / RATE_SCALE`,
    /// and its balance is `deposited - refunded - withdrawn`.
    /// @param ratePerSecond Base units per second, times RATE_SCALE; 0 while paused.
    /// @param snapshotTime When `streamedAtSnapshot` was last brought up to date (creation,
    /// pause, resume, rate change); 0 if the stream does not exist.
    /// @param snapshotRemainder The fraction of a base unit (times RATE_SCALE) streamed by
    /// the snapshot but not yet whole, so rate changes never round anything away.
    /// @param transferred Whether the recipient handed the stream on.
    /// @param deposited Everything ever deposited.
    /// @param withdrawn Everything withdrawn by the recipient.
    /// @param streamedAtSnapshot Whole base units streamed up to `snapshotTime`, owed or not.
    /// @param refunded Everything the sender took back.
    /// @dev Three storage slots, in this order: the clock; deposited and withdrawn (written
    /// by a first deposit, so withdrawals and top-ups update a slot that is already
    /// non-zero); the snapshot and refunds, which only the sender's rarer calls write.
    struct OpenStreamState {
        uint128 ratePerSecond;
        uint40 snapshotTime;
        uint64 snapshotRemainder;
        bool transferred;
        uint128 deposited;
        uint128 withdrawn;
        uint128 streamedAtSnapshot;
        uint128 refunded;
    }

    /// @notice Where a fixed stream is in its life; derived from the state and the time.
    enum FixedStatus {
        Pending, // before start
        Streaming, // between start and end
        Settled, // everything streamed, not all withdrawn yet
        Canceled, // canceled, the recipient has not withdrawn all it earned yet
        Depleted // nothing will ever move again
    }

    /// @notice Where an open-ended stream is; derived from the state and the time.
    enum OpenStatus {
        Streaming, // rate > 0 and the balance covers what is owed
        StreamingInDebt, // rate > 0 and it owes more than its balance
        Paused, // rate = 0, no debt
        PausedInDebt // rate = 0 with a debt that only deposits can pay
    }

    /// @notice A fixed stream was created and fully funded with `amount` (its running total
    /// deposited, withdrawn and refunded starts at amount, 0, 0).
    event FixedStreamCreated(
        bytes32 indexed streamId,
        address indexed sender,
        address indexed recipient,
        address token,
        uint128 amount,
        uint40 start,
        uint40 cliff,
        uint40 end,
        bool cancelable,
        bytes32 salt
    );
    /// @notice An open-ended stream was created; any first deposit follows as `Deposited`.
    event OpenStreamCreated(
        bytes32 indexed streamId,
        address indexed sender,
        address indexed recipient,
        address token,
        bytes32 salt,
        uint128 ratePerSecond
    );
    /// @notice `amount` (what actually arrived) was added to an open-ended stream by `funder`;
    /// `totalDeposited` is everything ever deposited into it.
    event Deposited(bytes32 indexed streamId, address indexed funder, uint256 amount, uint256 totalDeposited);
    /// @notice The recipient's earnings were paid to `to`; `totalWithdrawn` is everything
    /// withdrawn from the stream so far.
    event Withdrawn(bytes32 indexed streamId, address indexed to, uint256 amount, uint256 totalWithdrawn);
    /// @notice A fixed stream was canceled: `refunded` went back to the sender (its running
    /// total, as a stream is canceled once) and the recipient keeps `recipientAmount`, what
    /// had streamed, withdrawn or not.
    event Canceled(bytes32 indexed streamId, uint256 refunded, uint256 recipientAmount);
    /// @notice The sender took back `amount` of an open-ended stream's unowed balance;
    /// `totalRefunded` is everything refunded so far.
    event Refunded(bytes32 indexed streamId, uint256 amount, uint256 totalRefunded);
    /// @notice An open-ended stream stopped accruing; `totalStreamed` had streamed by then.
    event Paused(bytes32 indexed streamId, uint256 totalStreamed);
    /// @notice A paused open-ended stream accrues again at `ratePerSecond`.
    event Resumed(bytes32 indexed streamId, uint128 ratePerSecond);
    /// @notice An open-ended stream's rate changed; `totalStreamed` had streamed at the old rate.
    event RateAdjusted(bytes32 indexed streamId, uint128 oldRatePerSecond, uint128 newRatePerSecond, uint256 totalStreamed);
    /// @notice The recipient handed the stream (and everything not yet withdrawn) to `to`.
    event RecipientTransferred(bytes32 indexed streamId, address indexed from, address indexed to);

    /// @notice The parameters name the zero address as sender.
    error Streams_ZeroSender();
    /// @notice The parameters name the zero address as recipient.
    error Streams_ZeroRecipient();
    /// @notice A fixed stream of nothing, or a deposit or refund of nothing.
    error Streams_ZeroAmount();
    /// @notice The times are not start < end with cliff 0 or start <= cliff <= end.
    error Streams_InvalidTimes(uint40 start, uint40 cliff, uint40 end);
    /// @notice A fixed stream must end after the block it is created in.
    error Streams_EndNotInFuture(uint40 end, uint256 timestamp);
    /// @notice A stream with these parameters (this id) already exists; change the salt.
    error Streams_StreamExists(bytes32 streamId);
    /// @notice No stream with this id was ever created.
    error Streams_UnknownStream(bytes32 streamId);
    /// @notice The token delivered less than a fixed stream's amount (fee-on-transfer).
    error Streams_AmountNotReceived(address token, uint256 expected, uint256 received);
    /// @notice A batch with no streams in it.
    error Streams_EmptyBatch();
    /// @notice `createOpenStreams` needs one rate and one amount per stream.
    error Streams_BatchLengthMismatch(uint256 streams, uint256 rates, uint256 amounts);
    /// @notice Every stream of a batch must use the batch's first token.
    error Streams_BatchTokenMismatch(uint256 index, address expected, address token);
    /// @notice Only the stream's sender may do this.
    error Streams_NotSender(bytes32 streamId, address caller);
    /// @notice Only the stream's current recipient may do this.
    error Streams_NotRecipient(bytes32 streamId, address caller);
    /// @notice Someone other than the recipient tried to withdraw to an address that is not
    /// the recipient.
    error Streams_WithdrawalToOther(bytes32 streamId, address caller, address to);
    /// @notice A withdrawal to the zero address.
    error Streams_ZeroDestination(bytes32 streamId);
    /// @notice The recipient has already withdrawn everything it has earned and is covered.
    error Streams_NothingToWithdraw(bytes32 streamId);
    /// @notice The fixed stream was created non-cancelable.
    error Streams_NotCancelable(bytes32 streamId);
    /// @notice The fixed stream was already canceled.
    error Streams_AlreadyCanceled(bytes32 streamId, uint40 canceledAt);
    /// @notice Everything has streamed: there is nothing left to cancel.
    error Streams_AlreadySettled(bytes32 streamId, uint40 end);
    /// @notice An open-ended stream must stream at a positive rate (pause it to stop it).
    error Streams_ZeroRate();
    /// @notice The open-ended stream is already paused.
    error Streams_AlreadyPaused(bytes32 streamId);
    /// @notice Only a paused open-ended stream can be resumed.
    error Streams_NotPaused(bytes32 streamId, uint128 ratePerSecond);
    /// @notice A paused stream's rate is changed by resuming it.
    error Streams_StreamPaused(bytes32 streamId);
    /// @notice The sender asked back more than is not yet owed to the recipient.
    error Streams_RefundExceedsUnowed(bytes32 streamId, uint256 amount, uint256 refundable);
    /// @notice The deposit would push the stream's total deposited past 2^128 - 1.
    error Streams_DepositTooLarge(bytes32 streamId, uint256 totalDeposited);
    /// @notice A stream can be handed only to a non-zero address other than its recipient.
    error Streams_InvalidNewRecipient(bytes32 streamId, address newRecipient);

    /// @notice The fixed-point scale of `ratePerSecond`: a rate of RATE_SCALE streams one base
    /// unit per second. Sub-unit rates matter for 6-decimal tokens: 1,000 USDC a month is
    /// 385.80... base units a second.
    function RATE_SCALE() external view returns (uint256);

    /// @notice The id of a fixed stream: keccak256(abi.encode(stream)).
    function fixedStreamId(FixedStream calldata stream) external pure returns (bytes32);

    /// @notice The id of an open-ended stream: keccak256(abi.encode(stream)).
    function openStreamId(OpenStream calldata stream) external pure returns (bytes32);

    /// @notice A fixed stream's stored state (all zero if it does not exist).
    function getFixedStream(bytes32 streamId) external view returns (FixedStreamState memory);

    /// @notice An open-ended stream's stored state (all zero if it does not exist).
    function getOpenStream(bytes32 streamId) external view returns (OpenStreamState memory);

    /// @notice Who may withdraw a stream now: the recipient it was created with, or whoever
    /// it was last transferred to.
    function recipientOf(bytes32 streamId, address originalRecipient) external view returns (address);

    /// @notice What a fixed stream has streamed by now (frozen at cancellation) and what of
    /// it the recipient can withdraw.
    function fixedStreamAmounts(FixedStream calldata stream)
        external
        view
        returns (uint128 streamed, uint128 withdrawable);

    /// @notice An open-ended stream's amounts now: streamed in total, withdrawable (streamed,
    /// covered by the balance and not yet withdrawn), refundable to the sender (the balance
    /// not yet owed) and debt (owed but not covered).
    function openStreamAmounts(bytes32 streamId)
        external
        view
        returns (uint128 streamed, uint128 withdrawable, uint128 refundable, uint128 debt);

    /// @notice A fixed stream's status now.
    function fixedStatus(FixedStream calldata stream) external view returns (FixedStatus);

    /// @notice An open-ended stream's status now.
    function openStatus(bytes32 streamId) external view returns (OpenStatus);

    /// @notice Create a fixed stream, funded in full by the caller.
    /// @dev For ETH send `amount` as msg.value; for an ERC-20 approve it first.
    /// @return streamId The new stream's id.
    function createFixedStream(FixedStream calldata stream) external payable returns (bytes32 streamId);

    /// @notice Create several fixed streams in one transaction, all in the first stream's
    /// token, funded by one transfer of their total (msg.value for ETH). All or nothing.
    function createFixedStreams(FixedStream[] calldata streams)
        external
        payable
        returns (bytes32[] memory streamIds);

    /// @notice Create an open-ended stream streaming `ratePerSecond / RATE_SCALE` base units
    /// a second from now, with an optional first deposit of `amount` from the caller.
    function createOpenStream(OpenStream calldata stream, uint128 ratePerSecond, uint128 amount)
        external
        payable
        returns (bytes32 streamId);

    /// @notice Create several open-ended streams in the first stream's token, each with its
    /// rate and first deposit, funded by one transfer of the deposits' total, which must
    /// arrive in full. All or nothing.
    function createOpenStreams(
        OpenStream[] calldata streams,
        uint128[] calldata ratesPerSecond,
        uint128[] calldata amounts
    ) external payable returns (bytes32[] memory streamIds);

    /// @notice Add money to an open-ended stream; anyone may. It pays any debt first (the
    /// recipient can withdraw it at once), the rest funds the future.
    /// @return received What arrived and was credited (less than `amount` only for
    /// fee-on-transfer tokens).
    function deposit(OpenStream calldata stream, uint128 amount) external payable returns (uint256 received);

    /// @notice Pay out everything a fixed stream's recipient can withdraw, to `to`. The
    /// recipient may name any address; anyone else may only pay the recipient.
    /// @return amount What was paid.
    function withdrawFixed(FixedStream calldata stream, address to) external returns (uint128 amount);

    /// @notice Pay out everything an open-ended stream's recipient can withdraw (what has
    /// streamed and is covered by the balance), to `to`; same rule as `withdrawFixed`.
    function withdrawOpen(OpenStream calldata stream, address to) external returns (uint128 amount);

    /// @notice The sender cancels a cancelable fixed stream before its end: what has
    /// streamed stays withdrawable by the recipient, the rest goes back to the sender now.
    /// @return refunded What went back to the sender.
    function cancel(FixedStream calldata stream) external returns (uint128 refunded);

    /// @notice The sender stops an open-ended stream from accruing (what it owes stays owed).
    function pause(OpenStream calldata stream) external;

    /// @notice The sender restarts a paused open-ended stream at `ratePerSecond`.
    function resume(OpenStream calldata stream, uint128 ratePerSecond) external;

    /// @notice The sender changes a running open-ended stream's rate from now on; what
    /// streamed at the old rate stays owed, to the last fraction of a base unit.
    function adjustRate(OpenStream calldata stream, uint128 ratePerSecond) external;

    /// @notice The sender takes back `amount` of the balance that is not yet owed.
    function refund(OpenStream calldata stream, uint128 amount) external;

    /// @notice The recipient hands a fixed stream, including everything not yet withdrawn,
    /// to `newRecipient`.
    function transferFixedStream(FixedStream calldata stream, address newRecipient) external;

    /// @notice The recipient hands an open-ended stream to `newRecipient`.
    function transferOpenStream(OpenStream calldata stream, address newRecipient) external;
}
