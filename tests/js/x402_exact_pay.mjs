// Pays one request with the official npm x402 client, unmodified: @x402/fetch's
// wrapFetchWithPayment around an x402Client with @x402/evm's exact scheme and a viem local
// account. Prints one JSON line: the final status, body and PAYMENT-RESPONSE (raw and decoded).
//
// usage: node tests/js/x402_exact_pay.mjs URL PRIVATE_KEY NETWORK ASSET
// ASSET is the site's token: the client pays only assets it knows or is told to allow.
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

const [url, key, network, asset] = process.argv.slice(2);
const client = new x402Client();
client.register(network, new ExactEvmScheme(privateKeyToAccount(key)));
client.setSpendControls({ allowedAssets: [{ network, asset }] });

const response = await wrapFetchWithPayment(fetch, client)(url);
const header = response.headers.get("payment-response");
console.log(
  JSON.stringify({
    status: response.status,
    body: await response.text(),
    paymentResponse: header,
    settled: header ? decodePaymentResponseHeader(header) : null,
  }),
);
