//! HTML building blocks for the web UI: escaping, the page frame, and the formats numbers and
//! times are shown in.
//!
//! Pages are written with `write!` into a `String`; every string that did not come from this
//! crate (repository names, tags, digests, labels, environment, history, anything from a
//! manifest or config) goes through [`esc`] (text and attribute values) or [`url_part`] (inside
//! an `href`) first. There is no raw-HTML path for stored content.

use std::fmt::Write as _;
use std::time::SystemTime;

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path part for a URL (keeping `/`, `:` and `@`, which repository
/// names, digests and the UI's `name@reference` paths use), then escapes it for an attribute.
pub fn url_part(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b':')
        .remove(b'@')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    esc(&percent_encoding::utf8_percent_encode(text, KEEP).to_string())
}

/// Bytes for people: binary units, one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A size cell: the readable size, the exact count in its title, the number to sort by.
pub fn size_cell(n: u64, prefix: &str) -> String {
    format!(
        "<td class=\"num\" data-sort=\"{n}\" title=\"{n} bytes\">{prefix}{}</td>",
        bytes(n)
    )
}

/// A time as a `<time>` element (UTC, to the second); `—` when unknown.
pub fn time(t: Option<SystemTime>) -> String {
    match t {
        Some(t) => {
            let text = humantime::format_rfc3339_seconds(t).to_string();
            format!(
                "<time datetime=\"{text}\">{}</time>",
                text.replace('T', " ")
            )
        }
        None => "—".to_owned(),
    }
}

/// The short form of a digest shown in tables (`sha256:0123456789ab`); the full one goes in
/// a title or beside it.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => digest.to_owned(),
    }
}

/// A short name for a manifest media type.
pub fn kind(media_type: &str) -> &'static str {
    match media_type {
        berth_oci::media_types::OCI_INDEX => "OCI index",
        berth_oci::media_types::OCI_MANIFEST => "OCI manifest",
        "application/vnd.docker.distribution.manifest.list.v2+json" => "Docker manifest list",
        "application/vnd.docker.distribution.manifest.v2+json" => "Docker manifest",
        _ => "other",
    }
}

/// A link to a path inside the UI.
pub fn link(href: &str, text: &str) -> String {
    format!("<a href=\"{href}\">{}</a>", esc(text))
}

/// What the page frame needs besides the body.
pub struct Frame<'a> {
    /// The `<title>` and `<h1>`, plain text.
    pub title: &'a str,
    /// Who is signed in, if anyone.
    pub user: Option<&'a str>,
    /// Breadcrumbs before the title: (href, text).
    pub crumbs: &'a [(String, String)],
    /// Whether to show the storage link.
    pub storage: bool,
}

/// A whole page: doctype, head, skip link, header with navigation, the main content.
pub fn page(frame: &Frame<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · berth</title>\
         <link rel=\"stylesheet\" href=\"/ui/static/ui.css\">\
         <script src=\"/ui/static/ui.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><nav aria-label=\"Site\"><a class=\"brand\" href=\"/ui/\">berth</a> \
         <a href=\"/ui/\">Repositories</a>",
        title = esc(frame.title)
    );
    if frame.storage {
        out.push_str(" <a href=\"/ui/storage\">Storage</a>");
    }
    if let Some(user) = frame.user {
        let _ = write!(
            out,
            " <span class=\"user\">Signed in as {}</span>",
            esc(user)
        );
    }
    out.push_str("</nav></header><main id=\"main\" tabindex=\"-1\">");
    if !frame.crumbs.is_empty() {
        out.push_str("<nav aria-label=\"Breadcrumb\" class=\"crumbs\"><ol>");
        for (href, text) in frame.crumbs {
            let _ = write!(out, "<li>{}</li>", link(href, text));
        }
        out.push_str("</ol></nav>");
    }
    let _ = write!(out, "<h1>{}</h1>", esc(frame.title));
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

/// A command with a copy button (the button is added by the script, so without JavaScript
/// there is only the selectable text).
pub fn command(label: &str, text: &str) -> String {
    format!(
        "<div class=\"cmd\"><span class=\"cmd-label\">{}</span><code>{}</code></div>",
        esc(label),
        esc(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_markup_could_hide_in() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(url_part("a/b@sha256:00"), "a/b@sha256:00");
        assert_eq!(url_part("a\"><x>"), "a%22%3E%3Cx%3E");
        assert_eq!(url_part("javascript&x"), "javascript%26x");
    }

    #[test]
    fn sizes_and_digests_for_people() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("odd"), "odd");
    }

    #[test]
    fn the_frame_escapes_its_title_and_user() {
        let page = page(
            &Frame {
                title: "<b>",
                user: Some("<i>"),
                crumbs: &[("/ui/".to_owned(), "<u>".to_owned())],
                storage: true,
            },
            "",
        );
        assert!(!page.contains("<b>") && !page.contains("<i>") && !page.contains("<u>"));
        assert!(page.contains("&lt;b&gt;") && page.contains("&lt;i&gt;"));
    }
}
