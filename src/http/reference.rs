//! The API reference page (`GET /docs`): plain HTML and one inline stylesheet, rendered on the
//! server from the OpenAPI document itself. It needs no script, no CDN and nothing fetched
//! at build time, and it cannot say anything the document does not.
//!
//! Order comes from the typed document (paths as registered, properties as declared); the
//! details are read from its JSON form, the same that `/openapi.json` serves.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{OpenApi, RefOr};

/// The methods an operation can have, in the order the page lists them.
const METHODS: [&str; 5] = ["get", "put", "patch", "post", "delete"];

const STYLE: &str = "
:root{color-scheme:light dark;--fg:#1d232a;--muted:#5b6570;--line:#d8dde3;--bg:#fff;--code:#f2f4f7;--accent:#0b5cad}
@media (prefers-color-scheme:dark){:root{--fg:#e6e9ed;--muted:#a3adb8;--line:#38414b;--bg:#15191e;--code:#222931;--accent:#6cb0f5}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.55 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}
.layout{display:grid;grid-template-columns:17rem minmax(0,1fr);max-width:84rem;margin:0 auto}
nav{position:sticky;top:0;align-self:start;max-height:100vh;overflow:auto;padding:1.5rem 1rem;border-right:1px solid var(--line);font-size:.9rem}
nav h2{font-size:.8rem;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:1.2rem 0 .3rem}
nav ul{list-style:none;margin:0;padding:0}
nav li{margin:.15rem 0}
nav a{color:var(--fg);text-decoration:none}
nav a:hover{color:var(--accent)}
main{padding:1.5rem 2.5rem 4rem;min-width:0}
a{color:var(--accent)}
h1{margin:0 0 .3rem;font-size:2rem}
h2.group{margin:3rem 0 .5rem;padding-bottom:.3rem;border-bottom:2px solid var(--line)}
section.operation,section.schema{border:1px solid var(--line);border-radius:8px;padding:1rem 1.25rem;margin:1.25rem 0}
h3{margin:0 0 .4rem;font-size:1.15rem;display:flex;flex-wrap:wrap;gap:.6rem;align-items:baseline}
h4{margin:1.1rem 0 .4rem;font-size:.95rem;color:var(--muted)}
.summary{font-weight:600;margin:.2rem 0}
code{font:.88em/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--code);padding:.1em .35em;border-radius:4px;overflow-wrap:anywhere}
.method{font:700 .8rem ui-monospace,monospace;padding:.2rem .5rem;border-radius:4px;color:#fff;min-width:4.2rem;text-align:center}
.get{background:#1f7a46}.post{background:#0b5cad}.put{background:#8a5a00}.patch{background:#6b4bb8}.delete{background:#b42318}
.path{font-size:1rem}
table{border-collapse:collapse;width:100%;font-size:.92rem;margin:.3rem 0}
th,td{border:1px solid var(--line);padding:.35rem .55rem;text-align:left;vertical-align:top}
th{background:var(--code);font-weight:600}
td p{margin:.1rem 0}
td:first-child{white-space:nowrap}
td:first-child code,table.responses td:last-child code{overflow-wrap:normal;white-space:nowrap}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.6rem 0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0}
.muted{color:var(--muted)}
@media (max-width:900px){.layout{display:block}nav{position:static;max-height:none;border-right:0;border-bottom:1px solid var(--line)}main{padding:1rem}}
";

/// The page, and the `Content-Security-Policy` that lets exactly its stylesheet apply.
pub struct ReferencePage {
    pub html: String,
    pub csp: String,
}

impl ReferencePage {
    pub fn render(api: &OpenApi) -> Self {
        let document = serde_json::to_value(api).unwrap_or_default();
        let html = Page {
            api,
            document: &document,
        }
        .html();
        let style_hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        let csp = format!(
            "default-src 'none'; style-src 'sha256-{style_hash}'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
        );
        Self { html, csp }
    }
}

/// One operation of the document, with where it sits.
struct Operation<'a> {
    method: &'static str,
    path: &'a str,
    body: &'a Value,
}

impl Operation<'_> {
    fn id(&self) -> &str {
        self.body["operationId"].as_str().unwrap_or_default()
    }

    fn has_tag(&self, tag: &str) -> bool {
        self.body["tags"]
            .as_array()
            .is_some_and(|tags| tags.iter().any(|t| t == tag))
    }
}

struct Page<'a> {
    api: &'a OpenApi,
    document: &'a Value,
}

impl Page<'_> {
    fn html(&self) -> String {
        let title = self.document["info"]["title"].as_str().unwrap_or("API");
        let version = self.document["info"]["version"]
            .as_str()
            .unwrap_or_default();
        let operations = self.operations();
        let tags = self.tags();
        let mut out = String::with_capacity(96 * 1024);
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title} API reference</title><style>{STYLE}</style></head><body>\
             <div class=\"layout\"><nav aria-label=\"Contents\">",
            title = text(title)
        );
        for (tag, _) in &tags {
            let _ = write!(out, "<h2>{}</h2><ul>", text(&capitalize(tag)));
            for operation in operations.iter().filter(|o| o.has_tag(tag)) {
                let _ = write!(
                    out,
                    "<li><a href=\"#op-{id}\"><code>{method}</code> {path}</a></li>",
                    id = attr(operation.id()),
                    method = operation.method.to_uppercase(),
                    path = text(operation.path),
                );
            }
            out.push_str("</ul>");
        }
        out.push_str("<h2>Definitions</h2><ul><li><a href=\"#authentication\">Authentication</a></li><li><a href=\"#schemas\">Schemas</a></li><li><a href=\"/openapi.json\">openapi.json</a></li></ul></nav><main>");
        let _ = write!(
            out,
            "<header><h1>{title} API reference</h1><p class=\"muted\">Version {version} · \
             OpenAPI {openapi} · the machine-readable document is \
             <a href=\"/openapi.json\"><code>/openapi.json</code></a></p>{description}</header>",
            title = text(title),
            version = text(version),
            openapi = text(self.document["openapi"].as_str().unwrap_or_default()),
            description = prose(
                self.document["info"]["description"]
                    .as_str()
                    .unwrap_or_default()
            ),
        );
        for (tag, description) in &tags {
            let _ = write!(
                out,
                "<h2 class=\"group\" id=\"tag-{id}\">{name}</h2>{description}",
                id = attr(tag),
                name = text(&capitalize(tag)),
                description = prose(description),
            );
            for operation in operations.iter().filter(|o| o.has_tag(tag)) {
                self.operation(&mut out, operation);
            }
        }
        self.authentication(&mut out);
        self.schemas(&mut out);
        out.push_str("</main></div></body></html>\n");
        out
    }

    /// Every operation, in the order the paths were registered.
    fn operations(&self) -> Vec<Operation<'_>> {
        let paths = &self.document["paths"];
        self.api
            .paths
            .paths
            .keys()
            .flat_map(|path| {
                METHODS.into_iter().filter_map(move |method| {
                    let body = paths.get(path)?.get(method)?;
                    Some(Operation { method, path, body })
                })
            })
            .collect()
    }

    /// The tags with their descriptions, in the document's order.
    fn tags(&self) -> Vec<(String, String)> {
        self.document["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|tag| {
                let name = tag["name"].as_str().unwrap_or_default().to_owned();
                let description = tag["description"].as_str().unwrap_or_default().to_owned();
                (name, description)
            })
            .collect()
    }

    fn operation(&self, out: &mut String, operation: &Operation<'_>) {
        let body = operation.body;
        let _ = write!(
            out,
            "<section class=\"operation\" id=\"op-{id}\"><h3 class=\"operation\">\
             <span class=\"method {method}\">{upper}</span> <code class=\"path\">{path}</code></h3>\
             <p class=\"summary\">{summary}</p>{description}<dl class=\"facts\">\
             <dt>Operation</dt><dd><code>{id_text}</code></dd>\
             <dt>Authentication</dt><dd>{auth}</dd></dl>",
            id = attr(operation.id()),
            id_text = text(operation.id()),
            method = operation.method,
            upper = operation.method.to_uppercase(),
            path = text(operation.path),
            summary = inline(body["summary"].as_str().unwrap_or_default()),
            description = prose(body["description"].as_str().unwrap_or_default()),
            auth = self.security(body.get("security")),
        );
        if let Some(parameters) = body["parameters"].as_array().filter(|p| !p.is_empty()) {
            out.push_str(
                "<h4>Parameters</h4><table><tr><th>Name</th><th>In</th><th>Type</th>\
                 <th>Required</th><th>Description</th></tr>",
            );
            for parameter in parameters {
                let _ = write!(
                    out,
                    "<tr><td><code>{name}</code></td><td>{place}</td><td>{kind}</td>\
                     <td>{required}</td><td>{description}</td></tr>",
                    name = text(parameter["name"].as_str().unwrap_or_default()),
                    place = text(parameter["in"].as_str().unwrap_or_default()),
                    kind = type_of(&parameter["schema"]),
                    required = yes_no(parameter["required"].as_bool().unwrap_or(false)),
                    description = prose(parameter["description"].as_str().unwrap_or_default()),
                );
            }
            out.push_str("</table>");
        }
        if let Some(request) = body.get("requestBody") {
            let required = request["required"].as_bool().unwrap_or(false);
            out.push_str("<h4>Request body</h4>");
            for (media, content) in request["content"].as_object().into_iter().flatten() {
                let _ = write!(
                    out,
                    "<p><code>{}</code> {}, {}.</p>{}",
                    text(media),
                    type_of(&content["schema"]),
                    if required { "required" } else { "optional" },
                    prose(request["description"].as_str().unwrap_or_default()),
                );
                if let Some(name) = component_name(&content["schema"]) {
                    self.properties(out, name);
                }
            }
        }
        out.push_str(
            "<h4>Responses</h4><table class=\"responses\"><tr><th>Status</th><th>Description</th><th>Body</th></tr>",
        );
        for (status, response) in body["responses"].as_object().into_iter().flatten() {
            let response = self.resolve(response, "responses");
            let mut content = String::new();
            for (media, media_body) in response["content"].as_object().into_iter().flatten() {
                let _ = write!(
                    content,
                    "<p><code>{}</code> {}</p>",
                    text(media),
                    type_of(&media_body["schema"])
                );
            }
            for header in response["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|h| h.0)
            {
                let _ = write!(content, "<p>Header <code>{}</code></p>", text(header));
            }
            let _ = write!(
                out,
                "<tr><td><code>{status}</code></td><td>{description}</td><td>{content}</td></tr>",
                status = text(status),
                description = prose(response["description"].as_str().unwrap_or_default()),
            );
        }
        out.push_str("</table></section>");
    }

    /// Who may call an operation: alternatives joined by "or", a set of schemes that go
    /// together by "and", `{}` as "no credential".
    fn security(&self, requirements: Option<&Value>) -> String {
        let Some(requirements) = requirements.and_then(Value::as_array) else {
            return "None".to_owned();
        };
        let schemes = &self.document["components"]["securitySchemes"];
        requirements
            .iter()
            .filter_map(Value::as_object)
            .map(|requirement| {
                if requirement.is_empty() {
                    return "no credential".to_owned();
                }
                requirement
                    .keys()
                    .map(|name| {
                        format!(
                            "<a href=\"#scheme-{}\">{}</a>",
                            attr(name),
                            scheme_label(&schemes[name])
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" and ")
            })
            .collect::<Vec<_>>()
            .join(", or ")
    }

    fn authentication(&self, out: &mut String) {
        out.push_str("<h2 class=\"group\" id=\"authentication\">Authentication</h2><table><tr><th>Scheme</th><th>Credential</th><th>Description</th></tr>");
        let schemes = &self.document["components"]["securitySchemes"];
        for (name, scheme) in schemes.as_object().into_iter().flatten() {
            let _ = write!(
                out,
                "<tr id=\"scheme-{id}\"><td><code>{name}</code></td><td>{label}</td>\
                 <td>{description}</td></tr>",
                id = attr(name),
                name = text(name),
                label = scheme_label(scheme),
                description = prose(scheme["description"].as_str().unwrap_or_default()),
            );
        }
        out.push_str("</table>");
    }

    fn schemas(&self, out: &mut String) {
        out.push_str("<h2 class=\"group\" id=\"schemas\">Schemas</h2>");
        let schemas = &self.document["components"]["schemas"];
        for (name, schema) in schemas.as_object().into_iter().flatten() {
            let _ = write!(
                out,
                "<section class=\"schema\" id=\"schema-{id}\"><h3>{name}</h3>{description}",
                id = attr(name),
                name = text(name),
                description = prose(schema["description"].as_str().unwrap_or_default()),
            );
            if schema.get("properties").is_some() {
                self.properties(out, name);
            } else {
                let _ = write!(out, "<p>{}</p>", type_of(schema));
            }
            if let Some(example) = schema.get("example") {
                let _ = write!(
                    out,
                    "<p>Example: <code>{}</code></p>",
                    text(&example.to_string())
                );
            }
            out.push_str("</section>");
        }
    }

    /// The field table of a component object schema, fields in declaration order.
    fn properties(&self, out: &mut String, name: &str) {
        let Some(RefOr::T(Schema::Object(object))) = self
            .api
            .components
            .as_ref()
            .and_then(|components| components.schemas.get(name))
        else {
            return;
        };
        let documented = &self.document["components"]["schemas"][name]["properties"];
        out.push_str(
            "<table><tr><th>Field</th><th>Type</th><th>Required</th><th>Description</th></tr>",
        );
        for field in object.properties.keys() {
            let property = &documented[field];
            let _ = write!(
                out,
                "<tr><td><code>{name}</code></td><td>{kind}</td><td>{required}</td>\
                 <td>{description}{constraints}</td></tr>",
                name = text(field),
                kind = type_of(property),
                required = yes_no(object.required.contains(field)),
                description = prose(property["description"].as_str().unwrap_or_default()),
                constraints = constraints(property),
            );
        }
        out.push_str("</table>");
    }

    /// A `$ref` to a component of `kind`, followed; anything else as it is.
    fn resolve<'v>(&'v self, value: &'v Value, kind: &str) -> &'v Value {
        value
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(&format!("#/components/{kind}/")))
            .map_or(value, |name| &self.document["components"][kind][name])
    }
}

/// The name of the component schema that `schema` refers to.
fn component_name(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")?
        .as_str()?
        .strip_prefix("#/components/schemas/")
}

fn scheme_label(scheme: &Value) -> String {
    match (scheme["type"].as_str(), scheme["scheme"].as_str()) {
        (Some("http"), Some(kind)) => {
            format!("<code>Authorization: {} …</code>", text(&capitalize(kind)))
        }
        (Some("apiKey"), _) => format!(
            "{} <code>{}</code>",
            text(scheme["in"].as_str().unwrap_or_default()),
            text(scheme["name"].as_str().unwrap_or_default())
        ),
        _ => text(scheme["type"].as_str().unwrap_or("?")).into_owned(),
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// A schema as a short type expression: a link for a reference, `a | b` for alternatives.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{}\">{}</a>", attr(name), text(name));
    }
    for (key, separator) in [("oneOf", " | "), ("anyOf", " | "), ("allOf", " &amp; ")] {
        if let Some(items) = schema.get(key).and_then(Value::as_array) {
            return items
                .iter()
                .map(type_of)
                .collect::<Vec<_>>()
                .join(separator);
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|value| format!("<code>{}</code>", text(&value.to_string())))
            .collect::<Vec<_>>()
            .join(" | ");
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.is_empty() {
        return "any".to_owned();
    }
    types
        .into_iter()
        .map(
            |kind| match (kind, schema.get("format").and_then(Value::as_str)) {
                ("array", _) => format!(
                    "array of {}",
                    schema
                        .get("items")
                        .map_or_else(|| "any".to_owned(), type_of)
                ),
                ("null", _) | (_, None) => kind.to_owned(),
                (_, Some(format)) => format!("{kind} ({})", text(format)),
            },
        )
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The rules a value must follow beyond its type, and its example.
fn constraints(schema: &Value) -> String {
    let mut notes = Vec::new();
    match (schema["minLength"].as_u64(), schema["maxLength"].as_u64()) {
        (Some(min), Some(max)) => notes.push(format!("{min} to {max} characters")),
        (Some(min), None) => notes.push(format!("at least {min} characters")),
        (None, Some(max)) => notes.push(format!("at most {max} characters")),
        (None, None) => {}
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        notes.push(format!("matches <code>{}</code>", text(pattern)));
    }
    if let Some(example) = schema.get("example") {
        notes.push(format!("e.g. <code>{}</code>", text(&example.to_string())));
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("<p class=\"muted\">{}</p>", notes.join("; "))
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// Markdown-ish text as HTML paragraphs: blank lines separate paragraphs, `code` spans are
/// kept; everything else is escaped.
fn prose(markdown: &str) -> String {
    markdown
        .split("\n\n")
        .map(str::trim)
        .filter(|paragraph| !paragraph.is_empty())
        .map(|paragraph| format!("<p>{}</p>", inline(&paragraph.replace('\n', " "))))
        .collect()
}

/// One line of text with its `code` spans.
fn inline(line: &str) -> String {
    line.split('`')
        .enumerate()
        .map(|(index, part)| {
            if index % 2 == 1 {
                format!("<code>{}</code>", text(part))
            } else {
                text(part).into_owned()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_escapes_and_keeps_code_spans() {
        assert_eq!(
            prose("a <b> `x & y`\nstill\n\nnext"),
            "<p>a &lt;b&gt; <code>x &amp; y</code> still</p><p>next</p>"
        );
    }

    #[test]
    fn types_read_as_expressions() {
        let schema =
            serde_json::json!({"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/User"}]});
        assert_eq!(type_of(&schema), "null | <a href=\"#schema-User\">User</a>");
        let schema =
            serde_json::json!({"type": "array", "items": {"type": "string", "format": "uuid"}});
        assert_eq!(type_of(&schema), "array of string (uuid)");
        assert_eq!(
            type_of(&serde_json::json!({"enum": ["a", "b"]})),
            "<code>\"a\"</code> | <code>\"b\"</code>"
        );
    }
}
