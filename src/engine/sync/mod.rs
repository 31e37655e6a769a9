//! A running sync: the job that runs its phases from wherever they stand ([`job`]), with
//! what they share ([`context`]): the copy ([`copy`]), change event application ([`cea`]) and
//! the embedded verifier ([`embedded_verifier`]). Nothing here knows the engine's handle or
//! its HTTP API; the control starts a job with a context and stops it.

pub mod cea;
pub mod context;
pub mod copy;
pub mod embedded_verifier;
pub mod job;
