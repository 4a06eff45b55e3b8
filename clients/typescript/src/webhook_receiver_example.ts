// A receiver of the service's lifecycle webhooks, verifying each delivery
// as the Standard Webhooks specification says, with nothing but Node's
// crypto: HMAC-SHA256 over `${webhook-id}.${webhook-timestamp}.${body}`
// under the endpoint's secret (the base64 after `whsec_`), compared in
// constant time with each `v1,<signature>` the header carries (two while a
// secret is being rotated). Deliveries are at least once: drop the ones
// whose webhook-id was already handled.
//
//   WEBHOOK_SECRET=whsec_... npm run webhook-receiver-example
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage } from "node:http";

/** Deliveries older (or newer) than this are refused: replay protection. */
const TOLERANCE_SECONDS = 5 * 60;

/** Bytes as a plain Uint8Array (what `crypto` takes, whatever Buffer's typing). */
function bytes(base64: string): Uint8Array {
  return new Uint8Array(Buffer.from(base64, "base64"));
}

export function verifyWebhook(
  secrets: string[],
  headers: IncomingMessage["headers"],
  body: string,
  nowSeconds = Math.floor(Date.now() / 1000),
): boolean {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (typeof id !== "string" || typeof timestamp !== "string" || typeof signatures !== "string") {
    return false;
  }
  if (Math.abs(nowSeconds - Number(timestamp)) > TOLERANCE_SECONDS) {
    return false;
  }
  const expected = secrets.map((secret) =>
    bytes(
      createHmac("sha256", bytes(secret.replace(/^whsec_/, "")))
        .update(`${id}.${timestamp}.${body}`)
        .digest("base64"),
    ),
  );
  return signatures.split(" ").some((candidate) => {
    const [version, encoded] = candidate.split(",", 2);
    if (version !== "v1" || encoded === undefined) {
      return false;
    }
    const given = bytes(encoded);
    return expected.some((mac) => mac.length === given.length && timingSafeEqual(mac, given));
  });
}

const secrets = (process.env.WEBHOOK_SECRET ?? "").split(",").filter((s) => s !== "");
const handled = new Set<string>();

if (process.argv[1]?.endsWith("webhook_receiver_example.js")) {
  createServer((request, response) => {
    // The body is JSON, so UTF-8 text; sign and verify it exactly as sent.
    let body = "";
    request.setEncoding("utf8");
    request.on("data", (chunk: string) => (body += chunk));
    request.on("end", () => {
      if (!verifyWebhook(secrets, request.headers, body)) {
        response.writeHead(400).end();
        return;
      }
      const id = request.headers["webhook-id"] as string;
      if (!handled.has(id)) {
        handled.add(id);
        const event = JSON.parse(body) as { type: string; orgId: string };
        console.log(`${event.type} for ${event.orgId || "the service"} (${id})`);
      }
      response.writeHead(204).end();
    });
  }).listen(Number(process.env.PORT ?? 9000));
}
