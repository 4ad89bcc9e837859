//! One NIC's DHCPv4 lease for as long as the process runs (RFC 2131
//! §4.4.5): INIT → BOUND; at T1 RENEWING (unicast to the server), at T2
//! REBINDING (broadcast); a NAK or the lease's expiry removes the address
//! and starts over. Getting a lease never gives up: after the first budget
//! it retries with a capped backoff. PID 1's network manager and
//! `ferrite-agent dhcp --keep-for` run this same code.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtnetlink::Handle;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{debug, info, warn};

use super::dhcp::{Acked, Client, Extended, Lease};
use super::lease::{retransmit_wait, Timers};
use super::link::{self, Nic};

/// After the first budget, each further attempt to get a lease lasts this
/// long...
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// ...with pauses between attempts doubling from 2 s up to this.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// A state change of the lease, logged, and handed to the observer.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new lease is on the interface (first, or after a loss).
    Bound(Lease),
    /// T1 passed: asking the server for more time.
    Renewing {
        address: Ipv4Addr,
        server: Ipv4Addr,
    },
    Renewed(Lease),
    /// T2 passed without an answer: asking any server.
    Rebinding {
        address: Ipv4Addr,
    },
    Rebound(Lease),
    /// The server refused to extend the lease: the address is removed.
    Nak {
        address: Ipv4Addr,
    },
    /// No server extended the lease in time: the address is removed.
    Expired {
        address: Ipv4Addr,
    },
    /// An attempt to get a lease failed; the next one starts after `retry_in`.
    NoLease {
        error: String,
        retry_in: Duration,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Bound(_) => "bound",
            Self::Renewing { .. } => "renewing",
            Self::Renewed(_) => "renewed",
            Self::Rebinding { .. } => "rebinding",
            Self::Rebound(_) => "rebound",
            Self::Nak { .. } => "nak",
            Self::Expired { .. } => "expired",
            Self::NoLease { .. } => "no_lease",
        }
    }

    /// The lease now on the interface, if this event put one there.
    pub fn applied(&self) -> Option<&Lease> {
        match self {
            Self::Bound(l) | Self::Renewed(l) | Self::Rebound(l) => Some(l),
            _ => None,
        }
    }

    /// One line of `ferrite-agent dhcp --keep-for`'s output.
    pub fn to_json(&self, iface: &str) -> serde_json::Value {
        let mut v = serde_json::json!({"event": self.name(), "interface": iface});
        match self {
            Self::Bound(l) | Self::Renewed(l) | Self::Rebound(l) => {
                v["address"] = l.address.to_string().into();
                v["server"] = l.server.to_string().into();
                v["lease_secs"] = l.lease_secs.into();
            }
            Self::Renewing { address, server } => {
                v["address"] = address.to_string().into();
                v["server"] = server.to_string().into();
            }
            Self::Rebinding { address } | Self::Nak { address } | Self::Expired { address } => {
                v["address"] = address.to_string().into();
            }
            Self::NoLease { error, retry_in } => {
                v["error"] = error.clone().into();
                v["retry_in_secs"] = retry_in.as_secs().into();
            }
        }
        v
    }

    fn log(&self, iface: &str) {
        let secs = |l: &Lease| match l.lease_secs {
            Some(s) if Timers::of(Some(s), None, None).is_some() => format!("lease {s} s"),
            _ => "infinite lease".to_string(),
        };
        match self {
            Self::Bound(l) => info!(
                "{iface}: bound {}/{} from {} ({}, routers {:?}, dns {:?})",
                l.address,
                l.prefix_len,
                l.server,
                secs(l),
                l.routers,
                l.dns
            ),
            Self::Renewing { address, server } => {
                info!("{iface}: renewing {address} with {server} (T1)")
            }
            Self::Renewed(l) => info!(
                "{iface}: renewed {} from {} ({})",
                l.address,
                l.server,
                secs(l)
            ),
            Self::Rebinding { address } => {
                warn!("{iface}: no renewal of {address} by T2; rebinding (asking every server)")
            }
            Self::Rebound(l) => info!(
                "{iface}: rebound {} from {} ({})",
                l.address,
                l.server,
                secs(l)
            ),
            Self::Nak { address } => warn!(
                "{iface}: the server refused to extend the lease on {address} (DHCPNAK): \
                 address removed, starting over"
            ),
            Self::Expired { address } => warn!(
                "{iface}: the lease on {address} expired without renewal: address removed, \
                 starting over"
            ),
            Self::NoLease { error, retry_in } => warn!(
                "{iface}: {error}; DHCP keeps trying (next attempt in {} s)",
                retry_in.as_secs()
            ),
        }
    }
}

/// Which NIC holds the default route: the first to get a lease with a
/// router; freed when that lease is lost.
#[derive(Debug, Default)]
pub struct DefaultRoute(Mutex<Option<u32>>);

impl DefaultRoute {
    fn claim(&self, ifindex: u32) -> bool {
        let mut owner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *owner.get_or_insert(ifindex) == ifindex
    }

    fn release(&self, ifindex: u32) {
        let mut owner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if *owner == Some(ifindex) {
            *owner = None;
        }
    }
}

pub type Observer = Arc<dyn Fn(&Nic, &Event) + Send + Sync>;

/// DHCPv4 on one NIC, applying its leases over rtnetlink.
/// A lease's address lifetimes: its whole length (`None`: infinite).
pub fn lease_lifetimes(lease: &Lease) -> Option<link::Lifetimes> {
    Timers::of(lease.lease_secs, None, None)
        .map(|t| link::Lifetimes::lease(t.expiry.as_secs() as u32))
}

/// How long DHCP waits for the link to run before trying anyway (a NIC
/// without carrier may still be BOOTIF's).
const OPERATIONAL_WAIT: Duration = Duration::from_secs(3);

pub struct V4 {
    pub nic: Nic,
    pub handle: Handle,
    pub route: Arc<DefaultRoute>,
    /// Called after each state change, once the interface reflects it.
    pub observer: Observer,
}

enum Lost {
    Nak,
    Expired,
}

impl V4 {
    fn emit(&self, event: Event) {
        event.log(&self.nic.name);
        (self.observer)(&self.nic, &event);
    }

    /// Forever: get a lease within `first_budget` or keep trying, then
    /// keep it.
    pub async fn run(self, first_budget: Duration) {
        let mut client = loop {
            match Client::new(&self.nic.name, &self.nic.mac_bytes()) {
                Ok(c) => break c,
                Err(e) => {
                    warn!("{e}; trying again in 5 s");
                    sleep(Duration::from_secs(5)).await;
                }
            }
        };
        // A packet sent before the kernel has the link running is dropped
        // (its queue is a no-op until then, up to a second after link-up):
        // the first DISCOVER would then cost a whole retransmission wait.
        super::link::wait_operational(Path::new("/sys"), &self.nic.name, OPERATIONAL_WAIT).await;
        let first = self.acquire(&mut client, first_budget).await;
        self.keep(&mut client, first).await
    }

    /// INIT until a lease comes: the first attempt lasts `budget`, the
    /// next ones [`RETRY_BUDGET`], with doubling pauses between them.
    pub async fn acquire(&self, client: &mut Client, budget: Duration) -> Acked {
        let mut budget = budget;
        let mut pause = Duration::from_secs(2);
        loop {
            match client.obtain(budget).await {
                Ok(acked) => return acked,
                Err(e) => {
                    self.emit(Event::NoLease {
                        error: e.to_string(),
                        retry_in: pause,
                    });
                    sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    budget = RETRY_BUDGET;
                }
            }
        }
    }

    /// Apply `first` and keep a lease on the NIC from then on; never returns.
    pub async fn keep(&self, client: &mut Client, first: Acked) -> ! {
        let mut cur = first;
        self.apply(&cur.lease, None).await;
        self.emit(Event::Bound(cur.lease.clone()));
        loop {
            let lost = self.hold(client, &mut cur).await;
            self.remove(&cur.lease).await;
            let address = cur.lease.address;
            self.emit(match lost {
                Lost::Nak => Event::Nak { address },
                Lost::Expired => Event::Expired { address },
            });
            cur = self.acquire(client, RETRY_BUDGET).await;
            self.apply(&cur.lease, None).await;
            self.emit(Event::Bound(cur.lease.clone()));
        }
    }

    /// BOUND → RENEWING → REBINDING for as long as some server extends the
    /// lease; returns how it was lost.
    async fn hold(&self, client: &mut Client, cur: &mut Acked) -> Lost {
        'bound: loop {
            let l = &cur.lease;
            let Some(t) = Timers::of(l.lease_secs, l.renew_secs, l.rebind_secs) else {
                debug!("{}: infinite lease, never renewed", self.nic.name);
                return std::future::pending().await;
            };
            let start = cur.sent;
            sleep_until(start + t.t1).await;
            let address = cur.lease.address;
            let server = cur.lease.server;
            self.emit(Event::Renewing { address, server });
            let states = [
                (start + t.t2, server, false),
                (start + t.expiry, Ipv4Addr::BROADCAST, true),
            ];
            for (end, to, rebinding) in states {
                if rebinding {
                    self.emit(Event::Rebinding { address });
                }
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let until = now + retransmit_wait(end - now, t.expiry);
                    match client.extend(address, to, until).await {
                        Ok(Extended::Ack(acked)) => {
                            self.apply(&acked.lease, Some(&cur.lease)).await;
                            let lease = acked.lease.clone();
                            *cur = acked;
                            self.emit(if rebinding {
                                Event::Rebound(lease)
                            } else {
                                Event::Renewed(lease)
                            });
                            continue 'bound;
                        }
                        Ok(Extended::Nak) => return Lost::Nak,
                        Ok(Extended::NoAnswer) => {
                            debug!("{}: no answer for {address} from {to}", self.nic.name)
                        }
                        Err(e) => {
                            warn!("{e}");
                            sleep_until(until).await;
                        }
                    }
                }
            }
            return Lost::Expired;
        }
    }

    /// Put `lease` on the NIC (replacing `old`'s address if it differs),
    /// and its router as the default route if no other NIC has one.
    /// Failures are logged: the next renewal applies the lease again.
    pub async fn apply(&self, lease: &Lease, old: Option<&Lease>) {
        let nic = &self.nic;
        if let Some(old) = old {
            if (old.address, old.prefix_len) != (lease.address, lease.prefix_len) {
                self.remove(old).await;
            }
        }
        let res = link::add_address(
            &self.handle,
            nic.ifindex,
            lease.address.into(),
            lease.prefix_len,
            lease_lifetimes(lease),
        )
        .await;
        if let Err(e) = res {
            warn!("{}: {e:#}", nic.name);
            return;
        }
        if let Some(gw) = lease.routers.first() {
            if self.route.claim(nic.ifindex) {
                if let Err(e) = link::add_default_route(&self.handle, nic.ifindex, *gw).await {
                    warn!("{}: {e:#}", nic.name);
                }
            }
        }
    }

    /// Take `lease`'s address (and with it its routes) off the NIC.
    pub async fn remove(&self, lease: &Lease) {
        self.route.release(self.nic.ifindex);
        let nic = &self.nic;
        if let Err(e) =
            link::del_address(&self.handle, nic.ifindex, lease.address, lease.prefix_len).await
        {
            // The kernel may have dropped it already (its valid lifetime).
            debug!("{}: {e:#}", nic.name);
        }
    }
}
