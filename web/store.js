// What the browser keeps, in IndexedDB (BigInt and Uint8Array survive structured clone):
// per channel the session key and the totals (micropay.wallet's WalletChannel), per site
// the reader's budget and what was spent there, and every receipt the site gave.
const DB = 'micropay';

function database() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore('channels', { keyPath: 'key' });
      request.result.createObjectStore('sites', { keyPath: 'site' });
      request.result.createObjectStore('receipts', { autoIncrement: true });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(store, mode, act) {
  const db = await database();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(store, mode);
      const request = act(tx.objectStore(store));
      // Resolve on commit, not on the request: a voucher's total is saved before it leaves.
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

export const getChannel = (key) => run('channels', 'readonly', (s) => s.get(key));
export const putChannel = (record) => run('channels', 'readwrite', (s) => s.put(record));
export const getSite = (site) => run('sites', 'readonly', (s) => s.get(site));
/** Change a site's record (``fresh()`` if it has none yet) with ``change``, read and written
 * in one transaction: IndexedDB runs the readwrite transactions of other tabs before or after
 * it, never between, so what one tab spent is never put back over by another's older copy.
 * Resolves with the record written. */
export function changeSite(site, fresh, change) {
  let written;
  return run('sites', 'readwrite', (s) => {
    const request = s.get(site);
    request.onsuccess = () => {
      written = request.result || fresh();
      change(written);
      s.put(written);
    };
    return request;
  }).then(() => written);
}
export const addReceipt = (receipt) => run('receipts', 'readwrite', (s) => s.add(receipt));
