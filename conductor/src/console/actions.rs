//! Node actions from the console. Each one is sent, in process, to the
//! REST API's own router (version negotiation, the owner-forwarding
//! layer, the handlers' validation, locks and errors), so the console
//! can do nothing the API would refuse, and shows the API's error text.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use ferrite_protocol::version::VERSION_HEADER;
use ferrite_protocol::IronicErrorBody;
use serde_json::{json, Value};
use tower::ServiceExt;

/// What a console form asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Manage,
    Provide,
    Inspect,
    Clean,
    Deploy,
    Undeploy,
    Abort,
    MaintenanceOn,
    MaintenanceOff,
    PowerOn,
    PowerOff,
    Reboot,
}

/// The buttons of the node page, in order, with their labels.
pub const ALL: &[(Action, &str)] = &[
    (Action::Manage, "Manage"),
    (Action::Provide, "Provide"),
    (Action::Inspect, "Inspect"),
    (Action::Undeploy, "Undeploy"),
    (Action::Abort, "Abort"),
    (Action::MaintenanceOff, "Leave maintenance"),
    (Action::PowerOn, "Power on"),
    (Action::PowerOff, "Power off"),
    (Action::Reboot, "Reboot"),
];

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "manage" => Self::Manage,
            "provide" => Self::Provide,
            "inspect" => Self::Inspect,
            "clean" => Self::Clean,
            "deploy" => Self::Deploy,
            "undeploy" => Self::Undeploy,
            "abort" => Self::Abort,
            "maintenance-on" => Self::MaintenanceOn,
            "maintenance-off" => Self::MaintenanceOff,
            "power-on" => Self::PowerOn,
            "power-off" => Self::PowerOff,
            "reboot" => Self::Reboot,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manage => "manage",
            Self::Provide => "provide",
            Self::Inspect => "inspect",
            Self::Clean => "clean",
            Self::Deploy => "deploy",
            Self::Undeploy => "undeploy",
            Self::Abort => "abort",
            Self::MaintenanceOn => "maintenance-on",
            Self::MaintenanceOff => "maintenance-off",
            Self::PowerOn => "power-on",
            Self::PowerOff => "power-off",
            Self::Reboot => "reboot",
        }
    }

    /// Actions that erase a disk, cut power or stop work in progress:
    /// asked again before they are sent. (`provide` may start automated
    /// cleaning, which erases disks.)
    pub fn destructive(self) -> bool {
        matches!(
            self,
            Self::Provide
                | Self::Clean
                | Self::Deploy
                | Self::Undeploy
                | Self::Abort
                | Self::PowerOff
                | Self::Reboot
        )
    }
}

/// The form behind an action; unknown fields are ignored.
#[derive(Debug, Default, Clone)]
pub struct ActionForm {
    pub action: String,
    pub image_url: String,
    pub image_checksum: String,
    pub reason: String,
    pub confirm: String,
    /// `clean_step=interface.step`, repeated, in the order given.
    pub clean_steps: Vec<String>,
}

impl ActionForm {
    /// An `application/x-www-form-urlencoded` body (read by hand: the
    /// step picker repeats `clean_step`).
    pub fn parse(body: &[u8]) -> Self {
        let mut form = Self::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "action" => form.action = v,
                "image_url" => form.image_url = v,
                "image_checksum" => form.image_checksum = v,
                "reason" => form.reason = v,
                "confirm" => form.confirm = v,
                "clean_step" if !v.trim().is_empty() => form.clean_steps.push(v),
                _ => {}
            }
        }
        form
    }

    /// The picked steps as the API's `clean_steps`; the API validates them.
    fn clean_steps_value(&self) -> Value {
        Value::Array(
            self.clean_steps
                .iter()
                .map(|s| match s.trim().split_once('.') {
                    Some((interface, step)) => json!({"interface": interface, "step": step}),
                    None => json!({"step": s.trim()}),
                })
                .collect(),
        )
    }
}

/// The API's answer to a refused request: its status and fault text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

/// One API call: method, path under the node, JSON body.
fn calls(uuid: &str, action: Action, form: &ActionForm) -> Vec<(Method, String, Option<Value>)> {
    let node = format!("/v1/nodes/{uuid}");
    let provision = |target: &str| {
        (
            Method::PUT,
            format!("{node}/states/provision"),
            Some(json!({ "target": target })),
        )
    };
    let power = |target: &str| {
        (
            Method::PUT,
            format!("{node}/states/power"),
            Some(json!({ "target": target })),
        )
    };
    match action {
        Action::Manage => vec![provision("manage")],
        Action::Provide => vec![provision("provide")],
        Action::Inspect => vec![provision("inspect")],
        Action::Clean => vec![(
            Method::PUT,
            format!("{node}/states/provision"),
            Some(json!({"target": "clean", "clean_steps": form.clean_steps_value()})),
        )],
        Action::Undeploy => vec![provision("deleted")],
        Action::Abort => vec![provision("abort")],
        Action::Deploy => {
            let mut out = Vec::new();
            let url = form.image_url.trim();
            if !url.is_empty() {
                let mut ops =
                    vec![json!({"op": "add", "path": "/instance_info/image_source", "value": url})];
                let sum = form.image_checksum.trim();
                if !sum.is_empty() {
                    ops.push(
                        json!({"op": "add", "path": "/instance_info/image_checksum", "value": sum}),
                    );
                }
                out.push((Method::PATCH, node.clone(), Some(Value::Array(ops))));
            }
            out.push(provision("active"));
            out
        }
        Action::MaintenanceOn => {
            let reason = form.reason.trim();
            let body = if reason.is_empty() {
                json!({})
            } else {
                json!({ "reason": reason })
            };
            vec![(Method::PUT, format!("{node}/maintenance"), Some(body))]
        }
        Action::MaintenanceOff => vec![(Method::DELETE, format!("{node}/maintenance"), None)],
        Action::PowerOn => vec![power("power on")],
        Action::PowerOff => vec![power("power off")],
        Action::Reboot => vec![power("rebooting")],
    }
}

/// Send `action` through the API router; the first refusal stops it.
pub async fn perform(
    api: &Router,
    uuid: &str,
    action: Action,
    form: &ActionForm,
) -> Result<(), Refused> {
    for (method, path, body) in calls(uuid, action, form) {
        let mut req = Request::builder()
            .method(method)
            .uri(&path)
            .header(VERSION_HEADER, "latest");
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let req = req.body(body).map_err(|e| Refused {
            status: 500,
            message: e.to_string(),
        })?;
        let resp = api.clone().oneshot(req).await.map_err(|e| Refused {
            status: 500,
            message: e.to_string(),
        })?;
        let status = resp.status();
        if status.is_success() {
            continue;
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 10)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<IronicErrorBody>(&bytes)
            .map(|b| b.faultstring())
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(Refused {
            status: status.as_u16(),
            message,
        });
    }
    Ok(())
}

/// A browser sends the console's basic credentials on any site's form
/// post too; refuse posts that a browser marks as coming from elsewhere.
/// `Sec-Fetch-Site` decides when the browser sends it (it survives a
/// proxy that rewrites `Host`); else `Origin` must name this host.
/// (Clients that are not browsers send neither header.)
pub fn same_origin(headers: &HeaderMap) -> Result<(), StatusCode> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.to_str() {
            Ok("same-origin" | "none") => Ok(()),
            _ => Err(StatusCode::FORBIDDEN),
        };
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .map(|u| match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                None => u.host_str().unwrap_or_default().to_string(),
            });
        if host.is_none() || origin_host.as_deref() != host {
            return Err(StatusCode::FORBIDDEN);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn names_round_trip() {
        for (a, _) in ALL {
            assert_eq!(Action::parse(a.as_str()), Some(*a));
        }
        assert_eq!(Action::parse("deploy"), Some(Action::Deploy));
        assert_eq!(Action::parse("rm -rf"), None);
    }

    #[test]
    fn deploy_sets_the_image_then_asks_for_active() {
        let form = ActionForm {
            action: "deploy".into(),
            image_url: " http://img/disk.qcow2 ".into(),
            image_checksum: "abc".into(),
            ..ActionForm::default()
        };
        let c = calls("u", Action::Deploy, &form);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, Method::PATCH);
        assert_eq!(
            c[0].2.as_ref().unwrap()[0]["value"],
            "http://img/disk.qcow2"
        );
        assert_eq!(c[1].2.as_ref().unwrap()["target"], "active");
    }

    #[test]
    fn the_step_picker_repeats_clean_step() {
        let form = ActionForm::parse(
            b"action=clean&clean_step=deploy.erase_devices_metadata&clean_step=raid.delete_configuration&confirm=yes",
        );
        assert_eq!(form.confirm, "yes");
        let c = calls("u", Action::Clean, &form);
        let body = c[0].2.as_ref().unwrap();
        assert_eq!(body["target"], "clean");
        assert_eq!(
            body["clean_steps"],
            json!([
                {"interface": "deploy", "step": "erase_devices_metadata"},
                {"interface": "raid", "step": "delete_configuration"}
            ])
        );
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h).is_ok());
        h.insert(header::HOST, HeaderValue::from_static("10.0.0.1:6385"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://10.0.0.1:6385"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(same_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&h).is_err());
        // Behind a proxy that rewrites Host, the browser's word decides.
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://console.example"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h).is_ok());
    }
}
