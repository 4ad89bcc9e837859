//! `ipa-enable-vlan-interfaces`: tagged sub-interfaces `<nic>.<vid>`, named
//! explicitly or learnt from the switch's LLDP frames, created over
//! rtnetlink and addressed by DHCP.
//!
//! IPA (`netutils.bring_up_vlan_interfaces`) reads a comma list whose
//! entries are `nic.vid` (that VLAN), `nic` (every VLAN the NIC's LLDP
//! names) or `all` (every VLAN LLDP names on every NIC). The VLAN IDs are
//! IEEE 802.1 "VLAN Name" TLVs: type 127, OUI 00-80-C2, subtype 3, then the
//! 2-byte VID. IPA only listens for LLDP when `ipa-collect-lldp` is set;
//! here asking for LLDP-learnt VLANs is reason enough to listen.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rtnetlink::{Handle, LinkVlan};
use tracing::{info, warn};

use super::dhcp;
use super::link::Nic;
use crate::hardware::inventory::lldp::{self, Tlv};

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VlanEntry {
    /// `all`: LLDP's VLANs on every NIC.
    All,
    /// `nic`: LLDP's VLANs on that NIC.
    FromLldp(String),
    /// `nic.vid`.
    Explicit { nic: String, vid: u16 },
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VlanError {
    #[error("ipa-enable-vlan-interfaces entry {0:?}: the VLAN id must be a number from 1 to 4094")]
    BadVid(String),
    #[error("ipa-enable-vlan-interfaces entry {0:?}: no interface name before the dot")]
    NoNic(String),
    #[error("VLAN interface {0}: no NIC named {1}, skipping it")]
    MissingNic(String, String),
    #[error("VLAN interface {0}: the name is longer than the kernel's 15 characters")]
    NameTooLong(String),
}

/// Parse the list; a bad entry is an error of its own and the others stand.
pub fn parse(spec: &str) -> (Vec<VlanEntry>, Vec<VlanError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == "all" {
            entries.push(VlanEntry::All);
            continue;
        }
        // IPA splits at the first dot.
        match item.split_once('.') {
            None => entries.push(VlanEntry::FromLldp(item.to_string())),
            Some(("", _)) => errors.push(VlanError::NoNic(item.to_string())),
            Some((nic, vid)) => match vid.parse::<u16>() {
                Ok(v @ 1..=4094) => entries.push(VlanEntry::Explicit {
                    nic: nic.to_string(),
                    vid: v,
                }),
                _ => errors.push(VlanError::BadVid(item.to_string())),
            },
        }
    }
    (entries, errors)
}

const ORG_SPECIFIC: u8 = 127;
const DOT1_VLAN_NAME: [u8; 4] = [0x00, 0x80, 0xc2, 0x03];

/// The VLAN ids in one NIC's LLDP TLVs (IPA's `_add_vlans_from_lldp`), in
/// order, without repeats or ids outside 1..=4094.
pub fn vids_from_lldp(tlvs: &[Tlv]) -> Vec<u16> {
    let mut out = Vec::new();
    for (kind, value) in tlvs {
        if *kind != ORG_SPECIFIC || !value.starts_with(&DOT1_VLAN_NAME) {
            continue;
        }
        let Some(vid) = value.get(4..6).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            warn!("LLDP VLAN Name TLV too short for a VLAN id: {value:02x?}");
            continue;
        };
        if !(1..=4094).contains(&vid) {
            warn!("LLDP names VLAN {vid}, which is not a usable VLAN id");
        } else if !out.contains(&vid) {
            out.push(vid);
        }
    }
    out
}

/// Which `(parent, vid)` pairs the entries ask for, given the NICs there
/// are and each NIC's LLDP TLVs (needed only for `all` and bare names).
/// Entries naming a missing NIC come back as errors.
pub fn resolve(
    entries: &[VlanEntry],
    nics: &[Nic],
    lldp: &BTreeMap<String, Vec<Tlv>>,
) -> (Vec<(Nic, u16)>, Vec<VlanError>) {
    let mut out: Vec<(Nic, u16)> = Vec::new();
    let mut errors = Vec::new();
    let mut push = |nic: &Nic, vid: u16| {
        if !out.iter().any(|(n, v)| n.name == nic.name && *v == vid) {
            out.push((nic.clone(), vid));
        }
    };
    let find = |name: &str| nics.iter().find(|n| n.name == name);
    for e in entries {
        match e {
            VlanEntry::Explicit { nic, vid } => match find(nic) {
                Some(n) => push(n, *vid),
                None => errors.push(VlanError::MissingNic(format!("{nic}.{vid}"), nic.clone())),
            },
            VlanEntry::FromLldp(name) => match find(name) {
                Some(n) => {
                    for vid in vids_from_lldp(lldp.get(name).map(Vec::as_slice).unwrap_or_default())
                    {
                        push(n, vid);
                    }
                }
                None => errors.push(VlanError::MissingNic(name.clone(), name.clone())),
            },
            VlanEntry::All => {
                for n in nics {
                    for vid in
                        vids_from_lldp(lldp.get(&n.name).map(Vec::as_slice).unwrap_or_default())
                    {
                        push(n, vid);
                    }
                }
            }
        }
    }
    (out, errors)
}

/// The NICs whose LLDP the entries need.
pub fn lldp_wanted(entries: &[VlanEntry], nics: &[Nic]) -> Vec<String> {
    let all = entries.contains(&VlanEntry::All);
    nics.iter()
        .filter(|n| all || entries.contains(&VlanEntry::FromLldp(n.name.clone())))
        .map(|n| n.name.clone())
        .collect()
}

/// Create `<parent>.<vid>` (kept if it exists) and bring it up.
pub async fn create(handle: &Handle, parent: &Nic, vid: u16) -> anyhow::Result<Nic> {
    let name = format!("{}.{vid}", parent.name);
    if name.len() > 15 {
        return Err(VlanError::NameTooLong(name).into());
    }
    let msg = LinkVlan::new(&name, parent.ifindex, vid).up().build();
    match handle.link().add(msg).execute().await {
        Ok(()) => info!("Adding VLAN interface {name}"),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {
            info!("VLAN interface {name} has already been added")
        }
        Err(e) => return Err(e).with_context(|| format!("creating VLAN interface {name}")),
    }
    let ifindex = super::link::ifindex(std::path::Path::new("/sys"), &name)
        .with_context(|| format!("{name} is not in /sys/class/net after creating it"))?;
    super::link::set_up(handle, ifindex).await?;
    Ok(Nic {
        name,
        ifindex,
        mac: parent.mac.clone(),
    })
}

/// What became of one VLAN interface.
#[derive(Debug)]
pub struct VlanOutcome {
    pub parent: String,
    pub vid: u16,
    pub result: anyhow::Result<(Nic, dhcp::Lease)>,
}

/// The NICs `spec` names explicitly (PID 1 waits for them to appear).
pub fn named_parents(spec: &str) -> Vec<String> {
    parse(spec)
        .0
        .into_iter()
        .filter_map(|e| match e {
            VlanEntry::All => None,
            VlanEntry::FromLldp(nic) | VlanEntry::Explicit { nic, .. } => Some(nic),
        })
        .collect()
}

/// The VLANs `spec` asks for on `nics` (up already): listen for LLDP if
/// needed, then create each one and set it up. Problems are logged; one bad
/// entry never stops the others. PID 1 then addresses each VLAN as it does
/// a NIC (renewed leases, IPv6).
pub async fn create_all(
    handle: &Handle,
    nics: &[Nic],
    spec: &str,
    lldp_timeout: Duration,
) -> Vec<Nic> {
    let mut made = Vec::new();
    for (parent, vid, result) in create_each(handle, nics, spec, lldp_timeout).await {
        match result {
            Ok(vlan) => made.push(vlan),
            Err(e) => warn!("VLAN interface {parent}.{vid}: {e:#}"),
        }
    }
    made
}

async fn create_each(
    handle: &Handle,
    nics: &[Nic],
    spec: &str,
    lldp_timeout: Duration,
) -> Vec<(String, u16, anyhow::Result<Nic>)> {
    let (entries, parse_errors) = parse(spec);
    for e in &parse_errors {
        warn!("{e}");
    }
    let listen = lldp_wanted(&entries, nics);
    let tlvs = if listen.is_empty() {
        BTreeMap::new()
    } else {
        info!("listening for LLDP on {listen:?} to learn VLANs");
        tokio::task::spawn_blocking(move || lldp::collect(&listen, lldp_timeout))
            .await
            .unwrap_or_default()
    };
    let (wanted, errors) = resolve(&entries, nics, &tlvs);
    for e in &errors {
        warn!("{e}");
    }
    if wanted.is_empty() {
        info!("no VLAN interfaces to bring up from {spec:?}");
    }
    let jobs = wanted.into_iter().map(|(parent, vid)| async move {
        let result = create(handle, &parent, vid).await;
        (parent.name.clone(), vid, result)
    });
    futures_util::future::join_all(jobs).await
}

/// `ferrite-agent net-up`'s VLAN job: create the VLANs, and get each one
/// DHCPv4 lease within `dhcp_budget` (applied without a default route:
/// the VLAN never takes it from the boot NIC).
pub async fn bring_up(
    handle: &Handle,
    nics: &[Nic],
    spec: &str,
    lldp_timeout: Duration,
    dhcp_budget: Duration,
) -> Vec<VlanOutcome> {
    let created = create_each(handle, nics, spec, lldp_timeout).await;
    let jobs = created.into_iter().map(|(parent, vid, made)| async move {
        let result = async {
            let vlan = made?;
            let mut client = dhcp::Client::new(&vlan.name, &vlan.mac_bytes())?;
            let lease = client.obtain(dhcp_budget).await?.lease;
            super::link::add_address(
                handle,
                vlan.ifindex,
                lease.address.into(),
                lease.prefix_len,
                super::v4::lease_lifetimes(&lease),
            )
            .await?;
            anyhow::Ok((vlan, lease))
        }
        .await;
        if let Err(e) = &result {
            warn!("VLAN interface {parent}.{vid}: {e:#}");
        }
        VlanOutcome {
            parent,
            vid,
            result,
        }
    });
    futures_util::future::join_all(jobs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str) -> Nic {
        Nic {
            name: name.into(),
            ifindex: 2,
            mac: "52:54:00:12:34:56".into(),
        }
    }

    fn vlan_tlv(vid: u16) -> Tlv {
        let mut v = DOT1_VLAN_NAME.to_vec();
        v.extend_from_slice(&vid.to_be_bytes());
        v.push(4);
        v.extend_from_slice(b"prov");
        (ORG_SPECIFIC, v)
    }

    #[test]
    fn the_list_parses_as_ipa_reads_it() {
        let (e, errs) = parse(" eth0.100 , all,eno1,, eth1.4094");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            e,
            [
                VlanEntry::Explicit {
                    nic: "eth0".into(),
                    vid: 100
                },
                VlanEntry::All,
                VlanEntry::FromLldp("eno1".into()),
                VlanEntry::Explicit {
                    nic: "eth1".into(),
                    vid: 4094
                },
            ]
        );
        assert_eq!(parse(""), (vec![], vec![]));
    }

    #[test]
    fn bad_entries_are_errors_and_the_rest_stands() {
        let (e, errs) = parse("eth0.0,eth0.4095,eth0.x,.5,eth0.7,eth0.1.2");
        assert_eq!(
            e,
            [VlanEntry::Explicit {
                nic: "eth0".into(),
                vid: 7
            }]
        );
        assert_eq!(
            errs,
            [
                VlanError::BadVid("eth0.0".into()),
                VlanError::BadVid("eth0.4095".into()),
                VlanError::BadVid("eth0.x".into()),
                VlanError::NoNic(".5".into()),
                VlanError::BadVid("eth0.1.2".into()),
            ]
        );
        assert_eq!(
            errs[0].to_string(),
            "ipa-enable-vlan-interfaces entry \"eth0.0\": the VLAN id must be a number from 1 to 4094"
        );
    }

    #[test]
    fn vlan_ids_come_from_dot1_vlan_name_tlvs() {
        let tlvs = vec![
            (1, vec![4, 0x52, 0x54, 0, 0, 0, 1]),
            vlan_tlv(42),
            // Port VLAN ID (subtype 1) is not what IPA reads.
            (ORG_SPECIFIC, vec![0x00, 0x80, 0xc2, 0x01, 0x00, 0x07]),
            vlan_tlv(42),
            vlan_tlv(0),
            vlan_tlv(4095),
            (ORG_SPECIFIC, vec![0x00, 0x80, 0xc2, 0x03, 0x01]),
            vlan_tlv(100),
        ];
        assert_eq!(vids_from_lldp(&tlvs), [42, 100]);
    }

    #[test]
    fn entries_resolve_against_nics_and_lldp() {
        let nics = [nic("eth0"), nic("eth1")];
        let mut lldp = BTreeMap::new();
        lldp.insert("eth0".to_string(), vec![vlan_tlv(42)]);
        lldp.insert("eth1".to_string(), vec![vlan_tlv(7), vlan_tlv(8)]);
        let (entries, _) = parse("nosuch0.5,eth1.9,all,eth0,ghost");
        assert_eq!(lldp_wanted(&entries, &nics), ["eth0", "eth1"]);
        let (want, errs) = resolve(&entries, &nics, &lldp);
        let names: Vec<String> = want
            .iter()
            .map(|(n, v)| format!("{}.{v}", n.name))
            .collect();
        assert_eq!(names, ["eth1.9", "eth0.42", "eth1.7", "eth1.8"]);
        assert_eq!(
            errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "VLAN interface nosuch0.5: no NIC named nosuch0, skipping it",
                "VLAN interface ghost: no NIC named ghost, skipping it",
            ]
        );
        let (only_eth0, _) = parse("eth0");
        assert_eq!(lldp_wanted(&only_eth0, &nics), ["eth0"]);
    }
}
