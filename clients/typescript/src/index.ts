// Clients for the billing.v1 services over gRPC (HTTP/2), as a BFF or an
// operator tool would hold them: one transport, the caller's token on
// every call, and for the BFF the signed-in user the call acts for.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { BillingService } from "./gen/billing/v1/billing_pb.ts";
import { CreditService } from "./gen/billing/v1/credits_pb.ts";
import { EntitlementService } from "./gen/billing/v1/entitlement_pb.ts";
import { EventService } from "./gen/billing/v1/events_pb.ts";
import { OrgAdminService } from "./gen/billing/v1/org_admin_pb.ts";

export * from "./gen/billing/v1/billing_pb.ts";
export * from "./gen/billing/v1/common_pb.ts";
export * from "./gen/billing/v1/credits_pb.ts";
export * from "./gen/billing/v1/entitlement_pb.ts";
export * from "./gen/billing/v1/events_pb.ts";
export * from "./gen/billing/v1/org_admin_pb.ts";

/** The metadata key naming the end user a `bff` call acts for. */
export const ACTING_USER_HEADER = "x-acting-user-id";

export interface ClientOptions {
  /** The gRPC address, e.g. `http://127.0.0.1:50051`. */
  baseUrl: string;
  /** A `bff` (or `ops`) token from `BILLING_CALLER_TOKENS`. */
  token: string;
  /** The signed-in user; required for `bff` calls, unused by `ops`. */
  actingUser?: string;
}

export interface BillingClients {
  billing: Client<typeof BillingService>;
  credits: Client<typeof CreditService>;
  entitlements: Client<typeof EntitlementService>;
  /** Operators only (`ops`): webhook endpoints and the event stream. */
  events: Client<typeof EventService>;
  orgAdmin: Client<typeof OrgAdminService>;
}

export function createBillingClients(options: ClientOptions): BillingClients {
  const authenticate: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${options.token}`);
    if (options.actingUser !== undefined) {
      request.header.set(ACTING_USER_HEADER, options.actingUser);
    }
    return next(request);
  };
  const transport = createGrpcTransport({
    baseUrl: options.baseUrl,
    interceptors: [authenticate],
  });
  return {
    billing: createClient(BillingService, transport),
    credits: createClient(CreditService, transport),
    entitlements: createClient(EntitlementService, transport),
    events: createClient(EventService, transport),
    orgAdmin: createClient(OrgAdminService, transport),
  };
}
