//! The Handlebars registry of a repository's `templates/*.hbs`: every template compiled once,
//! in strict mode and without HTML escaping; a template that does not compile is a diagnostic
//! with its line.

use std::path::Path;

use handlebars::Handlebars;

use crate::config::Diagnostic;
use crate::policy::{list_templates, TEMPLATES_DIR};

/// A Handlebars registry with every `templates/*.hbs` of a repository, registered under its
/// file name: strict mode (a missing value is an error), and no HTML escaping (the output is
/// a Dockerfile). Reports every template that does not compile, with its line.
pub fn template_registry(repo_dir: &Path) -> Result<Handlebars<'static>, Vec<Diagnostic>> {
    let (registry, diagnostics) = template_registry_partially(repo_dir);
    if diagnostics.is_empty() {
        Ok(registry)
    } else {
        Err(diagnostics)
    }
}

/// The registry of the templates that compile, and the problems with the others.
pub(crate) fn template_registry_partially(
    repo_dir: &Path,
) -> (Handlebars<'static>, Vec<Diagnostic>) {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    let mut diagnostics = Vec::new();
    for name in list_templates(repo_dir) {
        let shown_as = Path::new(TEMPLATES_DIR).join(&name);
        let text = match crate::config::input::read_input(Some(repo_dir), &repo_dir.join(&shown_as))
        {
            Ok(text) => text,
            Err(e) => {
                diagnostics.push(Diagnostic::file_level(
                    &shown_as,
                    format!("cannot read the template: {e}"),
                    "check that the file is readable UTF-8 text",
                ));
                continue;
            }
        };
        if let Err(e) = registry.register_template_string(&name, &text) {
            diagnostics.push(template_error_diagnostic(&shown_as, &e));
        }
    }
    (registry, diagnostics)
}

fn template_error_diagnostic(file: &Path, error: &handlebars::TemplateError) -> Diagnostic {
    let (line, column) = match error.pos() {
        Some((line, column)) => (line, Some(column)),
        None => (0, None),
    };
    Diagnostic {
        file: file.to_path_buf(),
        line,
        column,
        field: String::new(),
        message: format!("Handlebars syntax error: {}", error.reason()),
        help: "check that every {{#block}} is closed by a matching {{/block}} and every {{ by }}; \
               write a literal {{ as \\{{"
            .to_string(),
    }
}
