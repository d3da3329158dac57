//! The README's table of contents (issue 21): every link in it names a heading that exists, and
//! every section (`##`) is listed, so the contents cannot fall behind the text.

const README: &str = include_str!("../../README.md");

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces made hyphens.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_contents_link_every_section_and_only_headings_that_exist() {
    let mut in_code = false;
    let mut headings = Vec::new();
    for line in README.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code
            && let Some(text) = line.strip_prefix("## ").or(line.strip_prefix("### "))
        {
            headings.push((line.starts_with("## "), anchor(text)));
        }
    }
    let contents = README.split("## Contents\n").nth(1).unwrap().split("\n## ").next().unwrap();
    let links: Vec<&str> =
        contents.split("](#").skip(1).map(|rest| rest.split(')').next().unwrap()).collect();
    for link in &links {
        assert!(
            headings.iter().any(|(_, a)| a == link),
            "the contents link #{link}, no such heading"
        );
    }
    for (section, anchor) in &headings {
        if *section && anchor != "contents" {
            assert!(links.contains(&anchor.as_str()), "## {anchor} is not in the contents");
        }
    }
    assert!(links.contains(&"metrics-and-alerts") && links.contains(&"exit-statuses"));
}
