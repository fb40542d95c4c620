//! A plain HTML page listing every operation of the document, its parameters and its body
//! schema, for people without an OpenAPI viewer.

use serde_json::Value;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A plain page listing every operation, its parameters and its body schema.
pub fn docs_page(doc: &Value) -> String {
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>Letterpress API</title>\
         <style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}\
         code,pre{background:#f4f4f4;padding:.1em .3em}pre{padding:.6em;overflow:auto}\
         h2{border-top:1px solid #ddd;padding-top:.8em}.m{font-weight:bold;color:#268bd2}</style>",
    );
    html += &format!(
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>. \
         Errors: <code>{{\"error\": {{\"code\", \"message\", \"param\", \"type\"}}}}</code>.</p>",
        escape(doc["info"]["title"].as_str().unwrap_or_default()),
        escape(doc["info"]["description"].as_str().unwrap_or_default())
    );
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in ops.as_object().into_iter().flatten() {
            html += &format!(
                "<h2><span class=m>{}</span> <code>{}</code></h2><p>{}</p>",
                method.to_uppercase(),
                escape(path),
                escape(op["summary"].as_str().unwrap_or_default())
            );
            if let Some(d) = op["description"].as_str() {
                html += &format!("<p>{}</p>", escape(d));
            }
            if let Some(schema) =
                op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
            {
                let name = schema.rsplit('/').next().unwrap_or_default();
                let body = &doc["components"]["schemas"][name];
                html += &format!(
                    "<p>Body <code>{name}</code>:</p><pre>{}</pre>",
                    escape(&serde_json::to_string_pretty(body).unwrap_or_default())
                );
            }
            let codes: Vec<&String> = op["responses"]
                .as_object()
                .map(|r| r.keys().collect())
                .unwrap_or_default();
            html += &format!(
                "<p>Responses: {}</p>",
                codes
                    .iter()
                    .map(|c| format!("<code>{c}</code>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    html
}
