// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IPaymentChannels
/// @notice Unidirectional payment channels: a payer locks money once, then pays a payee with
/// off-chain vouchers (EIP-712 signed ceilings of a growing cumulative total); the payee
/// settles what it charged, up to a voucher's ceiling, any time, in one transaction for
/// thousands of payments.
/// @dev A channel is fixed by its `ChannelConfig`; its id is `keccak256(abi.encode(config))`
/// and only the balances are stored, so every call that acts on a channel takes the whole
/// configuration as calldata (cheaper than storing it).
///
/// What a voucher protects against, and what it does not:
/// - it is bound to this chain id, this contract, this channel and the `Voucher` type: it is
///   worthless anywhere else, and a finished channel never accepts one again;
/// - only the channel's authorizer (the payer or a session key it chose) can sign one, with
///   low-s ECDSA (or EIP-1271 if the authorizer is a contract);
/// - it is a ceiling, not a payment: the payee settles any total up to it, and settling is
///   the payee's act (its own transaction, or one relayed with its `PayeeClaim` signature),
///   so a third party that sees a voucher can never make the payer pay more than the payee
///   chose to settle;
/// - it does NOT guarantee the payee is paid: the deposit is the limit, and the payee must
///   claim before the payer's withdraw delay ends (a watchtower does that). The payee must
///   also check the deposit before serving against a voucher.
interface IPaymentChannels {
    /// @notice The immutable configuration of a channel; its hash is the channel id.
    /// @param payer Receives every refund; the only one who can ask to withdraw.
    /// @param payee Receives every claim; the only one who can claim (or sign a relayed
    /// claim), close or refund.
    /// @param token The ERC-20 paid in, or address(0) for native ETH.
    /// @param authorizer The key whose signature makes a voucher valid: the payer, a
    /// session key, or a contract implementing EIP-1271.
    /// @param withdrawDelay Seconds between the payer's withdraw request and its refund:
    /// the payee's window to claim. Bounded by MIN_WITHDRAW_DELAY and MAX_WITHDRAW_DELAY.
    /// @param salt Lets the same parties open several channels.
    struct ChannelConfig {
        address payer;
        address payee;
        address token;
        address authorizer;
        uint32 withdrawDelay;
        bytes32 salt;
    }

    /// @notice A channel's balances as stored.
    /// @param deposited Everything deposited less what the payee refunded: the most the
    /// payee can ever be paid. It grows with deposits and shrinks only by `refund`.
    /// @param claimed Everything ever paid to the payee (it never decreases).
    /// @param closesAt 0 while open; the time the payer may finish withdrawing once asked.
    /// @param finished True once closed or withdrawn: nothing can move again.
    struct ChannelState {
        uint256 deposited;
        uint256 claimed;
        uint256 closesAt;
        bool finished;
    }

    /// @notice One channel to settle in `claimMany` or `claimManyFor`.
    /// @param config The channel.
    /// @param totalClaimed The channel's claimed total after the claim: what the payee
    /// charged in all, at most `ceiling`.
    /// @param ceiling The voucher's `cumulativeAmount`: the most the payer authorised.
    /// @param signature The authorizer's signature of the voucher for `ceiling`.
    struct Claim {
        ChannelConfig config;
        uint256 totalClaimed;
        uint256 ceiling;
        bytes signature;
    }

    /// @notice Money was added to a channel (the first deposit opens it).
    event Deposited(bytes32 indexed channelId, address indexed funder, uint256 amount, uint256 totalDeposited);
    /// @notice The payee was paid up to `totalClaimed` in all. The amount this claim paid is
    /// the difference to the channel's previous total (totals only grow), which keeps the
    /// event at one data word: claims are the operation a payee repeats most.
    event Claimed(bytes32 indexed channelId, uint256 totalClaimed);
    /// @notice The payer asked for its money back; the payee can claim until `closesAt`.
    event WithdrawRequested(bytes32 indexed channelId, uint256 closesAt);
    /// @notice The payee closed the channel: `totalClaimed` is final and `refunded` went back
    /// to the payer.
    event Closed(bytes32 indexed channelId, uint256 totalClaimed, uint256 refunded);
    /// @notice The payer finished its withdrawal after the delay and got `refunded` back.
    event Withdrawn(bytes32 indexed channelId, uint256 totalClaimed, uint256 refunded);
    /// @notice The payee returned part of the unspent deposit to the payer; the channel stays
    /// open and now holds `totalDeposited` (deposits less refunds). The amount is the
    /// difference to the previous total, which keeps the event at one data word, as
    /// `Claimed` does.
    event Refunded(bytes32 indexed channelId, uint256 totalDeposited);

    /// @notice A configuration names the zero address as payer, payee or authorizer.
    error PaymentChannels_ZeroAddress();
    /// @notice The withdraw delay is outside [MIN_WITHDRAW_DELAY, MAX_WITHDRAW_DELAY].
    error PaymentChannels_WithdrawDelayOutOfRange(uint256 withdrawDelay, uint256 min, uint256 max);
    /// @notice A deposit of nothing (after transfer fees, for fee-on-transfer tokens).
    error PaymentChannels_ZeroDeposit(bytes32 channelId);
    /// @notice The deposit would push the channel's total past the 112-bit storage limit.
    error PaymentChannels_DepositTooLarge(bytes32 channelId, uint256 totalDeposited);
    /// @notice No deposit was ever made into this channel.
    error PaymentChannels_ChannelNotFound(bytes32 channelId);
    /// @notice The channel was closed or withdrawn; it can never be used again.
    error PaymentChannels_ChannelFinished(bytes32 channelId);
    /// @notice The total to settle is more than the channel holds.
    error PaymentChannels_TotalExceedsDeposit(bytes32 channelId, uint256 totalClaimed, uint256 deposited);
    /// @notice The total to settle is above the voucher's ceiling.
    error PaymentChannels_TotalExceedsCeiling(bytes32 channelId, uint256 totalClaimed, uint256 ceiling);
    /// @notice The total to settle is not above what was already claimed (totals only grow).
    error PaymentChannels_NothingToClaim(bytes32 channelId, uint256 totalClaimed, uint256 claimed);
    /// @notice The signature is not the authorizer's (or is malformed or high-s).
    error PaymentChannels_InvalidVoucherSignature(bytes32 channelId, address authorizer);
    /// @notice A relayed claim's `PayeeClaim` signature is not the payee's.
    error PaymentChannels_InvalidPayeeSignature(bytes32 channelId, address payee);
    /// @notice A refund of more than the deposit not yet claimed.
    error PaymentChannels_RefundExceedsUnspent(bytes32 channelId, uint256 amount, uint256 unspent);
    /// @notice A refund of nothing.
    error PaymentChannels_ZeroRefund(bytes32 channelId);
    /// @notice `claimManyFor` needs one payee signature per claim.
    error PaymentChannels_PayeeSignatureCount(uint256 claims, uint256 payeeSignatures);
    /// @notice Only the payer may do this.
    error PaymentChannels_NotPayer(bytes32 channelId, address caller);
    /// @notice Only the payee may do this.
    error PaymentChannels_NotPayee(bytes32 channelId, address caller);
    /// @notice The payer already asked to withdraw; the delay runs from the first request.
    error PaymentChannels_WithdrawAlreadyRequested(bytes32 channelId, uint256 closesAt);
    /// @notice The payer never asked to withdraw.
    error PaymentChannels_WithdrawNotRequested(bytes32 channelId);
    /// @notice The withdraw delay has not passed yet.
    error PaymentChannels_WithdrawNotReady(bytes32 channelId, uint256 closesAt, uint256 timestamp);
    /// @notice `claimMany` was called with nothing to claim.
    error PaymentChannels_EmptyBatch();

    /// @notice Shortest withdraw delay a channel may have, in seconds.
    function MIN_WITHDRAW_DELAY() external view returns (uint256);

    /// @notice Longest withdraw delay a channel may have, in seconds.
    function MAX_WITHDRAW_DELAY() external view returns (uint256);

    /// @notice The EIP-712 type hash of `Voucher(bytes32 channelId,uint256 cumulativeAmount)`.
    function VOUCHER_TYPEHASH() external view returns (bytes32);

    /// @notice The EIP-712 type hash of `PayeeClaim(bytes32 channelId,uint256 totalClaimed)`,
    /// what a payee signs to let anyone relay its claim.
    function PAYEE_CLAIM_TYPEHASH() external view returns (bytes32);

    /// @notice The EIP-712 domain separator (name "micropay", version "1", this chain, this
    /// contract); recomputed if the chain id changes.
    function DOMAIN_SEPARATOR() external view returns (bytes32);

    /// @notice EIP-5267: the EIP-712 domain, so wallets and tools can discover it.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        );

    /// @notice The channel id of a configuration.
    function channelId(ChannelConfig calldata config) external pure returns (bytes32);

    /// @notice A channel's stored balances and status.
    function channel(bytes32 channelId) external view returns (ChannelState memory);

    /// @notice The EIP-712 digest the authorizer signs for a voucher, for clients and
    /// auditors to cross-check their own encoders against.
    function voucherDigest(bytes32 channelId, uint256 cumulativeAmount) external view returns (bytes32);

    /// @notice The EIP-712 digest a payee signs to have a claim of `totalClaimed` relayed
    /// (same domain as vouchers).
    function payeeClaimDigest(bytes32 channelId, uint256 totalClaimed) external view returns (bytes32);

    /// @notice Deposit into a channel, opening it on the first deposit. Anyone may fund any
    /// channel; refunds always go to the configured payer.
    /// @dev For ETH send `amount` as msg.value. For ERC-20, approve first; a
    /// fee-on-transfer token is credited with what actually arrived.
    /// @return id The channel id.
    function deposit(ChannelConfig calldata config, uint256 amount) external payable returns (bytes32 id);

    /// @notice `deposit` for an ERC-20 with an EIP-2612 permit signed by the caller, so no
    /// separate approve transaction is needed. A permit already used (front-run) is
    /// tolerated when the allowance it granted is still there.
    function depositWithPermit(
        ChannelConfig calldata config,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (bytes32 id);

    /// @notice As the payee, settle the channel's claimed total at `totalClaimed`, at most the
    /// voucher's ceiling: only the difference over what was already claimed moves, to the
    /// payee. The channel stays open.
    /// @dev Only the payee may call it (see `claimFor` for relayers), so whoever sees a
    /// voucher cannot settle its whole ceiling when the payee charged less. `signature` is
    /// 65 bytes (r, s, v), 64 bytes (EIP-2098 compact, one calldata word cheaper), or
    /// anything an EIP-1271 authorizer accepts. The ceiling may exceed the deposit (a
    /// ceiling only bounds what the payer authorised); the total may not.
    /// @param totalClaimed The claimed total after this call: above the current one, at
    /// most `ceiling` and at most the deposit.
    /// @param ceiling The voucher's `cumulativeAmount`, as signed.
    /// @return amount What this claim paid.
    function claim(ChannelConfig calldata config, uint256 totalClaimed, uint256 ceiling, bytes calldata signature)
        external
        returns (uint256 amount);

    /// @notice `claim` relayed by anyone with the payee's EIP-712 `PayeeClaim(channelId,
    /// totalClaimed)` signature (ECDSA, or EIP-1271 if the payee is a contract): the
    /// relayer pays the gas, the money goes to the payee. A payee signature is spent once
    /// its total is claimed, since totals only grow.
    /// @return amount What this claim paid.
    function claimFor(
        ChannelConfig calldata config,
        uint256 totalClaimed,
        uint256 ceiling,
        bytes calldata signature,
        bytes calldata payeeSignature
    ) external returns (uint256 amount);

    /// @notice `claim` for many channels at once, all of the caller's (it must be every
    /// channel's payee). Consecutive claims in the same token are paid out in a single
    /// transfer. All or nothing.
    /// @return total What the whole batch paid.
    function claimMany(Claim[] calldata claims) external returns (uint256 total);

    /// @notice `claimFor` for many channels at once: `payeeSignatures[i]` is the payee's
    /// `PayeeClaim` signature for `claims[i]`. Consecutive claims with the same payee and
    /// token are paid out in a single transfer. All or nothing.
    /// @return total What the whole batch paid.
    function claimManyFor(Claim[] calldata claims, bytes[] calldata payeeSignatures) external returns (uint256 total);

    /// @notice The payee ends the channel: settles at `totalClaimed` with its best voucher
    /// (pass a total not above what is already claimed, and any ceiling and signature, to
    /// claim nothing more) and returns the rest to the payer at once.
    function close(ChannelConfig calldata config, uint256 totalClaimed, uint256 ceiling, bytes calldata signature)
        external;

    /// @notice The payee returns `amount` of the deposit not yet claimed to the payer; the
    /// channel stays open with that much less (`deposited` shrinks; vouchers keep their
    /// ceilings, and totals are bounded by what is left).
    function refund(ChannelConfig calldata config, uint256 amount) external;

    /// @notice The payer asks for its unclaimed money back; it can finish after the
    /// channel's withdraw delay, and the payee can still claim until then.
    function requestWithdraw(ChannelConfig calldata config) external;

    /// @notice After the delay, return what is unclaimed to the payer and finish the
    /// channel. Anyone may trigger it: the refund can only go to the payer.
    function finishWithdraw(ChannelConfig calldata config) external;
}
