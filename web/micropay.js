// micropay in the browser: pays a site's `channel` 402 from the reader's wallet.
//
// The paywall's 402 page carries the offer it shows the reader (#micropay-offer). On "pay
// with wallet" this script checks that offer against the site's PAYMENT-REQUIRED header,
// the chain and the contract's code, then opens a channel with one wallet transaction whose
// authorizer is a session key (session.js), signs each voucher with that key without asking
// the wallet again, fetches the page with PAYMENT-SIGNATURE and shows it. It mirrors the
// Python client (micropay/http_client.py): the same checks, the same recovery through the
// corrective 402, and one request never costs more than one price.
import * as store from './store.js';
import { channelId, channelState, chainTime, depositCall, depositWithPermitCall,
  finishWithdrawCall, hasCode, isPaymentChannels, requestWithdrawCall, signPermit, tokenBalance,
  transact } from './chain.js';
import { addressOfKey, addressWord, checksum, fromHex, keccak, recoverAddress, sameAddress,
  text, toHex, typedDigest, word, ZERO_ADDRESS } from './eip712.js';
import { SCAN_LIMIT, channelSalt, sessionKeyAt, sessionRoot } from './session.js';
import { signVoucher, voucherDigest } from './voucher.js';

/** A payment this script will not make; its message is shown to the reader. */
class Refusal extends Error {}

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const ROUNDS = 4; // answers to one request before giving up, as HttpPayer.max_rounds

// -- headers (standard base64 of UTF-8 JSON) -------------------------------------------------

function decodeHeader(value) {
  const bytes = Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function encodeHeader(obj) {
  let binary = '';
  for (const byte of new TextEncoder().encode(JSON.stringify(obj))) binary += String.fromCharCode(byte);
  return btoa(binary);
}

// -- the offer -------------------------------------------------------------------------------

/** Every term of an offer that decides what is paid, to whom, where. */
function terms(o) {
  const extra = o.extra || {};
  const domain = extra.domain || {};
  return JSON.stringify([o.scheme, o.network, o.amount, String(o.asset).toLowerCase(),
    String(o.payTo).toLowerCase(), String(extra.contract).toLowerCase(), domain.name,
    domain.version, domain.chainId, String(domain.verifyingContract).toLowerCase(),
    extra.minDeposit, extra.minWithdrawDelay, o.maxTimeoutSeconds]);
}

/** The offer as numbers and checked addresses, or a Refusal saying what is wrong with it. */
function parseOffer(o) {
  const extra = o.extra || {};
  const domain = extra.domain || {};
  if (o.scheme !== 'channel') throw new Refusal(`this script pays 'channel' offers, not ${o.scheme}`);
  if (domain.name !== 'micropay' || domain.version !== '1') throw new Refusal('the offer names another signing domain');
  if (o.network !== `eip155:${domain.chainId}`) throw new Refusal(`the offer's network ${o.network} is not its domain's chain ${domain.chainId}`);
  if (!sameAddress(extra.contract, domain.verifyingContract)) throw new Refusal("the offer's contract is not its domain's");
  return {
    raw: o,
    price: BigInt(o.amount),
    asset: checksum(o.asset),
    payee: checksum(o.payTo),
    contract: checksum(extra.contract),
    chainId: Number(domain.chainId),
    domain: { ...domain, verifyingContract: checksum(domain.verifyingContract) },
    deposit: BigInt(extra.minDeposit),
    withdrawDelay: Number(extra.minWithdrawDelay),
    metered: extra.metered === true, // price is a maximum: the receipt says what was charged
    // Prepaid credit on sale: one voucher may pay for up to this many reads (0: none).
    prepay: extra.metered !== true && Number.isSafeInteger(extra.prepay) && extra.prepay >= 2 ? extra.prepay : 0,
  };
}

/** The site's own offer for url, which must be the one this page showed the reader: a page
 * whose offer was changed (another contract, chain, payee, price) is refused here, before
 * the wallet is asked anything. */
async function siteOffer(url, shown) {
  const answer = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  const header = answer.headers.get('PAYMENT-REQUIRED');
  if (answer.status !== 402 || !header) throw new Refusal(`the site answered ${answer.status} without an offer`);
  const offers = (decodeHeader(header).accepts || []).filter((o) => o.scheme === 'channel');
  // A link paid in place shows no offer: it pays only on a channel the reader opened
  // before, under a price agreed to before (pay() checks both).
  const same = shown ? offers.find((o) => terms(o) === terms(shown)) : offers[0];
  if (!same) throw new Refusal('the offer on this page is not the one the site makes: nothing paid');
  return parseOffer(same);
}

// -- the wallet ------------------------------------------------------------------------------

/** EIP-6963 first (several wallets can coexist), then the legacy window.ethereum. */
async function findWallet() {
  const found = [];
  const listen = (event) => found.push(event.detail);
  window.addEventListener('eip6963:announceProvider', listen);
  window.dispatchEvent(new Event('eip6963:requestProvider'));
  await sleep(50); // wallets answer the request at once; give them one tick or two
  window.removeEventListener('eip6963:announceProvider', listen);
  const wallet = found.length ? found[0].provider : window.ethereum;
  if (!wallet) throw new Refusal('no Ethereum wallet in this browser');
  return wallet;
}

/** The wallet on the offer's chain (asking it to switch), talking to micropay's contract. */
async function checkChain(wallet, offer) {
  const want = '0x' + offer.chainId.toString(16);
  if (Number(await wallet.request({ method: 'eth_chainId' })) !== offer.chainId) {
    await wallet.request({ method: 'wallet_switchEthereumChain', params: [{ chainId: want }] });
    if (Number(await wallet.request({ method: 'eth_chainId' })) !== offer.chainId) {
      throw new Refusal(`the wallet is not on chain ${offer.chainId}`);
    }
  }
  if (!(await isPaymentChannels(wallet, offer.contract))) {
    throw new Refusal(`${offer.contract} is not micropay's PaymentChannels contract`);
  }
  if (offer.asset !== ZERO_ADDRESS && !(await hasCode(wallet, offer.asset))) {
    throw new Refusal(`the asset ${offer.asset} is not a token on chain ${offer.chainId}`);
  }
}

async function connectedPayer(wallet, payer) {
  const accounts = await wallet.request({ method: 'eth_accounts' });
  if (accounts.some((a) => sameAddress(a, payer))) return;
  const granted = await wallet.request({ method: 'eth_requestAccounts' });
  if (!granted.some((a) => sameAddress(a, payer))) throw new Refusal(`the wallet does not hold ${payer}`);
}

// -- channels --------------------------------------------------------------------------------

const channelKey = (site, offer) =>
  [site, offer.chainId, offer.contract, offer.payee, offer.asset].join('|').toLowerCase();

// prepay: reads the reader prepays per voucher where the site sells credit (0: off).
const freshSite = (site, offer) => ({ site, budget: offer.deposit, agreedPrice: 0n, spent: 0n, prepay: 0 });

async function siteRecord(site, offer) {
  return (await store.getSite(site)) || freshSite(site, offer);
}

/** Change the site's record in the store, as one read and write (store.changeSite): other
 * tabs pay and save the same record. Returns the record written. */
const changeSite = (site, offer, change) => store.changeSite(site, () => freshSite(site, offer), change);

/** Open the channel with its first deposit, in one wallet transaction: ETH as its value,
 * a token pulled under a permit the reader signs in the wallet just before. */
async function open(wallet, offer, payer, config) {
  const deposit = money(offer.deposit, offer.asset);
  if (offer.asset === ZERO_ADDRESS) {
    status(`Opening a channel with a deposit of ${deposit}: confirm in your wallet.`);
    await transact(wallet, payer, offer.contract, depositCall(config, offer.deposit), offer.deposit);
    return;
  }
  if ((await tokenBalance(wallet, offer.asset, payer)) < offer.deposit) {
    throw new Refusal(`${payer} holds less than the deposit of ${deposit}`);
  }
  status(`Opening a channel with a deposit of ${deposit}: sign the permit, then confirm.`);
  const deadline = (await chainTime(wallet)) + 3600n;
  const permit = await signPermit(wallet, offer, payer, offer.deposit, deadline);
  await transact(wallet, payer, offer.contract, depositWithPermitCall(config, offer.deposit, deadline, permit));
}

/** The live channel for the offer: kept here, found again on chain, or opened now. */
async function channelFor(wallet, site, offer) {
  const key = channelKey(site, offer);
  const kept = await store.getChannel(key);
  if (kept && !kept.retired) return kept;
  const [account] = await wallet.request({ method: 'eth_requestAccounts' });
  const payer = checksum(account);
  const root = await sessionRoot(wallet, payer, offer);
  for (let index = 0; index < SCAN_LIMIT; index++) {
    const sessionKey = sessionKeyAt(root, offer, index);
    const config = { payer, payee: offer.payee, token: offer.asset,
      authorizer: addressOfKey(sessionKey), withdrawDelay: offer.withdrawDelay, salt: channelSalt(index) };
    const id = channelId(config);
    let state = await channelState(wallet, offer.contract, id);
    const live = state.exists && !state.finished && state.closesAt === 0n;
    if (!live && (state.exists || state.finished)) continue; // withdrawn or withdrawing: next slot
    if (!state.exists) {
      await open(wallet, offer, payer, config);
      state = await channelState(wallet, offer.contract, id);
      if (state.deposited < offer.deposit) throw new Refusal('the deposit did not arrive');
    }
    // Found again or new. A channel found again starts from what was claimed on chain: the
    // site's corrective 402 moves it to the total the site holds, backed by our signature.
    const record = { key, site, payer, index, sessionKey, config, id, contract: offer.contract,
      acknowledged: state.claimed, signature: null, highestSigned: state.claimed,
      deposited: state.deposited, retired: null };
    await store.putChannel(record);
    return record;
  }
  throw new Refusal(`no free channel slot among the first ${SCAN_LIMIT}`);
}

// -- paying ----------------------------------------------------------------------------------

const RECEIPT_TYPE = text('Receipt(bytes32 receiptId,bytes32 channelId,address payer,address asset,' +
  'string resource,uint256 amount,uint256 cumulativeAmount,uint64 issuedAt)');

/** What is wrong with a receipt's signature or resource, or null: as the Python client, a
 * flagged receipt still stands for a paid request; it is kept with its problem. */
function receiptProblem(r, offer, resource) {
  if (!r.signature) return 'the receipt is not signed';
  const domain = { name: 'micropay receipt', version: '1', chainId: offer.chainId, verifyingContract: offer.contract };
  const digest = typedDigest(domain, keccak(RECEIPT_TYPE, fromHex(r.receiptId), fromHex(r.channelId),
    addressWord(r.payer), addressWord(r.asset), text(r.resource), word(r.amount),
    word(r.cumulativeAmount), word(r.issuedAt)));
  if (!sameAddress(recoverAddress(digest, fromHex(r.signature)), offer.payee)) return "the receipt is not signed by the site's payee";
  if (r.resource !== resource) return `the receipt is for ${r.resource}, not ${resource}`;
  return null;
}

/** Move the channel to the site's view, if it stands for requests already paid: signed by
 * our session key (or claimed on chain) and not a total signed during this request. Returns
 * the charged total to build on: the view's ``charged`` (metered charges and refunds leave
 * it below its voucher), at most the voucher it shows. */
async function resync(view, record, offer, wallet, floor, signedHere) {
  const total = BigInt(view.cumulativeAmount);
  const charged = view.charged == null ? total : BigInt(view.charged);
  if (charged > total) throw new Refusal(`the site's charged total ${charged} is above its voucher`);
  if (String(view.channelId).toLowerCase() !== record.id) throw new Refusal("the site's view is of another channel");
  if (view.signature) {
    const signer = recoverAddress(voucherDigest(offer.domain, record.id, total), fromHex(view.signature));
    if (!sameAddress(signer, record.config.authorizer)) throw new Refusal(`the site claims a total of ${total} this browser never signed`);
  } else if ((await channelState(wallet, offer.contract, record.id)).claimed !== total) {
    throw new Refusal(`the site claims a total of ${total} without a voucher`);
  }
  if (total > floor && signedHere.has(total)) {
    if (charged === total) {
      throw new Refusal(`the site calls ${total} already spent, but this browser signed it during this request`);
    }
    // The voucher of this very request (as HttpPayer._resync_charged): what it adds above
    // the floor was never served, whatever charged total the site says it holds under it.
    const held = floor > record.acknowledged ? floor : record.acknowledged;
    return charged < held ? charged : held;
  }
  return charged;
}

/** What is wrong with a paid answer's receipt against the voucher for ``total`` (the charged
 * total seen before plus the offer's price, or its maximum if metered, or a prepaid ceiling),
 * or null: the same channel and ceiling, a charge of the price (up to it if metered), and a
 * charged total of the one seen plus the charge, less exactly the refunds it reports beyond
 * those seen, plus at most ``unseen``: prepaid credit the site may have charged without this
 * browser seeing it (an answer lost), which the caller counts as spent (see chargedUnseen). */
function chargeProblem(receipt, record, offer, total, unseen = 0n) {
  if (!receipt || String(receipt.channelId).toLowerCase() !== record.id) return 'no receipt of this channel';
  const amount = BigInt(receipt.amount);
  const charged = BigInt(receipt.cumulativeAmount);
  const ceiling = receipt.ceiling == null ? charged : BigInt(receipt.ceiling);
  const refunded = receipt.refunded == null ? 0n : BigInt(receipt.refunded);
  const seen = record.refunded == null ? 0n : BigInt(record.refunded);
  if (ceiling !== total || charged > total) return 'its charged total or ceiling is not the voucher';
  if (offer.metered ? amount < 0n || amount > offer.price : amount !== offer.price) return 'its charge is not the price';
  const taken = chargedUnseen(receipt, record);
  if (refunded < seen || taken < 0n || taken > unseen) return 'its charged total does not add up';
  return null;
}

/** What a checked receipt charged beyond the total seen before, its own charge and the
 * refunds it reports: prepaid credit spent without this browser seeing the answer. */
function chargedUnseen(receipt, record) {
  const seen = record.refunded == null ? 0n : BigInt(record.refunded);
  const refunded = receipt.refunded == null ? 0n : BigInt(receipt.refunded);
  return BigInt(receipt.cumulativeAmount) - (record.acknowledged + BigInt(receipt.amount) - (refunded - seen));
}

// -- prepaid credit (micropay/credit.py) -----------------------------------------------------

/** The terms a ``PAYMENT-CREDIT`` token states (version 1, channel id, ceiling, price, then
 * the site's tag, which only the site can check), or null if it is not a token. */
function peekCredit(token) {
  if (typeof token !== 'string' || !/^[A-Za-z0-9_-]{151}$/.test(token)) return null;
  const standard = token.replace(/-/g, '+').replace(/_/g, '/') + '=';
  const bytes = Uint8Array.from(atob(standard), (c) => c.charCodeAt(0));
  if (bytes.length !== 113 || bytes[0] !== 1) return null;
  const number = (part) => BigInt(toHex(part));
  return { channelId: toHex(bytes.slice(1, 33)), ceiling: number(bytes.slice(33, 65)), price: number(bytes.slice(65, 81)) };
}

/** The credit a paid voucher left, kept if the reader prepays and the token is for this
 * channel, this voucher and this price with a price left (a token the site did not issue
 * only fails at the site, which then asks for a voucher). */
function creditLeft(token, record, offer, site, total, signature) {
  if (!token || !offer.prepay || !(site.prepay > 0)) return null;
  const said = peekCredit(token);
  if (!said || said.channelId !== record.id || said.ceiling !== total || said.price !== offer.price) return null;
  if (record.acknowledged + said.price > said.ceiling) return null;
  return { token, ceiling: said.ceiling, price: said.price, signature };
}

/** The next voucher's total (as HttpPayer._next_total): the charged total plus the price, or
 * one above the site's best voucher if that is not above it; where the site sells prepaid
 * credit, its best ceiling plus as many prices as the reader prepays, within the budget and
 * the deposit, at least one. */
function nextTotal(record, offer, site) {
  const ceiling = record.ceiling == null ? 0n : record.ceiling;
  if (!offer.prepay) {
    const next = record.acknowledged + offer.price;
    return next > ceiling ? next : ceiling + 1n;
  }
  const top = record.acknowledged > ceiling ? record.acknowledged : ceiling;
  const left = top - record.acknowledged; // credit the browser lost track of: it carries over
  const limits = [BigInt(Math.min(offer.prepay, site.prepay || 0)), (site.budget - site.spent - left) / offer.price];
  if (top + offer.price <= record.deposited) limits.push((record.deposited - top) / offer.price);
  const count = limits.reduce((a, b) => (a < b ? a : b));
  return top + (count > 1n ? count : 1n) * offer.price;
}

/** Pay for url once on the channel and return the paid response's body. */
async function payOnChannel(url, offer, record, site, wallet) {
  const resource = `GET ${new URL(url).pathname}`;
  const floor = record.highestSigned;
  const signedHere = new Set();
  for (let round = 0; round < ROUNDS; round++) {
    const credit = record.credit;
    const spending = credit && credit.price === offer.price && credit.ceiling === record.ceiling &&
      record.acknowledged + offer.price <= credit.ceiling && site.spent + offer.price <= site.budget;
    let headers, total, signature;
    if (spending) {
      // Prepaid: the token instead of a voucher, nothing to sign; the site charges one price.
      total = credit.ceiling;
      headers = { 'PAYMENT-CREDIT': credit.token, Accept: 'text/html' };
    } else {
      // Builds on the charged total, or on a credit-selling site, on its best ceiling: the
      // site takes no voucher twice. What it authorises above the charged total counts whole
      // against the budget (one price unless prepaid).
      total = nextTotal(record, offer, site);
      const exposure = offer.prepay ? total - record.acknowledged : offer.price;
      if (site.spent + exposure > site.budget) throw new Refusal(budgetMessage(site, offer, exposure));
      if (total > record.deposited) throw new Refusal('the deposit is spent: close the channel to get the rest back');
      if (total > record.highestSigned) {
        record.highestSigned = total; // saved before it leaves: the site may hold it from now on
        await store.putChannel(record);
      }
      signedHere.add(total);
      signature = toHex(signVoucher(record.sessionKey, offer.domain, record.id, total));
      const payment = encodeHeader({
        x402Version: 2,
        resource: { url },
        accepted: offer.raw,
        payload: { channel: record.config, cumulativeAmount: total.toString(), signature },
      });
      headers = { 'PAYMENT-SIGNATURE': payment, Accept: 'text/html' };
    }
    const answer = await fetch(url, { headers, cache: 'no-store' });
    if (answer.ok) {
      const header = answer.headers.get('PAYMENT-RESPONSE');
      const receipt = header ? decodeHeader(header) : null;
      // Credit charged unseen may show up in the charged total: under the old ceiling when
      // a voucher pays (or under a voucher signed before this request whose answer was lost:
      // the site may hold it, and have charged it), under this one when credit does.
      const ceiling = record.ceiling == null ? 0n : record.ceiling;
      const before = ceiling > floor ? ceiling : floor;
      const under = spending ? credit.ceiling - offer.price : before;
      const unseen = offer.prepay && under > record.acknowledged ? under - record.acknowledged : 0n;
      const wrong = chargeProblem(receipt, record, offer, total, unseen);
      if (wrong) throw new Refusal(`the site served the page with a receipt that does not match the ${spending ? 'credit' : 'voucher'}: ${wrong}`);
      const charged = BigInt(receipt.cumulativeAmount);
      const paid = BigInt(receipt.amount) + chargedUnseen(receipt, record);
      site.spent += paid;
      record.acknowledged = charged; // the next voucher builds on what was charged
      record.ceiling = total; // the site's best voucher now
      if (receipt.refunded != null) record.refunded = BigInt(receipt.refunded);
      if (spending) {
        // A running statement, not a signed receipt: the next voucher's signed receipt
        // confirms its total. The prepaid voucher's signature stands once all of it is charged.
        record.signature = charged === total ? credit.signature : null;
        if (charged + offer.price > credit.ceiling) record.credit = null; // spent
      } else {
        record.signature = charged === total ? signature : null;
        record.credit = creditLeft(answer.headers.get('PAYMENT-CREDIT'), record, offer, site, total, signature);
      }
      await store.putChannel(record);
      await changeSite(site.site, offer, (saved) => { saved.spent += paid; });
      if (spending) return { body: await answer.text(), problem: null, credit: record.credit };
      const problem = receiptProblem(receipt, offer, resource);
      await store.addReceipt({ site: site.site, resource, problem, receipt, recordedAt: Date.now() });
      return { body: await answer.text(), problem, credit: record.credit };
    }
    const header = answer.headers.get('PAYMENT-REQUIRED');
    const required = header ? decodeHeader(header) : {};
    const reason = required.error || `HTTP ${answer.status}`;
    const view = (required.extensions || {}).channel;
    if (reason === 'insufficient_deposit') {
      // Believe the chain, not the site: a deposit returned or reorged away leaves less to
      // sign against (and credit above it is refused); the next round signs within it, or
      // says the deposit is spent.
      const { deposited } = await channelState(wallet, offer.contract, record.id);
      if (deposited >= record.deposited) {
        throw new Refusal(`the site calls the deposit short, but the chain shows ${money(deposited, offer.asset)}`);
      }
      record.deposited = deposited;
      record.credit = null;
      await store.putChannel(record);
    } else if (spending && answer.status === 402) {
      // Refused, whatever the reason (spent, superseded, unfunded, closing, one this script
      // does not know yet): the next round pays a voucher, over which the credit left carries.
      record.credit = null;
      await store.putChannel(record);
    } else if (answer.status === 409) {
      await sleep(100);
    } else if ((reason === 'stale_voucher' || reason === 'cumulative_mismatch') && view) {
      const adopted = await resync(view, record, offer, wallet, floor, signedHere);
      // What the site holds above our record was paid before this browser lost track.
      const paid = adopted > record.acknowledged ? adopted - record.acknowledged : 0n;
      site.spent += paid;
      record.acknowledged = adopted;
      record.ceiling = BigInt(view.cumulativeAmount); // its best voucher, checked as ours
      record.signature = adopted === BigInt(view.cumulativeAmount) ? view.signature || null : null;
      record.credit = null;
      if (view.refunded != null) record.refunded = BigInt(view.refunded);
      if (adopted > record.highestSigned) record.highestSigned = adopted;
      await store.putChannel(record);
      await changeSite(site.site, offer, (saved) => { saved.spent += paid; });
    } else if (reason === 'channel_closing' || reason === 'unknown_channel') {
      // Believe it only if the chain agrees: a site must not make the reader deposit again.
      const state = await channelState(wallet, offer.contract, record.id);
      if (state.exists && !state.finished && state.closesAt === 0n) {
        throw new Refusal(`the site calls the channel ${reason.replace('_', ' ')}, but the chain shows it open`);
      }
      record.retired = reason;
      record.credit = null;
      await store.putChannel(record);
      throw new Refusal(`the site says the channel is ${reason.replace('_', ' ')}: pay again to open another`);
    } else {
      throw new Refusal(`the site refused the payment (${reason})`);
    }
  }
  throw new Refusal('the site kept refusing the payment');
}

const budgetMessage = (site, offer, amount = offer.price) =>
  `paying ${money(amount, offer.asset)} would take this site to ` +
  `${money(site.spent + amount, offer.asset)}, above your budget of ${money(site.budget, offer.asset)}`;

/** Pay for url under the page's offer. interactive: the reader clicked "pay", agreeing to
 * the price and deposit shown; otherwise pay only within what the reader agreed to before. */
async function pay(url, shown, interactive) {
  const offer = await siteOffer(url, shown);
  const budget = $('micropay-budget');
  const limit = budget && budget.value ? BigInt(budget.value) : null;
  const site = await changeSite(location.origin, offer, (saved) => {
    if (interactive) saved.agreedPrice = offer.price;
    if (limit !== null) saved.budget = limit;
  });
  if (offer.price > site.agreedPrice) {
    throw new Refusal(`the price ${money(offer.price, offer.asset)} is above the ` +
      `${money(site.agreedPrice, offer.asset)} you agreed to`);
  }
  const kept = await store.getChannel(channelKey(location.origin, offer));
  if (!interactive && (!kept || kept.retired)) throw new Refusal('no channel with this site yet');
  if (site.spent + offer.price > site.budget) throw new Refusal(budgetMessage(site, offer));
  const wallet = await findWallet();
  await checkChain(wallet, offer);
  const opened = await channelFor(wallet, location.origin, offer);
  status('Paying…');
  // One payment at a time per channel across this browser's tabs, each from the totals the
  // last one saved: two tabs signing the same total would have one of them refused.
  return exclusive(opened.key, async () => {
    const record = (await store.getChannel(opened.key)) || opened;
    const current = await siteRecord(location.origin, offer);
    const paid = await payOnChannel(url, offer, record, current, wallet);
    return { ...paid, offer, record, site: current };
  });
}

function exclusive(name, act) {
  // Web Locks exist on secure origins (https, localhost); elsewhere one tab is the norm.
  return navigator.locks ? navigator.locks.request(`micropay:${name}`, act) : act();
}

// -- the page --------------------------------------------------------------------------------

/** An amount as the reader reads it: ETH with its decimals, a token in base units. */
function money(value, asset) {
  return sameAddress(asset, ZERO_ADDRESS) ? eth(value) : `${value} base units of ${asset}`;
}

function eth(wei) {
  const n = BigInt(wei);
  const whole = n / 10n ** 18n;
  const fraction = (n % 10n ** 18n).toString().padStart(18, '0').replace(/0+$/, '');
  return `${whole}${fraction ? '.' + fraction : ''} ETH`;
}

function status(message, kind = 'info') {
  const line = $('micropay-status');
  if (line) {
    line.textContent = message;
    line.dataset.kind = kind;
  }
}

function showAccount(site, record, asset) {
  if (site) $('micropay-spent').textContent = money(site.spent, asset);
  if (record) {
    const left = { 'withdraw requested': 'nothing (closing)', withdrawn: 'nothing (refunded)' }[record.retired];
    $('micropay-left').textContent = left || money(record.deposited - record.acknowledged, asset);
  }
  $('micropay-close').hidden = !record || Boolean(record.retired);
  $('micropay-refund').hidden = !record || record.retired !== 'withdraw requested';
}

/** Show the paid page in place; its scripts do not run (DOMParser makes them inert). */
function render(body) {
  const doc = new DOMParser().parseFromString(body, 'text/html');
  $('micropay-content').replaceChildren(...Array.from(doc.body.childNodes, (n) => document.importNode(n, true)));
  document.title = doc.title;
  document.body.dataset.micropay = 'paid';
}

async function payPage(shown, interactive) {
  const button = $('micropay-pay');
  button.disabled = true;
  document.body.dataset.micropay = 'paying';
  try {
    const paid = await pay(location.href, shown, interactive);
    render(paid.body);
    showAccount(paid.site, paid.record, paid.offer.asset);
    const price = money(paid.offer.price, paid.offer.asset);
    const credit = paid.credit;
    const ahead = credit ? ` Prepaid for ${(credit.ceiling - paid.record.acknowledged) / credit.price} more.` : '';
    status(paid.problem ? `Paid ${price}; receipt flagged: ${paid.problem}` : `Paid ${price}.${ahead}`,
      paid.problem ? 'warning' : 'paid');
  } catch (err) {
    document.body.dataset.micropay = 'refused';
    status(`Not paid: ${err.message}`, 'refused');
    button.disabled = false;
  }
}

const when = (seconds) => new Date(Number(seconds) * 1000).toISOString();

/** Run one of the payer's own actions on this site's channel, with the wallet checked as
 * for paying. They need no session key: only the payer's wallet. */
async function onChannel(shown, failed, act) {
  try {
    const offer = parseOffer(shown);
    const record = await store.getChannel(channelKey(location.origin, offer));
    if (!record) return;
    const wallet = await findWallet();
    await checkChain(wallet, offer);
    await act(wallet, offer, record);
  } catch (err) {
    status(`${failed}: ${err.message}`, 'refused');
  }
}

/** Ask to withdraw: the site may claim what it holds until the delay ends, then the rest
 * goes back to the reader (refund). */
const closeChannel = (shown) => onChannel(shown, 'Not closed', async (wallet, offer, record) => {
  await connectedPayer(wallet, record.payer);
  status('Closing the channel: confirm in your wallet.');
  await transact(wallet, record.payer, offer.contract, requestWithdrawCall(record.config));
  record.retired = 'withdraw requested';
  await store.putChannel(record);
  const state = await channelState(wallet, offer.contract, record.id);
  showAccount(null, record, offer.asset);
  status(`Closing: the rest of the deposit is yours from ${when(state.closesAt)}.`, 'closing');
});

const refund = (shown) => onChannel(shown, 'Not refunded', async (wallet, offer, record) => {
  const state = await channelState(wallet, offer.contract, record.id);
  if (state.closesAt > (await chainTime(wallet))) {
    status(`Not yet: the refund opens at ${when(state.closesAt)}.`, 'closing');
    return;
  }
  await connectedPayer(wallet, record.payer);
  await transact(wallet, record.payer, offer.contract, finishWithdrawCall(record.config));
  record.retired = 'withdrawn';
  await store.putChannel(record);
  showAccount(null, record, offer.asset);
  status(`Refunded ${money(state.deposited - state.claimed, offer.asset)} to ${record.payer}.`, 'refunded');
});

/** A link marked data-micropay, on any page of the site (a free one too), is paid and
 * shown in place when the reader already pays this site; otherwise the browser follows it
 * to the 402 page, where the reader sees the terms. */
async function payLink(event) {
  const link = event.target.closest && event.target.closest('a[data-micropay]');
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  if (new URL(link.href).origin !== location.origin) return; // only this site's pages
  event.preventDefault();
  try {
    const paid = await pay(link.href, null, false);
    render(paid.body);
    history.pushState(null, '', link.href);
  } catch {
    location.assign(link.href);
  }
}

async function boot() {
  document.addEventListener('click', payLink);
  const element = $('micropay-offer');
  if (!element) return;
  const shown = JSON.parse(element.textContent);
  $('micropay-pay').addEventListener('click', () => payPage(shown, true));
  $('micropay-close').addEventListener('click', () => closeChannel(shown));
  $('micropay-refund').addEventListener('click', () => refund(shown));
  let offer;
  try {
    offer = parseOffer(shown);
  } catch (err) {
    status(`This page cannot be paid: ${err.message}`, 'refused');
    return;
  }
  const site = await siteRecord(location.origin, offer);
  $('micropay-budget').value = site.budget.toString();
  $('micropay-budget').addEventListener('change', async (event) => {
    const budget = BigInt(event.target.value || '0');
    const next = await changeSite(location.origin, offer, (saved) => { saved.budget = budget; });
    document.body.dataset.budget = next.budget.toString();
  });
  const prepay = $('micropay-prepay');
  if (prepay) {
    prepay.value = String(site.prepay || 0);
    prepay.addEventListener('change', async (event) => {
      const wanted = Number.parseInt(event.target.value, 10);
      const reads = Number.isSafeInteger(wanted) && wanted > 0 ? Math.min(wanted, offer.prepay) : 0;
      event.target.value = String(reads);
      const next = await changeSite(location.origin, offer, (saved) => { saved.prepay = reads; });
      document.body.dataset.prepay = String(next.prepay);
    });
  }
  const record = await store.getChannel(channelKey(location.origin, offer));
  showAccount(site, record, offer.asset);
  // A reader who agreed to this site's price pays each page silently with the session key.
  if (record && !record.retired && site.agreedPrice > 0n) await payPage(shown, false);
  else {
    status(record ? 'Pay to go on reading here.' : 'Pay with your wallet to open a channel and read.');
    document.body.dataset.micropay = 'ready';
  }
}

boot();
