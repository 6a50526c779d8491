// Calling the service from outside AWS, in TypeScript: every request is signed
// with SigV4 for `execute-api` by the AWS SDK's signer, with credentials from
// the standard AWS chain (environment, profile, SSO, role).
//
//   npm ci && npm run build
//   node dist/call_service.js https://<api-id>.execute-api.<region>.amazonaws.com GET /connections
//   node dist/call_service.js "$URL" POST /connect/sessions '{"connection_id": "shop-42", "product": "crm"}'
//
// The region is AWS_REGION, else the one in the execute-api host name. Against
// `make run` (http://127.0.0.1:8787) the same code works: the local run checks
// no signature.

import { Sha256 } from "@aws-crypto/sha256-js";
import { defaultProvider } from "@aws-sdk/credential-provider-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";

/** AWS_REGION, else the region in an execute-api host name. */
export function regionOf(url: URL): string {
  if (process.env.AWS_REGION) {
    return process.env.AWS_REGION;
  }
  const labels = url.hostname.split(".");
  if (labels.length > 2 && labels[1] === "execute-api") {
    return labels[2];
  }
  throw new Error("set AWS_REGION: the URL names no region");
}

/** `method path` on the service, signed; the status and the parsed JSON. */
export async function call(
  baseUrl: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: unknown }> {
  const url = new URL(baseUrl.replace(/\/$/, "") + path);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const query: Record<string, string> = {};
  url.searchParams.forEach((value, key) => {
    query[key] = value;
  });
  const request = new HttpRequest({
    method,
    protocol: url.protocol,
    hostname: url.hostname,
    port: url.port ? Number(url.port) : undefined,
    path: url.pathname,
    query,
    headers: {
      host: url.host,
      ...(payload === undefined ? {} : { "content-type": "application/json" }),
    },
    body: payload,
  });
  const signer = new SignatureV4({
    service: "execute-api",
    region: regionOf(url),
    credentials: defaultProvider(),
    sha256: Sha256,
  });
  const signed = await signer.sign(request);
  const answer = await fetch(url, {
    method,
    headers: signed.headers,
    body: payload,
  });
  const text = await answer.text();
  // The service's errors are JSON too: {"code", "message"}.
  return { status: answer.status, body: text ? JSON.parse(text) : null };
}

async function main(): Promise<void> {
  const [base, method = "GET", path = "/connections", body] = process.argv.slice(2);
  if (!base) {
    throw new Error("usage: node dist/call_service.js BASE_URL [METHOD PATH [JSON_BODY]]");
  }
  const answer = await call(base, method, path, body === undefined ? undefined : JSON.parse(body));
  console.log(JSON.stringify(answer));
  process.exitCode = answer.status < 400 ? 0 : 1;
}

main().catch((error: unknown) => {
  console.error(String(error));
  process.exitCode = 2;
});
