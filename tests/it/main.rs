//! Integration tests: the whole pipeline on generated data, served over real
//! TLS sockets with client certificates.

mod e2e;
