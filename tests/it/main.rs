//! Integration tests: the whole pipeline on generated data, served over real
//! TLS sockets with client certificates.

mod crash;
mod e2e;
mod fixture;
mod reload;
mod serving;
mod store;
