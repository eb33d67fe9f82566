//! The HTML the sandbox shows a person: the consent page, the bad-request page and the index.

use maud::{DOCTYPE, Markup, html};

use crate::provider::Provider;

const STYLE: &str = "
:root { color-scheme: light; font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; line-height: 1.5; }
body { margin: 0; padding: 0 .75rem; background: #f3f4f6; color: #111827; }
main { max-width: 34rem; margin: 2rem auto; padding: 1.5rem; background: #fff; border-radius: .75rem;
       box-shadow: 0 1px 3px rgba(0,0,0,.15); }
h1 { font-size: 1.5rem; margin-top: 0; }
.badge { display: inline-block; font-size: .8rem; font-weight: 600; padding: .1rem .5rem; border-radius: 1rem;
         background: #fef3c7; color: #78350f; }
dt { font-weight: 600; margin-top: .75rem; }
dd { margin: 0; overflow-wrap: anywhere; }
code { font-size: .95em; }
label { display: block; font-weight: 600; margin-top: 1.25rem; }
input[type=text] { width: 100%; box-sizing: border-box; font: inherit; padding: .5rem; border: 1px solid #6b7280;
                   border-radius: .375rem; }
.hint { font-size: .9rem; color: #374151; margin: .25rem 0 0; }
.actions { display: flex; gap: .75rem; margin-top: 1.5rem; flex-wrap: wrap; }
button { font: inherit; font-weight: 600; padding: .6rem 1.4rem; border-radius: .375rem; cursor: pointer;
         border: 2px solid #1d4ed8; }
button.approve { background: #1d4ed8; color: #fff; }
button.deny { background: #fff; color: #1d4ed8; }
button:focus-visible, input:focus-visible { outline: 3px solid #f59e0b; outline-offset: 2px; }
.problems li { color: #991b1b; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #e5e7eb; }
";

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
}

/// What the consent page needs to show.
pub(crate) struct Consent<'a> {
    pub provider: Provider,
    pub action: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scopes: Vec<&'a str>,
    pub hidden: &'a [(String, String)],
    pub user: &'a str,
    pub offline: bool,
}

pub(crate) fn consent(c: &Consent<'_>) -> String {
    let title = format!("{} sandbox", c.provider.display_name());
    let body = html! {
        h1 { (title) }
        p { span.badge { "Local sandbox" } " Not the real " (c.provider.display_name()) ": no account needed, nothing leaves this machine." }
        p { "An app asks to read your " (c.provider.display_name()) " data." }
        dl {
            dt { "Client ID" }
            dd { code { (c.client_id) } }
            dt { "Requested scopes" }
            dd {
                @if c.scopes.is_empty() {
                    "None named (the provider's default applies)"
                } @else {
                    ul { @for s in &c.scopes { li { code { (s) } } } }
                }
            }
            @if c.offline {
                dt { "Offline access" }
                dd { "The app may keep access while you are away (refresh token)." }
            }
            dt { "Returns to" }
            dd { code { (c.redirect_uri) } }
        }
        form method="post" action=(c.action) {
            @for (name, value) in c.hidden {
                input type="hidden" name=(name) value=(value);
            }
            label for="sandbox_user" { "Sandbox user" }
            input type="text" id="sandbox_user" name="sandbox_user" value=(c.user) required
                autocomplete="off" maxlength="64" aria-describedby="sandbox_user_hint";
            p.hint id="sandbox_user_hint" { "Approve as this user. Any id of up to 64 letters, digits, '.', '_', '-', '@' or '+' works; each id has its own data." }
            div.actions {
                button.approve type="submit" name="decision" value="approve" { "Approve" }
                button.deny type="submit" name="decision" value="deny" { "Deny" }
            }
        }
    };
    layout(&title, body).into_string()
}

pub(crate) fn bad_request(provider: Provider, problems: &[String]) -> String {
    let title = format!("{} sandbox: bad authorization request", provider.display_name());
    let body = html! {
        h1 { (title) }
        p { "The sandbox cannot show a consent page for this request, and it does not redirect to a URI it could not validate. Fix the request and try again:" }
        ul.problems { @for p in problems { li { (p) } } }
    };
    layout(&title, body).into_string()
}

pub(crate) fn index(provider: Provider, routes: &[(&str, &str, &str)]) -> String {
    let title = format!("{} sandbox", provider.display_name());
    let body = html! {
        h1 { (title) }
        p { "A local stand-in for " (provider.display_name()) ". Point the platform at it with "
            code { (provider.env_var()) } " set to this server's URL." }
        table {
            thead { tr { th scope="col" { "Method" } th scope="col" { "Path" } th scope="col" { "What" } } }
            tbody { @for (method, path, what) in routes { tr { td { (method) } td { code { (path) } } td { (what) } } } }
        }
    };
    layout(&title, body).into_string()
}
