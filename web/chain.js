// What the page asks of the chain, through the reader's wallet (EIP-1193): the contract's
// code, a channel's state, and the payer's own transactions. Calldata is encoded by hand:
// every argument is a static word, so an ABI library would add weight and nothing else.
import { concatBytes } from '@noble/hashes/utils.js';
import { addressWord, fromHex, keccak, text, toHex, word } from './eip712.js';

const CONFIG = '(address,address,address,address,uint32,bytes32)';
const selector = (signature) => text(signature).subarray(0, 4);
const DEPOSIT = selector(`deposit(${CONFIG},uint256)`);
const CHANNEL = selector('channel(bytes32)');
const REQUEST_WITHDRAW = selector(`requestWithdraw(${CONFIG})`);
const FINISH_WITHDRAW = selector(`finishWithdraw(${CONFIG})`);
const DEPOSIT_WITH_PERMIT = selector(`depositWithPermit(${CONFIG},uint256,uint256,uint8,bytes32,bytes32)`);

// The shipped PaymentChannels runtime code: its length, the spans its immutables fill in
// at deployment (chain id, domain separator) and the keccak256 of the code with those
// spans zeroed. tools/build_web.py writes it from micropay/artifacts at build time.
/* global MICROPAY_RUNTIME */
const RUNTIME = MICROPAY_RUNTIME;

export const encodeConfig = (c) =>
  concatBytes(
    addressWord(c.payer),
    addressWord(c.payee),
    addressWord(c.token),
    addressWord(c.authorizer),
    word(c.withdrawDelay),
    fromHex(c.salt),
  );

/** keccak256(abi.encode(config)), as the contract names a channel. */
export const channelId = (config) => toHex(keccak(encodeConfig(config)));

export const depositCall = (config, amount) => concatBytes(DEPOSIT, encodeConfig(config), word(amount));
/** deposit with an EIP-2612 permit (r ‖ s ‖ v) signed by the payer: one transaction. */
export const depositWithPermitCall = (config, amount, deadline, permit) =>
  concatBytes(DEPOSIT_WITH_PERMIT, encodeConfig(config), word(amount), word(deadline),
    word(permit[64]), permit.subarray(0, 32), permit.subarray(32, 64));
export const requestWithdrawCall = (config) => concatBytes(REQUEST_WITHDRAW, encodeConfig(config));
export const finishWithdrawCall = (config) => concatBytes(FINISH_WITHDRAW, encodeConfig(config));

/** Is the code at contract micropay's PaymentChannels (the Python client's same check)? */
export async function isPaymentChannels(wallet, contract) {
  const code = fromHex(await wallet.request({ method: 'eth_getCode', params: [contract, 'latest'] }));
  if (code.length !== RUNTIME.length) return false;
  for (const [start, end] of RUNTIME.holes) code.fill(0, start, end);
  return toHex(keccak(code)) === RUNTIME.hash;
}

/** The channel's word on chain: deposit, claimed total, withdraw time, finished. */
export async function channelState(wallet, contract, id) {
  const data = toHex(concatBytes(CHANNEL, fromHex(id)));
  const out = fromHex(await wallet.request({ method: 'eth_call', params: [{ to: contract, data }, 'latest'] }));
  const at = (i) => BigInt(toHex(out.subarray(32 * i, 32 * i + 32)));
  const deposited = at(0);
  return { deposited, claimed: at(1), closesAt: at(2), finished: at(3) !== 0n, exists: deposited > 0n };
}

async function call(wallet, to, ...data) {
  return fromHex(await wallet.request({ method: 'eth_call', params: [{ to, data: toHex(concatBytes(...data)) }, 'latest'] }));
}

const readWord = async (wallet, to, ...data) => BigInt(toHex((await call(wallet, to, ...data)).subarray(0, 32)));

export const hasCode = async (wallet, address) =>
  (await wallet.request({ method: 'eth_getCode', params: [address, 'latest'] })).length > 2;

export const tokenBalance = (wallet, token, owner) =>
  readWord(wallet, token, selector('balanceOf(address)'), addressWord(owner));

/** The payer's EIP-2612 permit for the contract to pull the deposit, signed in the wallet
 * (the reader sees the token, the amount and the spender there). Version "1", as
 * micropay.tokens.TokenClient.sign_permit assumes. */
export async function signPermit(wallet, offer, owner, value, deadline) {
  const out = await call(wallet, offer.asset, selector('name()'));
  const at = Number(BigInt(toHex(out.subarray(0, 32))));
  const length = Number(BigInt(toHex(out.subarray(at, at + 32))));
  const name = new TextDecoder().decode(out.subarray(at + 32, at + 32 + length));
  const nonce = await readWord(wallet, offer.asset, selector('nonces(address)'), addressWord(owner));
  const typed = {
    types: {
      EIP712Domain: [
        { name: 'name', type: 'string' }, { name: 'version', type: 'string' },
        { name: 'chainId', type: 'uint256' }, { name: 'verifyingContract', type: 'address' },
      ],
      Permit: [
        { name: 'owner', type: 'address' }, { name: 'spender', type: 'address' },
        { name: 'value', type: 'uint256' }, { name: 'nonce', type: 'uint256' },
        { name: 'deadline', type: 'uint256' },
      ],
    },
    primaryType: 'Permit',
    domain: { name, version: '1', chainId: offer.chainId, verifyingContract: offer.asset },
    message: { owner, spender: offer.contract, value: value.toString(), nonce: nonce.toString(),
      deadline: deadline.toString() },
  };
  const signature = fromHex(await wallet.request({ method: 'eth_signTypedData_v4', params: [owner, JSON.stringify(typed)] }));
  if (signature[64] < 27) signature[64] += 27; // some wallets say 0/1
  return signature;
}

export async function chainTime(wallet) {
  const block = await wallet.request({ method: 'eth_getBlockByNumber', params: ['latest', false] });
  return BigInt(block.timestamp);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Send one of the payer's transactions (the wallet asks the reader) and wait until mined. */
export async function transact(wallet, from, to, data, value = 0n) {
  const hash = await wallet.request({
    method: 'eth_sendTransaction',
    params: [{ from, to, data: toHex(data), value: '0x' + value.toString(16) }],
  });
  for (let waited = 0; waited < 300_000; waited += 500) {
    const receipt = await wallet.request({ method: 'eth_getTransactionReceipt', params: [hash] });
    if (receipt) {
      if (receipt.status !== '0x1') throw new Error(`the transaction ${hash} failed`);
      return receipt;
    }
    await sleep(500);
  }
  throw new Error(`the transaction ${hash} was not mined within five minutes`);
}
