// EIP-712 hashing and secp256k1 signatures, as docs/protocol.md spells them. One home for
// the byte layout, so the voucher, the receipt check and the key derivation cannot drift.
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { bytesToHex, concatBytes, hexToBytes, utf8ToBytes } from '@noble/hashes/utils.js';

export const ZERO_ADDRESS = '0x0000000000000000000000000000000000000000';
const N = secp256k1.Point.CURVE().n;

export const toHex = (bytes) => '0x' + bytesToHex(bytes);
export const fromHex = (hex) => hexToBytes(hex.startsWith('0x') ? hex.slice(2) : hex);
export const keccak = (...parts) => keccak_256(concatBytes(...parts));
export const text = (value) => keccak(utf8ToBytes(value));

/** A uint256 (or uint32, uint64: same 32-byte word) as big-endian bytes. */
export function word(value) {
  const n = BigInt(value);
  if (n < 0n || n >= 1n << 256n) throw new Error(`${value} is not a uint256`);
  return fromHex(n.toString(16).padStart(64, '0'));
}

/** An address left-padded to a word. */
export const addressWord = (address) => concatBytes(new Uint8Array(12), fromHex(address));

/** EIP-55: the paywall reads addresses only in their checksummed form. */
export function checksum(address) {
  const lower = address.toLowerCase().replace(/^0x/, '');
  if (!/^[0-9a-f]{40}$/.test(lower)) throw new Error(`${address} is not an address`);
  const hash = bytesToHex(keccak_256(utf8ToBytes(lower)));
  let out = '0x';
  for (let i = 0; i < 40; i++) out += parseInt(hash[i], 16) >= 8 ? lower[i].toUpperCase() : lower[i];
  return out;
}

export const sameAddress = (a, b) =>
  typeof a === 'string' && typeof b === 'string' && a.toLowerCase() === b.toLowerCase();

const DOMAIN_TYPEHASH = text(
  'EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)',
);

export function domainSeparator(domain) {
  return keccak(
    DOMAIN_TYPEHASH,
    text(domain.name),
    text(domain.version),
    word(domain.chainId),
    addressWord(domain.verifyingContract),
  );
}

/** keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct). */
export const typedDigest = (domain, structHash) =>
  keccak(Uint8Array.of(0x19, 0x01), domainSeparator(domain), structHash);

/** r ‖ s ‖ v with v in {27, 28} and low s: the form the contract and the paywall take. */
export function signDigest(privateKey, digest) {
  const sig = secp256k1.sign(digest, privateKey, { prehash: false, format: 'recovered' });
  return concatBytes(sig.subarray(1), Uint8Array.of(27 + sig[0]));
}

/** The address whose key made a 65-byte signature of digest, or null if it is not one. */
export function recoverAddress(digest, signature) {
  try {
    if (signature.length !== 65) return null;
    const v = signature[64];
    if (v !== 27 && v !== 28) return null;
    const sig = secp256k1.Signature.fromBytes(signature.subarray(0, 64), 'compact');
    if (sig.s > N / 2n) return null;
    const point = sig.addRecoveryBit(v - 27).recoverPublicKey(digest);
    return addressOf(point.toBytes(false));
  } catch {
    return null;
  }
}

const addressOf = (uncompressed) => checksum(toHex(keccak(uncompressed.subarray(1)).subarray(12)));

export const addressOfKey = (privateKey) => addressOf(secp256k1.getPublicKey(privateKey, false));

/** Is this 32-byte string a usable secp256k1 private key? */
export function isPrivateKey(bytes) {
  const n = BigInt(toHex(bytes));
  return n > 0n && n < N;
}
