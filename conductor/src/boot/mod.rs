//! Boot serving: iPXE scripts per node (HTTP), the deploy kernel and
//! initramfs and instance images (HTTP, with Range), and TFTP for PXE-only
//! firmware. All in the conductor process, outside the versioned API.

pub mod images;
pub mod ipxe;
pub mod tftp;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ferrite_protocol::node::{normalize_mac, Node};
use serde_json::Value;
use tower_http::services::ServeDir;

use crate::config::ConductorConfig;
use crate::provision_state::{NodeStates, ProvisionState as S};
use crate::store::Store;
use images::Mode;
use ipxe::{BootAction, RamdiskBoot};

pub use images::{INITRAMFS_FILE, KERNEL_FILE};

/// What boot serving reads: the node (by a port's MAC) and the config.
#[derive(Clone)]
pub struct BootState {
    pub store: std::sync::Arc<Store>,
    pub config: std::sync::Arc<ConductorConfig>,
}

pub fn router(state: BootState) -> Router {
    let files = ServeDir::new(state.config.boot_dir());
    let images = ServeDir::new(state.config.images_dir());
    Router::new()
        .route("/boot/boot.ipxe", get(entry))
        .route("/boot/ca.pem", get(ca))
        .route("/boot/node/{file}", get(node_script))
        .nest_service("/boot/files", files)
        .nest_service("/images", images)
        .with_state(state)
}

fn ipxe_response(script: String) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        script,
    )
        .into_response()
}

async fn entry(State(state): State<BootState>) -> Response {
    ipxe_response(ipxe::entry_script(&state.config.boot_url()))
}

/// The API's CA, for the ramdisk (public, like any CA certificate).
async fn ca(State(state): State<BootState>) -> Response {
    let Some(path) = state.config.tls_ca_path() else {
        return (StatusCode::NOT_FOUND, "the API is not on TLS\n").into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(pem) => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the TLS CA");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the CA\n").into_response()
        }
    }
}

/// The deploy ramdisk's command line for this node booting from `mac`.
fn kernel_params(state: &BootState, node: &Node, mac: &str) -> String {
    let cfg = &state.config;
    let public = cfg.public_url();
    let append = node
        .driver_info
        .get("kernel_append_params")
        .and_then(Value::as_str)
        .unwrap_or(&cfg.kernel_append_params);
    let mut params = vec![
        format!("ipa-api-url={public}"),
        format!("BOOTIF=01-{}", mac.replace(':', "-")),
    ];
    if matches!(node.state(), Ok(S::Inspecting | S::InspectWait)) {
        params.push(format!(
            "ipa-inspection-callback-url={public}/v1/continue_inspection"
        ));
    }
    if cfg.tls_cert.is_some() {
        params.push(format!("ipa-cafile={}", ipxe::CA_PATH));
    }
    params.extend(append.split_whitespace().map(str::to_string));
    params.join(" ")
}

pub fn decide(state: &BootState, node: &Node, mac: &str) -> BootAction {
    let boot = state.config.boot_url();
    let provision = match node.state() {
        Ok(provision) => provision,
        Err(e) => return BootAction::Nothing(e.to_string()),
    };
    if ipxe::wants_ramdisk(provision, state.config.fast_track) {
        // Ironic's PXE boot interface: the rescue ramdisk in rescue-like
        // states, the deploy one otherwise.
        let urls = match Mode::for_state(provision) {
            Mode::Deploy => images::deploy_urls(node, &boot),
            Mode::Rescue => match images::rescue_urls(node, &state.config, &boot) {
                Ok(urls) => urls,
                Err(why) => {
                    return BootAction::Nothing(format!(
                        "node {} is {}: {why}",
                        node.uuid, node.provision_state
                    ))
                }
            },
        };
        BootAction::Ramdisk(RamdiskBoot {
            kernel_url: urls.kernel,
            initramfs_url: urls.initramfs,
            kernel_params: kernel_params(state, node, mac),
            ca_url: state
                .config
                .tls_cert
                .is_some()
                .then(|| format!("{boot}/boot/ca.pem")),
        })
    } else {
        match provision {
            S::Active => BootAction::LocalDisk,
            S::DeployFail | S::CleanFail | S::InspectFail | S::Error => {
                BootAction::PowerOff(format!(
                    "node {} is in {}: not booting its disk ({})",
                    node.uuid,
                    provision,
                    node.last_error.as_deref().unwrap_or("no error recorded")
                ))
            }
            S::Enroll
            | S::Verifying
            | S::Manageable
            | S::Available
            | S::Deploying
            | S::DeployWait
            | S::Deleting
            | S::Cleaning
            | S::CleanWait
            | S::Inspecting
            | S::InspectWait
            | S::Rescuing
            | S::RescueWait
            | S::Rescue
            | S::RescueFail
            | S::Unrescuing
            | S::UnrescueFail
            | S::Servicing
            | S::ServiceWait
            | S::ServiceHold
            | S::ServiceFail
            | S::AdoptFail => BootAction::Nothing(format!(
                "node {} is {}: nothing to boot from the network",
                node.uuid, provision
            )),
        }
    }
}

async fn node_script(State(state): State<BootState>, Path(file): Path<String>) -> Response {
    let Some(mac) = file.strip_suffix(".ipxe").and_then(normalize_mac) else {
        return (StatusCode::NOT_FOUND, "expected /boot/node/<mac>.ipxe\n").into_response();
    };
    let found = async {
        let Some(port) = state.store.port_by_address(&mac).await? else {
            return Ok(None);
        };
        anyhow::Ok(Some(state.store.get_node(&port.node_uuid).await?))
    }
    .await;
    let action = match found {
        Ok(Some(node)) => decide(&state, &node, &mac),
        Ok(None) => BootAction::Nothing(format!("no node has a port with MAC {mac}")),
        Err(e) => {
            tracing::error!(%mac, error = %e, "boot script lookup failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
        }
    };
    tracing::info!(%mac, action = ?action, "boot script served");
    ipxe_response(ipxe::node_script(&action))
}
