// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @dev The forge cheatcodes these tests use (forge-std is not available offline, so this
/// declares only what is needed, with the signatures forge implements).
interface Vm {
    function warp(uint256 newTimestamp) external;
    function chainId(uint256 newChainId) external;
    function prank(address msgSender) external;
    function startPrank(address msgSender) external;
    function stopPrank() external;
    function deal(address account, uint256 newBalance) external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function addr(uint256 privateKey) external pure returns (address);
    function expectRevert(bytes4 revertData) external;
    function expectRevert(bytes calldata revertData) external;
    function assume(bool condition) external pure;
    function label(address account, string calldata newLabel) external;
    function assertEq(uint256 left, uint256 right, string calldata error) external pure;
    function assertEq(bytes32 left, bytes32 right, string calldata error) external pure;
    function assertEq(address left, address right, string calldata error) external pure;
    function assertEq(bool left, bool right, string calldata error) external pure;
    function assertLe(uint256 left, uint256 right, string calldata error) external pure;
    function assertGe(uint256 left, uint256 right, string calldata error) external pure;
    function assertTrue(bool condition, string calldata error) external pure;
}

/// @title Base
/// @notice The little of forge-std these suites need: the cheatcode handle, `bound`, and the
/// target list forge's invariant runner reads.
abstract contract Base {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    address[] private _targets;

    /// @dev Forge's invariant runner calls only these contracts (it reads this getter).
    function targetContracts() public view returns (address[] memory) {
        return _targets;
    }

    function targetContract(address target) internal {
        _targets.push(target);
    }

    /// @dev `x` mapped into [min, max] without discarding the run (unlike vm.assume).
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        require(min <= max, "bound: min > max");
        if (x >= min && x <= max) return x;
        uint256 size = max - min;
        if (size == type(uint256).max) return x;
        return min + x % (size + 1);
    }
}
