// ethers 6.x through Lasso with its default batching (up to 100 calls per batch, 10 ms
// stall) and parallelism, compared with anvil.
// Usage: node ethers_check.mjs LASSO_HTTP_URL LASSO_WS_URL ANVIL_URL [N]
// Prints one JSON report on stdout.
import { JsonRpcProvider, WebSocketProvider } from "ethers";
import { check, plan } from "./calls.mjs";

const [lassoHttp, lassoWs, anvilUrl, n = "150"] = process.argv.slice(2);
const api = {
  balance: (p, address) => p.getBalance(address),
  nonce: (p, address) => p.getTransactionCount(address),
  code: (p, address) => p.getCode(address),
  blockNumber: (p) => p.getBlockNumber(),
  chainId: async (p) => (await p.getNetwork()).chainId,
  block0: async (p) => (await p.getBlock(0)).toJSON(),
};

const direct = new JsonRpcProvider(anvilUrl, undefined, { batchMaxCount: 1 });
const viaHttp = new JsonRpcProvider(lassoHttp);
const batchSizes = [];
viaHttp.on("debug", (event) => {
  if (event.action === "sendRpcPayload") {
    batchSizes.push(Array.isArray(event.payload) ? event.payload.length : 1);
  }
});
const viaWs = new WebSocketProvider(lassoWs);

const reports = [];
reports.push(await check("ethers http batch", plan(Number(n), api), viaHttp, direct));
reports[0].max_batch = Math.max(...batchSizes);
reports.push(await check("ethers websocket", plan(100, api), viaWs, direct));
viaHttp.destroy();
direct.destroy();
await viaWs.destroy();
process.stdout.write(JSON.stringify(reports) + "\n");
process.exit(0);
