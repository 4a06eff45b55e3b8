//! Black-box tests of the billing service: a real PostgreSQL database per
//! test and real gRPC calls. One binary keeps link time down.

mod audit;
mod auth;
mod billing_journeys;
mod billing_operations;
mod catalog;
mod crash;
mod credits;
mod degraded;
mod entitlement;
mod gdpr;
mod helpers;
mod inbox_coalescing;
mod instances;
mod load_shedding;
mod members;
mod organizations;
mod permissions;
mod replicas;
mod seats;
mod service_process;
mod shutdown;
mod stripe_adoption;
mod stripe_catch_up;
mod stripe_fixtures;
mod stripe_reconciliation;
mod stripe_server;
mod trial;
mod unit_items;
mod usage;
mod watch;
mod webhook_ingress;
mod webhook_listener;
mod webhook_ordering;
mod webhook_storm;
