//! The Handlebars registry of a repository's `templates/*.hbs`: every template compiled once,
//! in strict mode and without HTML escaping; a template that does not compile is a diagnostic
//! with its line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use handlebars::template::{Parameter, Template, TemplateElement};
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
                    "use a regular file of the repository (not a link), readable UTF-8 text",
                ));
                continue;
            }
        };
        if let Err(e) = registry.register_template_string(&name, &text) {
            diagnostics.push(template_error_diagnostic(&shown_as, &e));
        }
    }
    // A template that includes itself, directly or through others, overflows the stack when
    // rendered: it is refused here, with every template that reaches it.
    for (name, problem) in recursive_templates(&registry) {
        registry.unregister_template(&name);
        diagnostics.push(Diagnostic::file_level(
            &Path::new(TEMPLATES_DIR).join(&name),
            problem,
            "a template may not include itself, directly or through other partials; remove \
             the {{> …}} that closes the cycle",
        ));
    }
    diagnostics.sort_by(|a, b| a.file.cmp(&b.file));
    (registry, diagnostics)
}

/// A partial: a registered template, or an inline partial (`{{#*inline "name"}}`) defined in
/// one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Partial {
    template: String,
    inline: Option<String>,
}

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inline {
            None => f.write_str(&self.template),
            Some(inline) => write!(f, "inline partial \"{inline}\" (in {})", self.template),
        }
    }
}

/// What the templates include, read from the compiled templates: each partial with the names
/// it includes, and, for each template, a partial name that is not written out (those cannot
/// be checked, so they are refused).
#[derive(Default)]
struct Includes {
    names: BTreeMap<Partial, BTreeSet<String>>,
    dynamic: BTreeSet<String>,
}

impl Includes {
    fn walk(&mut self, template: &Template, owner: &Partial) {
        for element in &template.elements {
            match element {
                TemplateElement::Expression(h)
                | TemplateElement::HtmlExpression(h)
                | TemplateElement::HelperBlock(h) => {
                    for t in [&h.template, &h.inverse].into_iter().flatten() {
                        self.walk(t, owner);
                    }
                }
                TemplateElement::DecoratorExpression(d) | TemplateElement::DecoratorBlock(d) => {
                    let inline_name = match (d.name.as_name(), d.params.first()) {
                        (
                            Some("inline"),
                            Some(Parameter::Literal(serde_json::Value::String(n))),
                        ) => Some(n.clone()),
                        _ => None,
                    };
                    if let Some(body) = &d.template {
                        match inline_name {
                            Some(inline) => {
                                let partial = Partial {
                                    template: owner.template.clone(),
                                    inline: Some(inline),
                                };
                                self.names.entry(partial.clone()).or_default();
                                self.walk(body, &partial);
                            }
                            None => self.walk(body, owner),
                        }
                    }
                }
                TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                    let name = match &d.name {
                        Parameter::Literal(serde_json::Value::String(n)) => Some(n.as_str()),
                        other => other.as_name(),
                    };
                    match name {
                        Some(name) => {
                            self.names
                                .entry(owner.clone())
                                .or_default()
                                .insert(name.to_string());
                        }
                        None => {
                            self.dynamic.insert(owner.template.clone());
                        }
                    }
                    if let Some(body) = &d.template {
                        self.walk(body, owner);
                    }
                }
                // Raw text and comments include nothing.
                _ => {}
            }
        }
    }
}

/// The templates that include themselves, directly or through other partials, or include one
/// that does, each with a message naming the cycle; and the templates that name a partial by
/// an expression.
fn recursive_templates(registry: &Handlebars<'static>) -> Vec<(String, String)> {
    let mut includes = Includes::default();
    let mut names: Vec<&String> = registry.get_templates().keys().collect();
    names.sort();
    for name in &names {
        let partial = Partial {
            template: name.to_string(),
            inline: None,
        };
        includes.names.entry(partial.clone()).or_default();
        if let Some(template) = registry.get_template(name) {
            includes.walk(template, &partial);
        }
    }
    // A name may mean any partial of that name: an inline partial is seen by the partials a
    // block includes, so every definition is a possible target (this over-approximates).
    let mut by_name: BTreeMap<&str, Vec<&Partial>> = BTreeMap::new();
    for partial in includes.names.keys() {
        let name = partial.inline.as_deref().unwrap_or(&partial.template);
        by_name.entry(name).or_default().push(partial);
    }
    let targets = |partial: &Partial| -> Vec<&Partial> {
        includes.names[partial]
            .iter()
            .flat_map(|name| by_name.get(name.as_str()).into_iter().flatten().copied())
            .collect()
    };
    let mut refused = Vec::new();
    for name in names {
        if includes.dynamic.contains(name.as_str()) {
            refused.push((
                name.clone(),
                "names a partial by an expression ({{> (…)}}); rebake needs every partial's \
                 name written out, to refuse recursive templates"
                    .to_string(),
            ));
            continue;
        }
        let start = Partial {
            template: name.clone(),
            inline: None,
        };
        // Depth-first search for a path back to a partial already on the path.
        let mut path: Vec<&Partial> = vec![&start];
        let mut stack: Vec<std::vec::IntoIter<&Partial>> = vec![targets(&start).into_iter()];
        let mut done: BTreeSet<&Partial> = BTreeSet::new();
        let mut cycle = None;
        while let Some(next) = stack.last_mut().map(Iterator::next) {
            match next {
                Some(target) if path.contains(&target) => {
                    let from = path.iter().position(|p| *p == target).unwrap_or(0);
                    let mut shown: Vec<String> =
                        path[from..].iter().map(|p| p.to_string()).collect();
                    shown.push(target.to_string());
                    cycle = Some((from == 0, shown.join(" → ")));
                    break;
                }
                Some(target) if done.contains(target) => {}
                Some(target) => {
                    path.push(target);
                    stack.push(targets(target).into_iter());
                }
                None => {
                    stack.pop();
                    if let Some(finished) = path.pop() {
                        done.insert(finished);
                    }
                }
            }
        }
        if let Some((in_cycle, cycle)) = cycle {
            let what = if in_cycle {
                "recursive template"
            } else {
                "includes a recursive template"
            };
            refused.push((
                name.clone(),
                format!("{what}: the partials include each other in a cycle ({cycle})"),
            ));
        }
    }
    refused
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

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_of(templates: &[(&str, &str)]) -> (Handlebars<'static>, Vec<Diagnostic>) {
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir(repo.path().join(TEMPLATES_DIR)).unwrap();
        for (name, text) in templates {
            std::fs::write(repo.path().join(TEMPLATES_DIR).join(name), text).unwrap();
        }
        template_registry_partially(repo.path())
    }

    fn shown(diagnostics: &[Diagnostic]) -> String {
        diagnostics.iter().map(|d| format!("{d}\n")).collect()
    }

    #[test]
    fn recursive_templates_are_refused_naming_the_cycle() {
        let (registry, diagnostics) = registry_of(&[
            ("self.hbs", "FROM x\n{{> self.hbs}}\n"),
            ("a.hbs", "{{> b.hbs}}"),
            ("b.hbs", "{{#if x}}{{> a.hbs}}{{/if}}"),
            ("uses.hbs", "{{> a.hbs}}"),
            ("inline.hbs", "{{#*inline \"r\"}}x{{> r}}{{/inline}}{{> r}}"),
            (
                "fine.hbs",
                "{{#*inline \"p\"}}{{name}}{{/inline}}{{> p}} {{> part.hbs}}",
            ),
            ("part.hbs", "{{#each packages}}{{name}}{{/each}}"),
            ("dynamic.hbs", "{{> (lookup vars \"p\")}}"),
        ]);
        let text = shown(&diagnostics);
        assert!(
            text.contains("templates/self.hbs: recursive template")
                && text.contains("(self.hbs → self.hbs)"),
            "{text}"
        );
        assert!(
            text.contains("templates/a.hbs: ") && text.contains("(a.hbs → b.hbs → a.hbs)"),
            "{text}"
        );
        assert!(text.contains("templates/b.hbs: "), "{text}");
        assert!(
            text.contains("templates/uses.hbs: includes a recursive template"),
            "{text}"
        );
        assert!(
            text.contains("inline partial \"r\" (in inline.hbs)"),
            "{text}"
        );
        assert!(
            text.contains("templates/dynamic.hbs: names a partial by an expression"),
            "{text}"
        );
        assert_eq!(diagnostics.len(), 6, "{text}");
        let mut left: Vec<_> = registry.get_templates().keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["fine.hbs", "part.hbs"]);
        // What is left renders.
        let data = serde_json::json!({"name": "n", "packages": [{"name": "p"}]});
        assert_eq!(registry.render("fine.hbs", &data).unwrap(), "n p");
    }
}
