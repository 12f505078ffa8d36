// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {PaymentChannels} from "../../contracts/PaymentChannels.sol";
import {IPaymentChannels} from "../../contracts/interfaces/IPaymentChannels.sol";
import {Base} from "./utils/Base.sol";

/// @dev Signs vouchers and builds channel configurations for the channel suites.
abstract contract ChannelFixture is Base {
    uint256 internal constant PAYER_KEY = 0xA11CE;
    uint256 internal constant STRANGER_KEY = 0xBAD;
    uint256 internal constant PAYEE_KEY = 0xBEEF;
    /// vm.addr(PAYEE_KEY), checked by testPayeeIsItsKeysAddress: the payee signs relayed claims.
    address internal constant PAYEE = 0x6E9972213BF459853FA33E28Ab7219e9157C8d02;
    uint256 internal constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    uint256 internal constant N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141;

    PaymentChannels internal channels;

    function _config(uint32 delay, uint256 salt) internal pure returns (IPaymentChannels.ChannelConfig memory) {
        address payer = vm.addr(PAYER_KEY);
        return IPaymentChannels.ChannelConfig(payer, PAYEE, address(0), payer, delay, bytes32(salt));
    }

    function _sign(uint256 key, bytes32 id, uint256 amount) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, channels.voucherDigest(id, amount));
        return abi.encodePacked(r, s, v);
    }

    function _signPayeeClaim(uint256 key, bytes32 id, uint256 total) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, channels.payeeClaimDigest(id, total));
        return abi.encodePacked(r, s, v);
    }

    /// @dev Settle `total` with a voucher for `ceiling`, as the payee.
    function _claim(IPaymentChannels.ChannelConfig memory config, uint256 total, uint256 ceiling, bytes memory signature)
        internal
        returns (uint256)
    {
        vm.prank(PAYEE);
        return channels.claim(config, total, ceiling, signature);
    }

    function _signCompact(uint256 key, bytes32 id, uint256 amount) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, channels.voucherDigest(id, amount));
        return abi.encodePacked(r, bytes32(uint256(s) | (uint256(v - 27) << 255)));
    }

    function _open(IPaymentChannels.ChannelConfig memory config, uint256 amount) internal returns (bytes32 id) {
        vm.deal(address(this), amount);
        id = channels.deposit{value: amount}(config, amount);
    }
}

/// @notice Fuzzed single-channel properties: every wei of a deposit ends with the payee or
/// the payer, vouchers are bound to their channel and amount, and only low-s signatures of
/// the authorizer count.
contract ChannelAccountingTest is ChannelFixture {
    function setUp() external {
        channels = new PaymentChannels();
    }

    function testPayeeIsItsKeysAddress() external pure {
        vm.assertEq(vm.addr(PAYEE_KEY), PAYEE, "PAYEE");
    }

    function testFuzz_digestIsEip712(bytes32 id, uint256 amount) external view {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("micropay"),
                keccak256("1"),
                block.chainid,
                address(channels)
            )
        );
        bytes32 structHash =
            keccak256(abi.encode(keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)"), id, amount));
        bytes32 expected = keccak256(abi.encodePacked("\x19\x01", domain, structHash));
        vm.assertEq(channels.voucherDigest(id, amount), expected, "voucherDigest");
        vm.assertEq(channels.DOMAIN_SEPARATOR(), domain, "DOMAIN_SEPARATOR");
        bytes32 claimHash =
            keccak256(abi.encode(keccak256("PayeeClaim(bytes32 channelId,uint256 totalClaimed)"), id, amount));
        vm.assertEq(
            channels.payeeClaimDigest(id, amount),
            keccak256(abi.encodePacked("\x19\x01", domain, claimHash)),
            "payeeClaimDigest"
        );
    }

    function testFuzz_claimThenCloseSplitsTheDepositExactly(uint112 deposit, uint256 first, uint256 last, uint32 delay)
        external
    {
        deposit = uint112(bound(deposit, 1, type(uint112).max));
        first = bound(first, 1, deposit);
        last = bound(last, first, deposit);
        delay = uint32(bound(delay, channels.MIN_WITHDRAW_DELAY(), channels.MAX_WITHDRAW_DELAY()));
        IPaymentChannels.ChannelConfig memory config = _config(delay, 1);
        bytes32 id = _open(config, deposit);
        address payer = config.payer;
        uint256 payerBefore = payer.balance;

        bytes memory ceiling = _signCompact(PAYER_KEY, id, deposit);
        vm.assertEq(_claim(config, first, deposit, ceiling), first, "claim pays the chosen total");
        bytes memory closing = _sign(PAYER_KEY, id, deposit);
        vm.prank(PAYEE);
        channels.close(config, last, deposit, closing);

        vm.assertEq(PAYEE.balance, last, "payee gets the last total");
        vm.assertEq(payer.balance - payerBefore, deposit - last, "payer gets the rest");
        vm.assertEq(address(channels).balance, 0, "nothing stays behind");
        IPaymentChannels.ChannelState memory state = channels.channel(id);
        vm.assertTrue(state.finished, "finished");
        vm.assertEq(state.claimed, last, "claimed");
    }

    function testFuzz_aTotalAboveTheDepositIsRefused(uint112 deposit, uint256 amount) external {
        deposit = uint112(bound(deposit, 1, type(uint112).max - 1));
        amount = bound(amount, uint256(deposit) + 1, type(uint256).max);
        IPaymentChannels.ChannelConfig memory config = _config(3600, 2);
        bytes32 id = _open(config, deposit);
        bytes memory signature = _sign(PAYER_KEY, id, amount);
        vm.expectRevert(
            abi.encodeWithSelector(IPaymentChannels.PaymentChannels_TotalExceedsDeposit.selector, id, amount, deposit)
        );
        _claim(config, amount, amount, signature);
    }

    function testFuzz_thePayeeSettlesAnyTotalUpToTheCeiling(uint112 deposit, uint256 ceiling, uint256 total)
        external
    {
        deposit = uint112(bound(deposit, 2, type(uint112).max));
        ceiling = bound(ceiling, 1, type(uint256).max);
        total = bound(total, 1, ceiling < deposit ? ceiling : deposit);
        IPaymentChannels.ChannelConfig memory config = _config(3600, 7);
        bytes32 id = _open(config, deposit);
        bytes memory signature = _signCompact(PAYER_KEY, id, ceiling);
        vm.assertEq(_claim(config, total, ceiling, signature), total, "pays the chosen total");
        vm.assertEq(PAYEE.balance, total, "payee got the total, not the ceiling");
        if (ceiling < type(uint256).max) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    IPaymentChannels.PaymentChannels_TotalExceedsCeiling.selector, id, ceiling + 1, ceiling
                )
            );
            _claim(config, ceiling + 1, ceiling, signature);
        }
        vm.expectRevert(
            abi.encodeWithSelector(IPaymentChannels.PaymentChannels_NothingToClaim.selector, id, total - 1, total)
        );
        _claim(config, total - 1, ceiling, signature);
    }

    function testFuzz_aThirdPartyCannotSettleAVoucherItSaw(address seer, uint112 deposit) external {
        vm.assume(seer != PAYEE);
        deposit = uint112(bound(deposit, 1, type(uint112).max));
        IPaymentChannels.ChannelConfig memory config = _config(3600, 8);
        bytes32 id = _open(config, deposit);
        bytes memory signature = _sign(PAYER_KEY, id, deposit);
        vm.prank(seer);
        vm.expectRevert(abi.encodeWithSelector(IPaymentChannels.PaymentChannels_NotPayee.selector, id, seer));
        channels.claim(config, deposit, deposit, signature);
        // Relayed, it needs the payee's signature of the total, not anyone else's.
        bytes memory forged = _signPayeeClaim(STRANGER_KEY, id, deposit);
        vm.prank(seer);
        vm.expectRevert(abi.encodeWithSelector(IPaymentChannels.PaymentChannels_InvalidPayeeSignature.selector, id, PAYEE));
        channels.claimFor(config, deposit, deposit, signature, forged);
        bytes memory consent = _signPayeeClaim(PAYEE_KEY, id, deposit);
        vm.prank(seer);
        vm.assertEq(channels.claimFor(config, deposit, deposit, signature, consent), deposit, "relayed");
        vm.assertEq(PAYEE.balance, deposit, "the payee got it");
    }

    function testFuzz_aRefundReturnsOnlyUnspentDeposit(uint112 deposit, uint256 claimed, uint256 amount) external {
        deposit = uint112(bound(deposit, 1, type(uint112).max));
        claimed = bound(claimed, 0, deposit);
        IPaymentChannels.ChannelConfig memory config = _config(3600, 9);
        bytes32 id = _open(config, deposit);
        if (claimed > 0) _claim(config, claimed, deposit, _sign(PAYER_KEY, id, deposit));
        uint256 unspent = deposit - claimed;
        vm.prank(config.payer);
        vm.expectRevert(abi.encodeWithSelector(IPaymentChannels.PaymentChannels_NotPayee.selector, id, config.payer));
        channels.refund(config, 1);
        vm.prank(PAYEE);
        vm.expectRevert(
            abi.encodeWithSelector(IPaymentChannels.PaymentChannels_RefundExceedsUnspent.selector, id, unspent + 1, unspent)
        );
        channels.refund(config, unspent + 1);
        vm.assume(unspent > 0);
        amount = bound(amount, 1, unspent);
        uint256 before = config.payer.balance;
        vm.prank(PAYEE);
        channels.refund(config, amount);
        vm.assertEq(config.payer.balance - before, amount, "payer got the refund");
        IPaymentChannels.ChannelState memory state = channels.channel(id);
        vm.assertEq(state.deposited, deposit - amount, "deposit shrank");
        vm.assertTrue(!state.finished, "still open");
    }

    function testFuzz_onlyTheAuthorizersLowSSignatureCounts(uint112 deposit, uint256 amount, uint256 key) external {
        deposit = uint112(bound(deposit, 1, type(uint112).max));
        amount = bound(amount, 1, deposit);
        key = bound(key, 1, N - 1);
        vm.assume(key != PAYER_KEY);
        IPaymentChannels.ChannelConfig memory config = _config(3600, 3);
        bytes32 id = _open(config, deposit);
        bytes4 invalid = IPaymentChannels.PaymentChannels_InvalidVoucherSignature.selector;
        // (Signatures are made before expectRevert: signing calls the contract.)
        bytes memory wrongKey = _sign(key, id, amount);
        vm.expectRevert(abi.encodeWithSelector(invalid, id, config.authorizer));
        _claim(config, amount, amount, wrongKey);

        (uint8 v, bytes32 r, bytes32 s) = vm.sign(PAYER_KEY, channels.voucherDigest(id, amount));
        bytes memory twin = abi.encodePacked(r, bytes32(N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        vm.expectRevert(abi.encodeWithSelector(invalid, id, config.authorizer));
        _claim(config, amount, amount, twin);

        // A voucher for another channel of the same payer is worthless here.
        bytes memory otherChannel = _sign(PAYER_KEY, channels.channelId(_config(3600, 4)), amount);
        vm.expectRevert(abi.encodeWithSelector(invalid, id, config.authorizer));
        _claim(config, amount, amount, otherChannel);

        vm.assertEq(_claim(config, amount, amount, abi.encodePacked(r, s, v)), amount, "the genuine one pays");
    }

    function testFuzz_aVoucherFromAnotherChainIsWorthless(uint112 deposit, uint256 amount, uint64 otherChain)
        external
    {
        deposit = uint112(bound(deposit, 1, type(uint112).max));
        amount = bound(amount, 1, deposit);
        vm.assume(otherChain != block.chainid && otherChain != 0);
        IPaymentChannels.ChannelConfig memory config = _config(3600, 6);
        bytes32 id = _open(config, deposit);
        bytes memory signed = _sign(PAYER_KEY, id, amount);
        // After a fork to another chain id the domain separator is rebuilt, so the voucher
        // signed for the old chain no longer recovers to the authorizer.
        vm.chainId(otherChain);
        vm.expectRevert(
            abi.encodeWithSelector(
                IPaymentChannels.PaymentChannels_InvalidVoucherSignature.selector, id, config.authorizer
            )
        );
        _claim(config, amount, amount, signed);
        vm.assertEq(_claim(config, amount, amount, _sign(PAYER_KEY, id, amount)), amount, "new chain's voucher");
    }

    function testFuzz_withdrawWaitsForTheDelayAndRefundsTheRest(
        uint112 deposit,
        uint256 claimed,
        uint32 delay,
        uint256 early
    ) external {
        deposit = uint112(bound(deposit, 1, type(uint112).max));
        claimed = bound(claimed, 0, deposit);
        delay = uint32(bound(delay, channels.MIN_WITHDRAW_DELAY(), channels.MAX_WITHDRAW_DELAY()));
        IPaymentChannels.ChannelConfig memory config = _config(delay, 5);
        bytes32 id = _open(config, deposit);
        vm.prank(config.payer);
        channels.requestWithdraw(config);
        uint256 closesAt = block.timestamp + delay;
        // The payee may still claim during the delay.
        if (claimed > 0) _claim(config, claimed, claimed, _sign(PAYER_KEY, id, claimed));
        bytes memory late = _sign(PAYER_KEY, id, deposit);

        early = bound(early, block.timestamp, closesAt - 1);
        vm.warp(early);
        vm.expectRevert(
            abi.encodeWithSelector(IPaymentChannels.PaymentChannels_WithdrawNotReady.selector, id, closesAt, early)
        );
        channels.finishWithdraw(config);
        // The boundary itself, which a random time almost never hits: one second early.
        vm.warp(closesAt - 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IPaymentChannels.PaymentChannels_WithdrawNotReady.selector, id, closesAt, closesAt - 1
            )
        );
        channels.finishWithdraw(config);

        vm.warp(closesAt);
        uint256 before = config.payer.balance;
        channels.finishWithdraw(config);
        vm.assertEq(config.payer.balance - before, deposit - claimed, "refund is the unclaimed rest");
        vm.assertEq(PAYEE.balance, claimed, "payee keeps its claims");

        // A finished channel is never revived: neither by old vouchers nor by deposits.
        vm.expectRevert(abi.encodeWithSelector(IPaymentChannels.PaymentChannels_ChannelFinished.selector, id));
        _claim(config, deposit, deposit, late);
        vm.deal(address(this), 1);
        vm.expectRevert(abi.encodeWithSelector(IPaymentChannels.PaymentChannels_ChannelFinished.selector, id));
        channels.deposit{value: 1}(config, 1);
    }
}

/// @notice Drives a few ETH channels through every operation in random order for the
/// invariant runner, keeping ghost totals of what went in and out and to whom, and per
/// channel the highest ceiling of a valid voucher a claim carried.
contract ChannelHandler is ChannelFixture {
    uint256 internal constant CHANNELS = 3;

    IPaymentChannels.ChannelConfig[CHANNELS] internal _configs;
    mapping(bytes32 id => uint256) public lastEverDeposited;
    mapping(bytes32 id => uint256) public lastClaimed;
    mapping(bytes32 id => uint256) public depositedTo;
    mapping(bytes32 id => uint256) public refundedFrom;
    mapping(bytes32 id => uint256) public bestCeiling;

    uint256 public depositedIn;
    uint256 public paidToPayee;
    uint256 public refundedToPayer;
    bool public broken;
    string public brokenReason;
    uint256 public calls;

    constructor(PaymentChannels channels_) {
        channels = channels_;
        uint32[CHANNELS] memory delays = [uint32(600), 3600, 90 days];
        for (uint256 i; i < CHANNELS; ++i) {
            _configs[i] = _config(delays[i], 100 + i);
        }
    }

    function config(uint256 which) public view returns (IPaymentChannels.ChannelConfig memory) {
        return _configs[which % CHANNELS];
    }

    function deposit(uint256 which, uint256 amount) external {
        IPaymentChannels.ChannelConfig memory c = config(which);
        amount = bound(amount, 0, 1e30);
        vm.deal(address(this), amount);
        try channels.deposit{value: amount}(c, amount) returns (bytes32 id) {
            depositedIn += amount;
            depositedTo[id] += amount;
        } catch {}
        _after();
    }

    /// @dev `how`: 0 the payee, 1 relayed with the payee's signature, 2 a third party that
    /// saw the voucher (never settles), 3 relayed with a stranger's "payee" signature.
    function claim(uint256 which, uint256 total, uint256 slack, bool compact, uint8 how) external {
        IPaymentChannels.ChannelConfig memory c = config(which);
        bytes32 id = channels.channelId(c);
        IPaymentChannels.ChannelState memory state = channels.channel(id);
        total = bound(total, 0, state.deposited + 2);
        uint256 ceiling = total + bound(slack, 0, 1e30);
        if (slack % 7 == 0 && total > 0) ceiling = total - 1; // sometimes below the total
        bytes memory signature = compact ? _signCompact(PAYER_KEY, id, ceiling) : _sign(PAYER_KEY, id, ceiling);
        how = how % 4;
        uint256 before = PAYEE.balance;
        bool settled;
        if (how == 0) {
            vm.prank(PAYEE);
            try channels.claim(c, total, ceiling, signature) returns (uint256 paid) {
                settled = true;
                _check(PAYEE.balance - before == paid, "claim paid other than it reported");
            } catch {}
        } else if (how == 2) {
            try channels.claim(c, total, ceiling, signature) {
                _check(false, "a third party settled a voucher it saw");
            } catch {}
        } else {
            bytes memory consent = _signPayeeClaim(how == 1 ? PAYEE_KEY : STRANGER_KEY, id, total);
            try channels.claimFor(c, total, ceiling, signature, consent) returns (uint256 paid) {
                settled = true;
                _check(how == 1, "a forged payee signature settled");
                _check(PAYEE.balance - before == paid, "relayed claim paid other than it reported");
            } catch {}
        }
        if (settled) {
            _check(total <= ceiling, "settled above the ceiling");
            _check(total <= state.deposited && total > state.claimed, "claim accepted a bad total");
            if (ceiling > bestCeiling[id]) bestCeiling[id] = ceiling;
        }
        paidToPayee += PAYEE.balance - before;
        _after();
    }

    function claimWithForgedVoucher(uint256 which, uint256 amount) external {
        IPaymentChannels.ChannelConfig memory c = config(which);
        bytes32 id = channels.channelId(c);
        bytes memory forged = _sign(STRANGER_KEY, id, amount);
        vm.prank(PAYEE);
        try channels.claim(c, amount, amount, forged) {
            _check(false, "a voucher signed by a stranger paid");
        } catch {}
        _after();
    }

    function close(uint256 which, uint256 total, uint256 slack, bool asPayee) external {
        IPaymentChannels.ChannelConfig memory c = config(which);
        bytes32 id = channels.channelId(c);
        total = bound(total, 0, channels.channel(id).deposited + 2);
        uint256 ceiling = total + bound(slack, 0, 1e30);
        bytes memory signature = _sign(PAYER_KEY, id, ceiling);
        (uint256 payee, uint256 payer) = (PAYEE.balance, c.payer.balance);
        uint256 claimedBefore = channels.channel(id).claimed;
        vm.prank(asPayee ? PAYEE : c.payer);
        try channels.close(c, total, ceiling, signature) {
            _check(asPayee, "someone other than the payee closed");
            if (total > claimedBefore && ceiling > bestCeiling[id]) bestCeiling[id] = ceiling;
        } catch {}
        paidToPayee += PAYEE.balance - payee;
        refundedToPayer += c.payer.balance - payer;
        refundedFrom[id] += c.payer.balance - payer;
        _after();
    }

    function refund(uint256 which, uint256 amount, bool asPayee) external {
        IPaymentChannels.ChannelConfig memory c = config(which);
        bytes32 id = channels.channelId(c);
        IPaymentChannels.ChannelState memory state = channels.channel(id);
        amount = bound(amount, 0, state.deposited - state.claimed + 2);
        uint256 before = c.payer.balance;
        vm.prank(asPayee ? PAYEE : c.payer);
        try channels.refund(c, amount) {
            _check(asPayee, "someone other than the payee refunded");
            _check(amount <= state.deposited - state.claimed, "refunded claimed money");
            _check(!state.finished, "a finished channel refunded");
        } catch {}
        refundedToPayer += c.payer.balance - before;
        refundedFrom[id] += c.payer.balance - before;
        _after();
    }

    function requestWithdraw(uint256 which, bool asPayer) external {
        IPaymentChannels.ChannelConfig memory c = config(which);
        vm.prank(asPayer ? c.payer : PAYEE);
        try channels.requestWithdraw(c) {
            _check(asPayer, "someone other than the payer requested a withdraw");
        } catch {}
        _after();
    }

    function finishWithdraw(uint256 which) external {
        IPaymentChannels.ChannelConfig memory c = config(which);
        uint256 before = c.payer.balance;
        try channels.finishWithdraw(c) {} catch {}
        refundedToPayer += c.payer.balance - before;
        refundedFrom[channels.channelId(c)] += c.payer.balance - before;
        _after();
    }

    function warp(uint256 seconds_) external {
        vm.warp(block.timestamp + bound(seconds_, 0, 30 days));
        _after();
    }

    /// @notice What the channels still owe: the sum over unfinished channels.
    function outstanding() external view returns (uint256 total) {
        for (uint256 i; i < CHANNELS; ++i) {
            IPaymentChannels.ChannelState memory state = channels.channel(channels.channelId(_configs[i]));
            if (!state.finished) total += state.deposited - state.claimed;
        }
    }

    function _after() private {
        ++calls;
        for (uint256 i; i < CHANNELS; ++i) {
            bytes32 id = channels.channelId(_configs[i]);
            IPaymentChannels.ChannelState memory state = channels.channel(id);
            // Everything ever deposited: the stored deposit plus what the payee refunded
            // while the channel was open (a final return leaves the stored deposit as it is).
            uint256 ever = state.deposited + _openRefunds(id, state);
            _check(state.claimed <= state.deposited, "claimed above deposited");
            _check(state.claimed <= bestCeiling[id], "settled above every valid ceiling");
            _check(state.claimed + refundedFrom[id] <= depositedTo[id], "refunded + settled above deposited");
            _check(ever == depositedTo[id], "deposits lost or invented");
            _check(ever >= lastEverDeposited[id], "deposited decreased");
            _check(state.claimed >= lastClaimed[id], "claimed decreased");
            (lastEverDeposited[id], lastClaimed[id]) = (ever, state.claimed);
        }
    }

    /// @dev Refunds while open: all refunds, less the final return of a finished channel.
    function _openRefunds(bytes32 id, IPaymentChannels.ChannelState memory state) private view returns (uint256) {
        return state.finished ? refundedFrom[id] - (state.deposited - state.claimed) : refundedFrom[id];
    }

    function _check(bool condition, string memory reason) private {
        if (!condition && !broken) (broken, brokenReason) = (true, reason);
    }

    receive() external payable {}
}

/// @notice Invariants over random sequences of channel operations (forge's invariant runner).
contract ChannelInvariantTest is Base {
    PaymentChannels internal channels;
    ChannelHandler internal handler;

    function setUp() external {
        channels = new PaymentChannels();
        handler = new ChannelHandler(channels);
        targetContract(address(handler));
    }

    /// solvency, to the wei: the contract holds exactly what unfinished channels still owe.
    function invariant_solvency() external view {
        vm.assertEq(address(channels).balance, handler.outstanding(), "balance == outstanding");
    }

    /// conservation: everything deposited is still held, paid to the payee or refunded
    /// (partial refunds, closes and withdrawals).
    function invariant_conservation() external view {
        vm.assertEq(
            handler.depositedIn(),
            address(channels).balance + handler.paidToPayee() + handler.refundedToPayer(),
            "in == held + paid + refunded"
        );
    }

    /// monotonicity, authority, settled <= ceiling of a valid voucher and refunded + settled
    /// <= deposited, checked by the handler after every call.
    function invariant_noBrokenRule() external view {
        vm.assertTrue(!handler.broken(), handler.brokenReason());
    }
}
