// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Streams} from "../../contracts/Streams.sol";
import {IStreams} from "../../contracts/interfaces/IStreams.sol";
import {Base} from "./utils/Base.sol";

/// @dev The reference arithmetic the streams promise (IStreams), written out independently.
abstract contract StreamReference is Base {
    address internal constant SENDER = address(0x5E17D);
    address internal constant RECIPIENT = address(0x2EC1);
    uint256 internal constant NOW = 1_700_000_000;
    uint256 internal constant SCALE = 1e18;

    Streams internal streams;

    /// floor(amount * (t - start) / (end - start)); 0 before start or cliff; all from end on.
    function _expectedFixed(IStreams.FixedStream memory s, uint256 t) internal pure returns (uint256) {
        if (t >= s.end) return s.amount;
        if (t < s.start || t < s.cliff) return 0;
        return uint256(s.amount) * (t - s.start) / (uint256(s.end) - s.start);
    }

    function _fixed(uint256 amount, uint256 start, uint256 duration, uint256 cliffAt, bool cancelable, uint256 salt)
        internal
        returns (IStreams.FixedStream memory s)
    {
        amount = bound(amount, 1, type(uint128).max);
        duration = bound(duration, 1, 20 * 365 days);
        start = bound(start, NOW - 10 * 365 days, NOW + 10 * 365 days);
        if (start + duration <= block.timestamp) start = block.timestamp - duration + 1;
        uint256 cliff = cliffAt % 3 == 0 ? 0 : bound(cliffAt, start, start + duration);
        s = IStreams.FixedStream(
            SENDER,
            RECIPIENT,
            address(0),
            uint128(amount),
            uint40(start),
            uint40(cliff),
            uint40(start + duration),
            cancelable,
            bytes32(salt)
        );
        vm.deal(SENDER, amount);
        vm.prank(SENDER);
        streams.createFixedStream{value: amount}(s);
    }
}

/// @notice Fuzzed arithmetic of fixed and open-ended streams against the reference: exact
/// floors, no dust created or lost, nothing lost across rate changes or pauses.
contract StreamArithmeticTest is StreamReference {
    function setUp() external {
        vm.warp(NOW);
        streams = new Streams();
    }

    function testFuzz_fixedStreamedIsTheExactFloor(
        uint256 amount,
        uint256 start,
        uint256 duration,
        uint256 cliff,
        uint256 at
    ) external {
        IStreams.FixedStream memory s = _fixed(amount, start, duration, cliff, false, 1);
        at = bound(at, NOW, uint256(s.end) + 365 days);
        vm.warp(at);
        (uint128 streamed, uint128 withdrawable) = streams.fixedStreamAmounts(s);
        uint256 expected = _expectedFixed(s, at);
        vm.assertEq(streamed, expected, "streamed");
        vm.assertEq(withdrawable, expected, "withdrawable");
        if (expected > 0) {
            vm.prank(RECIPIENT);
            vm.assertEq(streams.withdrawFixed(s, RECIPIENT), expected, "withdrawn");
            vm.assertEq(RECIPIENT.balance, expected, "recipient balance");
        }
        vm.assertEq(address(streams).balance, s.amount - expected, "the rest stays locked");
    }

    function testFuzz_withdrawalsInStepsAddUpToTheAmount(
        uint256 amount,
        uint256 duration,
        uint256[4] memory steps
    ) external {
        IStreams.FixedStream memory s = _fixed(amount, NOW, duration, 0, false, 2);
        uint256 total;
        for (uint256 i; i < steps.length; ++i) {
            vm.warp(block.timestamp + bound(steps[i], 0, uint256(s.end) - s.start));
            (, uint128 withdrawable) = streams.fixedStreamAmounts(s);
            if (withdrawable == 0) continue;
            total += streams.withdrawFixed(s, RECIPIENT); // anyone may pay the recipient
            vm.assertEq(total, _expectedFixed(s, block.timestamp), "withdrawn so far");
        }
        vm.warp(s.end);
        if (total < s.amount) total += streams.withdrawFixed(s, RECIPIENT);
        vm.assertEq(total, s.amount, "every unit arrives, no dust");
        vm.assertEq(address(streams).balance, 0, "nothing left behind");
    }

    function testFuzz_cancelSplitsTheAmountExactly(uint256 amount, uint256 duration, uint256 cliff, uint256 at)
        external
    {
        IStreams.FixedStream memory s = _fixed(amount, NOW, duration, cliff, true, 3);
        at = bound(at, NOW, uint256(s.end) - 1);
        vm.warp(at);
        vm.prank(SENDER);
        uint256 refunded = streams.cancel(s);
        uint256 earned = _expectedFixed(s, at);
        vm.assertEq(refunded, s.amount - earned, "refund is what has not streamed");
        vm.assertEq(SENDER.balance, refunded, "sender balance");
        vm.warp(uint256(s.end) + 1000); // frozen at cancellation
        (uint128 streamed,) = streams.fixedStreamAmounts(s);
        vm.assertEq(streamed, earned, "frozen");
        if (earned > 0) streams.withdrawFixed(s, RECIPIENT);
        vm.assertEq(RECIPIENT.balance + SENDER.balance, s.amount, "the amount, split exactly");
        vm.assertEq(address(streams).balance, 0, "nothing left behind");
    }

    function testFuzz_openStreamLosesNothingAcrossRateChangesAndPauses(
        uint128 rate1,
        uint128 rate2,
        uint256 dt1,
        uint256 dt2,
        uint256 paused
    ) external {
        rate1 = uint128(bound(rate1, 1, type(uint128).max));
        rate2 = uint128(bound(rate2, 1, type(uint128).max));
        dt1 = bound(dt1, 0, 10 * 365 days);
        dt2 = bound(dt2, 0, 10 * 365 days);
        paused = bound(paused, 0, 10 * 365 days);
        IStreams.OpenStream memory s = IStreams.OpenStream(SENDER, RECIPIENT, address(0), bytes32(uint256(4)));
        vm.prank(SENDER);
        bytes32 id = streams.createOpenStream(s, rate1, 0);
        vm.warp(block.timestamp + dt1);
        vm.prank(SENDER);
        streams.adjustRate(s, rate2);
        vm.warp(block.timestamp + dt2);
        vm.prank(SENDER);
        streams.pause(s);
        vm.warp(block.timestamp + paused);
        uint256 exact = (uint256(rate1) * dt1 + uint256(rate2) * dt2) / SCALE;
        (uint128 streamed,,, uint128 debt) = streams.openStreamAmounts(id);
        vm.assertEq(streamed, exact, "streamed = floor(total accrued / scale)");
        vm.assertEq(debt, exact, "unfunded: all of it is debt");
        // A deposit pays the debt first: exactly that much becomes withdrawable.
        if (exact > 0 && exact < type(uint128).max) {
            vm.deal(address(this), exact);
            streams.deposit{value: exact}(s, uint128(exact));
            (, uint128 withdrawable, uint128 refundable, uint128 left) = streams.openStreamAmounts(id);
            vm.assertEq(withdrawable, exact, "debt paid");
            vm.assertEq(refundable, 0, "nothing refundable");
            vm.assertEq(left, 0, "no debt left");
        }
    }
}

/// @notice Random sequences over fixed and open-ended ETH streams for the invariant runner.
contract StreamHandler is StreamReference {
    uint256 internal constant FIXED = 3;
    uint256 internal constant OPEN = 2;

    IStreams.FixedStream[] internal _fixedStreams;
    IStreams.OpenStream[OPEN] internal _openStreams;
    mapping(bytes32 id => uint256) public lastOut;

    uint256 public paidIn;
    uint256 public paidOut;
    bool public broken;
    string public brokenReason;

    constructor(Streams streams_) {
        streams = streams_;
        for (uint256 i; i < OPEN; ++i) {
            _openStreams[i] = IStreams.OpenStream(SENDER, RECIPIENT, address(0), bytes32(1000 + i));
            vm.prank(SENDER);
            streams.createOpenStream(_openStreams[i], uint128(1e18 * (i + 1) + 7), 0);
        }
    }

    function createFixed(uint256 amount, uint256 duration, uint256 cliff, bool cancelable) external {
        if (_fixedStreams.length == FIXED) return;
        amount = bound(amount, 1, 1e30);
        _fixedStreams.push(_fixed(amount, block.timestamp, bound(duration, 1, 30 days), cliff, cancelable, _fixedStreams.length));
        paidIn += amount;
    }

    function withdrawFixed(uint256 which) external {
        if (_fixedStreams.length == 0) return;
        IStreams.FixedStream memory s = _fixedStreams[which % _fixedStreams.length];
        try streams.withdrawFixed(s, RECIPIENT) returns (uint128 amount) {
            paidOut += amount;
        } catch {}
        _checkFixed(s);
    }

    function cancel(uint256 which) external {
        if (_fixedStreams.length == 0) return;
        IStreams.FixedStream memory s = _fixedStreams[which % _fixedStreams.length];
        vm.prank(SENDER);
        try streams.cancel(s) returns (uint128 refunded) {
            paidOut += refunded;
        } catch {}
        _checkFixed(s);
    }

    function deposit(uint256 which, uint256 amount) external {
        IStreams.OpenStream memory s = _openStreams[which % OPEN];
        amount = bound(amount, 1, 1e24);
        vm.deal(address(this), amount);
        try streams.deposit{value: amount}(s, uint128(amount)) {
            paidIn += amount;
        } catch {}
    }

    function withdrawOpen(uint256 which) external {
        IStreams.OpenStream memory s = _openStreams[which % OPEN];
        try streams.withdrawOpen(s, RECIPIENT) returns (uint128 amount) {
            paidOut += amount;
        } catch {}
    }

    function refund(uint256 which, uint256 amount) external {
        IStreams.OpenStream memory s = _openStreams[which % OPEN];
        (,, uint128 refundable,) = streams.openStreamAmounts(streams.openStreamId(s));
        amount = bound(amount, 0, uint256(refundable) + 1);
        vm.prank(SENDER);
        try streams.refund(s, uint128(amount)) {
            paidOut += amount;
            if (amount > refundable) _fail("refunded more than was refundable");
        } catch {}
    }

    function setRate(uint256 which, uint256 rate) external {
        IStreams.OpenStream memory s = _openStreams[which % OPEN];
        rate = bound(rate, 0, 1e21);
        IStreams.OpenStreamState memory state = streams.getOpenStream(streams.openStreamId(s));
        vm.startPrank(SENDER);
        if (rate == 0) {
            try streams.pause(s) {} catch {}
        } else if (state.ratePerSecond == 0) {
            try streams.resume(s, uint128(rate)) {} catch {}
        } else {
            try streams.adjustRate(s, uint128(rate)) {} catch {}
        }
        vm.stopPrank();
    }

    function warp(uint256 seconds_) external {
        vm.warp(block.timestamp + bound(seconds_, 0, 10 days));
    }

    /// @notice What the contract still owes: unwithdrawn, unrefunded money of every stream.
    function owed() external view returns (uint256 total) {
        for (uint256 i; i < _fixedStreams.length; ++i) {
            IStreams.FixedStream memory s = _fixedStreams[i];
            IStreams.FixedStreamState memory state = streams.getFixedStream(streams.fixedStreamId(s));
            uint256 refunded = state.canceledAt == 0 ? 0 : s.amount - _expectedFixed(s, state.canceledAt);
            total += s.amount - state.withdrawn - refunded;
        }
        for (uint256 i; i < OPEN; ++i) {
            IStreams.OpenStreamState memory state = streams.getOpenStream(streams.openStreamId(_openStreams[i]));
            total += state.deposited - state.refunded - state.withdrawn;
        }
    }

    function _checkFixed(IStreams.FixedStream memory s) private {
        bytes32 id = streams.fixedStreamId(s);
        IStreams.FixedStreamState memory state = streams.getFixedStream(id);
        if (state.withdrawn < lastOut[id]) _fail("withdrawn decreased");
        lastOut[id] = state.withdrawn;
        uint256 cap = _expectedFixed(s, state.canceledAt == 0 ? block.timestamp : state.canceledAt);
        if (state.withdrawn > cap) _fail("withdrawn more than streamed");
    }

    function _fail(string memory reason) private {
        if (!broken) (broken, brokenReason) = (true, reason);
    }

    receive() external payable {}
}

/// @notice Invariants over random stream operations (forge's invariant runner).
contract StreamInvariantTest is Base {
    Streams internal streams;
    StreamHandler internal handler;

    function setUp() external {
        vm.warp(1_700_000_000);
        streams = new Streams();
        handler = new StreamHandler(streams);
        targetContract(address(handler));
    }

    /// solvency and conservation, to the wei: held = owed = paid in - paid out.
    function invariant_solvencyAndConservation() external view {
        vm.assertEq(address(streams).balance, handler.owed(), "balance == owed");
        vm.assertEq(handler.paidIn() - handler.paidOut(), address(streams).balance, "in - out == held");
    }

    function invariant_noBrokenRule() external view {
        vm.assertTrue(!handler.broken(), handler.brokenReason());
    }
}
