//! Integration tests: the whole pipeline on generated data, served over real
//! TLS sockets with client certificates.

#[cfg(all(feature = "postgres", feature = "mysql"))]
mod connectors;
mod corrections;
mod crash;
mod e2e;
mod export;
mod fixture;
mod http_json;
#[cfg(feature = "postgres")]
mod pull_incremental;
mod reload;
mod serving;
mod store;
