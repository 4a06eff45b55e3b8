// The BFF's first billing screen, end to end: a signed-in user creates
// their organization, opens a Stripe checkout for Teams, and reads the
// subscription back (no subscription until the checkout is paid).
//
//   BILLING_ADDR=http://127.0.0.1:50051 BFF_TOKEN=... USER_ID=alice \
//     npm run bff-example
import { Code, ConnectError } from "@connectrpc/connect";

import { BillingCycle, createBillingClients } from "./index.ts";

const baseUrl = process.env.BILLING_ADDR ?? "http://127.0.0.1:50051";
const token = process.env.BFF_TOKEN;
const actingUser = process.env.USER_ID ?? "alice";
if (token === undefined) {
  throw new Error("set BFF_TOKEN to the bff token the service printed or was given");
}

const { orgAdmin, billing } = createBillingClients({ baseUrl, token, actingUser });

const org = await orgAdmin.createOrganization({
  name: "Acme",
  // A retry of this request (after a timeout, say) returns the same organization.
  idempotencyKey: `signup-${actingUser}`,
});
console.log(`organization ${org.id}: trial ${org.trial?.daysRemaining ?? "?"} days left`);

try {
  const checkout = await billing.createCheckoutSession({
    orgId: org.id,
    plan: "teams",
    billingCycle: BillingCycle.MONTHLY,
    seats: 3n,
    successUrl: "https://app.example.com/billing/done",
    cancelUrl: "https://app.example.com/billing",
  });
  console.log(`send the user to ${checkout.url}`);
} catch (error) {
  // Without STRIPE_SECRET_KEY the service answers FAILED_PRECONDITION
  // with reason STRIPE_NOT_CONFIGURED; the rest of the API works.
  const refused = ConnectError.from(error);
  console.log(`no checkout: ${Code[refused.code]}: ${refused.rawMessage}`);
}

const subscription = await billing.getSubscription({ orgId: org.id });
console.log(
  subscription.hasSubscription
    ? `subscribed: ${subscription.status}, ${subscription.paidSeats} seats`
    : `no subscription yet; ${subscription.usedSeats} seat(s) in use`,
);
