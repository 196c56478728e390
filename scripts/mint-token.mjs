#!/usr/bin/env node
// Signs an HS256 JSON Web Token with node:crypto, for the examples and tests.
//   node scripts/mint-token.mjs <user> <secret> [hours]
// prints a token whose `sub` is <user>, valid for [hours] (default 12).
// The secret must have at least 32 bytes, as the server requires.

import { createHmac } from "node:crypto";
import { fileURLToPath } from "node:url";

const base64url = (data) => Buffer.from(data).toString("base64url");

/** `header.payload` of a JWT, ready to sign. */
export function signingInput(claims, algorithm) {
  const header = base64url(JSON.stringify({ alg: algorithm, typ: "JWT" }));
  return `${header}.${base64url(JSON.stringify(claims))}`;
}

/** Shortest HS256 secret the server accepts, in bytes. */
const MIN_SECRET_BYTES = 32;

/** An HS256 token for `claims`. */
export function signHs256(claims, secret) {
  const input = signingInput(claims, "HS256");
  return `${input}.${base64url(createHmac("sha256", secret).update(input).digest())}`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [user, secret, hours = "12"] = process.argv.slice(2);
  if (!user || !secret) {
    console.error("usage: node scripts/mint-token.mjs <user> <secret> [hours]");
    process.exit(2);
  }
  if (Buffer.byteLength(secret) < MIN_SECRET_BYTES) {
    console.error(
      `the secret has ${Buffer.byteLength(secret)} bytes; the server refuses HS256 secrets under ${MIN_SECRET_BYTES}: make one with \`openssl rand -base64 32\``,
    );
    process.exit(2);
  }
  const exp = Math.floor(Date.now() / 1000) + Number(hours) * 3600;
  console.log(signHs256({ sub: user, exp }, secret));
}
