// The session key: the key that signs this browser's vouchers, and the channel's authorizer.
//
// Why derived and not random: the Python client derives it from the payer's key so that a
// reader who loses its store finds its channel on chain again. A browser holds no payer key,
// so the secret is the wallet's EIP-712 signature of a fixed message naming the site (wallets
// sign deterministically, RFC 6979): after cleared storage one more signature gives back the
// same keys, and the channel is found again by the payer's address and the site's offer.
// The key is then kept raw in IndexedDB: WebCrypto has no non-extractable secp256k1 key.
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import {
  addressWord, fromHex, isPrivateKey, keccak, recoverAddress, sameAddress, text, toHex,
  typedDigest, word,
} from './eip712.js';

export const SCAN_LIMIT = 256; // channel slots searched, as micropay.wallet.SCAN_LIMIT
const TAG = utf8ToBytes('micropay/browser-channel/v1');
const PURPOSE =
  'Make the key this browser pays this site with. It can spend at most the deposit of ' +
  'your channel to this site, and only to this site. Signing moves no money.';
const SESSION_TYPE = 'SessionKey(string purpose,address site,address token)';

function typedData(offer) {
  return {
    types: {
      EIP712Domain: [
        { name: 'name', type: 'string' },
        { name: 'version', type: 'string' },
        { name: 'chainId', type: 'uint256' },
        { name: 'verifyingContract', type: 'address' },
      ],
      SessionKey: [
        { name: 'purpose', type: 'string' },
        { name: 'site', type: 'address' },
        { name: 'token', type: 'address' },
      ],
    },
    primaryType: 'SessionKey',
    domain: {
      name: 'micropay session key',
      version: '1',
      chainId: offer.chainId,
      verifyingContract: offer.contract,
    },
    message: { purpose: PURPOSE, site: offer.payee, token: offer.asset },
  };
}

/** Ask the wallet for the signature the session keys of this site come from. */
export async function sessionRoot(wallet, payer, offer) {
  const request = typedData(offer);
  const signed = await wallet.request({
    method: 'eth_signTypedData_v4',
    params: [payer, JSON.stringify(request)],
  });
  const signature = fromHex(signed);
  if (signature.length === 65 && signature[64] < 27) signature[64] += 27; // some wallets say 0/1
  const digest = typedDigest(
    request.domain,
    keccak(text(SESSION_TYPE), text(PURPOSE), addressWord(offer.payee), addressWord(offer.asset)),
  );
  // A wallet that signs with another key would give keys no later visit could rebuild.
  if (!sameAddress(recoverAddress(digest, signature), payer)) {
    throw new Error("the wallet's signature is not the payer's: no session key made");
  }
  return keccak(signature);
}

/** The session key of the payer's index-th channel to the site (micropay.wallet's HMAC). */
export function sessionKeyAt(root, offer, index) {
  let secret = hmac(
    sha256,
    root,
    concatBytes(TAG, word(offer.chainId), fromHex(offer.contract), fromHex(offer.payee),
      fromHex(offer.asset), word(index)),
  );
  while (!isPrivateKey(secret)) secret = sha256(secret); // odds 2**-128
  return secret;
}

/** Small salts, as micropay.wallet.channel_salt: the session key already makes ids unique. */
export const channelSalt = (index) => toHex(word(index + 1));
