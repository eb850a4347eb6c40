// Filters through Lasso in front of two anvils: viem's createBlockFilter and HTTP
// watchContractEvent, and ethers' contract.on (both poll eth_getFilterChanges).
// Usage: node filters_check.mjs LASSO_HTTP_URL ANVIL_A_URL ANVIL_B_URL [EVENTS]
// Prints one JSON report on stdout: polls, errors ("filter not found" among them) and the
// events each client delivered against those emitted.
import { ethers } from "ethers";
import {
  createPublicClient,
  getContractAddress,
  http,
  parseAbi,
  toEventSelector,
  toHex,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { foundry } from "viem/chains";

const [lassoHttp, anvilA, anvilB, eventsArg = "10"] = process.argv.slice(2);
const EVENTS = Number(eventsArg);
const KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const abi = parseAbi(["event Ping(uint256 value)"]);
const account = privateKeyToAccount(KEY);
const nodes = [anvilA, anvilB].map((url) =>
  createPublicClient({ chain: foundry, transport: http(url) }),
);
const deadline = (s) => Date.now() + s * 1000;
const notFound = (e) => /filter not found/i.test(String(e?.details ?? e?.message ?? e));

// Runtime: mstore(0, calldataload(0)); log1(0, 32, Ping's topic); stop.
const runtime = "600035600052" + "7f" + toEventSelector("Ping(uint256)").slice(2) + "60206000a100";
const n = (runtime.length / 2).toString(16).padStart(4, "0");
// Init code (15 bytes): codecopy(0, 15, n); return(0, n).
const initCode = `0x61${n}61000f600039` + `61${n}6000f3` + runtime;

let nonce = 0;
async function sendToBoth(tx) {
  // The same signed transaction to both nodes: they mine it at once (automine).
  const raw = await account.signTransaction({
    chainId: 31337, type: "legacy", gas: 200000n, gasPrice: 2_000_000_000n, nonce: nonce++, ...tx,
  });
  for (const node of nodes) await node.sendRawTransaction({ serializedTransaction: raw });
}

await sendToBoth({ data: initCode });
const address = getContractAddress({ from: account.address, nonce: 0n });
const ping = (value) => sendToBoth({ to: address, data: toHex(value, { size: 32 }) });

// Requests seen leaving each client, to know when its filter exists.
const sent = { viem: [], ethers: [] };
const note = (who, body) => {
  const doc = JSON.parse(typeof body === "string" ? body : new TextDecoder().decode(body));
  for (const item of Array.isArray(doc) ? doc : [doc]) sent[who].push(item.method);
};
const client = createPublicClient({
  chain: foundry,
  pollingInterval: 200,
  transport: http(lassoHttp, { onFetchRequest: (_r, init) => note("viem", init.body) }),
});

// 1. viem createBlockFilter: a block between polls, ten polls.
const blockFilter = { polls: 0, errors: 0, not_found: 0, hashes: 0 };
const filter = await client.createBlockFilter();
for (let i = 0; i < 10; i++) {
  await ping(1n);
  blockFilter.polls++;
  try {
    blockFilter.hashes += (await client.getFilterChanges({ filter })).length;
  } catch (e) {
    blockFilter.errors++;
    if (notFound(e)) blockFilter.not_found++;
  }
}
// anvil notes a mined block in its filters a moment after the send returns: the last
// block may come with one more poll (a lost block never comes: the deadline ends it).
const settled = deadline(5);
while (blockFilter.hashes < 10 && blockFilter.errors === 0 && Date.now() < settled) {
  await new Promise((r) => setTimeout(r, 100));
  try {
    blockFilter.hashes += (await client.getFilterChanges({ filter })).length;
  } catch (e) {
    blockFilter.errors++;
    if (notFound(e)) blockFilter.not_found++;
  }
}

// 2. viem watchContractEvent over HTTP (eth_newFilter + eth_getFilterChanges polls) and
// ethers contract.on (FilterIdEventSubscriber: the same, on each new block).
const viemWatch = { received: new Set(), errors: 0, not_found: 0 };
const unwatch = client.watchContractEvent({
  address, abi, eventName: "Ping", pollingInterval: 200,
  onLogs: (logs) => logs.forEach((l) => viemWatch.received.add(l.args.value)),
  onError: (e) => { viemWatch.errors++; if (notFound(e)) viemWatch.not_found++; },
});
const ethersOn = { received: new Set(), errors: 0, not_found: 0 };
const logged = console.log;
console.log = (...args) => { // ethers logs a failed filter poll ("@TODO", error)
  if (args[0] === "@TODO") { ethersOn.errors++; if (notFound(args[1])) ethersOn.not_found++; }
  else logged(...args);
};
const request = new ethers.FetchRequest(lassoHttp);
request.preflightFunc = async (req) => { note("ethers", req.body); return req; };
const provider = new ethers.JsonRpcProvider(request, 31337, { staticNetwork: true });
provider.pollingInterval = 200;
const contract = new ethers.Contract(address, ["event Ping(uint256 value)"], provider);
await contract.on("Ping", (value) => ethersOn.received.add(value));

// Emit once both clients have made their filter (polled for, with a deadline).
const ready = deadline(15);
while (!(sent.viem.includes("eth_newFilter") && sent.ethers.includes("eth_newFilter"))) {
  if (Date.now() > ready) throw new Error(`filters never created: ${JSON.stringify(sent)}`);
  await new Promise((r) => setTimeout(r, 50));
}
// One event at a time, each awaited by both clients (a poll or more each, so that every
// poll had the chance to reach the wrong node).
const emitted = [];
const both = (v) => viemWatch.received.has(v) && ethersOn.received.has(v);
for (let i = 0; i < EVENTS; i++) {
  const value = 1000n + BigInt(i);
  emitted.push(value);
  await ping(value);
  const end = deadline(10);
  while (!both(value) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
}
unwatch();
await contract.removeAllListeners();
provider.destroy();
console.log = logged;

const report = (w) => ({
  errors: w.errors, not_found: w.not_found,
  delivered: emitted.filter((v) => w.received.has(v)).length,
});
process.stdout.write(JSON.stringify({
  emitted: emitted.length,
  block_filter: blockFilter,
  viem_watch: report(viemWatch),
  ethers_on: report(ethersOn),
  polls: {
    viem: sent.viem.filter((m) => m === "eth_getFilterChanges").length,
    ethers: sent.ethers.filter((m) => m === "eth_getFilterChanges").length,
  },
}) + "\n");
process.exit(0);
