//! The network between members, and how a partition cuts it.
//!
//! Two mechanisms, one contract: [`Cuts`] names the member pairs that cannot reach each other
//! (both ways), and applying it makes exactly those links lose traffic — open connections
//! stall, new ones go unanswered — until the next apply heals them. Clients of the cluster are
//! never cut: Jepsen's clients reach every member, which is what lets a stale read be observed.
//! - [`netns`] (root with iproute2): each member in its own network namespace behind a bridge,
//!   links cut in the kernel. The default when it works.
//! - [`proxy`] (anyone): peer traffic through proxies in the harness that know who dialled.
//!
//! [`Network::Auto`] takes namespaces when running as root and they can be created, else
//! proxies; a run can force either.

pub(crate) mod netns;
pub(crate) mod proxy;
mod shape;

use std::str::FromStr;

pub use shape::{Cuts, Shape};

/// Which partition mechanism a cluster uses (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// Namespaces if possible, else proxies.
    #[default]
    Auto,
    /// Network namespaces and a bridge; fails without root or iproute2.
    Namespaces,
    /// Proxies in the harness on loopback.
    Proxy,
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Network::Auto),
            "netns" | "namespaces" => Ok(Network::Namespaces),
            "proxy" => Ok(Network::Proxy),
            _ => Err(format!("unknown network {s:?} (auto, netns or proxy)")),
        }
    }
}

/// Whether this process may create network namespaces (root; `ip` does the rest).
pub(crate) fn may_use_namespaces() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
