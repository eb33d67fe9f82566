//! Tenantry's common library: configuration, the one error type and its HTTP mapping, telemetry, AWS
//! adapters and the tenancy domain that every function builds on.

pub mod apikey;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod batch;
pub mod billing;
pub mod config;
pub mod connect;
pub mod datastore;
pub mod deletion;
pub mod dynamo;
pub mod error;
pub mod events;
pub mod http;
pub mod ids;
pub mod imports;
pub mod jwt;
pub mod meter;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod oauth;
pub mod openapi;
pub mod priority;
pub mod providers;
pub mod readers;
pub mod stats;
pub mod subscriptions;
pub mod sync;
pub mod telemetry;
pub mod tenancy;
pub mod time;
pub mod vault;

pub use config::Config;
pub use error::ApiError;
