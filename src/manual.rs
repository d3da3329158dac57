//! The man pages and the shell completions, generated from one source each.
//!
//! `aims-api(8)` and the bash, zsh and fish completions are made from the command table in
//! [`crate::cli`] (each command's help text: its usage line, actions and options), so a new
//! option shows up in `--help`, the man page and every shell at once. `aims-api.ron(5)` is the
//! commented configuration the package installs (`packaging/config.ron`), which a unit test of
//! `config` keeps in step with the code. The pages are committed in `packaging/man/` for the
//! Debian package, the scripts in `packaging/completions/`; a test fails when they differ from
//! what this module makes, and `AIMS_API_WRITE_MAN=1 cargo test manual` rewrites them.

use std::fmt::Write as _;

use crate::cli::{COMMANDS, EXIT_STATUS, MAIN_HELP, Shell};

/// The configuration the package installs, documented field by field.
const PACKAGED_CONFIG: &str = include_str!("../packaging/config.ron");

/// One command as its help text describes it.
struct Command {
    name: &'static str,
    summary: String,
    help: &'static str,
    /// The words that may follow the command (`status`, `import`, `bash`…), and whether each
    /// takes a file next.
    actions: Vec<(String, bool)>,
    options: Vec<Opt>,
}

struct Opt {
    short: Option<char>,
    long: String,
    /// The value's placeholder (`PATH`, `YYYY-MM-DD`) if the option takes one.
    value: Option<String>,
    description: String,
}

fn commands() -> Vec<Command> {
    COMMANDS
        .iter()
        .map(|&(name, help)| Command {
            name,
            summary: summary(name),
            help,
            actions: actions(help),
            options: options(help),
        })
        .collect()
}

/// The command's line in the main help's `commands:` list.
fn summary(name: &str) -> String {
    MAIN_HELP
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("  ")?.strip_prefix(name)?;
            rest.starts_with("  ").then(|| rest.trim().to_owned())
        })
        .unwrap_or_default()
}

/// The alternatives in the usage line's `<a|b FILE|c>`.
fn actions(help: &str) -> Vec<(String, bool)> {
    // The usage line, and the indented lines that continue it.
    let mut lines = help.lines().skip_while(|l| !l.starts_with("usage:"));
    let Some(first) = lines.next() else { return Vec::new() };
    let usage = lines
        .take_while(|l| l.starts_with(' '))
        .fold(first.to_owned(), |usage, line| format!("{usage} {}", line.trim()));
    let Some((_, rest)) = usage.split_once('<') else { return Vec::new() };
    let inside = rest.split('>').next().unwrap_or("");
    inside
        .split('|')
        .filter_map(|alternative| {
            let mut words = alternative.split_whitespace();
            let action = words.next()?.to_owned();
            Some((action, words.next() == Some("FILE")))
        })
        .collect()
}

/// The lines of the `options:` section: `  -c, --config PATH  text` or `      --json  text`.
fn options(help: &str) -> Vec<Opt> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line == "options:" {
            inside = true;
            continue;
        }
        if !inside || line.is_empty() {
            inside = inside && !line.is_empty();
            continue;
        }
        let trimmed = line.trim_start();
        let (short, rest) = match trimmed.strip_prefix('-') {
            Some(r) if !r.starts_with('-') => (r.chars().next(), r.get(3..).unwrap_or("")),
            _ => (None, trimmed),
        };
        let Some(rest) = rest.strip_prefix("--") else { continue };
        let (spec, description) = rest.split_once("  ").unwrap_or((rest, ""));
        let mut spec = spec.split_whitespace();
        let long = spec.next().unwrap_or("").to_owned();
        out.push(Opt {
            short,
            long,
            value: spec.next().map(str::to_owned),
            description: description.trim().to_owned(),
        });
    }
    out
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> String {
    let commands = commands();
    match shell {
        Shell::Bash => bash(&commands),
        Shell::Zsh => zsh(&commands),
        Shell::Fish => fish(&commands),
    }
}

fn bash(commands: &[Command]) -> String {
    let names: Vec<&str> = commands.iter().map(|c| c.name).collect();
    let mut out = String::from(
        "# bash completion for aims-api (made by `aims-api completions bash`)\n\
         _aims_api() {\n\
         \x20   local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n\
         \x20   local command=\"\" i\n\
         \x20   for ((i = 1; i < COMP_CWORD; i++)); do\n\
         \x20       case \"${COMP_WORDS[i]}\" in\n\
         \x20           -c|--config|-d|--date) ((i++)) ;;\n\
         \x20           -*) ;;\n\
         \x20           *) command=\"${COMP_WORDS[i]}\"; break ;;\n\
         \x20       esac\n\
         \x20   done\n\
         \x20   case \"$prev\" in\n",
    );
    for command in commands {
        for opt in command.options.iter().filter(|o| o.value.is_some()) {
            let files = opt.value.as_deref() == Some("PATH");
            let _ = writeln!(
                out,
                "        {}) {}; return ;;",
                flags(opt).join("|"),
                if files { "COMPREPLY=($(compgen -f -- \"$cur\"))" } else { "COMPREPLY=()" }
            );
        }
    }
    for command in commands {
        for (action, _) in command.actions.iter().filter(|(_, file)| *file) {
            let _ =
                writeln!(out, "        {action}) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;");
        }
    }
    out.push_str("    esac\n    case \"$command\" in\n");
    let _ = writeln!(
        out,
        "        \"\") COMPREPLY=($(compgen -W \"{} -h --help -V --version\" -- \"$cur\")) ;;",
        names.join(" ")
    );
    for command in commands {
        let mut words: Vec<String> = command.actions.iter().map(|(a, _)| a.clone()).collect();
        words.extend(command.options.iter().flat_map(flags));
        let _ = writeln!(
            out,
            "        {}) COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")) ;;",
            command.name,
            words.join(" ")
        );
    }
    out.push_str("    esac\n}\ncomplete -o filenames -F _aims_api aims-api\n");
    out
}

fn flags(opt: &Opt) -> Vec<String> {
    opt.short.map(|s| format!("-{s}")).into_iter().chain([format!("--{}", opt.long)]).collect()
}

/// A description safe inside single quotes and zsh's `[...]`.
fn plain(text: &str) -> String {
    let text = text.split(" (").next().unwrap_or(text);
    text.chars().filter(|c| !matches!(c, '\'' | '[' | ']' | ':' | '\\' | '`' | '$')).collect()
}

fn zsh(commands: &[Command]) -> String {
    let mut out = String::from(
        "#compdef aims-api\n\
         # zsh completion for aims-api (made by `aims-api completions zsh`)\n\
         _aims-api() {\n\
         \x20   local -a commands\n\
         \x20   commands=(\n",
    );
    for command in commands {
        let _ = writeln!(out, "        '{}:{}'", command.name, plain(&command.summary));
    }
    out.push_str(
        "    )\n\
         \x20   if (( CURRENT == 2 )); then\n\
         \x20       _describe -t commands 'aims-api command' commands\n\
         \x20       return\n\
         \x20   fi\n\
         \x20   local command=$words[2]\n\
         \x20   shift words\n\
         \x20   (( CURRENT-- ))\n\
         \x20   case $command in\n",
    );
    for command in commands {
        let _ = writeln!(out, "        {})\n            _arguments \\", command.name);
        for opt in &command.options {
            let value = match opt.value.as_deref() {
                Some("PATH") => ":path:_files".to_owned(),
                Some(placeholder) => format!(":{}: ", placeholder.to_lowercase()),
                None => String::new(),
            };
            let spec = match opt.short {
                Some(s) => format!("'(-{s} --{0})'{{-{s},--{0}}}'", opt.long),
                None => format!("'--{}", opt.long),
            };
            let _ = writeln!(out, "                {spec}[{}]{value}' \\", plain(&opt.description));
        }
        if !command.actions.is_empty() {
            let words: Vec<&str> = command.actions.iter().map(|(a, _)| a.as_str()).collect();
            let _ = writeln!(out, "                '1:action:({})' \\", words.join(" "));
            if command.actions.iter().any(|(_, file)| *file) {
                out.push_str("                '*:file:_files' \\\n");
            }
        }
        out.push_str("                && return 0\n            ;;\n");
    }
    out.push_str(
        "    esac\n\
         }\n\
         if [ \"$funcstack[1]\" = \"_aims-api\" ]; then\n\
         \x20   _aims-api \"$@\"\n\
         else\n\
         \x20   compdef _aims-api aims-api\n\
         fi\n",
    );
    out
}

fn fish(commands: &[Command]) -> String {
    let mut out = String::from(
        "# fish completion for aims-api (made by `aims-api completions fish`)\n\
         complete -c aims-api -f\n\
         complete -c aims-api -n __fish_use_subcommand -s h -l help -d 'print help'\n\
         complete -c aims-api -n __fish_use_subcommand -s V -l version -d 'print the version'\n",
    );
    for command in commands {
        let _ = writeln!(
            out,
            "complete -c aims-api -n __fish_use_subcommand -a {} -d '{}'",
            command.name,
            plain(&command.summary)
        );
    }
    for command in commands {
        let when = format!("'__fish_seen_subcommand_from {}'", command.name);
        for (action, file) in &command.actions {
            let _ = writeln!(out, "complete -c aims-api -n {when} -a {action}");
            if *file {
                let _ = writeln!(
                    out,
                    "complete -c aims-api -n '__fish_seen_subcommand_from {}; and \
                     __fish_seen_subcommand_from {action}' -F",
                    command.name
                );
            }
        }
        for opt in &command.options {
            let short = opt.short.map(|s| format!(" -s {s}")).unwrap_or_default();
            let value = match opt.value.as_deref() {
                Some("PATH") => " -r -F",
                Some(_) => " -r",
                None => "",
            };
            let _ = writeln!(
                out,
                "complete -c aims-api -n {when}{short} -l {}{value} -d '{}'",
                opt.long,
                plain(&opt.description)
            );
        }
    }
    out
}

/// Escapes text for roff: backslashes, hyphens (so `man` prints ASCII minus signs that can be
/// copied into a shell), and a leading dot or quote that roff would take for a request.
fn roff(line: &str) -> String {
    let escaped = line.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn preformatted(out: &mut String, text: &str) {
    out.push_str(".PP\n.nf\n");
    for line in text.lines() {
        out.push_str(&roff(line));
        out.push('\n');
    }
    out.push_str(".fi\n");
}

fn title(page: &str, section: u8, manual: &str) -> String {
    format!(
        ".\\\" Made by aims-api's src/manual.rs from {page}; do not edit by hand.\n\
         .TH {} {section} \"\" \"aims-api {}\" \"{manual}\"\n",
        page.to_uppercase(),
        env!("CARGO_PKG_VERSION"),
    )
}

/// `aims-api(8)`: the commands, from the same help texts as `--help`.
pub fn command_page() -> String {
    let mut out = title("aims-api", 8, "System Administration");
    out.push_str(
        ".SH NAME\naims\\-api \\- the AI Mentor Studio API over HTTPS, guarded by one API key\n\
         .SH SYNOPSIS\n",
    );
    for command in commands() {
        let usage = command.help.lines().find(|l| l.starts_with("usage:")).unwrap_or("");
        let _ = writeln!(out, ".B {}\n.br", roff(usage.trim_start_matches("usage: ")));
    }
    out.push_str(
        ".SH DESCRIPTION\n\
         An on\\-premises appliance that serves the AI Mentor Studio API (technical\\-debt data)\n\
         over HTTPS behind one API key, with a root\\-only loopback admin port to generate,\n\
         replace and revoke the key and to import dated data snapshots. The packaged service\n\
         runs \\fBaims\\-api serve\\fR as the system user aims\\-api; the other commands talk to\n\
         it or check it, and are run as root.\n\
         .SH COMMANDS\n",
    );
    for command in commands() {
        let _ = writeln!(out, ".SS {}", roff(command.name));
        preformatted(&mut out, command.help);
    }
    exit_status(&mut out);
    out.push_str(
        ".SH FILES\n\
         .TP\n/etc/aims\\-api/config.ron\nthe configuration, see \\fBaims\\-api.ron\\fR(5)\n\
         .TP\n/var/lib/aims\\-api/\nthe state folder: key store, self\\-signed certificate,\n\
         snapshots\n\
         .TP\n/usr/share/doc/aims\\-api/README.md\nthe walkthrough, operations and security model\n\
         .SH SEE ALSO\n\\fBaims\\-api.ron\\fR(5), \\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1)\n",
    );
    out
}

/// The EXIT STATUS section: per command, each status it can end with and what it means there.
fn exit_status(out: &mut String) {
    out.push_str(
        ".SH EXIT STATUS\n\
         Each command ends with one of the statuses below, and no other; on anything but 0 a\n\
         message on standard error says what failed, on what, and what to do. A script can\n\
         tell a no (1) from a server it could not ask (3) from a server that refused (4).\n",
    );
    for (command, statuses) in EXIT_STATUS {
        let _ = writeln!(out, ".SS {}", roff(command));
        for (exit, meaning) in statuses {
            let _ = writeln!(out, ".TP\n.B {}\n{}", exit.code(), roff(meaning));
        }
    }
}

/// `aims-api.ron(5)`: the configuration file, from the commented file the package installs.
pub fn config_page() -> String {
    let mut out = title("aims-api.ron", 5, "File Formats");
    out.push_str(
        ".SH NAME\naims\\-api.ron \\- configuration of the aims\\-api appliance\n\
         .SH SYNOPSIS\n/etc/aims\\-api/config.ron\n\
         .SH DESCRIPTION\n\
         The configuration is one RON (Rusty Object Notation) file, read once when\n\
         \\fBaims\\-api serve\\fR starts. Unknown fields are errors, every error names the file,\n\
         line and column, and every field marked \\(lqdefault\\(rq may be left out.\n\
         \\fBaims\\-api check\\-config\\fR checks a file without starting anything.\n\
         .PP\n\
         Below is the file the Debian package installs, with every field and its comment.\n\
         .SH FIELDS\n",
    );
    preformatted(&mut out, PACKAGED_CONFIG);
    out.push_str(
        ".SH FILES\n.TP\n/etc/aims\\-api/config.ron\nroot:aims\\-api, mode 0640 (it holds the \
         activation code)\n\
         .SH SEE ALSO\n\\fBaims\\-api\\fR(8)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_command_table_is_read_whole() {
        let commands = commands();
        let key = commands.iter().find(|c| c.name == "key").unwrap();
        let actions: Vec<&str> = key.actions.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(
            actions,
            [
                "status",
                "generate",
                "replace",
                "revoke",
                "clients",
                "check",
                "export-record",
                "install-record"
            ]
        );
        let longs: Vec<&str> = key.options.iter().map(|o| o.long.as_str()).collect();
        assert_eq!(
            longs,
            ["expires-in", "grace", "output", "force", "config", "json", "help", "version"]
        );
        assert_eq!(key.options[0].value.as_deref(), Some("DURATION"));
        assert_eq!(key.options[4].short, Some('c'));
        assert_eq!(key.options[4].value.as_deref(), Some("PATH"));
        let snapshot = commands.iter().find(|c| c.name == "snapshot").unwrap();
        assert_eq!(
            snapshot.actions,
            [
                ("import".to_owned(), true),
                ("pull".to_owned(), false),
                ("list".to_owned(), false),
                ("export".to_owned(), false),
                ("delete".to_owned(), false),
                ("verify".to_owned(), false)
            ]
        );
        for command in &commands {
            assert!(!command.summary.is_empty(), "{} has no line in --help", command.name);
            assert!(command.options.iter().any(|o| o.long == "help"), "{}", command.name);
        }
    }

    #[test]
    fn the_exit_status_section_lists_every_status_under_its_commands() {
        let page = command_page();
        let section = page.split(".SH EXIT STATUS\n").nth(1).unwrap().split(".SH ").next().unwrap();
        assert!(section.contains(".SS key check\n.TP\n.B 0\nthe key is admitted now"), "{section}");
        assert!(section.contains(".TP\n.B 2\nmalformed, or its checksum does not match"));
        assert!(section.contains(".SS any command\n.TP\n.B 64\n"), "{section}");
        for code in [0, 1, 2, 3, 4, 5, 6, 7, 8, 64] {
            assert!(section.contains(&format!(".B {code}\n")), "status {code} is not listed");
        }
        for (name, _) in COMMANDS {
            assert!(
                EXIT_STATUS
                    .iter()
                    .any(|(commands, _)| commands.split([' ', ',']).any(|w| w == name)),
                "{name} has no exit statuses listed"
            );
        }
    }

    /// The pages and scripts the package installs are the ones this code makes. To refresh
    /// them after a change to a help text or to packaging/config.ron:
    /// `AIMS_API_WRITE_MAN=1 cargo test manual`.
    #[test]
    fn the_committed_man_pages_and_completions_are_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
        for (file, made) in [
            ("man/aims-api.8", command_page()),
            ("man/aims-api.ron.5", config_page()),
            ("completions/aims-api", completions(Shell::Bash)),
            ("completions/_aims-api", completions(Shell::Zsh)),
            ("completions/aims-api.fish", completions(Shell::Fish)),
        ] {
            let path = root.join(file);
            let dir = path.parent().unwrap();
            if std::env::var_os("AIMS_API_WRITE_MAN").is_some() {
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(&path, &made).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == made,
                "{} is not what src/manual.rs makes: run AIMS_API_WRITE_MAN=1 cargo test manual",
                path.display()
            );
        }
    }
}
