// JSON Web Tokens for the tests, signed with node:crypto (HS256, RS256,
// ES256), and the manifest `[auth]` sections that verify them.

import { generateKeyPairSync, sign } from "node:crypto";
import { writeFileSync } from "node:fs";
import path from "node:path";

import { signHs256, signingInput } from "../../scripts/mint-token.mjs";

// At least 32 bytes: the server refuses shorter HS256 secrets.
export const SECRET = "e2e-jwt-secret-of-at-least-32-bytes";

/** Unix time in seconds, `offset` seconds from now. */
export const nowS = (offset = 0) => Math.floor(Date.now() / 1000) + offset;

/**
 * A signed token for `claims` (`sub` and an `exp` one hour ahead by default).
 * `key`: the HS256 secret, or a private KeyObject for RS256 / ES256.
 */
export function signToken(claims, { key = SECRET, algorithm = "HS256" } = {}) {
  const full = { exp: nowS(3600), ...claims };
  if (algorithm === "HS256") return signHs256(full, key);
  const input = signingInput(full, algorithm);
  const signer = algorithm === "ES256" ? { key, dsaEncoding: "ieee-p1363" } : key;
  return `${input}.${sign("sha256", Buffer.from(input), signer).toString("base64url")}`;
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
