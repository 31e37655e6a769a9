//! `clustersync crd`: prints the ClusterSync CustomResourceDefinition (YAML), for
//! `kubectl apply -f -`.
//!
//! The YAML is generated from the ClusterSync type in `operator::crd` (`crd_yaml`), the same
//! type the operator reads. No flags; always exits 0.

use std::process::ExitCode;

pub(super) fn run() -> ExitCode {
    out!("{}", crate::operator::crd::crd_yaml());
    ExitCode::SUCCESS
}
