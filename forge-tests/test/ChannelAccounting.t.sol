// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {PaymentChannels} from "../../contracts/PaymentChannels.sol";
import {IPaymentChannels} from "../../contracts/interfaces/IPaymentChannels.sol";
import {Base} from "./utils/Base.sol";

/// @dev Signs vouchers and builds channel configurations for the channel suites.
abstract contract ChannelFixture is Base {
    uint256 internal constant PAYER_KEY = 0xA11CE;
    uint256 internal constant STRANGER_KEY = 0xBAD;
    address internal constant PAYEE = address(0xBEEF00);
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

        vm.assertEq(channels.claim(config, first, _signCompact(PAYER_KEY, id, first)), first, "claim pays the voucher");
        bytes memory closing = _sign(PAYER_KEY, id, last);
        vm.prank(PAYEE);
        channels.close(config, last, closing);

        vm.assertEq(PAYEE.balance, last, "payee gets the last voucher");
        vm.assertEq(payer.balance - payerBefore, deposit - last, "payer gets the rest");
        vm.assertEq(address(channels).balance, 0, "nothing stays behind");
        IPaymentChannels.ChannelState memory state = channels.channel(id);
        vm.assertTrue(state.finished, "finished");
        vm.assertEq(state.claimed, last, "claimed");
    }

    function testFuzz_voucherAboveTheDepositIsRefused(uint112 deposit, uint256 amount) external {
        deposit = uint112(bound(deposit, 1, type(uint112).max - 1));
        amount = bound(amount, uint256(deposit) + 1, type(uint256).max);
        IPaymentChannels.ChannelConfig memory config = _config(3600, 2);
        bytes32 id = _open(config, deposit);
        bytes memory signature = _sign(PAYER_KEY, id, amount);
        vm.expectRevert(
            abi.encodeWithSelector(IPaymentChannels.PaymentChannels_VoucherExceedsDeposit.selector, id, amount, deposit)
        );
        channels.claim(config, amount, signature);
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
        channels.claim(config, amount, wrongKey);

        (uint8 v, bytes32 r, bytes32 s) = vm.sign(PAYER_KEY, channels.voucherDigest(id, amount));
        bytes memory twin = abi.encodePacked(r, bytes32(N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        vm.expectRevert(abi.encodeWithSelector(invalid, id, config.authorizer));
        channels.claim(config, amount, twin);

        // A voucher for another channel of the same payer is worthless here.
        bytes memory otherChannel = _sign(PAYER_KEY, channels.channelId(_config(3600, 4)), amount);
        vm.expectRevert(abi.encodeWithSelector(invalid, id, config.authorizer));
        channels.claim(config, amount, otherChannel);

        vm.assertEq(channels.claim(config, amount, abi.encodePacked(r, s, v)), amount, "the genuine one pays");
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
        channels.claim(config, amount, signed);
        vm.assertEq(channels.claim(config, amount, _sign(PAYER_KEY, id, amount)), amount, "new chain's voucher");
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
        if (claimed > 0) channels.claim(config, claimed, _sign(PAYER_KEY, id, claimed));
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
        channels.claim(config, deposit, late);
        vm.deal(address(this), 1);
        vm.expectRevert(abi.encodeWithSelector(IPaymentChannels.PaymentChannels_ChannelFinished.selector, id));
        channels.deposit{value: 1}(config, 1);
    }
}

/// @notice Drives a few ETH channels through every operation in random order for the
/// invariant runner, keeping ghost totals of what went in and out and to whom.
contract ChannelHandler is ChannelFixture {
    uint256 internal constant CHANNELS = 3;

    IPaymentChannels.ChannelConfig[CHANNELS] internal _configs;
    mapping(bytes32 id => uint256) public lastDeposited;
    mapping(bytes32 id => uint256) public lastClaimed;

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
        try channels.deposit{value: amount}(c, amount) {
            depositedIn += amount;
        } catch {}
        _after();
    }

    function claim(uint256 which, uint256 amount, bool compact) external {
        IPaymentChannels.ChannelConfig memory c = config(which);
        bytes32 id = channels.channelId(c);
        IPaymentChannels.ChannelState memory state = channels.channel(id);
        amount = bound(amount, 0, state.deposited + 2);
        bytes memory signature = compact ? _signCompact(PAYER_KEY, id, amount) : _sign(PAYER_KEY, id, amount);
        uint256 before = PAYEE.balance;
        try channels.claim(c, amount, signature) returns (uint256 paid) {
            _check(PAYEE.balance - before == paid, "claim paid other than it reported");
            _check(amount <= state.deposited && amount > state.claimed, "claim accepted a bad voucher");
        } catch {}
        paidToPayee += PAYEE.balance - before;
        _after();
    }

    function claimWithForgedVoucher(uint256 which, uint256 amount) external {
        IPaymentChannels.ChannelConfig memory c = config(which);
        bytes32 id = channels.channelId(c);
        try channels.claim(c, amount, _sign(STRANGER_KEY, id, amount)) {
            _check(false, "a voucher signed by a stranger paid");
        } catch {}
        _after();
    }

    function close(uint256 which, uint256 amount, bool asPayee) external {
        IPaymentChannels.ChannelConfig memory c = config(which);
        bytes32 id = channels.channelId(c);
        amount = bound(amount, 0, channels.channel(id).deposited + 2);
        bytes memory signature = _sign(PAYER_KEY, id, amount);
        (uint256 payee, uint256 payer) = (PAYEE.balance, c.payer.balance);
        vm.prank(asPayee ? PAYEE : c.payer);
        try channels.close(c, amount, signature) {
            _check(asPayee, "someone other than the payee closed");
        } catch {}
        paidToPayee += PAYEE.balance - payee;
        refundedToPayer += c.payer.balance - payer;
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
            _check(state.claimed <= state.deposited, "claimed above deposited");
            _check(state.deposited >= lastDeposited[id], "deposited decreased");
            _check(state.claimed >= lastClaimed[id], "claimed decreased");
            (lastDeposited[id], lastClaimed[id]) = (state.deposited, state.claimed);
        }
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

    /// conservation: everything deposited is still held, paid to the payee or refunded.
    function invariant_conservation() external view {
        vm.assertEq(
            handler.depositedIn(),
            address(channels).balance + handler.paidToPayee() + handler.refundedToPayer(),
            "in == held + paid + refunded"
        );
    }

    /// monotonicity and authority, checked by the handler after every call.
    function invariant_noBrokenRule() external view {
        vm.assertTrue(!handler.broken(), handler.brokenReason());
    }
}
