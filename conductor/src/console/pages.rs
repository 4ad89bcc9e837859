//! The console's HTML, as `maud` templates: every value is escaped by
//! the template engine, so a node's name or error is always text.

use ferrite_protocol::node::{Node, Port};
use maud::{html, Markup, DOCTYPE};
use serde_json::{Map, Value};

use super::actions::{self, Action, ActionForm};
use super::fleet::{human_bytes, Filter, FleetRow, Progress};
use crate::provision_state::ProvisionState as S;
use crate::store::{HistoryEvent, StateCount, StoredInventory};

/// Provision states offered by the fleet filter.
pub const STATES: &[&str] = &[
    S::Enroll.as_str(),
    S::Verifying.as_str(),
    S::Manageable.as_str(),
    S::Inspecting.as_str(),
    S::InspectWait.as_str(),
    S::InspectFail.as_str(),
    S::Cleaning.as_str(),
    S::CleanWait.as_str(),
    S::CleanFail.as_str(),
    S::Available.as_str(),
    S::Deploying.as_str(),
    S::DeployWait.as_str(),
    S::DeployFail.as_str(),
    S::Active.as_str(),
    S::Deleting.as_str(),
    S::Error.as_str(),
    S::Rescuing.as_str(),
    S::RescueWait.as_str(),
    S::Rescue.as_str(),
    S::RescueFail.as_str(),
    S::Unrescuing.as_str(),
    S::UnrescueFail.as_str(),
    S::ServiceWait.as_str(),
    S::AdoptFail.as_str(),
];

/// A console page; `signed_in` pages load the script and offer logout.
fn page(title: &str, signed_in: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Ferrite console" }
                link rel="stylesheet" href="/console/static/console.css";
                @if signed_in {
                    script src="/console/static/console.js" defer {}
                }
            }
            body {
                header.top {
                    a.brand href="/console/" { "Ferrite" }
                    span.sub { "conductor console" }
                    @if signed_in {
                        form.logout method="post" action="/console/logout" {
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn layout(title: &str, body: Markup) -> Markup {
    page(title, true, body)
}

fn opt(v: Option<&str>) -> &str {
    v.unwrap_or("")
}

fn progress_cell(p: Option<&Progress>) -> Markup {
    html! {
        @if let Some(p) = p {
            div.progress {
                progress max="100" value=(p.percent.map_or(String::new(), |v| format!("{v:.1}"))) {}
                span.ptext { (progress_text(p)) }
            }
        }
    }
}

/// "12.0 MiB / 24.0 MiB · 3.0 MiB/s · ETA 4 s" (the same text the script
/// writes on updates).
pub fn progress_text(p: &Progress) -> String {
    let mut text = human_bytes(p.received);
    if let Some(t) = p.total {
        text.push_str(&format!(" / {}", human_bytes(t)));
    }
    text.push_str(&format!(" · {}/s", human_bytes(p.rate)));
    if let Some(eta) = p.eta_seconds {
        text.push_str(&format!(" · ETA {eta} s"));
    }
    text
}

fn fleet_row(r: &FleetRow) -> Markup {
    html! {
        tr data-uuid=(r.uuid) {
            td data-label="Name" {
                a href={ "/console/nodes/" (r.uuid) } data-f="name" { (opt(r.name.as_deref())) }
                div.uuid data-f="uuid" { (r.uuid) }
            }
            td data-label="State" data-f="provision_state" { (r.provision_state) }
            td data-label="Target" data-f="target_provision_state" { (opt(r.target_provision_state.as_deref())) }
            td data-label="Power" data-f="power_state" { (opt(r.power_state.as_deref())) }
            td data-label="Maint." data-f="maintenance" { @if r.maintenance { "yes" } @else { "no" } }
            td data-label="Step" data-f="step" { (opt(r.step.as_deref())) }
            td.pcell data-label="Image write" data-f="progress" { (progress_cell(r.progress.as_ref())) }
        }
    }
}

/// Nodes per provision state over the whole fleet (one `GROUP BY`), each
/// a link that filters by it.
fn summary(counts: &[StateCount]) -> Markup {
    let mut by_state: Vec<(&str, u64)> = Vec::new();
    for c in counts {
        match by_state.iter_mut().find(|(s, _)| *s == c.provision_state) {
            Some((_, n)) => *n += c.nodes,
            None => by_state.push((&c.provision_state, c.nodes)),
        }
    }
    by_state.sort();
    let total: u64 = by_state.iter().map(|(_, n)| n).sum();
    let maintenance: u64 = counts
        .iter()
        .filter(|c| c.maintenance)
        .map(|c| c.nodes)
        .sum();
    html! {
        p.summary {
            a href="/console/" { (total) " nodes" }
            @for (state, n) in &by_state {
                " · "
                a href={ "/console/?" (url::form_urlencoded::Serializer::new(String::new()).append_pair("state", state).finish()) } { (state) " " (n) }
            }
            @if maintenance > 0 { " · " (maintenance) " in maintenance" }
        }
    }
}

pub fn fleet(rows: &[FleetRow], filter: &Filter, counts: &[StateCount]) -> Markup {
    let state = filter.state.as_deref().unwrap_or("");
    let events = {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if !state.is_empty() {
            q.append_pair("state", state);
        }
        if let Some(s) = filter.q.as_deref().filter(|s| !s.is_empty()) {
            q.append_pair("q", s);
        }
        format!("/console/events?{}", q.finish())
    };
    layout(
        "Fleet",
        html! {
            (summary(counts))
            form.filters method="get" action="/console/" {
                label { "State "
                    select name="state" {
                        option value="" selected[state.is_empty()] { "any" }
                        @for s in STATES {
                            option value=(s) selected[*s == state] { (s) }
                        }
                    }
                }
                label { "Search "
                    input type="search" name="q" value=(filter.q.as_deref().unwrap_or("")) placeholder="name or UUID";
                }
                button type="submit" { "Filter" }
                span.live id="live" { "" }
            }
            table.fleet id="fleet" data-events=(events) {
                thead { tr {
                    th { "Node" } th { "State" } th { "Target" } th { "Power" }
                    th { "Maint." } th { "Step" } th { "Image write" }
                } }
                tbody {
                    @for r in rows { (fleet_row(r)) }
                }
            }
            @if rows.is_empty() { p.empty { "No node matches." } }
        },
    )
}

/// A JSON value as text for a table cell.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn kv_table(map: &Map<String, Value>) -> Markup {
    html! {
        @if map.is_empty() { p.empty { "none" } } @else {
            table.kv { tbody {
                @for (k, v) in map { tr { th { (k) } td { (value_text(v)) } } }
            } }
        }
    }
}

fn inventory_tables(inv: &StoredInventory) -> Markup {
    let i = &inv.inventory;
    let cpu = i.get("cpu").and_then(Value::as_object);
    let memory = i.get("memory").and_then(Value::as_object);
    let list = |k: &str| {
        i.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let s = |v: &Value, k: &str| v.get(k).map(value_text).unwrap_or_default();
    html! {
        p.meta { "Collected " (inv.created_at) }
        h3 { "CPU" }
        @if let Some(cpu) = cpu { (kv_table(cpu)) } @else { p.empty { "none" } }
        h3 { "Memory" }
        @if let Some(m) = memory { (kv_table(m)) } @else { p.empty { "none" } }
        h3 { "Disks" }
        table.grid {
            thead { tr { th { "Name" } th { "Model" } th { "Size" } th { "Rotational" } th { "Serial" } } }
            tbody { @for d in list("disks") { tr {
                td { (s(&d, "name")) } td { (s(&d, "model")) }
                td { (d.get("size").and_then(Value::as_u64).map(human_bytes).unwrap_or_default()) }
                td { (s(&d, "rotational")) } td { (s(&d, "serial")) }
            } } }
        }
        h3 { "NICs" }
        table.grid {
            thead { tr { th { "Name" } th { "MAC" } th { "IPv4" } th { "Speed (Mb/s)" } th { "Driver" } } }
            tbody { @for n in list("interfaces") { tr {
                td { (s(&n, "name")) } td { (s(&n, "mac_address")) } td { (s(&n, "ipv4_address")) }
                td { (s(&n, "speed_mbps")) } td { (s(&n, "driver")) }
            } } }
        }
    }
}

/// What `GET .../management/boot_device` reports: the last one set.
fn boot_device(node: &Node) -> String {
    let Some(bd) = node.driver_internal_info.get("boot_device") else {
        return String::new();
    };
    let device = bd.get("boot_device").map(value_text).unwrap_or_default();
    match bd.get("persistent").and_then(Value::as_bool) {
        Some(true) => format!("{device} (persistent)"),
        _ => device,
    }
}

pub struct NodePage<'a> {
    pub node: &'a Node,
    /// The node as the REST API shows it: secrets already masked.
    pub masked: &'a Map<String, Value>,
    pub ports: &'a [Port],
    pub history: &'a [HistoryEvent],
    pub inventory: Option<&'a StoredInventory>,
    pub flash: Option<Flash>,
    pub logs: &'a [super::logs::LogFile],
}

/// The outcome of the last action, shown at the top of the node page.
pub enum Flash {
    /// The API accepted the action (its name).
    Done(String),
    /// The API's refusal, verbatim.
    Failed(String),
}

fn action_form(uuid: &str, action: Action, label: &str) -> Markup {
    html! {
        form.action method="post" action={ "/console/nodes/" (uuid) "/actions" }
            data-confirm=[action.destructive().then(|| format!("{label} this node?"))] {
            input type="hidden" name="action" value=(action.as_str());
            button type="submit" class=[action.destructive().then_some("danger")] { (label) }
        }
    }
}

/// The agent's cached clean steps (`agent_cached_clean_steps`, grouped
/// by interface), as `interface.step` with their priority.
fn cached_clean_steps(node: &Node) -> Vec<(String, i64)> {
    let Some(groups) = node
        .driver_internal_info
        .get(crate::flows::CACHE_KEY)
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let mut out: Vec<(String, i64)> = groups
        .iter()
        .flat_map(|(iface, steps)| {
            steps.as_array().into_iter().flatten().filter_map(move |s| {
                let step = s.get("step")?.as_str()?;
                let priority = s.get("priority").and_then(Value::as_i64).unwrap_or(0);
                Some((format!("{iface}.{step}"), priority))
            })
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

fn actions_section(node: &Node) -> Markup {
    let uuid = &node.uuid;
    let post = format!("/console/nodes/{uuid}/actions");
    let steps = cached_clean_steps(node);
    html! {
        section.actions {
            h2 { "Actions" }
            div.buttons {
                @for (action, label) in actions::ALL {
                    (action_form(uuid, *action, label))
                }
            }
            form.action.wide method="post" action=(post) data-confirm="Put this node in maintenance?" {
                input type="hidden" name="action" value="maintenance-on";
                input type="text" name="reason" placeholder="maintenance reason";
                button type="submit" { "Enter maintenance" }
            }
            form.action.wide method="post" action=(post) data-confirm="Deploy this image to the node? Its disk is overwritten." {
                input type="hidden" name="action" value="deploy";
                input type="url" name="image_url" placeholder="image URL (empty: keep instance_info)";
                input type="text" name="image_checksum" placeholder="checksum";
                button.danger type="submit" { "Deploy" }
            }
            form.action.steps method="post" action=(post) data-confirm="Run the selected clean steps?" {
                input type="hidden" name="action" value="clean";
                fieldset {
                    legend { "Clean (manual), in this order" }
                    @if steps.is_empty() {
                        p.empty { "The agent has not reported its steps yet; name one:" }
                        input type="text" name="clean_step" placeholder="interface.step, e.g. deploy.erase_devices_metadata";
                    }
                    @for (step, priority) in &steps {
                        label.step {
                            input type="checkbox" name="clean_step" value=(step);
                            " " (step) " "
                            span.meta { "priority " (priority) }
                        }
                    }
                    button.danger type="submit" { "Clean" }
                }
            }
        }
    }
}

/// Asked again before a destructive action (the script asks in the
/// page; without it, this page does).
pub fn confirm(node: &Node, action: Action, form: &ActionForm) -> Markup {
    let title = node.name.clone().unwrap_or_else(|| node.uuid.clone());
    layout(
        "Confirm",
        html! {
            p { a href={ "/console/nodes/" (node.uuid) } { "← " (title) } }
            h1 { "Confirm " (action.as_str()) }
            p { "Really " strong { (action.as_str()) } " node " strong { (title) } " (" (node.uuid) ")?" }
            form method="post" action={ "/console/nodes/" (node.uuid) "/actions" } {
                input type="hidden" name="action" value=(action.as_str());
                input type="hidden" name="image_url" value=(form.image_url);
                input type="hidden" name="image_checksum" value=(form.image_checksum);
                input type="hidden" name="reason" value=(form.reason);
                @for step in &form.clean_steps {
                    input type="hidden" name="clean_step" value=(step);
                }
                @if !form.clean_steps.is_empty() {
                    p { "Steps: " (form.clean_steps.join(", ")) }
                }
                input type="hidden" name="confirm" value="yes";
                button.danger type="submit" { "Yes, " (action.as_str()) }
                " "
                a href={ "/console/nodes/" (node.uuid) } { "Cancel" }
            }
        },
    )
}

pub fn node(p: &NodePage<'_>) -> Markup {
    let node = p.node;
    let row = FleetRow::of(node);
    let title = node.name.clone().unwrap_or_else(|| node.uuid.clone());
    let masked = |k: &str| {
        p.masked
            .get(k)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    layout(
        &title,
        html! {
            p { a href="/console/" { "← Fleet" } }
            h1 { (title) }
            p.uuid { (node.uuid) }
            @match &p.flash {
                Some(Flash::Done(a)) => div.flash.ok role="status" { "Requested: " (a) "." },
                Some(Flash::Failed(m)) => div.flash.failed role="alert" { strong { "Refused: " } (m) },
                None => {}
            }
            div id="last-error-box" {
                @if let Some(err) = node.last_error.as_deref().filter(|e| !e.is_empty()) {
                    div.last-error role="alert" { strong { "Last error: " } (err) }
                }
            }
            table.fleet.single id="fleet" data-events={ "/console/events?uuid=" (node.uuid) } {
                thead { tr {
                    th { "Node" } th { "State" } th { "Target" } th { "Power" }
                    th { "Maint." } th { "Step" } th { "Image write" }
                } }
                tbody { (fleet_row(&row)) }
            }
            span.live id="live" {}
            (actions_section(node))
            section {
                h2 { "Node" }
                table.kv { tbody {
                    tr { th { "Driver" } td { (node.driver) } }
                    tr { th { "Resource class" } td { (opt(node.resource_class.as_deref())) } }
                    tr { th { "Conductor group" } td { (node.conductor_group) } }
                    tr { th { "Conductor" } td { (opt(node.conductor.as_deref())) } }
                    tr { th { "Reservation" } td { (opt(node.reservation.as_deref())) } }
                    tr { th { "Maintenance reason" } td { (opt(node.maintenance_reason.as_deref())) } }
                    tr { th { "Fault" } td { (opt(node.fault.as_deref())) } }
                    tr { th { "Boot mode" } td { (opt(node.boot_mode.as_deref())) } }
                    tr { th { "Boot device" } td { (boot_device(node)) } }
                    tr { th { "Instance" } td { (opt(node.instance_uuid.as_deref())) } }
                    tr { th { "Provision updated" } td { (opt(node.provision_updated_at.as_deref())) } }
                } }
                h2 { "Properties" }
                (kv_table(&masked("properties")))
                h2 { "Driver info" }
                (kv_table(&masked("driver_info")))
            }
            section id="logs" {
                h2 { "Ramdisk logs" }
                @if p.logs.is_empty() { p.empty { "None collected." } }
                ul.logs {
                    @for f in p.logs {
                        li { a href={ "/console/nodes/" (node.uuid) "/logs/" (f.name) } download { (f.name) } " (" (human_bytes(f.size)) ")" }
                    }
                }
            }
            section {
                h2 { "Ports" }
                table.grid {
                    thead { tr { th { "UUID" } th { "MAC" } th { "PXE" } } }
                    tbody { @for port in p.ports { tr {
                        td { (port.uuid) } td { (port.address) }
                        td { @if port.pxe_enabled { "yes" } @else { "no" } }
                    } } }
                }
            }
            section id="inventory" {
                h2 { "Inventory" }
                @if let Some(inv) = p.inventory { (inventory_tables(inv)) }
                @else { p.empty { "Not inspected." } }
            }
            section id="history" {
                h2 { "History" }
                @if p.history.is_empty() { p.empty { "No events." } }
                ol.timeline {
                    @for e in p.history.iter().rev() {
                        li class={ "sev-" (e.severity.to_lowercase()) } {
                            time { (e.created_at) }
                            span.etype { (e.event_type) }
                            div.event { (e.event) }
                            @if let Some(c) = e.conductor.as_deref() { div.meta { "on " (c) } }
                        }
                    }
                }
            }
        },
    )
}

/// The login form (htpasswd users); `refused` after a wrong password.
/// It loads no script: nothing on it needs one.
pub fn login(refused: Option<&str>) -> Markup {
    page(
        "Log in",
        false,
        html! {
            form.login #login method="post" action="/console/login" {
                h1 { "Log in" }
                @if let Some(why) = refused {
                    div.last-error #login-error role="alert" { (why) }
                }
                label { "User" input #username name="username" autocomplete="username" required; }
                label { "Password" input #password type="password" name="password" autocomplete="current-password" required; }
                button #login-submit type="submit" { "Log in" }
            }
        },
    )
}

/// An error page (a missing node, a database failure).
pub fn error(status: u16, message: &str) -> Markup {
    layout(
        "Error",
        html! {
            p { a href="/console/" { "← Fleet" } }
            div.last-error role="alert" { strong { (status) " " } (message) }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_named(name: &str) -> Node {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
            "driver": "ipmi",
            "provision_state": "enroll",
        }))
        .expect("a node");
        node.name = Some(name.to_string());
        node.last_error = Some("<img src=x onerror=alert(2)>".into());
        node
    }

    #[test]
    fn the_summary_counts_states_over_power_and_maintenance() {
        let c = |state: &str, maintenance: bool, nodes: u64| StateCount {
            provision_state: state.into(),
            power_state: None,
            maintenance,
            nodes,
        };
        let html = summary(&[
            c("active", false, 2),
            c("active", true, 1),
            c("wait call-back", false, 1),
        ])
        .into_string();
        assert!(html.contains(">4 nodes<"), "{html}");
        assert!(html.contains(">active 3<"), "{html}");
        assert!(
            html.contains("href=\"/console/?state=wait+call-back\""),
            "{html}"
        );
        assert!(html.contains("1 in maintenance"), "{html}");
    }

    #[test]
    fn names_and_errors_are_escaped() {
        let probe = "<script>alert(1)</script>";
        let node = node_named(probe);
        let fleet_html = fleet(&[FleetRow::of(&node)], &Filter::default(), &[]).into_string();
        assert!(!fleet_html.contains(probe), "{fleet_html}");
        assert!(fleet_html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let masked = Map::new();
        let page = node_page_html(&node, &masked);
        assert!(!page.contains(probe));
        assert!(!page.contains("<img src=x"));
        assert!(page.contains("&lt;img src=x onerror=alert(2)&gt;"));
        assert!(page.contains("&lt;b&gt;refused&lt;/b&gt;"));
        // The search box echoes the query as an attribute value, escaped.
        let f = Filter {
            state: None,
            q: Some("\"><script>".into()),
        };
        let html = fleet(&[], &f, &[]).into_string();
        assert!(
            html.contains("value=\"&quot;&gt;&lt;script&gt;\""),
            "{html}"
        );
    }

    fn node_page_html(node: &Node, masked: &Map<String, Value>) -> String {
        super::node(&NodePage {
            node,
            masked,
            ports: &[],
            history: &[],
            inventory: None,
            flash: Some(Flash::Failed("<b>refused</b>".into())),
            logs: &[],
        })
        .into_string()
    }
}
