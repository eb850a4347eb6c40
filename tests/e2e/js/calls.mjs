// The read calls both client checks make: the same list against Lasso and against anvil.
// Each entry is [label, (client) => Promise]; answers are compared after JSON encoding
// (bigints as decimal strings).

export const ADDRESSES = [
  "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", // anvil's funded accounts 0..2
  "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
  "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
  ...Array.from({ length: 47 }, (_, i) => "0x" + (i + 1).toString(16).padStart(40, "0")),
];

/** `n` calls mixing balances, nonces, code, the head, the chain id and block 0. */
export function plan(n, api) {
  const calls = [];
  for (let i = 0; i < n; i++) {
    const address = ADDRESSES[i % ADDRESSES.length];
    switch (i % 6) {
      case 0: calls.push([`balance ${address}`, (c) => api.balance(c, address)]); break;
      case 1: calls.push([`nonce ${address}`, (c) => api.nonce(c, address)]); break;
      case 2: calls.push([`code ${address}`, (c) => api.code(c, address)]); break;
      case 3: calls.push(["blockNumber", (c) => api.blockNumber(c)]); break;
      case 4: calls.push(["chainId", (c) => api.chainId(c)]); break;
      default: calls.push(["block 0", (c) => api.block0(c)]); break;
    }
  }
  return calls;
}

export const encode = (value) =>
  JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v));

/** Run `calls` against `via` (all at once) and `direct` (one by one); compare. */
export async function check(name, calls, via, direct, extra = {}) {
  const settled = await Promise.allSettled(calls.map(([, f]) => f(via)));
  const errors = [];
  const mismatches = [];
  for (let i = 0; i < calls.length; i++) {
    const [label, f] = calls[i];
    const got = settled[i];
    if (got.status === "rejected") {
      errors.push(`${label}: ${String(got.reason?.shortMessage ?? got.reason?.message ?? got.reason)}`);
      continue;
    }
    const want = encode(await f(direct));
    if (encode(got.value) !== want) mismatches.push(`${label}: ${encode(got.value)} != ${want}`);
  }
  return { name, calls: calls.length, errors: errors.slice(0, 5), error_count: errors.length,
           mismatches: mismatches.slice(0, 5), mismatch_count: mismatches.length, ...extra };
}
