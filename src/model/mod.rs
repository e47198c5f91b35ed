//! Domain values shared by every stage: identifier algorithms and the
//! Xinjiang area codes. No I/O here (architecture invariant 8).

pub mod areas;
pub mod ids;
