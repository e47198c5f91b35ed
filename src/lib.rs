//! sharebroker: a data-sharing exchange broker between government agencies.
//! See ARCHITECTURE.md for the map; DESIGN.md (in ../shared) for the why.

pub mod api;
pub mod audit;
pub mod catalog;
pub mod config;
pub mod connectors;
pub mod datagen;
pub mod ingest;
pub mod journal;
pub mod linkage;
pub mod model;
pub mod pki;
pub mod policy;
pub mod pull;
pub mod review;
pub mod seal;
pub mod store;
