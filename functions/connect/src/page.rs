//! The hosted Connect page: server-rendered, no script, readable at phone width, keyboard and screen-reader
//! friendly (headings per card, a text state beside each colour, real buttons, visible focus, AA contrast).

use maud::{DOCTYPE, Markup, PreEscaped, html};
use shared::connect::{Connection, ConnectionStatus};
use shared::providers::ProviderId;

const STYLE: &str = r#"
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;background:#f4f5f7}
main{max-width:40rem;margin:0 auto;padding:1.5rem 1rem}header{display:flex;gap:.75rem;align-items:center;margin-bottom:1rem}
header img{width:48px;height:48px;border-radius:8px;object-fit:contain;background:#fff}h1{font-size:1.5rem;margin:0}
.lead{margin:.25rem 0 1rem;color:#3d3d3d}.banner{padding:.75rem 1rem;border-radius:8px;margin-bottom:1rem;background:#e7f5ec;color:#0d4a24;border:1px solid #9fd4b2}
.banner.error{background:#fdecea;color:#7a1c12;border-color:#f3b0a8}ul{list-style:none;margin:0;padding:0;display:grid;gap:.75rem}
.card{background:#fff;border:1px solid #d5d8de;border-radius:12px;padding:1rem;display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1rem}
.card h2{font-size:1.125rem;margin:0;flex:1 1 8rem}.state{margin:0;flex:1 1 10rem;color:#333}.history{margin:0;flex:1 1 100%;font-size:.875rem;color:#333}.history progress{display:block;width:100%}.actions{display:flex;gap:.5rem}
button{font:inherit;padding:.5rem 1rem;border-radius:8px;border:1px solid #1f4fd1;background:#1f4fd1;color:#fff;cursor:pointer;min-height:44px}
button.secondary{background:#fff;color:#1f4fd1}button:focus-visible,a:focus-visible{outline:3px solid #f5a623;outline-offset:2px}
.back{display:inline-block;margin-top:1.25rem;color:#1f4fd1}
.dot{display:inline-block;width:.75rem;height:.75rem;border-radius:50%;margin-right:.4rem;vertical-align:baseline}
.dot.green{background:#1a7f37}.dot.red{background:#c62828}.dot.orange{background:#b35900}.dot.blue{background:#1f4fd1}
"#;

/// One card's data.
pub struct Card {
    pub provider: ProviderId,
    pub connection: Option<Connection>,
}

/// The state's dot colour (a CSS class, so it shows without an emoji font) and its words (which carry the
/// meaning; the colour only repeats it).
fn state_text(c: &Option<Connection>) -> (&'static str, String) {
    match c {
        None => ("red", "Not connected".to_owned()),
        Some(c) => match c.status {
            ConnectionStatus::Connected => ("green", "Connected".to_owned()),
            ConnectionStatus::Syncing => ("blue", "Syncing".to_owned()),
            ConnectionStatus::NeedsReauthorization => ("orange", "Needs reauthorization".to_owned()),
            ConnectionStatus::Error => {
                ("orange", format!("Error: {}", c.last_error.as_deref().unwrap_or("the last sync failed")))
            }
        },
    }
}

/// The backfill of a connection while it runs.
fn importing(c: &Option<Connection>) -> Option<&shared::connect::BackfillProgress> {
    c.as_ref()?.backfill.as_ref().filter(|b| b.status == shared::connect::BackfillStatus::Running)
}

fn shell(title: &str, body: Markup) -> Markup {
    shell_with(title, body, false)
}

/// `refresh`: reload every few seconds (while a sync runs), without script.
fn shell_with(title: &str, body: Markup, refresh: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh { meta http-equiv="refresh" content="3"; }
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
}

/// The page of a live connect session.
pub fn connect_page(
    tenant_name: &str,
    logo_url: Option<&str>,
    link: &str,
    return_url: &str,
    cards: &[Card],
    banner: Option<(bool, String)>,
) -> Markup {
    let body = html! {
        header {
            @if let Some(logo) = logo_url { img src=(logo) alt={ (tenant_name) " logo" }; }
            div {
                h1 { "Connect your devices" }
                p.lead { (tenant_name) " reads your health data from the services you connect here. You can disconnect at any time." }
            }
        }
        @if let Some((ok, text)) = &banner {
            div.banner.error[!ok] role="status" { (text) }
        }
        ul aria-label="Providers" {
            @for card in cards {
                @let name = card.provider.provider().display_name();
                @let (icon, text) = state_text(&card.connection);
                @let id = format!("provider-{}", card.provider);
                li.card aria-labelledby=(id) data-provider=(card.provider.as_str()) {
                    h2 id=(id) { (name) }
                    p.state data-state=(card.connection.as_ref().map_or("not_connected", |c| c.status.as_str())) {
                        span.dot.(icon) aria-hidden="true" {} (text)
                    }
                    @if let Some(b) = importing(&card.connection) {
                        p.history {
                            label for={ "history-" (card.provider) } {
                                "Importing your history: " (b.days_done) " of " (b.days_total) " days"
                            }
                            progress id={ "history-" (card.provider) } value=(b.percent) max="100" { (b.percent) "%" }
                        }
                    }
                    div.actions {
                        @match &card.connection {
                            None => {
                                form method="post" action={ "/connect/" (link) "/" (card.provider) "/connect" } {
                                    button type="submit" aria-label={ "Connect " (name) } { "Connect" }
                                }
                            }
                            Some(c) => {
                                @if c.status == ConnectionStatus::NeedsReauthorization || c.status == ConnectionStatus::Error {
                                    form method="post" action={ "/connect/" (link) "/" (card.provider) "/connect" } {
                                        button type="submit" aria-label={ "Reconnect " (name) } { "Reconnect" }
                                    }
                                }
                                @if shared::sync::can_sync(card.provider) && c.status != ConnectionStatus::NeedsReauthorization {
                                    form method="post" action={ "/connect/" (link) "/" (card.provider) "/sync" } {
                                        button type="submit" aria-label={ "Sync " (name) " now" } { "Sync now" }
                                    }
                                }
                                form method="post" action={ "/connect/" (link) "/" (card.provider) "/disconnect" } {
                                    button.secondary type="submit" aria-label={ "Disconnect " (name) } { "Disconnect" }
                                }
                            }
                        }
                    }
                }
            }
        }
        a.back href=(return_url) { "Back to " (tenant_name) }
    };
    // Refreshes itself while anything moves: a sync, or a backfill between its chunks.
    let syncing = cards.iter().any(|c| {
        c.connection.as_ref().is_some_and(|c| c.status == ConnectionStatus::Syncing)
            || importing(&c.connection).is_some()
    });
    shell_with(&format!("Connect your devices · {tenant_name}"), body, syncing)
}

/// A page that ends a flow with a message (an error, a declined consent, an expired link).
pub fn message_page(title: &str, text: &str, back: Option<(&str, &str)>) -> Markup {
    shell(
        title,
        html! {
            h1 { (title) }
            p.lead { (text) }
            @if let Some((href, label)) = back { a.back href=(href) { (label) } }
        },
    )
}
