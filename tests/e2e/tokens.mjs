// JSON Web Tokens for the tests, signed with node:crypto (HS256, RS256,
// ES256), and the manifest `[auth]` sections that verify them.

import { createHmac, generateKeyPairSync, sign } from "node:crypto";
import { writeFileSync } from "node:fs";
import path from "node:path";

export const SECRET = "e2e-jwt-secret-of-some-length";

const base64url = (data) => Buffer.from(data).toString("base64url");

/** Unix time in seconds, `offset` seconds from now. */
export const nowS = (offset = 0) => Math.floor(Date.now() / 1000) + offset;

/**
 * A signed token for `claims` (`sub` and an `exp` one hour ahead by default).
 * `key`: the HS256 secret, or a private KeyObject for RS256 / ES256.
 */
export function signToken(claims, { key = SECRET, algorithm = "HS256" } = {}) {
  const header = base64url(JSON.stringify({ alg: algorithm, typ: "JWT" }));
  const payload = base64url(JSON.stringify({ exp: nowS(3600), ...claims }));
  const input = `${header}.${payload}`;
  let signature;
  if (algorithm === "HS256") {
    signature = createHmac("sha256", key).update(input).digest();
  } else if (algorithm === "RS256") {
    signature = sign("sha256", Buffer.from(input), key);
  } else if (algorithm === "ES256") {
    signature = sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  } else {
    throw new Error(`unsupported algorithm ${algorithm}`);
  }
  return `${input}.${base64url(signature)}`;
}

/** A token for user `sub`, valid for an hour. */
export const tokenFor = (sub) => signToken({ sub });

/** `[auth]` for HS256 with SECRET. */
export const HS256_AUTH = `\n[auth]\nsecret = "${SECRET}"\nclock_skew_s = 5\n`;

/**
 * A fresh key pair for `algorithm` (RS256 or ES256): the private key to sign
 * with and an `[auth]` section naming the public key written to `dir`.
 */
export function keyPair(algorithm, dir) {
  const { privateKey, publicKey } =
    algorithm === "RS256"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : generateKeyPairSync("ec", { namedCurve: "P-256" });
  const file = path.join(dir, `${algorithm}.pub.pem`);
  writeFileSync(file, publicKey.export({ type: "spki", format: "pem" }));
  return {
    privateKey,
    auth: `\n[auth]\nalgorithm = "${algorithm}"\npublic_key_file = "${file}"\n`,
  };
}
