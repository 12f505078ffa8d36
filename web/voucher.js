// The voucher: the one thing the session key signs. Kept apart so that when a voucher's
// amount becomes a ceiling (the payee settling a chosen total) only this module changes.
import { keccak, text, typedDigest, word, signDigest, fromHex } from './eip712.js';

const VOUCHER_TYPEHASH = text('Voucher(bytes32 channelId,uint256 cumulativeAmount)');

/** The digest the contract's voucherDigest(channelId, cumulativeAmount) returns. */
export const voucherDigest = (domain, channelId, cumulativeAmount) =>
  typedDigest(domain, keccak(VOUCHER_TYPEHASH, fromHex(channelId), word(cumulativeAmount)));

/** The session key's 65-byte signature of the channel's new cumulative total. */
export const signVoucher = (sessionKey, domain, channelId, cumulativeAmount) =>
  signDigest(sessionKey, voucherDigest(domain, channelId, cumulativeAmount));
