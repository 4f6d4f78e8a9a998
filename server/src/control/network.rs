//! A sandbox's network as the SDKs describe it (`allow_internet_access`,
//! `network {allowOut, denyOut, allowPublicTraffic, ...}` on create, and
//! `PUT /sandboxes/{id}/network`), turned into the library's
//! [`Network`].
//!
//! The reference's rules read differently from sandlot's: there an allow
//! rule is an exception to the deny rules (`denyOut: ["0.0.0.0/0"],
//! allowOut: ["api.example.com"]` reaches only that host), while in sandlot
//! any allow rule denies the rest and a deny rule always wins. So:
//! - a deny list that holds all traffic (`0.0.0.0/0`, or `::/0`) becomes
//!   sandlot's allow list (only those) — or, with no allow rule, an allow
//!   list that names nothing reachable (IPv4 and IPv6 alike, since the
//!   reference has no IPv6, and no name resolved);
//! - otherwise the deny rules stay deny rules, and allow rules add nothing
//!   (everything not denied is reachable already) unless one lies inside a
//!   deny rule, an exception sandlot cannot express: refused with a 400.
//!
//! `allow_internet_access: false` is a deny of all traffic, as the SDK
//! documents. Sandboxes get the network even when everything is denied, so
//! that the update route can open it later (the library cannot turn a
//! network on after create).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use sandlot::{Network, Rule as NetworkRule, RuleError, Target as NetworkTarget};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{blocking, parse_body, read_body, record};
use crate::error::ApiError;
use crate::state::AppState;

/// What all traffic is called in the reference's rules.
const ALL_TRAFFIC: &str = "0.0.0.0/0";
/// The one allow rule of a network that allows nothing.
const NOTHING: &str = "deny-all.sandlot.invalid";

/// `network` of a create, as the SDK sends it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateNetwork {
    allow_out: Option<Vec<String>>,
    deny_out: Option<Vec<String>>,
    allow_public_traffic: Option<bool>,
    mask_request_host: Option<String>,
    dns_servers: Option<Vec<String>>,
    egress_proxy: Option<Value>,
    https_ports: Option<Vec<u16>>,
    rules: Option<serde_json::Map<String, Value>>,
}

/// The body of `PUT /sandboxes/{id}/network`: it replaces every egress
/// rule; what it leaves out is cleared.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NetworkUpdate {
    allow_out: Option<Vec<String>>,
    deny_out: Option<Vec<String>>,
    dns_servers: Option<Vec<String>>,
    egress_proxy: Option<Value>,
    rules: Option<serde_json::Map<String, Value>>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
}

/// A sandbox's network as it is reported back (`GET /sandboxes/{id}`:
/// `allowInternetAccess` and `network`), in the SDK's words; saved with
/// the sandbox (`persist.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSettings {
    pub allow_internet_access: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_out: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_out: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    pub allow_public_traffic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
}

impl NetworkSettings {
    /// The `network` object of a sandbox's detail (`allowInternetAccess`
    /// is a field of the detail itself).
    pub fn wire(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("allowInternetAccess");
        }
        value
    }
}

/// A create's network: the library's option and what to report.
pub struct Planned {
    pub network: Network,
    pub settings: NetworkSettings,
}

/// Options the reference has and sandlot does not, refused by name.
fn refuse_unsupported(
    egress_proxy: Option<&Value>,
    rules: Option<&serde_json::Map<String, Value>>,
    https_ports: Option<&[u16]>,
) -> Result<(), ApiError> {
    if egress_proxy.is_some_and(|p| !p.is_null()) {
        return Err(ApiError::not_yet(
            "network.egressProxy (tunnelling through a SOCKS5 proxy)",
            "not planned yet",
        ));
    }
    if rules.is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::not_yet(
            "network.rules (per-host request transforms)",
            "not planned yet",
        ));
    }
    if https_ports.is_some_and(|p| !p.is_empty()) {
        return Err(ApiError::not_yet(
            "network.httpsPorts (TLS to the sandbox's servers)",
            "not planned yet",
        ));
    }
    Ok(())
}

/// The network of a new sandbox. `default_internet` is what a create that
/// says nothing gets (the server's `--default-network`).
pub fn plan(
    allow_internet_access: Option<bool>,
    network: Option<CreateNetwork>,
    default_internet: bool,
) -> Result<Planned, ApiError> {
    let network = network.unwrap_or_default();
    refuse_unsupported(
        network.egress_proxy.as_ref(),
        network.rules.as_ref(),
        network.https_ports.as_deref(),
    )?;
    let allow_out = network.allow_out.unwrap_or_default();
    let deny_out = network.deny_out.unwrap_or_default();
    let says_nothing =
        allow_internet_access.is_none() && allow_out.is_empty() && deny_out.is_empty();
    let library = if says_nothing && !default_internet {
        // Loopback only: the sandbox has no network at all.
        Network::off()
    } else {
        translate(allow_internet_access != Some(false), &allow_out, &deny_out)?
    };
    let settings = NetworkSettings {
        allow_internet_access: library.is_on() && allow_internet_access != Some(false),
        allow_out,
        deny_out,
        dns_servers: network.dns_servers,
        // The reference's default: a sandbox's ports are public.
        allow_public_traffic: network.allow_public_traffic.unwrap_or(true),
        mask_request_host: network.mask_request_host,
    };
    Ok(Planned {
        network: library,
        settings,
    })
}

fn parse_rules(kind: &str, rules: &[String]) -> Result<Vec<NetworkRule>, ApiError> {
    rules
        .iter()
        .map(|r| {
            r.parse::<NetworkRule>()
                .map_err(|e| ApiError::bad_request(format!("network.{kind}: {e}")))
        })
        .collect()
}

fn is_all_traffic(rule: &NetworkRule) -> bool {
    matches!(rule.target(), NetworkTarget::Net(net) if net.prefix_len() == 0)
}

/// The reference's (internet, allow, deny) as a library network (see the
/// module's doc).
fn translate(
    internet: bool,
    allow_out: &[String],
    deny_out: &[String],
) -> Result<Network, ApiError> {
    let allow = parse_rules("allowOut", allow_out)?;
    let deny = parse_rules("denyOut", deny_out)?;
    let bad = |e: RuleError| ApiError::bad_request(format!("network: {e}"));
    let mut network = Network::internet();
    if !internet || deny.iter().any(is_all_traffic) {
        if allow.is_empty() {
            // Nothing allowed: an allow list of one name that never
            // resolves (RFC 6761's `.invalid`). Deny rules alone would
            // still send every name the sandbox looks up to the upstream
            // resolver (a way out for data); under an allow list names
            // are answered NXDOMAIN here.
            network = network.allow_out(NOTHING).map_err(bad)?;
        }
        for rule in &allow {
            network = network.allow_out(rule.as_str()).map_err(bad)?;
        }
        return Ok(network);
    }
    for a in &allow {
        let NetworkTarget::Net(inner) = a.target() else {
            continue;
        };
        if let Some(d) = deny.iter().find(|d| {
            matches!(d.target(), NetworkTarget::Net(outer) if outer.contains(inner) || inner.contains(outer))
        }) {
            return Err(ApiError::bad_request(format!(
                "network: allowOut {a} overlaps denyOut {d}; sandlot can make exceptions only to a \
                 deny of all traffic ({ALL_TRAFFIC})"
            )));
        }
    }
    for rule in &deny {
        network = network.deny_out(rule.as_str()).map_err(bad)?;
    }
    Ok(network)
}

/// `PUT /sandboxes/{id}/network`: replaces the egress rules; connections
/// open now keep going, new ones follow the new rules.
pub(super) async fn update(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let body = read_body(body).await?;
    let request: NetworkUpdate = parse_body(&body)?;
    refuse_unsupported(request.egress_proxy.as_ref(), request.rules.as_ref(), None)?;
    let record = record(&state, &id)?;
    let allow_out = request.allow_out.unwrap_or_default();
    let deny_out = request.deny_out.unwrap_or_default();
    let internet = request.allow_internet_access != Some(false);
    let network = translate(internet, &allow_out, &deny_out)?;
    if !record.sandbox.network().is_on() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::Code::FailedPrecondition,
            format!(
                "sandbox \"{id}\" has no network (loopback only) and cannot get one now: it was \
                 created without one (create it with allow_internet_access or network rules)"
            ),
        ));
    }
    let target = record.clone();
    blocking(move || Ok(target.sandbox.set_network(network)?)).await?;
    {
        let mut settings = record.network.lock().unwrap();
        settings.allow_internet_access = internet;
        settings.allow_out = allow_out;
        settings.deny_out = deny_out;
        settings.dns_servers = request.dns_servers;
    }
    state
        .save(&record)
        .map_err(|e| ApiError::internal(format!("save the sandbox's record: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(network: &Network) -> (Vec<String>, Vec<String>) {
        let text = |r: &[NetworkRule]| r.iter().map(|r| r.as_str().to_string()).collect();
        (text(network.allow_rules()), text(network.deny_rules()))
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_reference_rules_become_sandlot_rules() {
        // Nothing said: the server's default.
        assert!(!plan(None, None, false).unwrap().network.is_on());
        let on = plan(None, None, true).unwrap();
        assert!(on.network.is_on() && on.settings.allow_internet_access);
        assert_eq!(rules(&on.network), (vec![], vec![]));

        // No internet: a deny of everything, but a network to widen later.
        let off = plan(Some(false), None, true).unwrap();
        assert!(off.network.is_on() && !off.settings.allow_internet_access);
        assert_eq!(rules(&off.network), (strings(&[NOTHING]), vec![]));

        // The reference's allow-list pattern: deny all, allow some.
        let n = translate(
            true,
            &strings(&["api.example.com", "1.1.1.1"]),
            &strings(&["0.0.0.0/0"]),
        )
        .unwrap();
        assert_eq!(
            rules(&n),
            (strings(&["api.example.com", "1.1.1.1"]), vec![])
        );
        let n = translate(false, &strings(&["1.1.1.1"]), &[]).unwrap();
        assert_eq!(rules(&n), (strings(&["1.1.1.1"]), vec![]));

        // Plain deny rules stay deny rules; allow rules outside them add nothing.
        let n = translate(true, &strings(&["9.9.9.9"]), &strings(&["8.8.8.0/24"])).unwrap();
        assert_eq!(rules(&n), (vec![], strings(&["8.8.8.0/24"])));
    }

    #[test]
    fn what_sandlot_cannot_express_is_refused_by_name() {
        let e = translate(true, &strings(&["8.8.8.8"]), &strings(&["8.8.0.0/16"])).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("8.8.8.8") && e.message.contains("8.8.0.0/16"));
        let e = translate(true, &[], &strings(&["not a rule!"])).unwrap_err();
        assert!(e.message.contains("denyOut"), "{}", e.message);
        let proxy = CreateNetwork {
            egress_proxy: Some(serde_json::json!({"address": "p:1080"})),
            ..CreateNetwork::default()
        };
        assert_eq!(
            plan(None, Some(proxy), true).err().unwrap().status,
            StatusCode::NOT_IMPLEMENTED
        );
    }
}
