// viem 2.x through Lasso with its default batching and parallelism, compared with anvil.
// Usage: node viem_check.mjs LASSO_HTTP_URL LASSO_WS_URL ANVIL_URL [N]
// Prints one JSON report on stdout.
import { createPublicClient, http, webSocket } from "viem";
import { foundry } from "viem/chains";
import { check, plan } from "./calls.mjs";

const [lassoHttp, lassoWs, anvilUrl, n = "150"] = process.argv.slice(2);
const api = {
  balance: (c, address) => c.getBalance({ address }),
  nonce: (c, address) => c.getTransactionCount({ address }),
  code: (c, address) => c.getCode({ address }),
  blockNumber: (c) => c.getBlockNumber({ cacheTime: 0 }),
  chainId: (c) => c.getChainId(),
  block0: (c) => c.getBlock({ blockNumber: 0n }),
};

const batchSizes = [];
const statuses = [];
const direct = createPublicClient({ chain: foundry, transport: http(anvilUrl) });
// `batch: true` with viem's default batchSize (1000) and wait (0): calls made in the same
// tick go out as one JSON-RPC batch.
const viaHttp = createPublicClient({
  chain: foundry,
  transport: http(lassoHttp, {
    batch: true,
    onFetchRequest: (_request, init) => {
      const body = JSON.parse(init.body);
      batchSizes.push(Array.isArray(body) ? body.length : 1);
    },
    onFetchResponse: (response) => statuses.push(response.status),
  }),
});
// WebSocket with retries off, so that a call Lasso refused shows as an error.
const viaWs = createPublicClient({
  chain: foundry,
  transport: webSocket(lassoWs, { retryCount: 0 }),
});

const reports = [];
reports.push(await check("viem http batch", plan(Number(n), api), viaHttp, direct));
reports[0].max_batch = Math.max(...batchSizes);
reports[0].http_statuses = [...new Set(statuses)];
reports.push(await check("viem websocket", plan(100, api), viaWs, direct));
process.stdout.write(JSON.stringify(reports) + "\n");
process.exit(0);
